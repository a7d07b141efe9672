"""A full disk answers 507 with a sentence (HTML page or JSON), never a 500; predictions check free space first."""

from __future__ import annotations

import errno
import shutil
from collections import namedtuple
from pathlib import Path

import pytest
from django.contrib.sessions.middleware import SessionMiddleware
from django.core.files.storage import FileSystemStorage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.handlers.exception import convert_exception_to_response
from django.db import OperationalError, connection
from django.http import HttpResponse
from django.test import Client, RequestFactory

from classifier.models import ApiToken, Prediction
from tests.helpers import image_bytes
from webapp import diskspace
from webapp.diskspace import DiskFull, DiskFullMiddleware, ensure_free_space, is_disk_full_error

MIDDLEWARE = "webapp.diskspace.DiskFullMiddleware"
MB = 1024 * 1024
Usage = namedtuple("Usage", "total used free")


def test_the_disk_middleware_guards_the_session_middleware(settings):
    """Outside the session middleware, so a full disk while a session is saved is caught too."""
    order = list(settings.MIDDLEWARE)
    assert order.index(MIDDLEWARE) < order.index("django.contrib.sessions.middleware.SessionMiddleware")


@pytest.fixture
def disk_free(monkeypatch):
    """Pretend the data disk has `n` bytes free (shutil.disk_usage is what ensure_free_space reads)."""

    def set_free(n: int) -> None:
        monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 10**12 - n, n))

    return set_free


@pytest.fixture
def no_space_left(monkeypatch):
    """Every file write through Django's storage fails the way a full disk makes it fail."""

    def full(self, name, content):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(FileSystemStorage, "_save", full)


def lenient_client() -> Client:
    """A client that reports a 500 as a response instead of re-raising the view's exception."""
    return Client(raise_request_exception=False)


# --- ensure_free_space ----------------------------------------------------------------------


def test_enough_space_passes(tmp_path, disk_free, settings):
    settings.MIN_FREE_DISK_MB = 500
    disk_free(600 * MB)
    ensure_free_space(tmp_path, 50 * MB)


def test_less_than_needed_plus_reserve_raises_disk_full_with_a_sentence(tmp_path, disk_free, settings):
    settings.MIN_FREE_DISK_MB = 500
    disk_free(520 * MB)
    with pytest.raises(DiskFull) as caught:
        ensure_free_space(tmp_path, 50 * MB)
    message = str(caught.value)
    assert str(tmp_path) in message and "520 MiB free, 550 MiB needed" in message
    assert "500 MiB kept free for the database, sessions and logs" in message
    assert "An administrator can free space" in message and message.endswith(".")
    assert "MIN_FREE_DISK_MB" not in message  # setting names belong in the administrator's docs


def test_a_folder_not_created_yet_is_measured_on_its_nearest_existing_parent(tmp_path, monkeypatch, settings):
    settings.MIN_FREE_DISK_MB = 0
    seen = []
    monkeypatch.setattr(shutil, "disk_usage", lambda path: seen.append(Path(path)) or Usage(1, 0, 10**9))
    ensure_free_space(tmp_path / "media" / "predictions" / "2025", 1)
    assert seen == [tmp_path]


def test_disk_full_errors_are_recognised_and_others_are_not():
    assert is_disk_full_error(DiskFull("full"))
    assert is_disk_full_error(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full_error(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert is_disk_full_error(OperationalError("database or disk is full"))
    wrapped = OperationalError("could not write")
    wrapped.__cause__ = OSError(errno.ENOSPC, "No space left on device")
    assert is_disk_full_error(wrapped)
    assert not is_disk_full_error(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full_error(OperationalError("database is locked"))
    assert not is_disk_full_error(ValueError("no"))


# --- Classify and the API -------------------------------------------------------------------


def test_classify_on_a_nearly_full_disk_answers_507_and_stores_nothing(bob, fast_model, disk_free, settings):
    settings.MIN_FREE_DISK_MB = 500
    disk_free(100 * MB)
    client = lenient_client()
    client.force_login(bob)
    response = client.post("/", {"images": [SimpleUploadedFile("a.jpg", image_bytes())]})
    assert response.status_code == 507
    assert "The server&#x27;s disk is full" in response.text or "The server's disk is full" in response.text
    assert "<html" in response.text
    assert Prediction.objects.count() == 0
    assert not list(Path(settings.MEDIA_ROOT).rglob("*.*"))


def test_a_write_that_hits_a_full_disk_answers_507_not_500(bob, fast_model, no_space_left):
    client = lenient_client()
    client.force_login(bob)
    response = client.post("/", {"images": [SimpleUploadedFile("a.jpg", image_bytes())]}, HTTP_HX_REQUEST="true")
    assert response.status_code == 507
    assert "disk is full" in response.text


def test_the_api_answers_a_full_disk_with_json_507(bob, fast_model, disk_free, settings):
    settings.MIN_FREE_DISK_MB = 500
    disk_free(10 * MB)
    _, key = ApiToken.issue(bob, "script")
    response = lenient_client().post(
        "/api/v1/predict", {"images": [SimpleUploadedFile("a.jpg", image_bytes())]}, HTTP_AUTHORIZATION=f"Bearer {key}"
    )
    assert response.status_code == 507
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"].startswith("The server's disk is full")


def test_a_disk_that_fills_half_way_through_a_request_leaves_nothing_behind(bob, fast_model, monkeypatch, settings):
    """The files already written for the request go too, and no row is kept: all of it or none."""
    real_save = FileSystemStorage._save
    saved = []

    def fills_up(self, name, content):
        if len(saved) == 3:  # the original and the thumbnail of the first image fit, not the second's
            raise OSError(errno.ENOSPC, "No space left on device")
        saved.append(name)
        return real_save(self, name, content)

    monkeypatch.setattr(FileSystemStorage, "_save", fills_up)
    _, key = ApiToken.issue(bob, "script")
    files = [SimpleUploadedFile(f"{i}.jpg", image_bytes(color=(i * 60, 90, 40))) for i in range(3)]
    response = lenient_client().post("/api/v1/predict", {"images": files}, HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 507
    assert len(saved) == 3
    assert Prediction.objects.count() == 0
    assert not list(Path(settings.MEDIA_ROOT).rglob("*.*"))


@pytest.mark.django_db(transaction=True)  # as in production: no test transaction around the request
def test_a_database_full_while_storing_the_rows_leaves_no_files(bob, fast_model, settings):
    def database_full(execute, sql, params, many, context):
        if sql.startswith('INSERT INTO "classifier_prediction"'):
            raise OperationalError("database or disk is full")
        return execute(sql, params, many, context)

    client = lenient_client()
    client.force_login(bob)
    files = [SimpleUploadedFile(f"{i}.jpg", image_bytes(color=(i * 60, 90, 40))) for i in range(2)]
    with connection.execute_wrapper(database_full):
        response = client.post("/", {"images": files})
    assert response.status_code == 507
    assert Prediction.objects.count() == 0
    assert not list(Path(settings.MEDIA_ROOT).rglob("*.*"))


def test_other_os_errors_stay_500(bob, fast_model, monkeypatch):
    def denied(self, name, content):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(FileSystemStorage, "_save", denied)
    client = lenient_client()
    client.force_login(bob)
    response = client.post("/", {"images": [SimpleUploadedFile("a.jpg", image_bytes())]})
    assert response.status_code == 500


# --- Login: the session write ---------------------------------------------------------------


def test_login_on_a_full_database_disk_answers_507(bob, monkeypatch):
    from django.contrib.sessions.backends.db import SessionStore

    def full(self, must_create=False):
        raise OperationalError("database or disk is full")

    monkeypatch.setattr(SessionStore, "save", full)
    response = lenient_client().post("/accounts/login/", {"username": "bob", "password": "bob-password"})
    assert response.status_code == 507
    assert "disk is full" in response.text


def test_a_session_write_failing_after_the_view_answers_507(db, monkeypatch):
    """SessionMiddleware saves a changed session after the view returned: that write is guarded too."""
    from django.contrib.sessions.backends.db import SessionStore

    def full(self, must_create=False):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(SessionStore, "save", full)

    def view(request):
        request.session["seen"] = True
        return HttpResponse("ok")

    # The chain Django builds: each layer converts its exceptions into responses (a 500).
    chain = DiskFullMiddleware(convert_exception_to_response(SessionMiddleware(convert_exception_to_response(view))))
    request = RequestFactory().get("/datasets/")
    response = chain(request)
    assert response.status_code == 507
    assert b"disk is full" in response.content


def test_the_page_says_what_to_do(rf):
    response = diskspace.disk_full_response(rf.get("/history/"))
    assert response.status_code == 507
    assert b"Tell your administrator" in response.content
    api = diskspace.disk_full_response(rf.get("/api/v1/predict"))
    assert api.status_code == 507 and api["Content-Type"] == "application/json"


def test_negative_disk_settings_stop_the_start(settings):
    from webapp.checks import check_disk_settings

    settings.MIN_FREE_DISK_MB = -1
    settings.PREDICTION_RETENTION_DAYS = -30
    assert [e.msg for e in check_disk_settings(None)] == [
        "MIN_FREE_DISK_MB cannot be negative.",
        "PREDICTION_RETENTION_DAYS cannot be negative.",
    ]


# --- The dataset and training paths check before they write --------------------------------------
@pytest.mark.django_db
def test_a_dataset_upload_on_a_full_disk_is_refused_with_the_disk_message(alice, disk_free, settings):
    settings.MIN_FREE_DISK_MB = 500
    from training.models import Dataset

    dataset = Dataset.objects.create(name="Birds", created_by=alice)
    client = lenient_client()
    client.force_login(alice)
    disk_free(10 * MB)  # less than the reserve
    files = [SimpleUploadedFile("robin.jpg", image_bytes("JPEG"), content_type="image/jpeg")]
    response = client.post(f"/datasets/{dataset.pk}/upload/", {"new_label": "robins", "images": files})
    assert response.status_code == 507
    assert "disk is full, so TransferLab cannot save anything right now" in response.text
    assert not dataset.images.exists()


@pytest.mark.django_db
def test_an_import_that_fills_the_disk_is_undone_with_a_sentence(alice, disk_free, settings):
    settings.MIN_FREE_DISK_MB = 500
    from tests.dataset_helpers import image_zip
    from training import imports
    from training.models import Dataset, ImportJob

    dataset = Dataset.objects.create(name="Birds", created_by=alice)
    archive = SimpleUploadedFile("birds.zip", image_zip({"robins": 3}), content_type="application/zip")
    job = imports.start_import(dataset, archive, alice)
    disk_free(10 * MB)  # the disk fills up after the zip was kept
    imports.run_import_job(job.pk)
    job.refresh_from_db()
    assert job.status == ImportJob.Status.FAILED
    assert job.message.startswith("The server's disk filled up during the import, so it was undone")
    assert not dataset.images.exists()


@pytest.mark.django_db
def test_a_training_job_on_a_full_disk_fails_with_a_sentence(alice, disk_free, install_weights, monkeypatch, settings):
    settings.MIN_FREE_DISK_MB = 500
    from tests.training_helpers import TRAIN_BASE, colour_dataset
    from training import jobs, tasks, trainer
    from training.models import TrainingJob

    install_weights(TRAIN_BASE, include_top=False)
    monkeypatch.setattr(tasks, "train", lambda job_id: None)
    job = jobs.start_training(colour_dataset(alice, per_label=6), TRAIN_BASE, trainer.TrainConfig(epochs=1), alice)
    disk_free(10 * MB)
    jobs.run_training_job(job.pk)
    job.refresh_from_db()
    assert job.status == TrainingJob.Status.FAILED
    assert job.message.startswith("The server's disk is too full to keep a trained model.")
