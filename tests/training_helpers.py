"""Builders for the training tests: datasets whose labels a small random network can tell apart.

A random (generated-weights) base cannot recognise objects, but its features still carry colour:
each label is a dominant colour channel with mild noise, a difference any head learns.
"""

from __future__ import annotations

import io

import numpy as np
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from training import uploads
from training.models import Dataset

# A small real architecture: MobileNetV2 at width 0.35 and 96 pixels (154 layers without its head).
TRAIN_BASE = "mobilenetv2-0.35-96"
COLOURS = ("red", "green", "blue")


def colour_png(channel: int, seed: int, size: int = 64, noise: int = 30) -> bytes:
    """A picture dominated by one colour channel, different for every seed."""
    rng = np.random.default_rng(seed)
    array = rng.integers(0, noise, size=(size, size, 3)).astype(np.int16)
    array[..., channel] += 255 - noise
    out = io.BytesIO()
    Image.fromarray(np.clip(array, 0, 255).astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


def colour_dataset(
    user, *, name: str = "Colours", labels: tuple[str, ...] = COLOURS, per_label: int = 20, validation: int = 25,
    test: int = 0, seed: int = 0,
) -> Dataset:  # fmt: skip
    """A dataset filled through the same upload path users take, split by its shares."""
    dataset = Dataset.objects.create(name=name, created_by=user, validation_percent=validation, test_percent=test)
    for channel, label in enumerate(labels):
        files = [
            SimpleUploadedFile(f"{label}_{i}.png", colour_png(channel % 3, seed * 10_000 + channel * 1000 + i))
            for i in range(per_label)
        ]
        uploads.add_uploads(dataset, label, files, user)
    return dataset
