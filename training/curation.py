"""People changing dataset images: move, split, exclude, delete; each change recorded and undoable.

Every change a person makes to an image goes through here (the image page, the images behind a
confusion cell, suspected label errors, reviews), so the dataset's history is complete: one
`ImageChange` per image and action, with who, when, the state before and after, why, and a batch
shared by the changes made together. Images already in the wanted state give no row.

A deleted image is not lost at once: its files move to `<dataset folder>/trash/<token>/` when the
delete commits (before the row's post_delete signal, which then finds nothing to remove), and the
change keeps the row's fields, so `undo` puts the same row back (same id, same picture). The daily
clean-up empties trash older than TRASH_RETENTION_DAYS (`empty_trash`); after that an undo says so.

`undo` refuses, in a sentence, what cannot be put back: a change with a later change on the same
picture (undo that first), a picture added again since, files emptied from the trash.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.formats import date_format

from classifier import imaging
from training import storage
from training.models import Dataset, DatasetImage, ImageChange, Label, Split
from training.names import label_key
from training.outcomes import SplitOutcome
from webapp import atomic

logger = logging.getLogger(__name__)

Action = ImageChange.Action
DEFAULT_TRASH_RETENTION_DAYS = 30


class CannotUndo(Exception):
    """A change that cannot be undone now; the message says why and what to do, for the user."""


# --- Changing images -------------------------------------------------------------------------------


def move_images(
    images: Iterable[DatasetImage], label: Label, user, *, reason: str = "", batch: str | None = None
) -> list[ImageChange]:
    """Put the images in `label` (of their own dataset: ValueError otherwise)."""
    images = list(images)  # iterated twice: the rows as stored now, then the caller's copies
    rows = _fresh(images)
    if any(row.dataset_id != label.dataset_id for row in rows):
        raise ValueError(f"Label “{label.name}” belongs to another dataset than these images.")
    moving = [row for row in rows if row.label_id != label.pk]
    after = {"label": label.pk, "label_name": label.name}
    return _change(
        moving, Action.MOVE, lambda row: {"label": row.label_id, "label_name": row.label.name}, after,
        {"label_id": label.pk}, user, reason, batch, images,
    )  # fmt: skip


def change_split(
    images: Iterable[DatasetImage], split: str, user, *, reason: str = "", batch: str | None = None
) -> list[ImageChange]:
    """Put the images in `split` ("train", "validation" or "test"; ValueError otherwise)."""
    if split not in Split.values:
        raise ValueError(f"There is no split called {split!r}: choose train, validation or test.")
    images = list(images)
    moving = [row for row in _fresh(images) if row.split != split]
    return _change(
        moving, Action.SPLIT, lambda row: {"split": row.split}, {"split": split}, {"split": split},
        user, reason, batch, images,
    )  # fmt: skip


def set_excluded(
    images: Iterable[DatasetImage], excluded: bool, user, *, reason: str = "", batch: str | None = None
) -> list[ImageChange]:
    """Exclude the images from training (kept and shown, skipped by jobs), or include them again."""
    excluded, images = bool(excluded), list(images)
    moving = [row for row in _fresh(images) if row.excluded != excluded]
    action = Action.EXCLUDE if excluded else Action.INCLUDE
    return _change(
        moving, action, lambda row: {"excluded": row.excluded}, {"excluded": excluded}, {"excluded": excluded},
        user, reason, batch, images,
    )  # fmt: skip


def delete_images(
    images: Iterable[DatasetImage], user, *, reason: str = "", batch: str | None = None
) -> list[ImageChange]:
    """Delete the images; their files wait in the dataset's trash, so `undo` can put them back."""
    rows = _fresh(images)
    if not rows:
        return []
    batch = batch or new_batch()
    now = timezone.now()
    changes = []
    with transaction.atomic():
        for row in rows:
            token = uuid.uuid4().hex
            changes.append(_record(row, Action.DELETE, _row_fields(row, token), {}, user, reason, batch, now))
            # Registered before the delete: runs before the post_delete signal's removal of the files.
            transaction.on_commit(_trash_later(row.folder, row.sha256, row.format, token))
        ImageChange.objects.bulk_create(changes)
        DatasetImage.objects.filter(pk__in=[row.pk for row in rows]).delete()
        _touch(rows)
    for change in changes:
        change.image = None  # SET_NULL in the database: the image is gone
    return changes


def record_added(image: DatasetImage, user, *, reason: str = "") -> ImageChange:
    """Record that a person added `image` (e.g. from a reviewed prediction); undoing it deletes it."""
    after = {"label": image.label_id, "label_name": image.label.name, "split": image.split}
    change = _record(image, Action.ADD, {}, after, user, reason, new_batch(), timezone.now())
    change.save()
    return change


def new_batch() -> str:
    """A batch id for changes made together (one selection, one "accept all")."""
    return uuid.uuid4().hex[:16]


def _fresh(images: Iterable[DatasetImage]) -> list[DatasetImage]:
    """The images as the database has them now (the caller's copies may be stale), in the given order."""
    ids = list(dict.fromkeys(image.pk for image in images if image.pk is not None))
    found = DatasetImage.objects.select_related("label", "dataset").in_bulk(ids)
    return [found[pk] for pk in ids if pk in found]


def _change(rows, action, before, after, fields, user, reason, batch, originals) -> list[ImageChange]:
    """Apply `fields` to `rows` in one UPDATE and record one change per row."""
    if not rows:
        return []
    batch = batch or new_batch()
    now = timezone.now()
    with transaction.atomic():
        changes = [_record(row, action, before(row), after, user, reason, batch, now) for row in rows]
        DatasetImage.objects.filter(pk__in=[row.pk for row in rows]).update(**fields)
        ImageChange.objects.bulk_create(changes)
        _touch(rows)
    changed = {row.pk for row in rows}
    for image in originals:  # the caller's copies show the new state too (a new label_id drops the cached label)
        if image.pk in changed:
            for name, value in fields.items():
                setattr(image, name, value)
    return changes


def _record(image, action, before, after, user, reason, batch, now) -> ImageChange:
    return ImageChange(
        dataset_id=image.dataset_id, image=image, sha256=image.sha256, original_name=image.original_name,
        action=action, before=before, after=after, reason=(reason or "")[:200], batch=batch or "",
        changed_by=user if getattr(user, "is_authenticated", False) else None, created_at=now,
    )  # fmt: skip


def _row_fields(image: DatasetImage, token: str) -> dict:
    """Everything needed to put a deleted image's row back, and where its files wait."""
    return {
        "id": image.pk,
        "label": image.label_id,
        "label_name": image.label.name,
        "split": image.split,
        "excluded": image.excluded,
        "format": image.format,
        "width": image.width,
        "height": image.height,
        "size_bytes": image.size_bytes,
        "added_by": image.added_by_id,
        "created_at": image.created_at.isoformat(),
        "trash": token,
    }


def _touch(rows: list[DatasetImage]) -> None:
    for dataset in {row.dataset_id: row.dataset for row in rows}.values():
        dataset.touch()


def _trash_later(folder: Path, sha: str, fmt: str, token: str):
    def move() -> None:
        try:
            storage.move_to_trash(folder, sha, fmt, token)
        except OSError:  # the files then go with the row; undoing the deletion will say they are gone
            logger.exception("Could not move the files of %s to the trash of %s.", sha, folder)

    return move


# --- Undo ------------------------------------------------------------------------------------------


def undo(change: ImageChange, user) -> None:
    """Put the image back as it was before `change`; CannotUndo says why not."""
    _undo_all([change], user)


def undo_batch(dataset: Dataset, batch: str, user) -> list[ImageChange]:
    """Undo every change of a batch still standing, newest first, all or none."""
    changes = list(dataset.changes.filter(batch=batch, undone_at__isnull=True).order_by("-id")) if batch else []
    if not changes:
        raise CannotUndo("These changes were already undone.")
    _undo_all(changes, user)
    return changes


def blocking_change(change: ImageChange) -> ImageChange | None:
    """The later change on the same picture that must be undone first, if any."""
    later = ImageChange.objects.filter(
        dataset_id=change.dataset_id, sha256=change.sha256, id__gt=change.id, undone_at__isnull=True
    )
    return later.select_related("changed_by").order_by("id").first()


def _undo_all(changes: list[ImageChange], user) -> None:
    """One transaction; files put back are returned to the trash if the rows do not commit."""
    moved: list[tuple[Path, Path]] = []
    try:
        with transaction.atomic():
            for change in changes:
                _undo_one(change, user, moved)
    except BaseException:
        for source, target in reversed(moved):
            if target.exists():
                source.parent.mkdir(parents=True, exist_ok=True)
                os.replace(target, source)
        raise


def _undo_one(change: ImageChange, user, moved: list[tuple[Path, Path]]) -> None:
    now = timezone.now()
    claimed = ImageChange.objects.filter(pk=change.pk, undone_at__isnull=True).update(
        undone_at=now, undone_by=user if getattr(user, "is_authenticated", False) else None
    )
    if not claimed:
        change.refresh_from_db(fields=["undone_at", "undone_by"])
        who = f" by {change.undone_by}" if change.undone_by else ""
        raise CannotUndo(f"This change to “{change.original_name}” was already undone{who}.")
    later = blocking_change(change)
    if later is not None:
        raise CannotUndo(
            f"“{change.original_name}” changed again later: {describe(later)} by {later.changed_by or 'someone'} "
            f"on {_when(later.created_at)}. Undo the later change first."
        )
    dataset = Dataset.objects.get(pk=change.dataset_id)
    if change.action == Action.DELETE:
        image = _restore(change, dataset, moved)
        ImageChange.objects.filter(dataset=dataset, sha256=change.sha256, image__isnull=True).update(image=image)
        change.image = image
    else:
        image = DatasetImage.objects.select_related("label").filter(pk=change.image_id).first()
        if image is None:
            raise CannotUndo(f"“{change.original_name}” is no longer in the dataset (its label was deleted).")
        _put_back(change, image, dataset)
    dataset.touch()
    change.undone_at, change.undone_by = now, user if getattr(user, "is_authenticated", False) else None


def _put_back(change: ImageChange, image: DatasetImage, dataset: Dataset) -> None:
    before = change.before
    if change.action == Action.MOVE:
        label = _label_back(dataset, before.get("label"), before.get("label_name", ""))
        DatasetImage.objects.filter(pk=image.pk).update(label=label)
    elif change.action == Action.SPLIT:
        DatasetImage.objects.filter(pk=image.pk).update(split=before["split"])
    elif change.action in (Action.EXCLUDE, Action.INCLUDE):
        DatasetImage.objects.filter(pk=image.pk).update(excluded=bool(before.get("excluded")))
    elif change.action == Action.ADD:
        image.delete()  # an added picture goes with its files, as any ordinary delete
    else:
        raise CannotUndo(f"Changes of the kind “{change.get_action_display()}” cannot be undone.")


def label_is_gone(change: ImageChange) -> bool:
    """Whether undoing `change` has to add its former label again (it was deleted since)."""
    label_id = change.before.get("label")
    if change.action not in (Action.MOVE, Action.DELETE) or label_id is None:
        return False
    if Label.objects.filter(pk=label_id, dataset_id=change.dataset_id).exists():
        return False
    names = Label.objects.filter(dataset_id=change.dataset_id).values_list("name", flat=True)
    return label_key(change.before.get("label_name", "")) not in {label_key(name) for name in names}


def _label_back(dataset: Dataset, label_id: int | None, name: str) -> Label:
    """The image's former label: the same row, else one of the same name, else added again with that name.

    Adding it back is what a person undoing a change wants (their picture back where it was); the
    message of the undo says so. Refused only when the dataset has no room for another label.
    """
    label = Label.objects.filter(pk=label_id, dataset=dataset).first() if label_id else None
    if label is not None:
        return label
    for existing in dataset.labels.all():
        if label_key(existing.name) == label_key(name):
            return existing
    label = Label(dataset=dataset, name=name)
    try:
        label.clean()
    except ValidationError as error:
        raise CannotUndo(f"Label “{name}” was deleted and cannot be added again: {' '.join(error.messages)}") from None
    label.save()
    return label


def _restore(change: ImageChange, dataset: Dataset, moved: list[tuple[Path, Path]]) -> DatasetImage:
    """A deleted image's row and files, back as they were."""
    before = change.before
    again = dataset.images.select_related("label").filter(sha256=change.sha256).first()
    if again is not None:
        raise CannotUndo(
            f"“{change.original_name}” is in the dataset again: the same picture was added again since "
            f"(as “{again.original_name}” in “{again.label.name}”), so there is nothing to restore."
        )
    _files_back(change, dataset.folder, moved)
    label = _label_back(dataset, before.get("label"), before.get("label_name", ""))
    image = DatasetImage(
        dataset=dataset, label=label, sha256=change.sha256, original_name=change.original_name,
        format=before["format"], width=before["width"], height=before["height"],
        size_bytes=before.get("size_bytes", 0), split=before.get("split", Split.TRAIN),
        excluded=bool(before.get("excluded")), added_by_id=_user_id(before.get("added_by")),
        created_at=datetime.fromisoformat(before["created_at"]) if before.get("created_at") else timezone.now(),
    )  # fmt: skip
    if before.get("id") and not DatasetImage.objects.filter(pk=before["id"]).exists():
        image.pk = before["id"]  # the same id: jobs' snapshots and per-image results name it
    image.save(force_insert=True)
    return image


def _files_back(change: ImageChange, folder: Path, moved: list[tuple[Path, Path]]) -> None:
    """Move the original and thumbnail back from the trash (a thumbnail lost is made again)."""
    fmt, token = change.before["format"], change.before.get("trash", "")
    original, thumbnail = storage.image_path(folder, change.sha256, fmt), storage.thumbnail_path(folder, change.sha256)
    trashed_original, trashed_thumbnail = storage.trashed_paths(folder, token, fmt) if token else (None, None)
    if not original.exists():
        if trashed_original is None or not trashed_original.exists():
            raise CannotUndo(
                f"The files of “{change.original_name}” are gone: deleted images are kept "
                f"{trash_retention_days()} days, and this one was deleted on {_when(change.created_at)}."
            )
        _move(trashed_original, original, moved)
    if not thumbnail.exists():
        if trashed_thumbnail is not None and trashed_thumbnail.exists():
            _move(trashed_thumbnail, thumbnail, moved)
        else:
            _make_thumbnail(original, thumbnail)
    if token:
        try:
            storage.trash_folder(folder, token).rmdir()
        except OSError:
            pass  # not empty (a file the row no longer needs waits for the trash to be emptied) or gone


def _make_thumbnail(original: Path, thumbnail: Path) -> None:
    """A lost thumbnail is made again from the original (the grid would show a broken picture)."""
    try:
        decoded = imaging.decode(
            original, max_bytes=original.stat().st_size + 1, max_pixels=10**10, draft_side=storage.THUMBNAIL_SIDE
        )
    except (imaging.ImageError, OSError):
        logger.warning("Could not make the thumbnail of %s again.", original)
        return
    atomic.write_bytes(thumbnail, imaging.thumbnail_jpeg(decoded.image, storage.THUMBNAIL_SIDE))


def _move(source: Path, target: Path, moved: list[tuple[Path, Path]]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)
    moved.append((source, target))


def _user_id(pk) -> int | None:
    from django.contrib.auth import get_user_model

    return pk if pk and get_user_model().objects.filter(pk=pk).exists() else None


# --- Trash ----------------------------------------------------------------------------------------


def trash_retention_days() -> int:
    return int(getattr(settings, "TRASH_RETENTION_DAYS", DEFAULT_TRASH_RETENTION_DAYS))


def empty_trash(now: datetime | None = None) -> int:
    """Remove deleted images' files older than TRASH_RETENTION_DAYS; returns how many deletions went."""
    root = Path(settings.DATASETS_DIR)
    if not root.is_dir():
        return 0
    cutoff = ((now or timezone.now()) - timedelta(days=trash_retention_days())).timestamp()
    removed = 0
    for folder in sorted(root.iterdir()):
        if folder.name.isdigit() and folder.is_dir():
            for trash in storage.old_trash(folder, cutoff):
                storage.delete_folder(trash)
                removed += 1
    return removed


# --- The images behind a confusion cell ----------------------------------------------------------


def cell_order(
    outcome: SplitOutcome, *, truth: int | None = None, predicted: int | None = None, missed: bool = False
) -> list[int]:
    """Rows of `outcome` in a cell (true `truth`, answered `predicted`; None: any), largest mistakes first.

    `missed`: the images of `truth` answered as anything else. Wrong answers come first, the most
    confident first (the model was surest, the label is most likely wrong); right answers follow,
    the least confident first (the model nearly got them wrong).
    """
    answered = outcome.predicted
    keep = np.ones(len(outcome.image_ids), dtype=bool)
    if truth is not None:
        keep &= outcome.truth == truth
    if predicted is not None:
        keep &= answered == predicted
    if missed:
        keep &= answered != outcome.truth
    rows = np.flatnonzero(keep)
    correct = answered[rows] == outcome.truth[rows]
    confidence = outcome.confidence[rows].astype(np.float64)
    order = np.lexsort((outcome.image_ids[rows], np.where(correct, confidence, -confidence), correct))
    return [int(row) for row in rows[order]]


# --- Words -----------------------------------------------------------------------------------------


def describe(change: ImageChange) -> str:
    """What the change did, for the history: "moved from “cats” to “dogs”"."""
    before, after = change.before, change.after
    if change.action == Action.MOVE:
        return f"moved from “{before.get('label_name', '?')}” to “{after.get('label_name', '?')}”"
    if change.action == Action.SPLIT:
        return f"moved from {before.get('split', '?')} to {after.get('split', '?')}"
    if change.action == Action.DELETE:
        return f"deleted from “{before.get('label_name', '?')}”"
    if change.action == Action.ADD:
        return f"added to “{after.get('label_name', '?')}”"
    return change.get_action_display()


def _when(moment: datetime) -> str:
    return date_format(timezone.localtime(moment), "j M Y, H:i")
