"""Builders shared by the tests: images made with Pillow, small real Keras models and weights files.

Nothing here downloads. Keras is imported only by the functions that need it.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"


def image_bytes(
    fmt: str = "JPEG",
    size: tuple[int, int] = (64, 48),
    color: tuple[int, ...] | int = (200, 60, 40),
    mode: str = "RGB",
    **save_args,
) -> bytes:
    """A small picture in the given format and mode, as the bytes of a file."""
    image = Image.new(mode, size, color)
    out = io.BytesIO()
    image.save(out, format=fmt, **save_args)
    return out.getvalue()


def noise_image_bytes(seed: int = 0, size: tuple[int, int] = (96, 96), fmt: str = "PNG") -> bytes:
    """A random-noise picture: distinct content (and hash) for every seed."""
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(array).save(out, format=fmt)
    return out.getvalue()


def reinitialise(model, seed: int = 0) -> None:
    """Give a weights=None Keras application weights that make outputs depend on the input.

    Keras's MobileNetV2(weights=None) answers exactly 1/1000 for every class, so tests set
    He-normal kernels, BatchNormalization at gamma 1, beta 0.1, mean 0, variance 1.
    """
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        values = layer.get_weights()
        if not values:
            continue
        kind = layer.__class__.__name__
        if kind == "BatchNormalization":
            gamma, beta, mean, var = values
            layer.set_weights([np.ones_like(gamma), np.full_like(beta, 0.1), np.zeros_like(mean), np.ones_like(var)])
            continue
        new = []
        for w in values:
            if w.ndim >= 2:
                fan_in = int(np.prod(w.shape[:-1])) if kind != "DepthwiseConv2D" else int(np.prod(w.shape[:2]))
                new.append(rng.normal(0, np.sqrt(2.0 / max(fan_in, 1)), size=w.shape).astype(w.dtype))
            else:
                new.append(np.zeros_like(w))
        layer.set_weights(new)


def save_legacy_weights(model, path: Path) -> Path:
    """Write weights in the legacy Keras HDF5 layout that Keras's published application files use."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    return path


def make_zoo_weights(key: str, folder: Path, *, include_top: bool = True, seed: int = 0) -> Path:
    """Build a registry entry with weights=None, give it varied weights, save it under its published name."""
    from classifier import zoo

    entry = zoo.get(key)
    model = entry.build(weights=None, include_top=include_top)
    reinitialise(model, seed)
    return save_legacy_weights(model, Path(folder) / entry.weights_file(include_top).filename)
