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
# Validation images a trained model's LiteRT conversion is checked on, besides the probe images.
MAX_CHECK_IMAGES = 200


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
        weights_path=path,
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


def validation_images(key: str) -> np.ndarray | None:
    """The validation images of the job behind a trained model, to check its LiteRT conversion on.

    Registered with `classifier.runtimes` when the app is ready: a trained model runs on LiteRT
    only if it gives the same answers as Keras on the images it was measured on.
    """
    from training import jobs, trainer

    prefix = f"{catalog.TRAINED}-"
    if not key.startswith(prefix) or not key[len(prefix) :].isdigit():
        return None
    model = TrainedModel.objects.select_related("job__dataset").filter(pk=int(key[len(prefix) :])).first()
    if model is None:
        return None
    data, _ = jobs.training_data(model.job)
    examples = data.validation[:MAX_CHECK_IMAGES]
    return trainer.load_images(examples, model.input_size) if examples else None
