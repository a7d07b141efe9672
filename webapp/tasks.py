"""Huey tasks of the project itself: recovery of every kind of background job.

Huey delivers at most once and a SIGKILL loses the running task, so each job's state is a row
(`webapp.background`). A consumer that starts, and every consumer once a minute, marks the jobs
whose worker is provably gone as interrupted; a live consumer's jobs are never touched. The same
check queues again the jobs still queued in the database whose task was lost (`redispatch_lost`).
"""

from __future__ import annotations

import logging

from huey import crontab
from huey.contrib.djhuey import HUEY, db_periodic_task

from webapp import background

logger = logging.getLogger(__name__)


def recover() -> int:
    """Mark the jobs of gone workers interrupted, then queue again the jobs whose task was lost.

    Returns how many were interrupted. A queue that cannot be read (Redis down) does not stop the first part.
    """
    count = background.recover_jobs()
    if count:
        logger.warning("Marked %d interrupted job(s).", count)
    try:
        background.redispatch_lost()
    except Exception:
        logger.exception("Could not look for queued jobs whose task was lost.")
    return count


def recover_now() -> int:
    """Run recovery with fresh database connections; a broken database never stops a consumer."""
    background.close_consumer_connections()
    try:
        return recover()
    except Exception:
        logger.exception("Could not check for interrupted jobs.")
        return 0
    finally:
        background.close_consumer_connections()


@HUEY.on_startup()
def recover_jobs_on_startup() -> None:
    """Runs when each consumer starts, before it takes a task."""
    recover_now()


@db_periodic_task(crontab(minute="*"))
def recover_stale_jobs() -> None:
    """Catches workers that died on another machine (their heartbeat stops), and tasks that were lost."""
    recover()
