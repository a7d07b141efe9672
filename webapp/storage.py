"""Django's file storage for MEDIA_ROOT, writing each file through a temporary name (`webapp.atomic`).

Django's FileSystemStorage writes an upload straight under its final name. On a DATA_DIR shared by
several machines a half-written file would then exist under a name that looks finished, and a
process killed mid-write would leave it there. This storage writes the bytes to a temporary file in
the destination folder first (fsynced), then hands that file to FileSystemStorage as a finished
temporary file, which renames it into place: name choice on collisions, permissions and group stay
Django's own (as for any upload Django spooled to disk, a name taken between its check and the
rename would be replaced; the app names these files with a fresh uuid4, so none ever is).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from django.core.files.storage import FileSystemStorage
from django.utils._os import safe_makedirs

from webapp import atomic


class _Written:
    """A finished file on disk, offered to FileSystemStorage as an upload's temporary file (it is moved)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def temporary_file_path(self) -> str:
        return str(self.path)


def _as_bytes(chunks: Iterable[bytes | str]) -> Iterator[bytes]:
    for chunk in chunks:
        yield chunk.encode() if isinstance(chunk, str) else chunk


class AtomicFileSystemStorage(FileSystemStorage):
    """FileSystemStorage whose files appear under their names complete, or not at all."""

    def _save(self, name: str, content) -> str:
        directory = Path(self.path(name)).parent
        if not directory.is_dir():  # as FileSystemStorage makes it: its mode on every new level
            if self.directory_permissions_mode is not None:
                safe_makedirs(str(directory), self.directory_permissions_mode, exist_ok=True)
            else:
                os.makedirs(directory, exist_ok=True)
        temporary = atomic.write_temporary(
            Path(self.path(name)), _as_bytes(content.chunks()), mode=self.file_permissions_mode
        )
        try:
            return super()._save(name, _Written(temporary))  # a rename within the folder
        finally:
            temporary.unlink(missing_ok=True)  # still there only when the rename did not happen
