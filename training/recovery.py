"""Undoing what died half way: rows and files of imports and uploads whose process was killed.

Jobs themselves are recovered by the one job machine (`webapp.background.recover_jobs`: an
interrupted import releases its rows and files through `ImportJob.release_files`). What is left
here is dataset-specific:

- rows of imports that ended without succeeding and still have rows (a worker stopped with SIGTERM
  is marked interrupted without releasing anything, since its thread may still be running);
- journals of uploads whose web request died (a request killed after writing files and before its
  rows committed), and of imports that are no longer running;
- the folders of datasets deleted by a request that died before its on-commit clean-up ran;
- zips waiting with no job;
- temporary files of writes killed half way (`webapp.atomic`) in the folders of models, weights and
  waiting zips, once nothing has written them for TEMPORARY_GRACE.

Every operation journals the files it creates (`storage.Journal`), so nothing is left orphaned.
`clean_abandoned_files` runs when a consumer starts and every five minutes (`training.tasks`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db.models import Exists, OuterRef
from django.utils import timezone

from training import imports, storage
from training.models import Dataset, DatasetImage, ImportJob, Label
from webapp import datafiles

logger = logging.getLogger(__name__)

# An upload journal older than this belongs to a web request that died.
UPLOAD_JOURNAL_GRACE = timedelta(hours=1)
# A zip waiting in DATA_DIR/imports with no job (the web process died in between).
STRAY_ARCHIVE_GRACE = timedelta(days=1)
# A journalled file written this long after the journal's last line was written again by a later
# operation (the same picture uploaded again): it is that operation's now, not the dead one's.
REWRITTEN_AFTER = timedelta(minutes=1)
# A temporary file nothing wrote for this long belongs to a process that died mid-write (a write in
# progress keeps its time fresh; the longest pause, checking imported weights, takes minutes).
TEMPORARY_GRACE = timedelta(hours=6)


def clean_abandoned_files() -> None:
    """Remove rows of unfinished imports, undo abandoned journals, folders of deleted datasets, stray zips.

    Safe to run at any time and from several consumers: active imports and recent uploads are skipped.
    """
    now = timezone.now()
    _discard_rows_of_unfinished_imports()
    _remove_folders_of_deleted_datasets()
    _undo_abandoned_journals(now)
    _remove_stray_archives(now)
    _remove_interrupted_writes()


def _discard_rows_of_unfinished_imports() -> None:
    """Rows of imports that failed, were cancelled or interrupted: provisional, so they go (files too).

    Before the journals: a journal keeps the files that rows own.
    """
    has_images = Exists(DatasetImage.objects.filter(import_job=OuterRef("pk")))
    has_labels = Exists(Label.objects.filter(import_job=OuterRef("pk")))
    unfinished = ImportJob.objects.filter(status__in=ImportJob.UNSUCCESSFUL).filter(has_images | has_labels)
    for job_id in unfinished.values_list("pk", flat=True):
        removed = imports.discard_rows(job_id)
        logger.info("Removed %d image rows of the unfinished import %s.", removed, job_id)


def _dataset_folders() -> dict[int, Path]:
    root = Path(settings.DATASETS_DIR)
    if not root.is_dir():
        return {}
    return {int(folder.name): folder for folder in root.iterdir() if folder.name.isdigit() and folder.is_dir()}


def _remove_folders_of_deleted_datasets() -> None:
    """A dataset's folder goes after its delete commits; a process killed in between leaves it all.

    So does an upload still writing while its dataset was deleted. No row can own those files.
    """
    folders = _dataset_folders()
    alive = set(Dataset.objects.filter(pk__in=list(folders)).values_list("pk", flat=True))
    for dataset_id, folder in folders.items():
        if dataset_id not in alive:
            storage.delete_folder(folder)
            logger.info("Removed %s: its dataset no longer exists.", folder)


def _undo_abandoned_journals(now: datetime) -> None:
    """Undo the journals of uploads older than the grace and of imports no longer running.

    The journals are listed before the active imports are read: an import that starts meanwhile
    writes a journal this run has not listed, instead of having it undone under its feet.
    """
    listed = {dataset_id: list(storage.journals(folder)) for dataset_id, folder in _dataset_folders().items()}
    active = {
        f"import-{pk}" for pk in ImportJob.objects.filter(status__in=ImportJob.ACTIVE).values_list("pk", flat=True)
    }
    for dataset_id, journals in listed.items():
        for journal in journals:
            if journal.stem in active:
                continue
            if journal.stem.startswith("upload-") and _age(journal, now) < UPLOAD_JOURNAL_GRACE:
                continue
            keep = _owned_or_rewritten(dataset_id, journal)
            if keep is not None:
                removed = storage.undo(journal, keep)
                logger.info("Undid %s: removed %d files.", journal, removed)


def _owned_or_rewritten(dataset_id: int, journal: Path) -> Callable[[str], bool] | None:
    """Which of the journal's files stay: those a row owns, and those written again since.

    A later upload of the same picture rewrites the same file and may commit its row only after
    the rows were read here; the file's newer time keeps it. None when the journal is gone.
    """
    try:
        cutoff = journal.stat().st_mtime + REWRITTEN_AFTER.total_seconds()
    except FileNotFoundError:
        return None  # finished (or undone elsewhere) meanwhile
    folder = journal.parent.parent
    owned = set(DatasetImage.objects.filter(dataset_id=dataset_id).values_list("sha256", flat=True))
    return lambda sha: sha in owned or _written_after(folder, sha, cutoff)


def _written_after(folder: Path, sha: str, cutoff: float) -> bool:
    """Whether a file of this picture (original or thumbnail) was written after `cutoff`."""
    paths = [storage.thumbnail_path(folder, sha), *(folder / "images" / sha[:2]).glob(f"{sha}.*")]
    for path in paths:
        try:
            if path.stat().st_mtime > cutoff:
                return True
        except FileNotFoundError:
            continue
    return False


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


def _remove_interrupted_writes() -> None:
    """Temporary files of processes killed mid-write: the final file was never touched, only space is lost."""
    removed = datafiles.remove_stale_temporaries(TEMPORARY_GRACE)
    if removed:
        logger.info("Removed %d temporary files of interrupted writes.", removed)


def _age(path: Path, now: datetime) -> timedelta:
    """How long ago a file was last written; zero when it vanished meanwhile (nothing to do then)."""
    try:
        return timedelta(seconds=now.timestamp() - path.stat().st_mtime)
    except FileNotFoundError:
        return timedelta(0)
