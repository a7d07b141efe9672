"""Transfer learning and fine-tuning on a CPU: the recipe of our guide, made fast where it can be.

No Django. The worker (`training.jobs`), `manage.py train --foreground` and the benchmark call
`run(config, base, data, workdir, ...)`; progress comes out through callables and cancellation
comes in through one (`should_stop`, polled every batch).

The recipe (guide, sections 3 and 4): the pretrained base without its head, frozen; on top
GlobalAveragePooling2D, Dense 128 relu, Dropout, Dense softmax. Adam 1e-3, categorical
cross-entropy, accuracy. Optional fine-tuning: unfreeze the base from a layer on (BatchNormalization
layers stay frozen and run in inference mode), recompile with a lower learning rate, continue.

Where the time goes, and what we do about it (numbers in docs/PERFORMANCE.md):
- The frozen base's forward pass dominates on a CPU. While the base is frozen its output never
  changes, so each image goes through the base ONCE and the head trains on cached features
  (as TF Hub's retrain.py does): ten epochs cost one forward pass plus seconds.
- That one pass runs through LiteRT when the job may (`lite`): the extractor converted once per
  base weights file and checked against Keras (`training.lite_features`), about 3x faster than
  TensorFlow here; otherwise, or when it does not agree, TensorFlow, and the strategy says why.
- With augmentation the cache is kept honest by computing a fixed number of augmented views per
  image once (`augment_views`, the original included) and drawing one view per image per epoch:
  the head sees varied images, the base still runs a bounded number of times.
- Fine-tuning from layer N: the layers below N are frozen, so without augmentation their output
  is the same every epoch too. The network is cut there (every tensor crossing the cut), the
  lower part runs once, and only the upper part and the head train each epoch, when the cached
  activations fit the memory budget; otherwise (or with augmentation) the whole model trains on
  decoded images kept in memory.
- Images are decoded once (the guide's generators decode every image every epoch).

The saved model takes what a user has: RGB pixels 0-255 at the input size. The family's
preprocessing is the model's first layer (`preprocess`, a fixed 1x1 convolution: every Keras
preprocess_input is a per-pixel affine map, measured and checked when the model is built).
"""

from __future__ import annotations

import gc
import logging
import math
import platform
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from classifier import imaging, zoo
from classifier.weights import installed_path, missing_message
from training import devices, evaluation, lite_features
from training.lite_features import LiteFeatures
from webapp import atomic

if TYPE_CHECKING:
    from training.continuing import WarmStart

log = logging.getLogger(__name__)

PHASE_TRANSFER = "transfer"
PHASE_FINE_TUNE = "fine-tune"
AUGMENTATIONS = ("flip", "rotate", "zoom")
MAX_BATCH_SIZE = 512
FEATURE_BATCH = 32  # images per forward pass of the frozen base: bounds activation memory
DECODE_THREADS = 2
# Decoding limits while training: the dataset's images were checked when they were added.
MAX_DECODE_BYTES = 512 * 1024 * 1024
MAX_DECODE_PIXELS = 500_000_000
# Rough costs of one step relative to one forward batch of the base, for the first ETA.
STEP_COST = {"features": 1.0, PHASE_TRANSFER: 0.02, PHASE_FINE_TUNE: 3.0, "pixels-transfer": 1.1}


class TrainingError(Exception):
    """The job cannot go on; str() is a sentence for the user that says what to change."""


class Cancelled(Exception):
    """`should_stop` said stop: the history so far is kept by the caller."""


OUT_OF_MEMORY = (
    "Training ran out of memory. Try a smaller batch size or a smaller base model, or ask your administrator "
    "to raise the training memory limit if the server has memory to spare."
)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a job was asked to do; stored with the job so it can be run again."""

    epochs: int = 10
    fine_tune_epochs: int = 0
    fine_tune_from: int | None = None  # index of the first base layer to unfreeze; None: no fine-tuning
    learning_rate: float = 1e-3
    fine_tune_learning_rate: float = 1e-4
    batch_size: int = 32
    augment: tuple[str, ...] = ()
    augment_views: int = 4  # views per image (the original included) while the base is frozen
    early_stopping: bool = True
    patience: int = 3
    class_weights: bool = True
    dense_units: int = 128
    dropout: float = 0.2
    seed: int = 0
    memory_mb: int = 4096
    cache_features: bool = True  # False: the plain path (the whole model runs every epoch); for comparison

    def __post_init__(self) -> None:
        object.__setattr__(self, "augment", tuple(self.augment))

    def validate(self) -> None:
        """Refuse combinations that cannot work, in words that say what to change."""
        if not 1 <= self.epochs <= 500:
            raise TrainingError("Epochs must be between 1 and 500.")
        if not 0 <= self.fine_tune_epochs <= 500:
            raise TrainingError("Fine-tuning epochs must be between 0 and 500 (0 turns fine-tuning off).")
        if self.fine_tune_epochs and self.fine_tune_from is None:
            raise TrainingError("Say from which layer of the base fine-tuning starts.")
        if self.fine_tune_from is not None and self.fine_tune_from < 0:
            raise TrainingError("Fine-tuning starts at layer 0 or above.")
        for name, value in (("learning rate", self.learning_rate), ("fine-tuning learning rate",
                                                                     self.fine_tune_learning_rate)):  # fmt: skip
            if not 0 < value <= 1:
                raise TrainingError(f"The {name} must be above 0 and at most 1 (typical: 0.001 and 0.0001).")
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise TrainingError(f"The batch size must be between 1 and {MAX_BATCH_SIZE}.")
        unknown = set(self.augment) - set(AUGMENTATIONS)
        if unknown:
            raise TrainingError(f"Unknown augmentation {', '.join(sorted(unknown))}: use {', '.join(AUGMENTATIONS)}.")
        if not 1 <= self.augment_views <= 16:
            raise TrainingError("Augmented views per image must be between 1 and 16.")
        if not 0 <= self.dropout < 1:
            raise TrainingError("Dropout must be at least 0 and below 1.")
        if not 1 <= self.patience <= 100:
            raise TrainingError("Early-stopping patience must be between 1 and 100 epochs.")
        if self.memory_mb < 256:
            raise TrainingError("The memory budget must be at least 256 MiB.")

    @property
    def fine_tunes(self) -> bool:
        return self.fine_tune_epochs > 0 and self.fine_tune_from is not None

    def as_dict(self) -> dict:
        data = asdict(self)
        data["augment"] = list(self.augment)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: (tuple(v) if k == "augment" else v) for k, v in data.items() if k in known})


@dataclass(frozen=True)
class Example:
    """One image to learn from: where its file is, its label's index, its id for reports."""

    path: Path
    label: int
    image_id: int


@dataclass
class TrainData:
    labels: list[str]
    train: list[Example]
    validation: list[Example]
    test: list[Example] = field(default_factory=list)

    def check(self) -> None:
        """The refusals a job must never get past, in words (the web form checks them first too)."""
        if len(self.labels) < 2:
            raise TrainingError("A model needs at least 2 labels to choose between; add another label.")
        counts = np.bincount([e.label for e in self.train], minlength=len(self.labels))
        empty = [self.labels[i] for i, n in enumerate(counts) if n == 0]
        if empty:
            raise TrainingError(
                f"The label{'s' if len(empty) > 1 else ''} {', '.join(repr(n) for n in empty)} "
                f"{'have' if len(empty) > 1 else 'has'} no training image. Add images, or re-draw the splits."
            )
        if not self.validation:
            raise TrainingError(
                "The dataset has no validation images, so the model could not be measured. Set a validation share "
                "above 0 and re-draw the splits."
            )


@dataclass(frozen=True)
class Base:
    """The pretrained feature extractor a job builds on (no Django: built from a weights file)."""

    key: str
    name: str
    input_size: int
    build: Callable[[], Any]  # -> keras.Model without head, weights loaded; input: preprocessed floats
    preprocess: Callable[[np.ndarray], np.ndarray]  # the family's preprocess_input
    source: str = ""  # which file it comes from, for the job's record


@dataclass(frozen=True)
class ProgressEvent:
    """Where a job is, for the progress bar: written by the caller at most about once a second."""

    phase: str  # "preparing", "features", "transfer", "fine-tune", "evaluating", "saving"
    percent: float
    eta_seconds: float | None = None
    epoch: int | None = None
    epochs: int | None = None
    batch: int | None = None
    batches: int | None = None


@dataclass(frozen=True)
class EpochResult:
    phase: str
    epoch: int  # 1-based within its phase
    loss: float
    accuracy: float
    val_loss: float | None
    val_accuracy: float | None
    seconds: float

    def as_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass
class TrainResult:
    model_path: Path
    labels: list[str]
    input_size: int
    history: list[EpochResult]
    evaluation: dict[str, dict]  # split -> evaluation.evaluate(...)
    batch_size: int  # what actually ran (may be lower than asked: memory)
    notes: list[str]
    timings: dict[str, float]
    strategy: dict[str, Any]  # what ran: cached features, views, cached fine-tuning...
    validation_probabilities: np.ndarray
    # Per evaluated split ("validation", "test"): the saved model's probabilities, one row per image
    # in the split's example order. Kept by the job (training.outcomes) for the images behind each
    # confusion cell and for comparing jobs.
    probabilities: dict[str, np.ndarray] = field(default_factory=dict)
    # Per split ("train", "validation", "test"): the frozen base's pooled features of each image,
    # un-augmented, in example order; empty when the job did not cache features.
    features: dict[str, np.ndarray] = field(default_factory=dict)


def versions() -> dict[str, str]:
    """Library versions a job records, so a result can be reproduced."""
    import keras
    import PIL
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
    }


# --- Bases from the zoo ----------------------------------------------------------------------
def base_file(model: zoo.ZooModel, weights_dir: Path) -> tuple[Path, bool] | None:
    """The weights file a base is built from: the no-head file, else the full model's (cut)."""
    for include_top in (False, True):
        path = installed_path(model, weights_dir, include_top=include_top)
        if path is not None:
            return path, include_top
    return None


def zoo_base(model: zoo.ZooModel, weights_dir: Path) -> Base:
    """A zoo entry as a base; raises TrainingError when neither of its weights files is installed."""
    found = base_file(model, weights_dir)
    if found is None:
        raise TrainingError(
            f"{model.name} cannot be trained on: neither of its weights files is installed. "
            + missing_message(model, include_top=False)
        )
    path, with_head = found

    def build():
        if not with_head:
            return model.build(path, include_top=False)
        return cut_feature_extractor(model, path)

    source = f"{path.name} ({'feature extractor cut from the full model' if with_head else 'without head'})"
    return Base(model.key, model.name, model.input_size, build, model.preprocess, source)


def cut_feature_extractor(model: zoo.ZooModel, path: Path):
    """The base without its head, taken from the full model's weights file.

    Offline administrators often install one file only. The no-head architecture is built empty
    and receives, layer by layer, the weights of the same layers of the full model (the head's
    layers come last in every Keras application).
    """
    full = model.build(path, include_top=True)
    base = model.build(None, include_top=False)
    if len(full.layers) < len(base.layers):
        raise TrainingError(f"The weights file {path.name} does not hold a full {model.name}.")
    for mine, theirs in zip(base.layers, full.layers, strict=False):
        values = theirs.get_weights()
        if type(mine) is not type(theirs) or [v.shape for v in values] != [w.shape for w in mine.get_weights()]:
            raise TrainingError(f"The weights file {path.name} does not match the {model.name} architecture.")
        mine.set_weights(values)
    del full
    gc.collect()
    return base


# --- Images ----------------------------------------------------------------------------------
def load_image(path: Path, size: int) -> np.ndarray:
    """An image file as the model sees it, decoded and resized exactly as Classify does."""
    decoded = imaging.decode(Path(path), max_bytes=MAX_DECODE_BYTES, max_pixels=MAX_DECODE_PIXELS, draft_side=size)
    return imaging.to_model_input(decoded.image, size)


def load_images(examples: Sequence[Example], size: int, should_stop: Callable[[], bool] | None = None) -> np.ndarray:
    """Decode many images into one uint8 array (threads: Pillow releases the GIL while decoding)."""
    out = np.empty((len(examples), size, size, 3), dtype=np.uint8)
    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        for start in range(0, len(examples), 64):
            if should_stop is not None and should_stop():
                raise Cancelled
            chunk = examples[start : start + 64]
            for i, array in enumerate(pool.map(lambda e: _load_or_explain(e, size), chunk)):
                out[start + i] = array
    return out


def _load_or_explain(example: Example, size: int) -> np.ndarray:
    try:
        return load_image(example.path, size)
    except FileNotFoundError:
        raise TrainingError(
            f"The file of image {example.image_id} is missing from the dataset folder; run the data check or "
            "remove the image, then train again."
        ) from None
    except imaging.ImageError as exc:
        raise TrainingError(f"Image {example.image_id} cannot be read any more: {exc}") from None


# --- Building the model ------------------------------------------------------------------------
def preprocessing_layer(preprocess: Callable[[np.ndarray], np.ndarray], name: str = "preprocess"):
    """A fixed 1x1 convolution doing exactly what the family's preprocess_input does, or None.

    Every Keras preprocess_input is a per-pixel affine map (scaling, mean and deviation, the
    caffe channel swap), so it is measured on a basis of colours and checked on random pixels.
    Identity (EfficientNet, ConvNeXt: preprocessing already inside the base) gives None.
    """
    import keras

    offset = np.asarray(preprocess(np.zeros((1, 1, 1, 3), np.float32)), np.float64).reshape(3)
    matrix = np.stack(
        [np.asarray(preprocess(np.eye(3, dtype=np.float32)[c].reshape(1, 1, 1, 3)), np.float64).reshape(3) - offset
         for c in range(3)]
    )  # fmt: skip
    probe = np.random.default_rng(0).uniform(0, 255, size=(2, 4, 4, 3)).astype(np.float32)
    expected = np.asarray(preprocess(probe.copy()), np.float64)
    if np.abs(probe @ matrix + offset - expected).max() > 1e-3 * max(1.0, np.abs(expected).max()):
        raise TrainingError("This base's preprocessing is not a per-pixel affine map; it cannot be built in.")
    if np.allclose(matrix, np.eye(3)) and np.allclose(offset, 0):
        return None
    layer = keras.layers.Conv2D(3, 1, use_bias=True, trainable=False, name=name)
    layer.build((None, None, None, 3))
    layer.set_weights([matrix.reshape(1, 1, 3, 3).astype(np.float32), offset.astype(np.float32)])
    return layer


def build_head(feature_size: int, classes: int, config: TrainConfig):
    """GlobalAveragePooling2D's output -> Dense 128 relu -> Dropout -> Dense softmax (the guide's head)."""
    import keras

    return keras.Sequential(
        [
            keras.Input((feature_size,), name="features"),
            keras.layers.Dense(config.dense_units, activation="relu", name="dense"),
            keras.layers.Dropout(config.dropout, name="dropout"),
            keras.layers.Dense(classes, activation="softmax", name="predictions"),
        ],
        name="head",
    )


def assemble(base, head, preprocess_layer, size: int):
    """The whole model users get: RGB pixels 0-255 in, probabilities out."""
    import keras

    inputs = keras.Input((size, size, 3), name="pixels")
    x = preprocess_layer(inputs) if preprocess_layer is not None else inputs
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = head(x)
    return keras.Model(inputs, outputs, name="transferlab")


def split_base(base, first_trainable: int):
    """Cut the base before layer `first_trainable`: (lower, upper, crossing tensors).

    Residual connections may jump over the cut, so the cut is every tensor produced below it and
    used at or above it; `upper` takes all of them.
    """
    import keras

    layers = base.layers
    if not 0 < first_trainable < len(layers):
        raise ValueError(f"first_trainable must be between 1 and {len(layers) - 1}")
    index = {id(layer): i for i, layer in enumerate(layers)}
    crossing = []
    for layer in layers[first_trainable:]:
        for node in layer._inbound_nodes:
            for tensor in node.input_tensors:
                source = index.get(id(tensor._keras_history.operation), -1)
                if source < first_trainable and not any(tensor is t for t in crossing):
                    crossing.append(tensor)
    lower = keras.Model(base.input, crossing, name="frozen_part")
    upper = keras.Model(crossing, base.output, name="trained_part")
    return lower, upper, crossing


def unfreeze_from(base, first_trainable: int) -> int:
    """Make the base trainable from layer `first_trainable` on; BatchNormalization stays frozen.

    Returns how many layers now train. BatchNormalization keeps its ImageNet statistics and runs in
    inference mode (the model calls the base with training=False): on a small dataset, updating
    them wrecks what the base learnt (keras.io transfer-learning guide).
    """
    import keras

    if not 0 <= first_trainable < len(base.layers):
        raise TrainingError(
            f"Fine-tuning must start at a layer between 0 and {len(base.layers) - 1} ({len(base.layers)} layers)."
        )
    base.trainable = True
    trained = 0
    for i, layer in enumerate(base.layers):
        layer.trainable = i >= first_trainable and not isinstance(layer, keras.layers.BatchNormalization)
        trained += layer.trainable and bool(layer.weights)
    return trained


# --- Memory ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MemoryPlan:
    batch_size: int
    keep_pixels: bool  # decoded images stay in memory (else decoded again when needed)
    cache_lower: bool  # fine-tuning trains on the frozen part's cached output
    estimate_mb: float
    notes: tuple[str, ...]


def _elements(shape) -> int:
    return int(np.prod([d for d in shape[1:] if d is not None]))


def plan_memory(base, config: TrainConfig, images: int, cut_elements: int | None) -> MemoryPlan:
    """Estimate what the configuration needs and fit it into config.memory_mb.

    Counted: TensorFlow and the weights; when fine-tuning, the trained layers' gradients, Adam's
    two moments and the activations they keep for the backward pass; the few activations alive at
    once in a forward pass; decoded images when a path reads them every epoch; cached features and
    the frozen part's cached output. Prefers the asked batch size with every cache, then drops the
    frozen part's cache, then keeps images on disk, then lowers the batch; says what it changed.
    """
    mb = 1024 * 1024
    budget = config.memory_mb * mb
    outputs = [_elements(layer.output.shape) * 4 for layer in base.layers]
    forward_peak = max(outputs) * 4  # input, output and a skip connection or two alive at once
    first = config.fine_tune_from or 0
    trained = [layer for layer in base.layers[first:] if "BatchNormalization" not in type(layer).__name__]
    # Activations the backward pass keeps, their gradients and TensorFlow's workspace (measured: a
    # MobileNetV2 fine-tuned from layer 100 on 500 images at batch 32 peaks at 2.5 GB).
    stored = sum(outputs[first:]) * 3 if config.fine_tunes else 0
    size = base.input.shape[1]
    pixels = images * size * size * 3
    views = config.augment_views if config.augment else 1
    features = images * views * (base.output.shape[-1] or 0) * 4
    fixed = 800 * mb + base.count_params() * 4  # Python, TensorFlow and Keras in a worker; the weights
    fine_tune_state = 3 * 4 * sum(layer.count_params() for layer in trained) if config.fine_tunes else 0
    cut_bytes = images * (cut_elements or 0) * 4

    def need(batch: int, keep_pixels: bool, cache_lower: bool) -> int:
        step = forward_peak * min(batch, FEATURE_BATCH)
        if config.fine_tunes:
            step = max(step, stored * batch + (0 if cache_lower else forward_peak * batch))
        elif not config.cache_features:
            step = max(step, forward_peak * batch)
        caches = (pixels if keep_pixels else 0) + features + (cut_bytes if cache_lower else 0)
        return fixed + fine_tune_state + step + caches

    def fitting_batch(keep_pixels: bool, cache_lower: bool) -> int:
        batch = config.batch_size
        while batch > 1 and need(batch, keep_pixels, cache_lower) > budget:
            batch //= 2
        return batch if need(batch, keep_pixels, cache_lower) <= budget else 0

    cacheable = bool(cut_elements) and config.fine_tunes and not config.augment and config.cache_features
    candidates = []  # (cache the frozen part's output, keep decoded images), most useful first
    for cache_lower in (True, False) if cacheable else (False,):
        # Decoded images matter only to paths that read them every epoch.
        every_epoch = not config.cache_features or (config.fine_tunes and not cache_lower)
        candidates += [(cache_lower, True), (cache_lower, False)] if every_epoch else [(cache_lower, False)]
    best = max(candidates, key=lambda c: fitting_batch(c[1], c[0]))  # max() keeps the first of equals
    for candidate in candidates:
        if fitting_batch(candidate[1], candidate[0]) == config.batch_size:
            best = candidate
            break
    cache_lower, keep_pixels = best
    batch = fitting_batch(keep_pixels, cache_lower)
    if batch == 0:
        raise TrainingError(
            f"This configuration needs about {need(1, False, False) / mb:,.0f} MiB, more than the "
            f"{config.memory_mb:,} MiB this server allows for training. "
            "Choose a smaller base model, or ask your administrator to raise the training memory limit."
        )
    notes: list[str] = []
    if cacheable and not cache_lower:
        notes.append("The frozen layers' output is too large to keep in memory: fine-tuning recomputes it.")
    if not keep_pixels and (cache_lower, True) in candidates:
        notes.append("The decoded images do not all fit in memory: they are read again each epoch.")
    if batch != config.batch_size:
        notes.append(
            f"Batch size lowered from {config.batch_size} to {batch} to fit the {config.memory_mb:,} MiB "
            "memory budget for training."
        )
    return MemoryPlan(batch, keep_pixels, cache_lower, need(batch, keep_pixels, cache_lower) / mb, tuple(notes))


# --- The run -----------------------------------------------------------------------------------
class _Tracker:
    """Turns steps into a percent and an ETA, and asks `should_stop` at every step."""

    def __init__(self, plan: dict[str, float], on_progress, should_stop) -> None:
        self.plan = dict(plan)  # phase -> planned cost units
        self.done: dict[str, float] = dict.fromkeys(plan, 0.0)
        self.on_progress = on_progress
        self.should_stop = should_stop
        self.started = time.monotonic()
        self.unit_seconds: dict[str, float] = {}
        self.phase_started: dict[str, float] = {}

    def step(self, phase: str, units: float = 1.0, **where) -> None:
        if self.should_stop():
            raise Cancelled
        self.phase_started.setdefault(phase, time.monotonic())
        self.done[phase] = self.done.get(phase, 0.0) + units
        total = sum(self.plan.values()) or 1.0
        percent = min(99.0, 100.0 * sum(min(self.done[p], self.plan.get(p, 0)) for p in self.done) / total)
        elapsed = time.monotonic() - self.started
        eta = elapsed * (100 - percent) / percent if percent >= 2 else None
        self.on_progress(ProgressEvent(phase=phase, percent=round(percent, 1), eta_seconds=eta, **where))

    def finish(self, phase: str) -> None:
        """The phase is over (also when early stopping skipped the rest of it)."""
        self.done[phase] = self.plan.get(phase, 0.0)

    def announce(self, phase: str) -> None:
        if self.should_stop():
            raise Cancelled
        total = sum(self.plan.values()) or 1.0
        percent = min(99.0, 100.0 * sum(min(self.done[p], self.plan.get(p, 0)) for p in self.done) / total)
        self.on_progress(ProgressEvent(phase=phase, percent=round(percent, 1)))


def _noop(*args, **kwargs) -> None:
    return None


def run(
    config: TrainConfig,
    base: Base,
    data: TrainData,
    workdir: Path,
    *,
    on_progress: Callable[[ProgressEvent], None] = _noop,
    on_epoch: Callable[[EpochResult], None] = _noop,
    should_stop: Callable[[], bool] = lambda: False,
    lite: LiteFeatures | None = None,
    start: WarmStart | None = None,
) -> TrainResult:
    """Train, evaluate and save a model; raises TrainingError (a sentence) or Cancelled.

    `lite` lets the frozen base's features be computed by LiteRT (converted, cached and checked
    by `training.lite_features`); without it TensorFlow computes them. `start` continues from an
    earlier model (`training.continuing`): its head, and its fine-tuned layers if it had any.
    """
    config.validate()
    data.check()
    lite = lite or LiteFeatures.off("LiteRT was not asked for.")
    try:
        return _run(config, base, data, Path(workdir), on_progress, on_epoch, should_stop, lite, start)
    except (TrainingError, Cancelled):
        raise
    except MemoryError:
        raise TrainingError(OUT_OF_MEMORY) from None
    except Exception as exc:
        if type(exc).__name__ == "ResourceExhaustedError":
            raise TrainingError(OUT_OF_MEMORY) from None
        raise
    finally:
        _release()


def _release() -> None:
    import keras

    keras.backend.clear_session()
    gc.collect()


def _run(
    config, base_spec: Base, data: TrainData, workdir: Path, on_progress, on_epoch, should_stop, lite: LiteFeatures,
    start: WarmStart | None = None,
) -> TrainResult:  # fmt: skip
    import keras

    from training import continuing

    timings: dict[str, float] = {}
    started = time.monotonic()
    keras.utils.set_random_seed(config.seed)
    on_progress(ProgressEvent(phase="preparing", percent=0.0))
    size = base_spec.input_size
    labels = list(data.labels)
    classes = len(labels)

    device = devices.training_device()
    if device.is_gpu:  # LiteRT computes on the CPU here: the GPU is faster for the one forward pass
        lite = LiteFeatures.off("the job runs on a GPU, faster than LiteRT on the CPU.")
    t = time.monotonic()
    base = base_spec.build()
    base.trainable = False
    pre = preprocessing_layer(base_spec.preprocess)
    timings["build_s"] = time.monotonic() - t
    earlier = None
    if start is not None:  # continue: the earlier model's fine-tuned layers now, its head once built
        t = time.monotonic()
        earlier = continuing.start_from(start, base, pre, size, base_spec.name, config)
        if earlier.changes_base:  # the converted base holds the installed weights, not these
            lite = LiteFeatures.off(f"the base carries the fine-tuned layers of {start.name}.")
        timings["warm_start_s"] = time.monotonic() - t
    if config.fine_tunes and not config.fine_tune_from < len(base.layers):
        raise TrainingError(
            f"Fine-tuning must start at a layer below {len(base.layers)}: {base_spec.name} has {len(base.layers)} "
            "layers without its head."
        )

    cut = None
    if config.fine_tunes and config.fine_tune_from > 0:
        cut = split_base(base, config.fine_tune_from)
    all_examples = data.train + data.validation + data.test
    plan = plan_memory(base, config, len(all_examples), sum(_elements(t.shape) for t in cut[2]) if cut else None)
    batch_size = plan.batch_size
    notes = list(plan.notes)
    augmenting = bool(config.augment)
    cached = config.cache_features
    views = config.augment_views if augmenting and cached else 1

    n_train, n_eval = len(data.train), len(data.validation) + len(data.test)
    train_batches = math.ceil(n_train / batch_size)
    feature_batches = math.ceil((n_train * views + n_eval) / FEATURE_BATCH)
    tracker = _Tracker(
        {
            "decoding": len(all_examples) / 200 if plan.keep_pixels else 0,
            "features": feature_batches * STEP_COST["features"] if cached else 0,
            PHASE_TRANSFER: config.epochs * train_batches
            * (STEP_COST[PHASE_TRANSFER] if cached else STEP_COST["pixels-transfer"] * batch_size / FEATURE_BATCH),
            PHASE_FINE_TUNE: config.fine_tune_epochs * train_batches * STEP_COST[PHASE_FINE_TUNE]
            * batch_size / FEATURE_BATCH if config.fine_tunes else 0,
        },
        on_progress,
        should_stop,
    )  # fmt: skip

    # Decode once. Without room for them all, images are decoded per batch when needed.
    t = time.monotonic()
    truth = {name: np.array([e.label for e in examples], dtype=np.int64) for name, examples in
             (("train", data.train), ("validation", data.validation), ("test", data.test))}  # fmt: skip
    pixels: dict[str, np.ndarray] | None = None
    if plan.keep_pixels:
        pixels = {}
        for name, examples in (("train", data.train), ("validation", data.validation), ("test", data.test)):
            pixels[name] = load_images(examples, size, should_stop)
            tracker.step("decoding", len(examples) / 200)
    tracker.finish("decoding")
    timings["decode_s"] = time.monotonic() - t

    def images_of(split: str, examples: list[Example], index: np.ndarray | None = None) -> np.ndarray:
        if pixels is not None:
            return pixels[split] if index is None else pixels[split][index]
        chosen = examples if index is None else [examples[i] for i in index]
        return load_images(chosen, size, should_stop)

    extractor = _feature_extractor(base, pre, size)
    feature_size = int(extractor.output.shape[-1])
    head = build_head(feature_size, classes, config)
    if earlier is not None:
        notes.append(continuing.describe(earlier, continuing.warm_head(head, earlier, labels)))
    weights = _class_weights(truth["train"], classes) if config.class_weights else np.ones(classes, np.float32)
    augmenter = _augmenter(config.augment, config.seed) if augmenting else None
    history: list[EpochResult] = []
    strategy: dict[str, Any] = {
        "cached_features": cached,
        "augmented_views": views if augmenting and cached else None,
        "cached_fine_tuning": bool(plan.cache_lower and cut),
        "decoded_in_memory": plan.keep_pixels,
        "memory_estimate_mb": round(plan.estimate_mb),
        "device": device.description,
    }

    def record(result: EpochResult) -> None:
        history.append(result)
        on_epoch(result)

    # --- Transfer: the frozen base, the head learns.
    t = time.monotonic()
    if cached:
        extract_fn, path = _features_forward(
            extractor, base_spec, lite, lambda idx: images_of("train", data.train, idx), n_train, tracker,
            memory_left_mb=config.memory_mb - plan.estimate_mb,
        )  # fmt: skip
        strategy["features"] = path.description
        if path.checked:
            strategy["features_check"] = {"images": path.checked, "max_difference": path.max_difference}
        timings["features_prepare_s"] = time.monotonic() - t
        timings["features_convert_s"] = path.convert_seconds
        if path.forward is None and lite.folder is not None:
            notes.append(f"The base's features were computed with TensorFlow: {path.reason}")
        # Each image is decoded once; its views all go through the base from that one decode. A continued
        # job takes the earlier job's features of the training images it saw, when its base is unchanged.
        known = continuing.known_features(earlier, feature_size) if earlier and views == 1 else {}
        todo = np.array([i for i, e in enumerate(data.train) if e.image_id not in known], np.int64)
        train_views = np.empty((views, n_train, feature_size), np.float32)
        train_views[:, todo] = _extract_views(extract_fn, feature_size,
                                              lambda idx: images_of("train", data.train, todo[idx]), len(todo),
                                              views, augmenter, tracker)  # fmt: skip
        for i in np.setdiff1d(np.arange(n_train), todo):
            train_views[0, i] = known[data.train[i].image_id]
        if len(todo) < n_train:
            strategy["reused_features"] = n_train - len(todo)
            notes.append(f"The features of {n_train - len(todo)} of the {n_train} training images came from "
                         f"{start.name}; {len(todo)} went through the base.")  # fmt: skip
        features = {
            split: _extract_views(extract_fn, feature_size, lambda idx, s=split, e=examples: images_of(s, e, idx),
                                  len(examples), 1, None, tracker)[0]
            for split, examples in (("validation", data.validation), ("test", data.test))
        }  # fmt: skip
        tracker.finish("features")
        timings["features_s"] = time.monotonic() - t
        del extract_fn, path  # a LiteRT interpreter holds its own copy of the weights
        rng = np.random.default_rng(config.seed)

        def train_batches_fn(order: np.ndarray):
            chosen = rng.integers(0, views, size=n_train)  # one view of each image per epoch
            for start in range(0, n_train, batch_size):
                idx = order[start : start + batch_size]
                yield train_views[chosen[idx], idx], idx

        _fit(
            head, train_batches_fn, truth["train"], weights, n_train, batch_size,
            validate=lambda: _predict_array(lambda x: head(x, training=False), features["validation"]),
            val_y=truth["validation"], epochs=config.epochs, learning_rate=config.learning_rate,
            phase=PHASE_TRANSFER, config=config, tracker=tracker, record=record, notes=notes,
        )  # fmt: skip
    else:
        frozen_model = assemble(base, head, pre, size)
        frozen_forward = _forward_fn(frozen_model, size)
        _fit(
            frozen_model, _pixel_batches(images_of, data.train, batch_size, augmenter), truth["train"], weights,
            n_train, batch_size,
            validate=lambda: _predict_pixels(frozen_forward, lambda idx: images_of("validation", data.validation, idx),
                                             len(data.validation)),
            val_y=truth["validation"], epochs=config.epochs, learning_rate=config.learning_rate,
            phase=PHASE_TRANSFER, config=config, tracker=tracker, record=record, notes=notes,
        )  # fmt: skip
    timings["transfer_s"] = time.monotonic() - t

    model = assemble(base, head, pre, size)
    if config.fine_tunes:
        t = time.monotonic()
        layers_trained = unfreeze_from(base, config.fine_tune_from)
        notes.append(
            f"Fine-tuned {layers_trained} layers with weights, from layer {config.fine_tune_from} of "
            f"{len(base.layers)} (BatchNormalization kept frozen)."
        )
        if plan.cache_lower and cut is not None:
            _fine_tune_cached(
                base, pre, head, cut, size, data, truth, weights, batch_size, config, tracker, record, images_of, notes
            )
        else:
            model_forward = _forward_fn(model, size)
            _fit(
                model, _pixel_batches(images_of, data.train, batch_size, augmenter), truth["train"], weights,
                n_train, batch_size,
                validate=lambda: _predict_pixels(model_forward,
                                                 lambda idx: images_of("validation", data.validation, idx),
                                                 len(data.validation)),
                val_y=truth["validation"], epochs=config.fine_tune_epochs,
                learning_rate=config.fine_tune_learning_rate, phase=PHASE_FINE_TUNE, config=config,
                tracker=tracker, record=record, notes=notes,
            )  # fmt: skip
        timings["fine_tune_s"] = time.monotonic() - t

    # --- Evaluate the model that will be saved, on images it never trained on.
    tracker.announce("evaluating")
    t = time.monotonic()
    forward = _forward_fn(model, size)
    results: dict[str, dict] = {}
    probabilities: dict[str, np.ndarray] = {}
    for split, examples in (("validation", data.validation), ("test", data.test)):
        if not examples:
            continue
        if cached and not config.fine_tunes:
            probs = _predict_array(lambda x: head(x, training=False), features[split])
        else:
            probs = _predict_pixels(forward, lambda idx, s=split, e=examples: images_of(s, e, idx), len(examples))
        probabilities[split] = probs
        results[split] = evaluation.evaluate(probs, truth[split], labels, [e.image_id for e in examples])
    timings["evaluate_s"] = time.monotonic() - t

    # --- Save, and check that the saved model is the one that was measured.
    tracker.announce("saving")
    t = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    model_path = workdir / "model.keras"
    _check_assembly(forward, images_of("validation", data.validation, np.arange(min(8, len(data.validation)))),
                    probabilities["validation"][:8])  # fmt: skip
    with atomic.replacing(model_path, suffix=".keras") as saving:  # Keras wants the ending; never half a model
        model.save(saving)
    timings["save_s"] = time.monotonic() - t
    timings["total_s"] = time.monotonic() - started
    return TrainResult(
        model_path=model_path,
        labels=labels,
        input_size=size,
        history=history,
        evaluation=results,
        batch_size=batch_size,
        notes=notes,
        timings={k: round(v, 3) for k, v in timings.items()},
        strategy=strategy,
        validation_probabilities=probabilities["validation"],
        probabilities=probabilities,
        features={"train": train_views[0], **features} if cached else {},
    )


def base_features(
    base_spec: Base, examples: Sequence[Example], should_stop: Callable[[], bool] | None = None
) -> np.ndarray:
    """The frozen base's pooled features of each image, un-augmented, in example order (float32).

    What a job caches while it trains (`TrainResult.features`), for a job that did not: suspected
    label errors and near-duplicates are found from these (`training.analysis`).
    """
    base = base_spec.build()
    base.trainable = False
    size = base_spec.input_size
    extractor = _feature_extractor(base, preprocessing_layer(base_spec.preprocess), size)
    forward = _forward_fn(extractor, size)
    out = np.empty((len(examples), int(extractor.output.shape[-1])), np.float32)
    try:
        for start in range(0, len(examples), FEATURE_BATCH):
            chunk = examples[start : start + FEATURE_BATCH]
            images = load_images(chunk, size, should_stop).astype(np.float32)
            out[start : start + len(chunk)] = np.asarray(forward(images))
    finally:
        _release()
    return out


# --- Pieces of the run ---------------------------------------------------------------------------
def _feature_extractor(base, pre, size: int):
    """Pixels -> pooled features of the frozen base (what the head trains on)."""
    import keras

    inputs = keras.Input((size, size, 3))
    x = pre(inputs) if pre is not None else inputs
    x = base(x, training=False)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))


def _features_forward(
    extractor, base_spec: Base, lite: LiteFeatures, train_images, n_train: int, tracker: _Tracker,
    memory_left_mb: float,
):  # fmt: skip
    """The frozen base's features: LiteRT when its conversion agrees with Keras, else TensorFlow.

    Returns (forward, lite_features.FeaturePath). The job's own check images are spread over the
    training set (a few labels rather than the first one's images). LiteRT is skipped when its
    interpreter (and the conversion, the first time) would not fit what the memory plan leaves.
    """
    size = base_spec.input_size
    if lite.folder is not None:
        tracker.announce("features")  # converting a base the first time takes seconds to minutes
    chosen = np.unique(np.linspace(0, n_train - 1, min(lite_features.JOB_CHECK_IMAGES, n_train)).astype(int))
    path = lite_features.lite_path(
        extractor, base_spec.key, size, lite, lambda: train_images(chosen), memory_left_mb=memory_left_mb
    )
    return (path.forward or _forward_fn(extractor, size)), path


def _forward_fn(model, size: int):
    """One compiled forward pass for any batch size (model.predict costs tens of ms per call)."""
    import tensorflow as tf

    return tf.function(
        lambda x: model(x, training=False),
        input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)],
        reduce_retracing=True,
    )


def _extract_views(
    forward, feature_size: int, batch_of: Callable[[np.ndarray], np.ndarray], count: int, views: int, augmenter,
    tracker: _Tracker,
) -> np.ndarray:  # fmt: skip
    """Features of `count` images, shape (views, count, features): FEATURE_BATCH images at a time,
    each batch decoded once for all its views; one progress step per forward pass. The next batch
    is decoded while the base runs on this one (the forward pass leaves the cores idle between
    its calls, and LiteRT made it short enough for decoding to show)."""
    out = np.empty((views, count, feature_size), np.float32)
    batches = [np.arange(start, min(start + FEATURE_BATCH, count)) for start in range(0, count, FEATURE_BATCH)]
    with ThreadPoolExecutor(1) as reader:
        pending = reader.submit(batch_of, batches[0]) if batches else None
        for i, idx in enumerate(batches):
            images = np.asarray(pending.result(), np.float32)
            pending = reader.submit(batch_of, batches[i + 1]) if i + 1 < len(batches) else None
            for view in range(views):
                out[view, idx] = np.asarray(forward(_view(images, augmenter, view)))
                tracker.step("features")
    return out


def _view(images: np.ndarray, augmenter, view: int) -> np.ndarray:
    """View 0 is the image itself; the other views are random augmentations (seeded)."""
    if view == 0 or augmenter is None:
        return images
    return np.asarray(augmenter(np.asarray(images, np.float32), training=True))


def _augmenter(kinds: Sequence[str], seed: int):
    """Keras's random layers: horizontal flip, rotation up to ±10% of a turn, zoom up to ±10%."""
    import keras

    layers = []
    if "flip" in kinds:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if "rotate" in kinds:
        layers.append(keras.layers.RandomRotation(0.1, fill_mode="reflect", seed=seed + 1))
    if "zoom" in kinds:
        layers.append(keras.layers.RandomZoom(0.1, fill_mode="reflect", seed=seed + 2))
    return keras.Sequential(layers, name="augment")


def _pixel_batches(images_of, examples: list[Example], batch_size: int, augmenter):
    """Batches of training images (augmented afresh each time when augmenting), in the order given."""

    def batches(order: np.ndarray):
        for start in range(0, len(order), batch_size):
            idx = np.sort(order[start : start + batch_size])  # sorted: reads from disk go in file order
            x = np.asarray(images_of("train", examples, idx), np.float32)
            yield (_view(x, augmenter, 1) if augmenter is not None else x), idx

    return batches


def _class_weights(labels: np.ndarray, classes: int) -> np.ndarray:
    """Each label counts as much as the others in the loss, however many images it has."""
    counts = np.bincount(labels, minlength=classes).astype(np.float64)
    weights = np.where(counts > 0, len(labels) / (classes * np.maximum(counts, 1)), 0.0)
    return weights.astype(np.float32)


def _fit(
    model, batches, y: np.ndarray, class_weights: np.ndarray, count: int, batch_size: int, *,
    validate: Callable[[], np.ndarray], val_y: np.ndarray, epochs: int, learning_rate: float, phase: str,
    config: TrainConfig, tracker: _Tracker, record, notes: list[str],
) -> None:  # fmt: skip
    """Adam, categorical cross-entropy (weighted per label), accuracy; early stopping on validation loss.

    A plain loop around one compiled training step rather than model.fit: progress and cancel
    every batch, any source of batches (cached features, cached activations, pixels), and no
    per-epoch overhead that would dwarf a head's few milliseconds of work.
    """
    import keras
    import tensorflow as tf

    optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
    classes = len(class_weights)
    weights_tensor = tf.constant(class_weights)
    variables = model.trainable_variables

    def train_step(x, labels):
        onehot = tf.one_hot(labels, classes)
        with tf.GradientTape() as tape:
            probs = model(x, training=True)
            per_image = keras.losses.categorical_crossentropy(onehot, probs)
            loss = tf.reduce_mean(per_image * tf.gather(weights_tensor, labels))
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        hits = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(probs, axis=1, output_type=tf.int64), labels), tf.float32))
        return tf.reduce_sum(per_image), hits

    rng = np.random.default_rng(config.seed + (1 if phase == PHASE_FINE_TUNE else 0))
    compiled = None
    best_loss, best_epoch, best_weights, waited = math.inf, 0, None, 0
    batches_per_epoch = math.ceil(count / batch_size)
    for epoch in range(1, epochs + 1):
        started = time.monotonic()
        order = rng.permutation(count)
        total_loss = total_hits = 0.0
        for b, (x, idx) in enumerate(batches(order), start=1):
            x = _tensors(x)
            if compiled is None:  # traced once for every batch length (the last batch is shorter)
                compiled = tf.function(train_step, input_signature=[_free_batch(x), tf.TensorSpec([None], tf.int64)])
            loss_sum, hits = compiled(x, tf.constant(y[idx], tf.int64))
            total_loss += float(loss_sum)
            total_hits += float(hits)
            tracker.step(phase, epoch=epoch, epochs=epochs, batch=b, batches=batches_per_epoch)
        val_loss, val_accuracy = _loss_and_accuracy(validate(), val_y)
        result = EpochResult(
            phase=phase,
            epoch=epoch,
            loss=total_loss / count,
            accuracy=total_hits / count,
            val_loss=val_loss,
            val_accuracy=val_accuracy,
            seconds=time.monotonic() - started,
        )
        record(result)
        if not config.early_stopping or val_loss is None:
            continue
        if val_loss < best_loss - 1e-4:
            best_loss, best_epoch, best_weights, waited = val_loss, epoch, [v.numpy() for v in variables], 0
            continue
        waited += 1
        if waited >= config.patience:
            # As Keras's EarlyStopping(restore_best_weights=True): only a phase that stops early goes
            # back to its best epoch; one that runs all its epochs keeps the last weights.
            for variable, value in zip(variables, best_weights, strict=True):
                variable.assign(value)
            notes.append(
                f"{phase.capitalize()} stopped early after epoch {epoch} of {epochs}: the validation loss had not "
                f"improved for {config.patience} epochs, so the weights of epoch {best_epoch} were kept."
            )
            break
    tracker.finish(phase)


def _tensors(x):
    import tensorflow as tf

    if isinstance(x, list | tuple):
        return [tf.constant(part) for part in x]
    return tf.constant(x)


def _free_batch(x):
    """The TensorSpec(s) of a batch with its length left free."""
    import tensorflow as tf

    if isinstance(x, list | tuple):
        return [tf.TensorSpec([None, *part.shape[1:]], part.dtype) for part in x]
    return tf.TensorSpec([None, *x.shape[1:]], x.dtype)


def _predict_array(predict, x) -> np.ndarray:
    """Probabilities for arrays already in memory (features, or lists of cached activations)."""
    count = len(x[0]) if isinstance(x, list | tuple) else len(x)
    if count == 0:
        return np.zeros((0, 0), np.float32)
    out = []
    for start in range(0, count, 256):
        part = [a[start : start + 256] for a in x] if isinstance(x, list | tuple) else x[start : start + 256]
        out.append(np.asarray(predict(_tensors(part))))
    return np.concatenate(out)


def _predict_pixels(forward, batch_of, count: int) -> np.ndarray:
    out = []
    for start in range(0, count, FEATURE_BATCH):
        idx = np.arange(start, min(start + FEATURE_BATCH, count))
        out.append(np.asarray(forward(np.asarray(batch_of(idx), np.float32))))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _loss_and_accuracy(probs: np.ndarray, truth: np.ndarray) -> tuple[float | None, float | None]:
    if len(truth) == 0:
        return None, None
    picked = np.clip(probs[np.arange(len(truth)), truth], 1e-7, 1.0)
    return float(-np.log(picked).mean()), float((probs.argmax(axis=1) == truth).mean())


def _fine_tune_cached(
    base, pre, head, cut, size, data, truth, weights, batch_size, config, tracker, record, images_of, notes
):
    """Fine-tuning on the frozen part's output, computed once; only the upper part and the head train."""
    import keras
    import tensorflow as tf

    lower, upper, crossing = cut
    inputs = keras.Input((size, size, 3))
    x = pre(inputs) if pre is not None else inputs
    outs = lower(x, training=False)
    lower_model = keras.Model(inputs, outs if isinstance(outs, list) else [outs])
    forward = tf.function(
        lambda x: lower_model(x, training=False), input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)]
    )

    def activations(split: str, examples: list[Example]) -> list[np.ndarray]:
        parts: list[list[np.ndarray]] = [[] for _ in crossing]
        for start in range(0, len(examples), FEATURE_BATCH):
            idx = np.arange(start, min(start + FEATURE_BATCH, len(examples)))
            outs = forward(np.asarray(images_of(split, examples, idx), np.float32))
            for i, a in enumerate(outs if isinstance(outs, list | tuple) else [outs]):  # one crossing: one tensor
                parts[i].append(np.asarray(a))
            tracker.step(PHASE_FINE_TUNE, units=0)
        return [np.concatenate(p) for p in parts]

    train_acts = activations("train", data.train)
    val_acts = activations("validation", data.validation)
    cut_inputs = [keras.Input(t.shape[1:]) for t in crossing]
    y = upper(cut_inputs, training=False)
    y = keras.layers.GlobalAveragePooling2D()(y)
    trainable = keras.Model(cut_inputs, head(y))

    def batches(order: np.ndarray):
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            yield [a[idx] for a in train_acts], idx

    _fit(
        trainable, batches, truth["train"], weights, len(data.train), batch_size,
        validate=lambda: _predict_array(lambda x: trainable(x, training=False), val_acts), val_y=truth["validation"],
        epochs=config.fine_tune_epochs, learning_rate=config.fine_tune_learning_rate, phase=PHASE_FINE_TUNE,
        config=config, tracker=tracker, record=record, notes=notes,
    )  # fmt: skip


def _check_assembly(forward, images: np.ndarray, expected: np.ndarray) -> None:
    """The saved model must give what was measured (cached paths compute it in pieces)."""
    if len(images) == 0:
        return
    got = np.asarray(forward(np.asarray(images, np.float32)))
    if got.shape != expected.shape or np.abs(got - expected).max() > 1e-3:
        raise RuntimeError(f"assembled model differs from the evaluated one by {np.abs(got - expected).max():.2g}")
