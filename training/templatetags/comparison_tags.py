"""Numbers of a comparison between two jobs, written with their sign (training.comparison)."""

from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def points(delta: float | None) -> str:
    """An accuracy difference in percentage points: "+4.5 points", "−2 points", "no change"."""
    if delta is None:
        return "—"
    value = round(delta * 100, 1)
    if value == 0:
        return "no change"
    text = f"{abs(value):.1f}".removesuffix(".0")
    return f"{'+' if value > 0 else '−'}{text} point{'' if abs(value) == 1 else 's'}"


@register.filter
def signed(delta: float | None) -> str:
    """An F1 difference with its sign, two decimals: "+0.12", "−0.05", "0.00"."""
    if delta is None:
        return "—"
    value = round(delta, 2)
    if value == 0:
        return "0.00"
    return f"{'+' if value > 0 else '−'}{abs(value):.2f}"


@register.filter
def trend(delta: float | None) -> str:
    """ "up", "down" or "same": the CSS class that colours a difference."""
    if delta is None or round(delta, 3) == 0:
        return "same"
    return "up" if delta > 0 else "down"
