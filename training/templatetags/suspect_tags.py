"""The job page's card of suspected label errors and near-duplicate pairs (training.suspect_views)."""

from __future__ import annotations

from django import template

from training.models import TrainingJob

register = template.Library()


@register.inclusion_tag("training/partials/_suspect_card.html", takes_context=True)
def suspect_card(context: template.Context, job: TrainingJob) -> dict:
    """Not looked for yet, being computed, failed, or the counts with links; the card polls itself while computed."""
    from training.suspect_views import card_context

    return card_context(context["request"], job)
