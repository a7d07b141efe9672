"""A job queued in the database whose task was lost is queued again, and only then.

The database is the truth for queued jobs too: Redis flushed, a SQLite queue file replaced, or a web
process killed between its commit and the enqueue leave a job "queued" that no worker will ever
see. The minute's recovery check (and a consumer that starts) queues such a job again once it has
waited REDISPATCH_AFTER; a job whose task still waits in its queue is left alone, and a duplicate
delivery runs nothing twice.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from django.utils import timezone
from huey.contrib.djhuey import HUEY

from classifier.models import Int8Calibration, WeightsDownload
from tests.dataset_helpers import image_zip, write
from training import imports, tasks
from training.models import Dataset, DatasetImage, ImportJob, TrainingJob
from training.queue import TRAINING_HUEY
from webapp import background
from webapp import tasks as webapp_tasks

pytestmark = pytest.mark.django_db

LONG_AGO = timedelta(minutes=10)


@pytest.fixture
def queues(immediate_tasks):
    """The real queues (SqliteHuey, or Redis under TEST_BACKENDS=postgresql), empty, with no consumer."""
    HUEY.immediate = TRAINING_HUEY.immediate = False
    HUEY.flush()
    TRAINING_HUEY.flush()
    yield
    HUEY.flush()
    TRAINING_HUEY.flush()


@pytest.fixture
def dataset(alice) -> Dataset:
    return Dataset.objects.create(name="Pets", created_by=alice)


def queued_import(dataset: Dataset, *, age: timedelta = LONG_AGO) -> ImportJob:
    """An import the web process recorded `age` ago, its zip waiting; its task is not queued here."""
    path = write(imports.archives_dir() / f"pets-{ImportJob.objects.count()}.zip", image_zip({"cats": 3, "dogs": 2}))
    return ImportJob.objects.create(
        dataset=dataset,
        archive_name="pets.zip",
        archive_path=str(path),
        archive_size=path.stat().st_size,
        created_at=timezone.now() - age,
    )


def waiting(queue) -> list[tuple[str, tuple]]:
    """What waits in a queue: (task name, arguments) per delivery."""
    return [(type(task).__name__, task.args) for task in queue.pending()]


def test_an_import_whose_task_was_lost_is_done_after_the_minutes_check(dataset):
    job = queued_import(dataset)

    webapp_tasks.recover_stale_jobs.call_local()  # tasks run at once in these tests

    job.refresh_from_db()
    assert job.status == ImportJob.Status.SUCCEEDED, job.message
    assert DatasetImage.objects.filter(dataset=dataset).count() == 5


def test_a_consumer_that_starts_queues_lost_tasks_again_too(dataset):
    job = queued_import(dataset)
    webapp_tasks.recover_jobs_on_startup()
    job.refresh_from_db()
    assert job.status == ImportJob.Status.SUCCEEDED


def test_each_kind_of_job_goes_back_to_its_own_queue_once(queues, dataset):
    old = timezone.now() - LONG_AGO
    job = queued_import(dataset)
    training = TrainingJob.objects.create(
        dataset=dataset, base_key="mobilenetv2", base_name="MobileNetV2", created_at=old
    )
    download = WeightsDownload.objects.create(model_key="vgg16", created_at=old)
    calibration = Int8Calibration.objects.create(
        model_key="mobilenetv2", source_kind="training", source="Training images", created_at=old
    )

    assert background.redispatch_lost() == 4

    assert sorted(waiting(HUEY)) == sorted(
        [("import_archive", (job.pk,)), ("download_weights", (download.pk,)), ("calibrate_int8", (calibration.pk,))]
    )
    assert waiting(TRAINING_HUEY) == [("train", (training.pk,))]
    # The next minute's check finds them waiting: the queues do not fill up with copies.
    assert background.redispatch_lost() == 0
    assert len(waiting(HUEY)) == 3 and len(waiting(TRAINING_HUEY)) == 1


def test_a_job_whose_task_waits_in_its_queue_is_left_alone(queues, dataset):
    """Behind an hour of training, a queued job waits long: its task is there, so nothing is added."""
    job = queued_import(dataset)
    tasks.import_archive(job.pk)  # as the web process queued it
    assert background.redispatch_lost() == 0
    assert waiting(HUEY) == [("import_archive", (job.pk,))]


def test_a_job_queued_moments_ago_is_left_to_the_enqueue_that_follows_its_commit(queues, dataset):
    queued_import(dataset, age=timedelta(seconds=5))
    assert background.redispatch_lost() == 0
    assert waiting(HUEY) == []


def test_only_queued_jobs_are_queued_again(queues, dataset):
    for status in (ImportJob.Status.SUCCEEDED, ImportJob.Status.CANCELLED, ImportJob.Status.RUNNING):
        job = queued_import(dataset)
        ImportJob.objects.filter(pk=job.pk).update(status=status, worker=background.worker_id())
    assert background.redispatch_lost() == 0
    assert waiting(HUEY) == []


def test_the_lost_task_turning_up_after_all_changes_nothing(dataset):
    """The check cannot tell a lost task from one a worker took a moment ago: the second delivery is a no-op."""
    job = queued_import(dataset)
    webapp_tasks.recover_stale_jobs.call_local()
    job.refresh_from_db()
    finished_at = job.finished_at

    tasks.import_archive.call_local(job.pk)  # the original delivery, late

    job.refresh_from_db()
    assert job.status == ImportJob.Status.SUCCEEDED and job.finished_at == finished_at
    assert DatasetImage.objects.filter(dataset=dataset).count() == 5


def test_a_queue_that_cannot_be_read_does_not_stop_recovery(dataset, monkeypatch):
    """Redis down: the interrupted jobs are still marked, and nothing is queued blindly."""
    job = queued_import(dataset)
    ImportJob.objects.filter(pk=job.pk).update(
        status=ImportJob.Status.RUNNING, worker="gone-host:1:abc", heartbeat_at=timezone.now() - timedelta(hours=1)
    )
    stuck = queued_import(Dataset.objects.create(name="Birds", created_by=dataset.created_by))

    def unreachable(task):
        raise ConnectionError("Redis is down")

    monkeypatch.setattr(background, "_waiting_ids", unreachable)
    webapp_tasks.recover_stale_jobs.call_local()

    assert ImportJob.objects.get(pk=job.pk).status == ImportJob.Status.INTERRUPTED
    assert ImportJob.objects.get(pk=stuck.pk).status == ImportJob.Status.QUEUED


def test_an_import_whose_zip_is_not_in_place_yet_is_left_queued(queues, dataset):
    """`manage.py import_dataset` records the job, then copies a large zip: minutes, with no task to lose."""
    job = queued_import(dataset)
    os.unlink(job.archive_path)  # still being copied under a temporary name
    assert background.redispatch_lost() == 0
    assert waiting(HUEY) == []
