"""Huey tasks of the inference app: thin wrappers; the work and its state live in `classifier.installs`.

Huey delivers at most once and a SIGKILL loses the running task (PITFALLS.md): the download's
state is a database row, and a worker that starts marks the downloads its predecessor left
"running" as failed, so the Models page never shows a download that nobody is doing.
"""

from __future__ import annotations

import logging

from django.db import close_old_connections
from huey.contrib.djhuey import HUEY, db_task

from classifier import installs

logger = logging.getLogger(__name__)


@db_task()
def download_weights(download_id: int) -> None:
    """Fetch the file of WeightsDownload `download_id` (queued by `installs.request_download`)."""
    installs.run_download(download_id)


@HUEY.on_startup()
def recover_downloads_on_startup() -> None:
    """Runs when each worker starts, before it takes a task."""
    close_old_connections()
    try:
        count = installs.recover_downloads()
        if count:
            logger.warning("Marked %d interrupted weights download(s) as failed.", count)
    except Exception:  # a broken database must not stop the consumer from starting
        logger.exception("Could not check for interrupted weights downloads.")
    finally:
        close_old_connections()
