"""Int8 for one model: an administrator's calibration, the worker's conversion, the switch.

Why it works this way:
- Int8 is about twice as fast as float32 on CPU but rounds every activation, so some answers
  change. It is never automatic: an administrator calibrates it on real images (a trained
  model's training split; for a pretrained model a dataset or an uploaded zip of pictures),
  sees its top-1 agreement with float32 measured on images calibration did not see, and then
  switches it on, or back. Off by default.
- The conversion runs in the worker (`tasks.calibrate_int8`), never in a request. Its state is a
  row of the job machine (`Int8Calibration`), so a worker that dies mid-conversion is noticed.
- The int8 file is made from one weights file (`<hash>-tf<version>-int8.tflite`): when the weights
  change, the model serves float32 again and its page asks for a new calibration.
- Calibrating again switches the model back to float32 first: the new conversion replaces the
  int8 file, and nobody should be served a file they did not see measured.
"""

from __future__ import annotations

import logging
import traceback
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.utils import timezone

from classifier import catalog, imaging, inference, installs, lite, runtimes
from classifier.models import Int8Calibration
from webapp import atomic, background
from webapp.diskspace import DiskFull, ensure_free_space
from webapp.sizes import human_size

log = logging.getLogger(__name__)

# Images read from a source at most (spread over it): enough to calibrate and to measure on.
MAX_IMAGES = 400
# ...and never more than this many bytes of decoded pixels (EfficientNet-B7 takes 600 px).
MAX_PIXEL_BYTES = 256 * 1024 * 1024
# Fewer real images than this say too little about the activations' ranges.
MIN_IMAGES = 10
# Below this agreement the card warns before anyone switches int8 on.
LOW_AGREEMENT = 0.95
ZIP_UNSAFE = "The zip contains an unsafe path ({name!r}) that points outside it. Create it again from its folder."


class Int8Refused(Exception):
    """The request cannot be done in this state; str() says why, for the administrator."""


def image_limit(size: int) -> int:
    """Images to read for a model of this input size."""
    return int(max(MIN_IMAGES, min(MAX_IMAGES, MAX_PIXEL_BYTES // (size * size * 3))))


def calibration_dir() -> Path:
    """Where uploaded calibration zips wait for the worker (removed once read)."""
    return Path(settings.DATA_DIR) / "calibration"


def latest(key: str) -> Int8Calibration | None:
    return Int8Calibration.objects.filter(model_key=key).order_by("-created_at", "-id").first()


# --- What a model's page shows ---------------------------------------------------------------
@dataclass
class Card:
    """The "Faster int8 model" card of one model: its state, and what this user may do about it."""

    choice: catalog.ModelChoice
    runtime: runtimes.Runtime
    row: Int8Calibration | None
    state: str  # none, active, failed, ready, on, stale
    stale_reason: str
    can_switch: bool
    lite_on: bool  # LiteRT is turned on on this server (int8 needs it)
    urls: dict[str, str]
    form: object | None = None  # the calibration form (pretrained models; trained ones use their training split)
    trained_source: str = ""  # for trained models: what they calibrate on, in words
    poll: bool = True  # the card reloads itself while a conversion is queued or running

    @property
    def low_agreement(self) -> bool:
        agreement = self.row.top1_agreement if self.row is not None else None
        return agreement is not None and agreement < LOW_AGREEMENT

    @property
    def active(self) -> bool:
        return self.state == "active"


def card(choice: catalog.ModelChoice, *, can_switch: bool, urls: dict[str, str], **extra) -> Card:
    """The card for a model, from its latest calibration and its weights file as they are now."""
    row = latest(choice.key)
    state, stale_reason = _state(row, choice)
    return Card(
        choice=choice,
        runtime=runtimes.runtime_for(choice.weights_path),
        row=row,
        state=state,
        stale_reason=stale_reason,
        can_switch=can_switch,
        lite_on=runtimes.enabled(),
        urls=urls,
        **extra,
    )


def _state(row: Int8Calibration | None, choice: catalog.ModelChoice) -> tuple[str, str]:
    if row is None:
        return "none", ""
    if row.is_active:
        return "active", ""
    if row.status != Int8Calibration.Status.SUCCEEDED:
        return "failed", ""
    path = choice.weights_path
    if not choice.available or path is None:
        return "stale", "The model's weights file is not installed any more."
    try:
        current, target = runtimes.weights_hash(path), runtimes.int8_path(path)
    except OSError:
        return "stale", "The model's weights file cannot be read."
    if row.weights_hash != current:
        return "stale", "The weights were replaced after this int8 model was made: calibrate it again for the new ones."
    verdict = lite.read_int8_verdict(target)
    if not target.is_file() or verdict is None or not verdict.ok:
        return "stale", (
            "The int8 file is gone (TensorFlow was upgraded, or the file was removed): calibrate again to make a "
            "new one."
        )
    return ("on" if row.enabled else "ready"), ""


# --- Requests from the pages -----------------------------------------------------------------
def request_calibration(
    choice: catalog.ModelChoice,
    *,
    kind: str,
    source: str,
    user=None,
    dataset_id: int | None = None,
    upload: UploadedFile | None = None,
) -> Int8Calibration:
    """Queue an int8 conversion of `choice`; the model goes back to float32 until the new one is switched on.

    Raises Int8Refused when it cannot start (LiteRT off, model not installed, one already running,
    a full disk). The uploaded zip is kept for the worker, which removes it once read.
    """
    from classifier import tasks

    if not runtimes.enabled():
        raise Int8Refused("LiteRT is turned off on this server (INFERENCE_RUNTIME=tensorflow), so int8 cannot be used.")
    if not choice.available or choice.weights_path is None:
        raise Int8Refused(f"{choice.name} is not installed: install its weights first.")
    archive = ""
    if upload is not None:
        archive = str(_keep_upload(upload))
    try:
        with transaction.atomic():
            row = Int8Calibration.objects.create(
                model_key=choice.key,
                weights_hash=runtimes.weights_hash(choice.weights_path),
                source_kind=kind,
                source=source,
                dataset_id=dataset_id,
                archive=archive,
                requested_by=user if user is not None and user.is_authenticated else None,
            )
            Int8Calibration.objects.filter(model_key=choice.key, enabled=True).update(enabled=False)
            transaction.on_commit(lambda: tasks.calibrate_int8(row.pk))
    except IntegrityError:  # int8calibration_one_active
        if archive:
            Path(archive).unlink(missing_ok=True)
        raise Int8Refused(
            f"An int8 conversion of {choice.name} is already queued or running; wait for it to finish."
        ) from None
    except BaseException:
        if archive:
            Path(archive).unlink(missing_ok=True)
        raise
    installs.forget_warm(choice.key)
    return row


def _keep_upload(upload: UploadedFile) -> Path:
    folder = calibration_dir()
    try:
        ensure_free_space(folder, upload.size or 0)
    except DiskFull:
        raise Int8Refused(
            "The server's disk is too full to keep the zip for the worker. Free some space, or choose a dataset "
            "instead."
        ) from None
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{uuid.uuid4().hex}.zip"
    upload.seek(0)
    with atomic.open_replacing(path) as out:  # the worker (maybe on another machine) never reads half a zip
        for chunk in upload.chunks():
            out.write(chunk)
    return path


def switch(choice: catalog.ModelChoice, to: str) -> str:
    """Switch a model to its ready int8 file (`to="int8"`) or back to float32; the message for the page.

    Raises Int8Refused when there is no ready int8 file for its current weights.
    """
    if to not in (runtimes.INT8, runtimes.FLOAT32):
        raise Int8Refused("Say which precision to switch to: int8 or float32.")
    if to == runtimes.FLOAT32:
        Int8Calibration.objects.filter(model_key=choice.key, enabled=True).update(
            enabled=False, switched_at=timezone.now()
        )
        installs.forget_warm(choice.key)
        return f"{choice.name} runs on float32 again."
    if not runtimes.enabled():
        raise Int8Refused("LiteRT is turned off on this server (INFERENCE_RUNTIME=tensorflow), so int8 cannot be used.")
    row = latest(choice.key)
    state, reason = _state(row, choice)
    if state == "on":
        return f"{choice.name} already runs on int8."
    if state != "ready":
        raise Int8Refused(reason or f"{choice.name} has no finished int8 conversion to switch to: calibrate it first.")
    with transaction.atomic():
        Int8Calibration.objects.filter(model_key=choice.key, enabled=True).update(enabled=False)
        Int8Calibration.objects.filter(pk=row.pk).update(enabled=True, switched_at=timezone.now())
    installs.forget_warm(choice.key)
    return (
        f"{choice.name} now runs on int8. Its top answer agreed with float32 on {row.agreeing_images} of "
        f"{row.checked_images} images ({row.top1_agreement:.1%})."
    )


def cancel(choice: catalog.ModelChoice) -> str:
    """Stop a queued conversion at once, a running one at its next step; the message for the page."""
    row = latest(choice.key)
    if row is None or not row.is_active:
        return "No int8 conversion is running for this model."
    if row.request_cancel("Cancelled before it started; the model stays on float32."):
        return "The int8 conversion was cancelled; the model stays on float32."
    return "The int8 conversion stops after its current step; the model stays on float32."


# --- Uploaded zips ---------------------------------------------------------------------------
def zip_image_members(zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The pictures of a calibration zip, or Int8Refused for an archive that is unsafe or too large.

    Members are only ever read into memory, never extracted by name; still, a zip with paths that
    climb out, links, encryption or more than the import limits is refused as a whole.
    """
    infos = zf.infolist()
    if len(infos) > settings.IMPORT_MAX_MEMBERS:
        raise Int8Refused(f"The zip holds {len(infos):,} files; the limit is {settings.IMPORT_MAX_MEMBERS:,}.")
    total = sum(info.file_size for info in infos)
    if total > settings.IMPORT_MAX_TOTAL_BYTES:
        raise Int8Refused(
            f"Uncompressed, the zip would be {human_size(total)}; the limit is "
            f"{human_size(settings.IMPORT_MAX_TOTAL_BYTES)}. A few hundred pictures are enough."
        )
    pictures = []
    for info in infos:
        name = info.filename.replace("\\", "/")
        parts = name.split("/")
        if name.startswith("/") or ".." in parts or (len(name) > 1 and name[1] == ":"):
            raise Int8Refused(ZIP_UNSAFE.format(name=info.filename))
        if info.flag_bits & 0x1:
            raise Int8Refused("The zip is password-protected; create it again without a password.")
        if info.is_dir() or (info.external_attr >> 16) & 0o170000 == 0o120000:  # folders, symbolic links
            continue
        if parts[0] == "__MACOSX" or any(part.startswith(".") for part in parts):
            continue
        if PurePosixPath(name).suffix.lower() in imaging.SUPPORTED_EXTENSIONS:
            pictures.append(info)
    return pictures


def check_zip(upload: UploadedFile) -> int:
    """How many pictures an uploaded calibration zip holds; Int8Refused with the reason when it is unusable."""
    if (upload.size or 0) > settings.IMPORT_MAX_ZIP_BYTES:
        raise Int8Refused(
            f"The zip is {human_size(upload.size)}; the limit is {human_size(settings.IMPORT_MAX_ZIP_BYTES)}. "
            "A few hundred pictures are enough to calibrate."
        )
    try:
        upload.seek(0)
        with zipfile.ZipFile(upload) as zf:
            pictures = zip_image_members(zf)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, NotImplementedError):
        raise Int8Refused("This file is not a zip archive, or it is damaged. Create the zip again.") from None
    finally:
        upload.seek(0)
    if not pictures:
        raise Int8Refused(
            f"The zip holds no pictures ({imaging.SUPPORTED_DESCRIPTION}). Put a few hundred typical photos in it."
        )
    if len(pictures) < MIN_IMAGES:
        raise Int8Refused(
            f"The zip holds {len(pictures)} picture{'s' if len(pictures) != 1 else ''}; calibration needs at least "
            f"{MIN_IMAGES} (a few hundred typical photos are best)."
        )
    return len(pictures)


def zip_images(path: Path, size: int, limit: int) -> tuple[np.ndarray, int]:
    """Up to `limit` pictures of a calibration zip (spread over it) at model size, and how many were skipped."""
    try:
        with zipfile.ZipFile(path) as zf:
            pictures = zip_image_members(zf)
            if len(pictures) > limit:
                pictures = [pictures[i] for i in np.linspace(0, len(pictures) - 1, limit).round().astype(int)]
            images, skipped = [], 0
            for info in pictures:
                try:
                    with zf.open(info) as member:
                        data = member.read(settings.MAX_UPLOAD_BYTES + 1)  # the declared size is not trusted
                    decoded = imaging.decode(
                        data, max_bytes=settings.MAX_UPLOAD_BYTES, max_pixels=settings.MAX_IMAGE_PIXELS, draft_side=size
                    )
                    images.append(imaging.to_model_input(decoded.image, size))
                except (imaging.ImageError, zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError):
                    skipped += 1
    except FileNotFoundError:
        raise runtimes.CalibrationError("The uploaded zip is gone from the server; upload it again.") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, NotImplementedError):
        raise runtimes.CalibrationError("The uploaded zip cannot be read; create it again.") from None
    except Int8Refused as refusal:
        raise runtimes.CalibrationError(str(refusal)) from None
    empty = np.zeros((0, size, size, 3), dtype=np.uint8)
    return (np.stack(images) if images else empty), skipped


# --- The worker ------------------------------------------------------------------------------
def run_calibration(pk: int) -> Int8Calibration | None:
    """Claim a queued conversion, calibrate, convert, measure and record how it went. Never raises."""
    if not Int8Calibration.claim(pk):
        return None
    row = Int8Calibration.objects.get(pk=pk)
    progress = background.Progress(Int8Calibration, pk)
    try:
        with background.Heartbeat(Int8Calibration, pk):
            _calibrate(row, progress)
    except background.Cancelled:
        Int8Calibration.transition(
            pk, Int8Calibration.Status.CANCELLED, message="Cancelled; the model stays on float32."
        )
    except background.JobLost:
        log.info("int8 calibration %s is no longer this worker's", pk)
    except (runtimes.CalibrationError, catalog.ModelUnavailable, catalog.UnknownModel) as exc:
        Int8Calibration.transition(pk, Int8Calibration.Status.FAILED, message=str(exc))
    except Exception:
        log.exception("int8 calibration %s of %s failed", pk, row.model_key)
        Int8Calibration.transition(
            pk,
            Int8Calibration.Status.FAILED,
            message="The int8 conversion failed with an unexpected error (details in the admin). The model stays "
            "on float32.",
            detail=traceback.format_exc()[-20000:],
        )
    finally:
        row.release_files()
        Int8Calibration.objects.filter(pk=pk).update(archive="")
    row.refresh_from_db()
    return row


def _calibrate(row: Int8Calibration, progress: background.Progress) -> None:
    choice = catalog.find(row.model_key)
    choice.spec()  # ModelUnavailable with the reason when its files are gone
    path = choice.weights_path
    progress(force=True, phase="reading", weights_hash=runtimes.weights_hash(path))
    calibration = _calibration_images(row, choice.input_size)
    count = len(calibration.images)
    if count < MIN_IMAGES:
        raise runtimes.CalibrationError(
            f"Only {count} image{'s' if count != 1 else ''} could be read from {calibration.source}; int8 needs at "
            f"least {MIN_IMAGES} real images to calibrate on. The model stays on float32."
        )
    progress(force=True, phase="converting", images=count, source=calibration.source)
    inference.configure_tensorflow()
    model = choice.build()
    float32 = runtimes.float32_content(path)
    if float32:
        reference, reference_name = lite.LiteModel(float32, threads=2).run, "LiteRT float32"
    else:
        reference, reference_name = (lambda x: np.asarray(model(x, training=False))), "Keras float32"
    verdict = lite.convert_int8_and_measure(
        model, choice.preprocess, calibration.images, runtimes.int8_path(path), reference, reference_name
    )
    progress(force=True)  # a cancel asked for during the conversion wins
    if not verdict.ok:
        raise runtimes.CalibrationError(f"{verdict.reason} The model stays on float32.")
    measured = "images it was not calibrated on" if verdict.held_out else "the same images (too few to hold some out)"
    Int8Calibration.transition(
        row.pk,
        Int8Calibration.Status.SUCCEEDED,
        phase="",
        calibration_images=verdict.calibration_images,
        checked_images=verdict.checked,
        agreeing_images=verdict.agreeing,
        held_out=verdict.held_out,
        reference=verdict.reference,
        integer_only=verdict.integer_only,
        message=(
            f"Calibrated on {verdict.calibration_images} images of {calibration.source}. Its top answer agrees with "
            f"{verdict.reference} on {verdict.agreeing} of {verdict.checked} {measured} "
            f"({verdict.agreement_text}). Converted in {verdict.convert_seconds:.1f} s."
        ),
    )


def _calibration_images(row: Int8Calibration, size: int) -> runtimes.Calibration:
    limit = image_limit(size)
    kinds = Int8Calibration.Source
    if row.source_kind == kinds.UPLOAD:
        images, skipped = zip_images(Path(row.archive), size, limit)
        source = row.source + (f", {skipped} unreadable file{'s' if skipped != 1 else ''} skipped" if skipped else "")
        return runtimes.Calibration(images, source)
    for source in runtimes.calibration_sources():
        if row.source_kind == kinds.TRAINING:
            found = source.model_images(row.model_key, size, limit)
        else:
            found = source.dataset_images(row.dataset_id or 0, size, limit)
        if found is not None:
            return found
    if row.source_kind == kinds.TRAINING:
        raise runtimes.CalibrationError("The training images of this model cannot be found any more.")
    raise runtimes.CalibrationError("The dataset chosen for calibration does not exist any more.")


def datasets_for(user) -> list[tuple[int, str, int]]:
    """(id, name, image count) of every dataset `user` may calibrate a pretrained model with."""
    return [entry for source in runtimes.calibration_sources() for entry in source.datasets(user)]
