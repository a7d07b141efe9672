"""A database too busy to take a write answers 503 "try again" with Retry-After, never a 500.

SQLite has one write lock for the whole database. A connection that wants it waits up to its busy
timeout (20 s, see DATABASES in settings) and then raises OperationalError("database is locked").
That is no bug to report with a traceback: nothing is wrong with the request, it can simply be sent
again a moment later. PostgreSQL locks rows, not the database, but a write can still wait on a lock:
settings give it the same 20 s (`lock_timeout`), after which it fails with "lock timeout"; a
deadlock or a serialization failure is the same kind of answer (one of two writers must retry).
Imports write in short transactions (`training.imports`) so this should not happen; this middleware
is the answer when it does anyway.

Two ways an error reaches it: `process_exception` for an exception from a view, and the
`got_request_exception` signal for one raised in another middleware (the session saved after the
view), which Django has already turned into a 500 by the time the response comes back here. For
that second case the middleware must sit before (outside) SessionMiddleware in MIDDLEWARE.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from django.core.signals import got_request_exception
from django.db import OperationalError
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse

logger = logging.getLogger(__name__)

BUSY_TITLE = "Busy, try again"
BUSY_MESSAGE = "The database is busy with other changes (a large import, perhaps). Try again in a few seconds."
RETRY_AFTER_SECONDS = 2
# SQLite's SQLITE_BUSY and SQLITE_LOCKED, as the sqlite3 module words them.
LOCK_MESSAGES = ("database is locked", "database table is locked")
# PostgreSQL's lock_not_available (lock_timeout), deadlock_detected and serialization_failure.
LOCK_SQLSTATES = ("55P03", "40P01", "40001")
_FLAG = "_database_was_busy"


def is_database_busy(error: BaseException | None) -> bool:
    """Whether `error` says only that another connection held the write lock too long."""
    if not isinstance(error, OperationalError):
        return False
    sqlstate = getattr(error.__cause__, "sqlstate", None)  # psycopg's error, which Django's wraps
    return sqlstate in LOCK_SQLSTATES or any(text in str(error).lower() for text in LOCK_MESSAGES)


def busy_response(request: HttpRequest) -> HttpResponse:
    """503 with Retry-After: JSON {"error": ...} under /api/, the error page otherwise."""
    from webapp.views import _error

    response = _error(request, 503, BUSY_TITLE, BUSY_MESSAGE)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


class DatabaseBusyMiddleware:
    """Turns "database is locked" into 503 + Retry-After: 2; every other error is left alone."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code == 500 and getattr(request, _FLAG, False):
            return busy_response(request)  # raised in an inner middleware, already made a 500 by Django
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not is_database_busy(exception):
            return None
        logger.warning("%s %s: the database stayed locked; answered 503.", request.method, request.path)
        return busy_response(request)


@receiver(got_request_exception, dispatch_uid="webapp.middleware.flag_database_busy")
def _flag_database_busy(sender, request: HttpRequest | None = None, **kwargs) -> None:
    """Django is turning an exception into a 500: note on the request whether it was a lock."""
    if request is not None and is_database_busy(sys.exc_info()[1]):
        setattr(request, _FLAG, True)
