"""Training's features through LiteRT: the converted base agrees with Keras, or the job stays on TensorFlow.

A small real architecture (MobileNetV2 0.35 at 64 px, generated weights, the family's
preprocessing built in) is converted as the trainer converts it; the gate refuses a converted
file that does not agree, and the job then says why it used TensorFlow.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from classifier import lite
from tests.helpers import reinitialise
from tests.training_helpers import colour_png
from training import lite_features, trainer
from training.lite_features import LiteFeatures

SIZE = 64
WEIGHTS_ID = "ab" * 32


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> trainer.TrainData:
    """20 images per label, red, green and blue: 14 train, 4 validation, 2 test."""
    folder = tmp_path_factory.mktemp("colours")
    splits: dict[str, list[trainer.Example]] = {"train": [], "validation": [], "test": []}
    for label in range(3):
        for i in range(20):
            image_id = label * 100 + i
            path = folder / f"{image_id}.png"
            path.write_bytes(colour_png(label, image_id, size=80))
            splits["train" if i < 14 else "validation" if i < 18 else "test"].append(
                trainer.Example(path, label, image_id)
            )
    return trainer.TrainData(["red", "green", "blue"], splits["train"], splits["validation"], splits["test"])


def _build(seed: int = 0):
    import keras

    model = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(SIZE, SIZE, 3), alpha=0.35)
    reinitialise(model, seed)
    return model


def _extractor(seed: int = 0):
    from keras.applications import mobilenet_v2

    base = _build(seed)
    base.trainable = False
    return trainer._feature_extractor(base, trainer.preprocessing_layer(mobilenet_v2.preprocess_input), SIZE)


def _base() -> trainer.Base:
    from keras.applications import mobilenet_v2

    return trainer.Base("tiny", "Tiny MobileNetV2", SIZE, _build, mobilenet_v2.preprocess_input)


def _pixels(examples) -> np.ndarray:
    return trainer.load_images(examples, SIZE)


def _path(folder, extractor, images, weights_id: str = WEIGHTS_ID) -> lite_features.FeaturePath:
    return lite_features.lite_path(extractor, "tiny", SIZE, LiteFeatures(folder, weights_id), lambda: images)


def _target(folder, weights_id: str = WEIGHTS_ID):
    return lite_features.converted_path(LiteFeatures(folder, weights_id), "tiny", SIZE)


@pytest.fixture(scope="module")
def extractor():
    return _extractor()


@pytest.fixture(scope="module")
def converted(extractor, data, tmp_path_factory):
    """One real conversion of the extractor, as the first job on this base makes it: (folder, its path)."""
    folder = tmp_path_factory.mktemp("lite")
    return folder, _path(folder, extractor, _pixels(data.train[:4]))


@pytest.fixture(scope="module")
def wrong_content():
    """The same architecture converted with other weights: a deliberately wrong file."""
    return lite.convert(_extractor(seed=5))


@pytest.fixture
def cache(converted, tmp_path):
    """A fresh copy of the converted file's folder, as a second job finds it."""
    import shutil

    return shutil.copytree(converted[0], tmp_path / "lite")


def test_litert_features_match_keras_within_the_tolerance(extractor, converted, data):
    folder, path = converted
    assert path.runtime == "LiteRT" and path.description == "LiteRT", path.reason
    assert path.checked == lite.PROBE_IMAGES + 4 and path.convert_seconds > 0

    pixels = _pixels(data.validation + data.test).astype(np.float32)
    expected = np.asarray(extractor(pixels, training=False))
    got = path.forward(pixels)
    scale = max(1.0, float(np.abs(expected).max()))
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= lite_features.FEATURE_TOLERANCE * scale
    assert lite_features.compare_features(expected, got).ok

    assert _target(folder).is_file() and _target(folder).parent.name == "tiny"
    assert lite.read_verdict(_target(folder)).ok and lite.read_verdict(_target(folder)).checked == lite.PROBE_IMAGES


def test_the_next_job_on_the_same_base_reuses_the_converted_file(extractor, cache, data, monkeypatch):
    monkeypatch.setattr(lite, "convert", lambda model: pytest.fail("converted again"))
    again = _path(cache, extractor, _pixels(data.train[4:8]))
    assert again.runtime == "LiteRT" and again.convert_seconds == 0.0


def test_another_weights_file_converts_again_and_replaces_the_old_file(extractor, cache, data, monkeypatch):
    content = _target(cache).read_bytes()
    converted = []
    monkeypatch.setattr(lite, "convert", lambda model: converted.append(model) or content)
    path = _path(cache, extractor, _pixels(data.train[:2]), weights_id="cd" * 32)
    assert path.runtime == "LiteRT" and converted == [extractor]
    assert _target(cache, "cd" * 32).is_file()
    assert not _target(cache).exists() and not _target(cache).with_suffix(".json").exists()


def test_the_gate_compares_features_relative_to_their_scale():
    small = np.array([[0.2, 0.5], [0.0, 0.9]])
    assert lite_features.compare_features(small, small + 5e-5).ok
    assert not lite_features.compare_features(small, small + 5e-4).ok  # below a scale of 1: absolute 1e-4

    large = np.array([[120.0, 3.0], [0.0, 80.0]])
    assert lite_features.compare_features(large, large + 5e-3).ok  # 4e-5 of the scale: float32 rounding
    refused = lite_features.compare_features(large, large + np.array([[0.0, 0.0], [0.0, 0.05]]))
    assert not refused.ok and refused.top1_agreement == 0.5
    assert "features differ by up to 4.2e-04 of their scale (allowed 1e-04)" in refused.reason

    assert "NaN" in lite_features.compare_features(small, np.full_like(small, np.nan)).reason
    assert not lite_features.compare_features(small, small[:, :1]).ok


def test_a_conversion_that_disagrees_is_refused_and_not_kept(extractor, wrong_content, data, tmp_path, monkeypatch):
    monkeypatch.setattr(lite, "convert", lambda model: wrong_content)
    path = _path(tmp_path, extractor, _pixels(data.train[:4]))
    assert path.forward is None and path.runtime == "TensorFlow"
    assert path.reason.startswith("The converted base's features differ by up to")
    assert path.description == f"TensorFlow ({path.reason.rstrip('.')})"
    assert not _target(tmp_path).exists()
    assert not lite.read_verdict(_target(tmp_path)).ok  # remembered: the same file is not converted again

    monkeypatch.setattr(lite, "convert", lambda model: pytest.fail("converted again"))
    assert _path(tmp_path, extractor, _pixels(data.train[:4])).reason == path.reason


def test_a_converted_file_that_disagrees_on_the_jobs_own_images_is_not_used(extractor, cache, wrong_content, data):
    _target(cache).write_bytes(wrong_content)  # broken after its probe check passed
    path = _path(cache, extractor, _pixels(data.train[:4]))
    assert path.forward is None
    assert path.reason.endswith("on this job's images.") and "features differ by up to" in path.reason


def test_litert_is_not_used_when_the_memory_budget_leaves_too_little(extractor, cache, data, tmp_path, monkeypatch):
    monkeypatch.setattr(lite, "convert", lambda model: pytest.fail("converted although it does not fit"))
    images = _pixels(data.train[:2])
    settings = LiteFeatures(tmp_path, WEIGHTS_ID)
    path = lite_features.lite_path(extractor, "tiny", SIZE, settings, lambda: images, memory_left_mb=100)
    assert path.forward is None
    assert path.reason.startswith("Converting this base to LiteRT and running it needs about 3")
    assert path.reason.endswith("MiB more, and the training memory budget leaves 100 MiB.")

    converted = LiteFeatures(cache, WEIGHTS_ID)  # only the interpreter's share is needed then
    assert lite_features.lite_path(extractor, "tiny", SIZE, converted, lambda: images, memory_left_mb=100).forward


def test_a_job_trains_end_to_end_with_litert_features(data, tmp_path):
    import keras

    config = trainer.TrainConfig(epochs=15)
    result = trainer.run(config, _base(), data, tmp_path / "lite", lite=LiteFeatures(tmp_path / "cache", WEIGHTS_ID))
    assert result.strategy["features"] == "LiteRT"
    assert result.strategy["features_check"]["images"] == lite.PROBE_IMAGES + lite_features.JOB_CHECK_IMAGES
    assert result.strategy["features_check"]["max_difference"] <= lite_features.FEATURE_TOLERANCE
    assert result.timings["features_convert_s"] > 0
    assert result.evaluation["validation"]["accuracy"] > 0.9
    assert not any("TensorFlow" in note for note in result.notes)

    # The saved model (TensorFlow, pixels in) gives what was measured on LiteRT's features.
    model = keras.saving.load_model(result.model_path, compile=False)
    pixels = _pixels(data.validation).astype(np.float32)
    assert np.abs(np.asarray(model(pixels, training=False)) - result.validation_probabilities).max() < 1e-4

    # And the same job on TensorFlow's features learns the same model, to float32 rounding.
    plain = trainer.run(config, _base(), data, tmp_path / "tf")
    assert plain.strategy["features"] == "TensorFlow (LiteRT was not asked for)"
    assert np.abs(plain.validation_probabilities - result.validation_probabilities).max() < lite.TOLERANCE
    assert plain.evaluation["validation"]["accuracy"] == result.evaluation["validation"]["accuracy"]


def test_a_job_whose_base_fails_to_convert_trains_on_tensorflow_and_says_why(data, tmp_path, monkeypatch):
    def fail(model):
        raise ValueError("Op type not registered 'Custom>Thing'\nmore details")

    monkeypatch.setattr(lite, "convert", fail)
    result = trainer.run(
        trainer.TrainConfig(epochs=15), _base(), data, tmp_path, lite=LiteFeatures(tmp_path / "cache", WEIGHTS_ID)
    )
    assert result.strategy["features"] == "TensorFlow (Conversion failed: Op type not registered 'Custom>Thing')"
    assert "The base's features were computed with TensorFlow: Conversion failed" in " ".join(result.notes)
    assert result.evaluation["validation"]["accuracy"] > 0.9
    verdict = json.loads(next((tmp_path / "cache" / "tiny").glob("*.json")).read_text())
    assert verdict["ok"] is False and verdict["reason"].startswith("Conversion failed")


def test_the_off_switch_and_a_job_without_lite_stay_on_tensorflow(extractor, data, tmp_path):
    off = lite_features.lite_path(extractor, "tiny", SIZE, LiteFeatures.off("LiteRT is turned off on this server."),
                                  lambda: _pixels(data.train[:2]))  # fmt: skip
    assert off.forward is None and off.description == "TensorFlow (LiteRT is turned off on this server)"
    assert not any(tmp_path.iterdir())


@pytest.mark.django_db
def test_jobs_keep_the_converted_base_under_the_data_folder_and_obey_the_setting(settings, tmp_path):
    from classifier import runtimes, zoo
    from tests.helpers import make_zoo_weights
    from tests.training_helpers import TRAIN_BASE
    from training import jobs

    model = zoo.get(TRAIN_BASE)
    path = make_zoo_weights(TRAIN_BASE, settings.WEIGHTS_DIR, include_top=False)
    settings.INFERENCE_RUNTIME = "litert"
    chosen = jobs.lite_features(model)
    assert chosen.folder == tmp_path / "lite" / "features"
    assert chosen.weights_id == runtimes.weights_hash(path) and chosen.threads >= 1

    settings.INFERENCE_RUNTIME = "tensorflow"
    assert jobs.lite_features(model) == LiteFeatures.off("LiteRT is turned off on this server.")
