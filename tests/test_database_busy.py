"""A locked database answers 503 "busy, try again" with Retry-After, never a 500 (webapp.middleware)."""

from __future__ import annotations

import sqlite3

import pytest
from django.contrib.auth.decorators import login_not_required
from django.db import OperationalError, connection
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import path

from tests.test_import_locks import file_database  # noqa: F401 (a fixture)
from training.models import Dataset
from webapp import urls
from webapp.middleware import is_database_busy

pytestmark = pytest.mark.django_db

BUSY = "webapp.middleware.DatabaseBusyMiddleware"


@login_not_required
def locked(request: HttpRequest) -> HttpResponse:
    raise OperationalError("database is locked")


@login_not_required
def broken(request: HttpRequest) -> HttpResponse:
    raise OperationalError("no such table: training_dataset")


@login_not_required
def writes_the_session(request: HttpRequest) -> HttpResponse:
    request.session["seen"] = True  # saved by SessionMiddleware after the view
    return HttpResponse("ok")


@login_not_required
def writes_a_dataset(request: HttpRequest) -> HttpResponse:
    Dataset.objects.create(name="Written")
    return HttpResponse("ok")


urlpatterns = [
    path("api/v1/locked", locked),
    path("locked", locked),
    path("broken", broken),
    path("session", writes_the_session),
    path("write", writes_a_dataset),
    *urls.urlpatterns,  # the error page links to the project's pages
]


@pytest.fixture
def busy_settings(settings):
    """The project's middleware with the busy middleware where settings.py is to put it."""
    middleware = [m for m in settings.MIDDLEWARE if m != BUSY]
    at = middleware.index("django.contrib.sessions.middleware.SessionMiddleware")
    settings.MIDDLEWARE = [*middleware[:at], BUSY, *middleware[at:]]
    settings.ROOT_URLCONF = __name__
    return settings


@pytest.fixture
def client_500() -> Client:
    """A client that returns the 500 page instead of raising the view's exception."""
    return Client(raise_request_exception=False)


def test_a_lock_in_an_api_view_answers_503_json_with_retry_after(busy_settings, client_500):
    response = client_500.get("/api/v1/locked")
    assert response.status_code == 503
    assert response["Retry-After"] == "2"
    assert response.json() == {
        "error": "The database is busy with other changes (a large import, perhaps). Try again in a few seconds."
    }


def test_a_lock_in_a_page_answers_the_503_error_page(busy_settings, client_500):
    response = client_500.get("/locked")
    assert response.status_code == 503
    assert response["Retry-After"] == "2"
    assert "text/html" in response["Content-Type"]
    assert b"Try again in a few seconds." in response.content


def test_other_database_errors_are_still_server_errors(busy_settings, client_500):
    assert client_500.get("/broken").status_code == 500


def test_a_lock_while_the_session_is_saved_answers_503(busy_settings, client_500, monkeypatch):
    """Raised by a middleware after the view, where process_exception does not reach."""
    from django.contrib.sessions.backends.db import SessionStore

    monkeypatch.setattr(SessionStore, "save", lambda self, must_create=False: locked(None))
    response = client_500.get("/session")
    assert response.status_code == 503 and response["Retry-After"] == "2"


def test_without_the_middleware_a_lock_is_a_500(settings, client_500):
    """What the security review saw (the middleware is not in settings.py until it is added there)."""
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if m != BUSY]
    settings.ROOT_URLCONF = __name__
    assert client_500.get("/locked").status_code == 500


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's write lock; PostgreSQL's lock timeout is below")
@pytest.mark.django_db(transaction=True)
def test_a_request_that_cannot_get_the_write_lock_answers_503(file_database, busy_settings, client_500):  # noqa: F811
    """A real lock: another connection holds the write lock longer than the request's busy timeout."""
    options = connection.settings_dict["OPTIONS"]
    saved = options.get("timeout")
    options["timeout"] = 0.2
    other = sqlite3.connect(file_database, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        connection.close()  # reconnect with the short timeout
        response = client_500.get("/write")
    finally:
        other.execute("ROLLBACK")
        other.close()
        options["timeout"] = saved
        connection.close()
    assert response.status_code == 503
    assert not Dataset.objects.filter(name="Written").exists()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's lock timeout; SQLite's lock is above")
@pytest.mark.django_db(transaction=True)
def test_a_request_that_waits_too_long_for_a_lock_on_postgresql_answers_503(busy_settings, client_500):
    """A real lock: another connection holds the table longer than the request's lock timeout."""
    with connection.cursor() as cursor:
        cursor.execute("SHOW lock_timeout")
        assert cursor.fetchone()[0] == "20s"  # settings: as long as SQLite's busy timeout
    options = connection.settings_dict["OPTIONS"]
    saved = options.get("options")
    options["options"] = "-c lock_timeout=200ms"
    other = connection.get_new_connection(connection.get_connection_params())
    other.execute(f"LOCK TABLE {Dataset._meta.db_table} IN SHARE MODE")  # inserts wait until it ends
    try:
        connection.close()  # reconnect with the short timeout
        response = client_500.get("/write")
    finally:
        other.rollback()
        other.close()
        options["options"] = saved
        connection.close()
    assert response.status_code == 503 and response["Retry-After"] == "2"
    assert not Dataset.objects.filter(name="Written").exists()


def test_a_postgresql_lock_timeout_or_deadlock_is_busy_and_other_errors_are_not():
    psycopg_errors = pytest.importorskip("psycopg.errors")
    for cause in (psycopg_errors.LockNotAvailable, psycopg_errors.DeadlockDetected):
        error = OperationalError("canceling statement")
        error.__cause__ = cause("canceling statement")
        assert is_database_busy(error)
    error = OperationalError("connection refused")
    error.__cause__ = psycopg_errors.ConnectionTimeout("connection refused")
    assert not is_database_busy(error)
