"""The inference engine: warm models, one load under concurrency, one batch per request."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from classifier import engine as engine_module
from classifier.engine import MAX_BATCH, Engine, ModelSpec

pytestmark = pytest.mark.storage_free  # neither database nor queue: the PostgreSQL run leaves it out

LABELS = ("red", "green", "blue")


def tiny_model():
    """A real Keras model small enough to build in milliseconds: colour in, 3 classes out."""
    import keras

    inputs = keras.Input((16, 16, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    outputs = keras.layers.Dense(3, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    # Make "class i" win when channel i dominates.
    model.layers[-1].set_weights([np.eye(3, dtype="float32") * 20, np.zeros(3, dtype="float32")])
    return model


class CountingResolver:
    """Resolves every key to the tiny model and counts builds; can be slowed to widen races."""

    def __init__(self, delay: float = 0.0):
        self.delay = delay
        self.builds: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, key: str) -> ModelSpec:
        if key == "missing":
            raise LookupError("no such model")

        def build():
            time.sleep(self.delay)
            with self.lock:
                self.builds.append(key)
            return tiny_model()

        return ModelSpec(key=key, input_size=16, labels=LABELS, build=build, preprocess=lambda b: b / 255.0)


def solid(color) -> Image.Image:
    return Image.new("RGB", (40, 30), color)


def test_predictions_follow_the_image_and_come_sorted():
    engine = Engine(CountingResolver())
    result = engine.predict("m", [solid((250, 60, 10)), solid((0, 30, 250))])
    top = result.top(3)
    assert [guesses[0].label for guesses in top] == ["red", "blue"]
    assert top[0][0].probability > top[0][1].probability > top[0][2].probability
    assert result.probabilities.shape == (2, 3)
    assert result.seconds > 0


def test_model_is_loaded_once_and_stays_warm():
    resolver = CountingResolver()
    engine = Engine(resolver)
    for _ in range(3):
        engine.predict("m", [solid((0, 250, 0))])
    assert resolver.builds == ["m"]
    assert engine.state("m") == "ready"


def test_concurrent_first_requests_load_the_model_only_once():
    resolver = CountingResolver(delay=0.3)
    engine = Engine(resolver)
    results, errors = [], []

    def request():
        try:
            results.append(engine.predict("m", [solid((250, 0, 0))]).top(1)[0][0].label)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=request) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert results == ["red"] * 6
    assert resolver.builds == ["m"]
    assert engine.loads == 1


def test_state_is_loading_while_the_model_is_built():
    resolver = CountingResolver(delay=0.5)
    engine = Engine(resolver)
    thread = threading.Thread(target=engine.get, args=("m",))
    thread.start()
    deadline = time.monotonic() + 5
    while engine.state("m") != "loading" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.state("m") == "loading"
    thread.join()
    assert engine.state("m") == "ready"


def test_cache_keeps_at_most_max_models_evicting_the_least_recently_used():
    resolver = CountingResolver()
    engine = Engine(resolver, max_models=2)
    for key in ["a", "b", "a", "c"]:
        engine.get(key)
    assert engine.loaded() == ["a", "c"]
    engine.get("b")
    assert resolver.builds == ["a", "b", "c", "b"]


def test_several_images_of_one_request_run_as_one_batch(monkeypatch):
    engine = Engine(CountingResolver())
    warm = engine.get("m")
    calls = []
    forward = warm._forward
    monkeypatch.setattr(warm, "_forward", lambda x: calls.append(x.shape[0]) or forward(x))
    result = engine.predict("m", [solid((250, 0, 0))] * 5)
    assert calls == [5]  # one compiled call for the whole request
    assert result.probabilities.shape == (5, 3)


def test_new_batch_sizes_reuse_the_one_traced_graph():
    engine = Engine(CountingResolver())
    for n in (1, 3, 7, 16, 2):
        engine.predict("m", [solid((10, 20, 30))] * n)
    assert engine.get("m").traces == 1


def test_batches_larger_than_the_largest_batch_are_split(monkeypatch):
    engine = Engine(CountingResolver())
    warm = engine.get("m")
    calls = []
    forward = warm._forward
    monkeypatch.setattr(warm, "_forward", lambda x: calls.append(x.shape[0]) or forward(x))
    engine.predict("m", [solid((0, 0, 250))] * (MAX_BATCH + 3))
    assert calls == [MAX_BATCH, 3]


def test_a_batch_gives_the_same_probabilities_as_single_images():
    engine = Engine(CountingResolver())
    images = [solid((200, 40, 10)), solid((10, 30, 220)), solid((5, 240, 5))]
    together = engine.predict("m", images).probabilities
    alone = np.concatenate([engine.predict("m", [image]).probabilities for image in images])
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-6)


def test_resolver_errors_reach_the_caller_and_nothing_is_cached():
    engine = Engine(CountingResolver())
    with pytest.raises(LookupError):
        engine.predict("missing", [solid((1, 2, 3))])
    assert engine.loaded() == [] and engine.state("missing") is None


def test_an_empty_request_is_refused():
    with pytest.raises(ValueError):
        Engine(CountingResolver()).predict("m", [])


def test_keras_side_modules_import_without_django():
    code = (
        "import sys, classifier.engine, classifier.zoo, classifier.weights, classifier.imaging; "
        "sys.exit(any(name.split('.')[0] == 'django' for name in sys.modules))"
    )
    root = Path(engine_module.__file__).resolve().parent.parent
    assert subprocess.run([sys.executable, "-c", code], cwd=root).returncode == 0


class Versioned:
    """A version token a test changes, as another machine replacing the weights file would."""

    def __init__(self) -> None:
        self.value = 1

    def __call__(self, spec: ModelSpec) -> int:
        return self.value


def test_a_warm_model_is_rebuilt_when_what_it_was_built_from_changes(monkeypatch):
    monkeypatch.setattr(engine_module, "VERSION_RECHECK_SECONDS", 0.0)
    resolver, version = CountingResolver(), Versioned()
    engine = Engine(resolver, version=version)
    first = engine.get("m")
    assert engine.get("m") is first and resolver.builds == ["m"]  # unchanged: the warm copy serves

    version.value = 2  # another process replaced the weights file
    second = engine.get("m")
    assert second is not first and resolver.builds == ["m", "m"] and engine.loads == 2
    assert engine.get("m") is second


def test_changes_are_looked_for_at_most_every_few_seconds(monkeypatch):
    resolver, version = CountingResolver(), Versioned()
    engine = Engine(resolver, version=version)
    first = engine.get("m")
    version.value = 2
    assert engine.get("m") is first  # within VERSION_RECHECK_SECONDS: no stat, no rebuild
    monkeypatch.setattr(engine_module, "VERSION_RECHECK_SECONDS", 0.0)
    assert engine.get("m") is not first


def test_requests_during_a_rebuild_are_answered_by_the_old_copy(monkeypatch):
    monkeypatch.setattr(engine_module, "VERSION_RECHECK_SECONDS", 0.0)
    resolver, version = CountingResolver(), Versioned()
    engine = Engine(resolver, version=version)
    old = engine.get("m")
    resolver.delay = 1.0
    version.value = 2
    rebuilding = threading.Thread(target=engine.get, args=("m",))
    rebuilding.start()
    time.sleep(0.2)
    monkeypatch.setattr(engine_module, "VERSION_RECHECK_SECONDS", 60.0)  # the next request does not check
    started = time.monotonic()
    assert engine.get("m") is old and time.monotonic() - started < 0.5
    rebuilding.join()
    assert engine.get("m") is not old


def test_a_model_whose_file_went_away_is_dropped_and_says_why(monkeypatch):
    monkeypatch.setattr(engine_module, "VERSION_RECHECK_SECONDS", 0.0)
    version = Versioned()
    gone = {"yes": False}
    counting = CountingResolver()

    def resolve(key: str) -> ModelSpec:
        if gone["yes"]:
            raise LookupError("not installed any more")
        return counting(key)

    engine = Engine(resolve, version=version)
    engine.get("m")
    gone["yes"], version.value = True, 2
    with pytest.raises(LookupError, match="not installed any more"):
        engine.get("m")
    assert engine.loaded() == []
