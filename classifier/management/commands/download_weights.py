"""Fetch published weights from Keras's official URLs, for a server that has internet access.

    python manage.py download_weights mobilenetv2 resnet50
    python manage.py download_weights efficientnetb0 --no-top

Each download goes through Keras's own download path (hash checked when Keras publishes one), then
the same checks as import_weights, and is recorded so the Models page shows it. Gives up after
WEIGHTS_DOWNLOAD_TIMEOUT seconds without an answer; on an offline server, use import_weights.
"""

from __future__ import annotations

import argparse

from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError, transaction
from django.db.models.functions import Now
from django.utils import timezone

from classifier import installs, zoo
from classifier.models import WeightsDownload
from webapp import background


class Command(BaseCommand):
    help = "Download published Keras application weights into the weights folder (needs internet access)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("models", nargs="+", metavar="KEY", help="registry keys, e.g. mobilenetv2 resnet50")
        parser.add_argument(
            "--top",
            dest="include_top",
            action=argparse.BooleanOptionalAction,
            default=True,
            help="the file with the ImageNet head (default) or without it (--no-top, for training)",
        )

    def handle(self, *args, models: list[str], include_top: bool, **options) -> None:
        try:
            entries = [zoo.get(key) for key in models]
        except zoo.UnknownModel as exc:
            raise CommandError(str(exc)) from None
        failed = 0
        for model in entries:
            wf = model.weights_file(include_top)
            self.stdout.write(f"Downloading {wf.filename} from {wf.url} ...")
            # Recorded like a worker's download (running, this process, heartbeat) so the Models page
            # shows it and a consumer's recovery leaves it alone while this command lives.
            try:
                with transaction.atomic():
                    record = WeightsDownload.objects.create(
                        model_key=model.key,
                        include_top=include_top,
                        status=WeightsDownload.Status.RUNNING,
                        worker=background.worker_id(),
                        started_at=timezone.now(),
                        heartbeat_at=Now(),
                    )
            except IntegrityError:  # one download per file at a time (WeightsDownload's constraint)
                failed += 1
                self.stderr.write(
                    self.style.ERROR(
                        f"{wf.filename} is already being downloaded (by the worker or another command); "
                        "the Models page shows its progress."
                    )
                )
                continue
            with background.Heartbeat(WeightsDownload, record.pk):
                status, message = installs.fetch(record)
            WeightsDownload.transition(record.pk, status, message=message)
            if status != WeightsDownload.Status.SUCCEEDED:
                failed += 1
                self.stderr.write(self.style.ERROR(message))
                continue
            self.stdout.write(self.style.SUCCESS(message))
        if failed:
            raise CommandError(f"{failed} of {len(entries)} download(s) failed.")
