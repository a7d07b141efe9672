"""Where people find the review of low-confidence predictions: a line on the dataset and job pages."""

from __future__ import annotations

from django import template

from training import review
from training.models import Dataset, TrainedModel

register = template.Library()


@register.inclusion_tag("training/partials/_review_link.html", takes_context=True)
def review_link(context: template.Context, dataset: Dataset, model: TrainedModel | None = None) -> dict:
    """How often the model (or the dataset's models) was used and how many uncertain answers wait.

    The counts are for everyone; the link only for those who may act on the list (it shows other
    people's pictures).
    """
    below = review.confidence_threshold()
    models = [model] if model is not None else list(dataset.trained_models.all())
    request = context.get("request")
    return {
        "dataset": dataset,
        "model": model,
        "counts": review.counts(models, below) if models else None,
        "below": round(below * 100),
        "can_review": request is not None and dataset.can_be_changed_by(request.user),
    }
