"""The inference engine: warm models, a compiled forward pass, one batch per request.

No Django here. A `resolve(key) -> ModelSpec` callable says how to build a model and what its
labels are; pretrained zoo entries and (later) trained models plug in the same way.

Why it looks like this (see ../docs/PERFORMANCE.md for the numbers):
- `model.predict` costs tens of milliseconds per call before any maths (tensorflow#40261), so
  requests go through a `tf.function` around `model(x, training=False)`.
- A new input shape retraces the graph (tensorflow#39458): inputs are resized to the model's
  fixed size and the function is traced once with a batch dimension of None, so any batch size
  reuses the same graph (measured here: no slower than fixed-shape graphs, and no padding waste).
- The first call of a graph is slow: each model is warmed once when the process loads it.
- Models stay loaded in a small LRU cache; a per-key lock makes two first requests for the same
  model wait for one load instead of building it twice.
- Several processes, maybe on several machines, share one weights folder: a warm model is
  rebuilt when what it was built from changes under it (`version`: the weights file replaced by
  an import elsewhere, int8 switched on), checked at most every VERSION_RECHECK_SECONDS. The old
  copy serves until the new one is ready.
- Two runtimes: a model whose checked LiteRT file exists (`classifier.lite`, converted by the
  worker) is served by LiteRT, several times faster on CPU with the same answers; any other by
  TensorFlow. A model served by TensorFlow switches to LiteRT once its file appears.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from classifier.imaging import to_model_input

log = logging.getLogger(__name__)

# Largest batch sent through the model at once: bounds the activation memory of one call.
MAX_BATCH = 32
# How often a model served by TensorFlow looks for its LiteRT file (a stat, not a load).
LITE_RECHECK_SECONDS = 5.0
# How often a warm model checks that what it was built from is unchanged (a stat and a small read).
VERSION_RECHECK_SECONDS = 2.0
TENSORFLOW = "tensorflow"
LITERT = "litert"


@dataclass(frozen=True)
class ModelSpec:
    """Everything the engine needs to serve one model; `build` loads the weights (slow)."""

    key: str
    input_size: int
    labels: Sequence[str]
    build: Callable[[], object]  # returns a keras.Model with softmax outputs
    preprocess: Callable[[np.ndarray], np.ndarray]  # uint8 batch -> model input batch
    weights_path: Path | None = None  # the file the model comes from: its LiteRT file is keyed by it


@dataclass(frozen=True)
class Guess:
    label: str
    probability: float
    index: int


@dataclass(frozen=True)
class BatchResult:
    """Class probabilities for each image of one call, and how long the call took."""

    probabilities: np.ndarray  # shape (images, classes)
    labels: Sequence[str]
    seconds: float

    def top(self, k: int = 5) -> list[list[Guess]]:
        k = max(1, min(k, self.probabilities.shape[1]))
        out = []
        for row in self.probabilities:
            best = np.argsort(-row, kind="stable")[:k]
            out.append([Guess(self.labels[i], float(row[i]), int(i)) for i in best])
        return out


def configure_threads(intra_op: int = 0, inter_op: int = 0) -> None:
    """Set TensorFlow's thread pools before it starts (0 = TensorFlow's default, all cores).

    Must run before the first TensorFlow operation of the process; later calls are ignored.
    """
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op)
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    except RuntimeError:
        log.debug("TensorFlow already initialised; thread settings unchanged")


class WarmModel:
    """One loaded model with its compiled forward pass, traced and warmed once at load."""

    runtime = TENSORFLOW

    def __init__(self, spec: ModelSpec):
        import tensorflow as tf

        self.spec = spec
        self.model = spec.build()
        model = self.model
        size = spec.input_size
        self._forward = tf.function(
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)],
        )
        self.run(np.zeros((1, size, size, 3), dtype=np.uint8))

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities for a uint8 batch of model-sized images, any length."""
        outputs = []
        for start in range(0, len(batch), MAX_BATCH):
            x = np.asarray(self.spec.preprocess(batch[start : start + MAX_BATCH]), dtype=np.float32)
            outputs.append(np.asarray(self._forward(x)))
        return np.concatenate(outputs)

    @property
    def traces(self) -> int:
        """How many graphs were traced: one, whatever the batch sizes seen."""
        return self._forward.experimental_get_tracing_count()


class LiteWarmModel:
    """One model served by LiteRT from its checked file: a pool of interpreters, no Keras model."""

    runtime = LITERT

    def __init__(self, spec: ModelSpec, content: bytes, cores: int = 2):
        from classifier.lite import LitePool

        self.spec = spec
        self.pool = LitePool(content, cores=cores)
        size = spec.input_size
        self.run(np.zeros((1, size, size, 3), dtype=np.uint8))

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities for a uint8 batch of model-sized images, any length."""
        outputs = []
        for start in range(0, len(batch), MAX_BATCH):
            x = np.asarray(self.spec.preprocess(batch[start : start + MAX_BATCH]), dtype=np.float32)
            outputs.append(self.pool.run(x))
        return np.concatenate(outputs)


class Engine:
    """A per-process cache of warm models, safe to share between request threads.

    `lite` gives the checked LiteRT file's bytes for a spec, or None to use TensorFlow.
    `version` gives a cheap token of what a spec's model is built from (its weights file's
    identity, its precision): when it changes, the warm copy is rebuilt.
    """

    def __init__(
        self,
        resolve: Callable[[str], ModelSpec],
        max_models: int = 3,
        lite: Callable[[ModelSpec], bytes | None] | None = None,
        cores: int = 2,
        version: Callable[[ModelSpec], object] | None = None,
    ):
        if max_models < 1:
            raise ValueError("max_models must be at least 1")
        self._resolve = resolve
        self._lite = lite
        self._version = version
        self.cores = cores
        self.max_models = max_models
        self._lock = threading.Lock()  # guards the dictionaries below, never held while loading
        self._models: OrderedDict[str, WarmModel | LiteWarmModel] = OrderedDict()
        self._checked: dict[str, float] = {}  # when a TensorFlow model last looked for its LiteRT file
        self._versions: dict[str, object] = {}  # what each warm model was built from
        self._version_checked: dict[str, float] = {}
        self._load_locks: dict[str, threading.Lock] = {}
        self._loading: set[str] = set()
        self.loads = 0  # how many models this engine built: tests and benchmarks read it

    def predict(self, key: str, images: Sequence[Image.Image | np.ndarray]) -> BatchResult:
        """Classify images with one model in one batch; resizes to the model's input size."""
        if not images:
            raise ValueError("no images to classify")
        warm = self.get(key)
        size = warm.spec.input_size
        started = time.perf_counter()
        batch = np.stack([_as_input(image, size) for image in images])
        probabilities = warm.run(batch)
        seconds = time.perf_counter() - started
        return BatchResult(probabilities=probabilities, labels=warm.spec.labels, seconds=seconds)

    def get(self, key: str) -> WarmModel | LiteWarmModel:
        """The warm model for key, loading it (once, whatever the concurrency) when needed."""
        with self._lock:
            warm = self._models.get(key)
            if warm is not None:
                self._models.move_to_end(key)
        if warm is not None:
            if self._changed(key, warm):
                return self._reload(key, warm)
            return self._upgraded(key, warm)
        with self._lock:
            load_lock = self._load_locks.setdefault(key, threading.Lock())
        with load_lock:
            with self._lock:
                warm = self._models.get(key)
                if warm is not None:
                    self._models.move_to_end(key)
                    return warm
                self._loading.add(key)
            try:
                warm, version = self._build(key)
            finally:
                with self._lock:
                    self._loading.discard(key)
            with self._lock:
                self.loads += 1
                self._models[key] = warm
                self._versions[key] = version
                while len(self._models) > self.max_models:
                    evicted, _ = self._models.popitem(last=False)
                    log.info("evicted model %s from the warm cache", evicted)
            gc.collect()
            return warm

    def _build(self, key: str) -> tuple[WarmModel | LiteWarmModel, object]:
        """Resolve and load a model; its version is read first, so a change during the load shows next time."""
        started = time.perf_counter()
        spec = self._resolve(key)
        version = self._version(spec) if self._version is not None else None
        warm = self._load(spec)
        now = time.monotonic()
        self._checked[key] = self._version_checked[key] = now
        log.info("loaded model %s (%s) in %.1f s", key, warm.runtime, time.perf_counter() - started)
        return warm, version

    def _due(self, last: dict[str, float], key: str, interval: float) -> bool:
        """Whether a periodic check of `key` is due (at most once per `interval`); records it when it is."""
        now = time.monotonic()
        with self._lock:
            if now - last.get(key, 0.0) < interval:
                return False
            last[key] = now
            return True

    def _changed(self, key: str, warm: WarmModel | LiteWarmModel) -> bool:
        """Whether what `warm` was built from changed, at most once per VERSION_RECHECK_SECONDS."""
        if self._version is None or not self._due(self._version_checked, key, VERSION_RECHECK_SECONDS):
            return False
        with self._lock:
            built_from = self._versions.get(key)
        try:
            return self._version(warm.spec) != built_from
        except Exception:  # an unreadable folder for a moment: keep serving what is loaded
            log.exception("could not check whether model %s changed", key)
            return False

    def _reload(self, key: str, warm: WarmModel | LiteWarmModel) -> WarmModel | LiteWarmModel:
        """Rebuild a model whose weights changed elsewhere; other requests get the old copy meanwhile.

        When it can no longer be built (its file was removed), the old copy goes and the error is raised.
        """
        with self._lock:
            load_lock = self._load_locks.setdefault(key, threading.Lock())
        with load_lock:
            with self._lock:
                current = self._models.get(key)
            if current is not None and current is not warm:
                return current  # another request rebuilt it meanwhile
            try:
                fresh, version = self._build(key)
            except Exception:
                with self._lock:
                    if self._models.get(key) is warm:
                        del self._models[key]
                raise
            with self._lock:
                self.loads += 1
                if key in self._models:
                    self._models[key] = fresh
                self._versions[key] = version
        log.info("model %s changed on disk: reloaded", key)
        gc.collect()
        return fresh

    def _load(self, spec: ModelSpec) -> WarmModel | LiteWarmModel:
        """LiteRT when the model's checked file is there and loads, else TensorFlow."""
        content = self._lite(spec) if self._lite is not None else None
        if content:
            try:
                return LiteWarmModel(spec, content, self.cores)
            except Exception:  # a damaged file must not take the model down: TensorFlow serves it
                log.exception("could not load the LiteRT file of %s; serving it with TensorFlow", spec.key)
        return WarmModel(spec)

    def _upgraded(self, key: str, warm: WarmModel | LiteWarmModel) -> WarmModel | LiteWarmModel:
        """A TensorFlow model whose LiteRT file appeared since it loaded moves to LiteRT."""
        if self._lite is None or warm.runtime == LITERT or not self._due(self._checked, key, LITE_RECHECK_SECONDS):
            return warm
        try:
            content = self._lite(warm.spec)
            if not content:
                return warm
            lite_warm = LiteWarmModel(warm.spec, content, self.cores)
        except Exception:  # a bad file leaves the model on TensorFlow, as the gate would
            log.exception("could not switch %s to LiteRT; it stays on TensorFlow", key)
            return warm
        with self._lock:
            if self._models.get(key) is warm:
                self._models[key] = lite_warm
        log.info("model %s now served by LiteRT", key)
        return lite_warm

    def runtime(self, key: str) -> str | None:
        """'litert' or 'tensorflow' for a model warm in this process, else None."""
        with self._lock:
            warm = self._models.get(key)
        return warm.runtime if warm is not None else None

    def state(self, key: str) -> str | None:
        """'ready' when warm in this process, 'loading' while being built, else None."""
        with self._lock:
            if key in self._models:
                return "ready"
            if key in self._loading:
                return "loading"
        return None

    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._models)

    def evict(self, key: str) -> None:
        """Drop a model (its weights changed or were removed); the next request reloads it."""
        with self._lock:
            self._models.pop(key, None)
        gc.collect()

    def clear(self) -> None:
        with self._lock:
            self._models.clear()
        gc.collect()


def _as_input(image: Image.Image | np.ndarray, size: int) -> np.ndarray:
    if isinstance(image, np.ndarray) and image.shape == (size, size, 3) and image.dtype == np.uint8:
        return image
    if isinstance(image, np.ndarray):
        image = Image.fromarray(np.asarray(image, dtype=np.uint8))
    return to_model_input(image, size)
