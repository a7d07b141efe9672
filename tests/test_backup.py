"""`manage.py backup` and `restore`: a consistent copy of the database and of exactly the files it names.

The busy-server test runs in child processes with a real SQLite file in WAL mode (the test database
of pytest lives in memory): uploads, zip imports, predictions and deletions run in threads while the
backup is taken, then the backup is restored into a fresh DATA_DIR and checked.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from io import StringIO
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.db import connection

from classifier.models import Prediction
from tests.servers import process_environment
from training import uploads
from training.models import Dataset, DatasetImage, TrainedModel, TrainingJob

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS_NAME = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5"

pytestmark = pytest.mark.django_db(transaction=True)


# --- Builders -----------------------------------------------------------------------------------


class FakeEngine:
    """Answers like the inference engine without TensorFlow: every picture gets the same three guesses."""

    def predict(self, key, images):
        from classifier.engine import BatchResult

        return BatchResult(
            probabilities=np.full((len(images), 3), 1 / 3), labels=["zebra", "canoe", "cat"], seconds=0.01
        )


def store_prediction(user, name: str = "photo.png", seed: int = 0) -> Prediction:
    """A prediction stored by the app's own code path (`services.classify_uploads`), as Classify does."""
    from classifier import inference, services
    from tests.helpers import noise_image_bytes

    model = SimpleNamespace(key="mobilenetv2", name="MobileNetV2", input_size=32, kind="pretrained")
    real, inference.get_engine = inference.get_engine, FakeEngine
    try:
        outcome = services.classify_uploads(user, model, [SimpleUploadedFile(name, noise_image_bytes(seed))])
    finally:
        inference.get_engine = real
    return outcome.files[0].prediction


def fill(user, settings) -> dict:
    """Predictions, a dataset, a trained model with an export, a weights file and the secret key."""
    from tests.helpers import noise_image_bytes

    predictions = [store_prediction(user, f"p{i}.png", seed=i) for i in range(2)]
    dataset = Dataset.objects.create(name="Pets", created_by=user)
    files = [SimpleUploadedFile(f"cat{i}.png", noise_image_bytes(100 + i)) for i in range(3)]
    uploads.add_uploads(dataset, "cats", files, user)
    job = TrainingJob.objects.create(dataset=dataset, base_key="mobilenetv2", base_name="MobileNetV2",
                                     status=TrainingJob.Status.SUCCEEDED)  # fmt: skip
    model = TrainedModel.objects.create(job=job, dataset=dataset, name="Pets model", base_key="mobilenetv2",
                                        input_size=96, labels=["cats"])  # fmt: skip
    model.path.parent.mkdir(parents=True)
    model.path.write_bytes(b"a keras model")
    export = job.folder / "exports" / "pets-keras.zip"
    export.parent.mkdir()
    export.write_bytes(b"an export zip")
    job.exports = {"keras": {"format": "keras", "path": str(export), "ok": True, "message": ""}}
    job.save(update_fields=["exports"])
    weights = Path(settings.WEIGHTS_DIR) / WEIGHTS_NAME
    weights.parent.mkdir(parents=True, exist_ok=True)
    weights.write_bytes(b"hdf5 weights")
    (Path(settings.DATA_DIR) / "secret_key").write_text("the-secret")
    return {"predictions": predictions, "dataset": dataset, "job": job, "model": model}


def files_under(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.parts[len(folder.parts)] in ("media", "datasets", "models", "weights")
    }


def point_at(settings, folder: Path) -> None:
    """What a fresh install's settings look like: another DATA_DIR and the folders in it."""
    settings.DATA_DIR = folder
    settings.WEIGHTS_DIR = folder / "weights"
    settings.MEDIA_ROOT = folder / "media"
    settings.DATASETS_DIR = folder / "datasets"


def rows() -> dict:
    return {
        "predictions": sorted(Prediction.objects.values_list("id", "image", "thumbnail", "original_name")),
        "images": sorted(DatasetImage.objects.values_list("id", "sha256", "label__name", "split")),
        "models": sorted(TrainedModel.objects.values_list("id", "job_id", "name")),
    }


def backup(dest: Path, *args: str) -> str:
    out = StringIO()
    call_command("backup", str(dest), *args, stdout=out)
    return out.getvalue()


def restore(src: Path, *args: str) -> str:
    out = StringIO()
    call_command("restore", str(src), *args, stdout=out)
    return out.getvalue()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def backups(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("backups")


# --- Backup ---------------------------------------------------------------------------------


def test_the_backup_holds_the_database_exactly_the_files_it_names_and_a_manifest(alice, settings, backups):
    made = fill(alice, settings)
    stray = Path(settings.MEDIA_ROOT) / "predictions" / "stray.png"
    stray.write_bytes(b"no row names me")
    dest = backups / "b1"
    out = backup(dest)

    assert stat.S_IMODE(dest.stat().st_mode) == 0o700
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["format"] == 1 and manifest["created_at"] and manifest["finished_at"]
    assert manifest["missing"] == []
    listed = {f["path"]: f for f in manifest["files"]}
    p = made["predictions"][0]
    image = made["dataset"].images.first()
    expected = {
        f"media/{p.image.name}",
        f"media/{p.thumbnail.name}",
        f"datasets/{image.dataset_id}/images/{image.sha256[:2]}/{image.sha256}.png",
        f"datasets/{image.dataset_id}/thumbs/{image.sha256[:2]}/{image.sha256}.jpg",
        f"models/{made['job'].pk}/model.keras",
        f"models/{made['job'].pk}/exports/pets-keras.zip",
        f"weights/{WEIGHTS_NAME}",
        "secret_key",
    }
    assert expected <= set(listed)
    assert len(listed) == 4 + 6 + 2 + 1 + 1  # 2 predictions x 2 files, 3 images x 2 files, model + export
    assert "media/predictions/stray.png" not in listed
    for path, entry in listed.items():
        copy = dest / "data" / path
        assert entry["size"] == copy.stat().st_size and entry["sha256"] == sha256(copy)
    database = manifest["database"]
    assert database["engine"] == connection.vendor and database["sha256"] == sha256(dest / database["file"])
    assert database["format"] == {"sqlite": "sqlite", "postgresql": "pg_dump"}[connection.vendor]
    assert database["tables"]["classifier_prediction"] == 2
    assert database["tables"]["training_datasetimage"] == 3
    assert database["tables"]["training_trainedmodel"] == 1
    versions = manifest["versions"]
    assert {"transferlab", "python", "django", "sqlite"} <= set(versions)
    assert "classifier.0003_job_machine" in versions["migrations"]
    assert "Backup written to" in out and "14 files" in out


def test_the_backup_refuses_a_destination_that_holds_something(alice, settings, backups):
    dest = backups / "used"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    with pytest.raises(CommandError, match="is not empty"):
        backup(dest)
    assert (dest / "notes.txt").read_text() == "mine"


def test_weights_can_be_left_out(alice, settings, backups):
    fill(alice, settings)
    backup(backups / "b", "--no-weights")
    manifest = json.loads((backups / "b" / "manifest.json").read_text())
    assert not any(f["path"].startswith("weights/") for f in manifest["files"])


def test_rows_deleted_right_after_the_database_copy_keep_their_files_in_the_backup(
    alice, settings, backups, monkeypatch
):
    """The race of the old recipe: the database copy names files that are deleted before they are copied."""
    from webapp import backup as backup_module

    made = fill(alice, settings)
    copy_database = backup_module.copy_database

    def copy_then_delete(*args, **kwargs):
        result = copy_database(*args, **kwargs)
        # Meanwhile, on the live server: a user deletes a prediction and a dataset image.
        made["predictions"][0].delete()
        made["dataset"].images.first().delete()
        return result

    monkeypatch.setattr(backup_module, "copy_database", copy_then_delete)
    dest = backups / "b"
    backup(dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["missing"] == []
    assert manifest["database"]["tables"]["classifier_prediction"] == 2
    assert len([f for f in manifest["files"] if f["path"].startswith("media/")]) == 4

    call_command("flush", "--no-input")
    point_at(settings, backups / "fresh")
    restore(dest)
    out = StringIO()
    call_command("check_data", "--min-age-minutes", "0", stdout=out)
    assert "No problems" in out.getvalue()
    assert Prediction.objects.count() == 2


def test_without_hard_links_the_files_are_copied_before_the_database(alice, settings, backups, monkeypatch):
    from webapp import backup as backup_module

    made = fill(alice, settings)

    def no_links(src, dst):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    copy_database = backup_module.copy_database

    def copy_then_delete(*args, **kwargs):
        result = copy_database(*args, **kwargs)
        made["predictions"][0].delete()
        return result

    monkeypatch.setattr(backup_module, "copy_database", copy_then_delete)
    backup(backups / "b")
    manifest = json.loads((backups / "b" / "manifest.json").read_text())
    assert manifest["missing"] == []
    assert manifest["capture"] == "copies"


def test_a_backup_on_another_file_system_stages_its_links_in_data_dir_and_leaves_nothing(
    alice, settings, backups, monkeypatch
):
    from webapp import backup as backup_module

    made = fill(alice, settings)
    monkeypatch.setattr(backup_module, "same_filesystem", lambda a, b: False)
    copy_database = backup_module.copy_database
    staged = []

    def copy_then_delete(*args, **kwargs):
        staged.extend(Path(settings.DATA_DIR).glob(".backup-*"))
        result = copy_database(*args, **kwargs)
        made["predictions"][0].delete()
        return result

    monkeypatch.setattr(backup_module, "copy_database", copy_then_delete)
    backup(backups / "b")
    assert len(staged) == 1  # the links were in DATA_DIR, on the same file system as the files
    assert not list(Path(settings.DATA_DIR).glob(".backup-*"))
    manifest = json.loads((backups / "b" / "manifest.json").read_text())
    assert manifest["missing"] == [] and manifest["capture"] == "hard links"
    for entry in manifest["files"]:
        copy = backups / "b" / "data" / entry["path"]
        assert copy.stat().st_nlink == 1 and sha256(copy) == entry["sha256"]  # real copies in the backup


def test_a_file_already_gone_before_the_backup_is_listed_as_missing(alice, settings, backups):
    made = fill(alice, settings)
    gone = made["predictions"][1]
    Path(gone.image.path).unlink()
    out = backup(backups / "b")
    manifest = json.loads((backups / "b" / "manifest.json").read_text())
    assert manifest["missing"] == [
        {"path": f"media/{gone.image.name}", "owner": f"classifier.Prediction {gone.pk} (image)"}
    ]
    assert "1 file the database names was missing" in out


def test_a_failed_backup_leaves_no_folder_that_looks_like_a_backup(alice, settings, backups, monkeypatch):
    from webapp import backup as backup_module

    fill(alice, settings)

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(backup_module, "copy_database", broken)
    with pytest.raises(OSError):
        backup(backups / "b")
    assert not (backups / "b").exists()
    assert not list(Path(settings.DATA_DIR).glob(".backup-*"))


# --- Restore --------------------------------------------------------------------------------


def test_restore_into_a_fresh_data_dir_gives_back_the_same_rows_and_files(alice, settings, backups):
    fill(alice, settings)
    old_dir = Path(settings.DATA_DIR)
    before_rows, before_files = rows(), files_under(old_dir)
    dest = backups / "b"
    backup(dest)

    call_command("flush", "--no-input")  # a fresh install: empty database, empty data folder
    new_dir = backups / "fresh"
    point_at(settings, new_dir)
    out = restore(dest)

    assert rows() == before_rows
    assert files_under(new_dir) == before_files
    assert (new_dir / "secret_key").read_text() == "the-secret"
    assert stat.S_IMODE((new_dir / "secret_key").stat().st_mode) == 0o600
    assert stat.S_IMODE(new_dir.stat().st_mode) == 0o700
    job = TrainingJob.objects.get()
    assert job.exports["keras"]["path"] == str(new_dir / "models" / str(job.pk) / "exports" / "pets-keras.zip")
    assert "No problems" in out  # the data check ran at the end
    check = StringIO()
    call_command("check_data", "--min-age-minutes", "0", stdout=check)
    assert "No problems" in check.getvalue()


def test_restore_refuses_a_data_dir_that_holds_data_unless_forced(alice, settings, backups):
    made = fill(alice, settings)
    backup(backups / "b")
    extra = store_prediction(alice, "after-the-backup.png", seed=50)
    with pytest.raises(CommandError, match="--force") as caught:
        restore(backups / "b")
    assert "already holds data" in str(caught.value)
    assert Prediction.objects.filter(pk=extra.pk).exists()

    out = restore(backups / "b", "--force")
    assert not Prediction.objects.filter(pk=extra.pk).exists()
    assert Prediction.objects.count() == len(made["predictions"])
    aside = [p for p in Path(settings.DATA_DIR).iterdir() if p.name.startswith("replaced-")]
    assert len(aside) == 1 and (aside[0] / "media" / extra.image.name).is_file()
    assert str(aside[0]) in out


def test_restore_refuses_a_damaged_backup_and_changes_nothing(alice, settings, backups):
    made = fill(alice, settings)
    dest = backups / "b"
    backup(dest)
    image = made["dataset"].images.first()
    damaged = dest / "data" / "datasets" / str(image.dataset_id) / "images" / image.sha256[:2] / f"{image.sha256}.png"
    damaged.write_bytes(b"bit rot")
    call_command("flush", "--no-input")
    point_at(settings, backups / "fresh")
    with pytest.raises(CommandError, match="damaged") as caught:
        restore(dest)
    assert image.sha256 in str(caught.value)
    assert not Prediction.objects.exists()
    assert not (backups / "fresh" / "media").exists()


def test_restore_refuses_an_unfinished_backup(alice, settings, backups):
    fill(alice, settings)
    dest = backups / "b"
    backup(dest)
    (dest / "manifest.json").unlink()
    call_command("flush", "--no-input")
    with pytest.raises(CommandError, match=r"manifest\.json"):
        restore(dest)


def test_restore_refuses_a_backup_of_a_newer_version(alice, settings, backups):
    fill(alice, settings)
    dest = backups / "b"
    backup(dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["versions"]["migrations"].append("training.9999_from_the_future")
    (dest / "manifest.json").write_text(json.dumps(manifest))
    call_command("flush", "--no-input")
    with pytest.raises(CommandError, match="newer TransferLab") as caught:
        restore(dest)
    assert "training.9999_from_the_future" in str(caught.value)


def test_a_json_backup_restores_too(alice, settings, backups):
    """The format used for PostgreSQL without pg_dump, and to move between database engines."""
    fill(alice, settings)
    before = rows()
    backup(backups / "b", "--database-format", "json")
    manifest = json.loads((backups / "b" / "manifest.json").read_text())
    assert manifest["database"]["format"] == "json"
    call_command("flush", "--no-input")
    point_at(settings, backups / "fresh")
    restore(backups / "b")
    assert rows() == before


# --- A busy server --------------------------------------------------------------------------


# A child process: Django set up with the DATA_DIR of its environment, then one function of this file.
CHILD = "import django; django.setup(); from tests import test_backup as t; t.{call}"


def run(args: list[str], data_dir: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = process_environment(data_dir, PYTHONPATH=str(ROOT), DJANGO_SETTINGS_MODULE="webapp.settings")
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_a_backup_taken_during_uploads_imports_and_deletions_restores_without_problems(tmp_path):
    live, dest, fresh = tmp_path / "live", tmp_path / "backup", tmp_path / "fresh"
    result = run([sys.executable, "-c", CHILD.format(call=f"_busy_backup({str(dest)!r})")], live)
    activity = json.loads(result.stdout.strip().splitlines()[-1])
    # Work really happened on both sides of the backup.
    assert activity["during"]["uploads"] >= 3 and activity["during"]["imports"] >= 1
    assert activity["during"]["deleted"] >= 3 and activity["during"]["predictions"] >= 3

    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["missing"] == []

    run([sys.executable, "manage.py", "restore", str(dest)], fresh)
    check = run([sys.executable, "manage.py", "check_data", "--min-age-minutes", "0"], fresh)
    assert "No problems" in check.stdout
    counts = run([sys.executable, "-c", CHILD.format(call="_counts()")], fresh)
    restored = json.loads(counts.stdout.strip().splitlines()[-1])
    tables = manifest["database"]["tables"]
    assert restored == {
        "predictions": tables["classifier_prediction"],
        "images": tables["training_datasetimage"],
    }


def _busy_backup(dest: str) -> None:
    """Runs in a child process: threads upload, import, classify and delete while the backup runs."""
    import random
    import threading
    import time

    from django.contrib.auth import get_user_model
    from django.db import close_old_connections, connection

    from tests.dataset_helpers import image_zip
    from tests.helpers import noise_image_bytes
    from training import imports

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user("busy", password="busy-password", is_staff=True)
    dataset = Dataset.objects.create(name="Busy", created_by=user)
    imported = Dataset.objects.create(name="Imported", created_by=user)
    stop, errors = threading.Event(), []
    during = {"uploads": 0, "imports": 0, "deleted": 0, "predictions": 0}
    started = threading.Event()

    def worker(name: str, step) -> None:
        i = 0
        try:
            while not stop.is_set():
                i += 1
                step(i)
                if started.is_set():
                    during[name] += 1
        except BaseException as error:  # reported to the parent
            errors.append(f"{name}: {error!r}")
        finally:
            connection.close()

    def upload(i: int) -> None:
        files = [SimpleUploadedFile(f"u{i}-{k}.png", noise_image_bytes(10_000 + i * 10 + k)) for k in range(2)]
        uploads.add_uploads(dataset, f"label{i % 3}", files, user)

    def import_zip(i: int) -> None:
        path = imports.archives_dir() / f"busy-{i}.zip"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(image_zip({"cats": 6, "dogs": 6}, seed=i * 100))
        job = imports.record_import(imported, f"busy-{i}.zip", path, path.stat().st_size, user)
        imports.run_import_job(job.pk)

    def classify(i: int) -> None:
        store_prediction(user, f"c{i}.png", seed=20_000 + i)

    def delete(i: int) -> None:
        close_old_connections()
        images = list(DatasetImage.objects.values_list("pk", flat=True))
        predictions = list(Prediction.objects.values_list("pk", flat=True))
        if images:
            DatasetImage.objects.filter(pk=random.choice(images)).delete()
        if predictions and i % 2:
            Prediction.objects.filter(pk=random.choice(predictions)).delete()
        time.sleep(0.01)

    steps = {"uploads": upload, "imports": import_zip, "predictions": classify, "deleted": delete}
    threads = [threading.Thread(target=worker, args=(name, step)) for name, step in steps.items()]
    for thread in threads:
        thread.start()
    time.sleep(3)  # some content first
    started.set()
    call_command("backup", dest)
    time.sleep(1)  # and activity after the database copy too
    stop.set()
    for thread in threads:
        thread.join(timeout=120)
    if errors:
        raise SystemExit("\n".join(errors))
    print(json.dumps({"during": during}))


def _counts() -> None:
    print(json.dumps({"predictions": Prediction.objects.count(), "images": DatasetImage.objects.count()}))
