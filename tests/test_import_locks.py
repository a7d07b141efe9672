"""A zip import never blocks the other writers: the label cap, short transactions, and their cleanup.

The timing tests run on a real SQLite file in WAL mode with the production options (IMMEDIATE
transactions, 20 s busy timeout), because the in-memory test database locks whole tables and
ignores the busy timeout. The import runs in one thread while others write, each through its own
connection, as the worker and the web processes do. With TEST_BACKENDS=postgresql they run on the
test server's database as it is, the probe's lock timeout standing in for SQLite's busy timeout.
"""

from __future__ import annotations

import io
import json
import sqlite3
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import OperationalError, connection, transaction

from classifier.models import Prediction
from tests.dataset_helpers import image_zip, make_zip, write
from tests.helpers import noise_image_bytes
from training import archives, imports, storage
from training.models import Dataset, DatasetImage, ImportJob, Label

pytestmark = pytest.mark.django_db

CAP = 1000  # the default MAX_LABELS_PER_DATASET


# --- A file database shared by threads ---------------------------------------------------------


@pytest.fixture
def file_database(transactional_db, tmp_path: Path) -> Iterator[Path]:
    """The test database copied into a WAL file that every thread's connection opens for this test.

    The in-memory database stays alive in `memory` (closing its last connection would destroy it)
    and is put back afterwards, so pytest-django flushes it as usual. On PostgreSQL every thread's
    connection reaches the test database already: nothing to copy (None).
    """
    if connection.vendor != "sqlite":
        yield None
        return
    connection.ensure_connection()
    memory = connection.connection
    path = tmp_path / "db.sqlite3"
    target = sqlite3.connect(path)
    memory.backup(target)
    target.close()
    settings_dict = connection.settings_dict
    name = settings_dict["NAME"]
    connection.connection = None
    settings_dict["NAME"] = str(path)
    try:
        yield path
    finally:
        connection.close()
        settings_dict["NAME"] = name
        connection.connection = memory


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's journal and transaction modes")
@pytest.mark.django_db(transaction=True)
def test_the_file_database_is_in_wal_mode_with_immediate_transactions(file_database):
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        assert cursor.fetchone()[0] == "wal"
    assert connection.transaction_mode == "IMMEDIATE"


class TransactionClock:
    """How long each outermost `transaction.atomic` block of one thread held the database.

    With IMMEDIATE transactions SQLite takes the write lock at BEGIN, so the time from the end of
    `__enter__` (lock acquired) to the end of `__exit__` (committed) is the time the lock was held.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.durations: list[float] = []
        self.thread: int | None = None
        local = threading.local()
        real_enter, real_exit = transaction.Atomic.__enter__, transaction.Atomic.__exit__

        def enter(atomic):
            outermost = not transaction.get_connection(atomic.using).in_atomic_block
            real_enter(atomic)
            local.__dict__.setdefault("stack", []).append((outermost, time.perf_counter()))

        def exit_(atomic, *exc):
            try:
                return real_exit(atomic, *exc)
            finally:
                outermost, started = local.stack.pop()
                if outermost and threading.get_ident() == self.thread:
                    self.durations.append(time.perf_counter() - started)

        monkeypatch.setattr(transaction.Atomic, "__enter__", enter)
        monkeypatch.setattr(transaction.Atomic, "__exit__", exit_)


class Writer(threading.Thread):
    """Writes a prediction row every few milliseconds, as the classify page and the API do."""

    def __init__(self, user_id: int, busy_timeout: float | None = None) -> None:
        super().__init__(daemon=True)
        self.user_id, self.busy_timeout = user_id, busy_timeout
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.waits: list[float] = []

    def run(self) -> None:
        try:
            connection.ensure_connection()
            if self.busy_timeout is not None and connection.vendor == "sqlite":
                connection.connection.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            elif self.busy_timeout is not None:  # PostgreSQL: how long a statement may wait for a lock
                connection.connection.execute(f"SET lock_timeout = {int(self.busy_timeout * 1000)}")
            while not self.stop.is_set():
                started = time.perf_counter()
                try:
                    Prediction.objects.create(
                        user_id=self.user_id, model_key="m", model_name="m", image="p/x.png", thumbnail="t/x.jpg",
                        original_name="x.png", image_format="PNG", width=1, height=1, top=[], inference_ms=1.0,
                    )  # fmt: skip
                except OperationalError as error:
                    self.errors.append(str(error))
                self.waits.append(time.perf_counter() - started)
                time.sleep(0.005)
        finally:
            connection.close()

    def finish(self) -> None:
        self.stop.set()
        self.join(timeout=30)


class FastStore:
    """Stands in for the image store: the lock test is about rows, not about decoding pictures."""

    def save(self, data: bytes, sha: str | None = None) -> storage.StoredImage:
        return storage.StoredImage(sha256=sha or storage.sha256(data), format="PNG", width=1, height=1, size=len(data))


def cap_zip(labels: int, per_label: int) -> bytes:
    """`labels` label folders of `per_label` distinct small files each (the fast store takes them as pictures)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as zf:
        for label in range(labels):
            for i in range(per_label):
                zf.writestr(f"label {label:04d}/{i}.png", f"{label}-{i}".encode())
    return out.getvalue()


def queue(dataset: Dataset, data: bytes) -> ImportJob:
    path = write(imports.archives_dir() / f"{ImportJob.objects.count()}.zip", data)
    return ImportJob.objects.create(
        dataset=dataset, archive_name="big.zip", archive_path=str(path), archive_size=len(data)
    )


def run_in_thread(job_id: int, clock: TransactionClock | None = None) -> threading.Thread:
    def run() -> None:
        if clock is not None:
            clock.thread = threading.get_ident()
        try:
            imports.run_import_job(job_id)
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


# The worst zip the defaults allow has 1,000 labels and up to 100,000 files; rows go in batches
# of a fixed size, so 1,000 labels of 24 images already shows the longest transaction there is.
PER_LABEL = 24


@pytest.mark.django_db(transaction=True)
def test_no_import_transaction_holds_the_write_lock_over_a_second(file_database, alice, monkeypatch):
    monkeypatch.setattr(imports, "image_store", lambda dataset, journal: FastStore())
    dataset = Dataset.objects.create(name="Big", created_by=alice)
    job = queue(dataset, cap_zip(CAP, PER_LABEL))
    clock = TransactionClock(monkeypatch)
    probe = Writer(alice.pk, busy_timeout=1.0)  # fails if anyone holds the lock for more than a second
    probe.start()
    importer = run_in_thread(job.pk, clock)
    importer.join(timeout=300)
    probe.finish()

    job.refresh_from_db()
    assert job.status == ImportJob.Status.SUCCEEDED, job.message
    assert dataset.labels.count() == CAP and dataset.images.count() == CAP * PER_LABEL
    longest = max(clock.durations)
    print(
        f"\nlongest import transaction: {longest * 1000:.0f} ms of {len(clock.durations)}; longest write "
        f"by another connection: {max(probe.waits) * 1000:.0f} ms; {len(probe.errors)} errors"
    )
    assert longest < 1.0
    assert probe.errors == []


@pytest.mark.django_db(transaction=True)
def test_predictions_written_during_the_largest_allowed_import_all_succeed(file_database, alice, monkeypatch):
    """A writer with the normal busy timeout (20 s), as every web request has, never gets an error."""
    monkeypatch.setattr(imports, "image_store", lambda dataset, journal: FastStore())
    dataset = Dataset.objects.create(name="Big", created_by=alice)
    job = queue(dataset, cap_zip(CAP, PER_LABEL))
    writer = Writer(alice.pk)
    writer.start()
    importer = run_in_thread(job.pk)
    importer.join(timeout=300)
    writer.finish()

    job.refresh_from_db()
    assert job.status == ImportJob.Status.SUCCEEDED, job.message
    assert writer.errors == []
    assert len(writer.waits) > 10 and max(writer.waits) < 1.0


# --- The label cap ------------------------------------------------------------------------------


@pytest.fixture
def dataset(alice) -> Dataset:
    return Dataset.objects.create(name="Pets", created_by=alice)


def run(dataset: Dataset, data: bytes) -> ImportJob:
    job = queue(dataset, data)
    imports.run_import_job(job.pk)
    job.refresh_from_db()
    return job


def test_the_label_cap_defaults_to_a_thousand():
    from training.models import max_labels

    assert max_labels() == CAP


def test_zip_with_more_label_folders_than_the_cap_is_refused_naming_the_limit(dataset, settings):
    settings.MAX_LABELS_PER_DATASET = 3
    job = run(dataset, image_zip({"a": 1, "b": 1, "c": 1, "d": 1}))
    assert job.status == ImportJob.Status.FAILED
    assert "at most 3 labels" in job.message and "ask your administrator to raise the limit" in job.message
    assert not dataset.labels.exists() and not dataset.images.exists()


def test_import_form_refuses_a_zip_with_more_label_folders_than_the_cap(settings):
    """Refused on the web form already, before a job is queued."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from training.forms import ImportForm

    settings.MAX_LABELS_PER_DATASET = 2
    upload = SimpleUploadedFile("pets.zip", image_zip({"a": 1, "b": 1, "c": 1}))
    form = ImportForm(files={"archive": upload})
    assert not form.is_valid()
    assert "a dataset can have at most 2 labels. Nothing was imported" in form.errors["archive"][0]


def test_zip_that_would_take_the_dataset_over_the_cap_is_refused(dataset, settings):
    settings.MAX_LABELS_PER_DATASET = 3
    Label.objects.create(dataset=dataset, name="a")
    Label.objects.create(dataset=dataset, name="b")
    job = run(dataset, image_zip({"A": 1, "c": 1, "d": 1}))  # "A" is the existing "a": two new labels
    assert job.status == ImportJob.Status.FAILED
    assert "at most 3 labels" in job.message
    assert job.message.startswith("The zip would give the dataset 4 labels")
    assert sorted(dataset.labels.values_list("name", flat=True)) == ["a", "b"]


def test_zip_at_the_cap_is_imported(dataset, settings):
    settings.MAX_LABELS_PER_DATASET = 3
    job = run(dataset, image_zip({"a": 1, "b": 1, "c": 1}))
    assert job.status == ImportJob.Status.SUCCEEDED
    assert dataset.labels.count() == 3


def test_manifest_listing_more_labels_than_the_cap_is_refused(dataset):
    """The finding: 400,000 labels in transferlab.json held the write lock for 33 s."""
    manifest = {"format": 1, "labels": {f"label {i}": "" for i in range(CAP + 500)}}
    data = make_zip({"cats/a.png": noise_image_bytes(1), "transferlab.json": json.dumps(manifest).encode()})
    job = run(dataset, data)
    assert job.status == ImportJob.Status.FAILED
    assert "at most 1,000 labels" in job.message and "ask your administrator" in job.message
    assert not dataset.labels.exists() and not dataset.images.exists()


def test_labels_created_meanwhile_count_against_the_cap(dataset, settings, monkeypatch):
    """Someone adds labels while the zip is read: the rows are checked again when they are written."""
    settings.MAX_LABELS_PER_DATASET = 3
    real = imports._Progress.__call__

    def add_labels(progress, done, total):
        if done == total:
            Label.objects.create(dataset=dataset, name="x")
            Label.objects.create(dataset=dataset, name="y")
        real(progress, done, total)

    monkeypatch.setattr(imports._Progress, "__call__", add_labels)
    job = run(dataset, image_zip({"a": 1, "b": 1}))
    assert job.status == ImportJob.Status.FAILED
    assert "at most 3 labels" in job.message
    assert sorted(dataset.labels.values_list("name", flat=True)) == ["x", "y"]
    assert not dataset.images.exists()
    assert not list((dataset.folder / "images").rglob("*.png"))


# --- Short transactions and what an unfinished import leaves ---------------------------------


def test_rows_are_written_in_batches_that_say_which_import_wrote_them(dataset, monkeypatch):
    monkeypatch.setattr(imports, "BULK_BATCH", 2)
    job = run(dataset, image_zip({"cats": 3, "dogs": 2}))
    assert job.status == ImportJob.Status.SUCCEEDED
    assert set(DatasetImage.objects.values_list("import_job", flat=True)) == {job.pk}
    assert set(Label.objects.values_list("import_job", flat=True)) == {job.pk}


def test_failure_after_some_batches_committed_removes_them_and_their_files(dataset, monkeypatch):
    first = run(dataset, image_zip({"cats": 2}))
    before = (sorted(DatasetImage.objects.values_list("sha256", flat=True)), _files(dataset))
    monkeypatch.setattr(imports, "BULK_BATCH", 2)
    real = DatasetImage.objects.bulk_create
    calls = []

    def fail_on_the_third_batch(objs, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return real(objs, *args, **kwargs)

    monkeypatch.setattr(DatasetImage.objects, "bulk_create", fail_on_the_third_batch)
    job = run(dataset, image_zip({"cats": 3, "owls": 3}, seed=40))
    assert job.status == ImportJob.Status.FAILED
    assert len(calls) == 3  # two batches had committed
    assert (sorted(DatasetImage.objects.values_list("sha256", flat=True)), _files(dataset)) == before
    assert list(dataset.labels.values_list("name", "import_job")) == [("cats", first.pk)]


def test_cancel_while_rows_are_written_undoes_the_import(dataset, monkeypatch):
    monkeypatch.setattr(imports, "BULK_BATCH", 2)
    real = DatasetImage.objects.bulk_create
    job_ids = []

    def cancel_after_the_first_batch(objs, *args, **kwargs):
        result = real(objs, *args, **kwargs)
        ImportJob.objects.filter(pk__in=job_ids).update(cancel_requested=True)
        return result

    monkeypatch.setattr(DatasetImage.objects, "bulk_create", cancel_after_the_first_batch)
    job = queue(dataset, image_zip({"cats": 5}))
    job_ids.append(job.pk)
    imports.run_import_job(job.pk)
    job.refresh_from_db()
    assert (job.status, job.message) == (ImportJob.Status.CANCELLED, imports.CANCELLED_MESSAGE)
    assert not dataset.images.exists() and not dataset.labels.exists()
    assert _files(dataset) == []


def test_existing_labels_and_images_survive_a_failed_import_into_them(dataset, monkeypatch):
    run(dataset, image_zip({"cats": 2}))
    kept = sorted(DatasetImage.objects.values_list("pk", flat=True))
    monkeypatch.setattr(archives, "summary", lambda report: 1 / 0)  # fails after the last batch
    job = run(dataset, image_zip({"cats": 2, "dogs": 2}, seed=60))
    assert job.status == ImportJob.Status.FAILED
    assert sorted(DatasetImage.objects.values_list("pk", flat=True)) == kept
    assert list(dataset.labels.values_list("name", flat=True)) == ["cats"]


def test_a_label_the_import_created_stays_when_someone_uploaded_into_it(dataset, alice, monkeypatch):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from training import uploads

    monkeypatch.setattr(archives, "summary", lambda report: 1 / 0)
    real = imports._write_images

    def upload_meanwhile(*args, **kwargs):
        real(*args, **kwargs)
        owls = dataset.labels.get(name="owls")
        uploads.add_uploads(dataset, owls, [SimpleUploadedFile("o.png", noise_image_bytes(500))], alice)

    monkeypatch.setattr(imports, "_write_images", upload_meanwhile)
    job = run(dataset, image_zip({"owls": 2}))
    assert job.status == ImportJob.Status.FAILED
    owls = dataset.labels.get(name="owls")
    assert list(owls.images.values_list("original_name", flat=True)) == ["o.png"]
    assert owls.images.get().path.exists()


def _files(dataset: Dataset) -> list[str]:
    root = dataset.folder
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []
