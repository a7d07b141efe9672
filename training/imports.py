"""Zip imports into a dataset: the database side of `training.archives`, run by the worker.

The order is always: verify and write files (each one in a journal first), then one short
transaction for the rows and the job's report, then drop the journal. A failure at any point
undoes the files from the journal, so the dataset is left as it was; a killed worker is undone
when the consumer starts again (`training.recovery`).
"""

from __future__ import annotations

import logging
import os
import traceback
import uuid
from collections.abc import Iterable
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.db.models import F

from training import archives, splits, storage
from training.models import Dataset, DatasetImage, ImportJob, Label
from training.names import InvalidName, clean_label_name, label_key
from webapp import background

logger = logging.getLogger(__name__)

BULK_BATCH = 500

INTERRUPTED_MESSAGE = ImportJob.INTERRUPTED_MESSAGE
UNEXPECTED_MESSAGE = (
    "The import stopped on an unexpected error and was undone: nothing was imported. Try again; "
    "if it happens again, tell your administrator (the worker's log has the details)."
)


class ImportRefused(Exception):
    """An import cannot start; str(error) says why, for the user."""


def zip_limits() -> archives.ZipLimits:
    """The caps from settings, read at call time (tests and deployments change them)."""
    return archives.ZipLimits(
        max_members=settings.IMPORT_MAX_MEMBERS,
        max_total_bytes=settings.IMPORT_MAX_TOTAL_BYTES,
        max_ratio=settings.IMPORT_MAX_RATIO,
        max_file_bytes=settings.MAX_UPLOAD_BYTES,
    )


def image_store(dataset: Dataset, journal: storage.Journal) -> storage.ImageStore:
    """The store every picture of this dataset goes through, journalled so a failure can be undone."""
    return storage.ImageStore(
        dataset.folder, max_bytes=settings.MAX_UPLOAD_BYTES, max_pixels=settings.MAX_IMAGE_PIXELS, journal=journal
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
    path = folder / f"{uuid.uuid4().hex}.zip"
    with open(path, "wb") as out:
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
    try:
        result = archives.import_zip(
            job.archive_path,
            store=image_store(dataset, journal),
            known=_known_hashes(dataset),
            existing_labels=dataset.label_key_map(),
            limits=zip_limits(),
            on_progress=_Progress(job),
        )
        with transaction.atomic():
            _save_rows(dataset, result, job.created_by)
            report = result.report()
            finished = ImportJob.transition(
                job.pk, ImportJob.Status.SUCCEEDED, message=_summary(report), report=report, done=F("total")
            )
            if not finished:
                raise background.JobLost  # marked interrupted meanwhile, or deleted: roll the rows back
        journal.forget()
    except archives.ArchiveError as error:
        _fail(job, str(error), journal)
    except background.Cancelled:
        _fail(job, "Cancelled while it ran and undone: nothing was imported.", journal, ImportJob.Status.CANCELLED)
    except background.JobLost:
        _fail(job, "The dataset was deleted, or the job stopped, while the import ran; nothing was kept.", journal)
    except Exception:
        logger.exception("Import %s failed", job.pk)
        _fail(job, UNEXPECTED_MESSAGE, journal, detail=traceback.format_exc())
    finally:
        journal.close()
        remove_archive(job.archive_path)
    return ImportJob.objects.filter(pk=job.pk).first()


def _summary(report: dict) -> str:
    added, duplicates, rejected = report["added"], report["duplicates"], report["rejected"]
    if not (added or duplicates or rejected):
        return "The zip holds no images in label folders: put one folder per label in it, with the images inside."
    parts = [f"Added {added} image{'s' if added != 1 else ''}"]
    if duplicates:
        parts.append(f"skipped {duplicates} duplicate{'s' if duplicates != 1 else ''}")
    if rejected:
        parts.append(f"rejected {rejected} file{'s' if rejected != 1 else ''} (reasons below)")
    return ", ".join(parts) + "."


def _fail(
    job: ImportJob,
    message: str,
    journal: storage.Journal | None = None,
    status: str = ImportJob.Status.FAILED,
    detail: str = "",
) -> None:
    """Undo the files, then record the failure. Only a running job changes state."""
    if journal is not None:
        journal.close()
        undo_journal(job.dataset_id, journal.path)
        if not Dataset.objects.filter(pk=job.dataset_id).exists():
            storage.delete_folder(journal.folder)  # deleted meanwhile: leave no empty folders behind
    ImportJob.transition(job.pk, status, message=message, report={}, detail=detail)


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


def labels_for(
    dataset: Dataset, names: Iterable[str], descriptions: dict[str, str]
) -> tuple[dict[str, Label], set[str]]:
    """Existing labels by key, creating the missing ones; returns them and the keys created."""
    labels = {label_key(label.name): label for label in dataset.labels.all()}
    created = set()
    for name in names:
        key = label_key(name)
        if key not in labels:
            description = str(descriptions.get(name, ""))[:500]
            labels[key] = Label.objects.create(dataset=dataset, name=name, description=description)
            created.add(key)
    return labels, created


def _valid_names(names: Iterable[str]) -> list[str]:
    valid = []
    for name in names:
        try:
            valid.append(clean_label_name(name))
        except InvalidName:
            continue
    return valid


def _manifest_parts(manifest: dict | None) -> tuple[dict[str, str], dict[str, str]]:
    """Label descriptions and splits from an export's transferlab.json; bad values are ignored."""
    if not manifest:
        return {}, {}
    labels = manifest.get("labels")
    descriptions = {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}
    raw = manifest.get("splits")
    chosen = {str(k): v for k, v in raw.items() if v in splits.SPLITS} if isinstance(raw, dict) else {}
    return descriptions, chosen


def _save_rows(dataset: Dataset, result: archives.ImportResult, user: AbstractBaseUser | None) -> None:
    """Labels and image rows for what `archives.import_zip` stored. Runs inside the transaction."""
    if not Dataset.objects.select_for_update().filter(pk=dataset.pk).exists():
        raise background.JobLost
    was_empty = not dataset.images.exists()
    descriptions, manifest_splits = _manifest_parts(result.manifest)
    if was_empty and result.manifest:
        _restore_settings(dataset, result.manifest)
    added = _drop_raced_duplicates(dataset, result)
    names = [a.label for a in added]
    if was_empty:
        names += _valid_names(descriptions)  # a restored export keeps its empty labels too
    labels, created = labels_for(dataset, dict.fromkeys(names), descriptions)
    for outcome in result.labels.values():
        outcome.new = label_key(outcome.name) in created
    chosen = manifest_splits if was_empty else {}
    assignment = _assign_splits(dataset, added, labels, chosen)
    for start in range(0, len(added), BULK_BATCH):  # rows built a batch at a time: memory stays flat
        batch = added[start : start + BULK_BATCH]
        DatasetImage.objects.bulk_create(
            DatasetImage(
                dataset=dataset,
                label=labels[label_key(a.label)],
                sha256=a.image.sha256,
                original_name=a.original_name[:255],
                format=a.image.format,
                width=a.image.width,
                height=a.image.height,
                size_bytes=a.image.size,
                split=assignment[a.image.sha256],
                added_by=user,
            )
            for a in batch
        )
    dataset.touch()


def _restore_settings(dataset: Dataset, manifest: dict) -> None:
    """An export imported into an empty dataset brings back its split shares and seed."""
    info = manifest.get("dataset")
    if not isinstance(info, dict):
        return
    try:
        shares = splits.Shares(validation=int(info["validation_percent"]), test=int(info["test_percent"]))
        seed = int(info["split_seed"])
    except (KeyError, TypeError, ValueError):
        return
    if seed < 0 or seed > 2**31 - 1:
        return
    dataset.validation_percent, dataset.test_percent, dataset.split_seed = shares.validation, shares.test, seed
    dataset.save(update_fields=["validation_percent", "test_percent", "split_seed"])
    if not dataset.description and isinstance(info.get("description"), str):
        dataset.description = info["description"][:5000]
        dataset.save(update_fields=["description"])


def _drop_raced_duplicates(dataset: Dataset, result: archives.ImportResult) -> list[archives.Added]:
    """An upload may have added the same picture while the zip was read: count it as a duplicate."""
    hashes = [a.image.sha256 for a in result.added]
    present: set[str] = set()
    for start in range(0, len(hashes), BULK_BATCH):
        chunk = hashes[start : start + BULK_BATCH]
        present.update(dataset.images.filter(sha256__in=chunk).values_list("sha256", flat=True))
    if not present:
        return result.added
    kept = []
    for a in result.added:
        if a.image.sha256 in present:
            outcome = result.labels[a.label]
            outcome.added -= 1
            outcome.duplicate(a.original_name, "Added to the dataset by someone else during the import.")
        else:
            kept.append(a)
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
