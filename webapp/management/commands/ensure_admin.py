"""Create the first administrator on a fresh install and print its password once."""

from __future__ import annotations

import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create an administrator with a random password when no superuser exists yet (prints it once)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--username", default="admin")

    def handle(self, *args, username: str, **options) -> None:
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            self.stdout.write(
                "Administrator account exists (forgotten password: python manage.py changepassword NAME)."
            )
            return
        password = secrets.token_urlsafe(12)
        User.objects.create_superuser(username=username, email="", password=password)
        line = "=" * 64
        self.stdout.write(
            self.style.SUCCESS(
                f"{line}\nFirst administrator created. Log in with:\n"
                f"  user name: {username}\n  password:  {password}\n"
                f"This password is shown only once: change it after logging in (Admin > Change password).\n{line}"
            )
        )
