"""Classify uploaded files: the one path behind the Classify page and the JSON API.

Each file is decoded on its own, so one bad file gets its own message while the rest of the
batch is still classified; the good ones go through the engine in one batch.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import UploadedFile

from classifier import catalog, imaging, inference
from classifier.models import Prediction

log = logging.getLogger(__name__)
STORED_TOP_K = 5  # History shows the top 5; the API may ask for more, which is stored too


class ClassificationFailed(Exception):
    """The model could not run at all (not a problem of one file); str() is for the user."""


@dataclass
class FileOutcome:
    """What happened to one uploaded file: a stored prediction, or the reason it was refused."""

    filename: str
    prediction: Prediction | None = None
    error: str | None = None


@dataclass
class ClassifyOutcome:
    model: catalog.ModelChoice
    files: list[FileOutcome] = field(default_factory=list)
    batch_ms: float | None = None

    @property
    def succeeded(self) -> list[FileOutcome]:
        return [f for f in self.files if f.prediction is not None]

    @property
    def failed(self) -> list[FileOutcome]:
        return [f for f in self.files if f.error is not None]


def _decode(upload: UploadedFile, draft_side: int) -> imaging.DecodedImage:
    if upload.size is not None and upload.size > settings.MAX_UPLOAD_BYTES:
        # Refuse before reading the file into memory.
        raise imaging.ImageError(imaging.too_large_message(upload.size, settings.MAX_UPLOAD_BYTES))
    return imaging.decode(
        upload, max_bytes=settings.MAX_UPLOAD_BYTES, max_pixels=settings.MAX_IMAGE_PIXELS, draft_side=draft_side
    )


def classify_uploads(user, model: catalog.ModelChoice, uploads: list[UploadedFile], top_k: int = 5) -> ClassifyOutcome:
    """Decode, classify in one batch and store a Prediction per good file, in upload order."""
    outcome = ClassifyOutcome(model=model)
    # The bytes of each upload are read for decoding and dropped: the originals are stored later
    # straight from Django's upload files, so a full request never sits in memory at once.
    good: list[tuple[FileOutcome, UploadedFile, imaging.DecodedImage]] = []
    draft_side = max(model.input_size, imaging.THUMBNAIL_SIDE)
    for upload in uploads:
        item = FileOutcome(filename=_display_name(upload.name))
        outcome.files.append(item)
        try:
            decoded = _decode(upload, draft_side)
        except imaging.ImageError as exc:
            item.error = str(exc)
            continue
        good.append((item, upload, decoded))
    if not good:
        return outcome

    try:
        result = inference.get_engine().predict(model.key, [decoded.image for _, _, decoded in good])
    except catalog.ModelUnavailable as exc:
        raise ClassificationFailed(str(exc)) from None
    except Exception:
        log.exception("model %s failed to load or run", model.key)
        remedy = (
            "Its weights file may be damaged: ask an administrator to import it again from the Models page."
            if model.kind == catalog.PRETRAINED
            else "Its files may be damaged: train it again from its job's page."
        )
        raise ClassificationFailed(f"{model.name} could not be loaded or run on this server. {remedy}") from None

    outcome.batch_ms = result.seconds * 1000
    per_image_ms = outcome.batch_ms / len(good)
    for (item, upload, decoded), guesses in zip(good, result.top(max(top_k, STORED_TOP_K)), strict=True):
        item.prediction = _store(user, model, item.filename, upload, decoded, guesses, per_image_ms, len(good))
    return outcome


def _store(user, model, filename, upload, decoded, guesses, per_image_ms, batch_size) -> Prediction:
    stem = uuid.uuid4().hex
    prediction = Prediction(
        user=user,
        model_key=model.key,
        model_name=model.name,
        original_name=filename,
        image_format=decoded.format,
        width=decoded.width,
        height=decoded.height,
        top=[{"label": g.label, "probability": round(g.probability, 6), "index": g.index} for g in guesses],
        inference_ms=per_image_ms,
        batch_size=batch_size,
    )
    upload.seek(0)
    prediction.image.save(stem + imaging.extension(decoded.format), upload, save=False)
    prediction.thumbnail.save(stem + ".jpg", ContentFile(imaging.thumbnail_jpeg(decoded.image)), save=False)
    try:
        prediction.save()
    except Exception:
        prediction.image.delete(save=False)
        prediction.thumbnail.delete(save=False)
        raise
    return prediction


def _display_name(name: str | None) -> str:
    """The file's own name, without any path a browser or client may send along."""
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name[:255] or "unnamed file"
