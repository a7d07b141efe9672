"""Safe image decoding for everything users upload: photos to classify and dataset images.

Plain Pillow and NumPy, no Django: callers pass the limits from settings. Every refusal raises
`ImageError` whose message is a sentence meant for the user who uploaded the file.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# Never trust the extension or the Content-Type: Pillow is told which decoders it may use.
SUPPORTED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")
SUPPORTED_DESCRIPTION = "JPEG, PNG, GIF, WebP, BMP or TIFF"
SUPPORTED_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff")
THUMBNAIL_SIDE = 256
# A truncated file is an error to report, not something to decode half-grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# Our own pixel check runs first with a clear message; Pillow's is disabled so the limit is ours.
Image.MAX_IMAGE_PIXELS = None


class ImageError(ValueError):
    """An uploaded file that cannot be used as an image; str(error) is the user-facing reason."""


@dataclass(frozen=True)
class DecodedImage:
    """An upload turned into an RGB picture the right way up.

    `width` and `height` are those of the stored file after EXIF rotation; `image` may be smaller
    when a draft size was asked for (JPEG decodes at a reduced scale, much faster).
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


def too_large_message(size: int, max_bytes: int) -> str:
    return (
        f"The file is {size / 1_048_576:.1f} MB; the limit is {max_bytes / 1_048_576:.0f} MB. "
        "Resize or compress it and try again."
    )


def _pixels_message(width: int, height: int, max_pixels: int) -> str:
    return (
        f"The image is {width} x {height} pixels ({width * height / 1e6:.0f} megapixels); "
        f"the limit is {max_pixels / 1e6:.0f} megapixels. Downscale it and try again."
    )


def decode(
    source: bytes | BinaryIO | Path,
    *,
    max_bytes: int,
    max_pixels: int,
    draft_side: int | None = None,
) -> DecodedImage:
    """Decode an upload into an RGB image, or raise ImageError with the reason.

    Handles what phones and editors produce: EXIF rotation, CMYK, 16-bit, palette, grayscale,
    transparency (flattened on white), animated GIF/WebP (first frame). `draft_side` lets JPEG
    decode at a reduced scale that is still at least that many pixels on each side.
    """
    data = _read_all(source, max_bytes)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(_pixels_message(width, height, max_pixels))
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

    if _orientation_swaps_axes(image):
        width, height = height, width
    return DecodedImage(image=_to_rgb(_apply_exif_orientation(image)), format=fmt, width=width, height=height)


def _orientation_swaps_axes(image: Image.Image) -> bool:
    try:
        return image.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    except Exception:
        return False


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    """Rotate as the camera said; a broken EXIF block is ignored rather than refused."""
    try:
        return ImageOps.exif_transpose(image) or image
    except Exception:
        return image


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I") or mode == "F":
        # 16-bit and float greyscale: Pillow's convert("L") clips at 255; scale the range instead.
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        if mode == "F":
            top = max(float(values.max(initial=0)), 1.0)
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
    """A JPEG no larger than side x side, keeping the aspect ratio, for grids and result cards."""
    thumb = image.copy()
    thumb.thumbnail((side, side), Image.Resampling.BILINEAR, reducing_gap=3.0)
    if thumb.mode != "RGB":
        thumb = _to_rgb(thumb)
    out = io.BytesIO()
    thumb.save(out, format="JPEG", quality=quality, optimize=False)
    return out.getvalue()


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
