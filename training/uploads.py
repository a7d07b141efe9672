"""Uploads into one label: a few files, verified and stored in the web request.

Same rules, same report and same undo-on-failure as a zip import (`training.imports`). The rows
of one upload (at most MAX_FILES_PER_REQUEST) go in one short transaction.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction

from classifier.imaging import ImageError
from training import archives, splits, storage
from training.imports import image_store, undo_journal
from training.models import Dataset, DatasetImage, Label, max_labels
from training.names import clean_file_name, label_key, labels_full_message


def add_uploads(dataset: Dataset, label: Label | str, files: list[UploadedFile], user: AbstractBaseUser | None) -> dict:
    """Verify and store uploaded pictures into one label (created if given by name); returns the report.

    Same rules and report as a zip import: duplicates skipped, bad files rejected with the reason.
    """
    name = label.name if isinstance(label, Label) else label
    outcome = archives.LabelOutcome(name=name)
    journal = storage.Journal(dataset.folder, f"upload-{uuid.uuid4().hex}")
    store = image_store(dataset, journal)
    pending: list[tuple[str, storage.StoredImage]] = []
    seen: dict[str, str] = {}
    try:
        for upload in files:
            filename = clean_file_name(upload.name or "")
            stored = _store_upload(upload, filename, dataset, store, outcome, seen)
            if stored is not None:
                pending.append((filename, stored))
        with transaction.atomic():
            if isinstance(label, str):
                label = _label_named(dataset, label, outcome, [filename for filename, _ in pending])
            if pending and isinstance(label, Label):
                _save_uploads(dataset, label, pending, outcome, user)
        if outcome.added == len(pending):
            journal.forget()
        else:  # some files have no row (no room for the label, or raced duplicates): undo those
            journal.close()
            undo_journal(dataset.pk, journal.path)
    except BaseException:
        journal.close()
        undo_journal(dataset.pk, journal.path)
        raise
    return archives.build_report([outcome])


def _label_named(dataset: Dataset, name: str, outcome: archives.LabelOutcome, filenames: list[str]) -> Label | None:
    """The label called `name` (whatever the case); created for `filenames` if the dataset has room.

    Without room, every file is rejected with the reason: the form checked the cap, but labels may
    have been added since. No file kept, no label created. Runs inside the upload's transaction.
    """
    labels = list(dataset.labels.all())
    existing = next((label for label in labels if label_key(label.name) == label_key(name)), None)
    if existing is not None:
        outcome.name = existing.name
        return existing
    if not filenames:
        return None
    if len(labels) >= max_labels():
        for filename in filenames:
            outcome.reject(filename, labels_full_message(len(labels)))
        return None
    outcome.new = True
    return Label.objects.create(dataset=dataset, name=name)


def _store_upload(
    upload: UploadedFile,
    filename: str,
    dataset: Dataset,
    store: storage.ImageStore,
    outcome: archives.LabelOutcome,
    seen: dict[str, str],
) -> storage.StoredImage | None:
    if upload.size is not None and upload.size > settings.MAX_UPLOAD_BYTES:
        outcome.reject(filename, archives.too_large_message(upload.size, settings.MAX_UPLOAD_BYTES))
        return None
    upload.seek(0)
    data = upload.read(settings.MAX_UPLOAD_BYTES + 1)
    sha = storage.sha256(data)
    if sha in seen:
        outcome.duplicate(filename, f"Same picture as {seen[sha]}.")
        return None
    if dataset.images.filter(sha256=sha).exists():
        outcome.duplicate(filename, "Already in the dataset.")
        return None
    try:
        stored = store.save(data, sha)
    except ImageError as error:
        outcome.reject(filename, str(error))
        return None
    seen[sha] = filename
    return stored


def _save_uploads(
    dataset: Dataset,
    label: Label,
    pending: list[tuple[str, storage.StoredImage]],
    outcome: archives.LabelOutcome,
    user: AbstractBaseUser | None,
) -> None:
    was_empty = not dataset.images.exists()
    present = set(dataset.images.filter(sha256__in=[s.sha256 for _, s in pending]).values_list("sha256", flat=True))
    fresh = []
    for filename, stored in pending:
        if stored.sha256 in present:
            outcome.duplicate(filename, "Already in the dataset.")
        else:
            fresh.append((filename, stored))
    counts = dataset.split_counts().get(label.pk, {})
    assignment = splits.assign([s.sha256 for _, s in fresh], counts, shares=dataset.shares, seed=dataset.split_seed)
    DatasetImage.objects.bulk_create(
        [
            DatasetImage(
                dataset=dataset,
                label=label,
                sha256=s.sha256,
                original_name=filename,
                format=s.format,
                width=s.width,
                height=s.height,
                size_bytes=s.size,
                split=assignment[s.sha256],
                added_by=user,
            )
            for filename, s in fresh
        ]
    )
    outcome.added += len(fresh)
    if was_empty and fresh:
        dataset.splits_follow_shares()  # the first images are dealt out with the shares as they are now
    dataset.touch()
