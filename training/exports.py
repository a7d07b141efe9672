"""A dataset as a zip in the import layout, plus the manifest that makes the round trip exact."""

from __future__ import annotations

from collections.abc import Iterator

from django.utils import timezone
from django.utils.text import slugify

from training import archives
from training.models import Dataset


def manifest(dataset: Dataset) -> dict:
    """Splits and descriptions: importing the export into an empty dataset gives the same dataset."""
    return {
        "format": 1,
        "exported_at": timezone.now().isoformat(),
        "dataset": {
            "name": dataset.name,
            "description": dataset.description,
            "validation_percent": dataset.validation_percent,
            "test_percent": dataset.test_percent,
            "split_seed": dataset.split_seed,
        },
        "labels": dict(dataset.labels.values_list("name", "description")),
        "splits": dict(dataset.images.values_list("sha256", "split")),
    }


def _items(dataset: Dataset) -> Iterator[archives.ExportItem]:
    rows = dataset.images.select_related("label").order_by("label__name", "id")
    for image in rows.iterator(chunk_size=500):
        yield archives.ExportItem(
            label=image.label.name,
            original_name=image.original_name,
            sha256=image.sha256,
            format=image.format,
            path=image.path,
        )


def stream(dataset: Dataset) -> Iterator[bytes]:
    """The export zip, chunk by chunk, for a StreamingHttpResponse."""
    return archives.iter_export(_items(dataset), manifest(dataset))


def filename(dataset: Dataset) -> str:
    return f"{slugify(dataset.name) or 'dataset'}-{timezone.now():%Y%m%d}.zip"
