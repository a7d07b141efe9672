"""What a finished job knows about each image: its prediction, and the base's features of it.

No Django. Kept in the job's folder next to its model, written once when the job ends:
- `outcomes.npz`: per evaluated split ("validation", "test"), the image ids in the order the job
  saw them, their true label index and the model's probabilities (float32). The images behind a
  confusion cell, a label's missed images, and the images that flipped between two jobs are read
  from here; the job row keeps only the summary (training.evaluation), so the page that polls it
  stays small.
- `features.npz`: per split ("train", "validation", "test"), image ids and the frozen base's
  pooled features of each un-augmented image (float16: half the disk, and a head trained on them
  scores the same). Suspected label errors and near-duplicates are computed from these without
  running the base again. Absent when the job did not cache features.

Both files are written under a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from webapp import atomic

OUTCOMES_FILE = "outcomes.npz"
FEATURES_FILE = "features.npz"
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class SplitOutcome:
    """One split as the saved model saw it: row i is image `image_ids[i]`."""

    image_ids: np.ndarray  # int64 (n,)
    truth: np.ndarray  # int64 (n,), index into the job's labels
    probabilities: np.ndarray  # float32 (n, classes)

    @property
    def predicted(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1) if len(self.image_ids) else np.zeros(0, np.int64)

    @property
    def confidence(self) -> np.ndarray:
        """The probability of the predicted label."""
        if not len(self.image_ids):
            return np.zeros(0, np.float32)
        return self.probabilities[np.arange(len(self.image_ids)), self.predicted]

    def correct(self) -> np.ndarray:
        return self.predicted == self.truth


@dataclass(frozen=True)
class SplitFeatures:
    image_ids: np.ndarray  # int64 (n,)
    features: np.ndarray  # float16 (n, d)


def save_outcomes(
    folder: Path,
    image_ids: dict[str, Sequence[int]],
    truth: dict[str, Sequence[int]],
    probabilities: dict[str, np.ndarray],
) -> Path:
    """Write outcomes.npz for the splits in `probabilities`."""
    arrays: dict[str, np.ndarray] = {}
    for split, probs in probabilities.items():
        arrays[f"{split}_ids"] = np.asarray(image_ids[split], np.int64)
        arrays[f"{split}_truth"] = np.asarray(truth[split], np.int64)
        arrays[f"{split}_probabilities"] = np.asarray(probs, np.float32)
    return _write_npz(folder / OUTCOMES_FILE, arrays)


def save_features(folder: Path, image_ids: dict[str, Sequence[int]], features: dict[str, np.ndarray]) -> Path | None:
    """Write features.npz for the splits in `features`; nothing when there are none."""
    if not features:
        return None
    arrays: dict[str, np.ndarray] = {}
    for split, values in features.items():
        arrays[f"{split}_ids"] = np.asarray(image_ids[split], np.int64)
        arrays[f"{split}_features"] = np.asarray(values, np.float16)
    return _write_npz(folder / FEATURES_FILE, arrays)


def load_outcomes(folder: Path) -> dict[str, SplitOutcome]:
    """Per split; empty when the job kept none (it failed, or ran before they were kept)."""
    arrays = _read_npz(folder / OUTCOMES_FILE)
    return {
        split: SplitOutcome(
            arrays[f"{split}_ids"], arrays[f"{split}_truth"], arrays[f"{split}_probabilities"].astype(np.float32)
        )
        for split in SPLITS
        if f"{split}_ids" in arrays
    }


def load_features(folder: Path) -> dict[str, SplitFeatures]:
    """Per split; empty when the job kept none."""
    arrays = _read_npz(folder / FEATURES_FILE)
    return {
        split: SplitFeatures(arrays[f"{split}_ids"], arrays[f"{split}_features"])
        for split in SPLITS
        if f"{split}_ids" in arrays
    }


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    with atomic.open_replacing(path) as out:  # a reader elsewhere never loads half an archive
        np.savez(out, **arrays)
    return path


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (FileNotFoundError, OSError, ValueError):
        return {}
