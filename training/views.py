"""Datasets pages: list, dataset page with its grid, labels, uploads, zip import, export, images.

Every view needs a login (LoginRequiredMiddleware). Anyone logged in may look; changes go through
`_get_dataset_for_user(..., write=True)`, which allows staff and the dataset's owner when they
hold the "add dataset" permission.
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models.functions import Lower
from django.http import FileResponse, Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import content_disposition_header, url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseClientRedirect

from classifier import imaging
from training import curation, exports, imports, readiness, uploads
from training.forms import (
    DatasetEditForm,
    DatasetForm,
    GridFilterForm,
    ImageForm,
    ImportForm,
    LabelForm,
    RedrawForm,
    UploadForm,
    save_unless_taken,
)
from training.models import Dataset, DatasetImage, ImportJob, Label, Split
from training.splits import Shares
from webapp.http import HtmxHttpRequest, form_status, private_file_response

PAGE_SIZE = 48


def _get_dataset_for_user(request: HtmxHttpRequest, pk: int, write: bool = False) -> Dataset:
    """The dataset, or 404; PermissionDenied when `write` and the user may not change it."""
    dataset = get_object_or_404(Dataset.objects.select_related("created_by"), pk=pk)
    if write and not dataset.can_be_changed_by(request.user):
        raise PermissionDenied
    return dataset


def _get_image_for_user(request: HtmxHttpRequest, pk: int, write: bool = False) -> DatasetImage:
    image = get_object_or_404(DatasetImage.objects.select_related("dataset", "label"), pk=pk)
    if write and not image.dataset.can_be_changed_by(request.user):
        raise PermissionDenied
    return image


def _get_label(dataset: Dataset, pk: int) -> Label:
    return get_object_or_404(Label, pk=pk, dataset=dataset)


def _post(request: HtmxHttpRequest):
    """Form data on POST, else None: an empty POST must still give a bound form with its errors."""
    return request.POST if request.method == "POST" else None


def _files(request: HtmxHttpRequest):
    return request.FILES if request.method == "POST" else None


def _next_url(request: HtmxHttpRequest, default: str) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        return target
    return default


# --- Datasets ------------------------------------------------------------------------------


@require_GET
def dataset_list(request: HtmxHttpRequest) -> HttpResponse:
    datasets = Dataset.objects.select_related("created_by").with_counts().order_by(Lower("name"))
    return render(
        request,
        "training/dataset_list.html",
        {"datasets": datasets, "can_create": Dataset.can_create(request.user)},
    )


@require_http_methods(["GET", "POST"])
def dataset_create(request: HtmxHttpRequest) -> HttpResponse:
    if not Dataset.can_create(request.user):
        raise PermissionDenied
    form = DatasetForm(_post(request))
    if request.method == "POST" and form.is_valid():
        dataset = form.save(commit=False)
        dataset.created_by = request.user
        if save_unless_taken(form, dataset.save):
            messages.success(
                request, f"Dataset “{dataset.name}” created. Add labels and images: upload them or import a zip."
            )
            return redirect("training:dataset_detail", pk=dataset.pk)
    context = {"form": form, "dataset": None}
    return render(request, "training/dataset_form.html", context, status=form_status(request, form))


def _grid(request: HtmxHttpRequest, dataset: Dataset) -> dict:
    """The thumbnail grid's page, filters and the query string its links keep."""
    filters = GridFilterForm(request.GET or None, dataset=dataset)
    images = dataset.images.select_related("label").order_by("-id")
    params: dict[str, str] = {}
    if filters.is_valid():
        if filters.cleaned_data["label"]:
            images = images.filter(label=filters.cleaned_data["label"])
            params["label"] = str(filters.cleaned_data["label"].pk)
        if filters.cleaned_data["split"]:
            images = images.filter(split=filters.cleaned_data["split"])
            params["split"] = filters.cleaned_data["split"]
        if filters.cleaned_data["training"]:  # excluded images stay in the dataset; jobs skip them
            images = images.filter(excluded=filters.cleaned_data["training"] == "excluded")
            params["training"] = filters.cleaned_data["training"]
    page = Paginator(images, PAGE_SIZE).get_page(request.GET.get("page"))
    here = reverse("training:dataset_detail", args=[dataset.pk])
    query = urlencode({**params, "page": page.number})
    return {
        "filters": filters,
        "page": page,
        "filter_query": urlencode(params),
        "grid_url": here,
        "back_url": f"{here}?{query}",
    }


def _label_rows(dataset: Dataset, labels: list[Label]) -> list[dict]:
    """One chart row per label: counts per split, bar width (largest label = 100%), segment widths."""
    counts = dataset.split_counts()
    rows = []
    for label in labels:
        by_split = counts.get(label.pk, dict.fromkeys(Split.values, 0))
        rows.append({"label": label, "total": sum(by_split.values()), **by_split})
    top = max((r["total"] for r in rows), default=0)
    for row in rows:
        row["width"] = round(row["total"] * 100 / top, 1) if top else 0
        row["shares"] = {s: round(row[s] * 100 / row["total"], 1) if row["total"] else 0 for s in Split.values}
    return rows


@require_GET
@vary_on_headers("HX-Request")
def dataset_detail(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    dataset = _get_dataset_for_user(request, pk)
    can_change = dataset.can_be_changed_by(request.user)
    grid = _grid(request, dataset)
    context = {"dataset": dataset, "can_change": can_change, **grid}
    if request.htmx and request.htmx.target == "image-grid":
        return render(request, "training/partials/_image_grid.html", {**context, "labels": dataset.labels.all()})
    labels = list(dataset.labels.all())
    rows = _label_rows(dataset, labels)
    image_total = sum(r["total"] for r in rows)
    trainable = dataset.split_counts(trainable=True)  # the warnings count what jobs train on: not excluded images
    context.update(
        labels=labels,
        label_rows=rows,
        image_total=image_total,
        warnings=readiness.warnings(
            {label.name: trainable.get(label.pk, dict.fromkeys(Split.values, 0)) for label in labels},
            validation_percent=dataset.validation_percent,
        ),
        active_import=dataset.active_import(),
        recent_imports=dataset.import_jobs.select_related("created_by")[:5],
        can_train=dataset.can_train(request.user),
        training_jobs=list(dataset.training_jobs.select_related("created_by").defer("snapshot")[:20]),
        redraw_form=RedrawForm(initial={"seed": dataset.split_seed + 1}),
        outdated_note=dataset.outdated_splits_note() if image_total and can_change else "",
    )
    return render(request, "training/dataset_detail.html", context)


@require_http_methods(["GET", "POST"])
def dataset_edit(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    dataset = _get_dataset_for_user(request, pk, write=True)
    old_shares = dataset.shares
    note = dataset.outdated_splits_note() if dataset.images.exists() else ""  # before the form changes `dataset`
    form = DatasetEditForm(_post(request), instance=dataset)
    if request.method == "POST" and form.is_valid():
        dataset = form.save(commit=False)
        dataset.updated_at = timezone.now()
        fields = ["name", "description", "validation_percent", "test_percent", "updated_at"]
        if save_unless_taken(form, lambda: dataset.save(update_fields=fields)):
            messages.success(request, _apply_shares(dataset, old_shares, redraw=form.cleaned_data["redraw"]))
            return redirect("training:dataset_detail", pk=dataset.pk)
    context = {"form": form, "dataset": dataset, "outdated_note": note}
    return render(request, "training/dataset_form.html", context, status=form_status(request, form))


def _apply_shares(dataset: Dataset, old: Shares, redraw: bool) -> str:
    """Re-draw the splits with the dataset's new shares, or record that they keep the old ones; says which."""
    dataset.keep_splits_drawn_with(old)
    if not (redraw and dataset.splits_outdated):
        return f"Dataset “{dataset.name}” saved."
    sizes = dataset.redraw_splits(dataset.split_seed)
    return (
        f"Dataset “{dataset.name}” saved; splits re-drawn with {dataset.shares.text()}: "
        f"{sizes['train']} train, {sizes['validation']} validation, {sizes['test']} test."
    )


@require_http_methods(["GET", "POST"])
def dataset_delete(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """A confirmation page, then the delete; refused while an import writes into the dataset."""
    dataset = _get_dataset_for_user(request, pk, write=True)
    active = dataset.active_import()
    training = dataset.active_training()
    if request.method == "POST" and active is None and training is None:
        name = dataset.name
        dataset.delete()  # its folder goes once the delete commits (models._delete_dataset_folder)
        messages.success(request, f"Dataset “{name}” and all its images were deleted.")
        return redirect("training:dataset_list")
    context = {
        "dataset": dataset,
        "active_import": active,
        "active_training": training,
        "image_count": dataset.images.count(),
        "model_count": dataset.trained_models.count(),
    }
    busy = active is not None or training is not None
    return render(
        request,
        "training/dataset_confirm_delete.html",
        context,
        status=409 if busy and request.method == "POST" else 200,
    )


@require_POST
def redraw_splits(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    dataset = _get_dataset_for_user(request, pk, write=True)
    form = RedrawForm(request.POST)
    if not form.is_valid():
        messages.error(request, "The seed must be a whole number from 0 to 2147483647.")
        return redirect("training:dataset_detail", pk=dataset.pk)
    sizes = dataset.redraw_splits(form.cleaned_data["seed"])
    messages.success(
        request,
        f"Splits re-drawn with seed {dataset.split_seed}: {sizes['train']} train, {sizes['validation']} validation, "
        f"{sizes['test']} test.",
    )
    return redirect("training:dataset_detail", pk=dataset.pk)


@require_GET
def export_dataset(request: HtmxHttpRequest, pk: int) -> StreamingHttpResponse:
    """The dataset as a zip in the import layout, streamed while it is built (any size, flat memory)."""
    dataset = _get_dataset_for_user(request, pk)
    response = StreamingHttpResponse(exports.stream(dataset), content_type="application/zip")
    response["Content-Disposition"] = content_disposition_header(True, exports.filename(dataset))
    return response


# --- Labels --------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def label_create(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    dataset = _get_dataset_for_user(request, pk, write=True)
    form = LabelForm(_post(request), dataset=dataset)
    if request.method == "POST" and form.is_valid():
        label = Label(dataset=dataset, name=form.cleaned_data["name"], description=form.cleaned_data["description"])
        if save_unless_taken(form, label.save):
            dataset.touch()
            messages.success(request, f"Label “{label.name}” added. Upload images into it, or import a zip.")
            return redirect("training:dataset_detail", pk=dataset.pk)
    context = {"form": form, "dataset": dataset, "label": None}
    return render(request, "training/label_form.html", context, status=form_status(request, form))


@require_http_methods(["GET", "POST"])
def label_edit(request: HtmxHttpRequest, pk: int, label_pk: int) -> HttpResponse:
    dataset = _get_dataset_for_user(request, pk, write=True)
    label = _get_label(dataset, label_pk)
    form = LabelForm(_post(request), dataset=dataset, instance=label)
    if request.method == "POST" and form.is_valid():
        label.name, label.description = form.cleaned_data["name"], form.cleaned_data["description"]
        if save_unless_taken(form, lambda: label.save(update_fields=["name", "description"])):
            dataset.touch()
            messages.success(request, f"Label “{label.name}” saved.")
            return redirect("training:dataset_detail", pk=dataset.pk)
        label.refresh_from_db(fields=["name", "description"])  # the page's title names the label as it is
    context = {"form": form, "dataset": dataset, "label": label}
    return render(request, "training/label_form.html", context, status=form_status(request, form))


@require_http_methods(["GET", "POST"])
def label_delete(request: HtmxHttpRequest, pk: int, label_pk: int) -> HttpResponse:
    dataset = _get_dataset_for_user(request, pk, write=True)
    label = _get_label(dataset, label_pk)
    if request.method == "POST":
        label.delete()
        dataset.touch()
        messages.success(request, f"Label “{label.name}” and its images were deleted.")
        return redirect("training:dataset_detail", pk=dataset.pk)
    context = {"dataset": dataset, "label": label, "image_count": label.images.count()}
    return render(request, "training/label_confirm_delete.html", context)


# --- Adding images ---------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@vary_on_headers("HX-Request")
def upload_images(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """A few images into one label, synchronously (a zip import is the way for many)."""
    dataset = _get_dataset_for_user(request, pk, write=True)
    initial = {"label": request.GET.get("label")} if request.GET.get("label", "").isdigit() else {}
    form = UploadForm(_post(request), _files(request), dataset=dataset, initial=initial)
    report = None
    if request.method == "POST" and form.is_valid():
        report = uploads.add_uploads(dataset, form.cleaned_data["target"], form.cleaned_data["images"], request.user)
        form = UploadForm(dataset=dataset, initial={"label": _label_pk(dataset, report)})
    elif request.method == "POST":
        form.keep_chosen_files()  # htmx keeps the browser's file input: fix the label and press Upload again
    context = {"form": form, "dataset": dataset, "report": report}
    if request.htmx:
        return render(request, "training/partials/_upload_form.html", context)
    return render(request, "training/upload.html", context, status=form_status(request, form))


def _label_pk(dataset: Dataset, report: dict) -> int | None:
    """Keep the label just used selected for the next batch."""
    name = report["labels"][0]["name"] if report["labels"] else None
    return dataset.labels.filter(name=name).values_list("pk", flat=True).first()


@require_http_methods(["GET", "POST"])
def import_zip(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    dataset = _get_dataset_for_user(request, pk, write=True)
    active = dataset.active_import()
    form = ImportForm(_post(request), _files(request))
    conflict = False
    if request.method == "POST" and form.is_valid():
        try:
            job = imports.start_import(dataset, form.cleaned_data["archive"], request.user)
        except imports.ImportRefused as refusal:
            form.add_error("archive", str(refusal))
            conflict = True  # another import runs: the zip itself was fine
        else:
            return redirect("training:import_detail", pk=dataset.pk, job_pk=job.pk)
    context = {"form": form, "dataset": dataset, "active_import": active}
    return render(request, "training/import_form.html", context, status=form_status(request, form, conflict=conflict))


@require_GET
@vary_on_headers("HX-Request")
def import_detail(request: HtmxHttpRequest, pk: int, job_pk: int) -> HttpResponse:
    """The job's page; its progress partial polls itself until the job ends."""
    job = ImportJob.objects.select_related("dataset", "created_by").filter(pk=job_pk, dataset_id=pk).first()
    if job is None:
        if request.htmx:  # htmx ignores error answers and would poll on forever: answer with the news
            return render(request, "training/partials/_import_progress.html", {"job": None})
        raise Http404("No such import.")
    dataset = job.dataset
    context = {"dataset": dataset, "job": job, "can_change": dataset.can_be_changed_by(request.user)}
    if request.htmx:
        return render(request, "training/partials/_import_progress.html", context)
    return render(request, "training/import_detail.html", context)


@require_POST
def import_cancel(request: HtmxHttpRequest, pk: int, job_pk: int) -> HttpResponse:
    dataset = _get_dataset_for_user(request, pk, write=True)
    job = get_object_or_404(ImportJob, pk=job_pk, dataset=dataset)
    if job.is_active:
        imports.cancel_import(job)
        messages.info(request, "The import is being cancelled; nothing from it will be kept.")
    return redirect("training:import_detail", pk=dataset.pk, job_pk=job.pk)


# --- Images --------------------------------------------------------------------------------


def _file_response(path, content_type: str, filename: str | None = None) -> FileResponse:
    """The file behind an image id never changes (content-addressed): browsers may keep it a day."""
    return private_file_response(path, content_type, filename=filename, max_age=86400, immutable=True)


@require_GET
def image_thumbnail(request: HtmxHttpRequest, pk: int) -> FileResponse:
    """Files are never under a public URL: every one goes through a view that checks access."""
    image = _get_image_for_user(request, pk)
    return _file_response(image.thumbnail_path, "image/jpeg")


@require_GET
def image_original(request: HtmxHttpRequest, pk: int) -> FileResponse:
    image = _get_image_for_user(request, pk)
    return _file_response(image.path, imaging.content_type(image.format), image.original_name)


@require_GET
def image_detail(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    image = _get_image_for_user(request, pk)
    dataset = image.dataset
    can_change = dataset.can_be_changed_by(request.user)
    form = ImageForm(initial={"label": image.label_id, "split": image.split}, dataset=dataset)
    back = _next_url(request, reverse("training:dataset_detail", args=[dataset.pk]))
    context = {"image": image, "dataset": dataset, "form": form, "can_change": can_change, "back_url": back}
    return render(request, "training/image_detail.html", context)


@require_POST
def image_update(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Move an image to another label and/or split; HTMX gets the updated card back."""
    image = _get_image_for_user(request, pk, write=True)
    dataset = image.dataset
    form = ImageForm(request.POST, dataset=dataset)
    error, changes = None, []
    if form.is_valid():  # recorded in the dataset's history, undoable there (training.curation)
        batch, reason = curation.new_batch(), "dataset page" if request.htmx else "image page"
        changes = curation.move_images([image], form.cleaned_data["label"], request.user, reason=reason, batch=batch)
        changes += curation.change_split([image], form.cleaned_data["split"], request.user, reason=reason, batch=batch)
    else:
        error = "Choose a label of this dataset and a split."
    if request.htmx:
        context = {
            "image": image,
            "dataset": dataset,
            "can_change": True,
            "labels": dataset.labels.all(),
            "card_error": error,
            "changes": changes,
            "back_url": _next_url(request, ""),
        }
        return render(request, "training/partials/_image_card.html", context)
    if error:
        messages.error(request, error)
    else:
        messages.success(
            request, f"“{image.original_name}” is now in {image.label.name}, {image.get_split_display().lower()}."
        )
    return redirect(_next_url(request, reverse("training:dataset_detail", args=[dataset.pk])))


@require_POST
def image_delete(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    image = _get_image_for_user(request, pk, write=True)
    dataset, name = image.dataset, image.original_name
    curation.delete_images([image], request.user, reason="image page")  # undoable from the dataset's history
    back = _next_url(request, reverse("training:dataset_detail", args=[dataset.pk]))
    if request.htmx:
        if request.htmx.target and request.htmx.target.startswith("image-"):
            return HttpResponse("")  # the card disappears from the grid
        return HttpResponseClientRedirect(back)
    messages.success(request, f"“{name}” was deleted. The dataset's History can undo it for "
                              f"{curation.trash_retention_days()} days.")  # fmt: skip
    return redirect(back)
