"""HTTP helpers shared by the views of both apps: request typing, form answers, private files."""

from __future__ import annotations

import os
from typing import BinaryIO

from django import forms
from django.conf import settings
from django.db.models.fields.files import FieldFile
from django.http import FileResponse, Http404, HttpRequest
from django.utils.http import content_disposition_header
from django_htmx.middleware import HtmxDetails

# Longest file name put in a Content-Disposition header; longer names keep their extension.
MAX_DOWNLOAD_NAME = 150


class HtmxHttpRequest(HttpRequest):
    """For type hints: django-htmx's middleware sets request.htmx on every request."""

    htmx: HtmxDetails


def form_status(request: HttpRequest, form: forms.BaseForm | None = None, *, conflict: bool = False) -> int:
    """The status of a page that shows a form again: 400 for refused input, 409 for a conflict, else 200.

    Scripts and monitors tell a refusal from a success by the status alone, so a form shown again
    with errors is not a 200. `conflict` marks refusals caused by the state of things rather than
    the input ("an import is already running"). HTMX requests keep 200: htmx swaps only 2xx
    answers by default, and its partial must replace the form for the errors to show.
    """
    if getattr(request, "htmx", False):
        return 200
    if conflict:
        return 409
    if form is not None and form.is_bound and form.errors:
        return 400
    return 200


def download_name(name: str) -> str:
    """A file name fit for a header: no control characters, not absurdly long, its extension kept."""
    name = "".join(c for c in os.path.basename(name) if c.isprintable()).strip()
    if len(name) > MAX_DOWNLOAD_NAME:
        stem, ext = os.path.splitext(name)
        ext = ext if len(ext) <= 16 else ""
        name = stem[: MAX_DOWNLOAD_NAME - len(ext)] + ext
    return name


def private_file_response(
    source: FieldFile | str | os.PathLike,
    content_type: str,
    *,
    filename: str | None = None,
    as_attachment: bool = False,
    max_age: int = 3600,
    immutable: bool = False,
) -> FileResponse:
    """Stream a file that only logged-in users may see; 404 when it is missing.

    Browsers may keep it (private: never a shared cache). The Content-Disposition header is built
    by Django, which writes names beyond ASCII as RFC 6266 `filename*=utf-8''...`, the form every
    browser reads; a hand-made `filename="é.jpg"` header reaches them garbled.
    """
    response = FileResponse(_open(source), content_type=content_type)
    if filename:
        disposition = content_disposition_header(as_attachment, download_name(filename) or "download")
        if disposition:
            response["Content-Disposition"] = disposition
    response["Cache-Control"] = f"private, max-age={max_age}" + (", immutable" if immutable else "")
    return response


def _open(source: FieldFile | str | os.PathLike) -> BinaryIO:
    try:
        if isinstance(source, FieldFile):
            return source.open("rb")
        return open(source, "rb")  # FileResponse closes it
    except (FileNotFoundError, ValueError):  # ValueError: a FieldFile without a file
        raise Http404("The file is missing.") from None


def client_ip(request: HttpRequest) -> str:
    """The client's address: behind our reverse proxy (BEHIND_HTTPS_PROXY), the one the proxy appended
    last to X-Forwarded-For (a client can forge the earlier entries, not that one); else REMOTE_ADDR."""
    if settings.BEHIND_PROXY:
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
        if forwarded:
            return forwarded[-1]
    return request.META.get("REMOTE_ADDR", "")
