"""A dataset as a zip in the import layout, plus the manifest that makes the round trip exact."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from django.utils import timezone
from django.utils.text import slugify

from training import archives
from training.models import Dataset
from training.names import label_key, safe_folder_name, windows_problem


def folder_names(names: Iterable[str]) -> dict[str, str]:
    """Label name -> its folder in the export: the name itself, unless Windows cannot create it.

    Labels saved before such names were refused (CON, aux.txt, a trailing dot) get a safe folder
    (`names.safe_folder_name`), made unique so that it never merges with another label's folder on
    a case-insensitive file system ("CON_-2" when "CON_" is taken).
    """
    names = list(names)
    folders = {name: name for name in names if windows_problem(name) is None}
    used = {label_key(name) for name in folders}
    for name in names:
        if name in folders:
            continue
        base = folder = safe_folder_name(name)
        n = 2
        while label_key(folder) in used:
            folder, n = f"{base}-{n}", n + 1
        used.add(label_key(folder))
        folders[name] = folder
    return folders


def manifest(dataset: Dataset, folders: dict[str, str] | None = None) -> dict:
    """Splits and descriptions: importing the export into an empty dataset gives the same dataset.

    `labels` keeps the real names; `folders` says which folder holds a label whose name Windows
    cannot create (the import names that label after its folder, with the real name's description).
    """
    labels = dict(dataset.labels.values_list("name", "description"))
    folders = folders if folders is not None else folder_names(labels)
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
        "labels": labels,
        "folders": {folder: name for name, folder in folders.items() if folder != name},
        "splits": dict(dataset.images.values_list("sha256", "split")),
    }


def _items(dataset: Dataset, folders: dict[str, str]) -> Iterator[archives.ExportItem]:
    rows = dataset.images.select_related("label").order_by("label__name", "id")
    for image in rows.iterator(chunk_size=500):
        yield archives.ExportItem(
            label=folders.get(image.label.name, image.label.name),
            original_name=image.original_name,
            sha256=image.sha256,
            format=image.format,
            path=image.path,
        )


def stream(dataset: Dataset) -> Iterator[bytes]:
    """The export zip, chunk by chunk, for a StreamingHttpResponse."""
    folders = folder_names(dataset.labels.values_list("name", flat=True))
    return archives.iter_export(_items(dataset, folders), manifest(dataset, folders))


def filename(dataset: Dataset) -> str:
    return f"{slugify(dataset.name) or 'dataset'}-{timezone.now():%Y%m%d}.zip"
