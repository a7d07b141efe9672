"""Small display helpers for predictions."""

from django import template

register = template.Library()


@register.filter
def label_text(label: str) -> str:
    """Keras class names use underscores ("fire_engine"); people read spaces."""
    return str(label).replace("_", " ")


@register.filter
def percent(probability: float) -> str:
    value = float(probability) * 100
    if value >= 10:
        return f"{value:.0f}%"
    if value >= 0.1:
        return f"{value:.1f}%"
    return "<0.1%"


@register.filter
def bar_width(probability: float) -> str:
    """A CSS width for a probability bar, never narrower than a visible sliver."""
    return f"{max(float(probability) * 100, 0.5):.1f}%"
