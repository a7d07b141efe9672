"""Dataset files on disk: content-addressed originals and thumbnails, and a journal to undo a crash.

Plain Python (no Django): callers pass the dataset folder, `DATASETS_DIR/<dataset id>/`.

    images/ab/ab12…ef.jpg   the original bytes as received, named by their SHA-256
    thumbs/ab/ab12…ef.jpg   a JPEG of at most 256 px for grids
    journal/<operation>.txt files an unfinished operation created (see `Journal`)
    trash/<token>/          an image deleted by a person, kept to be restored (see `move_to_trash`)

Order of work everywhere: files first, then the database rows, so no row ever points at a missing
file. A file whose row never arrives (the operation failed or was killed) is listed in that
operation's journal and removed by `undo`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from classifier import imaging
from webapp import atomic

THUMBNAIL_SIDE = 256


@dataclass(frozen=True)
class StoredImage:
    """A picture verified and written to a dataset folder, ready to become a database row."""

    sha256: str
    format: str
    width: int
    height: int
    size: int  # bytes of the original


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def image_path(folder: Path, sha: str, fmt: str) -> Path:
    return folder / "images" / sha[:2] / f"{sha}{imaging.extension(fmt)}"


def thumbnail_path(folder: Path, sha: str) -> Path:
    return folder / "thumbs" / sha[:2] / f"{sha}.jpg"


class Journal:
    """The files one operation created, written down before each file so a crash can be undone.

    Lines are relative to the dataset folder. The journal is removed once the operation's rows
    have committed (`close(keep=True)`), or after its files were removed (`undo`).
    """

    def __init__(self, folder: Path, name: str) -> None:
        self.folder = folder
        self.path = self.path_for(folder, name)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (kept open for the operation)

    @staticmethod
    def path_for(folder: Path, name: str) -> Path:
        return folder / "journal" / f"{name}.txt"

    def record(self, path: Path) -> None:
        self._file.write(f"{path.relative_to(self.folder).as_posix()}\n")
        self._file.flush()  # in the OS before the file exists: survives the process being killed

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def forget(self) -> None:
        """The operation's rows committed: its files are now owned by them."""
        self.close()
        self.path.unlink(missing_ok=True)


def undo(journal_path: Path, keep: Callable[[str], bool]) -> int:
    """Remove the files an unfinished operation created, except those whose hash `keep` claims.

    `keep(sha)` says whether a database row now owns that content (a later upload of the same
    picture may have). Returns how many files were removed.
    """
    folder = journal_path.parent.parent
    removed = 0
    try:
        lines = journal_path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return 0
    for line in dict.fromkeys(lines):
        rel = Path(line)
        if not line or rel.is_absolute() or ".." in rel.parts:
            continue  # a journal only ever names files inside its own folder
        sha = rel.name.split(".", 1)[0]
        if keep(sha):
            continue
        path = folder / rel
        try:
            path.unlink()  # two consumers' clean-ups may undo the same journal at once
            removed += 1
        except FileNotFoundError:
            pass
        for tmp in path.parent.glob(f".{path.name}.*"):  # killed between write and rename
            if atomic.final_name(tmp.name) == path.name:
                tmp.unlink(missing_ok=True)
    journal_path.unlink(missing_ok=True)
    return removed


def journals(folder: Path) -> Iterable[Path]:
    """Journals left in a dataset folder (operations that did not finish cleanly)."""
    return sorted((folder / "journal").glob("*.txt"))


class ImageStore:
    """Verifies and writes pictures into one dataset folder. Decoding goes through `classifier.imaging`."""

    def __init__(
        self,
        folder: Path,
        *,
        max_bytes: int,
        max_pixels: int,
        journal: Journal | None = None,
        check_space: Callable[[int], None] | None = None,
    ) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self.journal = journal
        self.check_space = check_space  # raises when `bytes` would not fit on the disk (with its reserve)

    def save(self, data: bytes, sha: str | None = None) -> StoredImage:
        """Decode `data` (ImageError with the reason when it is not a usable picture), then write it.

        The original bytes are kept exactly: an export gives back the same files, the same hashes.
        Only the size, the format and a thumbnail are taken from the pixels, so the picture is
        decoded for the thumbnail's side: a 50-megapixel PNG is reduced as soon as it is decoded
        instead of being held (and copied for the thumbnail) at full size.
        """
        sha = sha or sha256(data)
        decoded = imaging.decode(data, max_bytes=self.max_bytes, max_pixels=self.max_pixels, draft_side=THUMBNAIL_SIDE)
        thumb = imaging.thumbnail_jpeg(decoded.image, THUMBNAIL_SIDE)
        original = image_path(self.folder, sha, decoded.format)
        small = thumbnail_path(self.folder, sha)
        if self.check_space is not None:
            self.check_space(len(data) + len(thumb))
        for path, content in ((original, data), (small, thumb)):
            if self.journal is not None:
                self.journal.record(path)
            atomic.write_bytes(path, content)  # temporary name, then rename: never half a file
        return StoredImage(
            sha256=sha, format=decoded.format, width=decoded.width, height=decoded.height, size=len(data)
        )


def delete_image_files(folder: Path, sha: str, fmt: str) -> None:
    image_path(folder, sha, fmt).unlink(missing_ok=True)
    thumbnail_path(folder, sha).unlink(missing_ok=True)


def delete_folder(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def trash_folder(folder: Path, token: str) -> Path:
    """Where one deleted image's files wait to be restored: a folder per deletion, so the same picture
    deleted twice (added again in between) never overwrites the other's files."""
    if not token or not token.isalnum():
        raise ValueError(f"Not a trash token: {token!r}")
    return folder / "trash" / token


def trashed_paths(folder: Path, token: str, fmt: str) -> tuple[Path, Path]:
    """The original and the thumbnail of a trashed image."""
    trash = trash_folder(folder, token)
    return trash / f"original{imaging.extension(fmt)}", trash / "thumbnail.jpg"


def move_to_trash(folder: Path, sha: str, fmt: str, token: str) -> None:
    """Move an image's original and thumbnail into trash/<token>/ (a rename: same disk, no copy).

    A file already missing is skipped: restoring then says what is gone.
    """
    sources = (image_path(folder, sha, fmt), thumbnail_path(folder, sha))
    pairs = zip(sources, trashed_paths(folder, token, fmt), strict=True)
    for source, target in pairs:
        if source.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)


def old_trash(folder: Path, older_than: float) -> list[Path]:
    """Trash folders of a dataset folder last written before `older_than` (a timestamp)."""
    found = []
    for trash in sorted((folder / "trash").glob("*")):
        try:
            if trash.is_dir() and trash.stat().st_mtime < older_than:
                found.append(trash)
        except FileNotFoundError:
            continue  # restored meanwhile
    return found
