"""Atomic file writes into DATA_DIR: a reader, on this machine or another one, sees a whole file or none.

Several web processes and workers, on several machines, share one DATA_DIR (NFS or similar). A file
written in place under its final name can be read half-written by any of them, and a process killed
mid-write leaves a truncated file that looks finished. So every write goes the same way:

1. write to a temporary name in the same folder (a rename is atomic only within one file system);
2. flush and fsync it (its bytes reach the server before its name does);
3. rename it onto the final name (`os.replace`), or remove it when anything failed.

Temporary names are `.<final name>.<host>-<pid>-<random>.tmp`: dot-prefixed so listings that skip
hidden files ignore them, ending in ".tmp" so globs for the final extension miss them, and unique
per machine and process so two writers never share one. A writer that needs a particular ending
(Keras checks for ".keras", `save_weights` for ".weights.h5") gets it after ".tmp". Leftovers of a
process killed mid-write are recognised by `is_temporary` and removed once old (`remove_stale`).

Plain Python (no Django): settings.py uses it for the secret key.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

CHUNK = 1024 * 1024
NAME_MAX = 255  # bytes in one file name on every file system DATA_DIR may be on
_HOST = re.sub(r"[^A-Za-z0-9]+", "-", socket.gethostname()).strip("-")[:32] or "host"
# Ours: ".<final>.<host>-<pid>-<12 hex>.tmp<ending>". The host holds no dot, so the token is the
# last component before ".tmp" and everything before it is the final name.
_OURS = re.compile(r"^\.(?P<final>.+)\.[A-Za-z0-9-]+-\d+-[0-9a-f]{12}\.tmp(?:\.[^.]+)*$")
# Any hidden file or folder ending in ".tmp" (or ".partial"), with an optional ending after it:
# also the names earlier versions used (".<final>.<random>.tmp", ".<final>.<random>.partial").
_ANY = re.compile(r"^\..+\.(?:tmp|partial)(?:\.[A-Za-z0-9]+)*$")
_LEGACY = re.compile(r"^\.(?P<final>.+)\.[^.]+\.(?:tmp|partial)$")
# Errors of os.link on a file system without hard links (some FUSE and SMB mounts).
_NO_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS, errno.EXDEV}


def temporary_path(path: Path, suffix: str = "") -> Path:
    """A fresh temporary name beside `path` (same folder, so the final rename is atomic).

    `suffix` is appended after ".tmp" for writers that check the file's ending (".keras").
    """
    path = Path(path)
    token = f"{_HOST}-{os.getpid()}-{secrets.token_hex(6)}"
    room = NAME_MAX - len(f"..{token}.tmp{suffix}".encode())
    final = path.name.encode()[:room].decode(errors="ignore")  # a very long name is cut, never refused
    return path.with_name(f".{final}.{token}.tmp{suffix}")


def is_temporary(name: str) -> bool:
    """Whether a file (or folder) name is an unfinished write's: never a file of its own."""
    return bool(_ANY.match(name))


def final_name(name: str) -> str | None:
    """The name a temporary file was to be renamed to, or None when `name` is not a temporary one."""
    match = _OURS.match(name) or _LEGACY.match(name)
    return match.group("final") if match else None


def _create(temporary: Path, mode: int | None) -> BinaryIO:
    """A new file opened for writing; with `mode` it has exactly that mode before it holds a byte."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(temporary, flags, 0o666 if mode is None else mode)
    try:
        if mode is not None:
            os.fchmod(fd, mode)  # the umask may have taken bits away
        return os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        raise


def _sync(out: BinaryIO) -> None:
    out.flush()
    os.fsync(out.fileno())


@contextmanager
def open_replacing(path: Path, *, mode: int | None = None) -> Iterator[BinaryIO]:
    """A binary file to write; on a clean exit it replaces `path` at once, on an error it is removed.

    `mode` (such as 0o600) is set before the first byte, so the final file is never more readable.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path)
    try:
        with _create(temporary, mode) as out:
            yield out
            _sync(out)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


@contextmanager
def replacing(path: Path, *, suffix: str = "") -> Iterator[Path]:
    """A temporary path for writers that want a file name (Keras `model.save`, sqlite3, pg_dump).

    The writer creates the file there; on a clean exit it is fsynced and renamed onto `path`, on
    an error it is removed. `suffix` keeps an ending the writer insists on (".keras").
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path, suffix)
    try:
        yield temporary
        fd = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        if temporary.is_dir() and not temporary.is_symlink():
            shutil.rmtree(temporary, ignore_errors=True)
        else:
            temporary.unlink(missing_ok=True)
        raise


def write_bytes(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Replace `path` with `data` at once: readers see the old content or the new, never a part."""
    with open_replacing(path, mode=mode) as out:
        out.write(data)


def write_text(path: Path, text: str, *, mode: int | None = None, encoding: str = "utf-8") -> None:
    """`write_bytes` for text."""
    write_bytes(path, text.encode(encoding), mode=mode)


def copy_file(source: Path, path: Path, *, mode: int | None = None) -> None:
    """Copy `source` onto `path` (streamed, never in memory) through a temporary name."""
    with open(source, "rb") as src, open_replacing(path, mode=mode) as out:
        shutil.copyfileobj(src, out, CHUNK)


def write_temporary(path: Path, chunks: Iterable[bytes], *, mode: int | None = None) -> Path:
    """Write `chunks` to a new temporary file beside `path` and fsync it; the caller renames or removes it.

    For writers that choose the final name only afterwards (Django's storage picks a free one).
    """
    temporary = temporary_path(path)
    try:
        with _create(temporary, mode) as out:
            for chunk in chunks:
                out.write(chunk)
            _sync(out)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return temporary


def publish_new(temporary: Path, path: Path) -> None:
    """Give a finished temporary file its final name unless that name exists (FileExistsError then).

    A hard link is an atomic "create if absent" also on NFS; the temporary name is removed after.
    Where the file system has no hard links, the name is reserved (O_EXCL) and the file renamed
    over the reservation: a reader may then see an empty file for an instant, never a partial one.
    """
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.replace(temporary, path)
        return
    Path(temporary).unlink(missing_ok=True)


def create(path: Path, data: bytes, *, mode: int | None = None) -> bool:
    """Write `path` only if it does not exist yet, whole or not at all; False when it was there.

    For a file every process must agree on (the generated secret key): when two machines start at
    once, one wins and the other reads the winner's file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = write_temporary(path, [data], mode=mode)
    try:
        publish_new(temporary, path)
    except FileExistsError:
        return False
    finally:
        temporary.unlink(missing_ok=True)
    return True


def remove_stale(folder: Path, older_than: float, *, now: float | None = None) -> int:
    """Remove the temporary files (and folders) in `folder` not written for `older_than` seconds.

    Leftovers of processes killed mid-write; a write in progress keeps its file's time fresh.
    Not recursive: callers name the folders writes go to. Returns how many entries went.
    """
    cutoff = (time.time() if now is None else now) - older_than
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return 0
    for entry in entries:
        if not is_temporary(entry.name):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_mtime > cutoff:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)
        except FileNotFoundError:
            continue  # renamed into place or removed meanwhile
        removed += 1
    return removed
