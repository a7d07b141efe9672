"""JSON API of training jobs: `POST/GET /api/v1/jobs`, `GET /api/v1/jobs/<id>`, `POST /api/v1/jobs/<id>/cancel`.

Scripts start, watch and cancel jobs the way the web page does: the same form (`TrainingForm`), the
same checks (`jobs.start_training`), the same permissions. Authentication and error handling are
those of the prediction API (`classifier.api.api_view`): every error is JSON `{"error": "..."}`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from django.http import HttpRequest, JsonResponse
from django.urls import reverse

from classifier import zoo
from classifier.api import api_view, json_error
from training import jobs
from training.models import Dataset, TrainedModel, TrainingJob
from training.training_forms import TrainingForm

# How many jobs `GET /api/v1/jobs` lists, newest first.
LIST_LIMIT = 50
# Fields a request may send besides the form's own (the session's CSRF token comes as a field too).
TARGET_FIELDS = ("dataset", "base")
IGNORED_FIELDS = ("csrfmiddlewaretoken",)
BOOLEAN_WORDS = {**dict.fromkeys(("true", "1", "yes", "on"), True), **dict.fromkeys(("false", "0", "no", "off"), False)}


class BadRequest(Exception):
    """The request cannot be read as a job; carries the JSON error answer."""

    def __init__(self, message: str, status: int = 400, fields: dict[str, list[str]] | None = None) -> None:
        super().__init__(message)
        self.message, self.status, self.fields = message, status, fields

    def response(self) -> JsonResponse:
        extra = {"fields": self.fields} if self.fields is not None else {}
        return json_error(self.message, self.status, **extra)


# --- Views ---------------------------------------------------------------------------------------
@api_view(("GET", "POST"))
def job_list(request: HttpRequest) -> JsonResponse:
    """GET: the jobs this user started, newest first. POST: start a job (201 with its JSON and Location)."""
    if request.method == "GET":
        recent = TrainingJob.objects.filter(created_by=request.user).select_related("dataset")[:LIST_LIMIT]
        return JsonResponse({"jobs": [job_json(job) for job in recent]})
    try:
        job = _start(request)
    except BadRequest as exc:
        return exc.response()
    response = JsonResponse(job_json(job), status=201)
    response["Location"] = reverse("training_api:job", args=[job.pk])
    return response


@api_view(("GET",))
def job_detail(request: HttpRequest, pk: int) -> JsonResponse:
    """Status, progress, curves and results: what the job page shows, for scripts that poll."""
    job = _visible_job(request, pk)
    if job is None:
        return _job_not_found(pk)
    return JsonResponse(job_json(job))


@api_view(("POST",))
def job_cancel(request: HttpRequest, pk: int) -> JsonResponse:
    """Cancel a queued job at once, or ask a running one to stop (it stops within a batch)."""
    job = _visible_job(request, pk)
    if job is None:
        return _job_not_found(pk)
    if not job.can_be_changed_by(request.user):
        return json_error("Only who started this job, or who manages its dataset, may cancel it.", 403)
    if job.is_active:
        jobs.cancel(job)
        job.refresh_from_db()
    stopping = job.status == TrainingJob.Status.RUNNING and job.cancel_requested
    if job.status != TrainingJob.Status.CANCELLED and not stopping:  # ended before (or while) we asked
        return json_error(f"This job has already ended ({job.status}).", 409)
    return JsonResponse(job_json(job))


# --- Starting a job ------------------------------------------------------------------------------
def _start(request: HttpRequest) -> TrainingJob:
    """Read, check and queue; every refusal is a BadRequest with the status the API answers."""
    sent = _request_fields(request)
    unknown = sorted(set(sent) - set(TARGET_FIELDS) - set(IGNORED_FIELDS) - set(TrainingForm.base_fields))
    if unknown:
        known = ", ".join(TARGET_FIELDS + tuple(name for name in TrainingForm.base_fields if name != "base"))
        raise BadRequest(
            f"Unknown field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: send {known}.",
            fields={name: ["Unknown field."] for name in unknown},
        )
    dataset = _find_dataset(sent.get("dataset"))
    if not dataset.can_train(request.user):
        raise BadRequest(
            f"Your account may not train on the dataset “{dataset.name}”: ask its owner, or an administrator for "
            "the 'add training job' permission.",
            403,
        )
    base_key = _check_base(sent.get("base"), dataset)
    form = TrainingForm(_form_data(sent, base_key))
    if not form.is_valid():
        errors = {name: [str(message) for message in messages] for name, messages in form.errors.items()}
        raise BadRequest(next(iter(errors.values()))[0], fields=errors)
    try:
        return jobs.start_training(dataset, base_key, form.config(), request.user)
    except jobs.TrainingRefused as exc:
        raise BadRequest(str(exc), 409) from None


def _request_fields(request: HttpRequest) -> dict[str, object]:
    """The body's fields as name -> value (a list for repeated form fields), from JSON or a form body."""
    if request.content_type == "application/json":
        try:
            body = json.loads(request.body or b"{}")
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadRequest(f"The request body is not valid JSON ({exc}).") from None
        if not isinstance(body, dict):
            raise BadRequest('The JSON body must be an object of fields, like {"dataset": 1, "base": "mobilenetv2"}.')
        return {name: value for name, value in body.items() if value is not None}
    return {name: values if len(values) > 1 else values[0] for name, values in request.POST.lists()}


def _single(name: str, value: object) -> object:
    if isinstance(value, list | dict):
        raise BadRequest(f"Send one value for {name}.", fields={name: ["Send one value."]})
    return value


def _find_dataset(value: object) -> Dataset:
    """By id, or else by exact name ignoring case (a dataset may be called "2020")."""
    text = str(_single("dataset", value) if value is not None else "").strip()
    if not text:
        message = "Say which dataset to train on: send dataset (its id or name)."
        raise BadRequest(message, fields={"dataset": [message]})
    found = None
    if text.isdigit():
        found = Dataset.objects.filter(pk=int(text)).first()
    if found is None:
        found = Dataset.objects.filter(name__iexact=text).first()
    if found is None:  # SQLite folds ASCII only: compare the rest in Python
        found = next((d for d in Dataset.objects.all() if d.name.casefold() == text.casefold()), None)
    if found is None:
        raise BadRequest(f"No dataset has the id or name “{text}”.", 404)
    return found


def _check_base(value: object, dataset: Dataset) -> str:
    """The base's zoo key; unknown is the request's fault (400), weights missing the server's state (409)."""
    text = str(_single("base", value) if value is not None else "").strip()
    if not text:
        message = "Say which base model to train on: send base (a key from GET /api/v1/models, e.g. mobilenetv2)."
        raise BadRequest(message, fields={"base": [message]})
    try:
        key = zoo.get(text).key
    except zoo.UnknownModel as exc:
        raise BadRequest(str(exc), fields={"base": [str(exc)]}) from None
    refusal = jobs.base_refusal(key)
    if refusal:
        raise BadRequest(" ".join([*jobs.refusals(dataset), refusal]), 409)  # every reason at once, like the form
    return key


def _form_data(sent: Mapping[str, object], base_key: str) -> dict[str, object]:
    """The form's defaults overlaid with what was sent: an absent checkbox means its default, not "off"."""
    data: dict[str, object] = {}
    for name, field in TrainingForm.base_fields.items():
        if name == "base":
            continue
        value = sent.get(name, field.initial)
        if name == "augment":
            data[name] = _augment(value)
        elif name in ("early_stopping", "class_weights"):
            data[name] = _boolean(name, value)
        elif value is not None:
            data[name] = _single(name, value)
    data["base"] = base_key
    return data


def _augment(value: object) -> list[str]:
    """Repeated fields, a list, or one comma-separated value ("flip,rotate")."""
    if value is None:
        return []
    items: Iterable[object] = value if isinstance(value, list) else [value]
    names = []
    for item in items:
        if not isinstance(item, str):
            message = "Send augmentation names: a list, or one comma-separated value like flip,rotate."
            raise BadRequest(message, fields={"augment": [message]})
        names += [part.strip() for part in item.split(",") if part.strip()]
    return names


def _boolean(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    word = str(_single(name, value)).strip().lower()
    if word not in BOOLEAN_WORDS:
        message = f"Send true or false for {name}."
        raise BadRequest(message, fields={name: [message]})
    return BOOLEAN_WORDS[word]


# --- Reading jobs --------------------------------------------------------------------------------
def _visible_job(request: HttpRequest, pk: int) -> TrainingJob | None:
    job = TrainingJob.objects.select_related("dataset").filter(pk=pk).first()
    if job is None or not job.dataset.can_be_seen_by(request.user):
        return None
    return job


def _job_not_found(pk: int) -> JsonResponse:
    return json_error(f"No training job {pk} (it may have been deleted).", 404)


def _url(name: str, *args) -> str:
    return reverse(name, args=args)


def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None


def job_json(job: TrainingJob) -> dict:
    """The job as scripts see it; the same keys whatever its state (None until known)."""
    try:
        model: TrainedModel | None = job.trained_model
    except TrainedModel.DoesNotExist:
        model = None
    return {
        "id": job.pk,
        "url": _url("training:job_detail", job.pk),
        "status": job.status,
        "message": job.message,
        "cancel_requested": job.cancel_requested,
        "dataset": {"id": job.dataset_id, "name": job.dataset.name},
        "base": job.base_key,
        "base_name": job.base_name,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "model_ready_at": _iso(job.model_ready_at),
        "worker_host": job.worker_host or None,
        "device": (job.strategy or {}).get("device"),
        "queue_position": job.queue_position(),
        "progress": {
            "phase": job.phase,
            "percent": job.percent,
            "epoch": job.epoch,
            "epochs": job.epochs,
            "batch": job.batch,
            "batches": job.batches,
            "eta_seconds": job.eta_seconds,
        },
        "history": job.history,
        "config": job.config,
        "batch_size_used": job.batch_size_used,
        "notes": job.notes,
        "best_val_accuracy": job.best_val_accuracy,
        "model": None
        if model is None
        else {"key": model.key, "name": model.name, "labels": model.labels, "val_accuracy": model.val_accuracy},
        "evaluation": {
            split: {key: scores.get(key) for key in ("accuracy", "macro_f1", "images")}
            for split, scores in job.evaluation.items()
        },
        "exports": {fmt: _export_json(job, fmt, data) for fmt, data in job.exports.items()},
    }


def _export_json(job: TrainingJob, fmt: str, data: dict) -> dict:
    checked, ok = data.get("checked") or 0, bool(data.get("ok"))
    return {
        "ok": ok,
        "message": data.get("message", ""),
        "agreement": (data.get("agreeing") or 0) / checked if checked else None,
        "size_bytes": data.get("size_bytes"),
        "url": _url("training:job_export", job.pk, fmt) if ok else None,
    }
