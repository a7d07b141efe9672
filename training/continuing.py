"""Continue training: a job starts from an earlier job's model instead of from a blank head.

No Django. Why it looks like this:
- The earlier `model.keras` holds the whole model `trainer.assemble` built: pixels in, the fixed
  preprocessing layer, the base, pooling, then the head (dense, dropout, predictions). Its saved
  configuration says its input size and head; then the same model is assembled around the job's
  own base and the weights file read into it. Keras checks every layer as it loads, no second
  base model is built, and it takes a third of the time of loading the model (0.3 s for
  MobileNet 0.25 here). The installed weights are kept as arrays only while they are compared.
- The head keeps what it learnt: the dense layer as it was, and for each label the earlier model
  knew (matched by name, ignoring case, as the dataset matches names) its weights in the output
  layer. A label added since gets fresh weights; a label removed since is dropped. The labels come
  from the earlier job's record, in its output order.
- When the earlier job fine-tuned, its base's upper layers are part of what it learnt: they are
  loaded from the layer fine-tuning started at. Everything below that (and every layer, when it did
  not fine-tune) must equal the base installed now, or the head would sit on other features than
  it learnt on: then the job is refused, in words.
- The base stays frozen while the head trains, so the cached-features path applies unchanged. The
  head's epochs cost milliseconds there; what costs is the base's pass over every image, so the
  earlier job's features of the training images it saw (its features.npz) are taken as they are
  when the base is the one they came from: only new images go through it. Validation and test
  images always go through it, so the model is measured and checked as any job's. A base carrying
  fine-tuned layers cannot use those features, nor the converted (LiteRT) base, which holds the
  installed weights: TensorFlow computes its features, once, as for any job.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training import outcomes
from training.names import label_key
from training.trainer import TrainConfig, TrainingError, assemble, build_head

# Frozen layers must hold the installed weights; a saved float32 model gives them back exactly.
SAME_WEIGHTS_TOLERANCE = 1e-6
HEAD_LAYERS = ("dense", "predictions")  # the layers of `trainer.build_head` that hold what it learnt


@dataclass(frozen=True)
class WarmStart:
    """Which earlier model a job starts from; the Django side builds it from the earlier job's record."""

    model_path: Path
    labels: tuple[str, ...]  # the earlier model's labels, in its output order
    fine_tuned_from: int | None = None  # the first base layer the earlier job fine-tuned; None: base left frozen
    name: str = "the earlier job"  # how sentences name it, e.g. "job 12"

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.labels))
        object.__setattr__(self, "model_path", Path(self.model_path))


@dataclass(frozen=True)
class Earlier:
    """What a job took from the earlier model: its head's weights (the base already holds the rest)."""

    start: WarmStart
    dense: list[np.ndarray]  # kernel (features, units), bias (units,)
    predictions: list[np.ndarray]  # kernel (units, labels), bias (labels,)
    layers_loaded: int  # base layers that took the earlier job's fine-tuned weights

    @property
    def changes_base(self) -> bool:
        """Whether the job's base carries the earlier job's fine-tuned layers."""
        return self.start.fine_tuned_from is not None


@dataclass(frozen=True)
class HeadStart:
    """What the head started from, for the job's notes."""

    kept: tuple[str, ...]  # labels whose output weights came from the earlier model
    new: tuple[str, ...]  # labels added since: fresh weights
    dropped: tuple[str, ...]  # the earlier model's labels no longer in the dataset


@dataclass(frozen=True)
class _Shape:
    input_size: int
    features: int
    units: int
    outputs: int


def start_from(start: WarmStart, base, preprocess_layer, size: int, base_name: str, config: TrainConfig) -> Earlier:
    """Put the earlier model's weights into this job's `base` and return its head's.

    The earlier model is rebuilt around `base` and its weights file read into it (Keras checks that
    every layer matches), which also gives the base the earlier job's fine-tuned layers. Refused in
    words: the file gone or not ours, another input size or head, another base, or a base whose
    frozen layers no longer hold the installed weights (the weights file was replaced since).
    """
    name = start.name
    if not start.model_path.is_file():
        raise TrainingError(
            f"The model of {name} is gone (its files were deleted), so there is nothing to continue from. "
            "Start a new job with “Train a model” instead."
        )
    shape = _read_shape(start)
    if shape.input_size != size:
        raise TrainingError(
            f"The model of {name} takes {shape.input_size}-pixel images, and {base_name} now takes {size}: "
            "its head cannot carry over. Start a new job instead."
        )
    if shape.outputs != len(start.labels):
        raise TrainingError(
            f"The model of {name} answers with {shape.outputs} labels but its record names {len(start.labels)}. "
            "Start a new job instead."
        )
    features = int(base.output.shape[-1])
    if shape.features != features or shape.units != config.dense_units:
        raise TrainingError(_ANOTHER_BASE.format(name=name, base=base_name))
    installed = [layer.get_weights() for layer in base.layers]
    head = build_head(features, len(start.labels), config)
    try:
        assemble(base, head, preprocess_layer, size).load_weights(start.model_path)
    except Exception:  # Keras says which layer did not match, in many kinds of error
        raise TrainingError(_ANOTHER_BASE.format(name=name, base=base_name)) from None
    first_tuned = start.fine_tuned_from if start.fine_tuned_from is not None else len(base.layers)
    loaded = 0
    for i, layer in enumerate(base.layers):
        if i >= first_tuned and type(layer).__name__ != "BatchNormalization":  # trainer.unfreeze_from's rule
            loaded += bool(installed[i])
            continue
        for now, before in zip(layer.get_weights(), installed[i], strict=True):
            if not np.allclose(now, before, rtol=0, atol=SAME_WEIGHTS_TOLERANCE):
                raise TrainingError(
                    f"{base_name}'s weights file changed since {name} was trained, so its head learnt on other "
                    "features than the base gives now. Start a new job with “Train a model” instead."
                )
    dense, predictions = (head.get_layer(layer).get_weights() for layer in HEAD_LAYERS)
    return Earlier(start, dense, predictions, loaded)


_ANOTHER_BASE = (
    "The model of {name} was built on another base than {base} as installed now. Continue only on the same "
    "base; start a new job to use this one."
)


def _read_shape(start: WarmStart) -> _Shape:
    """Input size and head of the earlier model, from its saved configuration (no model is built)."""
    try:
        with zipfile.ZipFile(start.model_path) as archive:
            config = json.loads(archive.read("config.json"))
        layers = {layer["config"]["name"]: layer for layer in config["config"]["layers"]}
        head = {layer["config"]["name"]: layer["config"] for layer in layers["head"]["config"]["layers"]}
        return _Shape(
            input_size=int(layers["pixels"]["config"]["batch_shape"][1]),
            features=int(head["features"]["batch_shape"][-1]),
            units=int(head["dense"]["units"]),
            outputs=int(head["predictions"]["units"]),
        )
    except (OSError, zipfile.BadZipFile, ValueError, KeyError, TypeError, IndexError):
        raise TrainingError(
            f"The model file of {start.name} cannot be read any more. Start a new job with “Train a model” instead."
        ) from None


def warm_head(head, earlier: Earlier, labels: list[str]) -> HeadStart:
    """Start `head` (built by `trainer.build_head` for `labels`) from the earlier model's head.

    The dense layer takes the earlier weights as they are; each output keeps the weights of the
    earlier label with the same name, a new label keeps the fresh weights it was built with (its bias
    set to the mean of the kept ones, so it starts on an equal footing with the others).
    """
    dense, predictions = (head.get_layer(name) for name in HEAD_LAYERS)
    name = earlier.start.name
    if [w.shape for w in dense.get_weights()] != [w.shape for w in earlier.dense]:
        raise TrainingError(
            f"The head of {name} has another shape than this job's ({earlier.dense[0].shape[1]} units on "
            f"{earlier.dense[0].shape[0]} features). Start a new job instead."
        )
    old_kernel, old_bias = earlier.predictions
    kernel, bias = (np.array(w) for w in predictions.get_weights())
    index = {label_key(label): i for i, label in enumerate(earlier.start.labels)}
    kept, new = [], []
    for j, label in enumerate(labels):
        i = index.get(label_key(label))
        if i is None:
            new.append(label)
            continue
        kernel[:, j], bias[j] = old_kernel[:, i], old_bias[i]
        kept.append(label)
    if new and kept:
        kept_bias = float(np.mean([bias[j] for j, label in enumerate(labels) if label in kept]))
        for j, label in enumerate(labels):
            if label in new:
                bias[j] = kept_bias
    now = {label_key(label) for label in labels}
    dropped = [label for label in earlier.start.labels if label_key(label) not in now]
    dense.set_weights(earlier.dense)
    predictions.set_weights([kernel, bias])
    return HeadStart(tuple(kept), tuple(new), tuple(dropped))


def known_features(earlier: Earlier, feature_size: int) -> dict[int, np.ndarray]:
    """The earlier job's features of each image it saw, by image id (its features.npz).

    Empty when they cannot stand for this job's: the base carries fine-tuned layers (the features
    were computed before them), or the file is missing or of another size. Un-augmented features
    only: the caller reuses them when it computes one view per image.
    """
    if earlier.changes_base:
        return {}
    known: dict[int, np.ndarray] = {}
    for split in outcomes.load_features(earlier.start.model_path.parent).values():
        if split.features.ndim != 2 or split.features.shape[1] != feature_size:
            return {}
        known.update(zip(split.image_ids.tolist(), split.features.astype(np.float32), strict=True))
    return known


def describe(earlier: Earlier, start: HeadStart) -> str:
    """The job's note: what it started from, in one sentence."""
    kept = f"{len(start.kept)} label{'s' if len(start.kept) != 1 else ''}{_names(start.kept, ' (', ')')}"
    parts = [f"Started from the model of {earlier.start.name}: its head kept the weights of {kept}"]
    if start.new:
        verbs = "is new and starts" if len(start.new) == 1 else "are new and start"
        parts.append(f"{_names(start.new)} {verbs} from fresh weights")
    if start.dropped:
        was = "was" if len(start.dropped) == 1 else "were"
        parts.append(f"{_names(start.dropped)}, no longer in the dataset, {was} dropped")
    sentence = "; ".join(parts)
    if earlier.layers_loaded:
        sentence += (
            f"; its base carries the {earlier.layers_loaded} fine-tuned layers of {earlier.start.name} "
            f"(from layer {earlier.start.fine_tuned_from})"
        )
    return sentence + "."


def _names(names: tuple[str, ...], before: str = "", after: str = "") -> str:
    """“a”, “b” and 3 more: label names in sentences, at most eight."""
    if not names:
        return ""
    listed = ", ".join(f"“{n}”" for n in names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    return before + listed + after
