"""A trained model as downloadable zips, each checked against the app's own model. No Django.

Three formats (`FORMATS`): the Keras file itself, TFLite float32 and TFLite int8. Every zip holds
the model file, `labels.txt` (one label per line, in output order) and a `README.md` with a
runnable example. Before a zip is offered, its model is read back from disk and run on the
validation images, and its top-1 answers are compared with the app's model's answers
(`reference`): float formats must agree on every image; int8 is offered when it converts and
runs, and its agreement is reported so users can judge the rounding.

What TensorFlow 2.21 / Keras 3.15 really do (checked when this module was written):

- `tf.lite.TFLiteConverter.from_keras_model` still works with a Keras 3 model: it exports the
  model through `keras.export.ExportArchive` (which prints "Saved artifact at ..." to stdout)
  and converts that SavedModel.
- Full integer quantization accepts `inference_input_type = tf.uint8` together with
  `inference_output_type = tf.float32`: the model takes uint8 and returns float32
  probabilities (the output is dequantized inside the model, its quantization is (0.0, 0)).
- The uint8 input's quantization comes from the calibration images' range. Photos span
  0-255, so it is scale 1.0, zero point 0: the input tensor takes the raw pixel values. A
  narrower calibration range gives other parameters, so the runner and the README's example
  always apply the parameters the file states instead of assuming raw pixels.

TensorFlow and Keras are imported inside the functions that need them: importing this module
(for `ExportResult` in a view, say) must stay cheap.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import shutil
import tempfile
import unicodedata
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from webapp import atomic

logger = logging.getLogger(__name__)

FORMATS = ("keras", "tflite-float32", "tflite-int8")
FORMAT_NAMES = {"keras": "Keras (.keras)", "tflite-float32": "TFLite float32", "tflite-int8": "TFLite int8"}
MODEL_FILE_NAMES = {"keras": "model.keras", "tflite-float32": "model.tflite", "tflite-int8": "model.tflite"}
LABELS_FILE_NAME = "labels.txt"
README_FILE_NAME = "README.md"
# Enough images to see each activation's range; more only makes the conversion slower.
MAX_CALIBRATION_IMAGES = 200
MAX_SLUG_LENGTH = 80
FALLBACK_SLUG = "model"
# Keras's predict batch for the check: small enough for a 2-core machine with a large model.
PREDICT_BATCH_SIZE = 32


class ExportError(Exception):
    """An export that cannot be offered; str(error) says why in plain words."""


@dataclass(frozen=True)
class ExportResult:
    """One format's outcome, stored in a JSON field and shown on the job page."""

    format: str
    path: Path | None
    size_bytes: int
    checked: int
    agreeing: int
    max_abs_diff: float | None
    ok: bool
    message: str

    @property
    def agreement(self) -> float | None:
        """The share of checked images with the app's top-1 label; None when nothing was checked."""
        return self.agreeing / self.checked if self.checked else None

    @property
    def format_name(self) -> str:
        return FORMAT_NAMES.get(self.format, self.format)

    def as_dict(self) -> dict:
        """Plain JSON types only, so the result fits a database JSON field."""
        data = asdict(self)
        data["path"] = str(self.path) if self.path is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ExportResult:
        """The inverse of `as_dict`; unknown keys (from a later version) are ignored."""
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        path = values.get("path")
        values["path"] = Path(path) if path else None
        max_abs_diff = values.get("max_abs_diff")
        values["max_abs_diff"] = float(max_abs_diff) if max_abs_diff is not None else None
        return cls(**values)


def zip_name(name: str, fmt: str) -> str:
    """A file name that is safe on every system and still says which model and format it is."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:MAX_SLUG_LENGTH].strip("-")
    return f"{slug or FALLBACK_SLUG}-{fmt}.zip"


def build_export(
    fmt: str,
    model_path: Path,
    labels: Sequence[str],
    out_dir: Path,
    *,
    name: str,
    calibration: np.ndarray,
    check: np.ndarray,
    reference: np.ndarray,
) -> ExportResult:
    """Write one format's zip in out_dir and measure how well it agrees with the app's model.

    A conversion or run failure never raises: it gives ok=False, no file and a plain message.
    A float export that disagrees on any image keeps its zip but is not offered (ok=False).
    """
    if fmt not in FORMATS:
        raise ValueError(f"Unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}.")
    if len(check) != len(reference):
        raise ValueError(f"{len(check)} check images but {len(reference)} reference rows.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / zip_name(name, fmt)
    # The model file is made in a private folder beside the target (".tmp": a leftover of a killed
    # process is recognised as one, `webapp.atomic`); the folder goes away whatever happens.
    with tempfile.TemporaryDirectory(prefix=".export-", suffix=".tmp", dir=out_dir) as staging:
        try:
            model_file, input_size, quantization = _write_model(
                fmt, Path(model_path), labels, Path(staging), calibration
            )
            outputs = _run_export(fmt, model_file, check, input_size)
            checked, agreeing, max_abs_diff = _compare(outputs, np.asarray(reference))
            readme = _readme(fmt, name, labels, input_size, quantization)
            with atomic.replacing(target) as partial:  # nothing half-written is ever found under its name
                _write_zip(partial, model_file, labels, readme)
        except Exception as error:  # any failure becomes a message, never a crash
            logger.warning("Export %s of %s failed", fmt, model_path, exc_info=True)
            target.unlink(missing_ok=True)
            return _failed(fmt, error)
    ok = fmt == "tflite-int8" or agreeing == checked
    return ExportResult(
        format=fmt,
        path=target,
        size_bytes=target.stat().st_size,
        checked=checked,
        agreeing=agreeing,
        max_abs_diff=max_abs_diff,
        ok=ok,
        message=_agreement_message(fmt, checked, agreeing),
    )


def run_tflite(path: Path, images: np.ndarray, num_threads: int = 2) -> np.ndarray:
    """Float probabilities (m, N) from a .tflite file, for uint8 pixel images (m, H, W, 3).

    One image per invoke: a converted model's batch size is fixed at 1 in the file, and
    resizing it fails for some graphs; a check of a few dozen images does not need batches.
    Quantized inputs get the file's own scale and zero point; quantized outputs are dequantized.
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
    input_details = interpreter.get_input_details()[0]
    output_details = interpreter.get_output_details()[0]
    if input_details["shape"][0] != 1:
        interpreter.resize_tensor_input(input_details["index"], [1, *input_details["shape"][1:]])
    interpreter.allocate_tensors()
    results = np.empty((len(images), int(output_details["shape"][-1])), dtype=np.float32)
    for row, image in enumerate(images):
        interpreter.set_tensor(input_details["index"], _quantize_input(image[None], input_details))
        interpreter.invoke()
        results[row] = _dequantize_output(interpreter.get_tensor(output_details["index"]), output_details)[0]
    return results


def _quantize_input(pixels: np.ndarray, details: dict) -> np.ndarray:
    """What the input tensor takes for these 0-255 pixels: q = round(pixel / scale + zero_point)."""
    dtype = np.dtype(details["dtype"])
    scale, zero_point = details["quantization"]
    values = pixels.astype(np.float32)
    if np.issubdtype(dtype, np.integer):
        if scale:
            values = np.round(values / scale + zero_point)
        limits = np.iinfo(dtype)
        values = np.clip(values, limits.min, limits.max)
    return values.astype(dtype)


def _dequantize_output(values: np.ndarray, details: dict) -> np.ndarray:
    scale, zero_point = details["quantization"]
    if np.issubdtype(np.dtype(details["dtype"]), np.integer) and scale:
        return (values.astype(np.float32) - zero_point) * scale
    return values.astype(np.float32)


# --- Writing the model file ---------------------------------------------------------------------


def _write_model(
    fmt: str, model_path: Path, labels: Sequence[str], staging: Path, calibration: np.ndarray
) -> tuple[Path, tuple[int, int], tuple[float, int] | None]:
    """The model file for fmt in staging, the model's input size, and the int8 input quantization."""
    model = _load_keras(model_path)
    input_size = _input_size(model)
    if model.output_shape[-1] != len(labels):
        # labels.txt would name the wrong outputs; better no file than a wrong one.
        raise ExportError(f"The model has {model.output_shape[-1]} outputs but {len(labels)} labels were given.")
    target = staging / MODEL_FILE_NAMES[fmt]
    if fmt == "keras":
        # A copy, not a re-save: users get exactly the file the app runs.
        shutil.copyfile(model_path, target)
        return target, input_size, None
    target.write_bytes(_convert(model, fmt, calibration))
    return target, input_size, _input_quantization(target)


def _load_keras(model_path: Path) -> Any:
    """The Keras model, or an ExportError that says what is wrong with the file."""
    import keras

    # Keras says "File not found" for a file that is there but not a zip; say what we know.
    if not model_path.is_file():
        raise ExportError("The model file is missing.")
    if not zipfile.is_zipfile(model_path):
        raise ExportError("The model file is not a Keras model (.keras files are zip archives).")
    return keras.saving.load_model(model_path)


def _input_size(model: Any) -> tuple[int, int]:
    shape = model.input_shape
    if len(shape) != 4 or shape[3] != 3 or not shape[1] or not shape[2]:
        raise ExportError(f"The model's input shape {shape} is not a fixed-size RGB image.")
    return int(shape[1]), int(shape[2])


def _convert(model: Any, fmt: str, calibration: np.ndarray) -> bytes:
    """TFLite flatbuffer bytes: plain float32, or full integer quantization with uint8 input."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if fmt == "tflite-int8":
        samples = _calibration_samples(calibration)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: _representative_batches(samples)
        # Integer-only kernels: the file runs on microcontrollers and NPUs, or fails to convert.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        # TF 2.21 accepts float32 here (see the module docstring): users get probabilities as is.
        converter.inference_output_type = tf.float32
    # Keras's export prints every traced tensor ("Saved artifact at ...") to stdout: hundreds of
    # lines per conversion in the worker's log, none of them useful to an administrator.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        # TF warns that uint8 input statistics were "not specified": the representative dataset
        # gives them, and the file's input quantization shows it. Nothing for an admin to act on.
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        return converter.convert()


def _calibration_samples(calibration: np.ndarray) -> np.ndarray:
    """At most MAX_CALIBRATION_IMAGES, spread evenly: the caller's images may be sorted by label."""
    if len(calibration) == 0:
        raise ExportError("There are no training images to calibrate the int8 quantization with.")
    if len(calibration) <= MAX_CALIBRATION_IMAGES:
        return calibration
    picks = np.linspace(0, len(calibration) - 1, MAX_CALIBRATION_IMAGES).round().astype(int)
    return calibration[picks]


def _representative_batches(samples: np.ndarray) -> Iterator[list[np.ndarray]]:
    # The model's input takes 0-255 pixels (preprocessing is inside), so calibrate on those.
    for image in samples:
        yield [image[None].astype(np.float32)]


def _input_quantization(tflite_file: Path) -> tuple[float, int] | None:
    """The input's (scale, zero point) when it is an integer tensor, for the README."""
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_path=str(tflite_file)).get_input_details()[0]
    if not np.issubdtype(np.dtype(details["dtype"]), np.integer):
        return None
    scale, zero_point = details["quantization"]
    return float(scale), int(zero_point)


# --- Checking against the app's model -----------------------------------------------------------


def _run_export(fmt: str, model_file: Path, check: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """The exported file's probabilities on check, read back from disk so a broken file shows.

    With no check images, one black image still proves the file loads and runs.
    """
    images = check if len(check) else np.zeros((1, *input_size, 3), dtype=np.uint8)
    if fmt == "keras":
        model = _load_keras(model_file)
        outputs = model.predict(images.astype(np.float32), batch_size=PREDICT_BATCH_SIZE, verbose=0)
    else:
        outputs = run_tflite(model_file, images)
    outputs = np.asarray(outputs, dtype=np.float32)
    if not np.all(np.isfinite(outputs)):
        raise ExportError("The exported model gives invalid numbers (NaN or infinity).")
    return outputs[: len(check)]


def _compare(outputs: np.ndarray, reference: np.ndarray) -> tuple[int, int, float | None]:
    """(checked, agreeing on top-1, largest absolute probability difference)."""
    if len(reference) == 0:
        return 0, 0, None
    if outputs.shape != reference.shape:
        raise ExportError(f"The exported model gives {outputs.shape[-1]} scores per image, not {reference.shape[-1]}.")
    agreeing = int(np.sum(outputs.argmax(axis=1) == reference.argmax(axis=1)))
    return len(reference), agreeing, float(np.max(np.abs(outputs - reference)))


def _agreement_message(fmt: str, checked: int, agreeing: int) -> str:
    if checked == 0:
        return "No validation images were available to compare it with the app's model; it loads and runs."
    counts = f"{agreeing} of {checked} validation image{'s' if checked != 1 else ''} (top-1)"
    if agreeing == checked:
        return f"Agrees with the app's model on {counts}."
    if fmt == "tflite-int8":
        return f"Agrees with the app's model on {counts}; int8 rounding changes the others."
    return (
        f"Disagrees with the app's model on {checked - agreeing} of {checked} validation images, so it is not offered."
    )


def _failed(fmt: str, error: Exception) -> ExportResult:
    return ExportResult(
        format=fmt,
        path=None,
        size_bytes=0,
        checked=0,
        agreeing=0,
        max_abs_diff=None,
        ok=False,
        message=f"{FORMAT_NAMES[fmt]} export failed: {_first_line(error)}",
    )


def _first_line(error: Exception) -> str:
    """The exception's first non-empty line: TensorFlow's messages go on for pages."""
    for line in str(error).splitlines():
        if line.strip():
            return line.strip()
    return type(error).__name__


# --- The zip ------------------------------------------------------------------------------------


def _write_zip(path: Path, model_file: Path, labels: Sequence[str], readme: str) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.write(model_file, model_file.name)
        archive.writestr(LABELS_FILE_NAME, "".join(f"{label}\n" for label in labels).encode("utf-8"))
        archive.writestr(README_FILE_NAME, readme.encode("utf-8"))


def _readme(
    fmt: str, name: str, labels: Sequence[str], input_size: tuple[int, int], quantization: tuple[float, int] | None
) -> str:
    height, width = input_size
    model_file = MODEL_FILE_NAMES[fmt]
    example = KERAS_EXAMPLE if fmt == "keras" else TFLITE_EXAMPLE
    return README_TEMPLATE.format(
        name=name,
        format_name=FORMAT_NAMES[fmt],
        model_file=model_file,
        count=len(labels),
        input_line=_input_line(fmt, height, width, quantization),
        output_line=_output_line(fmt),
        height=height,
        width=width,
        install="keras tensorflow pillow numpy" if fmt == "keras" else "ai-edge-litert pillow numpy",
        example=example.format(model_file=model_file, width=width, height=height).strip(),
    )


def _input_line(fmt: str, height: int, width: int, quantization: tuple[float, int] | None) -> str:
    shape = f"`(1, {height}, {width}, 3)`" if fmt != "keras" else f"`(batch, {height}, {width}, 3)`"
    if fmt != "tflite-int8":
        return f"{shape}, RGB order, float32 pixel values 0-255 (not scaled to 0-1 or -1..1)."
    scale, zero_point = quantization or (0.0, 0)
    if scale == 1.0 and zero_point == 0:
        meaning = "these are exactly the raw pixel values 0-255"
    else:
        meaning = f"pass round(pixel / {scale:.8g} + {zero_point}), clipped to 0-255"
    return f"{shape}, RGB order, uint8 with scale {scale:.8g} and zero point {zero_point}: {meaning}."


def _output_line(fmt: str) -> str:
    if fmt == "tflite-int8":
        return "float32 probabilities, one per label (the model dequantizes its int8 result itself)."
    return "float32 probabilities, one per label, summing to 1."


README_TEMPLATE = """\
# {name} ({format_name})

An image classifier trained with TransferLab. `{model_file}` sorts an image into one of the
{count} labels in `labels.txt` (one label per line, in the order of the model's outputs).

- **Input:** {input_line}
- **Output:** {output_line}
- **Preprocessing** (scaling the pixels the way the network expects) is inside the model: give it
  plain pixels.

## Preparing an image

Open it with Pillow, turn it upright (EXIF), convert it to RGB and resize it to {width} x {height}
pixels with bilinear resampling, without keeping the aspect ratio. This is what TransferLab does
(it also paints transparent images on white first).

```
pip install {install}
```

## Example

Save this as `classify.py` in the unzipped folder and run `python classify.py photo.jpg` there.

```python
{example}
```
"""

KERAS_EXAMPLE = """
import sys

import keras
import numpy as np
from PIL import Image, ImageOps

labels = open("labels.txt", encoding="utf-8").read().splitlines()
model = keras.saving.load_model("{model_file}")

image = ImageOps.exif_transpose(Image.open(sys.argv[1])).convert("RGB")
image = image.resize(({width}, {height}), Image.Resampling.BILINEAR, reducing_gap=3.0)
pixels = np.asarray(image, dtype=np.float32)[None]  # (1, {height}, {width}, 3), RGB, 0-255

probabilities = model.predict(pixels, verbose=0)[0]
best = int(np.argmax(probabilities))
print(labels[best], f"{{probabilities[best]:.3f}}")
"""

# One example for both TFLite files: it applies whatever quantization the tensors state, so it
# works unchanged for float32 (no quantization) and int8 (uint8 input).
TFLITE_EXAMPLE = """
import sys

import numpy as np
from ai_edge_litert.interpreter import Interpreter
from PIL import Image, ImageOps

labels = open("labels.txt", encoding="utf-8").read().splitlines()
interpreter = Interpreter(model_path="{model_file}")
interpreter.allocate_tensors()
input_details = interpreter.get_input_details()[0]
output_details = interpreter.get_output_details()[0]

image = ImageOps.exif_transpose(Image.open(sys.argv[1])).convert("RGB")
image = image.resize(({width}, {height}), Image.Resampling.BILINEAR, reducing_gap=3.0)
pixels = np.asarray(image, dtype=np.float32)[None]  # (1, {height}, {width}, 3), RGB, 0-255

# A quantized input stores round(value / scale + zero_point); a float input has scale 0.
scale, zero_point = input_details["quantization"]
if np.issubdtype(input_details["dtype"], np.integer):
    if scale:
        pixels = np.round(pixels / scale + zero_point)
    limits = np.iinfo(input_details["dtype"])
    pixels = np.clip(pixels, limits.min, limits.max)
interpreter.set_tensor(input_details["index"], pixels.astype(input_details["dtype"]))
interpreter.invoke()

scores = interpreter.get_tensor(output_details["index"])[0].astype(np.float32)
scale, zero_point = output_details["quantization"]
if scale and np.issubdtype(output_details["dtype"], np.integer):
    scores = (scores - zero_point) * scale  # back to probabilities
best = int(np.argmax(scores))
print(labels[best], f"{{scores[best]:.3f}}")
"""
