"""Huey tasks of the datasets app: thin wrappers; the work and its state live in `training.imports`.

Huey delivers at most once and a SIGKILL loses the running task (PITFALLS.md), so the state is
in the database: a consumer that starts marks the imports its predecessor left "running" as
interrupted and undoes their files; a periodic task does the same for workers that vanished.
"""

from __future__ import annotations

import logging

from django.db import close_old_connections
from huey import crontab
from huey import signals as huey_signals
from huey.contrib.djhuey import HUEY, db_periodic_task, db_task

from training import imports, recovery

logger = logging.getLogger(__name__)


@db_task()
def import_archive(job_id: int) -> None:
    """Import the zip of ImportJob `job_id` (queued by `imports.start_import` after its commit)."""
    imports.run_import_job(job_id)


@HUEY.on_startup()
def recover_imports_on_startup() -> None:
    """Runs when each worker starts, before it takes a task."""
    close_old_connections()
    try:
        count = recovery.recover()
        if count:
            logger.warning("Marked %d interrupted import(s) as failed.", count)
    except Exception:  # a broken database must not stop the consumer from starting
        logger.exception("Could not check for interrupted imports.")
    finally:
        close_old_connections()


@db_periodic_task(crontab(minute="*/5"))
def recover_stale_imports() -> None:
    """Catches workers that died on another machine, and uploads a killed web process left."""
    recovery.recover()


@HUEY.signal(huey_signals.SIGNAL_INTERRUPTED)
def record_interrupted_import(signal, task, *args, **kwargs) -> None:
    """SIGTERM stopped the consumer during an import: record it now; the next start undoes the files."""
    if not isinstance(task, import_archive.task_class) or not task.args:
        return
    close_old_connections()
    try:
        recovery.interrupt(int(task.args[0]))
    finally:
        close_old_connections()
