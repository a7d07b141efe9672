"""Display helpers for the Models pages: numbers that may be unknown, work per image."""

from datetime import datetime

from django import template
from django.contrib.humanize.templatetags.humanize import naturaltime
from django.utils import timezone

register = template.Library()
UNKNOWN = "—"


@register.filter
def or_dash(value, digits: int = 1) -> str:
    """A number with `digits` decimals, or a dash when nobody published it."""
    if value is None or value == "":
        return UNKNOWN
    return f"{float(value):.{int(digits)}f}"


@register.filter
def macs(million: float | None) -> str:
    """Multiply-accumulates per image, in the unit that reads best: "14 M", "3.9 G"."""
    if not million:
        return UNKNOWN
    if million >= 1000:
        return f"{million / 1000:.1f} G"
    return f"{million:.0f} M"


@register.filter
def megabytes(value: float | None) -> str:
    if value is None:
        return UNKNOWN
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}".rstrip("0").rstrip(".")


@register.filter
def milliseconds(value: float | None) -> str:
    if value is None:
        return UNKNOWN
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


@register.filter
def ago(moment: datetime | None) -> str:
    """ "just now" for the last minute (naturaltime's "now" reads oddly in a sentence), else "5 minutes ago"."""
    if moment is None:
        return ""
    if (timezone.now() - moment).total_seconds() < 60:
        return "just now"
    return naturaltime(moment)
