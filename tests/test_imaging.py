"""Decoding what users upload: every odd or hostile file becomes an RGB image or a clear message."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from classifier import imaging
from classifier.imaging import ImageError, decode
from tests.helpers import image_bytes

pytestmark = pytest.mark.storage_free  # neither database nor queue: the PostgreSQL run leaves it out

LIMITS = {"max_bytes": 20 * 1024 * 1024, "max_pixels": 50_000_000}


def decode_ok(data: bytes, **kwargs) -> imaging.DecodedImage:
    decoded = decode(data, **{**LIMITS, **kwargs})
    assert decoded.image.mode == "RGB"
    return decoded


def refused(data: bytes, **kwargs) -> str:
    with pytest.raises(ImageError) as info:
        decode(data, **{**LIMITS, **kwargs})
    return str(info.value)


def test_plain_jpeg_decodes_with_its_size_and_format():
    decoded = decode_ok(image_bytes("JPEG", size=(64, 48)))
    assert (decoded.format, decoded.width, decoded.height) == ("JPEG", 64, 48)


def test_text_file_with_image_extension_is_refused_as_not_an_image():
    message = refused(b"this is not a picture, just text with a .jpg name\n" * 10)
    assert message == "This file is not an image TransferLab can read (JPEG, PNG, GIF, WebP, BMP or TIFF)."


def test_svg_is_refused_because_only_raster_formats_are_allowed():
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>'
    assert "not an image TransferLab can read" in refused(svg)


def test_zero_byte_file_is_refused_as_empty():
    assert refused(b"") == "The file is empty (0 bytes)."


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file_is_refused_as_damaged(fmt):
    noisy = np.random.default_rng(1).integers(0, 255, (200, 200, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(noisy).save(out, format=fmt)
    data = out.getvalue()
    message = refused(data[: len(data) // 2])
    assert message == "The image data is damaged or incomplete (the file may be truncated)."


def test_corrupt_jpeg_body_is_refused_as_damaged():
    data = bytearray(image_bytes("JPEG", size=(120, 120)))
    data[200:400] = b"\x00" * 200  # scribble over the compressed data, keep the header
    data = bytes(data[:-50])
    assert "damaged or incomplete" in refused(data)


def test_image_over_the_pixel_limit_is_refused_before_decoding():
    data = image_bytes("PNG", size=(2000, 1500), color=0, mode="L")
    message = refused(data, max_pixels=1_000_000)
    assert message.startswith("The image is 2000 x 1500 pixels (3 megapixels); the limit is 1 megapixels.")


def test_decompression_bomb_png_is_refused_without_allocating_it():
    # 20000 x 20000 one-bit PNG: a few kB on disk, 400 megapixels once decoded.
    out = io.BytesIO()
    Image.new("1", (20000, 20000)).save(out, format="PNG", optimize=True)
    assert len(out.getvalue()) < 200_000
    assert "400 megapixels" in refused(out.getvalue())


def test_file_over_the_size_limit_is_refused_with_both_sizes():
    message = refused(b"\xff" * 3_000_000, max_bytes=2 * 1024 * 1024)
    assert message == "The file is 2.9 MiB; the limit is 2 MiB. Resize or compress it and try again."


def test_cmyk_jpeg_becomes_rgb():
    decoded = decode_ok(image_bytes("JPEG", mode="CMYK", color=(0, 255, 255, 0)))
    r, g, b = decoded.image.getpixel((5, 5))
    assert r > 200 and g < 60 and b < 60  # cyan-free, full magenta and yellow: red


def test_sixteen_bit_greyscale_png_keeps_its_brightness():
    array = np.full((32, 32), 40000, dtype=np.uint16)
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    decoded = decode_ok(out.getvalue())
    assert decoded.image.getpixel((1, 1)) == (155, 155, 155)  # 40000 / 65535 * 255, not clipped to 255


def test_palette_png_becomes_rgb():
    image = Image.new("RGB", (20, 20), (0, 0, 255)).convert("P", palette=Image.Palette.ADAPTIVE)
    out = io.BytesIO()
    image.save(out, format="PNG")
    assert decode_ok(out.getvalue()).image.getpixel((3, 3)) == (0, 0, 255)


def test_greyscale_jpeg_becomes_three_channels():
    decoded = decode_ok(image_bytes("JPEG", mode="L", color=128))
    assert decoded.image.getpixel((2, 2))[0] == decoded.image.getpixel((2, 2))[2]


def test_transparent_png_is_flattened_on_white():
    decoded = decode_ok(image_bytes("PNG", mode="RGBA", color=(255, 0, 0, 0)))
    assert decoded.image.getpixel((4, 4)) == (255, 255, 255)


def test_animated_gif_uses_its_first_frame():
    frames = [Image.new("RGB", (16, 16), color) for color in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    r, g, b = decode_ok(out.getvalue()).image.getpixel((8, 8))
    assert r > 200 and g < 50 and b < 50


def test_webp_decodes():
    decoded = decode_ok(image_bytes("WEBP", size=(30, 20), color=(0, 128, 0)))
    assert (decoded.format, decoded.width, decoded.height) == ("WEBP", 30, 20)


def test_exif_rotated_photo_is_turned_the_right_way_up():
    image = Image.new("RGB", (60, 30), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 30, 30))  # white left half
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif, quality=95)
    decoded = decode_ok(out.getvalue())
    assert (decoded.width, decoded.height) == (30, 60)
    assert decoded.image.size == (30, 60)
    top, bottom = decoded.image.getpixel((15, 5)), decoded.image.getpixel((15, 55))
    assert sum(top) > 600 and sum(bottom) < 100  # the white half is now on top


def test_draft_decodes_large_jpeg_smaller_but_reports_the_stored_size():
    decoded = decode_ok(image_bytes("JPEG", size=(1600, 1200)), draft_side=256)
    assert (decoded.width, decoded.height) == (1600, 1200)
    assert 256 <= min(decoded.image.size) < 1200


def test_model_input_is_a_square_uint8_array_of_the_model_size():
    decoded = decode_ok(image_bytes("PNG", size=(50, 80)))
    array = imaging.to_model_input(decoded.image, 96)
    assert array.shape == (96, 96, 3) and array.dtype == np.uint8


def test_thumbnail_is_a_small_jpeg_keeping_the_aspect_ratio():
    decoded = decode_ok(image_bytes("PNG", size=(1000, 500)))
    thumb = Image.open(io.BytesIO(imaging.thumbnail_jpeg(decoded.image)))
    assert thumb.format == "JPEG" and thumb.size == (256, 128)


# --- Big pictures: reduced while decoding, so the full size never outlives the decode ----------


def gradient(size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    """A smooth picture (no aliasing to tell resampling paths apart) with a distinct colour per corner."""
    width, height = size
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None].repeat(width, 1)
    rgb = np.stack([x, y, 255 - (x + y) / 2], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb).convert(mode)


def encoded(image: Image.Image, fmt: str = "PNG", **save_args) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **save_args)
    return out.getvalue()


def test_large_png_is_reduced_while_decoding_but_reports_its_real_size():
    decoded = decode_ok(encoded(gradient((3000, 2000))), draft_side=128)
    assert (decoded.format, decoded.width, decoded.height) == ("PNG", 3000, 2000)
    # Reduced by 5: still at least REDUCING_GAP x 128 on each side, so the final resize loses nothing.
    assert decoded.image.size == (600, 400)


def test_reduced_decode_gives_the_same_model_input_and_thumbnail_as_the_full_size():
    data = encoded(gradient((3000, 2000)))
    full, reduced = decode_ok(data), decode_ok(data, draft_side=256)
    for size in (128, 224):
        a = imaging.to_model_input(full.image, size).astype(int)
        b = imaging.to_model_input(reduced.image, size).astype(int)
        assert np.abs(a - b).max() <= 2
    thumbs = [Image.open(io.BytesIO(imaging.thumbnail_jpeg(d.image))) for d in (full, reduced)]
    assert thumbs[0].size == thumbs[1].size == (256, 171)
    assert np.abs(np.asarray(thumbs[0], dtype=int) - np.asarray(thumbs[1], dtype=int)).mean() < 1


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_large_exif_rotated_picture_is_reduced_then_turned_the_right_way_up(fmt):
    image = Image.new("RGB", (3000, 1500), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 1500, 1500))  # white left half
    exif = Image.Exif()
    exif[0x0112] = 6
    decoded = decode_ok(encoded(image, fmt, exif=exif), draft_side=128)
    assert (decoded.width, decoded.height) == (1500, 3000)
    w, h = decoded.image.size
    assert w < h < 3000
    top, bottom = decoded.image.getpixel((w // 2, h // 8)), decoded.image.getpixel((w // 2, h - h // 8))
    assert sum(top) > 700 and sum(bottom) < 60  # the white half is now on top


def test_large_transparent_png_is_flattened_on_white_while_reduced():
    image = Image.new("RGBA", (2400, 1200), (0, 0, 0, 0))  # transparent black: must not darken the edge
    image.paste((255, 0, 0, 255), (0, 0, 1200, 1200))
    decoded = decode_ok(encoded(image), draft_side=100)
    w, h = decoded.image.size
    assert (w, h) == (600, 300)
    assert decoded.image.getpixel((10, 10)) == (255, 0, 0)
    assert decoded.image.getpixel((w - 10, h - 10)) == (255, 255, 255)
    assert decoded.image.getpixel((w // 2, 150)) in ((255, 0, 0), (255, 255, 255))  # no grey seam


def test_large_palette_png_keeps_its_colours_while_reduced():
    image = gradient((1600, 1600), "P")
    decoded = decode_ok(encoded(image), draft_side=100)
    assert decoded.image.size == (320, 320)
    expected = np.asarray(image.convert("RGB").reduce(5), dtype=int)
    assert np.abs(np.asarray(decoded.image, dtype=int) - expected).mean() < 1


def test_large_sixteen_bit_png_keeps_its_brightness_across_strips(monkeypatch):
    monkeypatch.setattr(imaging, "STRIP_PIXELS", 50_000)  # many strips
    array = np.full((1200, 1200), 40000, dtype=np.uint16)
    array[600:] = 1000
    decoded = decode_ok(encoded(Image.fromarray(array)), draft_side=100)
    assert decoded.image.size == (300, 300)
    assert decoded.image.getpixel((5, 5)) == (155, 155, 155)
    assert decoded.image.getpixel((5, 295)) == (3, 3, 3)  # 1000 / 65535 * 255


def test_thirty_two_bit_greyscale_is_scaled_by_its_whole_range_not_strip_by_strip(monkeypatch):
    monkeypatch.setattr(imaging, "STRIP_PIXELS", 50_000)
    array = np.full((1200, 1200), 60000, dtype=np.int32)
    array[600:] = 200  # alone, a strip of these would count as 8-bit values and stay at 200
    decoded = decode_ok(encoded(Image.fromarray(array, mode="I"), "TIFF"), draft_side=100)
    assert decoded.image.getpixel((5, 5))[0] == 233  # 60000 / 65535 * 255
    assert decoded.image.getpixel((5, 295))[0] == 0


def test_check_size_is_asked_before_any_pixel_is_decoded():
    seen = []

    def refuse(width: int, height: int) -> None:
        seen.append((width, height))
        raise ImageError("No room left.")

    data = encoded(gradient((300, 200)))
    truncated = data[: len(data) // 2]  # decoding it would fail with "damaged"
    with pytest.raises(ImageError, match="No room left"):
        decode(truncated, **LIMITS, check_size=refuse)
    assert seen == [(300, 200)]


def test_memory_is_handed_back_only_after_large_decodes(monkeypatch):
    calls = []
    monkeypatch.setattr(imaging, "_malloc_trim", lambda: calls.append)
    imaging.release_memory(imaging.RELEASE_AFTER_PIXELS - 1)
    assert calls == []
    imaging.release_memory(imaging.RELEASE_AFTER_PIXELS)
    assert calls == [0]


def test_memory_release_works_on_this_platform():
    imaging.release_memory(10**9)  # glibc: malloc_trim; elsewhere nothing, and no error either
