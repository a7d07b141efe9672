"""Classify, History and API tokens pages."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseClientRedirect

from classifier import catalog, imaging
from classifier.forms import ClassifyForm, TokenForm
from classifier.models import ApiToken, Prediction
from classifier.services import ClassificationFailed, classify_uploads
from webapp.http import HtmxHttpRequest, form_status, private_file_response

HISTORY_PAGE_SIZE = 20


def _get_prediction_for_user(request: HttpRequest, pk: int) -> Prediction:
    """A prediction the user may see: their own, or anyone's for staff; 404 otherwise."""
    prediction = get_object_or_404(Prediction.objects.select_related("user"), pk=pk)
    if prediction.user_id != request.user.id and not request.user.is_staff:
        raise Http404
    return prediction


@require_http_methods(["GET", "POST"])
@vary_on_headers("HX-Request")
def classify(request: HtmxHttpRequest) -> HttpResponse:
    """Upload images, pick a model, see top-5 for each. HTMX swaps in the results; no-JS reloads."""
    outcome, error = None, None
    if request.method == "POST":
        form = ClassifyForm(request.POST, request.FILES, user=request.user)
        if form.is_valid():
            try:
                outcome = classify_uploads(request.user, form.cleaned_data["model"], form.cleaned_data["images"])
            except ClassificationFailed as exc:
                error = str(exc)
    else:
        form = ClassifyForm(user=request.user, initial={"model": request.GET.get("model")})
    context = {
        "form": form,
        "outcome": outcome,
        "error": error,
        "has_models": bool(form.fields["model"].widget.choices),
        "max_files": settings.MAX_FILES_PER_REQUEST,
        "max_mib": settings.MAX_UPLOAD_BYTES // 2**20,
        "supported": imaging.SUPPORTED_DESCRIPTION,
    }
    if request.htmx:
        return render(request, "classifier/partials/_results.html", context)
    status = form_status(request, form, conflict=_conflict(form, error))
    return render(request, "classifier/classify.html", context, status=status)


def _conflict(form: ClassifyForm, error: str | None) -> bool:
    """The model cannot run (409, like the API), unless the input itself is also wrong (400)."""
    if error is not None:
        return True
    return form.has_error("model", "unavailable") and not form.has_error("images")


@require_GET
@vary_on_headers("HX-Request")
def history(request: HtmxHttpRequest) -> HttpResponse:
    """Your predictions, newest first; staff can switch to everyone's."""
    show_all = request.user.is_staff and request.GET.get("who") == "all"
    predictions = Prediction.objects.select_related("user")
    if not show_all:
        predictions = predictions.filter(user=request.user)
    page = Paginator(predictions, HISTORY_PAGE_SIZE).get_page(request.GET.get("page"))
    context = {"page": page, "show_all": show_all}
    if request.htmx:
        return render(request, "classifier/partials/_history_list.html", context)
    return render(request, "classifier/history.html", context)


@require_POST
def delete_prediction(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Delete a prediction and its stored files (the row's post_delete signal removes them)."""
    prediction = _get_prediction_for_user(request, pk)
    name = prediction.original_name
    prediction.delete()
    if request.htmx:
        return HttpResponse("")  # the row swaps itself out
    messages.success(request, f"Deleted the prediction for {name}.")
    next_url = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}):
        next_url = reverse("classifier:history")
    return redirect(next_url)


@require_GET
def prediction_image(request: HtmxHttpRequest, pk: int) -> FileResponse:
    """The uploaded original, only for its owner and staff (never a public media URL)."""
    prediction = _get_prediction_for_user(request, pk)
    content_type = imaging.content_type(prediction.image_format)
    return private_file_response(prediction.image, content_type, filename=prediction.original_name or "image")


@require_GET
def prediction_thumbnail(request: HtmxHttpRequest, pk: int) -> FileResponse:
    prediction = _get_prediction_for_user(request, pk)
    return private_file_response(prediction.thumbnail, "image/jpeg")


@require_http_methods(["GET", "POST"])
def tokens(request: HtmxHttpRequest) -> HttpResponse:
    """Personal API tokens: create one (shown once), see when each was last used, revoke."""
    new_key = None
    if request.method == "POST":
        form = TokenForm(request.POST)
        if form.is_valid():
            _, new_key = ApiToken.issue(request.user, form.cleaned_data["name"])
            form = TokenForm()
    else:
        form = TokenForm()
    context = {
        "form": form,
        "new_key": new_key,
        "tokens": ApiToken.objects.filter(user=request.user),
        "api_url": request.build_absolute_uri(reverse("classifier:api_predict")),
        "example_model": catalog.default_key(request.user),  # a model the example can really run
    }
    return render(request, "classifier/tokens.html", context, status=form_status(request, form))


@require_POST
def revoke_token(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    token = get_object_or_404(ApiToken, pk=pk, user=request.user)
    token.delete()
    messages.success(request, f"Revoked the token “{token.name}”. Scripts using it can no longer call the API.")
    if request.htmx:
        return HttpResponseClientRedirect(reverse("classifier:tokens"))
    return redirect("classifier:tokens")
