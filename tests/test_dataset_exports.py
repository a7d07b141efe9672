"""Exports of datasets whose labels were named before Windows-reserved names were refused."""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from tests.dataset_helpers import write
from tests.helpers import noise_image_bytes
from training import exports, imports, storage
from training.models import Dataset, DatasetImage, ImportJob, Label

pytestmark = pytest.mark.django_db


@pytest.fixture
def dataset(alice) -> Dataset:
    return Dataset.objects.create(name="Legacy", created_by=alice)


def add_image(dataset: Dataset, label: Label, seed: int) -> DatasetImage:
    stored = storage.ImageStore(dataset.folder, max_bytes=10**7, max_pixels=10**8).save(noise_image_bytes(seed))
    return DatasetImage.objects.create(
        dataset=dataset, label=label, sha256=stored.sha256, original_name=f"{seed}.png", format=stored.format,
        width=stored.width, height=stored.height, size_bytes=stored.size,
    )  # fmt: skip


def legacy_label(dataset: Dataset, name: str, description: str = "") -> Label:
    """A label saved before the rule existed: the row is written without `clean_label_name`."""
    return Label.objects.create(dataset=dataset, name=name, description=description)


def exported(dataset: Dataset) -> tuple[list[str], dict]:
    with zipfile.ZipFile(io.BytesIO(b"".join(exports.stream(dataset)))) as zf:
        names = zf.namelist()
        return [n for n in names if n != "transferlab.json"], json.loads(zf.read("transferlab.json"))


def test_legacy_labels_windows_cannot_extract_get_safe_folders_and_keep_their_names(dataset):
    add_image(dataset, legacy_label(dataset, "CON", "Console photos"), 1)
    add_image(dataset, legacy_label(dataset, "aux.txt"), 2)
    add_image(dataset, legacy_label(dataset, "cats."), 3)
    add_image(dataset, Label.objects.create(dataset=dataset, name="dogs"), 4)
    members, manifest = exported(dataset)
    assert sorted(m.split("/")[0] for m in members) == ["CON_", "aux_.txt", "cats", "dogs"]
    assert manifest["labels"] == {"CON": "Console photos", "aux.txt": "", "cats.": "", "dogs": ""}
    assert manifest["folders"] == {"CON_": "CON", "aux_.txt": "aux.txt", "cats": "cats."}


def test_a_safe_folder_never_merges_with_another_label(dataset):
    add_image(dataset, legacy_label(dataset, "con"), 1)
    add_image(dataset, Label.objects.create(dataset=dataset, name="CON_"), 2)
    add_image(dataset, legacy_label(dataset, "dogs."), 3)
    add_image(dataset, Label.objects.create(dataset=dataset, name="Dogs"), 4)
    members, manifest = exported(dataset)
    folders = sorted({m.split("/")[0] for m in members})
    assert len(folders) == 4 and len({f.casefold() for f in folders}) == 4
    assert "CON_" in folders and "Dogs" in folders
    assert set(manifest["folders"].values()) == {"con", "dogs."}


def test_an_export_with_safe_folders_imports_back_under_the_folder_names(dataset, alice):
    add_image(dataset, legacy_label(dataset, "CON", "Console photos"), 1)
    legacy_label(dataset, "PRN", "Printers (no images yet)")
    add_image(dataset, Label.objects.create(dataset=dataset, name="dogs"), 2)
    data = b"".join(exports.stream(dataset))

    copy = Dataset.objects.create(name="Copy", created_by=alice)
    path = write(imports.archives_dir() / "legacy.zip", data)
    job = ImportJob.objects.create(dataset=copy, archive_name="legacy.zip", archive_path=str(path))
    imports.run_import_job(job.pk)
    job.refresh_from_db()
    assert job.status == ImportJob.Status.SUCCEEDED, job.message
    assert dict(copy.labels.values_list("name", "description")) == {
        "CON_": "Console photos",
        "PRN_": "Printers (no images yet)",
        "dogs": "",
    }
    assert sorted(copy.images.values_list("label__name", flat=True)) == ["CON_", "dogs"]
