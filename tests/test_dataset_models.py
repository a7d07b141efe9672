"""Dataset rows: the database constraints hold even without forms, files follow rows, warnings."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import IntegrityError, transaction

from tests.helpers import noise_image_bytes
from training import readiness, uploads
from training.models import Dataset, DatasetImage, ImportJob, Label

pytestmark = pytest.mark.django_db


def image_row(dataset: Dataset, label: Label, sha: str = "a" * 64, **fields) -> DatasetImage:
    defaults = {"original_name": "x.png", "format": "PNG", "width": 1, "height": 1}
    return DatasetImage.objects.create(dataset=dataset, label=label, sha256=sha, **{**defaults, **fields})


def test_dataset_names_are_unique_whatever_the_case(alice):
    Dataset.objects.create(name="Pets")
    with transaction.atomic(), pytest.raises(IntegrityError, match="dataset_name_unique_ci"):
        Dataset.objects.create(name="PETS")
    with pytest.raises(ValidationError, match="A dataset with this name already exists"):
        Dataset(name="pets").full_clean()


@pytest.mark.parametrize("name", ["", " padded "])
def test_blank_or_padded_dataset_names_are_refused_by_the_database(name):
    with transaction.atomic(), pytest.raises(IntegrityError, match="dataset_name_not_blank"):
        Dataset.objects.create(name=name)


def test_shares_leaving_nothing_to_train_are_refused_by_the_database():
    with transaction.atomic(), pytest.raises(IntegrityError, match="dataset_shares_leave_training"):
        Dataset.objects.create(name="X", validation_percent=50, test_percent=45)


def test_label_names_are_unique_within_a_dataset_whatever_the_case():
    pets, birds = Dataset.objects.create(name="Pets"), Dataset.objects.create(name="Birds")
    Label.objects.create(dataset=pets, name="cats")
    Label.objects.create(dataset=birds, name="cats")  # another dataset may use the name
    with transaction.atomic(), pytest.raises(IntegrityError, match="label_name_unique_in_dataset_ci"):
        Label.objects.create(dataset=pets, name="Cats")
    with pytest.raises(ValidationError, match="already has a label with this name"):
        Label(dataset=pets, name=" CATS ").full_clean()


@pytest.mark.parametrize("name", ["", " cats", "cats "])
def test_blank_or_padded_label_names_are_refused_by_the_database(name):
    pets = Dataset.objects.create(name="Pets")
    with transaction.atomic(), pytest.raises(IntegrityError, match="label_name_not_blank"):
        Label.objects.create(dataset=pets, name=name)


def test_label_clean_applies_the_label_name_rule():
    pets = Dataset.objects.create(name="Pets")
    label = Label(dataset=pets, name="a/b")
    with pytest.raises(ValidationError, match="cannot contain /"):
        label.full_clean()


def test_same_picture_is_stored_once_per_dataset_but_may_be_in_two_datasets():
    pets, birds = Dataset.objects.create(name="Pets"), Dataset.objects.create(name="Birds")
    cats, dogs = Label.objects.create(dataset=pets, name="cats"), Label.objects.create(dataset=pets, name="dogs")
    image_row(pets, cats)
    image_row(birds, Label.objects.create(dataset=birds, name="owls"))
    # SQLite names the columns of a field-based unique constraint, PostgreSQL its name.
    with transaction.atomic(), pytest.raises(IntegrityError, match=r"image_sha256_unique_in_dataset|sha256"):
        image_row(pets, dogs)  # same hash, other label: still the same picture


def test_split_outside_the_choices_is_refused_by_the_database():
    pets = Dataset.objects.create(name="Pets")
    with transaction.atomic(), pytest.raises(IntegrityError, match="image_split_valid"):
        image_row(pets, Label.objects.create(dataset=pets, name="cats"), split="holdout")


def test_image_label_must_belong_to_the_same_dataset():
    pets, birds = Dataset.objects.create(name="Pets"), Dataset.objects.create(name="Birds")
    image = DatasetImage(dataset=pets, label=Label.objects.create(dataset=birds, name="owls"), sha256="b" * 64,
                         original_name="x", format="PNG", width=1, height=1)  # fmt: skip
    with pytest.raises(ValidationError, match=r"Choose a label of the same dataset\."):
        image.full_clean()


def test_one_active_import_per_dataset():
    pets = Dataset.objects.create(name="Pets")
    ImportJob.objects.create(dataset=pets, archive_name="a.zip")
    with transaction.atomic(), pytest.raises(IntegrityError, match=r"import_one_active_per_dataset|dataset_id"):
        ImportJob.objects.create(dataset=pets, archive_name="b.zip", status=ImportJob.Status.RUNNING)
    ImportJob.objects.create(dataset=pets, archive_name="old.zip", status=ImportJob.Status.FAILED)


def test_import_progress_cannot_exceed_its_total():
    pets = Dataset.objects.create(name="Pets")
    with transaction.atomic(), pytest.raises(IntegrityError, match="import_done_within_total"):
        ImportJob.objects.create(dataset=pets, archive_name="a.zip", total=2, done=3)


def test_deleting_images_in_bulk_deletes_their_files(alice, django_capture_on_commit_callbacks):
    pets = Dataset.objects.create(name="Pets", created_by=alice)
    uploads.add_uploads(pets, "cats", [SimpleUploadedFile(f"{i}.png", noise_image_bytes(i)) for i in range(3)], alice)
    paths = [p for image in pets.images.all() for p in (image.path, image.thumbnail_path)]
    assert all(p.exists() for p in paths)
    with django_capture_on_commit_callbacks(execute=True):
        DatasetImage.objects.all().delete()
    assert not any(p.exists() for p in paths)


def test_files_stay_when_the_delete_is_rolled_back(alice, django_capture_on_commit_callbacks):
    pets = Dataset.objects.create(name="Pets", created_by=alice)
    uploads.add_uploads(pets, "cats", [SimpleUploadedFile("a.png", noise_image_bytes(1))], alice)
    image = pets.images.get()
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError), transaction.atomic():
        image.delete()
        raise RuntimeError("changed my mind")
    assert image.path.exists()


def test_redraw_keeps_stratification_and_snapshot_lists_every_image(alice):
    pets = Dataset.objects.create(name="Pets", created_by=alice)
    uploads.add_uploads(pets, "cats", [SimpleUploadedFile(f"{i}.png", noise_image_bytes(i)) for i in range(10)], alice)
    uploads.add_uploads(
        pets, "dogs", [SimpleUploadedFile(f"{i}.png", noise_image_bytes(50 + i)) for i in range(5)], alice
    )
    sizes = pets.redraw_splits(seed=9)
    assert sizes == {"train": 12, "validation": 3, "test": 0}
    assert pets.split_counts()[pets.labels.get(name="dogs").pk]["validation"] == 1
    snapshot = pets.snapshot()
    assert len(snapshot["images"]) == 15 and {row[2] for row in snapshot["images"]} == {"train", "validation"}
    assert [name for _, name in snapshot["labels"]] == sorted(name for _, name in snapshot["labels"])
    assert pets.split_seed == 9


def test_permission_rules_for_changing_a_dataset(alice, bob, staff, django_user_model):
    pets = Dataset.objects.create(name="Pets", created_by=alice)
    assert pets.can_be_changed_by(alice) and pets.can_be_changed_by(staff)
    assert not pets.can_be_changed_by(bob)
    former = Dataset.objects.create(name="Bob's", created_by=bob)  # bob has no 'add dataset' permission
    assert not former.can_be_changed_by(bob)
    assert Dataset.can_create(alice) and not Dataset.can_create(bob) and Dataset.can_create(staff)


# --- Warnings before training ----------------------------------------------------------------


def test_warnings_for_an_empty_dataset():
    assert readiness.warnings({}, validation_percent=20) == [
        "The dataset has no images yet: add at least two labels with images before training."
    ]


def test_no_warning_for_a_balanced_dataset():
    counts = {"cats": {"train": 16, "validation": 4}, "dogs": {"train": 12, "validation": 3}}
    assert readiness.warnings(counts, validation_percent=20) == []


def test_warnings_for_small_empty_and_unbalanced_labels():
    counts = {
        "cats": {"train": 80, "validation": 20},
        "dogs": {"train": 8, "validation": 2},
        "owls": {"train": 2, "validation": 0},
        "bats": {},
    }
    found = readiness.warnings(counts, validation_percent=20)
    assert "Label “bats” has no images: add some or delete the label." in found
    assert "Label “owls” has 2 images: too few for a validation split. Add images until it has at least 10." in found
    assert not any("“dogs” has 10" in w for w in found)
    assert any(w.startswith("The labels are unbalanced: “cats” has 100 images, “owls” only 2 (50×).") for w in found)
