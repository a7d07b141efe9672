"""Review of a trained model's low-confidence predictions: which are listed, and what a reviewer does.

Classify and the API store every prediction (`classifier.models.Prediction`) with its best guesses.
The pictures a trained model is unsure about are the ones its dataset lacks, so whoever manages
the dataset sees them listed (best probability below REVIEW_CONFIDENCE, not yet reviewed, newest
first) and either adds each picture to the dataset under the label it really shows, through the
same path an upload takes (hashing, duplicates, thumbnail, disk space, split), or dismisses it.
Both leave a `PredictionReview`, which takes the prediction off the list.

The confidence is read from the JSON `top` field with Django's key transforms, which SQLite and
PostgreSQL both run, so paging and counting stay in the database.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import IntegrityError, transaction
from django.db.models import Count, Q, QuerySet

from classifier.models import Prediction
from training import archives, curation, storage, uploads
from training.models import Dataset, DatasetImage, Label, PredictionReview, TrainedModel

DEFAULT_CONFIDENCE = 0.6
NOT_KEPT = (
    "Only a thumbnail of this picture was kept (the server does not store classified originals), "
    "so it cannot be added to the dataset. Dismiss it instead."
)
MISSING = "The original picture is missing from the server's data folder, so it cannot be added. Dismiss it instead."


def confidence_threshold() -> float:
    """REVIEW_CONFIDENCE, read at call time: a prediction whose best guess is below it is listed."""
    return float(getattr(settings, "REVIEW_CONFIDENCE", DEFAULT_CONFIDENCE))


def _low(below: float) -> Q:
    """Best probability below `below`; a prediction with no guesses at all is never listed."""
    return Q(top__0__probability__lt=below)


def predictions_of(models: Iterable[TrainedModel]) -> QuerySet[Prediction]:
    """Every stored prediction these models made (Classify and the API both store them)."""
    return Prediction.objects.filter(model_key__in=[model.key for model in models])


def pending(models: Iterable[TrainedModel], below: float) -> QuerySet[Prediction]:
    """The review list: low-confidence predictions of these models nobody reviewed yet, newest first."""
    rows = predictions_of(models).filter(_low(below), review__isnull=True)
    return rows.select_related("user").order_by("-created_at", "-id")


@dataclass(frozen=True)
class Counts:
    """How much a model (or a dataset's models) was used, and how much of it is left to review."""

    predictions: int
    low: int
    to_review: int


def counts(models: Iterable[TrainedModel], below: float) -> Counts:
    """Predictions, low-confidence ones and those still to review, in one query."""
    low = _low(below)
    totals = predictions_of(models).aggregate(
        predictions=Count("pk"), low=Count("pk", filter=low), to_review=Count("pk", filter=low & Q(review__isnull=True))
    )
    return Counts(**totals)


@dataclass
class Outcome:
    """What became of one chosen prediction: the dataset image made from it, or why there is none."""

    prediction: Prediction
    image: DatasetImage | None = None
    problem: str = ""
    gone: bool = False  # someone reviewed it already: it is off the list whatever happens now

    @property
    def done(self) -> bool:
        return not self.problem


def already_reviewed(review: PredictionReview) -> str:
    who = review.reviewed_by.get_username() if review.reviewed_by else "someone"
    return f"Already reviewed: {review.get_decision_display()} by {who}."


def _review_of(prediction: Prediction) -> PredictionReview | None:
    return PredictionReview.objects.select_related("reviewed_by").filter(prediction=prediction).first()


def add_to_dataset(
    dataset: Dataset,
    models: dict[str, TrainedModel],
    predictions: Iterable[Prediction],
    label: Label | str,
    user: AbstractBaseUser,
) -> list[Outcome]:
    """Add each prediction's original picture to `dataset` under `label` (a new label when given by name).

    Each picture goes through `uploads.add_uploads`, so it is checked, stored and dealt into a split
    exactly like an upload; a picture already in the dataset is not added twice and says where it
    is. An added picture is recorded as an ImageChange and a PredictionReview.
    """
    outcomes = []
    for prediction in predictions:
        outcome = Outcome(prediction)
        review = _review_of(prediction)
        if review is not None:
            outcome.problem, outcome.gone = already_reviewed(review), True
        else:
            _add_one(dataset, models[prediction.model_key], outcome, label, user)
        outcomes.append(outcome)
        if outcome.image is not None and isinstance(label, str):
            label = outcome.image.label  # the label the first picture created; the others join it
    return outcomes


def _add_one(
    dataset: Dataset, model: TrainedModel, outcome: Outcome, label: Label | str, user: AbstractBaseUser
) -> None:
    prediction = outcome.prediction
    data = _original_bytes(prediction, outcome)
    if data is None:
        return
    sha = storage.sha256(data)
    existing = dataset.images.select_related("label").filter(sha256=sha).first()
    if existing is not None:
        outcome.problem = f"This picture is already in the dataset, in “{existing.label.name}”."
        return
    report = uploads.add_uploads(dataset, label, [SimpleUploadedFile(prediction.original_name, data)], user)
    image = dataset.images.select_related("label").filter(sha256=sha).first()
    if not report["added"] or image is None:
        outcome.problem = _refusal(report) or "The picture could not be added. Try again."
        return
    outcome.image = image
    with transaction.atomic():
        curation.record_added(image, user, reason=f"review of low-confidence predictions of {model.name}")
        _record(prediction, model, PredictionReview.Decision.ADDED, user, image=image)


def _original_bytes(prediction: Prediction, outcome: Outcome) -> bytes | None:
    """The stored original, as an upload would send it; None (and the outcome says why) when there is none."""
    if not prediction.image:
        outcome.problem = NOT_KEPT
        return None
    limit = settings.MAX_UPLOAD_BYTES
    try:
        with prediction.image.open("rb") as file:
            data = file.read(limit + 1)
    except (FileNotFoundError, ValueError):
        outcome.problem = MISSING
        return None
    if len(data) > limit:
        outcome.problem = archives.too_large_message(prediction.image.size, limit)
        return None
    return data


def _refusal(report: dict) -> str:
    """The reason the upload report gives for the one file it did not add."""
    for row in report["labels"]:
        for entry in row["duplicate_files"] + row["rejected_files"]:
            return entry["reason"]
    return ""


def _record(
    prediction: Prediction,
    model: TrainedModel,
    decision: str,
    user: AbstractBaseUser,
    image: DatasetImage | None = None,
) -> None:
    """One review per prediction: a reviewer who raced another leaves the first decision standing."""
    try:
        with transaction.atomic():
            PredictionReview.objects.create(
                prediction=prediction, trained_model=model, decision=decision, image=image, reviewed_by=user
            )
    except IntegrityError:
        pass


def dismiss(
    models: dict[str, TrainedModel], predictions: Iterable[Prediction], user: AbstractBaseUser
) -> list[Outcome]:
    """Take predictions off the list without adding anything; those already reviewed say so."""
    outcomes = []
    for prediction in predictions:
        outcome = Outcome(prediction)
        review = _review_of(prediction)
        if review is not None:
            outcome.problem, outcome.gone = already_reviewed(review), True
        else:
            _record(prediction, models[prediction.model_key], PredictionReview.Decision.DISMISSED, user)
        outcomes.append(outcome)
    return outcomes


def summary(outcomes: list[Outcome], *, added_to: str | None = None) -> str:
    """One sentence for the page: what was done, and how many pictures were not (the page lists why)."""
    done = sum(1 for outcome in outcomes if outcome.done)
    left = len(outcomes) - done
    pictures = f"{done} picture{'s' if done != 1 else ''}"
    if added_to is not None:
        text = f"Added {pictures} to “{added_to}”." if done else "Nothing was added."
    else:
        text = f"Dismissed {pictures}." if done else "Nothing was dismissed."
    if left and done:
        text += f" {left} other{'s' if left != 1 else ''} could not be{' added' if added_to is not None else ''}:"
    return text
