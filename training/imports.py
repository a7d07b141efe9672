"""Zip imports into a dataset: the database side of `training.archives`, run by the worker.

The order is always: verify and write the files (each one in a journal first), then the rows in
short transactions, then drop the journal.

Short transactions, because SQLite has one write lock for the whole database and every web
request that writes (a prediction, an upload) waits for it: the labels go in one transaction
(at most MAX_LABELS_PER_DATASET rows), the images in batches of BULK_BATCH rows, each batch in
its own transaction with a pause after it, and the job's report in a last one. None holds the
lock for more than a few tens of milliseconds, whatever the size of the zip
(tests/test_import_locks.py measures it).

Rows stay provisional until the import has succeeded: every label and image an import writes
names it (`import_job`), and its last transaction, which moves the job to succeeded, is the commit
point. Until then a failure, a cancel or a dead worker removes them (`discard_rows`): at once in
`_fail`, through `ImportJob.release_files` when recovery finds the worker gone, in
`training.recovery` for a job stopped without release (SIGTERM), and before an unfinished job's
row is deleted. Then the journal undoes the files, so the dataset is left as it was. While the
rows are written, other pages may already show them; training waits for the import to end.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
import uuid
from collections.abc import Iterable
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, F, OuterRef

from training import archives, splits, storage
from training.models import Dataset, DatasetImage, ImportJob, Label, max_labels
from training.names import label_key, too_many_labels_message
from webapp import atomic, background
from webapp.diskspace import DiskFull, ensure_free_space

logger = logging.getLogger(__name__)

# Image rows per transaction: 10-40 ms of the write lock on SQLite (measured on 2 cores, 8 indexes
# per row, a table of 100,000 rows); a loaded machine stretches that a few times, far from a second.
BULK_BATCH = 250
# Seconds the write lock stays free after each batch, at least (and at least as long as the batch
# held it). SQLite's busy handler lets a waiting connection sleep up to 100 ms between tries, so a
# longer pause lets every waiting writer in.
BATCH_PAUSE = 0.1

INTERRUPTED_MESSAGE = ImportJob.INTERRUPTED_MESSAGE
DISK_FULL_MESSAGE = (
    "The server's disk filled up during the import, so it was undone: nothing was imported. Tell your "
    "administrator (the server needs free disk space), then try again."
)
UNEXPECTED_MESSAGE = (
    "The import stopped on an unexpected error and was undone: nothing was imported. Try again; "
    "if it happens again, tell your administrator (the worker's log has the details)."
)
CANCELLED_MESSAGE = "Cancelled while it ran and undone: nothing was imported."
LOST_MESSAGE = "The dataset was deleted, or the job stopped, while the import ran; nothing was kept."


class ImportRefused(Exception):
    """An import cannot start; str(error) says why, for the user."""


def zip_limits() -> archives.ZipLimits:
    """The caps from settings, read at call time (tests and deployments change them)."""
    return archives.ZipLimits(
        max_members=settings.IMPORT_MAX_MEMBERS,
        max_total_bytes=settings.IMPORT_MAX_TOTAL_BYTES,
        max_ratio=settings.IMPORT_MAX_RATIO,
        max_file_bytes=settings.MAX_UPLOAD_BYTES,
        max_labels=max_labels(),
    )


def image_store(dataset: Dataset, journal: storage.Journal) -> storage.ImageStore:
    """The store every picture of this dataset goes through, journalled so a failure can be undone,
    and refusing to fill the disk (DiskFull) before each write."""
    return storage.ImageStore(
        dataset.folder,
        max_bytes=settings.MAX_UPLOAD_BYTES,
        max_pixels=settings.MAX_IMAGE_PIXELS,
        journal=journal,
        check_space=lambda size: ensure_free_space(dataset.folder, size),
    )


def _known_hashes(dataset: Dataset) -> set[str]:
    return set(dataset.images.values_list("sha256", flat=True))


# --- Starting an import (web process) --------------------------------------------------------


def archives_dir() -> Path:
    """Where uploaded zips wait for the worker, outside any dataset folder."""
    return Path(settings.DATA_DIR) / "imports"


ALREADY_RUNNING = "An import is already running for this dataset. Wait for it to finish, then try again."


def record_import(
    dataset: Dataset, archive_name: str, archive_path: Path, size: int, user: AbstractBaseUser | None
) -> ImportJob:
    """The job row of an import whose zip is (or is about to be) at `archive_path`; not queued.

    Raises ImportRefused when an import is already active for the dataset (one at a time).
    """
    try:
        with transaction.atomic():
            return ImportJob.objects.create(
                dataset=dataset,
                created_by=user,
                archive_name=os.path.basename(archive_name or "archive.zip")[:255],
                archive_path=str(archive_path),
                archive_size=size,
            )
    except IntegrityError:
        raise ImportRefused(ALREADY_RUNNING) from None


def start_import(dataset: Dataset, upload: UploadedFile, user: AbstractBaseUser | None) -> ImportJob:
    """Keep the uploaded zip for the worker and queue the job once its row has committed."""
    from training import tasks

    folder = archives_dir()
    folder.mkdir(parents=True, exist_ok=True)
    ensure_free_space(folder, upload.size or 0)
    path = folder / f"{uuid.uuid4().hex}.zip"
    with atomic.open_replacing(path) as out:  # the worker (maybe on another machine) never reads half a zip
        for chunk in upload.chunks():
            out.write(chunk)
    try:
        with transaction.atomic():
            job = record_import(dataset, upload.name or "", path, path.stat().st_size, user)
            # After the commit, or the worker may look for a row that does not exist yet.
            transaction.on_commit(lambda: tasks.import_archive(job.pk))
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return job


def archive_in_place(job: ImportJob) -> bool:
    """Whether the job's zip is where the worker reads it: `manage.py import_dataset` records the job
    first and copies a large zip afterwards, so a queued job without its zip may not be ready yet."""
    return bool(job.archive_path) and Path(job.archive_path).is_file()


def cancel_import(job: ImportJob) -> None:
    """A queued job stops at once; a running one at its next progress write (about a second)."""
    job.request_cancel("Cancelled before it started: nothing was imported.")


# --- Running an import (worker) --------------------------------------------------------------


class _Progress:
    """Writes done/total and the heartbeat about once a second; raises when a cancel was asked."""

    def __init__(self, job: ImportJob) -> None:
        self.write = background.Progress(ImportJob, job.pk)

    def __call__(self, done: int, total: int) -> None:
        self.write(force=done in (0, total), done=done, total=total)

    def hold(self) -> None:
        """Inside each row transaction: the job is still this worker's and not cancelled, or it raises.

        On PostgreSQL the heartbeat UPDATE also locks the job row until the commit, so recovery
        cannot mark the job interrupted in the middle of a batch and miss its rows.
        """
        self.write(force=True)


def claim(job_id: int) -> ImportJob | None:
    """Queued -> running, atomically: a task delivered twice, or a cancelled job, does nothing."""
    if not ImportJob.claim(job_id):
        return None
    return ImportJob.objects.select_related("dataset", "created_by").get(pk=job_id)


def run_import_job(job_id: int) -> ImportJob | None:
    """The worker's whole job: claim, import, write rows and report, clean up. Never raises."""
    job = claim(job_id)
    if job is None:
        logger.info("Import %s is not queued any more; nothing to do.", job_id)
        return None
    dataset = job.dataset
    journal = storage.Journal(dataset.folder, f"import-{job.pk}")
    progress = _Progress(job)
    try:
        known = _known_hashes(dataset)
        result = archives.import_zip(
            job.archive_path,
            store=image_store(dataset, journal),
            known=known,
            existing_labels=dataset.label_key_map(),
            limits=zip_limits(),
            restore_labels=not known,
            on_progress=progress,
        )
        _save_rows(job, result, progress)
        journal.forget()
    except archives.ArchiveError as error:
        _fail(job, str(error), journal)
    except DiskFull as error:
        logger.error("Import %s stopped: %s", job.pk, error)
        _fail(job, DISK_FULL_MESSAGE, journal)
    except background.Cancelled:
        _fail(job, CANCELLED_MESSAGE, journal, ImportJob.Status.CANCELLED)
    except background.JobLost:
        _fail(job, LOST_MESSAGE, journal)
    except Exception:
        logger.exception("Import %s failed", job.pk)
        _fail(job, UNEXPECTED_MESSAGE, journal, detail=traceback.format_exc())
    finally:
        journal.close()
        remove_archive(job.archive_path)
    return ImportJob.objects.filter(pk=job.pk).first()


def _fail(
    job: ImportJob,
    message: str,
    journal: storage.Journal | None = None,
    status: str = ImportJob.Status.FAILED,
    detail: str = "",
) -> None:
    """Remove the rows the import committed, undo its files, then record the failure.

    Rows go while the job is still running (so nobody deletes it meanwhile); should that fail, the
    job still ends and `training.recovery` removes them later. Only a running job changes state.
    """
    try:
        discard_rows(job.pk)
    except Exception:
        logger.exception("Could not remove the rows of import %s; recovery will.", job.pk)
    if journal is not None:
        journal.close()
        undo_journal(job.dataset_id, journal.path)
        if not Dataset.objects.filter(pk=job.dataset_id).exists():
            storage.delete_folder(journal.folder)  # deleted meanwhile: leave no empty folders behind
    ImportJob.transition(job.pk, status, message=message, report={}, detail=detail)


def discard_rows(job_id: int) -> int:
    """Delete what import `job_id` committed: its images, then its labels no one else put images in.

    For an import that did not succeed only: its rows were provisional. A batch per transaction, as
    they were written. The files go with the rows (`models._delete_image_files`). Returns the
    number of images removed.
    """
    removed = 0
    while True:
        started = time.monotonic()
        with transaction.atomic():
            batch = list(DatasetImage.objects.filter(import_job_id=job_id).values_list("pk", flat=True)[:BULK_BATCH])
            if batch:
                DatasetImage.objects.filter(pk__in=batch).delete()
        if not batch:
            break
        removed += len(batch)
        _yield_to_other_writers(time.monotonic() - started)
    with transaction.atomic():
        filled = DatasetImage.objects.filter(label=OuterRef("pk"))
        Label.objects.filter(import_job_id=job_id).exclude(Exists(filled)).delete()
    return removed


def _yield_to_other_writers(held: float) -> None:
    """Leave SQLite's write lock free between two short transactions, so waiting writers get it.

    At least as long as the last transaction held it: the import never has the lock more than half
    the time, however slow a loaded machine makes each batch.
    """
    if connection.vendor == "sqlite" and not connection.in_atomic_block:
        time.sleep(max(BATCH_PAUSE, held))


def journal_path(job: ImportJob) -> Path:
    return storage.Journal.path_for(Path(settings.DATASETS_DIR) / str(job.dataset_id), f"import-{job.pk}")


def undo_import_files(job: ImportJob) -> None:
    """What an interrupted import wrote without rows goes (its journal lists the files)."""
    path = journal_path(job)
    if path.exists():
        removed = undo_journal(job.dataset_id, path)
        logger.info("Undid %s: removed %d files.", path, removed)


def undo_journal(dataset_id: int, journal_path: Path) -> int:
    """Remove the journalled files no row of the dataset owns (see `storage.undo`)."""
    known = set(DatasetImage.objects.filter(dataset_id=dataset_id).values_list("sha256", flat=True))
    return storage.undo(journal_path, known.__contains__)


def remove_archive(path: str) -> None:
    if path:
        Path(path).unlink(missing_ok=True)


# --- Writing the rows: short transactions ------------------------------------------------------


def _save_rows(job: ImportJob, result: archives.ImportResult, progress: _Progress) -> None:
    """Labels, then images a batch at a time, then the report: each in its own short transaction."""
    dataset = job.dataset
    was_empty = not dataset.images.exists()
    descriptions = archives.manifest_labels(result.manifest)
    restored = _restored_settings(dataset, result.manifest) if was_empty else {}
    if was_empty:  # the first images are dealt out with the shares as they are (or as restored)
        restored.update(drawn_validation_percent=None, drawn_test_percent=None)
    for field, value in restored.items():
        setattr(dataset, field, value)  # the splits below are drawn with them; saved in the last transaction
    names = [a.label for a in result.added]
    if was_empty:
        names += list(descriptions)  # a restored export keeps its empty labels too
    labels, created = _write_labels(job, names, descriptions, progress)
    for outcome in result.labels.values():
        outcome.new = label_key(outcome.name) in created
    chosen = result.manifest.get("splits", {}) if was_empty and result.manifest else {}
    assignment = _assign_splits(dataset, result.added, labels, chosen)
    _write_images(job, result, labels, assignment, progress)
    _finish(job, result, restored)


def _write_labels(
    job: ImportJob, names: Iterable[str], descriptions: dict[str, str], progress: _Progress
) -> tuple[dict[str, Label], set[str]]:
    """One transaction: the labels by key, creating the missing ones; returns them and the keys created.

    The cap is checked again here: labels may have been added since the zip was inspected.
    """
    dataset = job.dataset
    with transaction.atomic():
        progress.hold()
        labels = {label_key(label.name): label for label in dataset.labels.all()}
        existing = len(labels)
        new: dict[str, str] = {}
        for name in names:
            if label_key(name) not in labels:
                new.setdefault(label_key(name), name)
        cap = max_labels()
        if new and existing + len(new) > cap:
            raise archives.ArchiveError(too_many_labels_message(existing + len(new), existing, cap))
        rows = [
            Label(dataset=dataset, name=name, description=descriptions.get(name, "")[:500], import_job=job)
            for name in new.values()
        ]
        for label in Label.objects.bulk_create(rows):
            labels[label_key(label.name)] = label
    return labels, set(new)


def _write_images(
    job: ImportJob,
    result: archives.ImportResult,
    labels: dict[str, Label],
    assignment: dict[str, str],
    progress: _Progress,
) -> None:
    """The image rows, BULK_BATCH per transaction, with a pause after each for the other writers.

    The rows are built before the transaction opens: the lock is held for the queries only.
    """
    for start in range(0, len(result.added), BULK_BATCH):
        batch = [(a, _image_row(job, a, labels, assignment)) for a in result.added[start : start + BULK_BATCH]]
        started = time.monotonic()
        with transaction.atomic():
            progress.hold()
            DatasetImage.objects.bulk_create(_drop_raced_duplicates(job.dataset, batch, result))
        _yield_to_other_writers(time.monotonic() - started)


def _image_row(job: ImportJob, a: archives.Added, labels: dict[str, Label], assignment: dict[str, str]) -> DatasetImage:
    return DatasetImage(
        dataset=job.dataset,
        label=labels[label_key(a.label)],
        sha256=a.image.sha256,
        original_name=a.original_name[:255],
        format=a.image.format,
        width=a.image.width,
        height=a.image.height,
        size_bytes=a.image.size,
        split=assignment[a.image.sha256],
        added_by=job.created_by,
        import_job=job,
    )


def _finish(job: ImportJob, result: archives.ImportResult, restored: dict[str, object]) -> None:
    """The commit point: restored settings, the report and the job's move to succeeded, in one transaction.

    A job that is no longer running (recovered elsewhere, cancelled, deleted) does not move: its
    rows are then discarded like those of any failed import.
    """
    dataset = job.dataset
    report = result.report()
    message = archives.summary(report)
    with transaction.atomic():
        if restored:
            Dataset.objects.filter(pk=dataset.pk).update(**restored)
        dataset.touch()
        finished = ImportJob.transition(
            job.pk, ImportJob.Status.SUCCEEDED, message=message, report=report, done=F("total")
        )
        if not finished:
            raise background.JobLost


def _restored_settings(dataset: Dataset, manifest: dict | None) -> dict[str, object]:
    """An export imported into an empty dataset brings back its split shares, seed and description.

    `archives` has checked the types; values out of range are not restored.
    """
    info = (manifest or {}).get("dataset", {})
    try:
        shares = splits.Shares(validation=info["validation_percent"], test=info["test_percent"])
        seed = info["split_seed"]
    except (KeyError, ValueError):
        return {}
    if not 0 <= seed <= 2**31 - 1:
        return {}
    restored: dict[str, object] = {
        "validation_percent": shares.validation,
        "test_percent": shares.test,
        "split_seed": seed,
    }
    if not dataset.description and info.get("description"):
        restored["description"] = info["description"][:5000]
    return restored


def _drop_raced_duplicates(
    dataset: Dataset, batch: list[tuple[archives.Added, DatasetImage]], result: archives.ImportResult
) -> list[DatasetImage]:
    """An upload may have added the same picture while the zip was read: count it as a duplicate."""
    hashes = [a.image.sha256 for a, _ in batch]
    present = set(dataset.images.filter(sha256__in=hashes).values_list("sha256", flat=True))
    kept = []
    for a, row in batch:
        if a.image.sha256 in present:
            outcome = result.labels[a.label]
            outcome.added -= 1
            outcome.duplicate(a.original_name, "Added to the dataset by someone else during the import.")
        else:
            kept.append(row)
    return kept


def _assign_splits(
    dataset: Dataset, added: list[archives.Added], labels: dict[str, Label], chosen: dict[str, str]
) -> dict[str, str]:
    """Splits for the new images: the manifest's choice when restoring an export, else `splits.assign`."""
    counts = dataset.split_counts()
    fresh: dict[int, list[str]] = {}
    assignment: dict[str, str] = {}
    for a in added:
        label_id = labels[label_key(a.label)].pk
        counts.setdefault(label_id, dict.fromkeys(splits.SPLITS, 0))
        sha = a.image.sha256
        if sha in chosen:
            assignment[sha] = chosen[sha]
            counts[label_id][chosen[sha]] += 1
        else:
            fresh.setdefault(label_id, []).append(sha)
    for label_id, hashes in fresh.items():
        assignment.update(splits.assign(hashes, counts[label_id], shares=dataset.shares, seed=dataset.split_seed))
    return assignment
