"""The LiteRT runtime: a Keras model converted once to TFLite float32, checked, served from a pool.

No Django here. Why it looks like this (numbers in docs/PERFORMANCE.md):
- LiteRT with its XNNPACK delegate runs the same float32 graph several times faster on CPU than
  TensorFlow's `tf.function`, with outputs within about 1e-6: every model should use it.
- Conversion takes seconds (minutes for the largest bases): it happens once per weights file, in
  the worker, never inside a request. The file name carries the weights' hash and the TensorFlow
  version that converted it, so a new weights file or a TensorFlow upgrade converts again.
- A converted model is used only after it agreed with Keras on fixed probe inputs (and whatever
  real images the caller adds): same top-1 everywhere, probabilities within TOLERANCE. A model
  that fails stays on TensorFlow, and the reason is kept for the Models page.
- One interpreter must not be used by two threads at once. A pool holds a few, each with its own
  share of the cores: a lone request uses all of them, concurrent requests each get their own
  interpreter, and the threads in use never exceed the cores given.
"""

from __future__ import annotations

import contextlib
import io
import json
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from webapp import atomic

# Largest difference of any probability between Keras and LiteRT that still counts as the same
# model. Float32 conversions measured here differ by about 1e-6; 1e-4 leaves room for summation
# order on other CPUs and none for a real change.
TOLERANCE = 1e-4
PROBE_IMAGES = 8
# Memory, measured (peak RSS, TensorFlow 2.21): converting takes about 300 MB plus 9 times the
# weights (MobileNetV2 +0.34 GB, ResNet50 +1.1 GB, ConvNeXt Base +3.3 GB), and a process keeps
# most of it afterwards.
CONVERT_MB, CONVERT_WEIGHTS_FACTOR = 300, 9


class ConversionFailed(Exception):
    """The model could not be converted, or the converted file does not agree with Keras."""


@dataclass(frozen=True)
class Verdict:
    """What the agreement check found: shown on the Models page and in the API."""

    ok: bool
    reason: str  # a sentence, empty when ok
    checked: int  # images compared
    max_difference: float  # largest probability difference
    top1_agreement: float  # share of images with the same top-1
    convert_seconds: float = 0.0
    tensorflow: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Verdict:
        fields = cls.__dataclass_fields__
        return cls(**{name: value for name, value in data.items() if name in fields})


def tensorflow_version() -> str:
    import tensorflow as tf

    return tf.__version__


def file_stem(weights_hash: str) -> str:
    """The converted file's name without suffix: same weights and same TensorFlow, same file."""
    return f"{weights_hash[:32]}-tf{tensorflow_version()}"


def convert(model: Any) -> bytes:
    """TFLite float32 flatbuffer of a Keras model, batch dimension left free."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    # Keras prints every traced tensor ("Saved artifact at ...") to stdout while exporting:
    # hundreds of lines per conversion in the worker's log, none useful to an administrator.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return converter.convert()


def probe_images(size: int, count: int = PROBE_IMAGES) -> np.ndarray:
    """Fixed uint8 images that exercise a model's whole input range: flat, gradients, noise."""
    rng = np.random.default_rng(20261126)
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    images = [
        np.full((size, size, 3), 128, np.float32),
        np.stack([np.tile(ramp, (size, 1)), np.tile(ramp[:, None], (1, size)), 255 - np.tile(ramp, (size, 1))], -1),
        ((np.indices((size, size)).sum(0) // max(1, size // 8)) % 2 * 255)[..., None].repeat(3, -1),
    ]
    while len(images) < count:
        images.append(rng.uniform(0, 255, (size, size, 3)))
    return np.clip(np.stack(images[:count]), 0, 255).astype(np.uint8)


def compare(reference: np.ndarray, candidate: np.ndarray, tolerance: float = TOLERANCE) -> Verdict:
    """Does the converted model give the same answers? Every top-1 identical, every probability close."""
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    if reference.shape != candidate.shape:
        return Verdict(False, f"The converted model gives {candidate.shape} outputs, Keras {reference.shape}.",
                       len(reference), float("inf"), 0.0)  # fmt: skip
    if not np.all(np.isfinite(candidate)):
        return Verdict(False, "The converted model gives invalid numbers (NaN or infinity).", len(reference),
                       float("inf"), 0.0)  # fmt: skip
    difference = float(np.max(np.abs(reference - candidate))) if reference.size else 0.0
    same_top1 = reference.argmax(axis=1) == candidate.argmax(axis=1)
    agreement = float(np.mean(same_top1)) if len(same_top1) else 1.0
    checked = len(reference)
    if not same_top1.all():
        reason = f"The converted model changes the top answer on {int((~same_top1).sum())} of {checked} images."
        return Verdict(False, reason, checked, difference, agreement)
    if difference > tolerance:
        reason = f"The converted model's probabilities differ by up to {difference:.1e} (allowed {tolerance:.0e})."
        return Verdict(False, reason, checked, difference, agreement)
    return Verdict(True, "", checked, difference, agreement)


def convert_and_check(model: Any, preprocess: Any, images: np.ndarray, target: Path) -> Verdict:
    """Convert `model`, run both on `images` (uint8), keep the file at `target` only if they agree.

    The verdict is written next to the file (`target.with_suffix(".json")`) either way, so a
    model that failed is not converted again for the same weights, and its reason can be shown.
    """
    import tensorflow as tf

    started = time.perf_counter()
    verdict: Verdict
    try:
        content = convert(model)
        seconds = time.perf_counter() - started
        x = np.asarray(preprocess(images), dtype=np.float32)
        reference = np.concatenate([np.asarray(model(x[i : i + 16], training=False)) for i in range(0, len(x), 16)])
        # Two batch sizes: the pool resizes the input per request, and some graphs only run at 1.
        candidate = np.concatenate([LiteModel(content, threads=2).run(x[:1]), LiteModel(content, threads=2).run(x[1:])])
        verdict = compare(reference, candidate)
        verdict = Verdict(**{**verdict.as_dict(), "convert_seconds": round(seconds, 2)})
    except Exception as exc:  # any converter failure means "stay on TensorFlow"
        content = b""
        verdict = Verdict(False, f"Conversion failed: {first_line(exc)}", 0, float("inf"), 0.0)
    verdict = Verdict(**{**verdict.as_dict(), "tensorflow": tf.__version__})
    record(target, content, verdict)
    return verdict


def read_verdict(target: Path) -> Verdict | None:
    """The recorded verdict for a converted file, or None when it was never converted."""
    try:
        return Verdict.from_dict(json.loads(target.with_suffix(".json").read_text()))
    except (OSError, ValueError, TypeError):
        return None


class LiteModel:
    """One interpreter: not thread-safe, resized to each batch length it sees."""

    def __init__(self, content: bytes, threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        self.threads = max(1, threads)
        self._interpreter = Interpreter(model_content=content, num_threads=self.threads)
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        self._batch = None

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Outputs for a float32 batch of preprocessed images."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if len(batch) != self._batch:
            self._interpreter.resize_tensor_input(self._input["index"], [len(batch), *batch.shape[1:]])
            self._interpreter.allocate_tensors()
            self._batch = len(batch)
        self._interpreter.set_tensor(self._input["index"], batch)
        self._interpreter.invoke()
        return np.array(self._interpreter.get_tensor(self._output["index"]))


class LitePool:
    """Interpreters for one model, shared by request threads without oversubscribing the cores.

    The pool hands out `cores` thread tokens. A request that finds every core free runs on the
    interpreter with `cores` threads (the fastest for one request); when requests overlap, each
    runs on a one-thread interpreter of its own, so two requests on two cores run side by side
    instead of queueing behind one lock, and a third waits for a core rather than slowing all.
    One-thread interpreters are built only when requests first overlap.
    """

    def __init__(self, content: bytes, cores: int = 2):
        self._content = content
        self.cores = max(1, cores)
        self._full = LiteModel(content, threads=self.cores)
        self._singles: list[LiteModel] = []
        self._free = self.cores
        self._waiting = 0
        self._condition = threading.Condition()
        self.interpreters = 1  # built so far: benchmarks report memory per interpreter

    @contextlib.contextmanager
    def interpreter(self) -> Iterator[LiteModel]:
        """An interpreter for this thread alone, with as many cores as are free (at least one)."""
        with self._condition:
            self._waiting += 1
            while self._free == 0:
                self._condition.wait()
            self._waiting -= 1
            # All cores for this request only when nobody else wants one: under load two
            # one-thread interpreters side by side beat one two-thread interpreter in turn.
            if self._free == self.cores and self._waiting == 0:
                taken, model = self.cores, self._full
            else:
                taken, model = 1, (self._singles.pop() if self._singles else None)
            self._free -= taken
        try:
            if model is None:
                model = LiteModel(self._content, threads=1)
                self.interpreters += 1
            yield model
        finally:
            with self._condition:
                self._free += taken
                if taken == 1 and self.cores > 1 and model is not None:
                    self._singles.append(model)
                self._condition.notify_all()

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Outputs for a float32 batch of preprocessed images."""
        with self.interpreter() as model:
            return model.run(batch)


def record(target: Path, content: bytes, verdict: Verdict | Int8Verdict) -> None:
    """Keep the converted file only when it agreed, and its verdict next to it either way."""
    target.parent.mkdir(parents=True, exist_ok=True)
    # Readers (other processes, other machines on shared storage) never see half a file.
    if verdict.ok:
        atomic.write_bytes(target, content)
    else:
        target.unlink(missing_ok=True)
    atomic.write_bytes(target.with_suffix(".json"), json.dumps(verdict.as_dict(), indent=1).encode())


def first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:300]


# --- Int8 (an administrator's choice per model, never automatic) -------------------------------
# Full integer quantization runs about twice as fast as float32 on CPU, but rounds every
# activation to 256 levels: some answers change. It is calibrated on real images (the range of
# each activation comes from them), and its top-1 agreement with float32 is measured on images it
# was not calibrated on, so an administrator switches it on knowing what it costs.

# Calibration images beyond this add conversion time, not accuracy (the same cap as the exports).
INT8_MAX_CALIBRATION = 200
# With fewer images than this, none are held out: calibration and agreement use all of them.
INT8_MIN_HELD_OUT = 20
# Every INT8_HOLD_OUT_EVERY-th image is kept for measuring agreement, never seen by calibration.
INT8_HOLD_OUT_EVERY = 4
INT8_BATCH = 16


@dataclass(frozen=True)
class Int8Verdict:
    """What an int8 conversion gave: how many images calibrated it and how often it agrees with float32."""

    ok: bool  # converted and runs; agreement is reported, never a gate (the administrator decides)
    reason: str  # why not ok, a sentence
    calibration_images: int
    checked: int  # images the agreement was measured on
    agreeing: int  # of those, images with the same top-1 as float32
    held_out: bool  # measured on images calibration never saw (False: too few images to hold some out)
    reference: str = ""  # what float32 means here: "LiteRT float32" or "Keras float32"
    integer_only: bool = True  # every operation in int8 (False: some kept in float where int8 has no kernel)
    max_difference: float = 0.0
    convert_seconds: float = 0.0
    tensorflow: str = ""

    @property
    def top1_agreement(self) -> float:
        return self.agreeing / self.checked if self.checked else 0.0

    @property
    def agreement_text(self) -> str:
        return agreement_text(self.agreeing, self.checked)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Int8Verdict:
        fields = cls.__dataclass_fields__
        return cls(**{name: value for name, value in data.items() if name in fields})


def convert_int8(model: Any, preprocess: Any, calibration: np.ndarray, integer_only: bool = True) -> bytes:
    """TFLite int8 flatbuffer calibrated on `calibration` (uint8 images), with float32 input and output.

    The input and output stay float32 so the engine feeds it exactly what it feeds the float32
    file (its preprocessing unchanged) and reads probabilities; the converter quantizes inside.
    `integer_only=False` lets operations without an int8 kernel stay in float32.
    """
    import tensorflow as tf

    if not len(calibration):
        raise ConversionFailed("There are no images to calibrate the int8 model with.")

    def representative() -> Iterator[list[np.ndarray]]:
        for start in range(0, len(calibration), INT8_BATCH):
            batch = np.asarray(preprocess(calibration[start : start + INT8_BATCH]), dtype=np.float32)
            for image in batch:
                yield [image[None]]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    if integer_only:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # "Statistics for quantized inputs were expected": the input is float
        return converter.convert()


def agreement_text(agreeing: int, checked: int) -> str:
    """A share as "97.8%": one decimal, and never "100.0%" unless every image agreed."""
    if not checked:
        return "—"
    if agreeing == checked:
        return "100%"
    return f"{min(agreeing / checked * 100, 99.9):.1f}%"


def top1_agreement(reference: np.ndarray, candidate: np.ndarray) -> tuple[int, int]:
    """(images with the same top-1 answer, images compared)."""
    reference, candidate = np.asarray(reference), np.asarray(candidate)
    if reference.shape != candidate.shape or not len(reference):
        return 0, len(reference)
    return int(np.sum(reference.argmax(axis=1) == candidate.argmax(axis=1))), len(reference)


def int8_split(count: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """Indices to calibrate on, indices to measure agreement on, and whether those are held out.

    Every INT8_HOLD_OUT_EVERY-th image is held out (spread evenly: sources are often sorted by
    label); calibration takes at most INT8_MAX_CALIBRATION of the rest, also spread evenly. With
    fewer than INT8_MIN_HELD_OUT images both use all of them, and the verdict says so.
    """
    every = np.arange(count)
    if count < INT8_MIN_HELD_OUT:
        calibrate, measure, held_out = every, every, False
    else:
        measure = every[INT8_HOLD_OUT_EVERY - 1 :: INT8_HOLD_OUT_EVERY]
        calibrate, held_out = np.setdiff1d(every, measure), True
    if len(calibrate) > INT8_MAX_CALIBRATION:
        calibrate = calibrate[np.linspace(0, len(calibrate) - 1, INT8_MAX_CALIBRATION).round().astype(int)]
    return calibrate, measure, held_out


def convert_int8_and_measure(
    model: Any,
    preprocess: Any,
    images: np.ndarray,
    target: Path,
    reference: Any,
    reference_name: str,
) -> Int8Verdict:
    """Convert `model` to int8 on part of `images` (uint8), measure top-1 agreement on the rest.

    `reference(x)` gives the float32 model's probabilities for a preprocessed batch. The file is
    kept at `target` when it converted and runs; the verdict goes next to it either way
    (`target.with_suffix(".json")`), so the Models page can say what happened.
    """
    import tensorflow as tf

    calibrate, measure, held_out = int8_split(len(images))
    started = time.perf_counter()
    content, integer_only, failure = b"", True, ""
    for integer_only in (True, False):
        try:
            content = convert_int8(model, preprocess, images[calibrate], integer_only=integer_only)
            break
        except Exception as exc:  # an op without an int8 kernel: try again with float fallback
            failure = first_line(exc)
    seconds = round(time.perf_counter() - started, 2)
    agreeing, checked, difference, reason = 0, 0, float("inf"), ""
    if not content:
        reason = f"The int8 conversion failed: {failure}"
    else:
        try:
            interpreter = LiteModel(content, threads=2)
            expected, got = [], []
            for start in range(0, len(measure), INT8_BATCH):
                x = np.asarray(preprocess(images[measure[start : start + INT8_BATCH]]), dtype=np.float32)
                expected.append(np.asarray(reference(x), dtype=np.float64))
                got.append(np.asarray(interpreter.run(x), dtype=np.float64))
            expected_all, got_all = np.concatenate(expected), np.concatenate(got)
            if not np.all(np.isfinite(got_all)):
                reason = "The int8 model gives invalid numbers (NaN or infinity)."
            else:
                agreeing, checked = top1_agreement(expected_all, got_all)
                difference = float(np.max(np.abs(expected_all - got_all))) if got_all.size else 0.0
        except Exception as exc:
            reason = f"The int8 model does not run: {first_line(exc)}"
    verdict = Int8Verdict(
        ok=not reason,
        reason=reason,
        calibration_images=len(calibrate),
        checked=checked,
        agreeing=agreeing,
        held_out=held_out,
        reference=reference_name,
        integer_only=integer_only,
        max_difference=difference if np.isfinite(difference) else -1.0,
        convert_seconds=seconds,
        tensorflow=tf.__version__,
    )
    record(target, content, verdict)
    return verdict


def read_int8_verdict(target: Path) -> Int8Verdict | None:
    """The recorded verdict of an int8 file, or None when it was never converted."""
    try:
        return Int8Verdict.from_dict(json.loads(target.with_suffix(".json").read_text()))
    except (OSError, ValueError, TypeError):
        return None
