"""JSON API: `POST /api/v1/predict` and `GET /api/v1/models`.

Authentication by API token (`Authorization: Bearer <token>`) or by the browser session; session
requests must carry the CSRF token like any form, token requests need none (no cookies involved).
Every error is JSON `{"error": "..."}` with a 4xx status, never an HTML page or a stack trace.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import wraps

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.utils.datastructures import MultiValueDict
from django.views.decorators.csrf import csrf_exempt

from classifier import catalog, runtimes
from classifier.forms import ApiPredictForm
from classifier.models import ApiToken
from classifier.services import ClassificationFailed, classify_uploads

CHUNKED_BODY = (
    "This request was sent in chunks (Transfer-Encoding: chunked) without a Content-Length header, and this "
    "server cannot read such a body: it would look empty. Send the request with a Content-Length (curl -F and "
    "Python requests do unless told to stream the upload)."
)
WRONG_BOUNDARY = (
    "The request body does not use the multipart boundary its Content-Type header names (boundary={boundary}), "
    "so no field or file could be read from it. Let your HTTP client build the body and the header together "
    "(curl -F, requests' files=); do not set Content-Type by hand."
)
# A part's headers inside a field's value: the body was split with another boundary than its own.
_SWALLOWED_PART = re.compile(r"\r\n--[^\r\n]*\r\ncontent-disposition:\s*form-data", re.IGNORECASE)


def json_error(message: str, status: int, **extra) -> JsonResponse:
    return JsonResponse({"error": message, **extra}, status=status)


def _content_length(request: HttpRequest) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


def _chunked_without_length(request: HttpRequest) -> bool:
    """Django reads a body only up to its Content-Length: a chunked one without it arrives empty.

    Whether a server de-chunks and sets Content-Length is the server's choice (gunicorn does not,
    a buffering proxy does); the header tells which case this request is.
    """
    return "chunked" in request.headers.get("Transfer-Encoding", "").lower() and _content_length(request) == 0


def _wrong_boundary(request: HttpRequest) -> bool:
    """A multipart body split with another boundary than its own.

    Django then finds no part at all, or reads the first field's value on to the end of the body,
    the other parts' headers (and the image bytes) included; either way the fields say nothing true.
    """
    if request.content_type != "multipart/form-data":
        return False
    if any(_SWALLOWED_PART.search(value) for _, values in request.POST.lists() for value in values):
        return True
    closing_delimiter = len(request.content_params.get("boundary", "")) + 8  # "--<boundary>--\r\n", give or take
    return not request.POST and not request.FILES and _content_length(request) > closing_delimiter


def _form_error(form: ApiPredictForm) -> JsonResponse:
    """The first problem, what was sent before what the server can do with it, and every field's.

    Without images the answer is "send an image", even when the model could not run either: that
    is the sender's mistake to fix first.
    """
    errors = form.errors.get_json_data()
    headline = errors.get("images", next(iter(errors.values())))[0]
    status = 409 if headline["code"] == "unavailable" else 400
    return json_error(headline["message"], status, fields={k: [e["message"] for e in v] for k, v in errors.items()})


def _token_from_header(request: HttpRequest) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() in ("bearer", "token") and key.strip():
        return key.strip()
    return None


def api_view(methods: tuple[str, ...]) -> Callable:
    """Authenticate by token or session (with CSRF for session POSTs) and answer errors in JSON."""

    def decorate(view: Callable) -> Callable:
        @csrf_exempt  # checked below for session requests only
        @login_not_required  # answered below with a JSON 401 instead of a login redirect
        @wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> JsonResponse:
            if request.method not in methods:
                response = json_error(f"Use {' or '.join(methods)} for this endpoint.", 405)
                response["Allow"] = ", ".join(methods)
                return response
            if _chunked_without_length(request):
                return json_error(CHUNKED_BODY, 411)
            key = _token_from_header(request)
            if key is not None:
                user = ApiToken.authenticate(key)
                if user is None:
                    return json_error("This API token is not valid (it may have been revoked).", 401)
                request.user = user
            elif not request.user.is_authenticated:
                return json_error(
                    "Authentication required: send 'Authorization: Bearer <token>' (create one on the API tokens "
                    "page) or log in.",
                    401,
                )
            elif request.method == "POST":
                failure = CsrfViewMiddleware(lambda r: None).process_view(request, None, (), {})
                if failure is not None:
                    return json_error(
                        "CSRF check failed: a logged-in browser session must send the X-CSRFToken header. "
                        "Scripts should use an API token instead.",
                        403,
                    )
            return view(request, *args, **kwargs)

        return wrapper

    return decorate


@api_view(("POST",))
def predict(request: HttpRequest) -> JsonResponse:
    """Classify one or more images (multipart field `images`, or `image`); optional `model`, `top_k`."""
    if _wrong_boundary(request):
        return json_error(WRONG_BOUNDARY.format(boundary=request.content_params.get("boundary", "")), 400)
    uploads = request.FILES.getlist("images") + request.FILES.getlist("image")
    form = ApiPredictForm(request.POST, MultiValueDict({"images": uploads}), user=request.user)
    if not form.is_valid():
        return _form_error(form)
    model, top_k = form.cleaned_data["model"], form.cleaned_data["top_k"]
    try:
        outcome = classify_uploads(request.user, model, form.cleaned_data["images"], top_k=top_k)
    except ClassificationFailed as exc:
        return json_error(str(exc), 409)

    results = []
    for item in outcome.files:
        if item.error is not None:
            results.append({"filename": item.filename, "error": item.error})
            continue
        p = item.prediction
        results.append(
            {
                "filename": item.filename,
                "id": p.pk,
                "width": p.width,
                "height": p.height,
                "inference_ms": round(p.inference_ms, 2),
                "predictions": [
                    {"label": g["label"], "probability": g["probability"], "index": g["index"]} for g in p.top[:top_k]
                ],
            }
        )
    body = {
        "model": model.key,
        "model_name": model.name,
        "top_k": top_k,
        "batch_ms": round(outcome.batch_ms, 2) if outcome.batch_ms is not None else None,
        "results": results,
    }
    if not outcome.succeeded:
        return JsonResponse(
            {"error": "None of the files could be classified; see each file's error.", **body}, status=422
        )
    return JsonResponse(body)


@api_view(("GET",))
def models(request: HttpRequest) -> JsonResponse:
    """Every model this user may use: the zoo and trained models, with whether each can run now."""
    data = []
    for choice in catalog.all_choices(request.user):
        entry = {
            "key": choice.key,
            "name": choice.name,
            "kind": choice.kind,
            "group": choice.group,
            "input_size": choice.input_size,
            "recommended": choice.recommended,
            "installed": choice.available,
            **choice.details,
        }
        if choice.kind == catalog.TRAINED:
            entry["labels"] = list(choice.labels)
        if choice.available:
            entry.update(runtimes.runtime_for(choice.weights_path).as_dict())
        data.append(entry)
    return JsonResponse({"default": catalog.default_key(request.user), "models": data})
