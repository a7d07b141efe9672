"""Label names: one rule for the forms, the admin and zip folders. Plain Python, no Django.

A label name becomes a folder name when a dataset is exported and a class name when a model is
trained, so it must survive both: no slashes, no hidden-file dot, no control characters. Two
names that differ only in case or surrounding spaces are the same label (`label_key`).
"""

from __future__ import annotations

import unicodedata

MAX_LABEL_LENGTH = 64
# Characters that cannot appear in a folder name on one of the usual systems.
FORBIDDEN_CHARACTERS = '/\\:*?"<>|'


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
    return name


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
