"""The commands behind `make run`: the first admin account (`serve` itself: tests/test_serve.py)."""

from __future__ import annotations

from io import StringIO

from django.contrib.auth import get_user_model
from django.core.management import call_command


class Terminal(StringIO):
    """ensure_admin prints the password only on a terminal (tests/test_hardening.py covers service logs)."""

    def isatty(self) -> bool:
        return True


def test_first_run_creates_an_admin_with_a_random_password_printed_once(db):
    out = Terminal()
    call_command("ensure_admin", stdout=out)
    text = out.getvalue()
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser and admin.is_staff
    password = text.split("password:")[1].split()[0]
    assert len(password) >= 12 and admin.check_password(password)
    assert "shown only once" in text and "(Change password, top right)" in text  # the account menu's link

    again = StringIO()
    call_command("ensure_admin", stdout=again)
    assert "user name:" not in again.getvalue()
    assert get_user_model().objects.count() == 1


def test_the_second_run_names_the_account_and_the_command_as_the_readme_writes_it(db):
    call_command("ensure_admin", stdout=StringIO())
    again = StringIO()
    call_command("ensure_admin", stdout=again)
    assert again.getvalue().strip() == (
        "Administrator account 'admin' exists (forgotten password: .venv/bin/python manage.py changepassword admin)."
    )


def test_two_installs_get_different_admin_passwords(db):
    passwords = []
    for _ in range(2):
        get_user_model().objects.all().delete()
        out = Terminal()
        call_command("ensure_admin", stdout=out)
        passwords.append(out.getvalue().split("password:")[1].split()[0])
    assert passwords[0] != passwords[1]
