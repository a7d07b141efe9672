"""The Keras training module alone (no Django): the guide's recipe, its fast paths, cancel, memory.

A small real architecture (MobileNetV2 0.35 at 64 px) with generated weights learns generated
images whose labels differ in colour; every path must reach > 90% on the validation images.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import reinitialise
from tests.training_helpers import colour_png
from training import trainer

pytestmark = pytest.mark.storage_free  # neither database nor queue: the PostgreSQL run leaves it out

SIZE = 64
LABELS = ["red", "green", "blue"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> trainer.TrainData:
    """30 images per label: 21 train, 6 validation, 3 test."""
    folder = tmp_path_factory.mktemp("colours")
    splits: dict[str, list[trainer.Example]] = {"train": [], "validation": [], "test": []}
    image_id = 0
    for label in range(3):
        for i in range(30):
            image_id += 1
            path = folder / f"{label}-{i}.png"
            path.write_bytes(colour_png(label, image_id, size=80))
            split = "train" if i < 21 else "validation" if i < 27 else "test"
            splits[split].append(trainer.Example(path, label, image_id))
    return trainer.TrainData(LABELS, splits["train"], splits["validation"], splits["test"])


def _build():
    import keras

    model = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(SIZE, SIZE, 3), alpha=0.35)
    reinitialise(model, 0)
    return model


@pytest.fixture(scope="module")
def base() -> trainer.Base:
    from keras.applications import mobilenet_v2

    return trainer.Base("tiny", "Tiny MobileNetV2", SIZE, _build, mobilenet_v2.preprocess_input)


def _run(base, data, tmp_path, **config) -> trainer.TrainResult:
    return trainer.run(trainer.TrainConfig(**{"epochs": 15, **config}), base, data, tmp_path)


def test_transfer_learning_learns_the_labels(base, data, tmp_path):
    result = _run(base, data, tmp_path)
    assert result.evaluation["validation"]["accuracy"] > 0.9
    assert result.evaluation["test"]["images"] == 9
    assert result.strategy["cached_features"] and result.strategy["augmented_views"] is None
    assert [h.phase for h in result.history] == ["transfer"] * len(result.history)
    assert result.model_path.exists() and result.labels == LABELS


def test_the_saved_model_takes_pixels_and_gives_what_was_measured(base, data, tmp_path):
    import keras

    result = _run(base, data, tmp_path, epochs=5)
    model = keras.saving.load_model(result.model_path, compile=False)
    pixels = np.stack([trainer.load_image(e.path, SIZE) for e in data.validation]).astype(np.float32)
    probabilities = np.asarray(model(pixels, training=False))
    assert np.abs(probabilities - result.validation_probabilities).max() < 1e-4
    assert model.get_layer("preprocess") is not None  # preprocessing is inside


def test_fine_tuning_from_layer_100_trains_the_upper_layers_on_cached_activations(base, data, tmp_path):
    result = _run(base, data, tmp_path, epochs=10, fine_tune_epochs=3, fine_tune_from=100)
    assert result.evaluation["validation"]["accuracy"] > 0.9
    assert result.strategy["cached_fine_tuning"] is True
    phases = [h.phase for h in result.history]
    assert phases.count("fine-tune") == 3 and phases[0] == "transfer"
    assert any("from layer 100 of 154" in note for note in result.notes)


def test_augmentation_uses_a_fixed_number_of_views_per_image(base, data, tmp_path):
    result = _run(base, data, tmp_path, augment=("flip", "rotate", "zoom"), augment_views=3)
    assert result.evaluation["validation"]["accuracy"] > 0.9
    assert result.strategy["augmented_views"] == 3


def test_fine_tuning_with_augmentation_trains_the_whole_model_on_images(base, data, tmp_path):
    result = _run(base, data, tmp_path, epochs=10, fine_tune_epochs=2, fine_tune_from=120, augment=("flip",))
    assert result.evaluation["validation"]["accuracy"] > 0.9
    assert result.strategy["cached_fine_tuning"] is False


def test_cached_and_plain_paths_give_the_same_kind_of_result(base, data, tmp_path):
    cached = _run(base, data, tmp_path / "cached")
    plain = _run(base, data, tmp_path / "plain", cache_features=False)
    assert cached.evaluation["validation"]["accuracy"] > 0.9 and plain.evaluation["validation"]["accuracy"] > 0.9
    assert plain.strategy["cached_features"] is False


def test_cancel_stops_within_a_batch_and_keeps_the_epochs_so_far(base, data, tmp_path):
    epochs: list[trainer.EpochResult] = []
    with pytest.raises(trainer.Cancelled):
        trainer.run(
            trainer.TrainConfig(epochs=50, early_stopping=False),
            base,
            data,
            tmp_path,
            on_epoch=epochs.append,
            should_stop=lambda: len(epochs) >= 2,
        )
    assert len(epochs) == 2
    assert not (tmp_path / "model.keras").exists()


def test_progress_reports_phases_epochs_and_an_eta(base, data, tmp_path):
    events: list[trainer.ProgressEvent] = []
    trainer.run(trainer.TrainConfig(epochs=4, early_stopping=False), base, data, tmp_path, on_progress=events.append)
    phases = list(dict.fromkeys(e.phase for e in events))
    assert phases == ["preparing", "features", "transfer", "evaluating", "saving"]  # images decoded as features go
    transfer = [e for e in events if e.phase == "transfer"]
    assert transfer[-1].epoch == 4 and transfer[-1].epochs == 4 and transfer[-1].batches == 2  # 63 images, 32 a batch
    percents = [e.percent for e in events]
    assert percents == sorted(percents) and percents[-1] >= 95
    assert any(e.eta_seconds is not None for e in events)


def test_out_of_memory_becomes_a_sentence(base, data, tmp_path, monkeypatch):
    def exhausted(*args, **kwargs):
        import tensorflow as tf

        raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")

    monkeypatch.setattr(trainer, "_extract_views", exhausted)
    with pytest.raises(trainer.TrainingError, match=r"ran out of memory\. Try a smaller batch size or a smaller base"):
        _run(base, data, tmp_path)


def test_a_small_memory_budget_lowers_the_batch_size_and_says_so(base, data, tmp_path):
    result = _run(base, data, tmp_path, epochs=2, batch_size=256, fine_tune_epochs=1, fine_tune_from=100,
                  memory_mb=850)  # fmt: skip
    assert result.batch_size < 256
    assert any("Batch size lowered from 256" in note for note in result.notes)


def test_a_budget_too_small_for_the_base_is_refused_in_words(base, data, tmp_path):
    with pytest.raises(trainer.TrainingError, match="more than the 256 MiB this server allows"):
        _run(base, data, tmp_path, memory_mb=256)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"epochs": 0}, "Epochs must be between 1 and 500."),
        ({"fine_tune_epochs": 2}, "Say from which layer of the base fine-tuning starts."),
        ({"learning_rate": 0}, "The learning rate must be above 0"),
        ({"augment": ("flip", "blur")}, "Unknown augmentation blur"),
        ({"batch_size": 0}, "The batch size must be between 1 and 512."),
    ],
)
def test_invalid_configurations_are_refused_with_what_to_change(config, message):
    with pytest.raises(trainer.TrainingError, match=message):
        trainer.TrainConfig(**config).validate()


def test_fine_tuning_beyond_the_last_layer_is_refused(base, data, tmp_path):
    with pytest.raises(trainer.TrainingError, match="Fine-tuning must start at a layer below 154"):
        _run(base, data, tmp_path, fine_tune_epochs=1, fine_tune_from=154)


def test_data_without_validation_images_or_with_an_empty_label_is_refused(data):
    with pytest.raises(trainer.TrainingError, match="no validation images"):
        trainer.TrainData(LABELS, data.train, []).check()
    with pytest.raises(trainer.TrainingError, match="'blue' has no training image"):
        trainer.TrainData(LABELS, [e for e in data.train if e.label != 2], data.validation).check()
    with pytest.raises(trainer.TrainingError, match="at least 2 labels"):
        trainer.TrainData(["red"], data.train[:3], data.validation[:1]).check()


def test_a_missing_image_file_is_named(base, data, tmp_path):
    broken = trainer.TrainData(LABELS, [*data.train, trainer.Example(tmp_path / "gone.png", 0, 999)], data.validation)
    with pytest.raises(trainer.TrainingError, match="The file of image 999 is missing"):
        trainer.run(trainer.TrainConfig(epochs=1), base, broken, tmp_path)


def test_every_keras_preprocessing_is_built_into_the_model_exactly():
    import importlib

    pixels = np.random.default_rng(1).uniform(0, 255, size=(2, 8, 8, 3)).astype(np.float32)
    for module in ("mobilenet_v2", "resnet50", "vgg16", "densenet", "inception_v3", "efficientnet"):
        preprocess = importlib.import_module(f"keras.applications.{module}").preprocess_input
        layer = trainer.preprocessing_layer(preprocess)
        expected = preprocess(pixels.copy())
        got = pixels if layer is None else np.asarray(layer(pixels))
        assert np.abs(got - expected).max() < 1e-3 * max(1.0, np.abs(expected).max()), module


def test_the_feature_extractor_is_cut_from_a_full_model_file(tmp_path):
    """Offline admins often install only the with-head file: the base comes out of it, weights intact."""
    from classifier import zoo
    from tests.helpers import make_zoo_weights

    model = zoo.get("mobilenetv2-0.35-96")
    path = make_zoo_weights(model.key, tmp_path, include_top=True, seed=3)
    base = trainer.cut_feature_extractor(model, path)
    full = model.build(path, include_top=True)
    x = np.random.default_rng(0).uniform(-1, 1, size=(1, 96, 96, 3)).astype(np.float32)
    inner = full.get_layer(base.layers[-1].name).output
    import keras

    reference = keras.Model(full.input, inner)(x)
    assert np.abs(np.asarray(base(x)) - np.asarray(reference)).max() < 1e-5


def test_decoding_applies_exif_rotation_like_classify(tmp_path):
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif)
    path = Path(tmp_path / "rotated.jpg")
    path.write_bytes(out.getvalue())
    assert trainer.load_image(path, 32).shape == (32, 32, 3)
