"""The Models page, a model's page, and installing weights from them (administrators only).

A model's page also holds its int8 switch (`classifier.int8`): administrators calibrate, switch on
and switch back; everyone else sees the state.
"""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.urls import Resolver404, ResolverMatch, resolve, reverse
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import SafeString
from django.views.decorators.http import require_POST, require_safe
from django.views.decorators.vary import vary_on_headers

from classifier import catalog, installs, int8, model_table, weights, zoo
from classifier.int8_forms import Int8CalibrationForm
from classifier.models import WeightsDownload
from classifier.weights_forms import DownloadForm, WeightsUploadForm
from webapp.http import HtmxHttpRequest, form_status


def _require_staff(request: HttpRequest) -> None:
    """Installing files on the server is an administrator's job."""
    if not request.user.is_staff:
        raise PermissionDenied


def _get_model_or_404(key: str) -> zoo.ZooModel:
    try:
        return zoo.get(key)
    except zoo.UnknownModel:
        raise Http404(f"No model {key!r}") from None


def _next_url(request: HttpRequest, default: str) -> str:
    target = request.POST.get("next", "")
    if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return target
    return default


def _page_context() -> dict:
    """What every Models page shows alongside its content."""
    return {
        "weights_dir": settings.WEIGHTS_DIR,
        "download_timeout": settings.WEIGHTS_DOWNLOAD_TIMEOUT,
        "latency_window": model_table.LATENCY_WINDOW,
    }


def _headers(query: model_table.TableQuery) -> list[dict]:
    return [
        {
            "label": column.label,
            "key": column.key,
            "numeric": column.numeric,
            "aria_sort": query.aria_sort(column.key),
            "link": query.sort_link(column.key),
        }
        for column in model_table.COLUMNS
    ]


@require_safe
@vary_on_headers("HX-Request")
def models_page(request: HtmxHttpRequest) -> HttpResponse:
    """Every model of the zoo with its status here; sorting and filters come in the query string."""
    context = _models_context(model_table.TableQuery.from_querydict(request.GET))
    if request.user.is_staff and not request.htmx:
        context["upload_form"] = WeightsUploadForm()
    template = "classifier/partials/_models_table.html" if request.htmx else "classifier/models.html"
    return render(request, template, context)


def _models_context(query: model_table.TableQuery) -> dict:
    """What the Models page shows for this sorting and these filters."""
    folder_error = ""
    try:
        rows = model_table.all_rows()
    except model_table.WeightsFolderError as exc:
        rows, folder_error = [], str(exc)
    shown = model_table.apply(rows, query)
    return {
        "query": query,
        "rows": shown,
        "total": len(rows),
        "headers": _headers(query),
        "polling": any(row.top.downloading for row in shown),
        "folder_error": folder_error,
        "any_installed": any(row.top.installed or row.notop.installed for row in rows),
        "families": zoo.families(),
        "speeds": zoo.SPEEDS,
        "accuracies": zoo.ACCURACIES,
        "status_filters": model_table.STATUS_FILTERS,
        "size_filters": model_table.SIZE_FILTERS,
        **_page_context(),
    }


@require_safe
@vary_on_headers("HX-Request")
def model_detail(request: HtmxHttpRequest, key: str) -> HttpResponse:
    """One model: its facts, both weights files (with and without head) and how to install them."""
    model = _get_model_or_404(key)
    context = _detail_context(model)
    if request.htmx:
        return render(request, "classifier/partials/_model_weights.html", context)
    if request.user.is_staff:
        context["upload_form"] = WeightsUploadForm(initial={"model": model.key})
    context["int8"] = _int8_card(request, model)
    return render(request, "classifier/model_detail.html", context)


def _detail_context(model: zoo.ZooModel) -> dict:
    """What a model's page shows: its facts and both of its weights files."""
    folder_error = ""
    try:
        row = model_table.row_for(model)
    except model_table.WeightsFolderError as exc:
        row, folder_error = None, str(exc)
    return {
        "model": model,
        "row": row,
        "files": [row.top, row.notop] if row else [],
        "folder_error": folder_error,
        **_page_context(),
    }


class _SeenFrom:
    """The request as the templates of the page at `path` see it: that page's address and navigation.

    The upload form sends the address of the page it sits on (`next`) and the menu marks the
    current page: both must be the page shown again, not the upload's own URL.
    """

    def __init__(self, request: HttpRequest, path: str, query: str, match: ResolverMatch) -> None:
        self._request, self._full_path, self.resolver_match = request, path + (f"?{query}" if query else ""), match

    def get_full_path(self) -> str:
        return self._full_path

    def __getattr__(self, name: str):
        return getattr(self._request, name)


def _refused_upload(request: HttpRequest, back: str, form: WeightsUploadForm) -> HttpResponse:
    """The page the upload came from, shown again with the refusal (in its messages) and a 400.

    A redirect would answer 302 then 200, and scripts could not tell a refused file from an
    installed one.
    """
    parts = urlsplit(back)
    try:
        match = resolve(parts.path)
    except Resolver404:
        match = None
    if match is None or match.view_name not in ("classifier:models", "classifier:model_detail"):
        parts = urlsplit(reverse("classifier:models"))  # the upload form is on these two pages only
        match = resolve(parts.path)
    if match.view_name == "classifier:model_detail":
        context = _detail_context(_get_model_or_404(match.kwargs["key"]))
        template = "classifier/model_detail.html"
    else:
        context = _models_context(model_table.TableQuery.from_querydict(QueryDict(parts.query)))
        template = "classifier/models.html"
    context.update(upload_form=form, request=_SeenFrom(request, parts.path, parts.query, match))
    return render(request, template, context, status=form_status(request, form))


def _with_next_steps(message: str, model: zoo.ZooModel) -> SafeString:
    """A message about an installed file, with where to go next: Classify with the model, or its page."""
    page = reverse("classifier:model_detail", args=[model.key])
    if weights.installed_path(model, settings.WEIGHTS_DIR) is None:
        return format_html(
            '{} Training can use it now; Classify needs the file with the head. <a href="{}">See {}</a>',
            message,
            page,
            model.name,
        )
    classify = f"{reverse('classifier:classify')}?{urlencode({'model': model.key})}"
    return format_html(
        '{} <a href="{}">Classify with {}</a> · <a href="{}">See the model</a>', message, classify, model.name, page
    )


@require_POST
def import_weights(request: HttpRequest) -> HttpResponse:
    """An administrator's upload: checked and installed like `manage.py import_weights` does."""
    _require_staff(request)
    back = _next_url(request, reverse("classifier:models"))
    form = WeightsUploadForm(request.POST, request.FILES)
    if not form.is_valid():
        errors = [str(error) for field_errors in form.errors.values() for error in field_errors]
        messages.error(request, " ".join(errors) or "The upload could not be read. Try again.")
        return _refused_upload(request, back, form)
    upload = form.cleaned_data["file"]
    try:
        installed = installs.import_upload(
            upload, model=form.cleaned_data["model"], include_top=form.cleaned_data["head"]
        )
    except weights.WeightsError as exc:
        messages.error(request, f"{upload.name} was not installed. {exc}")
        form.add_error("file", str(exc))
        return _refused_upload(request, back, form)
    messages.success(request, _with_next_steps(installed.describe(), installed.model))
    return redirect(back)


@require_POST
def download_weights(request: HttpRequest, key: str) -> HttpResponse:
    """Queue a download from Keras's official URL; the worker does it and the page shows how it went."""
    _require_staff(request)
    model = _get_model_or_404(key)
    back = _next_url(request, reverse("classifier:models"))
    form = DownloadForm(request.POST)
    include_top = form.cleaned_data["head"] if form.is_valid() else True
    download, created = installs.request_download(model, include_top, request.user)
    download.refresh_from_db()
    wf = model.weights_file(include_top)
    if download.status == WeightsDownload.Status.SUCCEEDED:
        messages.success(request, _with_next_steps(download.message, model))
    elif download.status in WeightsDownload.UNSUCCESSFUL:
        messages.error(request, download.message)
    elif created:
        messages.info(
            request,
            f"Download of {wf.filename} queued. This page shows its progress; without internet access it fails "
            f"within {settings.WEIGHTS_DOWNLOAD_TIMEOUT} seconds and says how to install the file by hand.",
        )
    else:
        messages.info(request, f"{wf.filename} is already being downloaded; this page shows its progress.")
    return redirect(back)


# --- Int8 ------------------------------------------------------------------------------------
def _int8_card(request: HttpRequest, model: zoo.ZooModel, form: Int8CalibrationForm | None = None) -> int8.Card | None:
    """The int8 card of an installed model; administrators get the calibration form."""
    choice = catalog.zoo_choice(model)
    if not choice.available:
        return None
    staff = request.user.is_staff
    if staff and form is None:
        form = Int8CalibrationForm(datasets=int8.datasets_for(request.user))
    urls = {
        name: reverse(f"classifier:model_int8{suffix}", args=[model.key])
        for name, suffix in (("status", ""), ("start", "_start"), ("switch", "_switch"), ("cancel", "_cancel"))
    }
    return int8.card(choice, can_switch=staff, urls=urls, form=form if staff else None)


def _int8_refused(
    request: HttpRequest, model: zoo.ZooModel, message: str, form: Int8CalibrationForm | None = None, status: int = 409
) -> HttpResponse:
    """The model's page again with the refusal: a 4xx, so scripts tell it from a success."""
    messages.error(request, message)
    context = _detail_context(model)
    context["upload_form"] = WeightsUploadForm(initial={"model": model.key})
    context["int8"] = _int8_card(request, model, form)
    return render(request, "classifier/model_detail.html", context, status=status)


def _int8_page(model: zoo.ZooModel) -> str:
    return reverse("classifier:model_detail", args=[model.key]) + "#int8"


@require_safe
def int8_status(request: HttpRequest, key: str) -> HttpResponse:
    """The int8 card alone: it polls itself while a conversion is queued or running."""
    model = _get_model_or_404(key)
    return render(request, "classifier/partials/_int8.html", {"int8": _int8_card(request, model)})


@require_POST
def int8_start(request: HttpRequest, key: str) -> HttpResponse:
    """Queue an int8 conversion calibrated on the chosen dataset or uploaded zip (administrators)."""
    _require_staff(request)
    model = _get_model_or_404(key)
    form = Int8CalibrationForm(request.POST, request.FILES, datasets=int8.datasets_for(request.user))
    if not form.is_valid():
        errors = [str(error) for field_errors in form.errors.values() for error in field_errors]
        return _int8_refused(request, model, " ".join(errors), form, status=form_status(request, form))
    try:
        int8.request_calibration(catalog.zoo_choice(model), user=request.user, **form.source())
    except int8.Int8Refused as refusal:
        return _int8_refused(request, model, str(refusal), form, status=form_status(request, conflict=True))
    messages.info(
        request,
        f"Int8 conversion of {model.name} queued, calibrated on {form.source()['source']}. The int8 card shows its "
        "progress; the model runs on float32 until you switch int8 on.",
    )
    return redirect(_int8_page(model))


@require_POST
def int8_switch(request: HttpRequest, key: str) -> HttpResponse:
    """Switch a model to its ready int8 file (`to=int8`) or back to float32 (administrators)."""
    _require_staff(request)
    model = _get_model_or_404(key)
    to = request.POST.get("to", "")
    try:
        message = int8.switch(catalog.zoo_choice(model), to)
    except int8.Int8Refused as refusal:
        conflict = to in ("int8", "float32")  # a known request refused in this state (409), else bad input (400)
        return _int8_refused(request, model, str(refusal), status=409 if conflict else 400)
    messages.success(request, message)
    return redirect(_int8_page(model))


@require_POST
def int8_cancel(request: HttpRequest, key: str) -> HttpResponse:
    _require_staff(request)
    model = _get_model_or_404(key)
    messages.info(request, int8.cancel(catalog.zoo_choice(model)))
    return redirect(_int8_page(model))
