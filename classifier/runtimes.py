"""Which runtime serves each model, and the worker's conversions to LiteRT.

Every installed model, pretrained or trained, is converted once per weights file by the worker
(`classifier.tasks.convert_models`: after an import, a download, a training job, and every minute
for anything still unconverted, which covers files installed before the worker started). The
converted file sits in DATA_DIR/lite under the weights' SHA-256 and the TensorFlow version, next
to the verdict of its agreement check. A request never converts: until a checked file exists,
the engine serves the model with TensorFlow, and the Models page and the API say why.

Int8 is an administrator's choice per model (`classifier.int8`): once calibrated on real images
and switched on, `lite_content` gives the engine the int8 file (`<stem>-int8.tflite`, next to the
float32 one and pruned with it) instead of the float32 one. Off by default.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from django.conf import settings
from django.db import DatabaseError

from classifier import lite

log = logging.getLogger(__name__)

LITERT = "litert"
TENSORFLOW = "tensorflow"
RUNTIME_NAMES = {LITERT: "LiteRT", TENSORFLOW: "TensorFlow"}

# "<hash>-tf<version>[-int8].(tflite|json|lock)": what `converted_path` names; group 1 is the stem.
OWN_FILE = re.compile(r"^([0-9a-f]{32}-tf[^/]+?)(-int8)?\.(tflite|json|lock)$")

_hashes: dict[tuple[str, int, int, int], str] = {}
_hashes_lock = threading.Lock()
# Extra real images a source wants a conversion checked on (trained models: validation images).
_check_images: list[Callable[[str], np.ndarray | None]] = []
# Sources of real images to calibrate int8 with (the training app: training splits, datasets).
_calibration_sources: list[CalibrationSource] = []
FLOAT32 = "float32"
INT8 = "int8"


class CalibrationError(Exception):
    """No usable calibration images; str() says why, for the administrator."""


@dataclass(frozen=True)
class Calibration:
    """Real images (uint8, model size) to calibrate int8 with, and where they come from in words."""

    images: np.ndarray
    source: str  # "the dataset “Pets”", "the training split of job 12"


class CalibrationSource(Protocol):
    """Where int8 calibration images come from, besides an uploaded zip (registered by the training app)."""

    def model_images(self, key: str, size: int, limit: int) -> Calibration | None:
        """A model's own images (a trained model's training split), or None for models it does not know."""

    def datasets(self, user) -> list[tuple[int, str, int]]:
        """(id, name, image count) of the datasets `user` may calibrate with."""

    def dataset_images(self, dataset_id: int, size: int, limit: int) -> Calibration | None:
        """At most `limit` images of a dataset, spread over it, or None when it does not exist."""


@dataclass(frozen=True)
class Runtime:
    """What serves a model here and, when it is TensorFlow, why (a sentence for the Models page)."""

    name: str  # LITERT or TENSORFLOW
    reason: str = ""
    verdict: lite.Verdict | None = None
    precision: str = FLOAT32  # INT8 once an administrator switched the model to its calibrated int8 file
    int8: lite.Int8Verdict | None = None  # with INT8: its measured agreement with float32
    int8_source: str = ""  # with INT8: what it was calibrated on, in words

    @property
    def label(self) -> str:
        return f"{RUNTIME_NAMES[self.name]} int8" if self.precision == INT8 else RUNTIME_NAMES[self.name]

    def as_dict(self) -> dict:
        data = {"runtime": self.name, "reason": self.reason, "precision": self.precision}
        if self.verdict is not None and self.verdict.checked:
            data["agreement"] = {
                "images": self.verdict.checked,
                "top1": self.verdict.top1_agreement,
                "max_difference": self.verdict.max_difference if math.isfinite(self.verdict.max_difference) else None,
            }
        if self.int8 is not None:
            data["int8"] = {
                "images": self.int8.checked,
                "agreeing": self.int8.agreeing,
                "top1_agreement_with_float32": round(self.int8.top1_agreement, 4),
                "held_out": self.int8.held_out,
                "calibration": self.int8_source,
                "calibration_images": self.int8.calibration_images,
            }
        return data


def enabled() -> bool:
    """INFERENCE_RUNTIME=tensorflow turns LiteRT off entirely (for diagnosis)."""
    return settings.INFERENCE_RUNTIME == LITERT


def lite_dir() -> Path:
    return Path(settings.DATA_DIR) / "lite"


def weights_hash(path: Path) -> str:
    """SHA-256 of a weights file, computed once per file version per process.

    A version is the file's inode, size and time: a file replaced by a rename (every install does,
    here or on another machine sharing the folder) is a new inode even within the same second.
    """
    stat = path.stat()
    key = (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    with _hashes_lock:
        known = _hashes.get(key)
    if known is None:
        digest = hashlib.sha256()
        with path.open("rb") as source:
            while chunk := source.read(1 << 20):
                digest.update(chunk)
        known = digest.hexdigest()
        with _hashes_lock:
            _hashes[key] = known
    return known


def converted_path(weights_path: Path) -> Path:
    """Where the LiteRT file of these weights is (or will be), for this TensorFlow."""
    return lite_dir() / f"{lite.file_stem(weights_hash(weights_path))}.tflite"


def int8_path(weights_path: Path) -> Path:
    """Where the int8 file of these weights is (or will be): next to the float32 one, pruned with it."""
    return lite_dir() / f"{lite.file_stem(weights_hash(weights_path))}-int8.tflite"


def int8_switched_on(weights_path: Path) -> tuple[lite.Int8Verdict, str] | None:
    """The int8 verdict and calibration source when an administrator switched these weights to int8
    and its file is there; None means float32."""
    from classifier.models import Int8Calibration

    try:
        digest, target = weights_hash(weights_path), int8_path(weights_path)
    except OSError:
        return None
    try:
        row = Int8Calibration.serving(digest)
    except DatabaseError:  # a locked or unmigrated database must not take the model down: float32 serves
        log.warning("Could not read the int8 switch of %s; serving float32.", weights_path.name)
        return None
    if row is None or not target.is_file():
        return None
    verdict = lite.read_int8_verdict(target)
    if verdict is None or not verdict.ok:
        return None
    return verdict, row.source_text


def runtime_for(weights_path: Path | None) -> Runtime:
    """The runtime a model with these weights gets in a request now."""
    runtime = _float32_runtime(weights_path)
    if not enabled() or weights_path is None or not weights_path.is_file():
        return runtime
    int8 = int8_switched_on(weights_path)
    if int8 is None:
        return runtime
    return Runtime(LITERT, "", runtime.verdict, precision=INT8, int8=int8[0], int8_source=int8[1])


def _float32_runtime(weights_path: Path | None) -> Runtime:
    """LiteRT float32 when its checked file is there, else TensorFlow and why."""
    if not enabled():
        return Runtime(TENSORFLOW, "LiteRT is turned off on this server.")
    if weights_path is None or not weights_path.is_file():
        return Runtime(TENSORFLOW, "Not installed.")
    try:
        target = converted_path(weights_path)
    except OSError:
        return Runtime(TENSORFLOW, "The weights file cannot be read.")
    verdict = lite.read_verdict(target)
    if verdict is None:
        return Runtime(TENSORFLOW, "Being converted to LiteRT by the worker; TensorFlow serves it until then.")
    if not verdict.ok:
        return Runtime(TENSORFLOW, f"Kept on TensorFlow: {verdict.reason}", verdict)
    if not target.is_file():
        return Runtime(TENSORFLOW, "The converted file is missing; the worker converts it again.")
    return Runtime(LITERT, "", verdict)


def lite_content(weights_path: Path | None) -> bytes | None:
    """The LiteRT file's bytes for the engine (int8 when switched on, else the checked float32 one),
    or None to serve with TensorFlow."""
    runtime = runtime_for(weights_path)
    if runtime.name != LITERT:
        return None
    try:
        if runtime.precision == INT8:
            return int8_path(weights_path).read_bytes()
        return converted_path(weights_path).read_bytes()
    except OSError:
        return None


def float32_content(weights_path: Path | None) -> bytes | None:
    """The checked float32 LiteRT file's bytes whatever the int8 switch says (int8 is measured against it)."""
    if _float32_runtime(weights_path).name != LITERT:
        return None
    try:
        return converted_path(weights_path).read_bytes()
    except OSError:
        return None


def add_calibration_images(source: CalibrationSource) -> None:
    """Register a source of real images to calibrate int8 with (see `CalibrationSource`)."""
    if source not in _calibration_sources:
        _calibration_sources.append(source)


def calibration_sources() -> list[CalibrationSource]:
    return list(_calibration_sources)


def add_check_images(source: Callable[[str], np.ndarray | None]) -> None:
    """Register a source of real images (uint8, model size) to check a model's conversion with."""
    if source not in _check_images:
        _check_images.append(source)


def needs_conversion(weights_path: Path | None) -> bool:
    if not enabled() or weights_path is None or not weights_path.is_file():
        return False
    return lite.read_verdict(converted_path(weights_path)) is None and not converted_path(weights_path).exists()


def convert(key: str, weights_path: Path, input_size: int, build, preprocess) -> lite.Verdict | None:
    """Convert one model and check it (in the worker). None when another process is doing it.

    A lock file per converted file keeps two consumers (or two machines on shared storage)
    from converting the same weights at once; the second finds the verdict afterwards.
    """
    target = converted_path(weights_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_suffix(".lock"), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        try:
            if lite.read_verdict(target) is not None:
                return lite.read_verdict(target)
            images = lite.probe_images(input_size)
            for source in _check_images:
                extra = source(key)
                if extra is not None and len(extra):
                    images = np.concatenate([images, extra.astype(np.uint8)])
            verdict = lite.convert_and_check(build(), preprocess, images, target)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    if verdict.ok:
        log.info(
            "Converted %s to LiteRT in %.1f s; agrees on %d images.", key, verdict.convert_seconds, verdict.checked
        )
    else:
        log.warning("%s stays on TensorFlow: %s", key, verdict.reason)
    return verdict


_converting = threading.Lock()
# Converting holds lite.CONVERT_MB plus lite.CONVERT_WEIGHTS_FACTOR times the weights file (about
# 2.6 GB for EfficientNetB7): a worker that would need more than the machine has free waits for the
# next pass instead of being killed by the kernel mid-conversion.
_memory_warned: set[str] = set()


def conversion_memory_mb(weights_path: Path) -> float:
    """What converting the model of this weights file takes, in MiB (an estimate, from measurements)."""
    return lite.CONVERT_MB + lite.CONVERT_WEIGHTS_FACTOR * weights_path.stat().st_size / (1024 * 1024)


def available_memory_mb() -> float | None:
    """MemAvailable of /proc/meminfo in MiB: what can be used without swapping; None when unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _memory_allows(key: str, weights_path: Path) -> bool:
    """Whether there is memory to convert now; says so once per model when there is not."""
    need, free = conversion_memory_mb(weights_path), available_memory_mb()
    if free is None or need <= free:
        _memory_warned.discard(key)
        return True
    if key not in _memory_warned:
        _memory_warned.add(key)
        log.warning(
            "%s is not converted to LiteRT yet: converting needs about %.0f MB and %.0f MB are free; "
            "TensorFlow serves it, and the worker tries again every minute.", key, need, free,
        )  # fmt: skip
    return False


def convert_all(choices: Iterable) -> list[tuple[str, lite.Verdict]]:
    """Convert every installed model of `choices` that has no verdict yet, one at a time.

    A second call while one runs (the every-minute task next to one queued by an install) returns
    at once: the running one goes on to every model, and a conversion of a large model holds a
    few GB, which two at once could double.
    """
    if not _converting.acquire(blocking=False):
        return []
    try:
        done = []
        for choice in choices:
            path = getattr(choice, "weights_path", None)
            if not choice.available or not needs_conversion(path) or not _memory_allows(choice.key, path):
                continue
            verdict = convert(choice.key, path, choice.input_size, choice.build, choice.preprocess)
            if verdict is not None:
                done.append((choice.key, verdict))
        return done
    finally:
        _converting.release()


def prune(in_use: Iterable[Path | None], min_age_seconds: float = 3600) -> int:
    """Remove conversions of weights no model uses any more (replaced, deleted, older TensorFlow).

    Only this module's own files (`<hash>-tf<version>.*` at the top of DATA_DIR/lite), and
    leftovers of interrupted writes once they are an hour old. Returns how many files went.
    """
    folder = lite_dir()
    if not folder.is_dir():
        return 0
    return _prune_files(folder.iterdir(), OWN_FILE, _stems(in_use), min_age_seconds)


# Training's converted feature extractors (training.lite_features): lite/features/<base>/<stem>-<size>px-<cut>.*
FEATURE_FILE = re.compile(r"^([0-9a-f]{32}-tf.+?)-\d+px-[\w-]+\.(tflite|json|lock)$")


def prune_features(weights_files: Iterable[Path], min_age_seconds: float = 3600) -> int:
    """Remove training's converted extractors of weights files that are gone (or of an older TensorFlow).

    `weights_files`: every file in the weights folder (a base may be cut from a no-head or a
    full file). Returns how many files went.
    """
    folder = lite_dir() / "features"
    if not folder.is_dir():
        return 0
    entries = [entry for base in folder.iterdir() if base.is_dir() for entry in base.iterdir()]
    return _prune_files(entries, FEATURE_FILE, _stems(weights_files), min_age_seconds)


def _stems(weights_files: Iterable[Path | None]) -> set[str]:
    """The converted-file stems of the weights files that exist (hash and TensorFlow version)."""
    stems = set()
    for path in weights_files:
        try:
            if path is not None and path.is_file():
                stems.add(lite.file_stem(weights_hash(path)))
        except OSError:
            continue
    return stems


def _prune_files(entries: Iterable[Path], own: re.Pattern, keep: set[str], min_age_seconds: float) -> int:
    """Unlink the files `own` names whose stem is not kept, and dot-files (interrupted writes) once old."""
    removed = 0
    now = time.time()
    for entry in entries:
        if not entry.is_file():
            continue
        if entry.name.startswith("."):
            stale = now - entry.stat().st_mtime > min_age_seconds
        else:
            match = own.match(entry.name)
            stale = match is not None and match.group(1) not in keep
        if stale:
            entry.unlink(missing_ok=True)
            removed += 1
    return removed


def forget_conversions(weights_path: Path) -> None:
    """Remove a model's converted file and verdict (its weights were removed or replaced)."""
    try:
        target = converted_path(weights_path)
    except OSError:
        return
    int8 = target.with_name(f"{target.stem}-int8.tflite")
    for path in (target, target.with_suffix(".json"), target.with_suffix(".lock"), int8, int8.with_suffix(".json")):
        path.unlink(missing_ok=True)


def cpu_count() -> int:
    """Cores this process may use (a container's or a taskset's limit counts)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
