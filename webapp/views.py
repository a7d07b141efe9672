"""Project-wide error pages: API paths answer in JSON, pages in HTML, never a stack trace."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.shortcuts import render
from django.utils.http import url_has_allowed_host_and_scheme

from webapp.htmx import error_fragment, is_htmx, login_redirect


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def _error(
    request: HttpRequest, status: int, title: str, message: str, *, htmx_message: str = "", **page
) -> HttpResponse:
    """JSON under /api/, a one-line fragment for an HTMX button (htmx.py), the styled page otherwise.

    `page` adds to the page's context: back_url and back_label for its button.
    """
    if _is_api(request):
        return JsonResponse({"error": message}, status=status)
    if is_htmx(request):
        return error_fragment(status, title, htmx_message or message)
    return render(request, "error.html", {"title": title, "message": message, **page}, status=status)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return _error(request, 400, "Bad request", unreadable_request_message(exception))


def unreadable_request_message(exception: Exception | None) -> str:
    """The true reason Django could not read a request, from the exception it raised, in one sentence."""
    if isinstance(exception, TooManyFieldsSent):
        return (
            f"The request has more than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS:,} form fields, the most this server "
            "reads in one request. Send only the fields the form or the API needs."
        )
    if isinstance(exception, TooManyFilesSent):
        return (
            f"The request has more than {settings.DATA_UPLOAD_MAX_NUMBER_FILES:,} files, more than this server reads "
            f"in one request: send fewer per request, at most {settings.MAX_FILES_PER_REQUEST}."
        )
    if isinstance(exception, RequestDataTooBig):
        return (
            f"The request's text fields (everything but uploaded files) add up to more than "
            f"{_size(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)}, the most this server reads. Send images as file "
            "uploads (multipart/form-data), not as text."
        )
    if isinstance(exception, MultiPartParserError):
        return _multipart_message(str(exception))
    return (
        "The request could not be read: it is malformed or incomplete. Reload the page, or check what a script sends."
    )


def _multipart_message(reason: str) -> str:
    """Django's MultiPartParserError says what went wrong only in its message."""
    if "header size" in reason:
        return (
            "A part of the upload has headers longer than 1 KB, which the server does not read; usually a very long "
            "file name. Rename the file to something shorter and send it again."
        )
    if "boundary" in reason:
        return (
            "The Content-Type header says multipart/form-data but names no valid boundary. Let your HTTP client "
            "build the body and its Content-Type header together (curl -F, requests' files=); do not set the "
            "header by hand."
        )
    return f"The multipart body of the request could not be read ({reason.rstrip('.')}). Let your HTTP client build it."


def _size(size: int) -> str:
    return f"{size / 1_048_576:.1f} MiB" if size >= 1_048_576 else f"{size:,} bytes"


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return _error(request, 403, "Not allowed", "Your account is not allowed to do this. Ask an administrator.")


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return _error(
        request,
        404,
        "Not found",
        "There is nothing at this address. It may have been deleted.",
        htmx_message="What this acts on is gone: it may have been deleted. Reload the page to see what is there now.",
    )


def server_error(request: HttpRequest) -> HttpResponse:
    return _error(
        request,
        500,
        "Something went wrong",
        "TransferLab hit an unexpected error and logged it. Try again; if it persists, tell your administrator.",
    )


CSRF_TITLE = "Page out of date"
CSRF_MESSAGE = (
    "This page was open too long, or you logged in again in another tab, so its form can no longer be sent. "
    "Nothing was changed. Reload the page and try again."
)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """A form sent with a stale token (settings.CSRF_FAILURE_VIEW): say so, and lead back to the form.

    An HTMX button whose session has also ended goes to the log-in page, as it would with a fresh token.
    """
    if is_htmx(request):
        user = getattr(request, "user", None)
        if user is not None and not user.is_authenticated:
            return login_redirect(request)
        return error_fragment(403, CSRF_TITLE, CSRF_MESSAGE, reload=True)
    back = request.headers.get("Referer", "")
    if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        back = ""
    if back:
        parts = urlsplit(back)
        back = parts.path + (f"?{parts.query}" if parts.query else "")
    return _error(
        request,
        403,
        CSRF_TITLE,
        CSRF_MESSAGE,
        back_url=back or "/",
        back_label="Back to the form" if back else "Back to TransferLab",
    )
