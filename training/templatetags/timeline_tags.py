"""The dataset page's model history (training.timeline), rendered where the page includes it."""

from __future__ import annotations

from django import template

from training import timeline
from training.models import Dataset

register = template.Library()


@register.inclusion_tag("training/partials/_dataset_timeline.html")
def dataset_timeline(dataset: Dataset) -> dict:
    """Jobs oldest first, with the data changes between them; nothing while the dataset has no job."""
    return {"dataset": dataset, "timeline": timeline.dataset_timeline(dataset)}
