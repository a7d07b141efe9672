"""The frozen base's features through LiteRT: converted once per base, used only when it agrees.

No Django. Why it looks like this (numbers in docs/PERFORMANCE.md, Training):
- A transfer job's time is mostly one forward pass of the frozen base over every image, and
  LiteRT with its XNNPACK delegate runs the same float32 graph about 3x faster than TensorFlow
  on this CPU.
- What is converted is the trainer's feature extractor: pixels 0-255 in, the family's
  preprocessing (a fixed layer), the base, the pooling, features out. Once per base weights file,
  base, input size, cut and TensorFlow version: the file is kept, and the next job on the same
  base only loads it. Conversion time counts in the job that converts.
- The gate is the serving gate's, for features: the converted extractor is checked against Keras
  on fixed probe images when it is converted, and on a few of each job's own training images
  before that job's features pass. Features have no top-1, so the test is closeness relative to
  their scale (`compare_features`). A failed conversion is remembered with its reason (not tried
  again for the same file); any failure or disagreement means TensorFlow computes the features,
  and the job says why.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from classifier import lite

# Largest difference of any feature, as a share of the features' scale, that still counts as the
# same extractor. Float32 conversions measured here differ by a few 1e-6 of the scale.
FEATURE_TOLERANCE = 1e-4
JOB_CHECK_IMAGES = 4  # the job's own training images checked before its features pass
LITE_BATCH = 8  # images per LiteRT call: XNNPACK runs 8 at a time faster than 32 here (cache)
# Memory: converting takes lite.CONVERT_MB plus lite.CONVERT_WEIGHTS_FACTOR times the weights
# (measured); an interpreter holds the file and XNNPACK's packed copy of the weights.
INTERPRETER_WEIGHTS_FACTOR = 2


@dataclass(frozen=True)
class LiteFeatures:
    """Whether a job may compute its features with LiteRT, and what the converted file is keyed on."""

    folder: Path | None  # where converted extractors are kept; None: TensorFlow, for `off_reason`
    weights_id: str = ""  # SHA-256 of the base's weights file: another file converts again
    threads: int = 2  # the training worker owns the machine's cores
    off_reason: str = ""

    @classmethod
    def off(cls, reason: str) -> LiteFeatures:
        """TensorFlow computes the features, for this reason (a sentence)."""
        return cls(None, off_reason=reason)


@dataclass(frozen=True)
class FeaturePath:
    """What computes a job's features, and why: for the job's strategy and timings."""

    forward: Callable[[np.ndarray], np.ndarray] | None  # None: TensorFlow
    reason: str = ""  # why TensorFlow, a sentence
    convert_seconds: float = 0.0  # spent converting in this job (0 when the file was there)
    checked: int = 0  # images compared with Keras, probes and the job's own
    max_difference: float = 0.0  # largest difference relative to the features' scale

    @property
    def runtime(self) -> str:
        return "LiteRT" if self.forward is not None else "TensorFlow"

    @property
    def description(self) -> str:
        """'LiteRT', or 'TensorFlow (why)': what the job page shows."""
        return self.runtime if self.forward is not None else f"TensorFlow ({self.reason.rstrip('.')})"


def compare_features(
    reference: np.ndarray, candidate: np.ndarray, tolerance: float = FEATURE_TOLERANCE
) -> lite.Verdict:
    """Same features? Every value within `tolerance` times the features' scale (at least 1).

    Relative, not absolute as for probabilities: pooled features are unbounded activations (a
    MobileNet's stop at 6, a ResNet's reach tens), and float32 rounding grows with the values
    summed, so an absolute 1e-4 would refuse a correct conversion of a large-valued base. A
    real change (a wrong weight, a missing op) moves features by percents of their scale, far
    beyond 1e-4 of it. Below a scale of 1 it is the serving gate's absolute 1e-4.
    `top1_agreement` here is the share of images whose features are all within tolerance.
    """
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    checked = len(reference)
    if reference.shape != candidate.shape:
        return lite.Verdict(False, f"The converted base gives {candidate.shape} features, Keras {reference.shape}.",
                            checked, float("inf"), 0.0)  # fmt: skip
    if not np.all(np.isfinite(candidate)):
        return lite.Verdict(False, "The converted base gives invalid numbers (NaN or infinity).", checked,
                            float("inf"), 0.0)  # fmt: skip
    scale = max(1.0, float(np.max(np.abs(reference)))) if reference.size else 1.0
    per_image = np.abs(reference - candidate).reshape(checked, -1).max(axis=1) / scale if reference.size else []
    difference = float(np.max(per_image)) if len(per_image) else 0.0
    agreement = float(np.mean(np.asarray(per_image) <= tolerance)) if len(per_image) else 1.0
    if difference > tolerance:
        reason = (
            f"The converted base's features differ by up to {difference:.1e} of their scale (allowed {tolerance:.0e})."
        )
        return lite.Verdict(False, reason, checked, difference, agreement)
    return lite.Verdict(True, "", checked, difference, agreement)


def converted_path(settings: LiteFeatures, key: str, size: int, cut: str = "pooled") -> Path:
    """The converted extractor's file: one folder per base; weights, TensorFlow, size and cut in the name."""
    return Path(settings.folder) / key / f"{lite.file_stem(settings.weights_id)}-{size}px-{cut}.tflite"


def memory_mb(weights_bytes: int, converting: bool) -> float:
    """What LiteRT adds to a training process's memory: the interpreter, and the conversion if it converts."""
    weights_mb = weights_bytes / (1024 * 1024)
    conversion = lite.CONVERT_MB + lite.CONVERT_WEIGHTS_FACTOR * weights_mb if converting else 0.0
    return INTERPRETER_WEIGHTS_FACTOR * weights_mb + conversion


def lite_path(
    model,
    key: str,
    size: int,
    settings: LiteFeatures,
    job_images: Callable[[], np.ndarray],
    cut: str = "pooled",
    memory_left_mb: float | None = None,
) -> FeaturePath:
    """The LiteRT path for a Keras extractor (pixels in, features out), or TensorFlow and why.

    Converts and checks on probe images when no verdict is kept for this file (one process at a
    time: another job waits for its verdict), then checks on `job_images()` (uint8) before use.
    `memory_left_mb`: what the job's memory budget leaves; LiteRT is not used when it needs more.
    """
    if settings.folder is None:
        return FeaturePath(None, settings.off_reason or "LiteRT is not used for this run.")
    if not settings.weights_id:
        return FeaturePath(None, "The base's weights file is not known, so its conversion could not be kept.")
    target = converted_path(settings, key, size, cut)
    weights_bytes = sum(int(np.prod(w.shape)) * 4 for w in model.weights)
    convert_seconds = 0.0
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                verdict = lite.read_verdict(target)
                converting = verdict is None or (verdict.ok and not target.is_file())
                need = memory_mb(weights_bytes, converting)
                if memory_left_mb is not None and need > memory_left_mb:
                    return FeaturePath(None, _memory_reason(need, memory_left_mb, converting))
                if converting:
                    started = time.perf_counter()
                    verdict = _convert_and_check(model, size, target)
                    convert_seconds = time.perf_counter() - started
                    _forget_others(target, f"-{size}px-{cut}")
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        if not verdict.ok:
            return FeaturePath(None, verdict.reason, convert_seconds, verdict.checked, verdict.max_difference)
        interpreter = lite.LiteModel(target.read_bytes(), threads=settings.threads)

        def forward(batch: np.ndarray) -> np.ndarray:
            batch = np.asarray(batch, np.float32)
            parts = [interpreter.run(batch[i : i + LITE_BATCH]) for i in range(0, len(batch), LITE_BATCH)]
            return np.concatenate(parts)

        images = np.asarray(job_images(), np.float32)
        job = compare_features(_keras_features(model, images), forward(images))
    except Exception as exc:  # a full disk, an unreadable file, a graph that will not run: TensorFlow
        return FeaturePath(None, f"LiteRT could not be prepared: {lite.first_line(exc)}", convert_seconds)
    if not job.ok:
        reason = f"{job.reason.rstrip('.')} on this job's images."
        return FeaturePath(None, reason, convert_seconds, job.checked, job.max_difference)
    return FeaturePath(
        forward, "", convert_seconds, verdict.checked + job.checked, max(verdict.max_difference, job.max_difference)
    )


def _convert_and_check(model, size: int, target: Path) -> lite.Verdict:
    """Convert, compare with Keras on the probe images, keep the file only if it agrees; verdict either way."""
    import tensorflow as tf

    started = time.perf_counter()
    try:
        content = lite.convert(model)
        seconds = time.perf_counter() - started
        probes = lite.probe_images(size).astype(np.float32)
        reference = _keras_features(model, probes)
        # Two batch lengths, as the serving gate: the job's batches end with a shorter one.
        interpreter = lite.LiteModel(content, threads=2)
        candidate = np.concatenate([interpreter.run(probes[:1]), interpreter.run(probes[1:])])
        verdict = compare_features(reference, candidate)
    except Exception as exc:  # any converter failure means "TensorFlow computes the features"
        content, seconds = b"", time.perf_counter() - started
        verdict = lite.Verdict(False, f"Conversion failed: {lite.first_line(exc)}", 0, float("inf"), 0.0)
    verdict = lite.Verdict(**{**verdict.as_dict(), "convert_seconds": round(seconds, 2), "tensorflow": tf.__version__})
    lite.record(target, content, verdict)
    return verdict


def _memory_reason(need: float, left: float, converting: bool) -> str:
    what = "Converting this base to LiteRT and running it" if converting else "Running this base with LiteRT"
    return f"{what} needs about {need:,.0f} MiB more, and the training memory budget leaves {max(0, left):,.0f} MiB."


def _keras_features(model, images: np.ndarray) -> np.ndarray:
    """Keras's own features, eagerly (no tracing: a few images only)."""
    return np.concatenate([np.asarray(model(images[i : i + 16], training=False)) for i in range(0, len(images), 16)])


def _forget_others(target: Path, ending: str) -> None:
    """Remove this base's older files of the same size and cut (other weights or TensorFlow): never used again."""
    for path in target.parent.glob(f"*{ending}.*"):
        if path.suffix in (".tflite", ".json") and path.stem != target.stem:
            path.unlink(missing_ok=True)
