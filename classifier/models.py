"""Rows of the inference app: stored predictions and API tokens."""

from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.db import models, transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver
from django.utils import timezone

from webapp.background import Job, JobStatus


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
        """The active user a token belongs to, or None."""
        token = cls.objects.select_related("user").filter(key_hash=cls.hash(key)).first()
        if token is None or not token.user.is_active:
            return None
        cls.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
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
