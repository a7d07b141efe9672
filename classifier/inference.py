"""The Django side of the engine: one Engine per process, fed by the zoo and the weights folder.

Views and the API call `get_engine()` and `resolve_name()`; the engine itself stays free of
Django. Trained models will resolve here too, next to the zoo entries.
"""

from __future__ import annotations

import json
import threading
from functools import lru_cache, partial
from pathlib import Path

from django.conf import settings

from classifier import weights, zoo
from classifier.engine import Engine, ModelSpec, configure_threads

_engine: Engine | None = None
_engine_lock = threading.Lock()
_tensorflow_configured = False
IMAGENET_INDEX = Path(__file__).with_name("data") / "imagenet_class_index.json"


class ModelUnavailable(Exception):
    """A known model that cannot run here (its weights are missing); str() is for the user."""


@lru_cache(maxsize=1)
def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ImageNet class names in Keras's order, shipped with the project (works offline)."""
    index = json.loads(IMAGENET_INDEX.read_text())
    return tuple(index[str(i)][1] for i in range(len(index)))


def resolve_name(name: str) -> zoo.ZooModel:
    """The zoo entry for what a user typed or picked; raises zoo.UnknownModel with a message."""
    return zoo.get(name)


def is_available(model: zoo.ZooModel) -> bool:
    return weights.installed_path(model, settings.WEIGHTS_DIR) is not None


def available_models() -> list[zoo.ZooModel]:
    """Zoo entries whose weights are installed: the choices of the Classify page (one folder listing)."""
    try:
        present = weights.installed_filenames(settings.WEIGHTS_DIR)
    except OSError:
        return []  # an unreadable folder: no model can load; the Models page says why
    return [m for m in zoo.all_models() if m.top.filename in present]


def resolve(key: str) -> ModelSpec:
    """How the engine builds a model: the installed weights file, the family's preprocessing."""
    model = zoo.get(key)
    path = weights.installed_path(model, settings.WEIGHTS_DIR)
    if path is None:
        raise ModelUnavailable(weights.missing_message(model))
    return ModelSpec(
        key=model.key,
        input_size=model.input_size,
        labels=imagenet_labels(),
        build=partial(model.build, path),
        preprocess=model.preprocess,
    )


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
            _engine = Engine(resolve, max_models=settings.MODEL_CACHE_SIZE)
        return _engine


def engine_state(key: str) -> str | None:
    """'ready' or 'loading' in this process, without creating the engine (no TensorFlow import)."""
    return _engine.state(key) if _engine is not None else None


def reset_engine() -> None:
    """Forget every warm model (tests, and after weights are replaced)."""
    global _engine
    with _engine_lock:
        if _engine is not None:
            _engine.clear()
        _engine = None
