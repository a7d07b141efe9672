"""Consumers side by side, in one process: what one consumer does never harms another's jobs.

A task delivered twice never harms its job, even when the consumer holding the copy is stopped.
Copies happen: recovery queues again a job whose task looks lost (`webapp.background.redispatch_lost`),
and a broker may deliver twice. The copy does nothing (`Job.claim`), and a consumer stopped while it
holds one records as interrupted only the jobs it claimed itself: the job another consumer runs goes on.

Several consumers recover at once (each runs the minute's check): one that finds the files of a dead
job already being removed by another still recovers the other dead jobs.

tests/test_several_consumers.py shows the same with real consumer processes.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta

import pytest
from huey import signals
from huey.contrib.djhuey import HUEY

from tests.dataset_helpers import image_zip, write
from training import imports, tasks
from training.models import Dataset, ImportJob, TrainingJob
from training.queue import TRAINING_HUEY
from webapp import background

pytestmark = pytest.mark.django_db

# A consumer that is alive, next to this one: its jobs are not this process's to record.
OTHER_CONSUMER = f"{socket.gethostname()}:{os.getppid()}:othertoken"
# A consumer of this machine that no longer exists.
DEAD_CONSUMER = f"{socket.gethostname()}:999999999:gone"


@pytest.fixture
def dataset(alice) -> Dataset:
    return Dataset.objects.create(name="Pets", created_by=alice)


def running_import(dataset: Dataset, worker: str) -> ImportJob:
    path = write(imports.archives_dir() / "pets.zip", image_zip({"cats": 1}))
    job = ImportJob.objects.create(
        dataset=dataset, archive_name="pets.zip", archive_path=str(path), archive_size=path.stat().st_size
    )
    ImportJob.objects.filter(pk=job.pk).update(status=ImportJob.Status.RUNNING, worker=worker)
    return job


def running_training(dataset: Dataset, worker: str) -> TrainingJob:
    return TrainingJob.objects.create(
        dataset=dataset,
        base_key="mobilenetv2",
        base_name="MobileNetV2",
        status=TrainingJob.Status.RUNNING,
        worker=worker,
    )


def test_a_consumer_stopped_while_it_holds_a_copy_of_another_consumers_import_leaves_it_running(dataset):
    job = running_import(dataset, OTHER_CONSUMER)
    HUEY._emit(signals.SIGNAL_INTERRUPTED, tasks.import_archive.s(job.pk))  # what this consumer sends when stopped
    job.refresh_from_db()
    assert job.status == ImportJob.Status.RUNNING
    assert os.path.exists(job.archive_path)  # the zip the other consumer reads stays


def test_a_training_worker_stopped_while_it_holds_a_copy_of_another_workers_job_leaves_it_running(dataset):
    job = running_training(dataset, OTHER_CONSUMER)
    TRAINING_HUEY._emit(signals.SIGNAL_INTERRUPTED, tasks.train.s(job.pk))
    job.refresh_from_db()
    assert job.status == TrainingJob.Status.RUNNING


def test_a_training_worker_stopped_during_its_own_job_records_it_as_interrupted(dataset):
    job = running_training(dataset, background.worker_id())
    TRAINING_HUEY._emit(signals.SIGNAL_INTERRUPTED, tasks.train.s(job.pk))
    job.refresh_from_db()
    assert (job.status, job.message) == (TrainingJob.Status.INTERRUPTED, TrainingJob.INTERRUPTED_MESSAGE)


def test_the_copy_of_a_running_job_does_nothing(dataset):
    job = running_import(dataset, OTHER_CONSUMER)
    tasks.import_archive.call_local(job.pk)
    job.refresh_from_db()
    assert (job.status, job.worker) == (ImportJob.Status.RUNNING, OTHER_CONSUMER)
    assert os.path.exists(job.archive_path)


def test_a_clean_up_that_fails_half_way_does_not_stop_the_recovery_of_other_jobs(dataset, monkeypatch, alice):
    """Another consumer's clean-up removed some of the dead import's files first: this one goes on."""
    dead_import = running_import(dataset, DEAD_CONSUMER)
    dead_training = running_training(Dataset.objects.create(name="Birds", created_by=alice), DEAD_CONSUMER)

    def removed_meanwhile(self):
        raise FileNotFoundError("thumbs/ab/ab12.jpg was removed by another consumer meanwhile")

    monkeypatch.setattr(ImportJob, "release_files", removed_meanwhile)
    assert background.recover_jobs() == 2
    assert ImportJob.objects.get(pk=dead_import.pk).status == ImportJob.Status.INTERRUPTED
    assert TrainingJob.objects.get(pk=dead_training.pk).status == TrainingJob.Status.INTERRUPTED


# A consumer on another machine: no pid of it can be checked here, only its heartbeat.
ELSEWHERE = "gpu-1:4242:elsewhere"


@pytest.mark.parametrize("skew", [-10, +10], ids=["worker-clock-behind", "worker-clock-ahead"])
def test_heartbeats_go_by_the_databases_clock_so_a_skewed_machine_is_not_taken_for_dead(dataset, monkeypatch, skew):
    """Machines' clocks drift; a worker whose clock is 10 minutes off must not have its live job interrupted
    by another machine's recovery (STALE_AFTER is 2 minutes)."""
    job = running_training(dataset, ELSEWHERE)
    real_now = background.timezone.now
    monkeypatch.setattr(background.timezone, "now", lambda: real_now() + timedelta(minutes=skew))
    monkeypatch.setattr(background, "worker_id", lambda: ELSEWHERE)
    background.Progress(TrainingJob, job.pk)(force=True)  # the skewed worker's heartbeat
    monkeypatch.undo()

    assert background.recover_jobs() == 0  # judged here, by the same clock that stamped the beat
    assert TrainingJob.objects.get(pk=job.pk).status == TrainingJob.Status.RUNNING


def test_a_silent_worker_elsewhere_is_still_found_dead_by_its_heartbeat(dataset):
    job = running_training(dataset, ELSEWHERE)
    stale = background.database_now() - background.STALE_AFTER - timedelta(seconds=5)
    TrainingJob.objects.filter(pk=job.pk).update(heartbeat_at=stale)
    assert background.recover_jobs() == 1
    assert TrainingJob.objects.get(pk=job.pk).status == TrainingJob.Status.INTERRUPTED
