"""`manage.py check_data`: rows whose files are gone, files no row names; --fix cleans up."""

from __future__ import annotations

import os
import time
from io import StringIO
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command

from classifier import services
from classifier.models import Prediction
from tests.helpers import noise_image_bytes
from tests.test_backup import store_prediction
from tests.test_history_views import make_prediction
from training import storage, uploads
from training.models import Dataset, DatasetImage, ImportJob, TrainedModel, TrainingJob

pytestmark = pytest.mark.django_db(transaction=True)
HOUR = 3600


def check(*args: str) -> str:
    out = StringIO()
    call_command("check_data", *args, stdout=out)
    return out.getvalue()


def check_failing(*args: str) -> tuple[str, str]:
    out = StringIO()
    with pytest.raises(CommandError) as caught:
        call_command("check_data", *args, stdout=out)
    return out.getvalue(), str(caught.value)


def make_old(path: Path, hours: float = 2) -> Path:
    """Files younger than the grace period may belong to a request still running: age them."""
    then = time.time() - hours * HOUR
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.utime(p, (then, then))
    return path


def dataset_with_images(user, n: int = 2, name: str = "Pets", seed: int = 0) -> Dataset:
    dataset = Dataset.objects.create(name=name, created_by=user)
    files = [SimpleUploadedFile(f"img{i}.png", noise_image_bytes(seed + i)) for i in range(n)]
    uploads.add_uploads(dataset, "cats", files, user)
    return dataset


def trained_model(dataset: Dataset) -> TrainedModel:
    job = TrainingJob.objects.create(dataset=dataset, base_key="mobilenetv2", base_name="MobileNetV2",
                                     status=TrainingJob.Status.SUCCEEDED)  # fmt: skip
    model = TrainedModel.objects.create(job=job, dataset=dataset, name="m", base_key="mobilenetv2", input_size=96,
                                        labels=["cats"])  # fmt: skip
    model.path.parent.mkdir(parents=True)
    model.path.write_bytes(b"keras")
    export = job.folder / "exports" / "m-keras.zip"
    export.parent.mkdir()
    export.write_bytes(b"zip")
    job.exports = {"keras": {"format": "keras", "path": str(export), "ok": True}}
    job.save(update_fields=["exports"])
    return model


def test_a_consistent_data_folder_has_no_problems(bob, alice):
    make_prediction(bob)
    trained_model(dataset_with_images(alice))
    out = check()
    assert "No problems" in out


def test_a_prediction_whose_file_is_gone_is_reported_and_its_row_removed_on_request(bob):
    gone = make_prediction(bob, "gone.jpg")
    Path(gone.image.path).unlink()
    out, error = check_failing()
    assert f"classifier.Prediction {gone.pk}" in out and gone.image.name in out
    assert "1 problem" in error and "--delete-rows-without-files" in error

    check_failing("--fix")  # --fix alone never removes rows: the problem stays
    assert Prediction.objects.filter(pk=gone.pk).exists()
    out = check("--fix", "--delete-rows-without-files")
    assert not Prediction.objects.filter(pk=gone.pk).exists()
    assert not Path(gone.thumbnail.path).exists()  # its remaining file went with it
    assert "No problems" in check()


def test_a_prediction_stored_without_its_original_is_fine(bob, settings):
    prediction = make_prediction(bob)
    Path(prediction.image.path).unlink()
    Prediction.objects.filter(pk=prediction.pk).update(image="")
    assert "No problems" in check()


def test_files_left_by_a_web_worker_killed_mid_request_are_found_and_removed(bob, settings, monkeypatch):
    """The request wrote the upload and its thumbnail, then died before its row was saved."""

    def killed(self, *args, **kwargs):
        raise KeyboardInterrupt  # what a SIGKILL leaves: no clean-up code runs

    monkeypatch.setattr(Prediction, "save", killed)
    monkeypatch.setattr(services, "_delete_files", lambda rows: None)  # nor does the request's own clean-up
    with pytest.raises(KeyboardInterrupt):
        store_prediction(bob)
    monkeypatch.undo()
    left = sorted(p for p in Path(settings.MEDIA_ROOT).rglob("*") if p.is_file())
    assert len(left) == 2

    assert "No problems" in check()  # younger than the grace period: maybe a request still running
    for path in left:
        make_old(path)
    out, error = check_failing()
    assert all(str(p.relative_to(settings.DATA_DIR)) in out for p in left)
    assert "2 problems" in error and "--fix" in error
    out = check("--fix")
    assert not any(p.exists() for p in left)
    assert "Removed 2 files" in out
    assert "No problems" in check()


def test_a_grace_of_zero_reports_fresh_orphans_at_once(bob, settings):
    orphan = Path(settings.MEDIA_ROOT) / "predictions" / "2025" / "01" / "stray.jpg"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"x")
    out, _ = check_failing("--min-age-minutes", "0")
    assert "media/predictions/2025/01/stray.jpg" in out


def test_dataset_images_missing_files_and_stray_files(alice, settings):
    dataset = dataset_with_images(alice, n=3)
    first, second = DatasetImage.objects.order_by("id")[:2]
    first.thumbnail_path.unlink()
    stray = storage.image_path(dataset.folder, "ab" * 32, "PNG")
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"not in the database")
    make_old(stray)
    out, error = check_failing()
    assert f"training.DatasetImage {first.pk}" in out and "thumbs/" in out
    assert str(stray.relative_to(settings.DATA_DIR)) in out
    assert "2 problems" in error

    check("--fix", "--delete-rows-without-files")
    assert not stray.exists()
    assert not DatasetImage.objects.filter(pk=first.pk).exists()
    assert not first.path.exists()
    assert second.path.exists()
    assert "No problems" in check()


def test_files_of_an_import_still_running_are_left_alone(alice, settings):
    dataset = dataset_with_images(alice, n=1)
    job = ImportJob.objects.create(dataset=dataset, archive_name="a.zip", status=ImportJob.Status.RUNNING)
    journal = storage.Journal(dataset.folder, f"import-{job.pk}")
    store = storage.ImageStore(dataset.folder, max_bytes=10**7, max_pixels=10**7, journal=journal)
    written = store.save(noise_image_bytes(99))
    journal.close()
    path = storage.image_path(dataset.folder, written.sha256, written.format)
    make_old(dataset.folder)
    out = check("--fix")
    assert path.exists()
    assert "in use" in out


def test_a_dataset_folder_without_its_dataset_is_an_orphan(alice, settings):
    dataset = dataset_with_images(alice, n=1)
    folder, pk = dataset.folder, dataset.pk
    dataset.delete()
    # What a process killed between the delete's commit and the removal of its files leaves behind:
    (folder / "images" / "ab").mkdir(parents=True, exist_ok=True)
    (folder / "images" / "ab" / "x.png").write_bytes(b"x")
    make_old(folder)
    out, _ = check_failing()
    assert f"datasets/{pk}/" in out
    check("--fix")
    assert not folder.exists()


def test_trained_models_missing_files_and_orphan_job_folders(alice, settings):
    model = trained_model(dataset_with_images(alice, n=1))
    model.path.unlink()
    stray_job = Path(settings.DATA_DIR) / "models" / "999"
    stray_job.mkdir(parents=True)
    (stray_job / "model.keras").write_bytes(b"k")
    make_old(stray_job)
    out, error = check_failing()
    assert f"training.TrainedModel {model.pk}" in out and f"models/{model.job_id}/model.keras" in out
    assert "models/999/" in out
    assert "2 problems" in error

    check("--fix", "--delete-rows-without-files")
    assert not stray_job.exists()
    assert not TrainedModel.objects.filter(pk=model.pk).exists()
    assert TrainingJob.objects.filter(pk=model.job_id).exists()  # the job keeps its curves


def test_a_missing_export_is_reported_and_marked_unavailable(alice, settings):
    model = trained_model(dataset_with_images(alice, n=1))
    job = model.job
    Path(job.exports["keras"]["path"]).unlink()
    out, _ = check_failing()
    assert f"training.TrainingJob {job.pk}" in out and "export" in out
    check("--fix", "--delete-rows-without-files")
    job.refresh_from_db()
    assert job.exports["keras"]["ok"] is False and "missing" in job.exports["keras"]["message"]
    assert "No problems" in check()


def test_a_running_job_folder_is_never_touched(alice, settings):
    dataset = dataset_with_images(alice, n=1)
    job = TrainingJob.objects.create(dataset=dataset, base_key="mobilenetv2", base_name="MobileNetV2",
                                     status=TrainingJob.Status.RUNNING)  # fmt: skip
    job.folder.mkdir(parents=True)
    (job.folder / "partial.keras").write_bytes(b"k")
    make_old(job.folder)
    assert "No problems" in check("--fix")
    assert (job.folder / "partial.keras").exists()


def test_the_staging_folder_of_a_killed_backup_is_an_orphan_but_not_that_of_a_running_one(db, settings):
    import fcntl

    killed = Path(settings.DATA_DIR) / ".backup-killed" / "data" / "media"
    killed.mkdir(parents=True)
    (killed / "x.jpg").write_bytes(b"x")
    running = Path(settings.DATA_DIR) / ".backup-running"
    (running / "data").mkdir(parents=True)
    (running / "data" / "y.jpg").write_bytes(b"y")
    make_old(killed.parent.parent)
    make_old(running)
    with open(running / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        out, _ = check_failing()
        assert ".backup-killed/ (an unfinished backup)" in out and ".backup-running" not in out
        check("--fix")
    assert not killed.parent.parent.exists() and running.exists()
