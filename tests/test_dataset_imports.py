"""Zip imports and uploads through the database: rows, reports, failures that leave nothing behind,
interrupted workers, and the export/import round trip."""

from __future__ import annotations

import io
import os
import socket
import zipfile
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from tests.dataset_helpers import files_under, image_zip, make_zip, write
from tests.helpers import noise_image_bytes
from training import exports, imports, recovery, splits, storage, tasks, uploads
from training.models import Dataset, DatasetImage, ImportJob, Label
from webapp import background
from webapp import tasks as webapp_tasks

pytestmark = pytest.mark.django_db


@pytest.fixture
def dataset(alice) -> Dataset:
    return Dataset.objects.create(name="Pets", created_by=alice)


def queue(dataset: Dataset, data: bytes, user=None, name: str = "pets.zip") -> ImportJob:
    """An import job as the web process leaves it: the zip kept in DATA_DIR/imports, status queued."""
    path = write(imports.archives_dir() / f"{name}-{ImportJob.objects.count()}.zip", data)
    return ImportJob.objects.create(
        dataset=dataset, created_by=user, archive_name=name, archive_path=str(path), archive_size=len(data)
    )


def label_counts(dataset: Dataset) -> dict[str, int]:
    return {label.name: label.images.count() for label in dataset.labels.all()}


def test_import_task_adds_labels_images_and_a_report(dataset, alice):
    job = queue(dataset, image_zip({"cats": 5, "dogs": 3}), alice)
    tasks.import_archive.call_local(job.pk)
    job.refresh_from_db()
    assert job.status == ImportJob.Status.SUCCEEDED
    assert job.message == "Added 8 images."
    assert (job.done, job.total) == (8, 8)
    assert label_counts(dataset) == {"cats": 5, "dogs": 3}
    assert [(r["name"], r["new"], r["added"]) for r in job.report["labels"]] == [("cats", True, 5), ("dogs", True, 3)]
    image = DatasetImage.objects.filter(dataset=dataset).first()
    assert image.path.exists() and image.thumbnail_path.exists()
    assert image.added_by == alice and image.size_bytes == image.path.stat().st_size
    assert not os.path.exists(job.archive_path)  # the uploaded zip is gone once the job ends
    assert files_under(dataset.folder / "journal") == []


def test_import_assigns_stratified_splits(dataset):
    tasks.import_archive.call_local(queue(dataset, image_zip({"cats": 10, "dogs": 5})).pk)
    counts = {(lbl, s): 0 for lbl in ("cats", "dogs") for s in splits.SPLITS}
    for label, split in DatasetImage.objects.values_list("label__name", "split"):
        counts[(label, split)] += 1
    assert counts[("cats", "validation")] == 2 and counts[("cats", "train")] == 8
    assert counts[("dogs", "validation")] == 1 and counts[("dogs", "train")] == 4


def test_second_import_skips_duplicates_and_keeps_existing_splits(dataset):
    first = image_zip({"cats": 6})
    tasks.import_archive.call_local(queue(dataset, first).pk)
    before = dict(DatasetImage.objects.values_list("sha256", "split"))
    job = queue(dataset, make_zip({**dict(_members(first)), "cats/new.png": noise_image_bytes(99)}))
    tasks.import_archive.call_local(job.pk)
    job.refresh_from_db()
    assert job.message == "Added 1 image, skipped 6 duplicates."
    assert job.report["labels"][0]["duplicate_files"][0]["reason"] == "Already in the dataset."
    after = dict(DatasetImage.objects.values_list("sha256", "split"))
    assert {k: after[k] for k in before} == before


def _members(data: bytes):
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for info in zf.infolist():
            yield info.filename, zf.read(info)


def test_refused_zip_fails_the_job_with_the_message_and_changes_nothing(dataset):
    tasks.import_archive.call_local(queue(dataset, image_zip({"cats": 2})).pk)
    before = (label_counts(dataset), files_under(dataset.folder))
    job = queue(dataset, make_zip({"../../etc/evil.png": noise_image_bytes(5), "dogs/a.png": noise_image_bytes(6)}))
    tasks.import_archive.call_local(job.pk)
    job.refresh_from_db()
    assert job.status == ImportJob.Status.FAILED
    assert "unsafe path ('../../etc/evil.png')" in job.message
    assert (label_counts(dataset), files_under(dataset.folder)) == before


def test_failure_while_writing_rows_leaves_the_dataset_as_it_was(dataset, monkeypatch):
    tasks.import_archive.call_local(queue(dataset, image_zip({"cats": 2})).pk)
    before = (label_counts(dataset), files_under(dataset.folder))

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(DatasetImage.objects, "bulk_create", broken)
    job = queue(dataset, image_zip({"cats": 3, "dogs": 2}, seed=50))
    tasks.import_archive.call_local(job.pk)
    job.refresh_from_db()
    assert job.status == ImportJob.Status.FAILED
    assert job.message.startswith("The import stopped on an unexpected error and was undone: nothing was imported.")
    assert (label_counts(dataset), files_under(dataset.folder)) == before  # no new label, no orphan file


def test_import_with_only_bad_files_adds_nothing_and_says_why(dataset):
    job = queue(dataset, make_zip({"cats/a.txt": b"text", "notes.md": b"# hi"}))
    tasks.import_archive.call_local(job.pk)
    job.refresh_from_db()
    assert job.status == ImportJob.Status.SUCCEEDED
    assert job.message == "Added 0 images, rejected 2 files."
    assert dataset.labels.count() == 0
    assert files_under(dataset.folder / "images") == []


def test_task_delivered_twice_runs_the_import_once(dataset):
    job = queue(dataset, image_zip({"cats": 2}))
    tasks.import_archive.call_local(job.pk)
    assert imports.run_import_job(job.pk) is None
    assert dataset.images.count() == 2


def test_cancelling_a_queued_import_stops_it_before_it_starts(dataset):
    job = queue(dataset, image_zip({"cats": 2}))
    imports.cancel_import(job)
    tasks.import_archive.call_local(job.pk)
    job.refresh_from_db()
    assert job.status == ImportJob.Status.CANCELLED
    assert job.message == "Cancelled before it started: nothing was imported."
    assert dataset.images.count() == 0 and not os.path.exists(job.archive_path)


def test_cancelling_a_running_import_undoes_it(dataset, monkeypatch):
    job = queue(dataset, image_zip({"cats": 4}))
    monkeypatch.setattr(background, "PROGRESS_INTERVAL", 0)
    real = imports._Progress.__call__

    def cancel_half_way(progress, done, total):
        if done == 2:
            ImportJob.objects.filter(pk=job.pk).update(cancel_requested=True)
        real(progress, done, total)

    monkeypatch.setattr(imports._Progress, "__call__", cancel_half_way)
    tasks.import_archive.call_local(job.pk)
    job.refresh_from_db()
    assert job.status == ImportJob.Status.CANCELLED
    assert job.message == "Cancelled while it ran and undone: nothing was imported."
    assert files_under(dataset.folder) == []


def test_worker_killed_mid_import_is_marked_interrupted_and_undone_at_startup(dataset):
    """A consumer that died (other pid, no longer alive) left a running job, files and a journal."""
    job = queue(dataset, image_zip({"cats": 2}))
    ImportJob.objects.filter(pk=job.pk).update(
        status=ImportJob.Status.RUNNING,
        worker=f"{socket.gethostname()}:999999999:deadbeef",
        started_at=timezone.now(),
        heartbeat_at=timezone.now(),
    )
    journal = storage.Journal(dataset.folder, f"import-{job.pk}")
    store = storage.ImageStore(dataset.folder, max_bytes=10**7, max_pixels=10**8, journal=journal)
    store.save(noise_image_bytes(1))
    journal.close()
    assert len(files_under(dataset.folder)) == 3

    webapp_tasks.recover_jobs_on_startup()

    job.refresh_from_db()
    assert job.status == ImportJob.Status.INTERRUPTED
    assert job.message == imports.INTERRUPTED_MESSAGE
    assert files_under(dataset.folder) == []
    assert not os.path.exists(job.archive_path)


def test_running_import_of_this_process_is_left_alone(dataset):
    job = queue(dataset, image_zip({"cats": 1}))
    ImportJob.objects.filter(pk=job.pk).update(
        status=ImportJob.Status.RUNNING, worker=background.worker_id(), heartbeat_at=timezone.now()
    )
    assert background.recover_jobs() == 0
    job.refresh_from_db()
    assert job.status == ImportJob.Status.RUNNING


def test_running_import_without_heartbeat_is_marked_interrupted_by_the_periodic_check(dataset):
    job = queue(dataset, image_zip({"cats": 1}))
    ImportJob.objects.filter(pk=job.pk).update(
        status=ImportJob.Status.RUNNING, worker="elsewhere:1:abc", heartbeat_at=timezone.now() - timedelta(minutes=5)
    )
    webapp_tasks.recover_stale_jobs.call_local()
    job.refresh_from_db()
    assert job.status == ImportJob.Status.INTERRUPTED


def test_recovery_runs_when_the_consumer_starts():
    from huey.contrib.djhuey import HUEY

    assert HUEY._startup["recover_jobs_on_startup"] is webapp_tasks.recover_jobs_on_startup
    assert HUEY._startup["clean_files_on_startup"] is tasks.clean_files_on_startup


def test_consumer_stopped_with_sigterm_marks_the_running_import_interrupted(dataset):
    from huey import signals
    from huey.contrib.djhuey import HUEY

    job = queue(dataset, image_zip({"cats": 1}))
    ImportJob.objects.filter(pk=job.pk).update(status=ImportJob.Status.RUNNING, worker=background.worker_id())
    HUEY._emit(signals.SIGNAL_INTERRUPTED, tasks.import_archive.s(job.pk))  # what the consumer sends
    job.refresh_from_db()
    assert (job.status, job.message) == (ImportJob.Status.INTERRUPTED, imports.INTERRUPTED_MESSAGE)


def test_abandoned_upload_journal_is_undone_after_its_grace_period(dataset):
    journal = storage.Journal(dataset.folder, "upload-abc")
    storage.ImageStore(dataset.folder, max_bytes=10**7, max_pixels=10**8, journal=journal).save(noise_image_bytes(3))
    journal.close()
    recovery.clean_abandoned_files()
    assert len(files_under(dataset.folder)) == 3  # a recent upload may still be running
    old = (timezone.now() - timedelta(hours=2)).timestamp()
    for path in files_under(dataset.folder):  # the files were written with their journal lines
        os.utime(path, (old, old))
    recovery.clean_abandoned_files()
    assert files_under(dataset.folder) == []


def test_export_then_import_gives_the_same_dataset(dataset, alice):
    tasks.import_archive.call_local(queue(dataset, image_zip({"cats": 7, "dogs": 4, "owls": 3})).pk)
    Label.objects.filter(dataset=dataset, name="owls").update(description="Night birds")
    dataset.redraw_splits(seed=5)
    exported = b"".join(exports.stream(dataset))

    copy = Dataset.objects.create(name="Pets copy", created_by=alice)
    job = queue(copy, exported)
    tasks.import_archive.call_local(job.pk)
    job.refresh_from_db()
    assert job.message == "Added 14 images."

    def content(ds):
        return sorted(ds.images.values_list("label__name", "sha256", "split", "original_name", "width"))

    assert content(copy) == content(dataset)
    assert dict(copy.labels.values_list("name", "description")) == dict(
        dataset.labels.values_list("name", "description")
    )
    copy.refresh_from_db()
    assert (copy.split_seed, copy.validation_percent) == (5, 20)


def test_upload_adds_images_to_a_label_and_reports_each_file(dataset, alice):
    label = Label.objects.create(dataset=dataset, name="cats")
    same = noise_image_bytes(1)
    files = [
        SimpleUploadedFile("a.png", same),
        SimpleUploadedFile("b.png", same),
        SimpleUploadedFile("c.png", noise_image_bytes(2)),
        SimpleUploadedFile("notes.txt", b"hello"),
    ]
    report = uploads.add_uploads(dataset, label, files, alice)
    assert (report["added"], report["duplicates"], report["rejected"]) == (2, 1, 1)
    assert report["labels"][0]["rejected_files"][0]["file"] == "notes.txt"
    assert label.images.count() == 2
    assert files_under(dataset.folder / "journal") == []


def test_upload_into_a_new_label_creates_it_only_when_an_image_is_kept(dataset, alice):
    report = uploads.add_uploads(dataset, "owls", [SimpleUploadedFile("x.txt", b"no")], alice)
    assert report["rejected"] == 1 and not dataset.labels.exists()
    report = uploads.add_uploads(dataset, "owls", [SimpleUploadedFile("o.png", noise_image_bytes(4))], alice)
    assert report["labels"][0]["new"] is True
    assert dataset.labels.get().name == "owls"


def test_upload_that_fails_half_way_leaves_no_files(dataset, alice, monkeypatch):
    label = Label.objects.create(dataset=dataset, name="cats")
    monkeypatch.setattr(DatasetImage.objects, "bulk_create", lambda *a, **k: (_ for _ in ()).throw(OSError("disk")))
    with pytest.raises(OSError):
        uploads.add_uploads(dataset, label, [SimpleUploadedFile("a.png", noise_image_bytes(1))], alice)
    assert files_under(dataset.folder) == []
    assert label.images.count() == 0


def test_import_marked_interrupted_meanwhile_does_not_commit_its_rows(dataset, monkeypatch):
    """Another consumer decided this worker was dead: the finishing worker must not win."""
    job = queue(dataset, image_zip({"cats": 3}))
    real = imports._Progress.__call__

    def recovered_elsewhere(progress, done, total):
        real(progress, done, total)
        if done == total:
            ImportJob.transition(job.pk, ImportJob.Status.INTERRUPTED, message=imports.INTERRUPTED_MESSAGE)

    monkeypatch.setattr(imports._Progress, "__call__", recovered_elsewhere)
    tasks.import_archive.call_local(job.pk)
    job.refresh_from_db()
    assert (job.status, job.message) == (ImportJob.Status.INTERRUPTED, imports.INTERRUPTED_MESSAGE)
    assert not dataset.images.exists() and not dataset.labels.exists()
    assert files_under(dataset.folder) == []


def test_dataset_deleted_during_the_import_leaves_no_folder(dataset, monkeypatch):
    job = queue(dataset, image_zip({"cats": 3}))
    folder = dataset.folder
    real = imports._Progress.__call__

    def delete_half_way(progress, done, total):
        if done == 2:
            Dataset.objects.filter(pk=dataset.pk).delete()  # the job row goes with it
        real(progress, done, total)

    monkeypatch.setattr(background, "PROGRESS_INTERVAL", 0)
    monkeypatch.setattr(imports._Progress, "__call__", delete_half_way)
    tasks.import_archive.call_local(job.pk)
    assert not folder.exists()
    assert not os.path.exists(job.archive_path)


def test_zip_of_an_interrupted_job_is_removed_and_a_fresh_upload_is_kept(dataset):
    interrupted = queue(dataset, image_zip({"cats": 1}))
    ImportJob.objects.filter(pk=interrupted.pk).update(status=ImportJob.Status.FAILED)
    orphan = write(imports.archives_dir() / "just-uploaded.zip", b"PK\x05\x06" + b"\0" * 18)
    recovery.clean_abandoned_files()
    assert not os.path.exists(interrupted.archive_path)
    assert orphan.exists()  # its job row may not have committed yet
    old = (timezone.now() - timedelta(days=2)).timestamp()
    os.utime(orphan, (old, old))
    recovery.clean_abandoned_files()
    assert not orphan.exists()


# --- A manifest that cannot be used (finding 10) ------------------------------------------------


@pytest.mark.parametrize(
    "manifest",
    [
        b'{"dataset": {"validation_percent": 20, "test_percent": 0, "split_seed": 1e400}}',
        b'{"dataset": {"validation_percent": 1e400, "test_percent": 0, "split_seed": 1}}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"labels": {"cats": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
        b'{"dataset": {"validation_percent": 20, "test_percent": 0, "split_seed": 1' + b"0" * 5000 + b"}}",
        b'{"dataset": [1, 2], "labels": "cats", "splits": 3}',
    ],
    ids=["seed-1e400", "percent-1e400", "deep", "deep-label", "huge-int", "wrong-types"],
)
def test_import_with_a_manifest_that_cannot_be_used_goes_on_with_a_note(dataset, manifest):
    data = make_zip(
        {"cats/a.png": noise_image_bytes(1), "cats/b.png": noise_image_bytes(2), "transferlab.json": manifest}
    )
    job = queue(dataset, data)
    tasks.import_archive.call_local(job.pk)
    job.refresh_from_db()
    assert (job.status, job.message) == (ImportJob.Status.SUCCEEDED, "Added 2 images.")
    assert "transferlab.json could not be read; splits were drawn afresh." in job.report["notes"]
    dataset.refresh_from_db()
    assert (dataset.validation_percent, dataset.test_percent, dataset.split_seed) == (20, 0, 0)


def test_manifest_values_out_of_range_are_not_restored(dataset):
    manifest = b'{"dataset": {"validation_percent": 95, "test_percent": 0, "split_seed": 4294967296}}'
    job = queue(dataset, make_zip({"cats/a.png": noise_image_bytes(1), "transferlab.json": manifest}))
    tasks.import_archive.call_local(job.pk)
    job.refresh_from_db()
    assert job.status == ImportJob.Status.SUCCEEDED
    dataset.refresh_from_db()
    assert (dataset.validation_percent, dataset.split_seed) == (20, 0)


# --- Rows of an import that did not finish (finding 3's cleanup) ------------------------------


def _half_written_import(dataset: Dataset, status: str, worker: str = "") -> tuple[ImportJob, DatasetImage]:
    """A job whose worker died after committing a label and one batch of rows, with their files journalled."""
    job = queue(dataset, image_zip({"owls": 1}))
    ImportJob.objects.filter(pk=job.pk).update(
        status=status, worker=worker, started_at=timezone.now(), heartbeat_at=timezone.now()
    )
    journal = storage.Journal(dataset.folder, f"import-{job.pk}")
    stored = storage.ImageStore(dataset.folder, max_bytes=10**7, max_pixels=10**8, journal=journal).save(
        noise_image_bytes(77)
    )
    journal.close()
    owls = Label.objects.create(dataset=dataset, name="owls", import_job=job)
    image = DatasetImage.objects.create(
        dataset=dataset, label=owls, sha256=stored.sha256, original_name="o.png", format=stored.format,
        width=stored.width, height=stored.height, import_job=job,
    )  # fmt: skip
    return job, image


def test_worker_killed_while_writing_rows_is_undone_at_startup(dataset):
    tasks.import_archive.call_local(queue(dataset, image_zip({"cats": 2})).pk)
    before = (label_counts(dataset), files_under(dataset.folder))
    job, _ = _half_written_import(
        dataset, ImportJob.Status.RUNNING, worker=f"{socket.gethostname()}:999999999:deadbeef"
    )
    webapp_tasks.recover_jobs_on_startup()
    job.refresh_from_db()
    assert job.status == ImportJob.Status.INTERRUPTED
    assert (label_counts(dataset), files_under(dataset.folder)) == before


def test_rows_of_an_import_stopped_with_sigterm_are_removed_by_the_file_cleaner(dataset):
    """SIGTERM marks the job interrupted without releasing it (its thread may still run); the cleaner does."""
    tasks.import_archive.call_local(queue(dataset, image_zip({"cats": 2})).pk)
    before = (label_counts(dataset), files_under(dataset.folder))
    _half_written_import(dataset, ImportJob.Status.INTERRUPTED)
    recovery.clean_abandoned_files()
    assert (label_counts(dataset), files_under(dataset.folder)) == before


def test_rows_of_a_running_import_are_left_alone_by_the_file_cleaner(dataset):
    _, image = _half_written_import(dataset, ImportJob.Status.RUNNING, worker=background.worker_id())
    recovery.clean_abandoned_files()
    assert DatasetImage.objects.filter(pk=image.pk).exists() and image.path.exists()


def test_deleting_an_unfinished_import_job_removes_its_rows(dataset, django_capture_on_commit_callbacks):
    job, image = _half_written_import(dataset, ImportJob.Status.FAILED)
    with django_capture_on_commit_callbacks(execute=True):
        job.delete()
    assert not dataset.images.exists() and not dataset.labels.exists()
    assert not image.path.exists()


def test_deleting_a_finished_import_job_keeps_what_it_imported(dataset):
    job = queue(dataset, image_zip({"cats": 2}))
    tasks.import_archive.call_local(job.pk)
    ImportJob.objects.filter(pk=job.pk).delete()
    assert label_counts(dataset) == {"cats": 2}
    assert set(dataset.images.values_list("import_job", flat=True)) == {None}


# --- Uploads killed mid-request (finding 17) ---------------------------------------------------


def _killed_upload(dataset: Dataset, label: Label, seed: int, monkeypatch) -> storage.Journal:
    """An upload whose process died in its transaction: files and journal stay, as a SIGKILL leaves them."""
    journals = []
    real = storage.Journal

    def keep(folder, name):
        journals.append(real(folder, name))
        return journals[-1]

    with monkeypatch.context() as patch:
        patch.setattr(storage, "Journal", keep)
        patch.setattr(uploads, "undo_journal", lambda *args: 0)  # the except clause never runs
        patch.setattr(uploads, "_save_uploads", lambda *args: (_ for _ in ()).throw(SystemExit))
        with pytest.raises(SystemExit):
            uploads.add_uploads(dataset, label, [SimpleUploadedFile("a.png", noise_image_bytes(seed))], None)
    journals[0].close()
    return journals[0]


def _age(path, hours: float = 2) -> None:
    old = (timezone.now() - timedelta(hours=hours)).timestamp()
    os.utime(path, (old, old))


def test_killed_upload_leaves_files_that_the_cleaner_removes_after_the_grace(dataset, monkeypatch):
    label = Label.objects.create(dataset=dataset, name="cats")
    journal = _killed_upload(dataset, label, 5, monkeypatch)
    assert len(files_under(dataset.folder)) == 3
    _age(journal.path)
    for path in files_under(dataset.folder):
        _age(path)
    recovery.clean_abandoned_files()
    assert files_under(dataset.folder) == []


def test_cleaner_keeps_a_file_that_a_live_upload_wrote_again(dataset, alice, monkeypatch):
    """The same picture uploaded again after the kill: its new file must survive the old journal's undo,
    even when the new upload's row commits only after the cleaner looked at the rows."""
    label = Label.objects.create(dataset=dataset, name="cats")
    journal = _killed_upload(dataset, label, 6, monkeypatch)
    _age(journal.path)
    fresh = storage.Journal(dataset.folder, "upload-live")
    storage.ImageStore(dataset.folder, max_bytes=10**7, max_pixels=10**8, journal=fresh).save(noise_image_bytes(6))
    fresh.close()  # the live upload has written its files; its row is not committed yet
    recovery.clean_abandoned_files()
    assert len(files_under(dataset.folder / "images")) == 1
    assert len(files_under(dataset.folder / "thumbs")) == 1


def test_killed_upload_into_a_deleted_dataset_leaves_no_folder(dataset, monkeypatch):
    label = Label.objects.create(dataset=dataset, name="cats")
    journal = _killed_upload(dataset, label, 7, monkeypatch)
    folder = dataset.folder
    Dataset.objects.filter(pk=dataset.pk).delete()  # its folder goes on commit; the upload wrote after that
    _age(journal.path)
    recovery.clean_abandoned_files()
    assert not folder.exists()


def test_folder_of_a_dataset_deleted_by_a_killed_request_is_removed(dataset):
    """The delete committed but the process died before the on-commit callback removed the folder."""
    tasks.import_archive.call_local(queue(dataset, image_zip({"cats": 2})).pk)
    folder = dataset.folder
    Dataset.objects.filter(pk=dataset.pk).delete()  # the test's transaction never commits: no callback
    assert folder.exists()
    recovery.clean_abandoned_files()
    assert not folder.exists()


def test_an_import_that_starts_while_the_cleaner_runs_keeps_its_files(dataset, monkeypatch):
    """The import is queued, claimed and writes its first file after the cleaner read the active jobs."""
    tasks.import_archive.call_local(queue(dataset, image_zip({"dogs": 1})).pk)  # the folder exists
    real = storage.journals
    started = []

    def import_starts_now(folder):
        job = queue(dataset, image_zip({"cats": 1}, seed=30))
        ImportJob.claim(job.pk)
        journal = storage.Journal(dataset.folder, f"import-{job.pk}")
        storage.ImageStore(dataset.folder, max_bytes=10**7, max_pixels=10**8, journal=journal).save(
            noise_image_bytes(8)
        )
        journal.close()
        started.append(job)
        return real(folder)

    monkeypatch.setattr(storage, "journals", import_starts_now)
    recovery.clean_abandoned_files()
    assert len(files_under(dataset.folder / "images")) == 2
    assert imports.journal_path(started[0]).exists()
