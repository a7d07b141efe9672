"""The LiteRT runtime alone: conversion, the agreement gate, and interpreters shared by threads."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from classifier import lite
from tests.helpers import reinitialise

pytestmark = pytest.mark.storage_free  # neither database nor queue: the PostgreSQL run leaves it out


def small_cnn(seed: int = 0):
    """A real MobileNetV2 (tiny width and input) with non-degenerate weights: distinct outputs."""
    import keras

    model = keras.applications.MobileNetV2(weights=None, input_shape=(48, 48, 3), alpha=0.35, classes=10)
    reinitialise(model, seed)
    return model


def scale(batch: np.ndarray) -> np.ndarray:
    return batch.astype(np.float32) / 127.5 - 1.0


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    model = small_cnn()
    target = tmp_path_factory.mktemp("lite") / "model.tflite"
    verdict = lite.convert_and_check(model, scale, lite.probe_images(48), target)
    return model, target, verdict


def test_a_converted_model_agrees_with_keras_and_is_kept_with_its_verdict(converted):
    model, target, verdict = converted
    assert verdict.ok, verdict.reason
    assert verdict.checked == lite.PROBE_IMAGES
    assert verdict.max_difference <= lite.TOLERANCE
    assert verdict.top1_agreement == 1.0
    assert target.is_file()
    assert lite.read_verdict(target) == verdict

    images = lite.probe_images(48)
    expected = np.asarray(model(scale(images), training=False))
    got = lite.LitePool(target.read_bytes(), cores=2).run(scale(images))
    np.testing.assert_allclose(got, expected, atol=lite.TOLERANCE)
    assert (got.argmax(1) == expected.argmax(1)).all()


def test_probe_images_are_fixed_and_span_the_pixel_range():
    first, second = lite.probe_images(32), lite.probe_images(32)
    assert first.dtype == np.uint8 and first.shape == (lite.PROBE_IMAGES, 32, 32, 3)
    np.testing.assert_array_equal(first, second)
    assert first.min() == 0 and first.max() == 255


def test_the_gate_refuses_a_changed_top_answer_or_a_drift_beyond_the_tolerance():
    reference = np.array([[0.6, 0.4], [0.2, 0.8]])
    assert lite.compare(reference, reference + 1e-6 * np.array([[1, -1], [-1, 1]])).ok

    flipped = lite.compare(reference, np.array([[0.4, 0.6], [0.2, 0.8]]))
    assert not flipped.ok
    assert flipped.reason == "The converted model changes the top answer on 1 of 2 images."
    assert flipped.top1_agreement == 0.5

    drift = lite.compare(reference, reference + np.array([[1e-3, -1e-3], [0, 0]]))
    assert not drift.ok
    assert "differ by up to 1.0e-03 (allowed 1e-04)" in drift.reason

    broken = lite.compare(reference, np.full_like(reference, np.nan))
    assert not broken.ok and "NaN" in broken.reason


def test_a_model_that_cannot_be_converted_stays_on_tensorflow_with_the_reason(tmp_path, monkeypatch):
    def fail(model):
        raise ValueError("Op type not registered 'Custom>Thing'\nmore details")

    monkeypatch.setattr(lite, "convert", fail)
    target = tmp_path / "model.tflite"
    verdict = lite.convert_and_check(small_cnn(), scale, lite.probe_images(48), target)
    assert not verdict.ok
    assert verdict.reason == "Conversion failed: Op type not registered 'Custom>Thing'"
    assert not target.exists()
    assert lite.read_verdict(target) == verdict


def test_a_converted_file_that_disagrees_is_not_kept(tmp_path, monkeypatch):
    other = small_cnn(seed=5)
    monkeypatch.setattr(lite, "convert", lambda model: _convert(other))  # the wrong weights
    target = tmp_path / "model.tflite"
    verdict = lite.convert_and_check(small_cnn(seed=0), scale, lite.probe_images(48), target)
    assert not verdict.ok
    assert "converted model" in verdict.reason
    assert not target.exists()


def _convert(model) -> bytes:
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def test_any_batch_length_runs_on_the_same_interpreter(converted):
    model, target, _ = converted
    interpreter = lite.LiteModel(target.read_bytes(), threads=1)
    for length in (1, 5, 16, 1):
        batch = scale(np.random.default_rng(length).integers(0, 256, (length, 48, 48, 3)))
        np.testing.assert_allclose(interpreter.run(batch), np.asarray(model(batch, training=False)), atol=1e-4)


def test_overlapping_requests_each_get_an_interpreter_and_never_more_threads_than_cores(converted, monkeypatch):
    _, target, _ = converted
    pool = lite.LitePool(target.read_bytes(), cores=2)
    in_use = []
    peak = {"threads": 0, "concurrent": 0}
    lock = threading.Lock()
    real_run = lite.LiteModel.run

    def slow_run(self, batch):
        with lock:
            in_use.append(self)
            peak["threads"] = max(peak["threads"], sum(m.threads for m in in_use))
            peak["concurrent"] = max(peak["concurrent"], len(in_use))
        time.sleep(0.05)
        try:
            return real_run(self, batch)
        finally:
            with lock:
                in_use.remove(self)

    monkeypatch.setattr(lite.LiteModel, "run", slow_run)
    batch = scale(lite.probe_images(48)[:2])
    results = []
    threads = [threading.Thread(target=lambda: results.append(pool.run(batch))) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 6
    assert peak["concurrent"] == 2  # two requests side by side on two cores, not one behind a lock
    assert peak["threads"] <= 2  # and never more threads than cores
    assert pool.interpreters <= 3  # the two-thread one, and one-thread ones built on demand

    alone = pool.run(batch)  # nobody else running: the fast two-thread interpreter again
    np.testing.assert_allclose(alone, results[0], atol=1e-6)


def residual_net():
    """ResNet-style: convolutions, batch norm, ReLU and identity shortcuts."""
    import keras
    from keras import layers

    inputs = keras.Input((48, 48, 3))
    x = layers.Conv2D(16, 3, strides=2, padding="same")(inputs)
    for _ in range(2):
        shortcut = x
        x = layers.Conv2D(16, 3, padding="same")(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.Conv2D(16, 3, padding="same")(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(layers.Add()([x, shortcut]))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(10, activation="softmax")(x))


def convnext_style_net():
    """ConvNeXt-style: 7x7 depthwise convolution, LayerNorm, an inverted MLP with GELU, residual add."""
    import keras
    from keras import layers

    inputs = keras.Input((48, 48, 3))
    x = layers.Conv2D(24, 4, strides=4)(inputs)
    x = layers.LayerNormalization(epsilon=1e-6)(x)
    for _ in range(2):
        shortcut = x
        x = layers.DepthwiseConv2D(7, padding="same")(x)
        x = layers.LayerNormalization(epsilon=1e-6)(x)
        x = layers.Dense(96, activation="gelu")(x)
        x = layers.Dense(24)(x)
        x = layers.Add()([x, shortcut])
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.LayerNormalization(epsilon=1e-6)(x)
    return keras.Model(inputs, layers.Dense(10, activation="softmax")(x))


def squeeze_excite_net():
    """Squeeze-and-excitation with hard-swish: Keras's MobileNetV3Small, tiny input."""
    import keras

    return keras.applications.MobileNetV3Small(weights=None, input_shape=(48, 48, 3), classes=10)


@pytest.mark.parametrize(
    "build",
    [residual_net, convnext_style_net, squeeze_excite_net],
    ids=["residual", "convnext-style", "squeeze-excite"],
)
def test_litert_agrees_with_keras_across_architecture_families(build, tmp_path):
    model = build()
    reinitialise(model, seed=11)
    target = tmp_path / "model.tflite"
    verdict = lite.convert_and_check(model, scale, lite.probe_images(48), target)
    assert verdict.ok, verdict.reason
    images = np.random.default_rng(3).integers(0, 256, (6, 48, 48, 3)).astype(np.uint8)
    expected = np.asarray(model(scale(images), training=False))
    got = lite.LitePool(target.read_bytes(), cores=2).run(scale(images))
    np.testing.assert_allclose(got, expected, atol=lite.TOLERANCE)
    assert (got.argmax(1) == expected.argmax(1)).all()
