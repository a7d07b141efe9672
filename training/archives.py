"""Zip import and export in the folder-per-class layout (`cats/x.jpg`, `dogs/y.png`). No Django.

Import is two steps so that a dangerous archive is refused before a single byte is extracted:

1. `inspect` reads only the zip's central directory and refuses the whole archive for anything
   unsafe (OWASP ASVS V12.1): paths that climb out (`../`, absolute, drive letters), symbolic
   links, encryption, too many members, too many bytes once uncompressed, a member that
   expands more than the allowed ratio. It then maps members to labels, and refuses a zip that
   would give the dataset more labels than it may have.
2. `import_zip` streams each member (bytes counted, never more than one image in memory),
   skips duplicates, verifies the picture with `classifier.imaging` and stores it through the
   store it is given. It returns what to write to the database; the caller writes the rows.

Nothing is ever extracted by member name: files are stored under their content hash, so a
hostile name cannot reach the file system even if a check were missed.
"""

from __future__ import annotations

import json
import math
import re
import stat
import unicodedata
import zipfile
import zlib
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol

from classifier import imaging
from classifier.imaging import ImageError
from training import splits, storage
from training.names import (
    DEFAULT_MAX_LABELS,
    InvalidName,
    clean_file_name,
    clean_label_name,
    label_key,
    too_many_labels_message,
)
from webapp.sizes import human_size

MANIFEST_NAME = "transferlab.json"
MANIFEST_MAX_BYTES = 32 * 1024 * 1024
# Files the usual systems leave in folders; skipped without a word.
IGNORED_FILE_NAMES = {"thumbs.db", "desktop.ini", "icon\r"}
NESTED_ARCHIVE_SUFFIXES = (".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar", ".zst", ".jar")
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
# Below this size a member's compression ratio is not checked: a small blank image compresses
# a thousandfold and harms nobody; the total-size cap bounds those anyway.
RATIO_FLOOR_BYTES = 1024 * 1024
READ_CHUNK = 1024 * 1024
# Per label, the report lists at most this many file names per outcome (counts stay exact).
REPORT_DETAIL_LIMIT = 200
# A Windows drive: one letter and a colon, alone or before a separator (`C:`, `C:/x`, `C:\\x`).
# `a:b/x.png` is a folder with an odd name, not a drive: it is rejected as a label, not as a path.
DRIVE_PATH = re.compile(r"[A-Za-z]:(/|$)")
UNREADABLE_MANIFEST_NOTE = f"{MANIFEST_NAME} could not be read; splits were drawn afresh."
# What a user can do about a zip over a limit: the setting's name is for the administrator (docs/CONFIGURATION.md).
SPLIT_OR_ASK = "Split it into smaller zips, or ask your administrator to raise the limit."


class ArchiveError(ValueError):
    """The whole archive is refused; str(error) says why, for the user. Nothing was imported."""


@dataclass(frozen=True)
class ZipLimits:
    """Caps from settings (IMPORT_* and the per-image MAX_UPLOAD_MB / MAX_IMAGE_PIXELS)."""

    max_members: int
    max_total_bytes: int
    max_ratio: int
    max_file_bytes: int
    max_labels: int = DEFAULT_MAX_LABELS  # labels the dataset may have once the zip is in


class Store(Protocol):
    def save(self, data: bytes, sha: str | None = None) -> storage.StoredImage: ...


@dataclass(frozen=True)
class Entry:
    """A file member that belongs to a label folder."""

    info: zipfile.ZipInfo
    path: str  # as shown to the user: the member path without the enclosing top folder
    label: str  # the label name it goes to (existing spelling wins)


@dataclass
class Plan:
    """What `inspect` found: files to import per label and everything set aside, with reasons."""

    entries: list[Entry] = field(default_factory=list)
    other: list[dict[str, str]] = field(default_factory=list)
    ignored: int = 0
    notes: list[str] = field(default_factory=list)
    new_labels: list[str] = field(default_factory=list)
    manifest: zipfile.ZipInfo | None = None


@dataclass
class LabelOutcome:
    """One label's line in the report."""

    name: str
    new: bool = False
    added: int = 0
    duplicates: int = 0
    rejected: int = 0
    duplicate_files: list[dict[str, str]] = field(default_factory=list)
    rejected_files: list[dict[str, str]] = field(default_factory=list)

    def duplicate(self, path: str, reason: str) -> None:
        self.duplicates += 1
        if len(self.duplicate_files) < REPORT_DETAIL_LIMIT:
            self.duplicate_files.append({"file": path, "reason": reason})

    def reject(self, path: str, reason: str) -> None:
        self.rejected += 1
        if len(self.rejected_files) < REPORT_DETAIL_LIMIT:
            self.rejected_files.append({"file": path, "reason": reason})


@dataclass(frozen=True)
class Added:
    """A stored picture waiting for its database row."""

    label: str
    original_name: str
    image: storage.StoredImage


@dataclass
class ImportResult:
    labels: dict[str, LabelOutcome]
    added: list[Added]
    other: list[dict[str, str]]
    ignored: int
    notes: list[str]
    manifest: dict | None

    def report(self) -> dict:
        """The JSON kept on the import job and rendered by `_import_report.html`."""
        return build_report(self.labels.values(), other=self.other, ignored=self.ignored, notes=self.notes)


def build_report(
    labels: Iterable[LabelOutcome], *, other: list[dict[str, str]] = (), ignored: int = 0, notes: list[str] = ()
) -> dict:
    """A report in one shape for zip imports and uploads; counts are exact, file lists capped."""
    rows = [
        {
            "name": o.name,
            "new": o.new,
            "added": o.added,
            "duplicates": o.duplicates,
            "rejected": o.rejected,
            "duplicate_files": o.duplicate_files,
            "rejected_files": o.rejected_files,
        }
        for o in sorted(labels, key=lambda o: label_key(o.name))
    ]
    return {
        "labels": rows,
        "other": list(other)[:REPORT_DETAIL_LIMIT],
        "other_count": len(other),
        "ignored": ignored,
        "notes": list(notes),
        "added": sum(r["added"] for r in rows),
        "duplicates": sum(r["duplicates"] for r in rows),
        "rejected": sum(r["rejected"] for r in rows) + len(other),
    }


def summary(report: dict) -> str:
    """The import's outcome in one sentence. It names no reasons: lists, pages and the command show it
    without the report, so it must not promise reasons "below"."""
    added, duplicates, rejected = report.get("added", 0), report.get("duplicates", 0), report.get("rejected", 0)
    if not (added or duplicates or rejected):
        return "The zip holds no images in label folders: put one folder per label in it, with the images inside."
    parts = [f"Added {added:,} image{'s' if added != 1 else ''}"]
    if duplicates:
        parts.append(f"skipped {duplicates:,} duplicate{'s' if duplicates != 1 else ''}")
    if rejected:
        parts.append(f"rejected {rejected:,} file{'s' if rejected != 1 else ''}")
    return ", ".join(parts) + "."


def open_zip(source: Path | str | BinaryIO) -> zipfile.ZipFile:
    """Open an archive, or ArchiveError when it is not a readable zip."""
    try:
        return zipfile.ZipFile(source)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, NotImplementedError):
        raise ArchiveError(
            "This file is not a zip archive, or it is damaged. Create the zip again "
            "(one folder per label, images inside) and upload it."
        ) from None


def _check_archive(infos: list[zipfile.ZipInfo], limits: ZipLimits) -> None:
    """Whole-archive refusals, from the central directory only: nothing is decompressed yet."""
    if not infos:
        raise ArchiveError("The zip archive is empty: put one folder per label in it, with the images inside.")
    if len(infos) > limits.max_members:
        raise ArchiveError(
            f"The zip holds {len(infos):,} files and folders; the limit is {limits.max_members:,}. {SPLIT_OR_ASK}"
        )
    total = sum(info.file_size for info in infos)
    if total > limits.max_total_bytes:
        raise ArchiveError(
            f"Uncompressed, the zip would be {human_size(total)}; the limit is {human_size(limits.max_total_bytes)}. "
            f"{SPLIT_OR_ASK}"
        )
    for info in infos:
        name = info.filename
        posix = name.replace("\\", "/")
        parts = posix.split("/")
        if posix.startswith("/") or DRIVE_PATH.match(posix) or ".." in parts:
            raise ArchiveError(
                f"The zip contains an unsafe path ({name!r}) that points outside the archive. "
                "Nothing was imported; create the zip again from the folder itself."
            )
        if stat.S_ISLNK(info.external_attr >> 16):
            raise ArchiveError(
                f"The zip contains a symbolic link ({name!r}). Links are not followed; "
                "replace it with the image itself and try again."
            )
        if info.flag_bits & 0x1:
            raise ArchiveError(
                "The zip is password-protected (encrypted); TransferLab cannot open it. "
                "Create the zip again without a password."
            )
        if info.file_size > RATIO_FLOOR_BYTES and (
            info.compress_size <= 0 or info.file_size / info.compress_size > limits.max_ratio
        ):
            raise ArchiveError(
                f"The member {name!r} expands from {info.compress_size:,} to {info.file_size:,} bytes, more than "
                f"{limits.max_ratio}x: this looks like a zip bomb, so nothing was imported."
            )


def _is_ignored(parts: list[str]) -> bool:
    """macOS resource forks, hidden files and folders, and the usual system litter."""
    if parts[0] == "__MACOSX":
        return True
    return any(p.startswith(".") for p in parts) or parts[-1].casefold() in IGNORED_FILE_NAMES


def _parts(info: zipfile.ZipInfo) -> list[str]:
    name = unicodedata.normalize("NFC", info.filename.replace("\\", "/"))
    return [p for p in name.split("/") if p not in ("", ".")]


def _has_enclosing_folder(paths: list[list[str]]) -> bool:
    """Whether everything sits in one top folder that holds the label folders (`photos/cats/x.jpg`).

    Loose files next to the label folders (a README, the manifest) do not prevent it; loose
    pictures do: then the top folder is itself a label (`cats/x.jpg`, `cats/2019/y.jpg`).
    """
    in_folders = [p for p in paths if len(p) > 1]
    if not in_folders or len({p[0] for p in in_folders}) != 1:
        return False
    loose = [p[1] for p in in_folders if len(p) == 2]
    return any(len(p) >= 3 for p in in_folders) and not any(
        PurePosixPath(name).suffix.lower() in imaging.SUPPORTED_EXTENSIONS for name in loose
    )


def inspect(zf: zipfile.ZipFile, limits: ZipLimits, existing_labels: Mapping[str, str] | None = None) -> Plan:
    """Check the archive as a whole (ArchiveError) and map each file to a label or a reason.

    `existing_labels` maps `label_key(name)` to the dataset's spelling of each label: a folder
    `Cats` joins an existing label `cats` rather than failing the uniqueness rule.
    """
    infos = zf.infolist()
    _check_archive(infos, limits)
    plan = Plan()
    files: list[tuple[zipfile.ZipInfo, list[str]]] = []
    folders: set[str] = set()
    for info in infos:
        parts = _parts(info)
        if not parts:
            continue
        if _is_ignored(parts):
            plan.ignored += 0 if info.is_dir() else 1
            continue
        if info.is_dir():
            folders.add("/".join(parts))
            continue
        files.append((info, parts))

    if _has_enclosing_folder([parts for _, parts in files]):
        files = [(info, parts[1:]) if len(parts) > 1 else (info, parts) for info, parts in files]
        folders = {f.split("/", 1)[1] for f in folders if "/" in f}

    labels: dict[str, str] = dict(existing_labels or {})
    spellings: dict[str, set[str]] = {}
    nested = False
    for info, parts in sorted(files, key=lambda item: "/".join(item[1])):
        path = "/".join(parts)
        if len(parts) == 1:
            if parts[0] == MANIFEST_NAME and info.file_size <= MANIFEST_MAX_BYTES:
                plan.manifest = info
            else:
                plan.other.append(
                    {"file": path, "reason": "Not inside a label folder: put it in the folder of its label."}
                )
            continue
        folder = parts[0]
        try:
            name = clean_label_name(folder)
        except InvalidName as error:
            plan.other.append({"file": path, "reason": f"The folder {folder!r} cannot be a label: {error}"})
            continue
        key = label_key(name)
        if key not in labels:
            labels[key] = name
            plan.new_labels.append(name)
        spellings.setdefault(key, set()).add(folder)
        nested = nested or len(parts) > 2
        plan.entries.append(Entry(info=info, path=path, label=labels[key]))

    for key, raw in sorted(spellings.items()):
        label = labels[key]
        others = sorted(raw - {label})
        if others:
            shown = ", ".join(f"“{r}”" for r in others)
            plan.notes.append(
                f"Folder {shown} went into the label “{label}”: label names ignore case and surrounding spaces."
            )
    for folder in sorted(folders):
        top = folder.split("/", 1)[0]
        try:
            key = label_key(clean_label_name(top))
        except InvalidName:
            continue
        if "/" not in folder and key not in spellings:
            plan.notes.append(f"Folder “{top}” is empty: no label was created for it.")
    if nested:
        plan.notes.append("Images in sub-folders of a label folder were added to that label.")
    if plan.new_labels and len(labels) > limits.max_labels:
        existing = len(existing_labels or {})
        raise ArchiveError(too_many_labels_message(len(labels), existing, limits.max_labels))
    return plan


class _TooLarge(Exception):
    pass


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, max_bytes: int) -> bytes:
    """The member's bytes, counted while they stream: a zip's declared size is not trusted."""
    chunks = []
    size = 0
    with zf.open(info) as member:
        while chunk := member.read(READ_CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise _TooLarge
            chunks.append(chunk)
    return b"".join(chunks)


def _read_manifest(zf: zipfile.ZipFile, info: zipfile.ZipInfo | None, notes: list[str]) -> dict | None:
    """The export's manifest with every value of the expected type, or None with the documented note.

    The manifest is optional: anything wrong with it (not JSON, nested too deep, a number that is
    infinite or has thousands of digits, a section of the wrong type) costs the restored splits and
    descriptions, never the import.
    """
    if info is None:
        return None
    try:
        raw = json.loads(_read_member(zf, info, MANIFEST_MAX_BYTES), parse_constant=_no_constant, parse_float=_finite)
        return clean_manifest(raw)
    except (ValueError, RecursionError, _TooLarge, zipfile.BadZipFile, zlib.error, EOFError, OSError):
        notes.append(UNREADABLE_MANIFEST_NOTE)
        return None


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number")  # NaN, Infinity, -Infinity


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is out of range")  # 1e400 parses as infinity
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# What each known section may hold; other values are dropped one by one.
_DATASET_FIELDS = {
    "name": lambda v: isinstance(v, str),
    "description": lambda v: isinstance(v, str),
    "validation_percent": _is_int,
    "test_percent": _is_int,
    "split_seed": _is_int,
}


def clean_manifest(raw: object) -> dict:
    """The manifest with only values of the expected types; ValueError when a section is not an object.

    `labels` maps names to descriptions, `splits` content hashes to a split, `folders` the export's
    folder of a label to its real name (for names Windows cannot create, see `training.exports`).
    """
    if not isinstance(raw, dict):
        raise ValueError("the manifest is not a JSON object")
    manifest = dict(raw)
    for section in ("dataset", "labels", "splits", "folders"):
        if section in manifest and not isinstance(manifest[section], dict):
            raise ValueError(f"{section} is not an object")
    if "dataset" in manifest:
        manifest["dataset"] = _keep(manifest["dataset"], lambda k, v: k in _DATASET_FIELDS and _DATASET_FIELDS[k](v))
    if "labels" in manifest:
        manifest["labels"] = _keep(manifest["labels"], lambda k, v: isinstance(v, str))
    if "splits" in manifest:
        manifest["splits"] = _keep(manifest["splits"], lambda k, v: isinstance(v, str) and v in splits.SPLITS)
    if "folders" in manifest:
        manifest["folders"] = _keep(manifest["folders"], lambda k, v: isinstance(v, str))
    return manifest


def _keep(section: dict, wanted: Callable[[str, object], bool]) -> dict:
    return {key: value for key, value in section.items() if wanted(key, value)}


def manifest_labels(manifest: dict | None) -> dict[str, str]:
    """The labels an export lists, as they import: name -> description.

    A label the export put in a safe folder (`folders`) takes that folder's name; names that
    cannot be labels are left out.
    """
    labels: dict[str, str] = {}
    for name, description in _manifest_label_items(manifest):
        labels.setdefault(name, description)
    return labels


def _manifest_label_items(manifest: dict | None) -> Iterator[tuple[str, str]]:
    if not manifest:
        return
    listed = dict(manifest.get("labels", {}))
    for folder, real in manifest.get("folders", {}).items():
        if real in listed and folder != real:
            listed.setdefault(folder, listed.pop(real))
    for name, description in listed.items():
        try:
            yield clean_label_name(name), description
        except InvalidName:
            continue


def _check_manifest_labels(plan: Plan, manifest: dict | None, existing: Mapping[str, str], limits: ZipLimits) -> None:
    """An export restored into an empty dataset creates its empty labels too: they count against the cap.

    Counting stops at the first label over the cap: a manifest may list millions of names.
    """
    keys = set(existing) | {label_key(name) for name in plan.new_labels}
    for name, _ in _manifest_label_items(manifest):
        keys.add(label_key(name))
        if len(keys) > limits.max_labels:
            raise ArchiveError(too_many_labels_message(None, len(existing), limits.max_labels))


def too_large_message(size: int, max_bytes: int) -> str:
    """Why one image is left out for its size; the limit is named, never the setting behind it."""
    shown, limit = human_size(size), human_size(max_bytes)
    if shown == limit:  # just over: "20 MiB; the limit is 20 MiB" would read as a contradiction
        return f"The file is larger than {limit}, the limit for one image. Resize or compress it."
    return f"The file is {shown}; the limit for one image is {limit}. Resize or compress it."


def import_zip(
    source: Path | str | BinaryIO,
    *,
    store: Store,
    known: Collection[str],
    existing_labels: Mapping[str, str],
    limits: ZipLimits,
    restore_labels: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> ImportResult:
    """Verify and store every usable picture of an archive; return what the rows must say.

    `known` holds the content hashes already in the dataset (skipped as duplicates).
    `restore_labels` says the manifest's labels will be created too (an export restored into an
    empty dataset), so they count against `limits.max_labels` before anything is stored.
    Exceptions from `on_progress` (a cancellation) propagate: the caller undoes what was stored.
    """
    with open_zip(source) as zf:
        plan = inspect(zf, limits, existing_labels)
        manifest = _read_manifest(zf, plan.manifest, plan.notes)
        if restore_labels:
            _check_manifest_labels(plan, manifest, existing_labels, limits)
        new = set(plan.new_labels)
        outcomes = {e.label: LabelOutcome(name=e.label, new=e.label in new) for e in plan.entries}
        added: list[Added] = []
        seen: dict[str, str] = {}
        streamed = 0
        total = len(plan.entries)
        if on_progress:
            on_progress(0, total)
        for done, entry in enumerate(plan.entries, start=1):
            outcome = outcomes[entry.label]
            info = entry.info
            if PurePosixPath(entry.path).suffix.lower() in NESTED_ARCHIVE_SUFFIXES:
                outcome.reject(entry.path, "An archive inside the archive is not opened: extract it first.")
            elif info.file_size > limits.max_file_bytes:
                outcome.reject(entry.path, too_large_message(info.file_size, limits.max_file_bytes))
            else:
                try:
                    data = _read_member(zf, info, limits.max_file_bytes)
                except _TooLarge:
                    outcome.reject(entry.path, too_large_message(limits.max_file_bytes + 1, limits.max_file_bytes))
                except NotImplementedError:
                    outcome.reject(
                        entry.path,
                        "The file is compressed with a method TransferLab cannot read (such as Deflate64): "
                        "create the zip again with standard compression.",
                    )
                except (zipfile.BadZipFile, zlib.error, EOFError, OSError):
                    outcome.reject(entry.path, "The file is damaged inside the zip (its checksum does not match).")
                else:
                    streamed += len(data)
                    if streamed > limits.max_total_bytes:
                        raise ArchiveError(
                            f"The zip expands beyond {human_size(limits.max_total_bytes)} although its directory "
                            "said otherwise. Nothing was imported."
                        )
                    _take(data, entry, outcome, store=store, known=known, seen=seen, added=added)
            if on_progress:
                on_progress(done, total)
    return ImportResult(
        labels=outcomes, added=added, other=plan.other, ignored=plan.ignored, notes=plan.notes, manifest=manifest
    )


def _take(
    data: bytes,
    entry: Entry,
    outcome: LabelOutcome,
    *,
    store: Store,
    known: Collection[str],
    seen: dict[str, str],
    added: list[Added],
) -> None:
    if data.startswith(ZIP_MAGIC):
        outcome.reject(entry.path, "An archive inside the archive is not opened: extract it first.")
        return
    sha = storage.sha256(data)
    if sha in known:
        outcome.duplicate(entry.path, "Already in the dataset.")
        return
    if sha in seen:
        outcome.duplicate(entry.path, f"Same picture as {seen[sha]}.")
        return
    try:
        stored = store.save(data, sha)
    except ImageError as error:
        outcome.reject(entry.path, str(error))
        return
    seen[sha] = entry.path
    outcome.added += 1
    added.append(Added(label=entry.label, original_name=clean_file_name(entry.path), image=stored))


# --- Export ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportItem:
    label: str  # the label's folder: its name, or a safe one for a name Windows cannot create (training.exports)
    original_name: str
    sha256: str
    format: str
    path: Path


def export_name(item: ExportItem, used: set[str]) -> str:
    """The member name of an image: its original name when safe and free, else one with its hash."""
    name = "".join(c for c in item.original_name if c not in "/\\" and not unicodedata.category(c).startswith("C"))
    name = name.strip()
    if not name or name.startswith(".") or len(name) > 150:
        name = f"{item.sha256[:16]}{imaging.extension(item.format)}"
    if name.casefold() in used:  # case-insensitive file systems would merge the two
        stem, suffix = PurePosixPath(name).stem, PurePosixPath(name).suffix
        name = f"{stem}-{item.sha256[:12]}{suffix}"
    used.add(name.casefold())
    return f"{item.label}/{name}"


class _Pipe:
    """A write-only stream zipfile writes into and the response reads from, chunk by chunk."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._chunks.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


def iter_export(items: Iterable[ExportItem], manifest: dict | None = None) -> Iterator[bytes]:
    """A zip in the import layout, produced while it is sent: memory stays flat for any size.

    Images are stored, not deflated (JPEG and PNG do not compress further). `transferlab.json`
    at the root carries splits and descriptions so that importing the export gives the same dataset.
    """
    pipe = _Pipe()
    used: dict[str, set[str]] = {}
    with zipfile.ZipFile(pipe, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for item in items:
            if not item.path.exists():
                continue
            zf.write(item.path, export_name(item, used.setdefault(label_key(item.label), set())))
            yield pipe.take()
        if manifest is not None:
            zf.writestr(MANIFEST_NAME, json.dumps(manifest, indent=1, ensure_ascii=False), zipfile.ZIP_DEFLATED)
    yield pipe.take()
