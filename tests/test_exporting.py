"""Model exports (training.exporting): zips, agreement with the app's model, and the README's examples.

One small real Keras model is built per module, with weights set by hand so that the class is the
dominant colour channel: answers are well separated, so int8 rounding cannot flip many of them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training import exporting
from training.exporting import FORMATS, ExportResult, build_export, run_tflite

SIZE = 32
# Spaces, unicode and underscores must reach labels.txt exactly as given.
LABELS = ["red apple", "grüner_Apfel", "青 blue"]
CHECK_PER_CLASS = 8
CALIBRATION_PER_CLASS = 10
MODEL_NAME = "Fruit & Colours: v2 (été)"
CODE_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def coloured_images(per_class: int, seed: int) -> np.ndarray:
    """uint8 images in label order where channel k dominates for class k, with noise everywhere."""
    rng = np.random.default_rng(seed)
    images = []
    for channel in range(len(LABELS)):
        batch = rng.integers(0, 110, size=(per_class, SIZE, SIZE, 3))
        batch[..., channel] += rng.integers(120, 146, size=(per_class, SIZE, SIZE))
        images.append(batch)
    return np.concatenate(images).astype(np.uint8)


def build_model(path: Path) -> None:
    """Input 0-255 -> "preprocess" (to -1..1) -> Conv2D(8) -> average -> softmax over 3 labels."""
    import keras

    inputs = keras.Input((SIZE, SIZE, 3), dtype="float32")
    preprocess = keras.layers.Conv2D(3, 1, name="preprocess", trainable=False)
    conv = keras.layers.Conv2D(8, 3, activation="relu")
    dense = keras.layers.Dense(len(LABELS), activation="softmax")
    outputs = dense(keras.layers.GlobalAveragePooling2D()(conv(preprocess(inputs))))
    model = keras.Model(inputs, outputs)

    preprocess.set_weights([np.eye(3, dtype="float32").reshape(1, 1, 3, 3) / 127.5, -np.ones(3, "float32")])
    rng = np.random.default_rng(7)
    # Filters 0-2 average one channel each (bias 1 keeps them above the ReLU); 3-7 are noise.
    kernel = rng.normal(0, 0.05, size=(3, 3, 3, 8)).astype("float32")
    bias = np.zeros(8, "float32")
    for channel in range(3):
        kernel[:, :, :, channel] = 0
        kernel[:, :, channel, channel] = 1 / 9
        bias[channel] = 1
    conv.set_weights([kernel, bias])
    weights = rng.normal(0, 0.1, size=(8, len(LABELS))).astype("float32")
    weights[:3, :] += 8 * np.eye(3, dtype="float32")
    dense.set_weights([weights, np.zeros(len(LABELS), "float32")])
    model.save(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """The model file, its images and the app's own probabilities on the check images."""
    import keras

    folder = tmp_path_factory.mktemp("trained")
    model_path = folder / "model.keras"
    build_model(model_path)
    check = coloured_images(CHECK_PER_CLASS, seed=1)
    reference = keras.saving.load_model(model_path).predict(check.astype(np.float32), verbose=0)
    return {
        "model_path": model_path,
        "calibration": coloured_images(CALIBRATION_PER_CLASS, seed=2),
        "check": check,
        "reference": reference,
    }


@pytest.fixture(scope="module")
def exports(trained, tmp_path_factory) -> dict[str, ExportResult]:
    """Every format exported once; the tests below read the results and the zips."""
    out_dir = tmp_path_factory.mktemp("exports") / "not-yet-there"
    return {fmt: export(fmt, trained, out_dir) for fmt in FORMATS}


def export(fmt: str, trained: dict, out_dir: Path, **overrides) -> ExportResult:
    arguments = {key: trained[key] for key in ("model_path", "calibration", "check", "reference")}
    arguments.update(overrides)
    return build_export(fmt, labels=LABELS, out_dir=out_dir, name=MODEL_NAME, **arguments)


def unzip(result: ExportResult, target: Path) -> Path:
    with zipfile.ZipFile(result.path) as archive:
        archive.extractall(target)
    return target


def readme_example(folder: Path) -> str:
    blocks = CODE_BLOCK.findall((folder / "README.md").read_text(encoding="utf-8"))
    assert len(blocks) == 1
    return blocks[0]


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_writes_a_zip_with_model_labels_and_readme(exports, fmt):
    result = exports[fmt]
    model_file = "model.keras" if fmt == "keras" else "model.tflite"

    assert result.ok, result.message
    assert result.path.name == f"fruit-colours-v2-ete-{fmt}.zip"
    assert result.size_bytes == result.path.stat().st_size > 0
    with zipfile.ZipFile(result.path) as archive:
        assert sorted(archive.namelist()) == sorted([model_file, "labels.txt", "README.md"])
        assert archive.read("labels.txt").decode("utf-8").splitlines() == LABELS
        readme = archive.read("README.md").decode("utf-8")
    assert MODEL_NAME in readme
    assert f"{SIZE} x {SIZE}" in readme
    assert f"(1, {SIZE}, {SIZE}, 3)" in readme or f"(batch, {SIZE}, {SIZE}, 3)" in readme


def test_keras_zip_holds_the_exact_model_file(exports, trained, tmp_path):
    folder = unzip(exports["keras"], tmp_path)

    assert (folder / "model.keras").read_bytes() == trained["model_path"].read_bytes()


@pytest.mark.parametrize("fmt", ["keras", "tflite-float32"])
def test_float_formats_agree_on_every_check_image(exports, trained, fmt):
    result = exports[fmt]

    assert result.ok
    assert result.checked == len(trained["check"]) == 3 * CHECK_PER_CLASS
    assert result.agreeing == result.checked
    assert result.agreement == 1.0
    assert result.max_abs_diff < 1e-4
    assert (
        result.message
        == f"Agrees with the app's model on {result.checked} of {result.checked} validation images (top-1)."
    )


def test_int8_converts_runs_and_reports_its_agreement(exports, trained):
    result = exports["tflite-int8"]

    assert result.ok, result.message
    assert result.checked == len(trained["check"])
    assert 0.8 <= result.agreement <= 1.0
    assert 0 <= result.max_abs_diff <= 1
    assert f"{result.agreeing} of {result.checked}" in result.message
    with zipfile.ZipFile(result.path) as archive:
        assert "uint8 with scale" in archive.read("README.md").decode("utf-8")


def test_int8_input_is_uint8_pixels_and_run_tflite_takes_them(exports, trained, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    model_file = unzip(exports["tflite-int8"], tmp_path) / "model.tflite"
    details = Interpreter(model_path=str(model_file)).get_input_details()[0]
    probabilities = run_tflite(model_file, trained["check"])

    assert details["dtype"] == np.uint8
    assert probabilities.shape == trained["reference"].shape
    assert probabilities.dtype == np.float32
    assert np.allclose(probabilities.sum(axis=1), 1, atol=0.05)
    assert np.mean(probabilities.argmax(axis=1) == trained["reference"].argmax(axis=1)) >= 0.8


def test_run_tflite_handles_any_number_of_images(exports, trained, tmp_path):
    model_file = unzip(exports["tflite-float32"], tmp_path) / "model.tflite"

    assert run_tflite(model_file, trained["check"][:0]).shape == (0, len(LABELS))
    one = run_tflite(model_file, trained["check"][:1], num_threads=1)
    assert np.allclose(one, trained["reference"][:1], atol=1e-4)


@pytest.mark.parametrize("fmt", ["tflite-float32", "tflite-int8", "keras"])
def test_readme_example_runs_and_prints_a_label(exports, trained, tmp_path, fmt):
    folder = unzip(exports[fmt], tmp_path / "unzipped")
    (folder / "classify.py").write_text(readme_example(folder), encoding="utf-8")
    # A green-dominated photo larger than the model's input, so the example has to resize it.
    photo = tmp_path / "photo.png"
    Image.fromarray(np.repeat(np.repeat(trained["check"][CHECK_PER_CLASS], 3, axis=0), 3, axis=1)).save(photo)

    run = subprocess.run(
        [sys.executable, "classify.py", str(photo)],
        cwd=folder,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONIOENCODING": "utf-8"},
    )

    assert run.returncode == 0, run.stderr
    label, probability = run.stdout.strip().splitlines()[-1].rsplit(" ", 1)
    assert label == LABELS[1]
    assert 0 < float(probability) <= 1


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_file_that_is_not_a_model_fails_with_a_message_and_no_zip(trained, tmp_path, fmt):
    broken = tmp_path / "broken.keras"
    broken.write_text("not a model")
    out_dir = tmp_path / "out"

    result = export(fmt, trained, out_dir, model_path=broken)

    assert not result.ok
    assert result.path is None
    assert result.size_bytes == 0
    assert result.agreement is None
    assert result.message.startswith(f"{exporting.FORMAT_NAMES[fmt]} export failed: ")
    assert "Traceback" not in result.message and "\n" not in result.message
    assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_zero_check_images_is_ok_with_nothing_checked(trained, tmp_path, fmt):
    empty_check = trained["check"][:0]
    empty_reference = trained["reference"][:0]

    result = export(fmt, trained, tmp_path, check=empty_check, reference=empty_reference)

    assert result.ok, result.message
    assert result.checked == 0
    assert result.agreement is None
    assert result.max_abs_diff is None
    assert "No validation images" in result.message
    assert result.path.is_file()


def test_float_export_that_disagrees_is_not_offered(trained, tmp_path):
    # The app's answers with two classes swapped: every image of those classes now disagrees.
    swapped = trained["reference"][:, [1, 0, 2]]

    result = export("keras", trained, tmp_path, reference=swapped)

    assert not result.ok
    assert result.agreeing == CHECK_PER_CLASS
    assert "not offered" in result.message


def test_int8_without_calibration_images_fails_with_a_message(trained, tmp_path):
    result = export("tflite-int8", trained, tmp_path, calibration=trained["calibration"][:0])

    assert not result.ok
    assert "no training images to calibrate" in result.message
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_format_raises_value_error(trained, tmp_path):
    with pytest.raises(ValueError, match="onnx"):
        export("onnx", trained, tmp_path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_result_round_trips_through_json(exports, fmt):
    result = exports[fmt]

    stored = json.loads(json.dumps(result.as_dict()))

    assert stored["path"] == str(result.path)
    assert ExportResult.from_dict(stored) == result


def test_failed_result_round_trips_through_json():
    result = ExportResult("tflite-int8", None, 0, 0, 0, None, False, "TFLite int8 export failed: no.")

    assert ExportResult.from_dict(json.loads(json.dumps(result.as_dict()))) == result


@pytest.mark.parametrize(
    ("name", "expected"),
    [("My model", "my-model-keras.zip"), ("../../etc/passwd", "etc-passwd-keras.zip"), ("青", "model-keras.zip")],
)
def test_zip_name_is_a_safe_slug(name, expected):
    assert exporting.zip_name(name, "keras") == expected
