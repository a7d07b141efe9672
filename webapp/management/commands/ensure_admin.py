"""Create the first administrator on a fresh install and hand over its password once."""

from __future__ import annotations

import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from webapp import atomic

PASSWORD_FILE = "first-admin-password.txt"


class Command(BaseCommand):
    help = (
        "Create an administrator with a random password when no superuser exists yet. On a terminal the "
        "password is printed once; otherwise (a service log) it goes to DATA_DIR/first-admin-password.txt."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--username", default="admin")

    def handle(self, *args, username: str, **options) -> None:
        User = get_user_model()
        existing = User.objects.filter(is_superuser=True).order_by("pk").first()
        if existing is not None:
            name = existing.get_username()
            self.stdout.write(
                f"Administrator account {name!r} exists (forgotten password: "
                f".venv/bin/python manage.py changepassword {name})."
            )
            return
        password = secrets.token_urlsafe(12)
        User.objects.create_superuser(username=username, email="", password=password)
        if self.stdout.isatty():
            self._print(username, password)
        else:
            self._write_file(username, password)

    def _print(self, username: str, password: str) -> None:
        line = "=" * 64
        self.stdout.write(
            self.style.SUCCESS(
                f"{line}\nFirst administrator created. Log in with:\n"
                f"  user name: {username}\n  password:  {password}\n"
                f"This password is shown only once: change it after logging in (Change password, top right).\n{line}"
            )
        )

    def _write_file(self, username: str, password: str) -> None:
        """Not a terminal: the output lands in a service log that others read and keep. The password goes
        to a file only this account can read, and the log says only where it is."""
        path = Path(settings.DATA_DIR) / PASSWORD_FILE
        atomic.write_text(  # mode 0600 before the first byte; whole or not at all
            path,
            "First TransferLab administrator. Log in, change the password (Change password, top right), "
            f"then delete this file.\nuser name: {username}\npassword: {password}\n",
            mode=0o600,
        )
        self.stdout.write(
            self.style.SUCCESS(
                f"First administrator {username!r} created. Its password is in {path} (readable only by this "
                "account): log in, change the password, then delete the file."
            )
        )
