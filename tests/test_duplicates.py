"""Near-duplicates across splits (training.duplicates): the same photo re-encoded, resized or cropped.

The pictures are generated photo-like images (smooth random scenes, like a photo's low frequencies)
and the features are the worst case for the picture check: every image of a label gets nearly the
same features, as pooled features of similar photos are. With the real weights and photos beside
the project, the same checks run on 200 real hand-sign photos and their real features.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import SHARED
from training import duplicates

pytestmark = pytest.mark.storage_free  # neither database nor queue: the PostgreSQL run leaves it out


def scene(seed: int, side: int = 240, tint: tuple[int, int, int] = (60, -20, -20)) -> Image.Image:
    """A photo-like picture: a smooth random scene with a tint (a 'class') and fine grain."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    picture = np.asarray(Image.fromarray(small).resize((side, side), Image.Resampling.BICUBIC), dtype=np.int16)
    picture = picture + rng.integers(-10, 11, size=(side, side, 3)) + np.array(tint, dtype=np.int16)
    return Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8))


def with_object(background: Image.Image, x: float, y: float) -> Image.Image:
    """The same background with a dark object at (x, y): another photo of the same scene."""
    picture = background.copy()
    side = picture.width // 5
    left, top = int(x * picture.width), int(y * picture.height)
    picture.paste((30, 25, 20), (left, top, left + side, top + side))
    return picture


def reopened(picture: Image.Image, fmt: str, **options) -> Image.Image:
    out = io.BytesIO()
    picture.save(out, format=fmt, **options)
    return Image.open(io.BytesIO(out.getvalue())).convert("RGB")


def as_jpeg_85(picture: Image.Image) -> Image.Image:
    return reopened(reopened(picture, "PNG"), "JPEG", quality=85)


def resized_80(picture: Image.Image) -> Image.Image:
    return picture.resize((round(picture.width * 0.8), round(picture.height * 0.8)), Image.Resampling.BILINEAR)


def cropped_2(picture: Image.Image) -> Image.Image:
    dx, dy = round(picture.width * 0.02), round(picture.height * 0.02)
    return picture.crop((dx, dy, picture.width - dx, picture.height - dy))


def cropped_2_corner(picture: Image.Image) -> Image.Image:
    return picture.crop((round(picture.width * 0.02), round(picture.height * 0.02), picture.width, picture.height))


def alike_features(count: int, seed: int = 0) -> np.ndarray:
    """Nearly the same features for every image (cosine above 0.99): only the pictures can tell them apart."""
    rng = np.random.default_rng(seed)
    return np.abs(rng.normal(1.0, 0.01, size=(1, 64)) + rng.normal(0, 0.005, size=(count, 64))).astype(np.float16)


def pairs_of(splits: list[str], pictures: list[Image.Image]) -> set[tuple[int, int]]:
    found = duplicates.find_pairs(splits, alike_features(len(pictures)), lambda i: pictures[i])
    return {(p.kept, p.moved) for p in found}


@pytest.mark.parametrize("copy", [as_jpeg_85, resized_80, cropped_2, cropped_2_corner])
def test_a_copy_of_a_training_photo_in_validation_is_found(copy):
    originals = [scene(seed) for seed in range(12)]
    pictures = [*originals, copy(originals[3]), copy(originals[7])]
    splits = ["train"] * 12 + ["validation", "test"]

    assert pairs_of(splits, pictures) == {(3, 12), (7, 13)}


def test_different_photos_of_the_same_class_are_not_paired():
    pictures = [scene(seed) for seed in range(30)]
    splits = ["train", "validation", "test"] * 10

    assert pairs_of(splits, pictures) == set()


def test_different_photos_of_the_same_scene_are_not_paired():
    background = scene(99)
    pictures = [with_object(background, x, 0.4) for x in (0.1, 0.25, 0.4, 0.55, 0.7)]
    splits = ["train", "validation", "train", "test", "validation"]

    assert pairs_of(splits, pictures) == set()


def test_copies_within_one_split_are_left_alone():
    original = scene(1)
    pictures = [original, as_jpeg_85(original), scene(2), resized_80(scene(2))]

    assert pairs_of(["train", "train", "validation", "validation"], pictures) == set()


def test_the_validation_or_test_image_is_the_one_that_moves():
    original = scene(5)
    pictures = [as_jpeg_85(original), original, resized_80(original)]
    splits = ["test", "validation", "train"]

    found = duplicates.find_pairs(splits, alike_features(3), lambda i: pictures[i])

    assert {(p.kept, p.moved) for p in found} == {(2, 0), (2, 1), (1, 0)}
    assert all(p.picture_similarity >= duplicates.PICTURE_THRESHOLD for p in found)


def test_flat_or_unreadable_pictures_are_never_paired():
    blank = Image.new("RGB", (200, 200), (120, 130, 140))
    pictures = [blank, reopened(blank, "JPEG", quality=85), scene(3), None]
    splits = ["train", "validation", "train", "validation"]

    assert pairs_of(splits, pictures) == set()


def test_features_far_apart_are_never_compared():
    original = scene(8)
    features = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=np.float16)
    opened = []

    def load(index: int) -> Image.Image:
        opened.append(index)
        return original

    assert duplicates.find_pairs(["train", "validation"], features, load) == []
    assert opened == []  # no picture was even read


# --- The real photos, when they are beside the project ------------------------------------------------
REAL_PHOTOS = SHARED / "photos" / "signdigits5"
REAL_WEIGHTS = SHARED / "weights" / "mobilenet_2_5_224_tf_no_top.h5"


@pytest.mark.realweights
@pytest.mark.skipif(
    not REAL_PHOTOS.is_dir() or not REAL_WEIGHTS.is_file(),
    reason=f"the real photos and weights are not here ({REAL_PHOTOS}, {REAL_WEIGHTS})",
)
@pytest.mark.parametrize("copy", [as_jpeg_85, resized_80, cropped_2, cropped_2_corner])
def test_real_photos_copies_are_found_and_distinct_photos_are_not(copy, tmp_path):
    from classifier import imaging, zoo
    from training import trainer

    paths = sorted(REAL_PHOTOS.glob("*/*"))
    copies = []
    for i, path in enumerate(paths[:40]):
        target = tmp_path / f"copy-{i}.png"
        copy(Image.open(path).convert("RGB")).save(target)
        copies.append(target)
    entry = zoo.get("mobilenet-0.25-224")
    base = trainer.Base(entry.key, entry.name, entry.input_size,
                        lambda: entry.build(REAL_WEIGHTS, include_top=False), entry.preprocess)  # fmt: skip
    every = [*paths, *copies]
    features = trainer.base_features(base, [trainer.Example(Path(p), 0, i) for i, p in enumerate(every)])
    thumbnails = [reopened(Image.open(p).convert("RGB"), "JPEG", quality=85) for p in every]
    for picture in thumbnails:
        picture.thumbnail((imaging.THUMBNAIL_SIDE, imaging.THUMBNAIL_SIDE))
    splits = ["train"] * len(paths) + ["validation"] * len(copies)

    found = duplicates.find_pairs(splits, features, lambda i: thumbnails[i])

    assert {(p.kept, p.moved) for p in found} == {(i, len(paths) + i) for i in range(len(copies))}
