"""Small display helpers for predictions."""

from django import template

from classifier import catalog

register = template.Library()


@register.filter
def label_text(label: str, model_key: str = "") -> str:
    """ImageNet class names read with spaces ("fire engine"); trained models' labels stay as typed."""
    return catalog.display_label(model_key or "", label)


@register.filter
def percent(probability: float) -> str:
    value = float(probability) * 100
    if value == 0:
        return "0%"
    if value >= 10:
        return f"{value:.0f}%"
    if value >= 0.1:
        return f"{value:.1f}%"
    return "<0.1%"


@register.filter
def bar_width(probability: float) -> str:
    """A CSS width for a probability bar, never narrower than a visible sliver."""
    return f"{max(float(probability) * 100, 0.5):.1f}%"
