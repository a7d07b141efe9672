"""Huey tasks of the training app: thin wrappers; the work and its state live in `imports` and `jobs`.

Zip imports go to the main queue (with weights downloads); training jobs to the training queue
(`training.queue`), consumed by their own worker, so neither holds up the other. Huey delivers at
most once and a SIGKILL loses the running task: the state is in the database and jobs are recovered
by the one job machine (`webapp.background`). Here also: what an import or an upload leaves on
disk when it dies, and SIGTERM during a job.
"""

from __future__ import annotations

import logging

from huey import crontab
from huey import signals as huey_signals
from huey.contrib.djhuey import HUEY, close_db, db_periodic_task, db_task

from training import analysis, imports, jobs, recovery
from training.models import ImportJob, TrainingJob
from training.queue import TRAINING_HUEY
from webapp import background
from webapp.tasks import recover_now

logger = logging.getLogger(__name__)


@db_task()
def import_archive(job_id: int) -> None:
    """Import the zip of ImportJob `job_id` (queued by `imports.start_import` after its commit)."""
    imports.run_import_job(job_id)


@TRAINING_HUEY.task()
@close_db
def train(job_id: int) -> None:
    """Run TrainingJob `job_id` (queued by `jobs.start_training` after its commit)."""
    jobs.run_training_job(job_id)


@db_task()
def find_suspects(job_id: int) -> None:
    """Suspected label errors and near-duplicates of finished TrainingJob `job_id` (queued by `analysis.request`).

    On the main queue: seconds of NumPy on cached features, never behind an hour of training.
    """
    analysis.run(job_id)


# Recovery queues a job again through its task when the task was lost (webapp.background).
background.runs_with(ImportJob, import_archive, ready=imports.archive_in_place)
background.runs_with(TrainingJob, train)


@TRAINING_HUEY.on_startup()
def recover_jobs_on_training_worker_startup() -> None:
    """A training worker that starts (maybe on another machine) recovers jobs of dead workers too,
    then removes the folders of jobs that will never finish."""
    recover_now()
    background.close_consumer_connections()
    try:
        jobs.clean_abandoned_folders()
    except Exception:
        logger.exception("Could not clean the folders of interrupted training jobs.")
    finally:
        background.close_consumer_connections()


@TRAINING_HUEY.signal(huey_signals.SIGNAL_INTERRUPTED)
def record_interrupted_training(signal, task, *args, **kwargs) -> None:
    """Ctrl-C stopped the training worker during a job: record it now (its thread may still run).

    Only a job this worker claimed: the task may be a second delivery of a job another worker runs.
    """
    if not isinstance(task, train.task_class) or not task.args:
        return
    background.close_consumer_connections()
    try:
        background.interrupt(TrainingJob, int(task.args[0]), release_files=False, claimed_by=background.worker_id())
    finally:
        background.close_consumer_connections()


@HUEY.on_startup()
def clean_files_on_startup() -> None:
    """Runs when each worker starts, before it takes a task (after job recovery, see webapp.tasks)."""
    background.close_consumer_connections()
    try:
        recovery.clean_abandoned_files()
    except Exception:  # a broken database must not stop the consumer from starting
        logger.exception("Could not clean files left by interrupted imports and uploads.")
    finally:
        background.close_consumer_connections()


@db_periodic_task(crontab(minute="*/5"))
def clean_abandoned_files() -> None:
    """Catches uploads a killed web process left behind, and folders of jobs that ended mid-way."""
    recovery.clean_abandoned_files()
    jobs.clean_abandoned_folders()


@HUEY.signal(huey_signals.SIGNAL_INTERRUPTED)
def record_interrupted_import(signal, task, *args, **kwargs) -> None:
    """SIGTERM stopped the consumer during an import: record it now; the next start undoes the files.

    Only a job this consumer claimed: the task may be a second delivery of an import another one runs.
    """
    if not isinstance(task, import_archive.task_class) or not task.args:
        return
    background.close_consumer_connections()
    try:
        job_id = int(task.args[0])
        if background.interrupt(ImportJob, job_id, release_files=False, claimed_by=background.worker_id()):
            path = ImportJob.objects.filter(pk=job_id).values_list("archive_path", flat=True).first()
            imports.remove_archive(path or "")  # unlinking a file still open for reading is fine on POSIX
    finally:
        background.close_consumer_connections()
