"""Display helpers for training pages."""

from datetime import timedelta

from django import template

from training import charts

register = template.Library()


@register.filter
def duration_text(value: timedelta | float | None) -> str:
    """ "45 s", "3 min 05 s", "1 h 02 min" for a timedelta or seconds."""
    if value is None:
        return charts.format_duration(None)
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    return charts.format_duration(seconds)
