"""Huey tasks of the inference app: thin wrappers; the work and its state live in `classifier.installs`.

A download's state is a database row of the one job machine (`webapp.background`): a consumer
that dies mid-download is noticed by its missing heartbeat and the row marked interrupted, so the
Models page never shows a download that nobody is doing, and a consumer that starts next to a
live one never touches the live one's download.
"""

from __future__ import annotations

from huey.contrib.djhuey import db_task

from classifier import installs


@db_task()
def download_weights(download_id: int) -> None:
    """Fetch the file of WeightsDownload `download_id` (queued by `installs.request_download`)."""
    installs.run_download(download_id)
