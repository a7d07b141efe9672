"""From a job's mistakes to its images, fixed in place; the dataset's history of changes, undone there.

Anyone who may see a dataset may look at these pages. Changing an image (move, exclude, include,
delete) and undoing a change need `Dataset.can_be_changed_by` (403 otherwise); every change goes
through `training.curation`, so it is recorded and can be undone. An HTMX request gets back what
it swaps (the image's card, the selection's result, the history list), refusals included (200 with
the sentence in it); without JavaScript the forms post, and come back to the page with a message.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers

from training import curation, outcomes
from training.models import Dataset, DatasetImage, ImageChange, Label, TrainingJob
from training.outcomes import SplitOutcome
from webapp.http import HtmxHttpRequest

CELL_PAGE_SIZE = 60
HISTORY_PAGE_SIZE = 50
SPLIT_TITLES = {"validation": "validation", "test": "test"}


# --- Forms -----------------------------------------------------------------------------------------


class CellForm(forms.Form):
    """Which images of a job's results to show: a confusion cell, a label's missed images, a row or a column."""

    split = forms.ChoiceField(
        choices=[("", "validation"), *SPLIT_TITLES.items()], required=False,
        error_messages={"invalid_choice": "There is no split “%(value)s” to show: use split=validation or split=test."},
    )  # fmt: skip
    true = forms.IntegerField(
        required=False, min_value=0,
        error_messages={"invalid": "true= must be a label's number (0 for the first label).",
                        "min_value": "true= must be a label's number (0 for the first label)."},
    )  # fmt: skip
    predicted = forms.IntegerField(
        required=False, min_value=0,
        error_messages={"invalid": "predicted= must be a label's number (0 for the first label).",
                        "min_value": "predicted= must be a label's number (0 for the first label)."},
    )  # fmt: skip
    missed = forms.ChoiceField(
        choices=[("", "no"), ("0", "no"), ("1", "yes")], required=False,
        error_messages={"invalid_choice": "missed= must be 1, or left out."},
    )  # fmt: skip

    def __init__(self, *args, labels: list[str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.labels = labels

    def _label_number(self, name: str) -> int | None:
        value = self.cleaned_data.get(name)
        if value is not None and value >= len(self.labels):
            raise forms.ValidationError(
                f"This job has {len(self.labels)} labels, numbered 0 to {len(self.labels) - 1}: "
                f"{name}={value} is none of them."
            )
        return value

    def clean_true(self) -> int | None:
        return self._label_number("true")

    def clean_predicted(self) -> int | None:
        return self._label_number("predicted")

    def clean(self) -> dict:
        data = super().clean()
        data["split"] = data.get("split") or "validation"
        data["missed"] = data.get("missed") == "1"
        if data["missed"] and data.get("predicted") is not None:
            raise forms.ValidationError("Use either predicted= or missed=1, not both.")
        if data["missed"] and "true" in data and data.get("true") is None:
            raise forms.ValidationError("missed=1 needs true=: the number of the label whose missed images to show.")
        return data


class ActionForm(forms.Form):
    """One change to one or more images: move to a label, exclude, include again, delete."""

    action = forms.ChoiceField(
        choices=[("move", "Move to"), ("exclude", "Exclude"), ("include", "Include"), ("delete", "Delete")],
        error_messages={"required": "Choose what to do with the images.",
                        "invalid_choice": "Choose move, exclude, include or delete."},
    )  # fmt: skip
    label = forms.ModelChoiceField(
        queryset=Label.objects.none(), required=False,
        error_messages={"invalid_choice": "That label is not in this dataset any more: reload the page."},
    )  # fmt: skip

    def __init__(self, *args, dataset: Dataset, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["label"].queryset = dataset.labels.all()

    def clean(self) -> dict:
        data = super().clean()
        if data.get("action") == "move" and not data.get("label") and "label" not in self.errors:
            raise forms.ValidationError("Choose the label to move the images to.")
        return data


class ImageIdsField(forms.Field):
    """Image ids from checkboxes; ids no longer in the dataset are left out by the view, not refused."""

    widget = forms.MultipleHiddenInput

    def to_python(self, value) -> list[int]:
        values = value if isinstance(value, list | tuple) else ([value] if value else [])
        if not all(str(v).isdigit() for v in values):
            raise forms.ValidationError("The selection could not be read: reload the page and tick the images again.")
        return [int(v) for v in values]


class SelectionForm(ActionForm):
    """The bulk bar: the action, and the images it applies to (the ticked ones, or all on the page)."""

    image = ImageIdsField(required=False)
    page_images = ImageIdsField(required=False)
    scope = forms.ChoiceField(choices=[("selected", "selected"), ("page", "page")], required=False)

    def clean(self) -> dict:
        data = super().clean()
        chosen = data.get("page_images") if data.get("scope") == "page" else data.get("image")
        if not chosen and not self.errors:
            raise forms.ValidationError("Tick at least one image first.")
        data["chosen"] = list(dict.fromkeys(chosen or []))
        return data


def _sentence(form: forms.Form) -> str:
    return " ".join(message for errors in form.errors.values() for message in errors)


# --- Cards: one image of a job's results -------------------------------------------------------------


@dataclass
class Card:
    """An image as a job saw it and as it is now, with what was just done to it."""

    image_id: int
    image: DatasetImage | None
    name: str
    trained_label: str
    answered: str
    answered_label_id: int | None
    confidence: float
    correct: bool
    moved: bool
    deletion: ImageChange | None  # the standing change that deleted it, to undo right there
    changes: list[ImageChange] = field(default_factory=list)
    note: str = ""
    error: str = ""

    @property
    def suggested_label_id(self) -> int | None:
        """The label the Move select starts on: the answered one, for a mistake not moved there yet."""
        if self.image is None:
            return None
        if not self.correct and self.answered_label_id and self.image.label_id != self.answered_label_id:
            return self.answered_label_id
        return self.image.label_id


@dataclass
class Results:
    """A job's results on one split, where a card comes from; posted back by the card's forms."""

    job: TrainingJob
    split: str
    outcome: SplitOutcome

    def cards(self, rows: list[int]) -> list[Card]:
        """Cards for rows of the outcome, in that order, in a few queries."""
        ids = [int(self.outcome.image_ids[row]) for row in rows]
        dataset = self.job.dataset
        images = dataset.images.select_related("label").in_bulk(ids)
        snapshot = {row[0]: row for row in self.job.snapshot.get("images", [])}
        label_ids = [label_id for label_id, _ in self.job.snapshot.get("labels", [])]
        labels = self.job.labels
        gone = [snapshot[i][3] for i in ids if i not in images and i in snapshot]
        deletions = {
            change.sha256: change
            for change in dataset.changes.filter(action=ImageChange.Action.DELETE, undone_at__isnull=True,
                                                 sha256__in=gone).select_related("changed_by").order_by("id")
        }  # fmt: skip
        cards = []
        for row, image_id in zip(rows, ids, strict=True):
            truth, answered = int(self.outcome.truth[row]), int(self.outcome.predicted[row])
            image = images.get(image_id)
            deletion = deletions.get(snapshot[image_id][3]) if image is None and image_id in snapshot else None
            trained_label_id = label_ids[truth] if truth < len(label_ids) else None
            cards.append(
                Card(
                    image_id=image_id, image=image,
                    name=_name(image, deletion, image_id),
                    trained_label=labels[truth] if truth < len(labels) else "?",
                    answered=labels[answered] if answered < len(labels) else "?",
                    answered_label_id=label_ids[answered] if answered < len(label_ids) else None,
                    confidence=float(self.outcome.confidence[row]), correct=truth == answered,
                    moved=image is not None and image.label_id != trained_label_id, deletion=deletion,
                )
            )  # fmt: skip
        return cards

    def card(self, image_id: int) -> Card | None:
        rows = [int(i) for i in (self.outcome.image_ids == image_id).nonzero()[0]]
        return self.cards(rows[:1])[0] if rows else None


def _name(image: DatasetImage | None, deletion: ImageChange | None, image_id: int) -> str:
    if image is not None:
        return image.original_name
    return deletion.original_name if deletion is not None else f"Image {image_id}"


def _results(job: TrainingJob, split: str) -> Results | None:
    outcome = outcomes.load_outcomes(job.folder).get(split)
    return Results(job, split, outcome) if outcome is not None else None


def _posted_results(request: HtmxHttpRequest, dataset: Dataset) -> Results | None:
    """The job results a card's form names (hidden `job` and `split`), if they still exist."""
    job_id, split = request.POST.get("job", ""), request.POST.get("split", "")
    if not job_id.isdigit() or split not in SPLIT_TITLES:
        return None
    job = TrainingJob.objects.select_related("dataset").filter(pk=int(job_id), dataset=dataset).first()
    return _results(job, split) if job is not None else None


# --- Access ----------------------------------------------------------------------------------------


def _dataset_for_change(request: HtmxHttpRequest, pk: int) -> Dataset:
    dataset = get_object_or_404(Dataset, pk=pk)
    if not dataset.can_be_changed_by(request.user):
        raise PermissionDenied
    return dataset


def _next_url(request: HtmxHttpRequest, default: str) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        return target
    return default


def _refused(request: HtmxHttpRequest, title: str, message: str, back: str, status: int) -> HttpResponse:
    """A refused form without HTMX: the sentence, a way back, and a status scripts can tell (400/409)."""
    context = {"title": title, "message": message, "back_url": back, "back_label": "Back"}
    return render(request, "error.html", context, status=status)


# --- The images behind a confusion cell --------------------------------------------------------------


@require_GET
def job_images(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """jobs/<pk>/images/?split=validation&true=i&predicted=j (or &missed=1): the images, largest mistakes first."""
    job = get_object_or_404(TrainingJob.objects.select_related("dataset", "created_by"), pk=pk)
    dataset = job.dataset
    labels = job.labels
    form = CellForm(request.GET, labels=labels)
    context = {"job": job, "dataset": dataset, "labels": labels, "can_change": dataset.can_be_changed_by(request.user)}
    if not form.is_valid():
        context.update(error=_sentence(form))
        return render(request, "training/job_images.html", context, status=400)
    cell = form.cleaned_data
    saved = outcomes.load_outcomes(job.folder)
    if not saved:
        context.update(no_results=True)
        return render(request, "training/job_images.html", context)
    if cell["split"] not in saved:
        context.update(error=f"Job {job.pk} has no results on a {cell['split']} split: its dataset had none.")
        return render(request, "training/job_images.html", context, status=400)
    results = Results(job, cell["split"], saved[cell["split"]])
    rows = curation.cell_order(results.outcome, truth=cell["true"], predicted=cell["predicted"], missed=cell["missed"])
    page = Paginator(rows, CELL_PAGE_SIZE).get_page(request.GET.get("page"))
    context.update(
        cell=cell,
        title=_cell_title(cell, labels),
        true_name=labels[cell["true"]] if cell["true"] is not None else "",
        results=results,
        page=page,
        cards=results.cards(list(page.object_list)),
        dataset_labels=list(dataset.labels.all()),
        query=_cell_query(cell),
        here=request.get_full_path(),
        splits=[split for split in SPLIT_TITLES if split in saved],
    )
    return render(request, "training/job_images.html", context)


def _cell_title(cell: dict, labels: list[str]) -> str:
    true = f"“{labels[cell['true']]}”" if cell["true"] is not None else None
    predicted = f"“{labels[cell['predicted']]}”" if cell["predicted"] is not None else None
    if cell["missed"]:
        return f"{true} images answered as another label"
    if true and predicted:
        return f"{true} images answered {predicted}" if true != predicted else f"{true} images answered right"
    if true:
        return f"Every {true} image"
    if predicted:
        return f"Every image answered {predicted}"
    return f"Every {cell['split']} image"


def _cell_query(cell: dict) -> str:
    parts = [f"split={cell['split']}"]
    if cell["true"] is not None:
        parts.append(f"true={cell['true']}")
    if cell["predicted"] is not None:
        parts.append(f"predicted={cell['predicted']}")
    if cell["missed"]:
        parts.append("missed=1")
    return "&".join(parts)


def _reason(results: Results | None, dataset_page: bool = False) -> str:
    if results is None:
        return "dataset page" if dataset_page else ""
    return f"job {results.job.pk}: images behind its {results.split} results"


def _apply(data: dict, images: list[DatasetImage], user, reason: str) -> tuple[list[ImageChange], str]:
    """Make the change the form asks for; returns the changes and the sentence that says what happened."""
    action, count = data["action"], len(images)
    what = "The image" if count == 1 else f"{count} images"
    if action == "move":
        label = data["label"]
        changes = curation.move_images(images, label, user, reason=reason)
        done = f"moved to “{label.name}”"
        same = f"already in “{label.name}”"
    elif action in ("exclude", "include"):
        changes = curation.set_excluded(images, action == "exclude", user, reason=reason)
        done = "excluded from training (kept in the dataset, skipped by jobs)" if action == "exclude" else (
            "included in training again")  # fmt: skip
        same = "already excluded from training" if action == "exclude" else "already included in training"
    else:
        changes = curation.delete_images(images, user, reason=reason)
        days = curation.trash_retention_days()
        done, same = f"deleted (its files are kept {days} days, so Undo can bring it back)", "already deleted"
    if not changes:
        return [], f"{what} {'is' if count == 1 else 'are'} {same}: nothing changed."
    if len(changes) == count:
        return changes, f"{what} {'was' if count == 1 else 'were'} {done}."
    verb = "was" if len(changes) == 1 else "were"
    return changes, f"{len(changes)} of {count} images {verb} {done}; the others were {same}."


@require_POST
@vary_on_headers("HX-Request")
def image_action(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Move, exclude, include or delete one image; HTMX gets its card back, showing the change and its Undo."""
    image = get_object_or_404(DatasetImage.objects.select_related("dataset", "label"), pk=pk)
    dataset = _dataset_for_change(request, image.dataset_id)
    results = _posted_results(request, dataset)
    form = ActionForm(request.POST, dataset=dataset)
    back = _next_url(request, reverse("training:dataset_detail", args=[dataset.pk]))
    if not form.is_valid():
        if request.htmx:
            return _card_answer(request, dataset, results, image.pk, error=_sentence(form))
        return _refused(request, "Nothing changed", _sentence(form), back, 400)
    is_grid = request.POST.get("view") == "grid"
    changes, note = _apply(form.cleaned_data, [image], request.user, _reason(results, dataset_page=is_grid))
    if request.htmx:
        return _card_answer(request, dataset, results, image.pk, changes=changes, note=note)
    messages.success(request, note)
    return redirect(back)


def _card_answer(
    request: HtmxHttpRequest, dataset: Dataset, results: Results | None, image_id: int, *,
    changes: list[ImageChange] | None = None, note: str = "", error: str = "",
) -> HttpResponse:  # fmt: skip
    """The card an HTMX form swaps: a job results' card, or the dataset grid's card (`view=grid`)."""
    if request.POST.get("view") == "grid" or results is None:
        image = dataset.images.select_related("label").filter(pk=image_id).first()
        if image is None:
            return HttpResponse("")  # the card leaves the grid
        context = {
            "image": image, "dataset": dataset, "can_change": True, "labels": dataset.labels.all(),
            "back_url": _next_url(request, ""), "changes": changes or [], "card_note": note, "card_error": error,
        }  # fmt: skip
        return render(request, "training/partials/_image_card.html", context)
    card = results.card(image_id)
    if card is None:
        return HttpResponse("")
    card.changes, card.note, card.error = changes or [], note, error
    return render(request, "training/partials/_curation_card.html", _card_context(request, dataset, results, card))


def _card_context(request: HtmxHttpRequest, dataset: Dataset, results: Results, card: Card, **extra) -> dict:
    return {
        "card": card, "dataset": dataset, "results": results, "can_change": True,
        "dataset_labels": list(dataset.labels.all()), "here": _next_url(request, ""), **extra,
    }  # fmt: skip


@require_POST
@vary_on_headers("HX-Request")
def selection_action(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """The bulk bar: one action on the ticked images (or all on the page); the changes share a batch."""
    dataset = _dataset_for_change(request, pk)
    results = _posted_results(request, dataset)
    form = SelectionForm(request.POST, dataset=dataset)
    back = _next_url(request, reverse("training:dataset_detail", args=[dataset.pk]))
    if not form.is_valid():
        if request.htmx:
            return _selection_answer(request, dataset, results, [], error=_sentence(form))
        return _refused(request, "Nothing changed", _sentence(form), back, 400)
    chosen = form.cleaned_data["chosen"]
    images = list(dataset.images.select_related("label").filter(pk__in=chosen))
    if not images:
        message = "None of the chosen images is in the dataset any more: reload the page."
        if request.htmx:
            return _selection_answer(request, dataset, results, chosen, error=message)
        return _refused(request, "Nothing changed", message, back, 409)
    changes, note = _apply(form.cleaned_data, images, request.user, _reason(results))
    if request.htmx:
        return _selection_answer(request, dataset, results, chosen, changes=changes, note=note)
    messages.success(request, note)
    return redirect(back)


def _selection_answer(
    request: HtmxHttpRequest, dataset: Dataset, results: Results | None, image_ids: list[int], *,
    changes: list[ImageChange] | None = None, note: str = "", error: str = "", undone: bool = False,
) -> HttpResponse:  # fmt: skip
    """The bulk bar's result (with "Undo these N changes"), and every card it touched swapped out of band."""
    changes = changes or []
    cards = []
    if results is not None:
        by_image: dict[int, list[ImageChange]] = {}
        for change in changes:
            image_id = change.image_id or change.before.get("id")
            by_image.setdefault(image_id, []).append(change)
        rows = [int(i) for image_id in image_ids for i in (results.outcome.image_ids == image_id).nonzero()[0][:1]]
        cards = results.cards(rows)
        for card in cards:
            card.changes = [] if undone else by_image.get(card.image_id, [])
            card.note = " ".join(_sentence_of(change) for change in card.changes)
    context = {
        "dataset": dataset, "results": results, "cards": cards, "note": note, "error": error,
        "batch": changes[0].batch if changes and not undone else "", "batch_size": len(changes),
        "can_change": True, "dataset_labels": list(dataset.labels.all()), "here": _next_url(request, ""),
    }  # fmt: skip
    return render(request, "training/partials/_curation_selection.html", context)


# --- Undo ------------------------------------------------------------------------------------------


def _sentence_of(change: ImageChange) -> str:
    words = curation.describe(change)
    return f"{words[:1].upper()}{words[1:]}."


def _undone_sentence(changes: list[ImageChange], labels_back: set[str]) -> str:
    if len(changes) == 1:
        change = changes[0]
        text = f"Undone: “{change.original_name}” is {_state_before(change)} again."
    else:
        text = f"Undone: {len(changes)} changes."
    for name in sorted(labels_back):
        text += f" Label “{name}” had been deleted: it was added again."
    return text


def _state_before(change: ImageChange) -> str:
    before = change.before
    return {
        ImageChange.Action.MOVE: f"in “{before.get('label_name')}”",
        ImageChange.Action.SPLIT: f"in {before.get('split')}",
        ImageChange.Action.EXCLUDE: "included in training",
        ImageChange.Action.INCLUDE: "excluded from training",
        ImageChange.Action.DELETE: f"in “{before.get('label_name')}”",
        ImageChange.Action.ADD: "out of the dataset",
    }.get(change.action, "as it was")


def _labels_back(changes: list[ImageChange]) -> set[str]:
    return {c.before.get("label_name", "") for c in changes if curation.label_is_gone(c)}


@require_POST
@vary_on_headers("HX-Request")
def change_undo(request: HtmxHttpRequest, pk: int, change_pk: int) -> HttpResponse:
    """Undo one change, from its image's card (`view=cell` or `grid`) or from the history (`view=history`)."""
    dataset = _dataset_for_change(request, pk)
    change = get_object_or_404(ImageChange, pk=change_pk, dataset=dataset)
    labels_back = _labels_back([change])
    try:
        curation.undo(change, request.user)
    except curation.CannotUndo as refusal:
        return _undo_answer(request, dataset, [change], error=str(refusal))
    return _undo_answer(request, dataset, [change], note=_undone_sentence([change], labels_back))


@require_POST
@vary_on_headers("HX-Request")
def batch_undo(request: HtmxHttpRequest, pk: int, batch: str) -> HttpResponse:
    """Undo the changes made together (one selection), all or none."""
    dataset = _dataset_for_change(request, pk)
    standing = list(dataset.changes.filter(batch=batch, undone_at__isnull=True))
    labels_back = _labels_back(standing)
    try:
        changes = curation.undo_batch(dataset, batch, request.user)
    except curation.CannotUndo as refusal:
        return _undo_answer(request, dataset, standing, error=str(refusal))
    return _undo_answer(request, dataset, changes, note=_undone_sentence(changes, labels_back))


def _undo_answer(
    request: HtmxHttpRequest, dataset: Dataset, changes: list[ImageChange], *, note: str = "", error: str = ""
) -> HttpResponse:
    view = request.POST.get("view", "history")
    history = reverse("training:dataset_history", args=[dataset.pk])
    if not request.htmx:
        if error:
            if view == "history":
                return _history_page(request, dataset, error=error, status=409)
            return _refused(request, "Not undone", error, _next_url(request, history), 409)
        messages.success(request, note)
        return redirect(_next_url(request, history))
    if view == "history":
        return _history_page(request, dataset, note=note, error=error, partial=True)
    results = _posted_results(request, dataset)
    image_ids = [change.image_id or change.before.get("id") for change in changes]
    if view == "selection":
        return _selection_answer(request, dataset, results, image_ids, changes=changes, note=note, error=error,
                                 undone=not error)  # fmt: skip
    kept = [] if not error else changes  # a refused undo keeps its button, next to the reason
    return _card_answer(request, dataset, results, image_ids[0], changes=kept, note=note, error=error)


# --- History ---------------------------------------------------------------------------------------


@require_GET
def dataset_history(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Every change to the dataset's images, newest first, each (and each batch) with its Undo."""
    dataset = get_object_or_404(Dataset, pk=pk)
    return _history_page(request, dataset)


def _history_page(
    request: HtmxHttpRequest, dataset: Dataset, *, note: str = "", error: str = "", partial: bool = False,
    status: int = 200,
) -> HttpResponse:  # fmt: skip
    changes = dataset.changes.select_related("image", "changed_by", "undone_by")
    number = request.POST.get("page") or request.GET.get("page")
    page = Paginator(changes, HISTORY_PAGE_SIZE).get_page(number)
    rows = list(page.object_list)
    batches = {
        row["batch"]: row
        for row in dataset.changes.filter(batch__in={c.batch for c in rows if c.batch})
        .values("batch")
        .annotate(total=Count("id"), standing=Count("id", filter=Q(undone_at__isnull=True)))
    }
    groups: list[dict] = []
    for change in rows:
        change.text = curation.describe(change)
        if not groups or not change.batch or groups[-1]["batch"] != change.batch:
            info = batches.get(change.batch, {"total": 1, "standing": 0})
            groups.append({"batch": change.batch, "total": info["total"], "standing": info["standing"], "changes": []})
        groups[-1]["changes"].append(change)
    context = {
        "dataset": dataset, "page": page, "groups": groups, "note": note, "error": error,
        "can_change": dataset.can_be_changed_by(request.user),
    }  # fmt: skip
    template = "training/partials/_curation_history.html" if partial else "training/dataset_history.html"
    return render(request, template, context, status=status)
