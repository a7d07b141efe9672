"""Huey tasks of the inference app: thin wrappers; the work and its state live in `classifier.installs`.

A download's state is a database row of the one job machine (`webapp.background`): a consumer
that dies mid-download is noticed by its missing heartbeat and the row marked interrupted, so the
Models page never shows a download that nobody is doing, and a consumer that starts next to a
live one never touches the live one's download.

Conversions to LiteRT (`classifier.runtimes`) run here too: after a weights import or download, after
a training job, when the worker starts, and every minute for anything still unconverted. One at a
time, never inside a request; until a model's conversion is checked, TensorFlow serves it. So do
the int8 conversions an administrator asks for (`classifier.int8`).

Retention: with PREDICTION_RETENTION_DAYS set, a daily task deletes older predictions, rows and
files together (the row's post_delete signal removes its files once the delete commits), so
History never lists a prediction whose image is gone and `check_data` finds nothing to report.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from huey import crontab
from huey.contrib.djhuey import HUEY, db_periodic_task, db_task

from classifier import catalog, installs, int8, runtimes
from classifier.models import Int8Calibration, Prediction, WeightsDownload
from webapp import atomic, background

logger = logging.getLogger(__name__)

# Rows per delete transaction: SQLite has one write lock, and a request saving a prediction waits for it.
RETENTION_BATCH = 500


@db_task()
def download_weights(download_id: int) -> None:
    """Fetch the file of WeightsDownload `download_id` (queued by `installs.request_download`)."""
    installs.run_download(download_id)


@db_task()
def calibrate_int8(calibration_id: int) -> None:
    """Convert a model to int8 as Int8Calibration `calibration_id` asks (queued by `int8.request_calibration`)."""
    int8.run_calibration(calibration_id)


# Recovery queues a job again through its task when the task was lost (webapp.background).
background.runs_with(WeightsDownload, download_weights)
background.runs_with(Int8Calibration, calibrate_int8)


@db_task()
def convert_models() -> None:
    """Convert every installed model without a LiteRT verdict yet, and drop conversions nobody uses."""
    convert_pending()


def convert_pending() -> int:
    """The work of `convert_models`; returns how many models were converted or refused."""
    if not runtimes.enabled():
        return 0
    choices = catalog.all_choices()
    done = runtimes.convert_all(choices)
    runtimes.prune([choice.weights_path for choice in choices if choice.available])
    weights_files = _weights_files()
    if weights_files is not None:
        runtimes.prune_features(weights_files)
    return len(done)


def _weights_files() -> list[Path] | None:
    """Every weights file in the weights folder; None when it cannot be read (then nothing is pruned).

    Not the temporary files of imports and downloads still writing (hashing them is wasted work).
    """
    folder = Path(settings.WEIGHTS_DIR)
    if not folder.exists():
        return []
    try:
        return [entry for entry in folder.iterdir() if entry.is_file() and not atomic.is_temporary(entry.name)]
    except OSError:
        return None


def schedule_conversions() -> None:
    """Queue `convert_models` once the current transaction commits (the new file is in place by then)."""
    if runtimes.enabled():
        transaction.on_commit(convert_models)


@db_periodic_task(crontab(minute="*"))
def convert_models_every_minute() -> None:
    """Catches what no event announced: files installed before the worker started, a TensorFlow upgrade."""
    convert_pending()


@HUEY.on_startup()
def convert_models_on_startup() -> None:
    """A worker that starts converts what is installed without waiting for the minute."""
    if runtimes.enabled():
        convert_models()


def delete_expired_predictions(now: datetime | None = None) -> int:
    """Delete predictions older than PREDICTION_RETENTION_DAYS (0: keep forever) with their files.

    Returns how many went. In batches, each its own short transaction, so uploads keep going.
    """
    days = int(getattr(settings, "PREDICTION_RETENTION_DAYS", 0))
    if days <= 0:
        return 0
    cutoff = (now or timezone.now()) - timedelta(days=days)
    expired = Prediction.objects.filter(created_at__lt=cutoff).order_by("pk")
    removed = 0
    while batch := list(expired.values_list("pk", flat=True)[:RETENTION_BATCH]):
        with transaction.atomic():
            Prediction.objects.filter(pk__in=batch).delete()
        removed += len(batch)
    return removed


@db_periodic_task(crontab(hour="3", minute="17"))
def expire_predictions() -> None:
    """Daily, at night: the retention of classified images (PREDICTION_RETENTION_DAYS), and of the
    dataset images people deleted, kept in each dataset's trash to be undone (TRASH_RETENTION_DAYS)."""
    from training import curation  # the training app builds on this one: imported when the task runs

    removed = delete_expired_predictions()
    if removed:
        logger.info(
            "Deleted %d predictions older than %s days, with their images.", removed, settings.PREDICTION_RETENTION_DAYS
        )
    emptied = curation.empty_trash()
    if emptied:
        logger.info("Emptied the trash of %d deleted dataset images older than %s days.", emptied,
                    settings.TRASH_RETENTION_DAYS)  # fmt: skip
