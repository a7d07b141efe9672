"""What a network looks like: the layers that hold weights, their shapes, and the work per image.

A weights file carries no model name, only layer groups and arrays. Reading those shapes (not
the arrays) tells which architecture a file was saved from in milliseconds, without TensorFlow:
`read_layout(path)` reads a file, `model_layout(model)` reads a built Keras model, and two
layouts with the same `digest` load into each other (Keras's legacy `.h5` loader matches layers
by order and checks shapes, not names). `count_macs(model)` is how `zoo` ranks speed.

No Django here; Keras is imported only by the functions that take a Keras model.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path


class LayoutError(ValueError):
    """A file that holds no Keras application weights; str() says what it is instead."""


@dataclass(frozen=True)
class LayerWeights:
    """One layer that holds weights: its name and the shape of each array, in saving order."""

    name: str
    shapes: tuple[tuple[int, ...], ...]

    @property
    def parameters(self) -> int:
        return sum(math.prod(shape) for shape in self.shapes)


@dataclass(frozen=True)
class Layout:
    """The layers with weights of a file or a model, in the order Keras's loader pairs them."""

    layers: tuple[LayerWeights, ...]
    keras_version: str | None = None
    whole_model: bool = False  # saved with model.save(): the weights sit in a "model_weights" group

    @property
    def parameters(self) -> int:
        return sum(layer.parameters for layer in self.layers)

    @property
    def digest(self) -> str:
        """Identical for any two layouts whose arrays load into each other, whatever the layer names."""
        shapes = [[list(shape) for shape in layer.shapes] for layer in self.layers]
        return hashlib.sha256(json.dumps(shapes, separators=(",", ":")).encode()).hexdigest()[:20]

    @property
    def head_classes(self) -> int | None:
        """Classes the last layer predicts when it is a classifier (a Dense or 1x1 conv kernel), else None."""
        if not self.layers or not self.layers[-1].shapes:
            return None
        kernel = self.layers[-1].shapes[0]
        return kernel[-1] if len(kernel) >= 2 else None

    def summary(self) -> dict:
        return {"layers": len(self.layers), "parameters": self.parameters, "digest": self.digest}


def read_layout(path: Path | str) -> Layout:
    """The layers and shapes in a Keras HDF5 weights file, read without loading the arrays.

    Raises LayoutError with a sentence saying what the file is when it is not legacy Keras weights
    (the layout Keras publishes its application weights in).
    """
    import h5py

    path = Path(path)
    if not h5py.is_hdf5(path):
        raise LayoutError("It is not an HDF5 file, and Keras application weights are HDF5 files (.h5).")
    try:
        with h5py.File(path, "r") as f:
            return _read_open_file(f)
    except LayoutError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        raise LayoutError(
            f"It is an HDF5 file, but a damaged or incomplete one (an interrupted download?): {_first_line(exc)}"
        ) from None


def _read_open_file(f) -> Layout:
    group, whole_model = f, False
    if not _attribute_list(f, "layer_names") and "model_weights" in f:
        group, whole_model = f["model_weights"], True
    names = _attribute_list(group, "layer_names")
    if not names:
        if "layers" in f and "vars" in f:
            raise LayoutError(
                "It is a Keras 3 weights file (written by model.save_weights to a .weights.h5 name), not one "
                "of the published application weights files, which use the older Keras layout."
            )
        raise LayoutError("It is an HDF5 file, but not a Keras weights file: it has no list of layers.")
    layers = []
    for name in names:
        if name not in group:
            raise LayoutError(f"It lists a layer {name!r} that it does not contain: the file is damaged.")
        layer_group = group[name]
        weight_names = _attribute_list(layer_group, "weight_names")
        if weight_names:
            shapes = tuple(tuple(int(n) for n in layer_group[w].shape) for w in weight_names)
            layers.append(LayerWeights(name, shapes))
    version = group.attrs.get("keras_version")
    if isinstance(version, bytes):
        version = version.decode("utf8", "replace")
    return Layout(tuple(layers), keras_version=str(version) if version is not None else None, whole_model=whole_model)


def _attribute_list(group, name: str) -> list[str]:
    """An attribute list as Keras writes it: whole, or split in name0, name1... when it is long."""
    if name in group.attrs:
        values = list(group.attrs[name])
    else:
        values, chunk = [], 0
        while f"{name}{chunk}" in group.attrs:
            values.extend(group.attrs[f"{name}{chunk}"])
            chunk += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else exc.__class__.__name__


def model_layout(model) -> Layout:
    """The layout a Keras model saves and loads with the legacy `.h5` format (trainable weights first)."""
    layers = []
    for layer in model.layers:
        weights = layer.trainable_weights + layer.non_trainable_weights
        if weights:
            layers.append(LayerWeights(layer.name, tuple(tuple(int(n) for n in w.shape) for w in weights)))
    return Layout(tuple(layers))


def count_macs(model) -> int:
    """Multiply-accumulates for one image through the convolutions and dense layers of a built model.

    The usual efficiency measure (TF-slim's tables list it as "MACs"): batch norm, activations,
    pooling and additions are left out, as they are there. Shapes come from the built graph.
    """
    from keras import layers as kl

    total = 0
    for layer in _leaf_layers(model):
        if isinstance(layer, kl.SeparableConv2D):
            out = layer.output.shape
            kh, kw = layer.kernel_size
            channels = layer.input.shape[-1] * layer.depth_multiplier
            total += out[1] * out[2] * channels * (kh * kw + out[3])
        elif isinstance(layer, kl.DepthwiseConv2D):
            out = layer.output.shape
            kh, kw = layer.kernel_size
            total += out[1] * out[2] * out[3] * kh * kw
        elif isinstance(layer, kl.Conv2D):
            out = layer.output.shape
            kh, kw = layer.kernel_size
            total += out[1] * out[2] * out[3] * kh * kw * (layer.input.shape[-1] // layer.groups)
        elif isinstance(layer, kl.Dense):
            shape = layer.input.shape
            total += math.prod(shape[1:-1]) * shape[-1] * layer.units
    return int(total)


def _leaf_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from _leaf_layers(layer)
        else:
            yield layer
