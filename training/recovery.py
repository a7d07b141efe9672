"""Undoing what died half way: imports whose worker was killed, uploads whose request was.

Huey delivers at most once and SIGKILL loses the running task (PITFALLS.md), so the state lives
in the database and on disk: a running job names its worker (`imports.worker_id`), and every
operation journals the files it creates (`storage.Journal`). `recover` runs when a consumer
starts and every few minutes (`training.tasks`).
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from training import imports, storage
from training.models import ImportJob

logger = logging.getLogger(__name__)

# A running job without a heartbeat for this long belongs to a worker that is gone.
STALE_AFTER = timedelta(minutes=2)
# An upload journal older than this belongs to a web request that died.
UPLOAD_JOURNAL_GRACE = timedelta(hours=1)
# A zip waiting in DATA_DIR/imports with no job (the web process died in between).
STRAY_ARCHIVE_GRACE = timedelta(days=1)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_dead(job: ImportJob, now: datetime) -> bool:
    """Whether the worker that claimed `job` is gone.

    Without a heartbeat for STALE_AFTER: gone, wherever it ran. On this host, a claim by another
    process that no longer exists, or by an earlier life of this very pid: gone at once.
    """
    if job.heartbeat_at is None or now - job.heartbeat_at > STALE_AFTER:
        return True
    host, _, rest = job.worker.partition(":")
    pid_text, _, token = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    if token == imports.PROCESS_TOKEN:
        return False  # one of this process's own threads is running it
    pid = int(pid_text)
    return pid == os.getpid() or not _pid_alive(pid)


def recover() -> int:
    """Mark imports whose worker died as failed and undo their files; clean what died with uploads.

    Safe to run at any time and from several consumers: every change is conditional on the state
    it expects. Returns how many jobs were marked interrupted.
    """
    now = timezone.now()
    interrupted = 0
    for job in ImportJob.objects.filter(status=ImportJob.Status.RUNNING):
        if is_dead(job, now):
            interrupted += ImportJob.transition(
                job.pk, ImportJob.Status.FAILED, message=imports.INTERRUPTED_MESSAGE, report={}
            )
            imports.remove_archive(job.archive_path)
            logger.warning("Import %s was interrupted; marked failed and undone.", job.pk)
    _undo_abandoned_journals(now)
    _remove_stray_archives(now)
    return interrupted


def interrupt(job_id: int) -> None:
    """The consumer is stopping in the middle of this job: record it; files are undone at next start."""
    if ImportJob.transition(job_id, ImportJob.Status.FAILED, message=imports.INTERRUPTED_MESSAGE, report={}):
        path = ImportJob.objects.filter(pk=job_id).values_list("archive_path", flat=True).first()
        imports.remove_archive(path or "")  # unlinking a file still open for reading is fine on POSIX


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
