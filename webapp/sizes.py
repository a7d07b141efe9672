"""Sizes as people read them, in the binary units limits and files are counted in.

"MB" would claim 1,000,000 bytes; the limits (MAX_UPLOAD_MB and the like) are multiples of 1,048,576,
so every page, message and command says KiB, MiB, GiB.
"""

from __future__ import annotations


def human_size(n: int) -> str:
    """12 bytes, 340 KiB, 1.5 MiB, 24 MiB, 3.2 GiB."""
    if n < 1024:
        return f"{n:,} byte{'s' if n != 1 else ''}"
    if n < 1024**2:
        return f"{n / 1024:,.0f} KiB"
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2)):
        if n >= size:
            value = n / size
            text = f"{value:,.0f}" if value >= 10 else f"{value:.1f}".removesuffix(".0")
            return f"{text} {unit}"
    raise AssertionError("unreachable")
