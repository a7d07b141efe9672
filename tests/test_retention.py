"""Classified images are not kept forever: a retention period, and a switch to keep only thumbnails."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from classifier import tasks
from classifier.models import Prediction
from tests.helpers import image_bytes
from tests.test_history_views import make_prediction


def aged(prediction: Prediction, days: float) -> Prediction:
    Prediction.objects.filter(pk=prediction.pk).update(created_at=timezone.now() - timedelta(days=days))
    return prediction


def files_of(prediction: Prediction) -> list[Path]:
    return [Path(prediction.image.path), Path(prediction.thumbnail.path)]


def test_by_default_every_prediction_is_kept(bob, settings):
    old = aged(make_prediction(bob), days=3650)
    assert tasks.delete_expired_predictions() == 0
    assert Prediction.objects.filter(pk=old.pk).exists()
    assert all(p.exists() for p in files_of(old))


def test_predictions_older_than_the_retention_go_with_their_files(bob, settings, django_capture_on_commit_callbacks):
    settings.PREDICTION_RETENTION_DAYS = 30
    old = aged(make_prediction(bob, "old.jpg"), days=31)
    recent = aged(make_prediction(bob, "recent.jpg"), days=29)
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.delete_expired_predictions() == 1
    assert list(Prediction.objects.values_list("original_name", flat=True)) == ["recent.jpg"]
    assert not any(p.exists() for p in files_of(old))
    assert all(p.exists() for p in files_of(recent))


def test_expiry_works_in_batches(bob, settings, monkeypatch, django_capture_on_commit_callbacks):
    settings.PREDICTION_RETENTION_DAYS = 1
    monkeypatch.setattr(tasks, "RETENTION_BATCH", 2)
    for i in range(5):
        aged(make_prediction(bob, f"p{i}.jpg"), days=2)
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.delete_expired_predictions() == 5
    assert not Prediction.objects.exists()


def test_the_retention_task_runs_daily():
    task = tasks.expire_predictions.task_class()
    day = [datetime(2025, 3, 1, hour, minute) for hour in range(24) for minute in range(60)]
    assert sum(task.validate_datetime(moment) for moment in day) == 1


def test_without_keeping_images_the_prediction_keeps_only_its_thumbnail(bob_client, bob, fast_model, settings):
    settings.KEEP_CLASSIFIED_IMAGES = False
    response = bob_client.post("/", {"images": [SimpleUploadedFile("cat.jpg", image_bytes(size=(300, 200)))]})
    assert response.status_code == 200
    prediction = Prediction.objects.get()
    assert not prediction.image
    assert Path(prediction.thumbnail.path).is_file()
    stored = [p for p in Path(settings.MEDIA_ROOT).rglob("*") if p.is_file()]
    assert stored == [Path(prediction.thumbnail.path)]
    # History still shows it, with its thumbnail.
    assert "cat.jpg" in bob_client.get("/history/").text
    assert bob_client.get(f"/predictions/{prediction.pk}/thumbnail/").status_code == 200


def test_images_are_kept_by_default(bob_client, fast_model, settings):
    bob_client.post("/", {"images": [SimpleUploadedFile("cat.jpg", image_bytes())]})
    prediction = Prediction.objects.get()
    assert Path(prediction.image.path).is_file() and Path(prediction.thumbnail.path).is_file()
