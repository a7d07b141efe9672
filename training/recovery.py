"""Undoing what died half way: files of imports and uploads whose process was killed.

Jobs themselves are recovered by the one job machine (`webapp.background.recover_jobs`: an
interrupted import releases its files through `ImportJob.release_files`). What is left here is
dataset-specific: upload journals whose web request died, and zips waiting with no job.
Every operation journals the files it creates (`storage.Journal`), so nothing is left orphaned.
`clean_abandoned_files` runs when a consumer starts and every few minutes (`training.tasks`).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from training import imports, storage
from training.models import ImportJob

logger = logging.getLogger(__name__)

# An upload journal older than this belongs to a web request that died.
UPLOAD_JOURNAL_GRACE = timedelta(hours=1)
# A zip waiting in DATA_DIR/imports with no job (the web process died in between).
STRAY_ARCHIVE_GRACE = timedelta(days=1)


def clean_abandoned_files() -> None:
    """Undo upload journals whose request died and remove zips no live job waits for.

    Safe to run at any time and from several consumers: journals of active imports are skipped.
    """
    now = timezone.now()
    _undo_abandoned_journals(now)
    _remove_stray_archives(now)


def _undo_abandoned_journals(now: datetime) -> None:
    root = Path(settings.DATASETS_DIR)
    if not root.is_dir():
        return
    active = {
        f"import-{pk}" for pk in ImportJob.objects.filter(status__in=ImportJob.ACTIVE).values_list("pk", flat=True)
    }
    for folder in root.iterdir():
        if not folder.name.isdigit():
            continue
        for journal in storage.journals(folder):
            if journal.stem in active:
                continue
            if journal.stem.startswith("upload-") and _age(journal, now) < UPLOAD_JOURNAL_GRACE:
                continue
            removed = imports.undo_journal(int(folder.name), journal)
            logger.info("Undid %s: removed %d files.", journal, removed)


def _remove_stray_archives(now: datetime) -> None:
    """Zips of finished jobs go at once; a zip with no job at all after STRAY_ARCHIVE_GRACE.

    The grace covers a web request that has written the zip and not yet committed its job row.
    """
    folder = imports.archives_dir()
    if not folder.is_dir():
        return
    zips = list(folder.glob("*.zip"))
    jobs = ImportJob.objects.filter(archive_path__in=[str(p) for p in zips])
    paths = dict(jobs.values_list("archive_path", "status"))
    for path in zips:
        status = paths.get(str(path))
        if status in ImportJob.ACTIVE:
            continue
        if status is not None or _age(path, now) > STRAY_ARCHIVE_GRACE:
            path.unlink(missing_ok=True)


def _age(path: Path, now: datetime) -> timedelta:
    """How long ago a file was last written; zero when it vanished meanwhile (nothing to do then)."""
    try:
        return timedelta(seconds=now.timestamp() - path.stat().st_mtime)
    except FileNotFoundError:
        return timedelta(0)
