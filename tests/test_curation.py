"""training.curation: people's changes to dataset images, each recorded and undoable."""

from __future__ import annotations

import os
import time
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from tests.training_helpers import TRAIN_BASE, colour_dataset, colour_png
from training import curation, jobs, storage, trainer, uploads
from training.models import DatasetImage, ImageChange, Label

pytestmark = pytest.mark.django_db


@pytest.fixture
def colours(alice):
    return colour_dataset(alice, per_label=4, validation=25)


def _label(dataset, name: str) -> Label:
    return dataset.labels.get(name=name)


def _images(dataset, name: str) -> list[DatasetImage]:
    return list(dataset.images.filter(label__name=name).order_by("id"))


def test_moving_images_records_each_change_and_undo_puts_them_back(colours, alice):
    red = _images(colours, "red")[:2]
    blue = _label(colours, "blue")

    changes = curation.move_images(red, blue, alice, reason="job 3: confusion red → blue")

    assert [image.label_id for image in red] == [blue.pk, blue.pk]  # the caller's copies follow
    assert set(colours.images.filter(pk__in=[i.pk for i in red]).values_list("label__name", flat=True)) == {"blue"}
    assert len(changes) == 2 and changes[0].batch == changes[1].batch
    change = ImageChange.objects.get(pk=changes[0].pk)
    assert change.action == "move" and change.changed_by == alice and change.reason.startswith("job 3")
    assert change.before == {"label": _label(colours, "red").pk, "label_name": "red"}
    assert change.after == {"label": blue.pk, "label_name": "blue"}
    assert curation.describe(change) == "moved from “red” to “blue”"

    curation.undo(change, alice)

    change.refresh_from_db()
    assert change.undone_at is not None and change.undone_by == alice
    assert DatasetImage.objects.get(pk=red[0].pk).label.name == "red"
    assert DatasetImage.objects.get(pk=red[1].pk).label.name == "blue"  # only that change was undone


def test_images_already_in_the_target_state_give_no_change(colours, alice):
    red = _images(colours, "red")
    assert curation.move_images(red, _label(colours, "red"), alice) == []
    assert curation.set_excluded(red, False, alice) == []
    assert curation.change_split(red[:1], red[0].split, alice) == []
    assert not ImageChange.objects.exists()


def test_a_label_of_another_dataset_is_refused(colours, alice):
    other = colour_dataset(alice, name="Other", per_label=1)
    with pytest.raises(ValueError, match="another dataset"):
        curation.move_images(_images(colours, "red"), _label(other, "blue"), alice)
    with pytest.raises(ValueError, match="no split"):
        curation.change_split(_images(colours, "red"), "holdout", alice)
    assert not ImageChange.objects.exists()


def test_changing_the_split_and_undoing_it(colours, alice):
    image = _images(colours, "green")[0]
    target = "validation" if image.split == "train" else "train"
    (change,) = curation.change_split([image], target, alice)
    assert DatasetImage.objects.get(pk=image.pk).split == target
    assert curation.describe(change) == f"moved from {change.before['split']} to {target}"
    curation.undo(change, alice)
    assert DatasetImage.objects.get(pk=image.pk).split == change.before["split"]


def test_excluding_and_including_again_are_both_recorded_and_undoable(colours, alice):
    image = _images(colours, "green")[0]
    (excluded,) = curation.set_excluded([image], True, alice)
    assert DatasetImage.objects.get(pk=image.pk).excluded
    (included,) = curation.set_excluded([image], False, alice)
    assert (excluded.action, included.action) == ("exclude", "include")

    curation.undo(included, alice)
    assert DatasetImage.objects.get(pk=image.pk).excluded
    curation.undo(excluded, alice)
    assert not DatasetImage.objects.get(pk=image.pk).excluded


def test_changes_touch_the_datasets_last_change(colours, alice):
    before = colours.updated_at
    time.sleep(0.01)
    curation.set_excluded(_images(colours, "red")[:1], True, alice)
    colours.refresh_from_db()
    assert colours.updated_at > before


def test_deleting_moves_the_files_to_the_trash_and_undo_restores_row_and_files(
    colours, alice, django_capture_on_commit_callbacks
):
    image = _images(colours, "red")[0]
    original, thumbnail = image.path, image.thumbnail_path
    content = original.read_bytes()
    fields = {f: getattr(image, f) for f in ("pk", "sha256", "original_name", "label_id", "split", "format", "width")}

    with django_capture_on_commit_callbacks(execute=True):
        (change,) = curation.delete_images([image], alice, reason="blurry")

    assert not DatasetImage.objects.filter(pk=image.pk).exists()
    assert not original.exists() and not thumbnail.exists()  # the row's signal found nothing to delete
    trash = storage.trash_folder(colours.folder, change.before["trash"])
    assert sorted(p.name for p in trash.iterdir()) == ["original.png", "thumbnail.jpg"]
    change.refresh_from_db()
    assert change.image is None and change.sha256 == image.sha256 and change.before["label_name"] == "red"

    curation.undo(change, alice)

    restored = DatasetImage.objects.get(sha256=image.sha256)
    assert {f: getattr(restored, f) for f in fields} == fields  # the same id, label, split, name
    assert original.read_bytes() == content and thumbnail.exists()
    assert not trash.exists()
    change.refresh_from_db()
    assert change.image == restored and change.undone_by == alice


def test_a_failed_delete_keeps_rows_and_files(colours, alice, django_capture_on_commit_callbacks, monkeypatch):
    image = _images(colours, "red")[0]
    monkeypatch.setattr(ImageChange.objects, "bulk_create", lambda rows: (_ for _ in ()).throw(RuntimeError("db")))
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError):
        curation.delete_images([image], alice)
    assert DatasetImage.objects.filter(pk=image.pk).exists() and image.path.exists()


def test_undoing_a_deletion_whose_label_was_deleted_adds_the_label_again(
    colours, alice, django_capture_on_commit_callbacks
):
    image = _images(colours, "red")[0]
    with django_capture_on_commit_callbacks(execute=True):
        (change,) = curation.delete_images([image], alice)
        _label(colours, "red").delete()
    assert curation.label_is_gone(change)

    curation.undo(change, alice)

    restored = DatasetImage.objects.get(sha256=image.sha256)
    assert restored.label.name == "red" and restored.label.images.count() == 1


def test_undoing_a_deletion_of_a_picture_added_again_says_so(colours, alice, django_capture_on_commit_callbacks):
    image = _images(colours, "red")[0]
    with django_capture_on_commit_callbacks(execute=True):
        (change,) = curation.delete_images([image], alice)
    again = SimpleUploadedFile("again.png", image_bytes := colour_png(0, 0))
    assert storage.sha256(image_bytes) == image.sha256
    uploads.add_uploads(colours, "blue", [again], alice)

    with pytest.raises(curation.CannotUndo, match=r"is in the dataset again.*“again\.png” in “blue”"):
        curation.undo(change, alice)
    change.refresh_from_db()
    assert change.undone_at is None  # refused: nothing recorded


def test_undoing_a_deletion_after_the_trash_was_emptied_says_the_files_are_gone(
    colours, alice, settings, django_capture_on_commit_callbacks
):
    settings.TRASH_RETENTION_DAYS = 30
    image = _images(colours, "red")[0]
    with django_capture_on_commit_callbacks(execute=True):
        (change,) = curation.delete_images([image], alice)
    trash = storage.trash_folder(colours.folder, change.before["trash"])
    assert curation.empty_trash() == 0 and trash.exists()  # young trash stays
    old = time.time() - timedelta(days=31).total_seconds()
    os.utime(trash, (old, old))

    assert curation.empty_trash() == 1 and not trash.exists()
    with pytest.raises(curation.CannotUndo, match=r"files of .* are gone: deleted images are kept 30 days"):
        curation.undo(change, alice)
    assert not DatasetImage.objects.filter(sha256=image.sha256).exists()


def test_undo_refuses_while_a_later_change_of_the_same_image_stands(colours, alice):
    image = _images(colours, "red")[0]
    (moved,) = curation.move_images([image], _label(colours, "blue"), alice)
    (excluded,) = curation.set_excluded([image], True, alice)

    with pytest.raises(curation.CannotUndo, match=r"changed again later: excluded from training by alice .*Undo the"):
        curation.undo(moved, alice)
    assert DatasetImage.objects.get(pk=image.pk).label.name == "blue"

    curation.undo(excluded, alice)
    curation.undo(moved, alice)  # now it can
    assert DatasetImage.objects.get(pk=image.pk).label.name == "red"


def test_a_change_is_undone_once(colours, alice, bob):
    (change,) = curation.set_excluded(_images(colours, "red")[:1], True, alice)
    curation.undo(change, bob)
    with pytest.raises(curation.CannotUndo, match="already undone by bob"):
        curation.undo(ImageChange.objects.get(pk=change.pk), alice)


def test_a_batch_is_undone_together_or_not_at_all(colours, alice, django_capture_on_commit_callbacks):
    red = _images(colours, "red")
    with django_capture_on_commit_callbacks(execute=True):
        changes = curation.delete_images(red[:3], alice)
    batch = changes[0].batch
    assert {c.batch for c in changes} == {batch}

    undone = curation.undo_batch(colours, batch, alice)

    assert len(undone) == 3
    assert colours.images.filter(pk__in=[i.pk for i in red[:3]]).count() == 3
    assert all(DatasetImage.objects.get(pk=i.pk).path.exists() for i in red[:3])
    with pytest.raises(curation.CannotUndo, match="already undone"):
        curation.undo_batch(colours, batch, alice)


def test_a_refused_batch_undo_leaves_every_file_in_the_trash(colours, alice, django_capture_on_commit_callbacks):
    red = _images(colours, "red")
    with django_capture_on_commit_callbacks(execute=True):
        changes = curation.delete_images(red[:2], alice)
    uploads.add_uploads(colours, "blue", [SimpleUploadedFile("again.png", colour_png(0, 0))], alice)  # red[0] again

    with pytest.raises(curation.CannotUndo, match="in the dataset again"):
        curation.undo_batch(colours, changes[0].batch, alice)

    assert not colours.images.filter(pk=red[1].pk).exists()
    for change in changes:
        trash = storage.trash_folder(colours.folder, change.before["trash"])
        assert (trash / "original.png").exists()
    assert not ImageChange.objects.filter(undone_at__isnull=False).exists()


def test_recording_an_added_image_and_undoing_it_deletes_the_image(colours, alice, django_capture_on_commit_callbacks):
    image = _images(colours, "red")[0]
    change = curation.record_added(image, alice, reason="review of a prediction")
    assert (change.action, change.after["label_name"]) == ("add", "red")
    with django_capture_on_commit_callbacks(execute=True):
        curation.undo(change, alice)
    assert not DatasetImage.objects.filter(pk=image.pk).exists() and not image.path.exists()


def test_excluded_images_are_not_in_a_jobs_snapshot(colours, alice, install_weights):
    install_weights(TRAIN_BASE, include_top=False)
    red = _images(colours, "red")
    curation.set_excluded(red[:2], True, alice)
    job = jobs.start_training(colours, TRAIN_BASE, trainer.TrainConfig(epochs=1), alice, enqueue=False)
    ids = {row[0] for row in job.snapshot["images"]}
    assert ids and not ids & {image.pk for image in red[:2]}
    assert {image.pk for image in red[2:]} <= ids


def test_a_label_whose_training_images_are_all_excluded_is_refused_for_training(colours, alice):
    train = colours.images.filter(label__name="red", split="train")
    curation.set_excluded(train, True, alice)
    problems = jobs.refusals(colours)
    assert any("“red” has no training image" in p for p in problems)


def test_changes_are_kept_newest_first_with_who_and_when(colours, alice):
    image = _images(colours, "red")[0]
    curation.set_excluded([image], True, alice)
    curation.set_excluded([image], False, alice)
    assert [c.action for c in colours.changes.all()] == ["include", "exclude"]
    assert all(c.created_at <= timezone.now() for c in colours.changes.all())


def test_the_daily_clean_up_empties_old_trash(colours, alice, django_capture_on_commit_callbacks):
    from classifier.tasks import expire_predictions

    with django_capture_on_commit_callbacks(execute=True):
        (change,) = curation.delete_images(_images(colours, "red")[:1], alice)
    trash = storage.trash_folder(colours.folder, change.before["trash"])
    old = time.time() - timedelta(days=31).total_seconds()
    os.utime(trash, (old, old))

    expire_predictions.call_local()

    assert not trash.exists()
