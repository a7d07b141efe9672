"""Trained models in the catalog: `trained-<id>` next to the zoo in Classify, the API and History.

Registered with `classifier.catalog` (and, for int8 calibration images, `classifier.runtimes`)
when the training app is ready, so the inference app never imports this one. A trained model is
a `.keras` file whose first layer does the base's preprocessing: the engine feeds it the same RGB
pixels 0-255 it decodes for any model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from django.db.models import Count

from classifier import catalog, runtimes
from training import storage
from training.models import Dataset, DatasetImage, TrainedModel

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

    model = _trained_model(key)
    if model is None:
        return None
    data, _ = jobs.training_data(model.job)
    examples = data.validation[:MAX_CHECK_IMAGES]
    return trainer.load_images(examples, model.input_size) if examples else None


class CalibrationImages:
    """Real images to calibrate int8 with: a trained model's training split, or any dataset's pictures.

    Registered with `classifier.runtimes` when the app is ready, so the inference app reads
    datasets without importing this app. Images are spread over the source (datasets are stored
    label by label) and decoded exactly as training and Classify decode them.
    """

    def model_images(self, key: str, size: int, limit: int) -> runtimes.Calibration | None:
        from training import jobs

        model = _trained_model(key)
        if model is None:
            return None
        data, _ = jobs.training_data(model.job)
        return runtimes.Calibration(
            _decode(_spread(data.train, limit), size), f"the training split of job {model.job_id}"
        )

    def datasets(self, user) -> list[tuple[int, str, int]]:
        if user is None or not Dataset.can_be_seen_by(user):
            return []
        return [(d.pk, d.name, d.image_count) for d in Dataset.objects.annotate(image_count=Count("images"))]

    def dataset_images(self, dataset_id: int, size: int, limit: int) -> runtimes.Calibration | None:
        from training import trainer

        dataset = Dataset.objects.filter(pk=dataset_id).first()
        if dataset is None:
            return None
        rows = DatasetImage.objects.filter(dataset=dataset).order_by("id").values_list("id", "sha256", "format")
        examples = [trainer.Example(storage.image_path(dataset.folder, sha, fmt), 0, pk) for pk, sha, fmt in rows]
        return runtimes.Calibration(_decode(_spread(examples, limit), size), f"the dataset “{dataset.name}”")


def _trained_model(key: str) -> TrainedModel | None:
    prefix = f"{catalog.TRAINED}-"
    if not key.startswith(prefix) or not key[len(prefix) :].isdigit():
        return None
    return TrainedModel.objects.select_related("job__dataset").filter(pk=int(key[len(prefix) :])).first()


def _spread(examples: list, limit: int) -> list:
    """At most `limit` examples, evenly over the list (a snapshot is ordered label by label)."""
    if len(examples) <= limit:
        return examples
    return [examples[i] for i in np.linspace(0, len(examples) - 1, limit).round().astype(int)]


def _decode(examples: list, size: int) -> np.ndarray:
    from training import trainer

    try:
        return trainer.load_images(examples, size)
    except trainer.TrainingError as exc:  # a file deleted or damaged since: say which, in the same words
        raise runtimes.CalibrationError(str(exc)) from None


CALIBRATION = CalibrationImages()
