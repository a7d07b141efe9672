"""Training pages: the form that starts a job, the job's live page, comparisons, exports.

Everyone logged in may look at jobs and use their models (as they may see every dataset);
starting one needs `Dataset.can_train`, and cancelling, training again or deleting needs
`TrainingJob.can_be_changed_by` (who started it, or who manages the dataset). Switching a job's
model to int8 (`classifier.int8`, calibrated on its training split) needs `Dataset.can_be_changed_by`.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import content_disposition_header
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from classifier import int8
from training import charts, comparison, exporting, jobs, outcomes, trained_models
from training.models import Dataset, DatasetImage, TrainingJob
from training.training_forms import ContinueForm, TrainingForm
from webapp.http import HtmxHttpRequest, form_status

JOBS_PAGE_SIZE = 30
GALLERY_SIZE = 48  # misclassified images shown per split
INT8_GONE = '<section class="card int8-card" id="int8"><p class="muted">This model was deleted.</p></section>'


def _get_job_for_user(request: HtmxHttpRequest, pk: int, write: bool = False) -> tuple[TrainingJob, bool]:
    """The job and whether this user may change it; 404 if unknown, PermissionDenied if `write` and not allowed."""
    job = get_object_or_404(
        TrainingJob.objects.select_related("dataset", "created_by", "trained_model", "parent", "start_from"), pk=pk
    )
    if not Dataset.can_be_seen_by(request.user):
        raise Http404
    can_change = job.can_be_changed_by(request.user)
    if write and not can_change:
        raise PermissionDenied
    return job, can_change


@require_http_methods(["GET", "POST"])
def train(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """The training form for one dataset; refusals are shown before anyone fills it in."""
    dataset = get_object_or_404(Dataset, pk=pk)
    if not dataset.can_train(request.user):
        raise PermissionDenied
    problems = jobs.refusals(dataset)
    form = TrainingForm(request.POST if request.method == "POST" else None)
    conflict = False
    if request.method == "POST" and form.is_valid():
        try:
            job = jobs.start_training(dataset, form.cleaned_data["base"], form.config(), request.user)
        except jobs.TrainingRefused as refusal:
            form.add_error(None, str(refusal))
            conflict = bool(problems)  # the dataset is not ready (409); otherwise the settings were wrong (400)
        else:
            messages.success(request, f"Training job {job.pk} queued: this page follows it live.")
            return redirect("training:job_detail", pk=job.pk)
    context = {
        "dataset": dataset,
        "form": form,
        "problems": problems,
        "hints": form.base_hints(),
        "images": dataset.images.count(),
    }
    return render(request, "training/train_form.html", context, status=form_status(request, form, conflict=conflict))


def _job_context(request: HtmxHttpRequest, job: TrainingJob, can_change: bool) -> dict:
    """What the job's live part shows: progress, curves, results, exports."""
    history = job.history or []
    evaluations = []
    labels = job.labels
    for split in ("validation", "test"):
        result = job.evaluation.get(split)
        if result:
            evaluations.append(_evaluation_view(split, result, labels))
    model = getattr(job, "trained_model", None)
    exports = [
        {"format": fmt, "name": exporting.FORMAT_NAMES[fmt], **job.exports[fmt]}
        for fmt in exporting.FORMATS
        if fmt in job.exports
    ]
    card = _int8_card(request, job, model) if model is not None else None
    return {
        "job": job,
        "dataset": job.dataset,
        "can_change": can_change,
        "model": model,
        "int8": card,
        "runtime": card.runtime if card is not None else None,
        "queue_position": job.queue_position(),
        "loss_chart": mark_safe(charts.curves_svg(history, "loss", title="Loss", total_epochs=_planned_epochs(job))),
        "accuracy_chart": mark_safe(
            charts.curves_svg(history, "accuracy", title="Accuracy", total_epochs=_planned_epochs(job))
        ),
        "evaluations": evaluations,
        "comparison": _origin_comparison(job),
        "exports": exports,
        "eta": charts.format_duration(job.eta_seconds) if job.eta_seconds else None,
        "duration": charts.format_duration(job.duration.total_seconds()) if job.duration else None,
        "ready_after": charts.format_duration((job.model_ready_at - job.started_at).total_seconds())
        if job.model_ready_at and job.started_at
        else None,
    }


def _origin_comparison(job: TrainingJob) -> dict | None:
    """The job against the job it came from (trained again from, else continued from), once both finished.

    Measured on the validation images both evaluated (`training.comparison`); a continued job also
    says how long it took against the job it continued from.
    """
    origin = job.parent or job.start_from
    if origin is None or job.status != TrainingJob.Status.SUCCEEDED or origin.status != TrainingJob.Status.SUCCEEDED:
        return None
    view: dict = {"origin": origin, "relation": "trained again from" if job.parent_id else "continued from"}
    if job.start_from is not None and job.model_ready_at and job.started_at:
        earlier = job.start_from
        view["speed"] = {
            "earlier": earlier,
            "took": charts.format_duration((job.model_ready_at - job.started_at).total_seconds()),
            "earlier_took": charts.format_duration((earlier.model_ready_at - earlier.started_at).total_seconds())
            if earlier.model_ready_at and earlier.started_at
            else None,
        }
    earlier_outcome = outcomes.load_outcomes(origin.folder).get("validation")
    later_outcome = outcomes.load_outcomes(job.folder).get("validation")
    if earlier_outcome is None or later_outcome is None:
        return view  # a job from before outcomes were kept, or its files are gone: the partial says so
    result = comparison.compare(origin.labels, earlier_outcome, job.labels, later_outcome)
    shown = {"fixed": result.fixed[:GALLERY_SIZE], "broken": result.broken[:GALLERY_SIZE]}
    ids = [flip.image_id for flips in shown.values() for flip in flips]
    present = set(DatasetImage.objects.filter(pk__in=ids).values_list("pk", flat=True))
    view.update(result=result, present=present, shown=shown,
                more={name: len(getattr(result, name)) - len(flips) for name, flips in shown.items()})  # fmt: skip
    return view


def _planned_epochs(job: TrainingJob) -> int:
    return int(job.config.get("epochs", 0)) + (int(job.config.get("fine_tune_epochs", 0)) if job.fine_tunes else 0)


def _evaluation_view(split: str, result: dict, labels: list[str]) -> dict:
    mistakes = result.get("mistakes", [])[:GALLERY_SIZE]
    present = set(DatasetImage.objects.filter(pk__in=[m["image_id"] for m in mistakes]).values_list("pk", flat=True))
    gallery = [
        {
            **m,
            "true_label": labels[m["true"]] if m["true"] < len(labels) else "?",
            "predicted_label": labels[m["predicted"]] if m["predicted"] < len(labels) else "?",
            "present": m["image_id"] in present,
        }
        for m in mistakes
    ]
    return {
        "split": split,
        "title": "Validation images" if split == "validation" else "Test images",
        "result": result,
        "rows": charts.confusion_rows(result["confusion"], labels),
        "labels": labels,
        # Per label with its number and how many of its images were answered as another label:
        # the per-label rows link to those images (curation_views.job_images).
        "label_rows": [
            {**row, "index": i, "missed": sum(counts) - counts[i]}
            for i, (row, counts) in enumerate(zip(result["labels"], result["confusion"], strict=True))
        ],
        "gallery": gallery,
        "more_mistakes": max(0, result.get("mistake_count", 0) - len(gallery)),
    }


@require_GET
def job_detail(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    job, can_change = _get_job_for_user(request, pk)
    context = {**_job_context(request, job, can_change), "can_train": job.dataset.can_train(request.user)}
    return render(request, "training/job_detail.html", context)


@require_GET
def job_progress(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """The live part of the job page; it polls itself while the job is active, then stops."""
    related = ("dataset", "created_by", "trained_model", "parent", "start_from")
    job = TrainingJob.objects.select_related(*related).filter(pk=pk).first()
    if job is None:  # htmx ignores error answers and would poll on: answer with the news instead
        return render(request, "training/partials/_job_gone.html")
    context = _job_context(request, job, job.can_be_changed_by(request.user))
    return render(request, "training/partials/_job_body.html", context)


@require_POST
def job_cancel(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    job, _ = _get_job_for_user(request, pk, write=True)
    if job.is_active:
        if jobs.cancel(job):
            messages.info(request, "The job was cancelled before it started.")
        else:
            messages.info(request, "The job is stopping: it ends within a batch and keeps its curves so far.")
    return redirect("training:job_detail", pk=job.pk)


@require_POST
def job_again(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """The same settings on the dataset as it is now."""
    job, _ = _get_job_for_user(request, pk)
    if not job.dataset.can_train(request.user):
        raise PermissionDenied
    try:
        new = jobs.train_again(job, request.user)
    except jobs.TrainingRefused as refusal:
        messages.error(request, str(refusal))
        return redirect("training:job_detail", pk=job.pk)
    messages.success(request, f"Training job {new.pk} queued with the settings of job {job.pk}.")
    return redirect("training:job_detail", pk=new.pk)


@require_http_methods(["GET", "POST"])
def job_continue(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """The training form prefilled from a finished job; the job it queues starts from that job's model."""
    job, _ = _get_job_for_user(request, pk)
    if not job.dataset.can_train(request.user):
        raise PermissionDenied
    refusal = jobs.continue_refusal(job, job.dataset, job.base_key)
    problems = jobs.refusals(job.dataset) + ([refusal] if refusal else [])
    form = ContinueForm(request.POST if request.method == "POST" else None, earlier=job)
    conflict = False
    if request.method == "POST" and form.is_valid():
        try:
            new = jobs.continue_training(job, form.config(), request.user)
        except jobs.TrainingRefused as refused:
            form.add_error(None, str(refused))
            conflict = bool(problems)
        else:
            messages.success(request, f"Training job {new.pk} queued: it continues from the model of job {job.pk}.")
            return redirect("training:job_detail", pk=new.pk)
    context = {"job": job, "dataset": job.dataset, "form": form, "problems": problems,
               "images": job.dataset.images.count()}  # fmt: skip
    return render(request, "training/continue_form.html", context, status=form_status(request, form, conflict=conflict))


@require_http_methods(["GET", "POST"])
def job_delete(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """A confirmation page, then the delete: the job, its model and every file of both."""
    job, _ = _get_job_for_user(request, pk, write=True)
    if request.method == "POST" and not job.is_active:
        dataset = job.dataset
        job.delete()  # its folder goes once the delete commits
        messages.success(request, f"Training job {pk} and its model were deleted.")
        return redirect("training:dataset_detail", pk=dataset.pk)
    context = {"job": job, "dataset": job.dataset, "model": getattr(job, "trained_model", None)}
    status = 409 if request.method == "POST" else 200
    return render(request, "training/job_confirm_delete.html", context, status=status)


@require_GET
def job_export(request: HtmxHttpRequest, pk: int, fmt: str) -> FileResponse:
    """An export's zip; only exports that were checked and offered."""
    job, _ = _get_job_for_user(request, pk)
    record = job.exports.get(fmt)
    if fmt not in exporting.FORMATS or not record or not record.get("ok") or not record.get("path"):
        raise Http404("This export is not available.")
    try:
        handle = open(record["path"], "rb")  # noqa: SIM115 (FileResponse closes it)
    except FileNotFoundError:
        raise Http404("The export's file is missing; train again to rebuild it.") from None
    response = FileResponse(handle, content_type="application/zip")
    response["Content-Disposition"] = content_disposition_header(True, exporting.zip_name(job.trained_model.name, fmt))
    return response


@require_GET
def job_list(request: HtmxHttpRequest) -> HttpResponse:
    """Every training job, newest first, across datasets."""
    queryset = TrainingJob.objects.select_related("dataset", "created_by", "trained_model").defer("snapshot")
    page = Paginator(queryset, JOBS_PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "training/job_list.html", {"page": page, "jobs": list(page)})


@require_GET
def job_compare(request: HtmxHttpRequest) -> HttpResponse:
    """Two jobs side by side: their settings (differences marked) and their curves."""
    ids = [value for value in request.GET.getlist("jobs") if value.isdigit()][:2]
    if len(ids) != 2 or ids[0] == ids[1]:
        messages.error(request, "Tick two different jobs to compare them.")
        back = request.GET.get("dataset", "")
        return redirect(reverse("training:dataset_detail", args=[back]) if back.isdigit() else "training:job_list")
    found = {job.pk: job for job in TrainingJob.objects.select_related("dataset").filter(pk__in=ids)}
    if len(found) != 2:
        raise Http404("One of these jobs does not exist any more.")
    left, right = found[int(ids[0])], found[int(ids[1])]
    keys = list(dict.fromkeys([*left.config, *right.config]))
    settings_rows = [
        {"name": key.replace("_", " "), "left": left.config.get(key), "right": right.config.get(key),
         "differs": left.config.get(key) != right.config.get(key)}
        for key in keys
        if key not in ("memory_mb", "cache_features")
    ]  # fmt: skip
    columns = []
    for job in (left, right):
        total = _planned_epochs(job)
        columns.append(
            {
                "job": job,
                "loss_chart": mark_safe(charts.curves_svg(job.history, "loss", title=f"Loss, job {job.pk}",
                                                          total_epochs=total)),
                "accuracy_chart": mark_safe(charts.curves_svg(job.history, "accuracy",
                                                              title=f"Accuracy, job {job.pk}", total_epochs=total)),
                "duration": charts.format_duration(job.duration.total_seconds()) if job.duration else None,
            }
        )  # fmt: skip
    return render(request, "training/job_compare.html", {"columns": columns, "settings_rows": settings_rows})


# --- Int8 ------------------------------------------------------------------------------------
def _int8_card(request: HtmxHttpRequest, job: TrainingJob, model) -> int8.Card:
    """The int8 card of a job's model: calibrated on its training split, switched by who manages the dataset."""
    urls = {
        name: reverse(f"training:job_int8{suffix}", args=[job.pk])
        for name, suffix in (("status", ""), ("start", "_start"), ("switch", "_switch"), ("cancel", "_cancel"))
    }
    return int8.card(
        trained_models.choice(model),
        can_switch=job.dataset.can_be_changed_by(request.user),
        urls=urls,
        trained_source=f"the training split of job {job.pk}",
        poll=not job.is_active,  # while the job runs, the whole job body reloads every second anyway
    )


def _job_with_model(request: HtmxHttpRequest, pk: int, write: bool = False) -> TrainingJob:
    """The job, 404 without a model; PermissionDenied for `write` unless the user manages the dataset."""
    job, _ = _get_job_for_user(request, pk)
    if getattr(job, "trained_model", None) is None:
        raise Http404("This job has no model.")
    if write and not job.dataset.can_be_changed_by(request.user):
        raise PermissionDenied
    return job


def _int8_refused(request: HtmxHttpRequest, job: TrainingJob, message: str, status: int = 409) -> HttpResponse:
    """The job's page again with the refusal: 409 when the state refused it, 400 for a bad request."""
    messages.error(request, message)
    context = {**_job_context(request, job, job.can_be_changed_by(request.user)),
               "can_train": job.dataset.can_train(request.user)}  # fmt: skip
    return render(request, "training/job_detail.html", context, status=200 if request.htmx else status)


def _int8_page(job: TrainingJob) -> str:
    return reverse("training:job_detail", args=[job.pk]) + "#int8"


@require_GET
def job_int8(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """The int8 card alone: it polls itself while a conversion is queued or running."""
    try:
        job = _job_with_model(request, pk)
    except Http404:  # htmx ignores error answers and would poll on: answer with the news instead
        return HttpResponse(INT8_GONE)
    return render(request, "classifier/partials/_int8.html", {"int8": _int8_card(request, job, job.trained_model)})


@require_POST
def job_int8_start(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Queue an int8 conversion of the job's model, calibrated on its training split."""
    job = _job_with_model(request, pk, write=True)
    choice = trained_models.choice(job.trained_model)
    try:
        int8.request_calibration(
            choice, kind="training", source=f"the training split of job {job.pk}", user=request.user
        )
    except int8.Int8Refused as refusal:
        return _int8_refused(request, job, str(refusal))
    messages.info(
        request,
        f"Int8 conversion of {choice.name} queued, calibrated on the training split of job {job.pk}. The int8 card "
        "shows its progress; the model runs on float32 until you switch int8 on.",
    )
    return redirect(_int8_page(job))


@require_POST
def job_int8_switch(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Switch the job's model to its ready int8 file (`to=int8`) or back to float32."""
    job = _job_with_model(request, pk, write=True)
    to = request.POST.get("to", "")
    try:
        message = int8.switch(trained_models.choice(job.trained_model), to)
    except int8.Int8Refused as refusal:
        return _int8_refused(request, job, str(refusal), status=409 if to in ("int8", "float32") else 400)
    messages.success(request, message)
    return redirect(_int8_page(job))


@require_POST
def job_int8_cancel(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    job = _job_with_model(request, pk, write=True)
    messages.info(request, int8.cancel(trained_models.choice(job.trained_model)))
    return redirect(_int8_page(job))
