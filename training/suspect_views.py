"""Suspected label errors and near-duplicate pairs of a job: the lists, and accept / dismiss / fix in place.

Everyone logged in may look (as they may see every dataset and job). Accepting, dismissing and
fixing a pair change the dataset, so they need `Dataset.can_be_changed_by` (403 otherwise);
asking the worker to look at an older job needs `TrainingJob.can_be_changed_by`, like training
again. The lists are the job's (`training.analysis`); each row shows the image as it is now.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from training import analysis
from training.models import Dataset, TrainingJob
from webapp.http import HtmxHttpRequest

PAGE_SIZE = 60
CARD_GONE = '<section class="card" id="suspects-card"><p class="muted">This job was deleted.</p></section>'


def _get_job_for_user(request: HtmxHttpRequest, pk: int, write: bool = False) -> tuple[TrainingJob, bool]:
    """The job and whether this user may change its dataset; PermissionDenied if `write` and not allowed."""
    job = get_object_or_404(TrainingJob.objects.select_related("dataset"), pk=pk)
    if not Dataset.can_be_seen_by(request.user):
        raise Http404
    can_change = job.dataset.can_be_changed_by(request.user)
    if write and not can_change:
        raise PermissionDenied
    return job, can_change


# --- The card on the job's page -----------------------------------------------------------------------
def card_context(request: HtmxHttpRequest, job: TrainingJob, error: str = "") -> dict:
    """What the job page's card says: not looked for yet, being computed, failed, or the counts."""
    result = analysis.read(job)
    context = {"job": job, "result": result, "error": error, "can_start": job.can_be_changed_by(request.user)}
    if result is not None and result.done:
        rows = analysis.suspect_rows(job, result.suspects)
        context["suspect_count"] = len(rows)
        context["open_count"] = sum(1 for row in rows if row.is_open)
        context["pair_count"] = len(result.duplicates)
        context["open_pairs"] = sum(1 for row in analysis.pair_rows(result.duplicates) if row.can_fix)
    return context


@require_GET
def job_analysis(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """The card alone: the job page loads it, and it polls itself while the worker computes."""
    job = TrainingJob.objects.select_related("dataset").filter(pk=pk).first()
    if job is None:  # htmx ignores error answers and would poll on: answer with the news instead
        return HttpResponse(CARD_GONE)
    return render(request, "training/partials/_suspect_card.html", card_context(request, job))


@require_POST
def job_analysis_start(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Ask the worker to look for suspected label errors and near-duplicates of an older job."""
    job, _ = _get_job_for_user(request, pk)
    if not job.can_be_changed_by(request.user):
        raise PermissionDenied
    error = ""
    try:
        analysis.request(job)
    except analysis.AnalysisRefused as refused:
        error = str(refused)
    if request.htmx:
        return render(request, "training/partials/_suspect_card.html", card_context(request, job, error))
    if error:
        messages.error(request, error)
    else:
        messages.info(request, "The worker is looking for suspected label errors and near-duplicates of this job.")
    return redirect(reverse("training:job_detail", args=[job.pk]) + "#suspects-card")


# --- Suspected label errors ------------------------------------------------------------------------------
@require_GET
def job_suspects(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """The job's suspected label errors, strongest first: those still to review, or (show=all) every one."""
    job, can_change = _get_job_for_user(request, pk)
    result = analysis.read(job)
    rows = analysis.suspect_rows(job, result.suspects) if result is not None and result.done else []
    show_all = request.GET.get("show") == "all"
    open_rows = [row for row in rows if row.is_open]
    page = Paginator(rows if show_all else open_rows, PAGE_SIZE).get_page(request.GET.get("page"))
    context = {
        "job": job,
        "dataset": job.dataset,
        "result": result,
        "can_change": can_change,
        "page": page,
        "rows": list(page),
        "show_all": show_all,
        "total": len(rows),
        "open_count": len(open_rows),
        "counts": _state_counts(rows),
        "here": request.get_full_path(),
    }
    return render(request, "training/job_suspects.html", context)


def _state_counts(rows: list[analysis.SuspectRow]) -> list[tuple[str, int]]:
    words = {
        analysis.ACCEPTED: "accepted",
        analysis.DISMISSED: "dismissed",
        analysis.MOVED: "moved since",
        analysis.DELETED: "deleted since",
        analysis.EXCLUDED: "excluded since",
    }
    counts = {state: sum(1 for row in rows if row.state == state) for state in words}
    return [(words[state], n) for state, n in counts.items() if n]


@require_POST
def suspect_accept(request: HtmxHttpRequest, pk: int, image_pk: int) -> HttpResponse:
    """Move the image to the suggested label, recorded in the dataset's history."""
    return _decide(request, pk, image_pk, analysis.accept)


@require_POST
def suspect_dismiss(request: HtmxHttpRequest, pk: int, image_pk: int) -> HttpResponse:
    """Keep the label: no later job lists the image for it again."""
    return _decide(request, pk, image_pk, analysis.dismiss)


def _decide(request: HtmxHttpRequest, pk: int, image_pk: int, action) -> HttpResponse:
    job, _ = _get_job_for_user(request, pk, write=True)
    entry = analysis.find_entry(analysis.read(job), image_pk)
    if entry is None:
        raise Http404("This image is not in the job's list of suspected label errors.")
    error = ""
    try:
        action(job, entry, request.user)
    except analysis.ReviewRefused as refused:
        error = str(refused)
    row = analysis.suspect_rows(job, [entry])[0]
    row.error = error
    if request.htmx:
        context = {"row": row, "job": job, "can_change": True, "here": _back(request, job, "job_suspects")}
        return render(request, "training/partials/_suspect_row.html", context)
    if error:
        messages.error(request, error)
    else:
        messages.success(request, f"“{row.image.original_name if row.image else image_pk}”: {row.state_text}")
    return redirect(_back(request, job, "job_suspects"))


def _back(request: HtmxHttpRequest, job: TrainingJob, name: str) -> str:
    """The list page the form was on (only ours: never a URL from the request)."""
    query = "?show=all" if request.POST.get("show") == "all" else ""
    return reverse(f"training:{name}", args=[job.pk]) + query


# --- Near-duplicate pairs ------------------------------------------------------------------------------------
@require_GET
def job_duplicates(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Pairs of images in different splits that are the same photo, most alike first."""
    job, can_change = _get_job_for_user(request, pk)
    result = analysis.read(job)
    rows = analysis.pair_rows(result.duplicates) if result is not None and result.done else []
    page = Paginator(rows, PAGE_SIZE).get_page(request.GET.get("page"))
    context = {
        "job": job,
        "dataset": job.dataset,
        "result": result,
        "can_change": can_change,
        "page": page,
        "rows": list(page),
        "total": len(rows),
        "open_count": sum(1 for row in rows if row.can_fix),
    }
    return render(request, "training/job_duplicates.html", context)


@require_POST
def duplicate_fix(request: HtmxHttpRequest, pk: int, kept_pk: int, moved_pk: int) -> HttpResponse:
    """Keep both in the same split: the validation or test image joins the other one's split."""
    job, _ = _get_job_for_user(request, pk, write=True)
    entry = analysis.find_pair(analysis.read(job), kept_pk, moved_pk)
    if entry is None:
        raise Http404("These two images are not a near-duplicate pair of this job.")
    error = ""
    try:
        analysis.keep_in_same_split(job, entry, request.user)
    except analysis.ReviewRefused as refused:
        error = str(refused)
    row = analysis.pair_rows([entry])[0]
    row.error = error
    if request.htmx:
        return render(request, "training/partials/_duplicate_row.html", {"row": row, "job": job, "can_change": True})
    if error:
        messages.error(request, error)
    elif row.moved is not None:
        messages.success(request, f"“{row.moved.original_name}” is now in {row.moved.split}, with its twin.")
    return redirect("training:job_duplicates", pk=job.pk)
