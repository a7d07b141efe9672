"""Safe image decoding for everything users upload: photos to classify and dataset images.

Plain Pillow and NumPy, no Django: callers pass the limits from settings. Every refusal raises
`ImageError` whose message is a sentence meant for the user who uploaded the file.
"""

from __future__ import annotations

import ctypes
import functools
import io
import math
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

# Never trust the extension or the Content-Type: Pillow is told which decoders it may use.
SUPPORTED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")
SUPPORTED_DESCRIPTION = "JPEG, PNG, GIF, WebP, BMP or TIFF"
SUPPORTED_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff")
THUMBNAIL_SIDE = 256
# A truncated file is an error to report, not something to decode half-grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# Our own pixel check runs first with a clear message; Pillow's is disabled so the limit is ours.
Image.MAX_IMAGE_PIXELS = None
# A decode for a given side keeps at least this many times that side before the final resize: a box
# reduction that far from the target is indistinguishable from resizing the full-size picture (the
# same factor as the `reducing_gap` of `to_model_input` and `thumbnail_jpeg`).
REDUCING_GAP = 3.0
# Pictures in other modes than RGB are turned to RGB and reduced a strip of about this many pixels at
# a time, so no full-size RGB (or RGBA, or float) copy is ever made next to the decoded picture.
STRIP_PIXELS = 2_000_000
# EXIF orientation (tag 0x0112) -> the transposition that shows the picture the right way up.
ORIENTATION_TAG = 0x0112
_TRANSPOSITIONS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# A classify request that decoded at least this many pixels ends with `release_memory`.
RELEASE_AFTER_PIXELS = 16_000_000


class ImageError(ValueError):
    """An uploaded file that cannot be used as an image; str(error) is the user-facing reason."""


@dataclass(frozen=True)
class DecodedImage:
    """An upload turned into an RGB picture the right way up.

    `width` and `height` are those of the stored file after EXIF rotation; `image` is smaller when
    a draft side was asked for: JPEG decodes at a reduced scale, other formats are reduced right
    after decoding, so a 50-megapixel upload holds its full size only while it is being decoded.
    """

    image: Image.Image
    format: str
    width: int
    height: int


def _read_all(source: bytes | BinaryIO | Path, max_bytes: int) -> bytes:
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    elif isinstance(source, Path):
        size = source.stat().st_size
        if size > max_bytes:
            raise ImageError(too_large_message(size, max_bytes))
        data = source.read_bytes()
    else:
        source.seek(0)
        data = source.read(max_bytes + 1)
    if len(data) == 0:
        raise ImageError("The file is empty (0 bytes).")
    if len(data) > max_bytes:
        raise ImageError(too_large_message(len(data), max_bytes))
    return data


def _short(value: float) -> str:
    """A figure as people read it: "20", "1.5", "0.3" (no ".0", one decimal only below 10)."""
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}".rstrip("0").rstrip(".")


def mebibytes(size: int) -> str:
    return _short(size / 1_048_576)


def megapixels(pixels: int) -> str:
    return _short(pixels / 1e6)


def too_large_message(size: int, max_bytes: int) -> str:
    return (
        f"The file is {size / 1_048_576:.1f} MiB; the limit is {mebibytes(max_bytes)} MiB. "
        "Resize or compress it and try again."
    )


def _pixels_message(width: int, height: int, max_pixels: int) -> str:
    return (
        f"The image is {width} x {height} pixels ({megapixels(width * height)} megapixels); "
        f"the limit is {megapixels(max_pixels)} megapixels. Downscale it and try again."
    )


def decode(
    source: bytes | BinaryIO | Path,
    *,
    max_bytes: int,
    max_pixels: int,
    draft_side: int | None = None,
    check_size: Callable[[int, int], None] | None = None,
) -> DecodedImage:
    """Decode an upload into an RGB image, or raise ImageError with the reason.

    Handles what phones and editors produce: EXIF rotation, CMYK, 16-bit, palette, grayscale,
    transparency (flattened on white), animated GIF/WebP (first frame). `draft_side` asks for a
    picture only as large as images of that side need: JPEG decodes at a reduced scale that is
    still at least that side, and anything larger than REDUCING_GAP times it is box-reduced.
    `check_size(width, height)` runs once the header is read, before any pixel is decoded, and
    raises ImageError to refuse the file (a caller's own budget, such as the pixels of a request).
    """
    data = _read_all(source, max_bytes)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(_pixels_message(width, height, max_pixels))
            if check_size is not None:
                check_size(width, height)
            fmt = image.format or "unknown"
            if draft_side and fmt == "JPEG":
                image.draft("RGB", (draft_side, draft_side))
            image.load()  # decodes every byte: a truncated or corrupt file fails here
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"This file is not an image TransferLab can read ({SUPPORTED_DESCRIPTION}).") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError("The image declares more pixels than TransferLab accepts.") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error):
        raise ImageError("The image data is damaged or incomplete (the file may be truncated).") from None

    orientation = _orientation(image)
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    rgb = _reduced_rgb(image, draft_side) if draft_side else _to_rgb(image)
    if rgb is not image:
        image.close()  # the full-size pixels go now, not whenever the caller lets go of the result
    return DecodedImage(image=_transpose(rgb, orientation), format=fmt, width=width, height=height)


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1 when absent); a broken EXIF block is ignored rather than refused."""
    try:
        return int(image.getexif().get(ORIENTATION_TAG, 1))
    except Exception:
        return 1


def _transpose(image: Image.Image, orientation: int) -> Image.Image:
    """Turn the picture as the camera said: after the reduction, where it costs next to nothing."""
    method = _TRANSPOSITIONS.get(orientation)
    return image.transpose(method) if method is not None else image


def reduction_factor(size: tuple[int, int], side: int) -> int:
    """The largest box reduction that keeps both sides at least REDUCING_GAP x `side` (1: none)."""
    return max(1, int(min(size) / (side * REDUCING_GAP)))


def _reduced_rgb(image: Image.Image, side: int) -> Image.Image:
    """The decoded picture in RGB, box-reduced as far as `side` allows, with no other full-size copy.

    RGB reduces in one step. Other modes are converted a strip at a time: converting a 50-megapixel
    RGBA, palette or 16-bit PNG whole would need another full-size image (or a float64 array).
    """
    factor = reduction_factor(image.size, side)
    if factor == 1:
        return _to_rgb(image)
    if image.mode == "RGB":
        return image.reduce(factor)
    width, height = image.size
    out = Image.new("RGB", (math.ceil(width / factor), math.ceil(height / factor)))
    rows = max(1, STRIP_PIXELS // (width * factor)) * factor  # a multiple of the factor: no seams
    grey_top = _grey_top(image)
    for top in range(0, height, rows):
        strip = _to_rgb(image.crop((0, top, width, min(top + rows, height))), grey_top)
        out.paste(strip.reduce(factor), (0, top // factor))
    return out


def _grey_top(image: Image.Image) -> float:
    """The value that becomes white in 16-bit, 32-bit and float greyscale, decided on the whole picture."""
    mode = image.mode
    if not (mode.startswith("I") or mode == "F"):
        return 255.0
    highest = float(image.getextrema()[1])
    if mode == "F":
        return max(highest, 1.0)
    return 65535.0 if mode.startswith("I;16") or highest > 255 else 255.0


def _to_rgb(image: Image.Image, grey_top: float | None = None) -> Image.Image:
    """RGB of any decoded mode; `grey_top` (see `_grey_top`) when `image` is a strip of a larger one."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I") or mode == "F":
        # 16-bit and float greyscale: Pillow's convert("L") clips at 255; scale the range instead.
        top = grey_top if grey_top is not None else _grey_top(image)
        values = np.asarray(image, dtype=np.float64)
        grey = np.clip(values * (255.0 / top), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def to_model_input(image: Image.Image, size: int) -> np.ndarray:
    """Resize to the model's square input, as Keras's own loaders do; uint8 HxWx3."""
    if image.mode != "RGB":
        image = _to_rgb(image)
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.asarray(image, dtype=np.uint8)


def thumbnail_jpeg(image: Image.Image, side: int = THUMBNAIL_SIDE, quality: int = 85) -> bytes:
    """A JPEG no larger than side x side, keeping the aspect ratio, for grids and result cards.

    Resized into a new image rather than copied then shrunk in place: the picture given may be
    large, and a copy of it would double what it holds for a moment.
    """
    size = _fit(image.size, side)
    thumb = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0) if size != image.size else image
    if thumb.mode != "RGB":
        thumb = _to_rgb(thumb)
    out = io.BytesIO()
    thumb.save(out, format="JPEG", quality=quality, optimize=False)
    return out.getvalue()


def _fit(size: tuple[int, int], side: int) -> tuple[int, int]:
    """`size` scaled down (never up) to fit in side x side, keeping its aspect ratio."""
    width, height = size
    scale = min(side / width, side / height, 1.0)
    return max(1, round(width * scale)), max(1, round(height * scale))


def content_type(fmt: str) -> str:
    """The MIME type to serve a stored original with, from the decoded format (never the upload's)."""
    return {
        "JPEG": "image/jpeg",
        "PNG": "image/png",
        "GIF": "image/gif",
        "WEBP": "image/webp",
        "BMP": "image/bmp",
        "TIFF": "image/tiff",
    }.get(fmt, "application/octet-stream")


def extension(fmt: str) -> str:
    """The file extension a stored original gets, from the decoded format."""
    return {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif"}.get(
        fmt, ".img"
    )


def release_memory(pixels_decoded: int) -> None:
    """After large pictures, hand the freed decode buffers back to the OS: glibc keeps them otherwise.

    Pillow holds a decoded picture in blocks of up to 16 MB. Once glibc has raised its mmap
    threshold those come from the heap (one arena per thread in a threaded server), and freed heap
    pages stay resident: measured, a web worker kept 10-60 MB after each request of 49-megapixel
    PNGs decoded one at a time (3 GB when 16 were held at once). malloc_trim(0) returns them in a
    few milliseconds. Only called when `pixels_decoded` reaches RELEASE_AFTER_PIXELS; no-op off glibc.
    """
    if pixels_decoded < RELEASE_AFTER_PIXELS:
        return
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc only; musl and macOS have none
    except (AttributeError, OSError, TypeError):
        return None
