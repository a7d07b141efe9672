"""The engine's two runtimes: LiteRT when a checked file exists, TensorFlow otherwise, same answers."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from classifier import engine as engine_module
from classifier import lite
from classifier.engine import Engine, ModelSpec
from tests.test_lite import scale, small_cnn

pytestmark = pytest.mark.storage_free  # neither database nor queue: the PostgreSQL run leaves it out

LABELS = tuple(f"class {i}" for i in range(10))


@pytest.fixture(scope="module")
def model_and_file(tmp_path_factory):
    model = small_cnn(seed=3)
    target = tmp_path_factory.mktemp("lite") / "model.tflite"
    assert lite.convert_and_check(model, scale, lite.probe_images(48), target).ok
    return model, target.read_bytes()


def spec_for(model) -> ModelSpec:
    return ModelSpec(key="tiny", input_size=48, labels=LABELS, build=lambda: model, preprocess=scale)


def photos() -> list[Image.Image]:
    rng = np.random.default_rng(7)
    return [Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)) for _ in range(5)]


def test_a_model_with_a_checked_file_is_served_by_litert_with_the_same_answers(model_and_file):
    model, content = model_and_file
    on_tensorflow = Engine(lambda key: spec_for(model))
    on_litert = Engine(lambda key: spec_for(model), lite=lambda spec: content)

    expected = on_tensorflow.predict("tiny", photos())
    got = on_litert.predict("tiny", photos())

    assert on_tensorflow.runtime("tiny") == "tensorflow"
    assert on_litert.runtime("tiny") == "litert"
    np.testing.assert_allclose(got.probabilities, expected.probabilities, atol=lite.TOLERANCE)
    assert [row[0].label for row in got.top(1)] == [row[0].label for row in expected.top(1)]


def test_without_a_file_the_model_stays_on_tensorflow_and_moves_once_the_file_appears(model_and_file, monkeypatch):
    model, content = model_and_file
    available = {"content": None}
    engine = Engine(lambda key: spec_for(model), lite=lambda spec: available["content"])
    monkeypatch.setattr(engine_module, "LITE_RECHECK_SECONDS", 0.0)

    first = engine.predict("tiny", photos())
    assert engine.runtime("tiny") == "tensorflow"

    available["content"] = content  # the worker finished converting it
    second = engine.predict("tiny", photos())
    assert engine.runtime("tiny") == "litert"
    np.testing.assert_allclose(second.probabilities, first.probabilities, atol=lite.TOLERANCE)
    assert engine.loads == 1  # switching runtimes does not build the Keras model again


def test_a_broken_converted_file_leaves_the_model_on_tensorflow(model_and_file, monkeypatch):
    model, _ = model_and_file
    engine = Engine(lambda key: spec_for(model), lite=lambda spec: None)
    monkeypatch.setattr(engine_module, "LITE_RECHECK_SECONDS", 0.0)
    engine.predict("tiny", photos())
    engine._lite = lambda spec: b"not a flatbuffer"
    result = engine.predict("tiny", photos())
    assert engine.runtime("tiny") == "tensorflow"
    assert result.probabilities.shape == (5, 10)


def test_a_damaged_converted_file_at_first_load_falls_back_to_tensorflow(model_and_file):
    model, _ = model_and_file
    engine = Engine(lambda key: spec_for(model), lite=lambda spec: b"not a flatbuffer")
    result = engine.predict("tiny", photos())
    assert engine.runtime("tiny") == "tensorflow"
    assert result.probabilities.shape == (5, 10)
