"""Display helpers for training pages."""

from datetime import timedelta

from django import template

from training import charts
from webapp.sizes import human_size

register = template.Library()


@register.filter
def duration_text(value: timedelta | float | None) -> str:
    """ "45 s", "3 min 05 s", "1 h 02 min" for a timedelta or seconds."""
    if value is None:
        return charts.format_duration(None)
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    return charts.format_duration(seconds)


@register.filter
def size_text(value: int | None) -> str:
    """A file size in KiB / MiB: Django's filesizeformat divides by 1024 but writes "MB"."""
    return "—" if value is None else human_size(int(value))
