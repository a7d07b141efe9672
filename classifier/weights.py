"""Pretrained weights files in WEIGHTS_DIR: find them, recognise, import and verify them, download on request.

No Django: callers pass the weights folder. Files keep Keras's own names, so a folder copied from
`~/.keras/models` on another machine works as is. Nothing here reaches the network unless
`download` is called, which only happens when an administrator asks for it.

How a file is recognised: by its published name when it has one, else by its content. A file's
layers and shapes (see `layouts`) match the counted layout of exactly one architecture, with or
without its head; entries that differ only in input size (MobileNet at 128-224 pixels) share
shapes, so for those the name or the administrator has to say which one. Refusals describe what
the file looks like, so the administrator can tell a fine-tuned model from a truncated download.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import shutil
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from classifier import zoo
from classifier.layouts import Layout, LayoutError, read_layout
from classifier.zoo import WeightsFile, ZooModel
from webapp import atomic

log = logging.getLogger(__name__)
IMAGENET_CLASSES = 1000


class WeightsError(Exception):
    """A weights file that cannot be installed; str(error) says why and what to do."""


@dataclass(frozen=True)
class Installed:
    """The outcome of an import or download: which entry the file belongs to and where it is now."""

    model: ZooModel
    include_top: bool
    path: Path
    hash_checked: bool
    replaced: bool = False  # a different file was installed under this name before: warm copies are stale
    unchanged: bool = False  # the very same bytes were installed already: nothing was written

    def describe(self) -> str:
        if self.unchanged:
            return (
                f"{self.path.name} was already installed for {self.model.name} {head_words(self.include_top)}: "
                "this file is the same, so nothing changed."
            )
        head = head_words(self.include_top) + ("" if self.include_top else ", as a feature extractor")
        check = (
            f"its {self.model.weights_file(self.include_top).hash_algorithm} matches the published file"
            if self.hash_checked
            else "Keras publishes no hash for it, so it was checked by loading it"
        )
        verb = "Replaced" if self.replaced else "Installed"
        return f"{verb} {self.path.name} for {self.model.name} {head}; {check}."


def head_words(include_top: bool) -> str:
    return "with its ImageNet head" if include_top else "without its head"


def installed_filenames(weights_dir: Path) -> set[str]:
    """Names of the files in the weights folder: one listing answers for every model of a page.

    Raises OSError when the folder exists but cannot be read; a missing folder holds nothing.
    """
    folder = Path(weights_dir)
    if not folder.exists():
        return set()
    return {entry.name for entry in folder.iterdir() if entry.is_file()}


def installed_path(model: ZooModel, weights_dir: Path, include_top: bool = True) -> Path | None:
    """The installed file for this model (with or without its ImageNet head), or None."""
    wf = model.weights_file(include_top)
    if wf is None:
        return None
    path = Path(weights_dir) / wf.filename
    return path if path.is_file() else None


def import_command(model: ZooModel, include_top: bool = True) -> str:
    wf = model.weights_file(include_top)
    return f".venv/bin/python manage.py import_weights {wf.filename}" if wf else ""  # as `make run` installs


def missing_message(model: ZooModel, include_top: bool = True) -> str:
    """What an administrator needs to know to install the missing file, offline or not."""
    wf = model.weights_file(include_top)
    if wf is None:
        return f"Keras publishes no {'' if include_top else 'feature-extractor '}weights for {model.name}."
    return (
        f"The weights file {wf.filename} is not installed. Download it from {wf.url} (on any machine "
        f"with internet access) and install it with the command “{import_command(model, include_top)}” "
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
    """The entry (and whether it is the with-top file) that publishes a file of this exact name.

    Both Keras's cache name and the URL's own name count ("nasnet_mobile.h5", "NASNet-mobile.h5").
    """
    name = Path(filename).name
    for model in zoo.MODELS.values():
        for include_top, wf in ((True, model.top), (False, model.notop)):
            if wf is not None and name in (wf.filename, wf.url_name):
                return model, include_top
    return None


# --- Recognition by content -------------------------------------------------------------------
def layout_matches(layout: Layout) -> list[tuple[ZooModel, bool]]:
    """Every (entry, with head?) whose published file has exactly this file's layers and shapes."""
    found = []
    for model in zoo.all_models():
        for include_top in (True, False):
            known = model.layout(include_top)
            if known and known["digest"] == layout.digest:
                found.append((model, include_top))
    return found


def describe(layout: Layout, *, compare: bool = True) -> str:
    """What a weights file looks like, in words an administrator can act on.

    With `compare`, a file that fits no entry is also compared with the zoo's layer counts.
    """
    if not layout.layers:
        return "It is a Keras weights file without any weights in it."
    first, last = layout.layers[0].name, layout.layers[-1].name
    classes = layout.head_classes
    if classes == IMAGENET_CLASSES:
        head = "ending in a 1000-class head (ImageNet's size)"
    elif classes:
        head = (
            f"ending in a {classes}-class head, not ImageNet's 1000 classes: it looks like a model fine-tuned "
            "for other classes rather than published ImageNet weights"
        )
    else:
        head = "without a classification head (a feature extractor)"
    text = (
        f"It holds Keras weights for {len(layout.layers)} layers ({layout.parameters / 1e6:.2f} million "
        f"parameters), from '{first}' to '{last}', {head}"
    )
    if layout.keras_version:
        text += f", saved by Keras {layout.keras_version}"
    if layout.whole_model:
        text += " inside a whole saved model"
    text += "."
    same_depth = _same_depth(layout) if compare else ""
    if same_depth:
        text += (
            f" It has as many layers as {same_depth} but different shapes: perhaps a width, class count or "
            "version Keras does not publish."
        )
    return text


def _same_depth(layout: Layout) -> str:
    names: dict[str, None] = {}
    for model in zoo.all_models():
        for include_top in (True, False):
            known = model.layout(include_top)
            if known and known["layers"] == len(layout.layers):
                family = model.family if model.family.startswith("MobileNet") else model.name
                names.setdefault(f"{family} ({head_words(include_top)})", None)
    listed = list(names)
    if not listed:
        return ""
    return ", ".join(listed[:4]) + (" and others" if len(listed) > 4 else "")


def _names(models: list[ZooModel]) -> str:
    return ", ".join(m.key for m in models)


def _variant_name(model: ZooModel) -> str:
    """The name without the input size: what entries sharing one architecture have in common."""
    return model.name.split(" @")[0]


def recognise(
    layout: Layout, filename: str, *, model: ZooModel | None = None, include_top: bool | None = None
) -> tuple[ZooModel, bool]:
    """Which entry a file is for, from what the administrator said, its name and its content.

    What the administrator says wins over the name, and the content must agree with either.
    Raises WeightsError with a sentence that says what the file looks like when nothing fits,
    and asks for the variant when several entries share its shapes.
    """
    matches = layout_matches(layout)
    if model is not None:
        return _check_fits(layout, model, include_top, matches, said_by="you")
    by_name = find_by_filename(filename)
    if by_name is not None:
        top = by_name[1] if include_top is None else include_top
        return _check_fits(layout, by_name[0], top, matches, said_by="its name")
    if not matches:
        raise WeightsError(
            "TransferLab cannot tell which model it belongs to: its name is not one Keras publishes and its "
            f"content fits no model of the zoo. {describe(layout)}"
        )
    if include_top is not None and all(top != include_top for _, top in matches):
        found = matches[0]
        raise WeightsError(
            f"It holds {_variant_name(found[0])} weights {head_words(found[1])}, not "
            f"{head_words(include_top)} as you said. Import it without --top/--no-top, or choose the other file."
        )
    if len(matches) == 1:
        return matches[0]
    models = [m for m, _ in matches]
    if len({(m.architecture, top) for m, top in matches}) == 1:
        sizes = ", ".join(str(m.input_size) for m in sorted(models, key=lambda m: m.input_size))
        raise WeightsError(
            f"It holds {_variant_name(models[0])} weights {head_words(matches[0][1])}. Keras publishes "
            f"these for several input sizes ({sizes} pixels) with the same shapes, so the content cannot tell "
            f"which one it is. Say which model it is ({_names(models)}) with --model or the upload form's model "
            "choice, or keep the file's published name."
        )
    raise WeightsError(
        f"It fits several models of the zoo ({_names(models)}). Say which one it is with --model or "
        "the upload form's model choice."
    )


def _check_fits(
    layout: Layout,
    model: ZooModel,
    include_top: bool | None,
    matches: list[tuple[ZooModel, bool]],
    said_by: str,
) -> tuple[ZooModel, bool]:
    """The entry someone named (the admin, or the file's published name), if the content agrees."""
    if model.layout(True) is None:  # no counted facts for this entry: the load check decides
        return model, True if include_top is None else include_top
    fitting = [top for top in (True, False) if (model.layout(top) or {}).get("digest") == layout.digest]
    if include_top is None and fitting:
        return model, fitting[0]
    if include_top in fitting:
        return model, include_top
    if fitting:  # the right model, the other head
        what = f"{model.name} weights {head_words(fitting[0])}"
        fix = (
            f"rename it to {model.weights_file(fitting[0]).filename}"
            if said_by == "its name"
            else f"import it with {'--top' if fitting[0] else '--no-top'} (or the matching choice in the form)"
        )
        raise WeightsError(f"It holds {what}, but {said_by} said {head_words(include_top)}: {fix}.")
    wanted = head_words(include_top) if include_top is not None else "with or without its head"
    expected = model.layout(include_top if include_top is not None else True)
    millions = expected["parameters"] / 1e6
    text = (
        f"It does not fit {model.name} ({wanted}) as {said_by} said: that file holds {expected['layers']} "
        f"layers ({millions:.2f} million parameters). {describe(layout, compare=not matches)}"
    )
    if matches:
        found, top = matches[0]
        others = [m for m, _ in matches]
        name = found.name if len(others) == 1 else f"{_variant_name(found)} ({_names(others)})"
        text += f" Its layers are those of {name} {head_words(top)}: say that model instead."
    raise WeightsError(text)


# --- Import -----------------------------------------------------------------------------------
def _check_hash(path: Path, wf: WeightsFile) -> bool:
    if not wf.file_hash:
        return False
    algorithm = wf.hash_algorithm
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
    except Exception as exc:  # Keras and h5py raise many kinds; each means "does not load"
        log.info("weights file %s does not load into %s: %r", path, model.key, exc)
        raise WeightsError(
            f"This file does not load into {model.name} ({head_words(include_top)}): {_first_line(exc)}"
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

    Refusals give the reason without the file's name: whoever shows them names the file once.

    Which entry it belongs to comes from `model` when the admin says, else from its file name,
    else from its content. The file is copied next to its destination, verified there and renamed
    into place, so a failed import never leaves a half-written or unverified file where the
    engine looks.
    """
    source = Path(source)
    name = Path(original_name or source.name).name
    if not source.is_file():
        raise WeightsError(f"No file at {source}.")
    if source.stat().st_size == 0:
        raise WeightsError("It is empty (0 bytes).")
    try:
        layout = read_layout(source)
    except LayoutError as exc:
        raise WeightsError(str(exc)) from None
    model, include_top = recognise(layout, name, model=model, include_top=include_top)
    wf = model.weights_file(include_top)
    if wf is None:
        raise WeightsError(f"Keras publishes no weights for {model.name} {head_words(include_top)}.")
    hash_checked = _check_hash(source, wf)

    weights_dir = Path(weights_dir)
    weights_dir.mkdir(parents=True, exist_ok=True)
    final = weights_dir / wf.filename
    if final.is_file() and _same_bytes(source, final):
        return Installed(model=model, include_top=include_top, path=final, hash_checked=hash_checked, unchanged=True)
    replaced = final.exists()
    # Copied beside its destination under a temporary name (its ending kept: Keras reads it by it),
    # verified there, renamed into place; removed if the copy or the check fails.
    with atomic.replacing(final, suffix=final.suffix) as staging:
        shutil.copyfile(source, staging)
        verify_loads(staging, model, include_top)
    return Installed(model=model, include_top=include_top, path=final, hash_checked=hash_checked, replaced=replaced)


def _same_bytes(a: Path, b: Path) -> bool:
    """Whether two files hold the same bytes (sizes first: a different size needs no hashing)."""
    return a.stat().st_size == b.stat().st_size and file_hashes(a)["sha256"] == file_hashes(b)["sha256"]


# --- Download (only when an administrator asks) -----------------------------------------------
def _resolve_host(url: str, timeout: float) -> None:
    """Name resolution ignores socket timeouts: give it the same limit so an offline server fails fast."""
    host = urlparse(url).hostname or ""
    outcome: dict[str, BaseException | None] = {}

    def resolve() -> None:
        try:
            socket.getaddrinfo(host, 443)
            outcome["error"] = None
        except OSError as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=resolve, daemon=True, name="weights-dns")
    worker.start()
    worker.join(timeout)
    if "error" not in outcome:
        raise OSError(f"looking up {host} took more than {timeout:g} seconds")
    if outcome["error"] is not None:
        raise OSError(f"cannot look up {host}: {outcome['error']}")


def _fetch(url: str, filename: str, file_hash: str | None, folder: Path) -> Path:
    """Keras's own download path: official URL, hash checked when Keras publishes one."""
    from keras.utils import get_file

    return Path(get_file(filename, url, file_hash=file_hash, cache_dir=str(folder), cache_subdir="."))


def download(model: ZooModel, weights_dir: Path, *, include_top: bool = True, timeout: float = 30) -> Installed:
    """Fetch the published file through Keras's own download path (official URL, hash checked).

    Only called when an administrator asks. A machine without internet access fails within
    `timeout` seconds with a message that says how to install the file by hand.
    """
    wf = model.weights_file(include_top)
    if wf is None:
        raise WeightsError(f"Keras publishes no weights for {model.name} {head_words(include_top)}.")
    weights_dir = Path(weights_dir)
    weights_dir.mkdir(parents=True, exist_ok=True)
    # A name of its own per download (machine, process): two downloads at once never share a file,
    # and one killed half way never passes for a finished one.
    partial = atomic.temporary_path(weights_dir / wf.filename)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        _resolve_host(wf.url, timeout)
        fetched = _fetch(wf.url, partial.name, wf.file_hash, weights_dir)
    except Exception as exc:
        raise WeightsError(
            f"Could not download {wf.filename} ({_first_line(exc)}). If this server has no internet access, get "
            f"it on another machine from {wf.url} and install it with “{import_command(model, include_top)}” or "
            "the upload form on the Models page."
        ) from None
    finally:
        socket.setdefaulttimeout(previous)
    try:
        return import_file(fetched, weights_dir, model=model, include_top=include_top, original_name=wf.filename)
    except WeightsError as exc:
        raise WeightsError(f"{wf.filename} was downloaded but not installed. {exc}") from None
    finally:
        fetched.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)
