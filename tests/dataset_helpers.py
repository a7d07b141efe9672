"""Builders for the dataset tests: zips (good and hostile) and datasets filled without a worker."""

from __future__ import annotations

import io
import stat
import struct
import zipfile
from pathlib import Path

from tests.helpers import noise_image_bytes


def make_zip(members: dict[str, bytes | None], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip holding `members` (name -> bytes); a name ending in "/" with None is a folder entry."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=compression) as zf:
        for name, data in members.items():
            if data is None:
                zf.writestr(zipfile.ZipInfo(name), b"")
            else:
                zf.writestr(name, data)
    return out.getvalue()


def image_zip(labels: dict[str, int], *, prefix: str = "", seed: int = 0, size: tuple[int, int] = (48, 48)) -> bytes:
    """A folder-per-class zip with `n` distinct noise PNGs per label."""
    members: dict[str, bytes | None] = {}
    for label, count in labels.items():
        for i in range(count):
            seed += 1
            members[f"{prefix}{label}/img_{i:03d}.png"] = noise_image_bytes(seed, size=size)
    return make_zip(members)


def zip_with_symlink(name: str, target: str, extra: dict[str, bytes] | None = None) -> bytes:
    """A zip whose member `name` is a Unix symbolic link to `target` (as `zip --symlinks` makes)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for member, data in (extra or {}).items():
            zf.writestr(member, data)
        info = zipfile.ZipInfo(name)
        info.create_system = 3
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, target)
    return out.getvalue()


def mark_encrypted(data: bytes) -> bytes:
    """Set the 'encrypted' flag on every member, as a password-protected zip carries it.

    zipfile cannot write encrypted archives; the flag is what readers (and TransferLab) look at.
    """
    buf = bytearray(data)
    for signature, flag_offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = 0
        while (pos := buf.find(signature, start)) != -1:
            (flags,) = struct.unpack_from("<H", buf, pos + flag_offset)
            struct.pack_into("<H", buf, pos + flag_offset, flags | 0x1)
            start = pos + 4
    return bytes(buf)


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def files_under(folder: Path) -> list[Path]:
    """Every regular file below `folder` (journals included), for "nothing left behind" checks."""
    if not folder.exists():
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file())
