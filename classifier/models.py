"""Rows of the inference app: stored predictions, API tokens, weights downloads, int8 calibrations."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import models, transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver
from django.utils import timezone

from webapp.background import Job, JobStatus

# How stale an API token's `last_used_at` may be: written at most once a minute per token.
LAST_USED_PRECISION = timedelta(minutes=1)


class Prediction(models.Model):
    """One image classified by one model, as the user saw it (History and the API both write it)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="predictions")
    model_key = models.CharField("model", max_length=100, help_text="Registry key of the model used.")
    model_name = models.CharField(max_length=200, help_text="The model's name when the prediction was made.")
    image = models.FileField(upload_to="predictions/%Y/%m/", max_length=255, help_text="The uploaded file, as sent.")
    thumbnail = models.FileField(upload_to="thumbnails/%Y/%m/", max_length=255)
    original_name = models.CharField(max_length=255, help_text="The file name on the user's computer.")
    image_format = models.CharField(max_length=10)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    top = models.JSONField(help_text='Best guesses, best first: [{"label", "probability", "index"}, ...].')
    inference_ms = models.FloatField(help_text="Engine time for this image: its request's batch time / images.")
    batch_size = models.PositiveSmallIntegerField(default=1, help_text="Images classified in the same batch.")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # History lists a user's own predictions, newest first.
            models.Index(fields=["user", "-created_at"], name="prediction_user_recent"),
            # The Models page reads measured latencies per model.
            models.Index(fields=["model_key", "-created_at"], name="prediction_model_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.original_name} ({self.model_name})"

    @property
    def best(self) -> dict | None:
        return self.top[0] if self.top else None


@receiver(post_delete, sender=Prediction)
def _delete_prediction_files(sender, instance: Prediction, **kwargs) -> None:
    """The files go with the row, also for queryset and admin bulk deletes, once the delete commits."""
    files = [f for f in (instance.image, instance.thumbnail) if f]

    def remove() -> None:
        for f in files:
            f.storage.delete(f.name)

    transaction.on_commit(remove)


class ApiToken(models.Model):
    """A personal token for the JSON API; only a hash is stored, the token is shown once."""

    PREFIX_LENGTH = 8

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, help_text="What the token is for, e.g. 'nightly sorting script'.")
    prefix = models.CharField(max_length=PREFIX_LENGTH, help_text="First characters, to recognise the token.")
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @staticmethod
    def hash(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    @classmethod
    def issue(cls, user, name: str) -> tuple[ApiToken, str]:
        """Create a token and return it with its clear text, which is never stored."""
        key = "tl_" + secrets.token_urlsafe(30)
        token = cls.objects.create(user=user, name=name, prefix=key[: cls.PREFIX_LENGTH], key_hash=cls.hash(key))
        return token, key

    @classmethod
    def authenticate(cls, key: str):
        """The active user a token belongs to, or None.

        One indexed read per request; `last_used_at` is written only when it is a minute old, so a
        script's steady stream of calls does not take SQLite's one write lock on every request
        (the tokens page shows it as "N minutes ago" anyway).
        """
        try:  # get(), not first(): the hash is unique, and an ORDER BY would only cost time
            token = cls.objects.select_related("user").get(key_hash=cls.hash(key))
        except cls.DoesNotExist:
            return None
        if not token.user.is_active:
            return None
        now = timezone.now()
        if token.last_used_at is None or now - token.last_used_at >= LAST_USED_PRECISION:
            cls.objects.filter(pk=token.pk).update(last_used_at=now)
        return token.user


class WeightsDownload(Job):
    """An administrator's request to fetch one published weights file; the worker records how it went.

    The Models page reads the latest row per model to show "downloading" or the failure message,
    so an offline server says why a download did not happen instead of spinning forever.
    """

    INTERRUPTED_MESSAGE = "The background worker stopped during this download. Start the download again."
    STATUS_WORDS = {JobStatus.RUNNING: "Downloading", JobStatus.SUCCEEDED: "Installed"}

    model_key = models.CharField("model", max_length=100, help_text="Registry key of the model.")
    include_top = models.BooleanField(default=True, help_text="The file with the ImageNet head (else without).")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "weights download"
        indexes = [
            # The Models page reads the latest attempt per model.
            models.Index(fields=["model_key", "-created_at"], name="weightsdownload_model_recent"),
        ]
        constraints = [
            # installs.request_download relies on this: a second click while one is queued or running
            # finds the first one instead of fetching the same file twice.
            models.UniqueConstraint(
                fields=["model_key", "include_top"],
                condition=models.Q(status__in=["queued", "running"]),
                name="weightsdownload_one_active",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model_key} ({'with' if self.include_top else 'without'} head): {self.status_text}"


class Int8Calibration(Job):
    """An administrator's int8 conversion of one model, calibrated on real images, and whether it serves.

    One row per attempt; the latest row of a model is what its page shows. Off by default: a
    finished conversion serves requests only once someone switches it on (`enabled`), after
    seeing its measured top-1 agreement with float32, and only for the weights it was made from
    (`weights_hash`): new weights need a new calibration. See `classifier.int8`.
    """

    INTERRUPTED_MESSAGE = "The background worker stopped during the int8 conversion. Start it again."
    STATUS_WORDS = {JobStatus.QUEUED: "Queued", JobStatus.RUNNING: "Converting", JobStatus.SUCCEEDED: "Ready"}
    PHASES = {"reading": "Reading the calibration images", "converting": "Converting and measuring"}

    class Source(models.TextChoices):
        TRAINING = "training", "Training images"
        DATASET = "dataset", "Dataset"
        UPLOAD = "upload", "Uploaded zip"

    model_key = models.CharField("model", max_length=100, help_text="Catalog key of the model.")
    weights_hash = models.CharField(
        max_length=64,
        blank=True,
        help_text="SHA-256 of the weights file it was made from; other weights need a new one.",
    )
    source_kind = models.CharField("calibration source", max_length=10, choices=Source.choices)
    source = models.CharField(max_length=300, help_text="What it is calibrated on, in words.")
    dataset_id = models.PositiveIntegerField(null=True, blank=True, help_text="The dataset calibrated on, if any.")
    archive = models.CharField(max_length=500, blank=True, help_text="The uploaded zip while it waits for the worker.")
    phase = models.CharField(max_length=20, blank=True)
    images = models.PositiveIntegerField(null=True, blank=True, help_text="Images read from the source.")
    calibration_images = models.PositiveIntegerField(null=True, blank=True)
    checked_images = models.PositiveIntegerField(null=True, blank=True, help_text="Images agreement was measured on.")
    agreeing_images = models.PositiveIntegerField(null=True, blank=True, help_text="Of those, same top-1 as float32.")
    held_out = models.BooleanField(default=True, help_text="Agreement measured on images calibration never saw.")
    reference = models.CharField(max_length=40, blank=True, help_text="The float32 model it was compared with.")
    integer_only = models.BooleanField(default=True)
    enabled = models.BooleanField(default=False, help_text="Switched on: requests for the model run on this int8 file.")
    switched_at = models.DateTimeField(null=True, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "int8 calibration"
        indexes = [
            # A model's page reads its latest attempt; the engine looks up what serves a weights file.
            models.Index(fields=["model_key", "-created_at"], name="int8_model_recent"),
            models.Index(fields=["weights_hash", "enabled"], name="int8_serving"),
        ]
        constraints = [
            # int8.request_calibration relies on it: one conversion per model at a time.
            models.UniqueConstraint(
                fields=["model_key"],
                condition=models.Q(status__in=["queued", "running"]),
                name="int8calibration_one_active",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model_key} int8 ({self.source}): {self.status_text}"

    @classmethod
    def serving(cls, weights_hash: str) -> Int8Calibration | None:
        """The switched-on, finished conversion of these weights, if any."""
        rows = cls.objects.filter(weights_hash=weights_hash, enabled=True, status=JobStatus.SUCCEEDED)
        return rows.order_by("-created_at", "-id").first()

    @property
    def top1_agreement(self) -> float | None:
        if not self.checked_images or self.agreeing_images is None:
            return None
        return self.agreeing_images / self.checked_images

    @property
    def agreement_text(self) -> str:
        from classifier.lite import agreement_text

        return agreement_text(self.agreeing_images or 0, self.checked_images or 0)

    @property
    def changed_images(self) -> int:
        """Images whose top answer int8 changed."""
        return (self.checked_images or 0) - (self.agreeing_images or 0)

    @property
    def source_text(self) -> str:
        """The source with how many images it gave: dataset “Pets” (180 images)."""
        if self.images:
            return f"{self.source} ({self.images} image{'s' if self.images != 1 else ''})"
        return self.source

    @property
    def phase_text(self) -> str:
        return self.PHASES.get(self.phase, "Waiting for the worker" if self.status == JobStatus.QUEUED else "Starting")

    def release_files(self) -> None:
        """An uploaded zip that will never be read goes."""
        if self.archive:
            Path(self.archive).unlink(missing_ok=True)
