"""Files in DATA_DIR appear whole or not at all (`webapp.atomic`): for readers on other machines too.

Several web processes and workers on different machines share one DATA_DIR. Every write goes to a
hidden temporary name unique per machine and process, is fsynced and renamed into place; a write
that fails half way leaves the old file as it was and no temporary file. A process killed mid-write
leaves its temporary file: `check_data` does not call it damage, and the clean-ups remove it.
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import stat
import threading
import time
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command

from webapp import atomic
from webapp.storage import AtomicFileSystemStorage

HOUR = 3600


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def aged(path: Path, hours: float = 10) -> Path:
    then = time.time() - hours * HOUR
    os.utime(path, (then, then))
    return path


def leftover(folder: Path, final: str, content: bytes = b"half a file") -> Path:
    """What a process killed mid-write leaves: its temporary file, beside the final name."""
    folder.mkdir(parents=True, exist_ok=True)
    path = atomic.temporary_path(folder / final)
    path.write_bytes(content)
    return path


class Interrupted(Exception):
    """Raised by a writer half way through, as a full disk or a killed conversion would."""


class HalfWriter:
    """A file that takes half of what it is given, then fails as a full disk does."""

    def __init__(self, out) -> None:
        self.out = out

    def write(self, data) -> int:
        self.out.write(bytes(data)[: max(1, len(data) // 2)])
        self.out.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self.out, name)

    def __enter__(self) -> HalfWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.out.close()


@pytest.fixture
def half_writes(monkeypatch):
    """Every file `webapp.atomic` opens fails half way through its first write."""
    real = atomic._create
    monkeypatch.setattr(atomic, "_create", lambda temporary, mode: HalfWriter(real(temporary, mode)))


# --- The helper ---------------------------------------------------------------------------------


def test_write_bytes_replaces_the_file_and_leaves_only_it(tmp_path):
    target = tmp_path / "sub" / "file.bin"
    atomic.write_bytes(target, b"old")
    atomic.write_bytes(target, b"new content")
    assert target.read_bytes() == b"new content"
    assert names(target.parent) == ["file.bin"]


def test_a_writer_failing_half_way_keeps_the_old_file_and_leaves_no_temporary_one(tmp_path):
    target = tmp_path / "file.bin"
    target.write_bytes(b"old complete content")
    with pytest.raises(Interrupted), atomic.open_replacing(target) as out:
        out.write(b"the first half of the new")
        raise Interrupted
    assert target.read_bytes() == b"old complete content"
    assert names(tmp_path) == ["file.bin"]


def test_a_named_writer_failing_half_way_keeps_the_old_file_and_leaves_no_temporary_one(tmp_path):
    target = tmp_path / "model.keras"
    target.write_bytes(b"old model")
    with pytest.raises(Interrupted), atomic.replacing(target, suffix=".keras") as partial:
        assert partial.name.endswith(".keras") and partial.parent == tmp_path  # Keras checks the ending
        partial.write_bytes(b"half a model")
        raise Interrupted
    assert target.read_bytes() == b"old model"
    assert names(tmp_path) == ["model.keras"]


def test_a_named_writer_that_finishes_replaces_the_file(tmp_path):
    target = tmp_path / "outcomes.npz"
    with atomic.replacing(target) as partial, open(partial, "wb") as out:
        np.savez(out, a=np.arange(3))
    with np.load(target) as data:
        assert list(data["a"]) == [0, 1, 2]
    assert names(tmp_path) == ["outcomes.npz"]


def test_temporary_names_are_hidden_unique_and_name_their_machine_and_process(tmp_path):
    target = tmp_path / "model.keras"
    first, second = atomic.temporary_path(target), atomic.temporary_path(target)
    assert first != second and first.parent == second.parent == tmp_path
    assert first.name.startswith(".model.keras.") and first.name.endswith(".tmp")
    host = re.sub(r"[^A-Za-z0-9]+", "-", socket.gethostname()).strip("-")[:8]
    assert host in first.name and f"-{os.getpid()}-" in first.name
    assert atomic.is_temporary(first.name) and atomic.final_name(first.name) == "model.keras"
    assert atomic.final_name(atomic.temporary_path(target, ".keras").name) == "model.keras"
    assert not list(tmp_path.glob("*.keras"))  # nothing was created by naming
    assert tmp_path.joinpath(first.name).suffix == ".tmp"  # a glob for "*.keras" never finds it


def test_only_temporary_names_are_taken_for_temporary_ones():
    assert atomic.is_temporary(".ab12.jpg.host-12-0123456789ab.tmp")
    assert atomic.is_temporary(".outcomes.npz.x1y2z3ab.partial")  # what earlier versions left
    assert atomic.is_temporary(".export-k2j3h4.tmp")  # an export's staging folder
    for name in ("model.keras", "leftover.tmp", ".lock", ".DS_Store", "ab12.jpg", ".backup-0123"):
        assert not atomic.is_temporary(name), name
    assert atomic.final_name("model.keras") is None


def test_a_very_long_name_still_gets_a_temporary_name_the_file_system_takes(tmp_path):
    target = tmp_path / ("x" * 250 + ".zip")
    path = atomic.temporary_path(target)
    assert len(path.name.encode()) <= 255
    path.write_bytes(b"ok")


def test_mode_is_set_before_the_file_has_a_name(tmp_path):
    target = tmp_path / "secret"
    atomic.write_text(target, "s3cret", mode=0o600)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and target.read_text() == "s3cret"


def test_create_writes_only_when_the_file_is_absent(tmp_path):
    target = tmp_path / "secret_key"
    assert atomic.create(target, b"first", mode=0o600)
    assert not atomic.create(target, b"second", mode=0o600)
    assert target.read_bytes() == b"first" and stat.S_IMODE(target.stat().st_mode) == 0o600
    assert names(tmp_path) == ["secret_key"]


def test_create_without_hard_links_is_still_exclusive(tmp_path, monkeypatch):
    def no_links(source, target):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    target = tmp_path / "secret_key"
    assert atomic.create(target, b"first")
    assert not atomic.create(target, b"second")
    assert target.read_bytes() == b"first" and names(tmp_path) == ["secret_key"]


def test_a_reader_polling_the_file_sees_the_old_or_the_new_content_never_a_part(tmp_path):
    """One thread rewrites a 4 MB file again and again; another reads it all the while."""
    target = tmp_path / "big.bin"
    contents = [bytes([i]) * (4 * 1024 * 1024) for i in range(1, 4)]
    done = threading.Event()
    seen: list[int] = []
    errors: list[str] = []

    def read() -> None:
        while not done.is_set():
            try:
                data = target.read_bytes()
            except FileNotFoundError:
                seen.append(0)  # not written yet
                continue
            if data not in contents:
                errors.append(f"{len(data)} bytes starting {data[:1]!r}")
            seen.append(data[0])

    reader = threading.Thread(target=read)
    reader.start()
    deadline, round_number = time.monotonic() + 20, 0
    try:  # at least a dozen writes, and until the reader has read twenty whole files
        while round_number < 12 or (sum(1 for s in seen if s) < 20 and time.monotonic() < deadline):
            atomic.write_bytes(target, contents[round_number % 3])
            round_number += 1
    finally:
        done.set()
        reader.join()
    assert not errors
    assert sum(1 for s in seen if s) >= 20
    assert names(tmp_path) == ["big.bin"]


def test_remove_stale_takes_old_temporary_files_only(tmp_path):
    old = aged(leftover(tmp_path, "a.zip"))
    fresh = leftover(tmp_path, "b.zip")
    folder = tmp_path / ".export-abc123.tmp"
    folder.mkdir()
    (folder / "model.keras").write_bytes(b"x")
    aged(folder)
    kept = [tmp_path / "a.zip", tmp_path / ".lock", tmp_path / "leftover.tmp"]
    for path in kept:
        path.write_bytes(b"keep")
        aged(path)

    assert atomic.remove_stale(tmp_path, HOUR) == 2
    assert not old.exists() and not folder.exists() and fresh.exists()
    assert all(path.exists() for path in kept)
    assert atomic.remove_stale(tmp_path / "missing", HOUR) == 0


def test_the_generated_secret_key_is_written_once_with_mode_0600(tmp_path, monkeypatch):
    from webapp import settings as settings_module

    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.delenv("SECRET_KEY_FILE", raising=False)
    monkeypatch.setattr(settings_module, "DATA_DIR", tmp_path)
    key = settings_module._secret_key()
    assert len(key) > 40 and settings_module._secret_key() == key  # the second start reads the first's
    assert stat.S_IMODE((tmp_path / "secret_key").stat().st_mode) == 0o600
    assert names(tmp_path) == ["secret_key"]


# --- Django's storage (Prediction images and thumbnails) -------------------------------------


class FailingContent(ContentFile):
    """Upload content whose reading fails after the first chunk (a client that went away)."""

    def chunks(self, chunk_size=None):
        yield b"the first chunk"
        raise Interrupted


def test_the_media_storage_is_the_atomic_one():
    from django.core.files.storage import storages

    assert isinstance(storages["default"], AtomicFileSystemStorage)


def test_the_storage_writes_whole_files_keeps_free_names_and_permissions(tmp_path):
    store = AtomicFileSystemStorage(location=tmp_path, file_permissions_mode=0o600, directory_permissions_mode=0o700)
    first = store.save("thumbnails/2025/01/a.jpg", ContentFile(b"one"))
    second = store.save("thumbnails/2025/01/a.jpg", ContentFile(b"two"))  # the name is taken: another one
    assert first == "thumbnails/2025/01/a.jpg" and second != first and second.startswith("thumbnails/2025/01/a_")
    assert store.open(first).read() == b"one" and store.open(second).read() == b"two"
    folder = tmp_path / "thumbnails" / "2025" / "01"
    assert names(folder) == sorted(Path(n).name for n in (first, second))
    assert stat.S_IMODE((tmp_path / first).stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_the_storage_leaves_nothing_when_the_content_fails_half_way(tmp_path):
    store = AtomicFileSystemStorage(location=tmp_path)
    with pytest.raises(Interrupted):
        store.save("predictions/2025/01/b.jpg", FailingContent(b""))
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_the_storage_takes_uploads_spooled_to_disk(tmp_path, settings):
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "spool")
    from django.core.files.uploadedfile import TemporaryUploadedFile

    (tmp_path / "spool").mkdir()
    upload = TemporaryUploadedFile("big.jpg", "image/jpeg", 0, None)
    upload.write(b"x" * 100_000)
    upload.seek(0)
    store = AtomicFileSystemStorage(location=tmp_path / "media")
    name = store.save("predictions/big.jpg", upload)
    assert (tmp_path / "media" / name).read_bytes() == b"x" * 100_000
    assert Path(upload.temporary_file_path()).exists()  # Django removes its own spool file, not the storage
    upload.close()


# --- Real call sites: a failure half way leaves no partial final file -------------------------


def test_a_lite_file_failing_half_way_keeps_the_converted_file_there_was(tmp_path, half_writes):
    from classifier import lite

    target = tmp_path / "lite" / "abc-tf2-int8.tflite"
    verdict = lite.Verdict(True, "", 8, 0.0, 1.0)
    target.parent.mkdir()
    target.write_bytes(b"old tflite")
    target.with_suffix(".json").write_text(json.dumps(verdict.as_dict()))
    with pytest.raises(OSError):
        lite.record(target, b"new tflite content", verdict)
    assert target.read_bytes() == b"old tflite"
    assert names(target.parent) == ["abc-tf2-int8.json", "abc-tf2-int8.tflite"]


def test_an_int8_calibration_zip_cut_short_leaves_nothing_for_the_worker(half_writes):
    from classifier import int8

    with pytest.raises(OSError):
        int8._keep_upload(SimpleUploadedFile("pictures.zip", b"PK\x03\x04" + b"x" * 1000))
    assert list(int8.calibration_dir().iterdir()) == []


def test_outcomes_failing_half_way_keep_the_file_there_was(tmp_path, monkeypatch):
    from training import outcomes

    ids, truth = {"validation": [1, 2]}, {"validation": [0, 1]}
    outcomes.save_outcomes(tmp_path, ids, truth, {"validation": np.full((2, 2), 0.5, np.float32)})
    before = (tmp_path / outcomes.OUTCOMES_FILE).read_bytes()

    def half(file, **arrays):
        file.write(b"PK\x03\x04 half an archive")
        raise Interrupted

    monkeypatch.setattr(np, "savez", half)
    with pytest.raises(Interrupted):
        outcomes.save_outcomes(tmp_path, ids, truth, {"validation": np.full((2, 2), 0.25, np.float32)})
    assert (tmp_path / outcomes.OUTCOMES_FILE).read_bytes() == before
    assert names(tmp_path) == [outcomes.OUTCOMES_FILE]


def test_a_trained_model_save_failing_half_way_leaves_no_model_file(tmp_path, monkeypatch):
    import keras

    from tests.helpers import reinitialise
    from tests.training_helpers import colour_png
    from training import trainer

    examples: dict[str, list[trainer.Example]] = {"train": [], "validation": [], "test": []}
    for label in range(2):
        for i in range(6):
            path = tmp_path / "images" / f"{label}-{i}.png"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(colour_png(label, label * 10 + i, size=40))
            examples["train" if i < 4 else "validation"].append(trainer.Example(path, label, label * 10 + i))

    def build():
        model = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(32, 32, 3), alpha=0.35)
        reinitialise(model, 0)
        return model

    from keras.applications import mobilenet_v2

    base = trainer.Base("tiny", "Tiny", 32, build, mobilenet_v2.preprocess_input)
    data = trainer.TrainData(["red", "green"], examples["train"], examples["validation"], [])
    saved: list[str] = []

    def half(self, filepath, *args, **kwargs):
        saved.append(str(filepath))
        Path(filepath).write_bytes(b"PK\x03\x04 half a model")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(keras.Model, "save", half)
    workdir = tmp_path / "job"
    workdir.mkdir()
    (workdir / "model.keras").write_bytes(b"the model there was")
    with pytest.raises(OSError):
        trainer.run(trainer.TrainConfig(epochs=1), base, data, workdir)
    assert saved and saved[0].endswith(".keras") and Path(saved[0]).name.startswith(".model.keras.")
    assert (workdir / "model.keras").read_bytes() == b"the model there was"
    assert names(workdir) == ["model.keras"]


def test_an_export_zip_failing_half_way_leaves_no_zip_and_no_staging(tmp_path, monkeypatch):
    import keras

    from tests.test_exporting import LABELS, build_model, coloured_images
    from training import exporting

    model_path = tmp_path / "model.keras"
    build_model(model_path)
    check = coloured_images(2, seed=1)
    reference = np.asarray(keras.saving.load_model(model_path).predict(check.astype(np.float32), verbose=0))
    out_dir = tmp_path / "exports"

    def half(path, model_file, labels, readme):
        Path(path).write_bytes(b"PK\x03\x04 half a zip")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(exporting, "_write_zip", half)
    result = exporting.build_export(
        "keras", model_path, LABELS, out_dir, name="m", calibration=check, check=check, reference=reference
    )
    assert not result.ok and result.path is None
    assert list(out_dir.iterdir()) == []


@pytest.mark.django_db(transaction=True)
def test_a_backup_whose_database_copy_fails_half_way_leaves_no_database_file(
    alice, settings, tmp_path_factory, monkeypatch
):
    from webapp import backup as backup_module

    dest = tmp_path_factory.mktemp("backups") / "b"
    dest.mkdir()  # an empty folder given by the administrator: it stays, and nothing half-written is in it

    def half(self, target):
        Path(target).write_bytes(b"half a database")
        raise OSError(errno.ENOSPC, "No space left on device")

    for snapshot in (backup_module.SqliteSnapshot, backup_module.DjangoSnapshot):  # SQLite, PostgreSQL
        monkeypatch.setattr(snapshot, "write", half)
    with pytest.raises(OSError):
        backup_module.backup(dest)
    assert not [dest / name for name in backup_module.DATABASE_FILES.values() if (dest / name).exists()]
    assert not (dest / "manifest.json").exists()
    assert not [p for p in dest.rglob("*") if atomic.is_temporary(p.name)]


@pytest.mark.django_db(transaction=True)
def test_a_restore_failing_half_way_through_a_file_keeps_the_file_there_was(alice, settings, tmp_path_factory, request):
    from tests.test_backup import backup, fill, point_at
    from webapp import backup as backup_module
    from webapp.datafiles import local_path

    fill(alice, settings)
    dest = tmp_path_factory.mktemp("backups") / "b"
    backup(dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    fresh = tmp_path_factory.mktemp("fresh")
    point_at(settings, fresh)
    first = local_path(manifest["files"][0]["path"])  # the file the restore fails on
    first.parent.mkdir(parents=True)
    first.write_bytes(b"the file there was")
    request.getfixturevalue("half_writes")
    with pytest.raises(OSError):
        backup_module._put_files(dest, manifest)
    assert first.read_bytes() == b"the file there was"
    assert [p for p in fresh.rglob("*") if p.is_file()] == [first]


# --- Leftovers of processes killed mid-write ------------------------------------------------


def check(*args: str) -> str:
    out = StringIO()
    call_command("check_data", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_check_data_does_not_call_a_killed_writes_temporary_file_damage_and_fix_removes_it(alice, settings):
    from tests.test_check_data import dataset_with_images, make_old, trained_model

    model = trained_model(dataset_with_images(alice, n=1))
    make_old(model.path.parent)
    media = Path(settings.MEDIA_ROOT) / "predictions" / "2025" / "01"
    stale = [
        aged(leftover(media, "ab.jpg")),
        aged(leftover(model.path.parent, "model.keras")),
        aged(leftover(model.path.parent / "exports" / ".export-k2j3h4.tmp", "model.keras")),
        aged(leftover(Path(settings.WEIGHTS_DIR), "mobilenet_v2.h5")),
    ]
    fresh = leftover(media, "cd.jpg")  # maybe a write going on right now

    out = check()  # no CommandError: nothing is damaged
    assert "No problems" in out and "Temporary files of interrupted writes: 4" in out
    assert all(path.exists() for path in [*stale, fresh])

    out = check("--fix")  # the periodic clean-up's share first (models, weights), then the rest
    assert "temporary files of interrupted writes" in out and "No problems left" in out
    assert not any(path.exists() for path in stale) and fresh.exists()
    assert not (model.path.parent / "exports" / ".export-k2j3h4.tmp").exists()
    assert model.path.read_bytes() == b"keras"


@pytest.mark.django_db(transaction=True)
def test_a_temporary_file_of_a_running_upload_is_in_use(alice, settings):
    from tests.test_check_data import dataset_with_images
    from training import storage

    dataset = dataset_with_images(alice, n=1)
    journal = storage.Journal(dataset.folder, "upload-abc")
    final = storage.image_path(dataset.folder, "cd" * 32, "PNG")
    journal.record(final)
    aged(leftover(final.parent, final.name))
    out = check()
    assert "in use by imports, uploads" in out and "Temporary files" not in out

    journal.close()
    assert storage.undo(journal.path, keep=lambda sha: False) == 0
    assert not [p for p in final.parent.iterdir() if atomic.is_temporary(p.name)]


@pytest.mark.django_db(transaction=True)
def test_the_periodic_clean_up_removes_old_temporary_files_of_killed_writes(alice, settings):
    from tests.test_check_data import dataset_with_images, trained_model
    from training import recovery

    model = trained_model(dataset_with_images(alice, n=1))
    data_dir = Path(settings.DATA_DIR)
    stale = [
        aged(leftover(data_dir, "secret_key")),
        aged(leftover(Path(settings.WEIGHTS_DIR), "mobilenet_v2.h5")),
        aged(leftover(data_dir / "imports", "0123.zip")),
        aged(leftover(data_dir / "calibration", "4567.zip")),
        aged(leftover(model.path.parent, "outcomes.npz")),
        aged(leftover(model.path.parent / "exports", "m-keras.zip")),
    ]
    fresh = leftover(model.path.parent, "model.keras")  # maybe a model being saved right now
    weights = Path(settings.WEIGHTS_DIR) / "mobilenet_v2.h5"
    weights.write_bytes(b"weights")
    aged(weights)

    recovery.clean_abandoned_files()

    assert not any(path.exists() for path in stale)
    assert fresh.exists() and model.path.exists() and weights.exists()
