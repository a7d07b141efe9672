"""Pretrained weights files in WEIGHTS_DIR: find them, import and verify them, download on request.

No Django: callers pass the weights folder. Files keep Keras's own names, so a folder copied from
`~/.keras/models` on another machine works as is. Nothing here reaches the network unless
`download` is called, which only happens when an administrator asks for it.
"""

from __future__ import annotations

import gc
import hashlib
import os
import shutil
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

from classifier import zoo
from classifier.zoo import WeightsFile, ZooModel


class WeightsError(Exception):
    """A weights file that cannot be installed; str(error) says why and what to do."""


@dataclass(frozen=True)
class Installed:
    """The outcome of an import or download: which entry the file belongs to and where it is now."""

    model: ZooModel
    include_top: bool
    path: Path
    hash_checked: bool


def installed_path(model: ZooModel, weights_dir: Path, include_top: bool = True) -> Path | None:
    """The installed file for this model (with or without its ImageNet head), or None."""
    wf = model.weights_file(include_top)
    if wf is None:
        return None
    path = Path(weights_dir) / wf.filename
    return path if path.is_file() else None


def missing_message(model: ZooModel, include_top: bool = True) -> str:
    """What an administrator needs to know to install the missing file, offline or not."""
    wf = model.weights_file(include_top)
    if wf is None:
        return f"Keras publishes no {'' if include_top else 'feature-extractor '}weights for {model.name}."
    return (
        f"The weights file {wf.filename} is not installed. Download it from {wf.url} (on any machine "
        f"with internet access) and install it with `python manage.py import_weights {wf.filename}` "
        "or the upload form on the Models page."
    )


def file_hashes(path: Path) -> dict[str, str]:
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            md5.update(chunk)
            sha256.update(chunk)
    return {"md5": md5.hexdigest(), "sha256": sha256.hexdigest()}


def find_by_filename(filename: str) -> tuple[ZooModel, bool] | None:
    """The entry (and whether it is the with-top file) that publishes a file of this exact name."""
    name = Path(filename).name
    for model in zoo.MODELS.values():
        for include_top, wf in ((True, model.top), (False, model.notop)):
            if wf is not None and wf.filename == name:
                return model, include_top
    return None


def _check_hdf5(path: Path) -> None:
    import h5py

    if not h5py.is_hdf5(path):
        raise WeightsError("This file is not an HDF5 weights file (.h5). Keras application weights are HDF5 files.")
    try:
        with h5py.File(path, "r") as f:
            if "layer_names" not in f.attrs:
                raise WeightsError(
                    "This HDF5 file does not hold Keras application weights (it has no layer list). "
                    "Use the published file, for example mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5."
                )
    except OSError:
        raise WeightsError("This HDF5 file is damaged and cannot be read.") from None


def _check_hash(path: Path, wf: WeightsFile) -> bool:
    if not wf.file_hash:
        return False
    algorithm = "sha256" if len(wf.file_hash) == 64 else "md5"
    actual = file_hashes(path)[algorithm]
    if actual != wf.file_hash.lower():
        raise WeightsError(
            f"This file's {algorithm} is {actual}, but the published {wf.filename} has {wf.file_hash}: "
            "it is damaged, incomplete or a different file. Download it again."
        )
    return True


def verify_loads(path: Path, model: ZooModel, include_top: bool) -> None:
    """Build the architecture and load the file into it: the proof a file really fits."""
    try:
        keras_model = model.build(weights=path, include_top=include_top)
    except (ValueError, KeyError, OSError, IndexError, TypeError) as exc:
        kind = "with" if include_top else "without"
        raise WeightsError(
            f"This file does not fit {model.name} ({kind} its ImageNet head): {_first_line(exc)}"
        ) from None
    del keras_model
    gc.collect()


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else exc.__class__.__name__


def import_file(
    source: Path,
    weights_dir: Path,
    *,
    model: ZooModel | None = None,
    include_top: bool | None = None,
    original_name: str | None = None,
) -> Installed:
    """Check a weights file and install it under its published name; the source is left as it was.

    Which entry it belongs to comes from `model` when the admin says, else from its file name.
    The file is copied next to its destination, verified there and renamed into place, so a
    failed import never leaves a half-written or unverified file where the engine looks.
    """
    source = Path(source)
    name = original_name or source.name
    if not source.is_file() or source.stat().st_size == 0:
        raise WeightsError(f"{name} is empty or missing.")
    _check_hdf5(source)
    if model is None:
        found = find_by_filename(name)
        if found is None:
            raise WeightsError(
                f"TransferLab cannot tell which model {name} belongs to: its name is not one Keras publishes. "
                "Say which model it is (import_weights --model KEY) or keep the published file name."
            )
        model, top_from_name = found
        include_top = top_from_name if include_top is None else include_top
    elif include_top is None:
        found = find_by_filename(name)
        include_top = found[1] if found and found[0].key == model.key else True
    wf = model.weights_file(include_top)
    if wf is None:
        raise WeightsError(f"Keras publishes no weights for {model.name} without its head.")
    hash_checked = _check_hash(source, wf)

    weights_dir = Path(weights_dir)
    weights_dir.mkdir(parents=True, exist_ok=True)
    staging = weights_dir / f".incoming-{uuid.uuid4().hex}-{wf.filename}"
    try:
        shutil.copyfile(source, staging)
        verify_loads(staging, model, include_top)
        final = weights_dir / wf.filename
        os.replace(staging, final)
    finally:
        staging.unlink(missing_ok=True)
    return Installed(model=model, include_top=include_top, path=final, hash_checked=hash_checked)


def download(model: ZooModel, weights_dir: Path, *, include_top: bool = True, timeout: float = 30) -> Installed:
    """Fetch the published file through Keras's own download path (official URL, hash checked).

    Only called when an administrator asks. A machine without internet access fails within
    `timeout` seconds with a message that says how to install the file by hand.
    """
    from keras.utils import get_file

    wf = model.weights_file(include_top)
    if wf is None:
        raise WeightsError(f"Keras publishes no weights for {model.name} without its head.")
    weights_dir = Path(weights_dir)
    weights_dir.mkdir(parents=True, exist_ok=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        fetched = get_file(
            f".download-{wf.filename}", wf.url, file_hash=wf.file_hash, cache_dir=str(weights_dir), cache_subdir="."
        )
    except Exception as exc:
        raise WeightsError(
            f"Could not download {wf.filename} from {wf.url} ({_first_line(exc)}). If this server has no "
            "internet access, download the file on another machine and import it."
        ) from None
    finally:
        socket.setdefaulttimeout(previous)
    try:
        return import_file(Path(fetched), weights_dir, model=model, include_top=include_top, original_name=wf.filename)
    finally:
        Path(fetched).unlink(missing_ok=True)
