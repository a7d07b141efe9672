"""The review of low-confidence predictions: the list, its pictures, and the add and dismiss actions.

Only those who may change the dataset (`Dataset.can_be_changed_by`) see the list or act on it: it
shows other people's classified pictures, which History shows only to their owner and staff.
Everyone else gets 403. The rules live in `training.review`; these views read forms and answer.

A row's buttons (HTMX) swap that row for what became of it; the selection's buttons swap the
whole list. Without JavaScript every form posts and comes back to the list.
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers

from classifier import imaging
from classifier.models import Prediction
from training import review
from training.models import Dataset, Label, TrainedModel
from training.names import label_key
from training.review_forms import ReviewActionForm, ReviewFilterForm
from webapp.http import HtmxHttpRequest, form_status, private_file_response

PAGE_SIZE = 20
SHOWN_GUESSES = 3


def _get_dataset_for_reviewer(request: HtmxHttpRequest, pk: int) -> tuple[Dataset, dict[str, TrainedModel]]:
    """The dataset and its trained models by catalog key; 404 if unknown, PermissionDenied unless the user
    may change the dataset."""
    dataset = get_object_or_404(Dataset, pk=pk)
    if not dataset.can_be_changed_by(request.user):
        raise PermissionDenied
    models = {model.key: model for model in dataset.trained_models.order_by("-created_at", "-id")}
    return dataset, models


def _get_prediction_for_reviewer(request: HtmxHttpRequest, pk: int, prediction_pk: int) -> Prediction:
    """A prediction made by one of the dataset's models, for someone who may review them."""
    _, models = _get_dataset_for_reviewer(request, pk)
    return get_object_or_404(Prediction, pk=prediction_pk, model_key__in=list(models))


def _list_context(dataset: Dataset, models: dict[str, TrainedModel], filters: ReviewFilterForm) -> dict:
    """The list as the filters ask: the page of predictions with their rows, the counts, the query to keep."""
    model, below, page_number = filters.choices()
    chosen = [model] if model is not None else list(models.values())
    page = Paginator(review.pending(chosen, below / 100), PAGE_SIZE).get_page(page_number)
    labels = list(dataset.labels.all())
    by_key = {label_key(label.name): label for label in labels}
    keep = {"below": below, **({"model": model.pk} if model is not None else {})}
    return {
        "dataset": dataset,
        "filters": filters,
        "chosen_model": model,
        "models": models,
        "below": below,
        "counts": review.counts(chosen, below / 100),
        "page": page,
        "rows": [_row(prediction, models, by_key) for prediction in page.object_list],
        "labels": labels,
        "keep": {**keep, "page": page.number},
        "list_url": reverse("training:review_list", args=[dataset.pk]),
        "filter_query": urlencode(keep),
        "filter_error": " ".join(m for messages in filters.errors.values() for m in messages),
    }


def _row(prediction: Prediction, models: dict[str, TrainedModel], by_key: dict[str, Label]) -> dict:
    """One prediction as the list shows it: its model, its best guesses, and the label to offer first."""
    best = prediction.best or {}
    guess = by_key.get(label_key(str(best.get("label", ""))))
    return {
        "prediction": prediction,
        "model": models.get(prediction.model_key),
        "guesses": prediction.top[:SHOWN_GUESSES],
        "suggested_label_id": guess.pk if guess is not None else None,
    }


def _mark(context: dict, errors: dict[int, str]) -> None:
    """Put each reason beside its row."""
    for row in context["rows"]:
        row["error"] = errors.get(row["prediction"].pk, "")


@require_GET
@vary_on_headers("HX-Request")
def review_list(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Low-confidence predictions of the dataset's models (or one of them) nobody reviewed yet."""
    dataset, models = _get_dataset_for_reviewer(request, pk)
    filters = ReviewFilterForm(request.GET or None, dataset=dataset)
    context = _list_context(dataset, models, filters)
    if request.htmx:
        return render(request, "training/partials/_review_list.html", context)
    return render(request, "training/review.html", context, status=form_status(request, filters))


@require_POST
@vary_on_headers("HX-Request")
def review_add(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Add the chosen predictions' pictures to the dataset under one label (existing or new)."""
    return _act(request, pk, adding=True)


@require_POST
@vary_on_headers("HX-Request")
def review_dismiss(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Take the chosen predictions off the list without adding them."""
    return _act(request, pk, adding=False)


def _act(request: HtmxHttpRequest, pk: int, *, adding: bool) -> HttpResponse:
    """Add or dismiss; answer with the row (a row's own button), the list (HTMX), or a redirect back to it."""
    dataset, models = _get_dataset_for_reviewer(request, pk)
    form = ReviewActionForm(request.POST, dataset=dataset, models=models, adding=adding)
    filters = ReviewFilterForm(request.POST, dataset=dataset)  # the list as the reviewer left it
    one_row = request.POST.get("row") == "1" and len(request.POST.getlist("prediction")) == 1
    if not form.is_valid():
        return _refused(request, dataset, models, filters, form, one_row)
    predictions = list(form.cleaned_data["prediction"])
    if adding:
        target = form.cleaned_data["target"]
        outcomes = review.add_to_dataset(dataset, models, predictions, target, request.user)
        added_to = next((o.image.label.name for o in outcomes if o.image), getattr(target, "name", target))
        text = review.summary(outcomes, added_to=added_to)
    else:
        outcomes = review.dismiss(models, predictions, request.user)
        text = review.summary(outcomes)
    conflict = not any(outcome.done for outcome in outcomes)
    if request.htmx and one_row:
        return _row_answer(request, dataset, models, filters, outcomes[0])
    if request.htmx or conflict:
        context = _list_context(dataset, models, filters)
        context["notice"] = {
            "text": text,
            "problems": [o for o in outcomes if o.problem],
            "conflict": conflict,
            "added": adding and not conflict,
        }
        _mark(context, {o.prediction.pk: o.problem for o in outcomes if o.problem})
        template = "training/partials/_review_list.html" if request.htmx else "training/review.html"
        return render(request, template, context, status=form_status(request, conflict=conflict))
    messages.success(request, text)
    for outcome in outcomes:
        if outcome.problem:
            messages.warning(request, f"“{outcome.prediction.original_name}”: {outcome.problem}")
    model, below, page = filters.choices()
    keep = {"below": below, **({"model": model.pk} if model is not None else {}), "page": page}
    return redirect(reverse("training:review_list", args=[dataset.pk]) + f"?{urlencode(keep)}")


def _refused(
    request: HtmxHttpRequest,
    dataset: Dataset,
    models: dict[str, TrainedModel],
    filters: ReviewFilterForm,
    form: ReviewActionForm,
    one_row: bool,
) -> HttpResponse:
    """The list again with the form's errors: beside the row it came from, or above the list."""
    context = _list_context(dataset, models, filters)
    error = form.error_text()
    posted = request.POST.get("prediction", "")
    if one_row and posted.isdigit():
        _mark(context, {int(posted): error})
        row = next((r for r in context["rows"] if r["prediction"].pk == int(posted)), None)
        if request.htmx and row is not None:
            return render(request, "training/partials/_review_row.html", {**context, "row": row})
    context["error"] = error
    template = "training/partials/_review_list.html" if request.htmx else "training/review.html"
    return render(request, template, context, status=form_status(request, form))


def _row_answer(
    request: HtmxHttpRequest,
    dataset: Dataset,
    models: dict[str, TrainedModel],
    filters: ReviewFilterForm,
    outcome: review.Outcome,
) -> HttpResponse:
    """What one row becomes: a line saying what was done, or the row again with the reason it was not."""
    context = _list_context(dataset, models, filters)
    context["oob_counts"] = True
    if outcome.done or outcome.gone:
        return render(request, "training/partials/_review_row_done.html", {**context, "outcome": outcome})
    by_key = {label_key(label.name): label for label in context["labels"]}
    row = {**_row(outcome.prediction, models, by_key), "error": outcome.problem}
    return render(request, "training/partials/_review_row.html", {**context, "row": row})


@require_GET
def review_thumbnail(request: HtmxHttpRequest, pk: int, prediction_pk: int) -> FileResponse:
    """The prediction's thumbnail for its reviewers (History's own URL serves only owner and staff)."""
    prediction = _get_prediction_for_reviewer(request, pk, prediction_pk)
    return private_file_response(prediction.thumbnail, "image/jpeg")


@require_GET
def review_image(request: HtmxHttpRequest, pk: int, prediction_pk: int) -> FileResponse:
    """The stored original, to look closer before choosing a label."""
    prediction = _get_prediction_for_reviewer(request, pk, prediction_pk)
    if not prediction.image:
        raise Http404("Only a thumbnail of this picture was kept.")
    content_type = imaging.content_type(prediction.image_format)
    return private_file_response(prediction.image, content_type, filename=prediction.original_name or "image")
