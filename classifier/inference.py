"""The Django side of the engine: one Engine per process, fed by the catalog of models.

Views and the API pick a model through `classifier.catalog` and call `get_engine()`; the engine
itself stays free of Django and builds models through `catalog.resolve`. It serves a model with
LiteRT when `classifier.runtimes` has a checked conversion of its weights, else with TensorFlow.
"""

from __future__ import annotations

import threading

from django.conf import settings

from classifier import catalog, runtimes
from classifier.engine import Engine, ModelSpec, configure_threads

_engine: Engine | None = None
_engine_lock = threading.Lock()
_tensorflow_configured = False
ModelUnavailable = catalog.ModelUnavailable


def configure_tensorflow() -> None:
    """Apply the TF_*_THREADS settings; call before this process's first TensorFlow work.

    TensorFlow fixes its thread pools when it first runs anything, so every Django-side path that
    builds a model (the engine, checking an imported weights file) calls this first.
    """
    global _tensorflow_configured
    with _engine_lock:
        if not _tensorflow_configured:
            configure_threads(settings.TF_INTRA_OP_THREADS, settings.TF_INTER_OP_THREADS)
            _tensorflow_configured = True


def get_engine() -> Engine:
    """This process's engine, created on first use (TensorFlow is imported only then)."""
    global _engine
    configure_tensorflow()
    with _engine_lock:
        if _engine is None:
            _engine = Engine(
                catalog.resolve,
                max_models=settings.MODEL_CACHE_SIZE,
                lite=_lite_file,
                cores=settings.INFERENCE_CORES or runtimes.cpu_count(),
                version=model_version,
            )
        return _engine


def _lite_file(spec: ModelSpec) -> bytes | None:
    """The checked LiteRT conversion of this model's weights, or None to serve it with TensorFlow."""
    return runtimes.lite_content(spec.weights_path)


def model_version(spec: ModelSpec) -> tuple | None:
    """What a warm model is built from, for the engine to notice changes made by other processes.

    The weights file's identity (installs replace it by rename, so a new file has a new inode and
    time, on this machine or seen through shared storage) and the precision it runs at (int8 is
    switched per model by an administrator, maybe on another web server).
    """
    path = spec.weights_path
    if path is None:
        return None
    try:
        stat = path.stat()
    except OSError:
        return ("missing",)
    runtime = runtimes.runtime_for(path)
    int8_file = None
    if runtime.precision == runtimes.INT8:
        try:
            int8_stat = runtimes.int8_path(path).stat()
            int8_file = (int8_stat.st_ino, int8_stat.st_mtime_ns)
        except OSError:
            pass
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns, runtime.precision, int8_file)


def engine_state(key: str) -> str | None:
    """'ready' or 'loading' in this process, without creating the engine (no TensorFlow import)."""
    return _engine.state(key) if _engine is not None else None


def engine_runtime(key: str) -> str | None:
    """'litert' or 'tensorflow' for a model warm in this process, else None (no TensorFlow import)."""
    return _engine.runtime(key) if _engine is not None else None


def reset_engine() -> None:
    """Forget every warm model (tests, and after weights are replaced)."""
    global _engine
    with _engine_lock:
        if _engine is not None:
            _engine.clear()
        _engine = None
