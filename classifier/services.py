"""Classify uploaded files: the one path behind the Classify page and the JSON API.

Each file is decoded on its own, so one bad file gets its own message while the rest of the
batch is still classified; the good ones go through the engine in one batch.

Memory: files are decoded one at a time straight to what is kept of them, the model-sized array
and a small thumbnail JPEG, so a request of 32 pictures of 50 megapixels holds one full-size
picture at a time, not 32. MAX_REQUEST_PIXELS bounds the decoding work of one request: files
beyond it get their own message and the rest are still classified.

Time around the model (docs/PERFORMANCE.md): each thumbnail is made on another thread while the
model input is made; the files are written on another thread while the model runs (LiteRT and
TensorFlow let go of the GIL), and the rows of a request are written together after both, with
one free-space check and one commit; a failure leaves neither rows nor files behind.
"""

from __future__ import annotations

import logging
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import UploadedFile
from django.db import connection, transaction

from classifier import catalog, imaging, inference
from classifier.engine import BatchResult
from classifier.models import Prediction
from webapp.diskspace import ensure_free_space

log = logging.getLogger(__name__)
STORED_TOP_K = 5  # History shows the top 5; the API may ask for more, which is stored too
DEFAULT_MAX_REQUEST_PIXELS = 400_000_000
# Makes thumbnails and writes files beside the request threads (see `_prepare` and
# `classify_uploads`); threads start when first needed.
_beside = ThreadPoolExecutor(max_workers=4, thread_name_prefix="classify-io")


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


@dataclass
class _Prepared:
    """All that is kept of a good upload until its prediction is stored: no decoded picture."""

    item: FileOutcome
    upload: UploadedFile
    format: str
    width: int
    height: int
    pixels: np.ndarray  # the model's input, input_size x input_size x 3
    thumbnail: bytes  # JPEG


class _PixelBudget:
    """The pixels one request may decode together (MAX_REQUEST_PIXELS), spent file by file.

    The first file always fits (MAX_IMAGE_PIXELS bounds it alone), so every file can be sent in
    some request and the message "send it again in another request" is always true.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def check(self, width: int, height: int) -> None:
        """Refuse a file that does not fit in what is left; called before any of its pixels are decoded."""
        pixels = width * height
        if self.used and self.used + pixels > self.limit:
            left = max(self.limit - self.used, 0)
            raise imaging.ImageError(
                f"The image is {width} x {height} pixels ({imaging.megapixels(pixels)} megapixels) and only "
                f"{imaging.megapixels(left)} megapixels are left in this request: the images of one request may hold "
                f"at most {imaging.megapixels(self.limit)} megapixels together; send this one again in another request."
            )

    def spend(self, width: int, height: int) -> None:
        self.used += width * height


def max_request_pixels() -> int:
    """MAX_REQUEST_PIXELS: bounds the decoding time of one request (memory is one picture at a time)."""
    return int(getattr(settings, "MAX_REQUEST_PIXELS", DEFAULT_MAX_REQUEST_PIXELS))


def _prepare(upload: UploadedFile, item: FileOutcome, size: int, budget: _PixelBudget) -> _Prepared:
    """Decode one upload straight to its model input and thumbnail; ImageError says why it cannot be.

    The decoded picture is reduced while decoding (see `imaging.decode`) and dropped on return.
    """
    if upload.size is not None and upload.size > settings.MAX_UPLOAD_BYTES:
        # Refuse before reading the file into memory.
        raise imaging.ImageError(imaging.too_large_message(upload.size, settings.MAX_UPLOAD_BYTES))
    decoded = imaging.decode(
        upload,
        max_bytes=settings.MAX_UPLOAD_BYTES,
        max_pixels=settings.MAX_IMAGE_PIXELS,
        draft_side=max(size, imaging.THUMBNAIL_SIDE),
        check_size=budget.check,
    )
    budget.spend(decoded.width, decoded.height)
    # The thumbnail (a resize and a JPEG encode) is made on another core while this thread makes
    # the model input (another resize): Pillow lets go of the GIL for both, so a lone request
    # does them side by side. Both only read the decoded picture.
    thumbnail = _beside.submit(imaging.thumbnail_jpeg, decoded.image)
    pixels = imaging.to_model_input(decoded.image, size)
    return _Prepared(
        item=item,
        upload=upload,
        format=decoded.format,
        width=decoded.width,
        height=decoded.height,
        pixels=pixels,
        thumbnail=thumbnail.result(),
    )


def classify_uploads(user, model: catalog.ModelChoice, uploads: list[UploadedFile], top_k: int = 5) -> ClassifyOutcome:
    """Decode, classify in one batch and store a Prediction per good file, in upload order."""
    outcome = ClassifyOutcome(model=model)
    budget = _PixelBudget(max_request_pixels())
    try:
        good = _prepare_all(uploads, model.input_size, budget, outcome)
    finally:
        imaging.release_memory(budget.used)  # every full-size picture is gone by now
    if not good:
        return outcome
    keep_original = getattr(settings, "KEEP_CLASSIFIED_IMAGES", True)  # False: History keeps thumbnails only
    needed = sum(len(p.thumbnail) + ((p.upload.size or 0) if keep_original else 0) for p in good)
    ensure_free_space(settings.MEDIA_ROOT, needed)  # once per request, before its first file
    rows = [_prediction(user, model, prepared) for prepared in good]
    writing = _beside.submit(_write_files, good, rows, keep_original)  # while the model runs
    try:
        result = _predict(model, [prepared.pixels for prepared in good])
    except BaseException:
        if _written(writing) is None:
            _delete_files(rows)
        raise
    failure = _written(writing)
    if failure is not None:
        raise failure  # its files are removed already
    outcome.batch_ms = result.seconds * 1000
    guesses = result.top(max(top_k, STORED_TOP_K))
    try:
        for row, best in zip(rows, guesses, strict=True):
            row.top = [{"label": g.label, "probability": round(g.probability, 6), "index": g.index} for g in best]
            row.inference_ms = outcome.batch_ms / len(good)
            row.batch_size = len(good)
        _insert(rows)
    except BaseException:
        _delete_files(rows)
        raise
    for prepared, row in zip(good, rows, strict=True):
        prepared.item.prediction = row
    return outcome


def _prepare_all(
    uploads: list[UploadedFile], size: int, budget: _PixelBudget, outcome: ClassifyOutcome
) -> list[_Prepared]:
    """Each upload decoded in turn (one full-size picture at a time); a bad one gets its own error.

    The bytes of each upload are read for decoding and dropped: the originals are stored later
    straight from Django's upload files, so a full request never sits in memory at once.
    """
    good: list[_Prepared] = []
    for upload in uploads:
        item = FileOutcome(filename=_display_name(upload.name))
        outcome.files.append(item)
        try:
            good.append(_prepare(upload, item, size, budget))
        except imaging.ImageError as exc:
            item.error = str(exc)
    return good


def _predict(model: catalog.ModelChoice, batch: list[np.ndarray]) -> BatchResult:
    """One batch through the engine; a model that cannot load or run is the whole request's failure."""
    try:
        return inference.get_engine().predict(model.key, batch)
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


def _write_files(good: list[_Prepared], rows: list[Prediction], keep_original: bool) -> None:
    """Each file's original (unless KEEP_CLASSIFIED_IMAGES is off) and thumbnail, named for its row.

    Runs beside the model. On failure the files written so far are removed before it raises.
    """
    try:
        for prepared, row in zip(good, rows, strict=True):
            stem = uuid.uuid4().hex
            if keep_original:
                prepared.upload.seek(0)
                row.image.save(stem + imaging.extension(prepared.format), prepared.upload, save=False)
            row.thumbnail.save(stem + ".jpg", ContentFile(prepared.thumbnail), save=False)
    except BaseException:
        _delete_files(rows)
        raise


def _written(writing: Future) -> BaseException | None:
    """Wait for `_write_files`; its failure (to raise once the model's outcome is known), or None."""
    try:
        writing.result()
    except BaseException as exc:
        return exc
    return None


def _delete_files(rows: list[Prediction]) -> None:
    for row in rows:
        if row.image:
            row.image.delete(save=False)
        if row.thumbnail:
            row.thumbnail.delete(save=False)


def _insert(predictions: list[Prediction]) -> None:
    """The rows of one request with one commit; their ids come back for the API's answer."""
    if len(predictions) == 1:
        predictions[0].save()  # a single autocommit insert: no transaction to open and close
    elif connection.features.can_return_rows_from_bulk_insert:
        Prediction.objects.bulk_create(predictions)  # one statement in one transaction; ids by RETURNING
    else:  # pragma: no cover - a database that cannot return the ids of a bulk insert
        with transaction.atomic():
            for prediction in predictions:
                prediction.save()


def _prediction(user, model: catalog.ModelChoice, prepared: _Prepared) -> Prediction:
    """The row of one classified file, not saved yet; its guesses and time come after the model ran."""
    return Prediction(
        user=user,
        model_key=model.key,
        model_name=model.name,
        original_name=prepared.item.filename,
        image_format=prepared.format,
        width=prepared.width,
        height=prepared.height,
    )


# How browsers, curl and Python's requests write a file name into multipart form data (the HTML
# standard's rule): `"` becomes %22, line breaks %0D and %0A. Django hands the name over as sent.
_FORM_DATA_ESCAPES = {"%22": '"', "%0D": " ", "%0A": " ", "%0d": " ", "%0a": " "}


def _display_name(name: str | None) -> str:
    """The file's name as the user saw it: no path a client sent along, no form-data escapes."""
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    for escaped, character in _FORM_DATA_ESCAPES.items():
        name = name.replace(escaped, character)
    return name.strip()[:255] or "unnamed file"
