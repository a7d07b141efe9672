"""Near-duplicates across splits: the same photo in train and in validation or test, re-encoded or resized.

Plain NumPy and Pillow, no Django. Such a pair has different SHA-256s (so the dataset keeps both)
but shows the model the answer to a validation question during training, inflating the accuracy
it reports. Two checks, both needed:

1. Features: the job's cached base features, L2-normalised, compared by cosine similarity in
   blocks; each validation or test image keeps its MAX_CANDIDATES nearest images of earlier splits
   above FEATURE_FLOOR. Cheap, and base-independent enough to narrow thousands of images down to
   a few candidates, but not enough alone: pooled features of different photos of one hand sign
   on one background were more alike (cosine up to 0.976 with real MobileNet weights) than a photo
   and its own JPEG re-encoding (down to 0.909).
2. The picture: a SIGNATURE_SIDE x SIGNATURE_SIDE grey-level signature of each candidate's
   thumbnail, centred and normalised, compared as a correlation. A crop of a photo is its
   original's signature over a smaller box, so each picture also gets signatures of slightly
   cropped boxes (centred and at the corners) and a pair counts the best match of one picture's
   whole view with the other's crops. Re-encoding and resizing barely change the signature; a
   different photo of the same scene does.

PICTURE_THRESHOLD was calibrated on re-encoded (JPEG quality 85), resized (80%) and cropped (2%,
centred and at a corner) copies against every other photo of the same set: on 200 real hand-sign
photos the copies scored at least 0.9967 and the most alike different photos at most 0.9708; on
generated photo-like pictures 0.9997 and 0.47 (docs/PERFORMANCE.md, "Improve loop").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image
from threadpoolctl import threadpool_limits

SPLIT_ORDER = {"train": 0, "validation": 1, "test": 2}
FEATURE_FLOOR = 0.80  # cosine of L2-normalised features: below this, never the same photo
MAX_CANDIDATES = 50  # nearest images of earlier splits kept per image, by features
PICTURE_THRESHOLD = 0.985  # signature correlation from which two pictures are the same photo
SIGNATURE_SIDE = 16
MIN_CONTRAST = 2.0  # grey levels (standard deviation): flatter pictures have no signature to compare
BLOCK = 512  # images compared at once: bounds the similarity matrix's memory
# Boxes each picture's signature is also taken over, as fractions of its width and height:
# (left, top, right, bottom). The whole picture first.
CROPS = (
    (0.0, 0.0, 1.0, 1.0),
    *((m, m, 1 - m, 1 - m) for m in (0.01, 0.02, 0.03, 0.04)),
    *((x, y, x + c, y + c) for c in (0.98, 0.96) for x in (0.0, 1 - c) for y in (0.0, 1 - c)),
)


@dataclass(frozen=True)
class Pair:
    """Two images of different splits that are the same photo. `kept` is in the earlier split;
    `moved` is the validation or test image that joins `kept`'s split when the pair is fixed."""

    kept: int  # index into the inputs
    moved: int
    feature_similarity: float
    picture_similarity: float


def find_pairs(
    splits: Sequence[str],
    features: np.ndarray,
    load_picture: Callable[[int], Image.Image | None],
) -> list[Pair]:
    """Every near-duplicate pair across splits, most alike first.

    `splits[i]` and `features[i]` belong to image i; `load_picture(i)` gives its picture (a
    thumbnail is plenty) or None when it cannot be read (such an image is left out).
    """
    candidates = feature_candidates(splits, features)
    signatures: dict[int, np.ndarray | None] = {}

    def signature_of(index: int) -> np.ndarray | None:
        if index not in signatures:
            picture = load_picture(index)
            signatures[index] = picture_signatures(picture) if picture is not None else None
        return signatures[index]

    pairs = []
    for kept, moved, feature_similarity in candidates:
        a, b = signature_of(kept), signature_of(moved)
        if a is None or b is None:
            continue
        similarity = picture_similarity(a, b)
        if similarity >= PICTURE_THRESHOLD:
            pairs.append(Pair(kept, moved, round(feature_similarity, 4), round(similarity, 4)))
    pairs.sort(key=lambda p: (-p.picture_similarity, -p.feature_similarity, p.moved, p.kept))
    return pairs


def feature_candidates(splits: Sequence[str], features: np.ndarray) -> list[tuple[int, int, float]]:
    """(earlier-split index, later-split index, cosine) of the pairs worth looking at, by features."""
    order = np.array([SPLIT_ORDER[s] for s in splits], dtype=np.int64)
    x = np.asarray(features, dtype=np.float32)
    if len(x) == 0 or len(x) != len(order):
        return []
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    queries = np.flatnonzero(order > 0)
    found: list[tuple[int, int, float]] = []
    with threadpool_limits(limits=1, user_api="blas"):  # see training.suspects: small products, busy cores
        for start in range(0, len(queries), BLOCK):
            block = queries[start : start + BLOCK]
            similarity = x[block] @ x.T
            # Only images of an earlier split: a pair within one split leaks nothing.
            similarity[order[None, :] >= order[block][:, None]] = -np.inf
            keep = min(MAX_CANDIDATES, similarity.shape[1])
            nearest = np.argpartition(-similarity, keep - 1, axis=1)[:, :keep]
            for row, query in enumerate(block):
                for other in nearest[row]:
                    value = float(similarity[row, other])
                    if value >= FEATURE_FLOOR:
                        found.append((int(other), int(query), value))
    return found


def picture_signatures(picture: Image.Image) -> np.ndarray | None:
    """One centred, normalised grey-level signature per box of CROPS, shape (len(CROPS), side*side).

    None for a picture too flat to tell apart from another (a blank page, a single colour).
    """
    grey = picture.convert("L")
    width, height = grey.size
    rows = []
    for left, top, right, bottom in CROPS:
        box = (left * width, top * height, right * width, bottom * height)
        small = grey.resize((SIGNATURE_SIDE, SIGNATURE_SIDE), Image.Resampling.BOX, box=box)
        values = np.asarray(small, dtype=np.float32).reshape(-1)
        values = values - values.mean()
        norm = float(np.linalg.norm(values))
        if len(rows) == 0 and norm / np.sqrt(values.size) < MIN_CONTRAST:
            return None
        rows.append(values / max(norm, 1e-6))
    return np.stack(rows)


def picture_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """How alike two pictures are: the best correlation of one's whole view with the other's boxes."""
    return float(max((b @ a[0]).max(), (a @ b[0]).max()))
