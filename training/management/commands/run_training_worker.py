"""Consume the training queue: `make run` starts this next to the import/download worker.

    python manage.py run_training_worker

Runs TRAINING_CONCURRENCY jobs at once (default 1: jobs queue one after another). A machine with
a GPU, sharing the database and DATA_DIR, can run only this command.

Signals are the other way round from `run_huey`: SIGINT (Ctrl-C, `make run` stopping) stops a
running job at once and records it as interrupted, with its curves (a job can take hours, nobody
waits for it); SIGTERM lets the running job finish first.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.management.base import BaseCommand
from django.utils.module_loading import autodiscover_modules


class Command(BaseCommand):
    help = "Run the training worker (the consumer of the training queue)."

    def handle(self, *args, **options) -> None:
        autodiscover_modules("tasks")  # registers the training tasks and hooks on TRAINING_HUEY
        from training.queue import TRAINING_HUEY

        logger = logging.getLogger("huey")
        if not logger.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("[%(asctime)s] %(levelname)s:%(name)s:%(message)s"))
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
        consumer = TRAINING_HUEY.create_consumer(
            workers=settings.TRAINING_CONCURRENCY,
            worker_type="thread",
            periodic=False,  # recovery's periodic check runs on the main worker
            # SqliteHuey polls with a growing delay (up to 10 s by default): the same short polling
            # as the imports worker, so a queued job starts within a second on an idle server.
            **settings.QUEUE_POLLING,
            graceful_signal="TERM",
        )
        consumer.run()
