"""Label names: one rule for the forms, the admin and zip folders. Plain Python, no Django.

A label name becomes a folder name when a dataset is exported and a class name when a model is
trained, so it must survive both: no slashes, no hidden-file dot, no control characters, and
nothing Windows cannot create as a folder (device names such as CON or LPT1, a trailing dot).
Two names that differ only in case or surrounding spaces are the same label (`label_key`).
"""

from __future__ import annotations

import unicodedata

MAX_LABEL_LENGTH = 64
# Characters that cannot appear in a folder name on one of the usual systems.
FORBIDDEN_CHARACTERS = '/\\:*?"<>|'
# Labels one dataset may have (MAX_LABELS_PER_DATASET): every label is a row written in the import's
# label transaction, a folder in exports and an output of every model trained on the dataset.
DEFAULT_MAX_LABELS = 1000
# Device names Windows reserves in every folder, whatever the case or extension ("aux.txt" too).
# As in Python 3.13's ntpath.isreserved: COM and LPT also with the superscript digits ¹ ² ³, and 0.
WINDOWS_DEVICE_NAMES = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{port}{digit}" for port in ("COM", "LPT") for digit in "0123456789\u00b9\u00b2\u00b3"}
)


class InvalidName(ValueError):
    """A name that cannot be a label; str(error) is the reason, written for the user."""


def clean_label_name(raw: str) -> str:
    """The label name to store for what the user (or a zip folder) gave, or InvalidName.

    Unicode is normalised to NFC: macOS writes folder names decomposed (NFD), and "café"
    typed on a keyboard must match the "café" folder a Mac put in a zip.
    """
    name = unicodedata.normalize("NFC", raw).strip()
    name = " ".join(name.split())  # tabs, newlines and runs of spaces become one space
    if not name:
        raise InvalidName("A label name cannot be empty.")
    if len(name) > MAX_LABEL_LENGTH:
        raise InvalidName(f"A label name can be at most {MAX_LABEL_LENGTH} characters; this one has {len(name)}.")
    if name in (".", "..") or name.startswith("."):
        raise InvalidName("A label name cannot start with a dot (such folders are hidden).")
    bad = sorted({c for c in name if c in FORBIDDEN_CHARACTERS or unicodedata.category(c).startswith("C")})
    if bad:
        shown = " ".join(repr(c)[1:-1] for c in bad)
        raise InvalidName(f"A label name cannot contain {shown}: it must also work as a folder name.")
    problem = windows_problem(name)
    if problem:
        raise InvalidName(problem)
    return name


def _device_stem(name: str) -> str:
    """The part of a name Windows compares with its device names: before the first dot, spaces trimmed."""
    return name.partition(".")[0].rstrip(" ").upper()


def windows_problem(name: str) -> str | None:
    """Why Windows cannot create a folder with this name (a sentence for the user), or None.

    An export unzipped there would fail or lose the folder, so such names are refused as labels.
    """
    if name.endswith((".", " ")):
        return (
            "A label name cannot end with a dot: Windows removes it from folder names, so the export "
            "would not unzip there. Remove the dot."
        )
    if _device_stem(name) in WINDOWS_DEVICE_NAMES:
        return (
            f"“{name}” is a device name on Windows (like CON, PRN, AUX, NUL, COM1 to COM9 and LPT1 to LPT9, "
            "with any extension), so it cannot be a folder name there and the export would not unzip. "
            "Choose another name."
        )
    return None


def safe_folder_name(name: str) -> str:
    """The folder an export uses for a label saved before `windows_problem` was checked.

    Trailing dots and spaces go and a device name gets "_" after it ("CON" -> "CON_", "aux.txt" ->
    "aux_.txt"); other names are unchanged. The export's manifest keeps the real name.
    """
    folder = name.rstrip(". ") or "label"
    stem = folder.partition(".")[0].rstrip(" ")
    if _device_stem(folder) in WINDOWS_DEVICE_NAMES:
        folder = f"{stem}_{folder[len(stem) :]}"
    return folder


def label_key(name: str) -> str:
    """What two label names are compared by: case and surrounding spaces ignored."""
    return " ".join(unicodedata.normalize("NFC", name).split()).casefold()


def clean_file_name(raw: str, fallback: str = "image") -> str:
    """A file name safe to show, to send in a Content-Disposition header and to export again.

    Only the last path component, NFC, control characters (newlines included) removed.
    """
    name = unicodedata.normalize("NFC", raw).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if not unicodedata.category(c).startswith("C")).strip()
    return name[:255] or fallback


def labels_full_message(count: int) -> str:
    """What the label form, the admin and uploads say when a dataset has no room for another label."""
    return (
        f"This dataset already has {count:,} labels, the most a dataset can have. "
        "Delete labels you no longer need, or ask your administrator to raise the limit."
    )


def too_many_labels_message(total: int | None, existing: int, cap: int) -> str:
    """Why a zip is refused: the labels it brings, with those the dataset has, exceed the cap.

    `total` is None when counting stopped at the cap (a manifest may list millions of labels).
    """
    if total is None:
        count = f"more than {cap:,} labels, with those its transferlab.json lists"
    else:
        count = f"{total:,} labels ({total - existing:,} new, {existing:,} already there)"
    return (
        f"The zip would give the dataset {count}; a dataset can have at most {cap:,} labels. "
        "Nothing was imported: split the zip into datasets of fewer labels, delete labels you no longer need, "
        "or ask your administrator to raise the limit."
    )
