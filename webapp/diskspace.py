"""A full disk is an answer, not a crash: check free space before large writes, and answer 507 when it runs out.

`ensure_free_space` refuses a write that would leave less than MIN_FREE_DISK_MB free: the reserve
keeps SQLite, the session table and the logs writable, so people can still log in and delete old
predictions when uploads are refused. `DiskFullMiddleware` turns `DiskFull`, and the errors a full
disk really raises (ENOSPC, EDQUOT, SQLite's "database or disk is full", PostgreSQL's disk_full),
into a 507 page or JSON answer instead of a 500.
"""

from __future__ import annotations

import errno
import logging
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.core.signals import got_request_exception
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string

from webapp.htmx import error_fragment, is_htmx

logger = logging.getLogger(__name__)

MB = 1024 * 1024  # MIN_FREE_DISK_MB counts MiB; messages say so
DEFAULT_MIN_FREE_DISK_MB = 500
DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
POSTGRES_DISK_FULL = "53100"  # SQLSTATE disk_full
TITLE = "Disk full"
USER_MESSAGE = (
    "The server's disk is full, so TransferLab cannot save anything right now and what you sent was not kept. "
    "Tell your administrator (the server needs free disk space), then try again."
)
_MARK = "_transferlab_disk_full"


class DiskFull(Exception):
    """Not enough free disk space for a write; str() says where, how much, and what to do (for the log)."""


def reserve_bytes() -> int:
    """The space kept free for the database, sessions and logs (MIN_FREE_DISK_MB)."""
    return int(getattr(settings, "MIN_FREE_DISK_MB", DEFAULT_MIN_FREE_DISK_MB)) * MB


def _existing(path: Path) -> Path:
    """The folder itself, or its nearest parent that exists (a month folder may not be created yet)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: Path) -> int:
    """Bytes this process may still write on the disk holding `path` (root's reserved blocks excluded)."""
    return shutil.disk_usage(_existing(path)).free


def ensure_free_space(path: Path, needed_bytes: int) -> None:
    """Raise DiskFull unless `needed_bytes` fit on the disk of `path` with the reserve still free."""
    free = free_bytes(path)
    wanted = max(0, int(needed_bytes)) + reserve_bytes()
    if free < wanted:
        raise DiskFull(
            f"The disk holding {path} is full: {free // MB} MiB free, {-(-wanted // MB)} MiB needed (this write "
            f"plus the {reserve_bytes() // MB} MiB kept free for the database, sessions and logs). An administrator "
            "can free space on it (old predictions, unused training jobs, other files); then try again."
        )


def is_disk_full_error(error: BaseException | None) -> bool:
    """Whether `error`, or an error it was raised from, means the disk (or quota) is full."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, DiskFull):
            return True
        if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
            return True
        if POSTGRES_DISK_FULL in (getattr(error, "sqlstate", None), getattr(error, "pgcode", None)):
            return True
        if type(error).__name__ == "OperationalError" and "database or disk is full" in str(error):
            return True  # SQLite's SQLITE_FULL, also wrapped by Django
        error = error.__cause__ or error.__context__
    return False


def disk_full_response(request: HttpRequest) -> HttpResponse:
    """507 Insufficient Storage: JSON on API paths, a fragment for HTMX, the error page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"error": USER_MESSAGE}, status=507)
    if is_htmx(request):
        return error_fragment(507, TITLE, USER_MESSAGE)
    try:
        html = render_to_string("error.html", {"title": TITLE, "message": USER_MESSAGE}, request=request)
    except Exception:  # the page must not fail in turn: a plain one will do
        logger.exception("Could not render the disk-full page.")
        html = f"<!doctype html><title>{TITLE}</title><h1>{TITLE}</h1><p>{USER_MESSAGE}</p>"
    return HttpResponse(html, status=507)


@receiver(got_request_exception, dispatch_uid="webapp.diskspace.mark_disk_full")
def _mark_disk_full(sender, request: HttpRequest | None = None, **kwargs) -> None:
    """Remember on the request that Django turned a disk-full error into a 500 (see the middleware)."""
    error = sys.exc_info()[1]
    if request is not None and is_disk_full_error(error):
        setattr(request, _MARK, error)


class DiskFullMiddleware:
    """Answers a full disk with 507 and a sentence. Place it before SessionMiddleware.

    Errors in the view reach `process_exception`. Errors after the view (SessionMiddleware saving
    the session, on login for instance) are turned into a 500 by Django before any outer
    middleware sees them; the `got_request_exception` signal marks the request, and `__call__`
    replaces that 500 with the 507.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        error = getattr(request, _MARK, None)
        if error is not None and response.status_code == 500:
            logger.error("Answered 507: %s", error)
            return disk_full_response(request)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not is_disk_full_error(exception):
            return None
        logger.error("Answered 507 to %s %s: %s", request.method, request.path, exception)
        return disk_full_response(request)
