"""Installing pretrained weights from the web app and the commands: imports, downloads, reloads.

The checks themselves live in `weights` (no Django); this module adds what the server needs
around them: the weights folder from settings, download requests recorded as rows a worker
claims, and the warm copy of a model dropped when its file changes so the next request reloads.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction

from classifier import inference, weights, zoo
from classifier.models import WeightsDownload
from webapp import background
from webapp.diskspace import DiskFull, ensure_free_space

log = logging.getLogger(__name__)


def forget_warm(key: str) -> None:
    """Drop this process's warm copy of a model whose weights changed (no TensorFlow import if none)."""
    if inference.engine_state(key) is not None:
        inference.get_engine().evict(key)


def import_path(
    path: Path, *, model: zoo.ZooModel | None = None, include_top: bool | None = None, original_name: str | None = None
) -> weights.Installed:
    """Check and install a file into WEIGHTS_DIR; raises weights.WeightsError with the reason."""
    try:
        ensure_free_space(settings.WEIGHTS_DIR, Path(path).stat().st_size)
    except DiskFull as exc:
        raise weights.WeightsError(str(exc)) from None
    except OSError:
        pass  # a missing file: import_file says so in its own words
    inference.configure_tensorflow()  # checking the file builds the model
    installed = weights.import_file(
        Path(path), settings.WEIGHTS_DIR, model=model, include_top=include_top, original_name=original_name
    )
    if not installed.unchanged:
        forget_warm(installed.model.key)
    convert_soon(installed)
    return installed


def convert_soon(installed: weights.Installed) -> None:
    """Have the worker convert the model Classify runs from this file to LiteRT (see `runtimes`)."""
    from classifier import tasks

    if installed.include_top:
        tasks.schedule_conversions()


def import_upload(
    upload: UploadedFile, *, model: zoo.ZooModel | None = None, include_top: bool | None = None
) -> weights.Installed:
    """An uploaded file, imported from where Django stored it (copied to a temporary file when in memory)."""
    if hasattr(upload, "temporary_file_path"):
        return import_path(
            Path(upload.temporary_file_path()), model=model, include_top=include_top, original_name=upload.name
        )
    with tempfile.NamedTemporaryFile(suffix=".h5") as tmp:
        upload.seek(0)
        shutil.copyfileobj(upload, tmp)
        tmp.flush()
        return import_path(Path(tmp.name), model=model, include_top=include_top, original_name=upload.name)


def request_download(model: zoo.ZooModel, include_top: bool, user=None) -> tuple[WeightsDownload, bool]:
    """Queue a download of a published file (or find the one already queued); True when new.

    The task is sent once the row is committed, so the worker always finds it.
    """
    from classifier import tasks

    try:
        with transaction.atomic():
            download = WeightsDownload.objects.create(model_key=model.key, include_top=include_top, requested_by=user)
    except IntegrityError:  # weightsdownload_one_active: one is queued or running already
        active = WeightsDownload.objects.filter(
            model_key=model.key, include_top=include_top, status__in=WeightsDownload.ACTIVE
        ).first()
        if active is not None:
            return active, False
        raise
    transaction.on_commit(lambda: tasks.download_weights(download.pk))
    return download, True


def run_download(download_id: int) -> WeightsDownload | None:
    """Claim a queued download, fetch the file through `weights.download` and record how it went.

    Safe to run twice: only the run that moves the row from queued to running does the work.
    """
    if not WeightsDownload.claim(download_id):
        return None
    download = WeightsDownload.objects.get(pk=download_id)
    with background.Heartbeat(WeightsDownload, download.pk):
        status, message = fetch(download)
    WeightsDownload.transition(download.pk, status, message=message)
    download.refresh_from_db()
    return download


def fetch(download: WeightsDownload) -> tuple[str, str]:
    """Download and install the file a (running) download row asks for: its final status and message."""
    try:
        model = zoo.get(download.model_key)
        inference.configure_tensorflow()  # the downloaded file is checked by building the model
        installed = weights.download(
            model, settings.WEIGHTS_DIR, include_top=download.include_top, timeout=settings.WEIGHTS_DOWNLOAD_TIMEOUT
        )
    except (weights.WeightsError, zoo.UnknownModel) as exc:
        return WeightsDownload.Status.FAILED, str(exc)
    except Exception:
        log.exception("download %s of %s failed", download.pk, download.model_key)
        return (
            WeightsDownload.Status.FAILED,
            "The download failed with an unexpected error, recorded in the worker's log. Try again, or install "
            "the file by hand with import_weights.",
        )
    if not installed.unchanged:
        forget_warm(model.key)
    convert_soon(installed)
    return WeightsDownload.Status.SUCCEEDED, installed.describe()


def latest_downloads(limit: int = 500) -> dict[tuple[str, bool], WeightsDownload]:
    """The newest download attempt per (model key, with head?), for the Models page."""
    latest: dict[tuple[str, bool], WeightsDownload] = {}
    for download in WeightsDownload.objects.order_by("-created_at", "-id")[:limit]:
        latest.setdefault((download.model_key, download.include_top), download)
    return latest
