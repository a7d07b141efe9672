"""Trained models in the catalog: `trained-<id>` next to the zoo in Classify, the API and History.

Registered with `classifier.catalog` when the training app is ready, so the inference app never
imports this one. A trained model is a `.keras` file whose first layer does the base's
preprocessing: the engine feeds it the same RGB pixels 0-255 it decodes for any model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from classifier import catalog
from training.models import Dataset, TrainedModel

GROUP = "Trained models"


def _load(path: Path):
    import keras

    return keras.saving.load_model(path, compile=False)


def _as_float(batch: np.ndarray) -> np.ndarray:
    """Preprocessing is inside the model: it takes pixels 0-255 as they are."""
    return np.asarray(batch, dtype=np.float32)


def choice(model: TrainedModel) -> catalog.ModelChoice:
    path = model.path
    present = path.is_file()
    return catalog.ModelChoice(
        key=model.key,
        name=model.name,
        group=GROUP,
        kind=catalog.TRAINED,
        input_size=model.input_size,
        labels=tuple(model.labels),
        build=lambda: _load(path),
        preprocess=_as_float,
        available=present,
        unavailable_reason="" if present else "its model file is missing from the data folder; train it again.",
        details={
            "dataset": model.dataset.name,
            "dataset_id": model.dataset_id,
            "job": model.job_id,
            "base": model.base_key,
            "val_accuracy": model.val_accuracy,
        },
    )


class TrainedSource:
    """Every trained model on a dataset the user may see."""

    def choices(self, user) -> list[catalog.ModelChoice]:
        if user is not None and not Dataset.can_be_seen_by(user):
            return []
        return [choice(m) for m in TrainedModel.objects.select_related("dataset")]

    def find(self, name: str, user) -> catalog.ModelChoice | None:
        prefix = f"{catalog.TRAINED}-"
        if not name.lower().startswith(prefix) or not name[len(prefix) :].isdigit():
            return None
        if user is not None and not Dataset.can_be_seen_by(user):
            return None
        model = TrainedModel.objects.select_related("dataset").filter(pk=int(name[len(prefix) :])).first()
        return choice(model) if model is not None else None


SOURCE = TrainedSource()
