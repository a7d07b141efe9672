"""A job queued on an idle server starts within a second.

SqliteHuey's worker polls its queue, waiting longer after each empty poll (huey's default reaches
10 s), so on an idle server a zip import waited 5-7 s before it started. The consumer that `make
run` starts (`manage.py run_huey`, options from settings.HUEY["consumer"]) must poll at least
every half second however long it has been idle. Measured on the real consumer, in a subprocess,
against its own data folder.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from huey import RedisHuey, SqliteHuey
from huey.consumer_options import ConsumerConfig
from huey.contrib.djhuey import HUEY

from tests.servers import process_environment
from webapp.tasks import recover_stale_jobs

ROOT = Path(__file__).resolve().parent.parent
IDLE_S = 10.4  # idle this long, huey's default polling waits about 1.7 s between polls (up to 10 s later)
STARTED = "Huey consumer started"
EXECUTING = "Executing webapp.tasks.recover_stale_jobs"


def test_the_worker_looks_for_new_jobs_at_least_every_half_second():
    config = ConsumerConfig(**settings.HUEY["consumer"])
    config.validate()
    assert config.max_delay <= 0.5


def _wait_for(log: Path, text: str, timeout: float, proc: subprocess.Popen) -> float:
    """The monotonic time `text` appeared in the log (polled every 10 ms)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return time.monotonic()
        assert proc.poll() is None, f"the consumer exited:\n{log.read_text()}"
        time.sleep(0.01)
    raise AssertionError(f"{text!r} not in the consumer's log after {timeout} s:\n{log.read_text()}")


def test_a_job_queued_after_the_worker_was_idle_starts_within_a_second(tmp_path):
    env = process_environment(tmp_path, PYTHONUNBUFFERED="1")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        # No periodic tasks: the minute's recovery check would wake the worker and hide the wait.
        worker = subprocess.Popen(
            [sys.executable, "manage.py", "run_huey", "--no-periodic"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        _wait_for(log, STARTED, timeout=120, proc=worker)
        time.sleep(IDLE_S)
        if "REDIS_URL" in env:  # TEST_BACKENDS=postgresql: Redis hands a job over at once, no polling
            queue = RedisHuey(settings.HUEY["name"], url=env["REDIS_URL"])
        else:
            queue = SqliteHuey(settings.HUEY["name"], filename=str(tmp_path / "huey.sqlite3"))
        queued_at = time.monotonic()
        queue.storage.enqueue(HUEY.serialize_task(recover_stale_jobs.s()), None)
        started_at = _wait_for(log, EXECUTING, timeout=30, proc=worker)
    finally:
        worker.send_signal(signal.SIGINT)
        worker.wait(timeout=60)
    assert started_at - queued_at < 1.0, f"started {started_at - queued_at:.2f} s after it was queued"
