"""Deployment hardening: HSTS and HTTPS redirect, the Content-Security-Policy, login throttling, the first
admin's password kept out of service logs, and 4xx answers logged as one line."""

from __future__ import annotations

import io
import logging
import os
import re
import stat
import subprocess
import sys
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates"

# The production values docs/CONFIGURATION.md gives for a server behind an HTTPS reverse proxy.
PRODUCTION_ENV = {
    "DEBUG": "False",
    "ALLOWED_HOSTS": "transferlab.example.org",
    "CSRF_TRUSTED_ORIGINS": "https://transferlab.example.org",
    "BEHIND_HTTPS_PROXY": "True",
    "SECURE_COOKIES": "True",
    "SECURE_SSL_REDIRECT": "True",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "True",
    "SECURE_HSTS_PRELOAD": "True",
}
POLICY = {
    "default-src 'self'",
    "img-src 'self' data:",
    "style-src 'self' 'unsafe-inline'",
    "script-src 'self'",
    "frame-ancestors 'none'",
}


def directives(response) -> set[str]:
    return {part.strip() for part in response["Content-Security-Policy"].split(";")}


# --- HTTPS: HSTS, redirect, check --deploy ---------------------------------------------------------


def test_check_deploy_is_clean_with_the_documented_production_values(tmp_path):
    # A deployment's environment: nothing the test run itself sets (the browser tests lift Django's
    # async-safety guard for their own process) leaks into it.
    dropped = {*PRODUCTION_ENV, "SECRET_KEY", "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(PRODUCTION_ENV, DATA_DIR=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "DEBUG"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_https_settings_default_to_off_for_a_plain_http_intranet():
    assert django_settings.SECURE_SSL_REDIRECT is False
    assert django_settings.SECURE_HSTS_SECONDS == 0


def test_hsts_and_redirect_when_configured(client, settings, db):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 3600
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    response = client.get("/accounts/login/")
    assert response.status_code == 301 and response["Location"] == "https://testserver/accounts/login/"
    response = client.get("/accounts/login/", HTTP_X_FORWARDED_PROTO="https")
    assert response.status_code == 200 and response["Strict-Transport-Security"] == "max-age=3600"


# --- Content-Security-Policy -----------------------------------------------------------------------


def test_every_page_sends_the_policy(client, db):
    assert directives(client.get("/accounts/login/")) == POLICY


def test_api_answers_send_the_policy_too(client, db):
    assert directives(client.get("/api/v1/models")) == POLICY


def all_templates() -> list[Path]:
    return sorted(TEMPLATES.rglob("*.html"))


@pytest.mark.parametrize("path", all_templates(), ids=lambda p: str(p.relative_to(TEMPLATES)))
def test_no_template_has_an_inline_script_or_event_handler(path):
    html = path.read_text()
    for tag in re.findall(r"<script\b[^>]*>", html, flags=re.IGNORECASE):
        assert "src=" in tag or 'type="application/json"' in tag, f"inline script in {path}: {tag}"
    assert not re.search(r"\son[a-z]+\s*=", html, flags=re.IGNORECASE), f"event handler attribute in {path}"
    assert "javascript:" not in html.lower(), f"javascript: URL in {path}"
    assert not re.search(r"\shx-on(:|-)", html), f"hx-on needs eval, which the policy forbids: {path}"


def test_htmx_is_told_not_to_inject_its_indicator_styles_and_not_to_eval(bob_client):
    html = bob_client.get("/").text
    meta = re.search(r"<meta name=\"htmx-config\" content='([^']*)'>", html)
    assert meta, "the htmx-config meta tag is missing"
    assert '"includeIndicatorStyles": false' in meta.group(1) and '"allowEval": false' in meta.group(1)
    assert html.index('name="htmx-config"') < html.index("django_htmx/htmx"), "htmx reads its config when it loads"


# --- Login throttling --------------------------------------------------------------------------------


def log_in(client: Client, username: str, password: str, ip: str = "10.0.0.1"):
    return client.post("/accounts/login/", {"username": username, "password": password}, REMOTE_ADDR=ip)


def test_ten_failures_lock_that_user_from_that_address_with_a_friendly_page(client, bob, charlie):
    for _ in range(9):
        assert log_in(client, "bob", "wrong").status_code == 200
    locked = log_in(client, "bob", "wrong")
    assert locked.status_code == 429
    assert "Too many failed log-ins" in locked.text and "15 minutes" in locked.text
    assert "<html" in locked.text and "TransferLab" in locked.text
    # Even the right password is refused while locked.
    assert log_in(client, "bob", "bob-password").status_code == 429
    # Another account from the same address, and the same account from another address, still log in.
    assert log_in(Client(), "charlie", "charlie-password").status_code == 302
    assert log_in(Client(), "bob", "bob-password", ip="10.0.0.2").status_code == 302


def test_the_lock_ends_after_fifteen_minutes(client, bob):
    from axes.models import AccessAttempt

    for _ in range(10):
        log_in(client, "bob", "wrong")
    assert log_in(client, "bob", "bob-password").status_code == 429
    AccessAttempt.objects.update(attempt_time=AccessAttempt.objects.get().attempt_time - timedelta(minutes=16))
    assert log_in(client, "bob", "bob-password").status_code == 302


def test_a_successful_login_forgets_earlier_failures(client, bob):
    for _ in range(9):
        log_in(client, "bob", "wrong")
    assert log_in(client, "bob", "bob-password").status_code == 302
    Client().logout()
    for _ in range(9):
        assert log_in(Client(), "bob", "wrong").status_code == 200


def test_the_admin_login_is_throttled_too(client, staff):
    for _ in range(10):
        client.post("/admin/login/", {"username": "staff", "password": "wrong"}, REMOTE_ADDR="10.0.0.1")
    response = client.post("/admin/login/", {"username": "staff", "password": "staff-password"}, REMOTE_ADDR="10.0.0.1")
    assert response.status_code == 429


# --- The first administrator's password ------------------------------------------------------------


class Terminal(StringIO):
    def isatty(self) -> bool:
        return True


def test_a_service_log_gets_where_the_password_is_not_the_password(db, settings):
    out = StringIO()  # not a terminal: a systemd journal, a Docker log
    call_command("ensure_admin", stdout=out)
    text = out.getvalue()
    path = Path(settings.DATA_DIR) / "first-admin-password.txt"
    password = path.read_text().strip().splitlines()[-1].split()[-1]
    assert get_user_model().objects.get(username="admin").check_password(password)
    assert password not in text
    assert str(path) in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_terminal_gets_the_password_as_before(db, settings):
    out = Terminal()
    call_command("ensure_admin", stdout=out)
    text = out.getvalue()
    password = text.split("password:")[1].split()[0]
    assert get_user_model().objects.get(username="admin").check_password(password)
    assert not (Path(settings.DATA_DIR) / "first-admin-password.txt").exists()


def test_the_password_file_is_private_even_if_an_old_one_was_not(db, settings):
    path = Path(settings.DATA_DIR) / "first-admin-password.txt"
    path.write_text("old")
    path.chmod(0o644)
    call_command("ensure_admin", stdout=StringIO())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and "old" not in path.read_text()


def test_an_existing_administrator_is_named_with_the_command_to_reset_the_password(db, django_user_model):
    django_user_model.objects.create_superuser("root", "", "x")
    out = StringIO()
    call_command("ensure_admin", stdout=out)
    assert ".venv/bin/python manage.py changepassword root" in out.getvalue()
    assert not django_user_model.objects.filter(username="admin").exists()


# --- 4xx answers in the log ----------------------------------------------------------------------


@pytest.fixture
def console_log():
    """What the console handler of the `django` logger writes (the service log)."""
    handler = next(h for h in logging.getLogger("django").handlers if isinstance(h, logging.StreamHandler))
    stream = io.StringIO()
    previous = handler.setStream(stream)
    yield stream
    handler.setStream(previous)


def test_a_403_is_one_line_not_a_traceback(bob_client, alice, console_log):
    from training.models import Dataset

    dataset = Dataset.objects.create(name="Pets", created_by=alice)
    assert bob_client.post(f"/datasets/{dataset.pk}/edit/").status_code == 403
    text = console_log.getvalue()
    assert f"Forbidden (Permission denied): /datasets/{dataset.pk}/edit/" in text
    assert "Traceback" not in text and len(text.strip().splitlines()) == 1


def test_a_500_keeps_its_traceback(console_log):
    from webapp.logging import ClientErrorsWithoutTraceback

    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("django.request", logging.ERROR, __file__, 1, "Internal Server Error", (), None)
        record.exc_info = sys.exc_info()
    record.status_code = 500
    assert ClientErrorsWithoutTraceback().filter(record) and record.exc_info is not None
    record.status_code = 404
    assert ClientErrorsWithoutTraceback().filter(record) and record.exc_info is None


def test_behind_the_proxy_failed_logins_count_per_client_not_per_proxy(client, settings, django_user_model):
    """One person trying passwords behind the proxy must not lock the account for everyone else."""
    settings.BEHIND_PROXY = True
    django_user_model.objects.create_user("dana", password="right-password-123")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post("/accounts/login/", {"username": "dana", "password": "wrong"}, REMOTE_ADDR="10.0.0.1",
                    HTTP_X_FORWARDED_FOR="203.0.113.9")  # fmt: skip
    elsewhere = client.post("/accounts/login/", {"username": "dana", "password": "right-password-123"},
                            REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.7")  # fmt: skip
    assert elsewhere.status_code == 302  # logged in from another client behind the same proxy
