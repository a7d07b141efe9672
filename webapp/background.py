"""One machine for every background job: zip imports, weights downloads, training.

Each kind of job is a concrete model of the abstract `Job` below, so all of them share one shape:
a status with the same states and the same legal moves (`Job.transition`, a conditional UPDATE:
two processes can never both move a job), the same progress writer (`Progress`, throttled, which
is also how a worker notices a cancel request), the same heartbeat and the same recovery routine.

Why the heartbeat and the worker id: Huey delivers at most once and a consumer killed with
SIGKILL loses its running task, so the database is the truth. A running job names the consumer
that claimed it (`worker_id()`: host, pid, a per-process token) and writes a heartbeat while it
works. `recover_jobs` marks a running job interrupted only when its worker is provably gone (no
heartbeat for STALE_AFTER, or a dead pid on this host): a consumer that starts next to a live one
never touches the live one's jobs. Heartbeats are written and judged by the database's clock
(`Now()`, `database_now`), never a machine's own: a worker whose clock runs minutes behind another
must not look dead to it.

Why the re-dispatch: the database is the truth for queued jobs too. A job can be queued in the
database while its task is in no queue (Redis flushed, the queue file replaced, a web process
killed between its commit and the enqueue); `redispatch_lost` queues such a job again. Each kind
says which task runs it (`runs_with`); a duplicate is harmless, since `Job.claim` lets one run.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.apps import apps
from django.db import close_old_connections, connection, connections, models
from django.db.models.functions import Now
from django.utils import timezone

logger = logging.getLogger(__name__)

# A running job without a heartbeat for this long belongs to a worker that is gone.
STALE_AFTER = timedelta(minutes=2)
# How often the heartbeat thread writes while a job runs (well inside STALE_AFTER).
HEARTBEAT_EVERY = 15.0
# Progress rows are written at most this often: pages poll once a second and SQLite prefers few,
# short writes.
PROGRESS_INTERVAL = 1.0

# A queued job whose task waits in no queue this long after it was queued lost its task: it is
# queued again. Far longer than the moment between a job's commit and the enqueue that follows it.
REDISPATCH_AFTER = timedelta(minutes=3)

PROCESS_TOKEN = uuid.uuid4().hex[:12]


def worker_id() -> str:
    """host:pid:token of this process, written on the jobs it runs (see `is_dead`)."""
    return f"{socket.gethostname()}:{os.getpid()}:{PROCESS_TOKEN}"


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    INTERRUPTED = "interrupted", "Interrupted"


ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)
UNSUCCESSFUL = (JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.INTERRUPTED)
# The only moves a job makes; `Job.transition` applies them.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    JobStatus.QUEUED: (JobStatus.RUNNING, JobStatus.CANCELLED, JobStatus.FAILED),
    JobStatus.RUNNING: (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.INTERRUPTED),
}


class Cancelled(Exception):
    """Someone asked to cancel the running job (raised by `Progress`)."""


class JobLost(Exception):
    """The job row is gone, or no longer running for this worker (recovered, cancelled, deleted)."""


class Job(models.Model):
    """What every background job row has. Concrete kinds add their own fields and messages."""

    Status = JobStatus
    ACTIVE = ACTIVE
    UNSUCCESSFUL = UNSUCCESSFUL
    TRANSITIONS = TRANSITIONS
    # What a user reads when recovery found the job's worker gone; kinds say what it means for them.
    INTERRUPTED_MESSAGE = "The background worker stopped while this job ran. Start it again."
    # Words a kind uses instead of the generic status names ("Downloading", "Installed").
    STATUS_WORDS: dict[str, str] = {}

    status = models.CharField(max_length=12, choices=JobStatus.choices, default=JobStatus.QUEUED)
    message = models.TextField(blank=True, help_text="The outcome in a sentence for the user, or why it failed.")
    detail = models.TextField(
        blank=True, help_text="Technical details of a failure (traceback) for administrators; never shown to users."
    )
    worker = models.CharField(max_length=200, blank=True, help_text="host:pid:token of the consumer running it.")
    cancel_requested = models.BooleanField(default=False)
    created_at = models.DateTimeField("queued", default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(
        null=True, blank=True, help_text="Last sign of life from the worker (written while the job runs)."
    )
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True

    @classmethod
    def transition(
        cls, pk: int, to: str, *, from_: tuple[str, ...] | None = None, claimed_by: str | None = None, **fields
    ) -> bool:
        """Move job `pk` to state `to` if its current state allows it; False when it did not.

        A conditional UPDATE, so two processes (worker, web, recovering consumer) can never both
        move the same job: the second one finds the state changed and does nothing. With
        `claimed_by`, only a job that worker claimed moves.
        """
        sources = [s for s, targets in cls.TRANSITIONS.items() if to in targets and (from_ is None or s in from_)]
        now = timezone.now()
        stamps = {"started_at": now, "heartbeat_at": Now()} if to == JobStatus.RUNNING else {"finished_at": now}
        rows = cls.objects.filter(pk=pk, status__in=sources)
        if claimed_by is not None:
            rows = rows.filter(worker=claimed_by)
        return bool(rows.update(status=to, **{**stamps, **fields}))

    @classmethod
    def claim(cls, pk: int, **fields) -> bool:
        """Queued -> running for this process: a task delivered twice, or a cancelled job, does nothing."""
        return cls.transition(pk, JobStatus.RUNNING, worker=worker_id(), **fields)

    def request_cancel(self, message: str = "Cancelled before it started.") -> bool:
        """A queued job is cancelled at once; a running one is asked to stop at its next progress write.

        Returns True when the job was cancelled at once (its files can go now).
        """
        if type(self).transition(self.pk, JobStatus.CANCELLED, from_=(JobStatus.QUEUED,), message=message):
            self.release_files()
            return True
        type(self).objects.filter(pk=self.pk, status=JobStatus.RUNNING).update(cancel_requested=True)
        return False

    def release_files(self) -> None:
        """Remove what a job that will never run on leaves behind (archives, caches). Kinds override."""

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE

    @property
    def status_text(self) -> str:
        return self.STATUS_WORDS.get(self.status, self.get_status_display())

    @property
    def duration(self) -> timedelta | None:
        if self.started_at is None:
            return None
        return (self.finished_at or timezone.now()) - self.started_at


def close_consumer_connections() -> None:
    """Drop this thread's stale or broken connections around work a consumer does outside a task (start-up
    hooks, signal handlers), as djhuey's `close_db` does around tasks, and like it not in immediate mode.

    Immediate mode (the tests) runs that work inside the caller's own connection and transaction, which
    are not this code's to close: on PostgreSQL the caller would lose its transaction (SQLite's in-memory
    test database ignores a close, which is why this only showed on PostgreSQL).
    """
    from huey.contrib.djhuey import HUEY

    if not HUEY.immediate:
        close_old_connections()


def job_models() -> list[type[Job]]:
    """Every concrete kind of job: recovery treats them all the same way."""
    return [model for model in apps.get_models() if issubclass(model, Job)]


class Progress:
    """Writes a running job's fields and heartbeat at most once per `interval`.

    Raises `Cancelled` when a cancel was requested and `JobLost` when the row is no longer running
    for this worker, so the job stops at its next progress write.
    """

    def __init__(self, model: type[Job], pk: int, interval: float | None = None) -> None:
        self.model, self.pk = model, pk
        self.interval = PROGRESS_INTERVAL if interval is None else interval
        self.last = float("-inf")

    def __call__(self, *, force: bool = False, **fields) -> None:
        now = time.monotonic()
        if not force and now - self.last < self.interval:
            return
        self.last = now
        rows = self.model.objects.filter(pk=self.pk, status=JobStatus.RUNNING, worker=worker_id())
        if not rows.update(heartbeat_at=Now(), **fields):
            raise JobLost
        if rows.filter(cancel_requested=True).exists():
            raise Cancelled

    def cancel_requested(self) -> bool:
        return self.model.objects.filter(pk=self.pk, cancel_requested=True).exists()


class Heartbeat:
    """A thread that keeps a running job's heartbeat fresh during long steps without progress.

    Downloads, model builds and file conversions can take minutes between progress writes;
    recovery must not mistake them for a dead worker.
    """

    def __init__(self, model: type[Job], pk: int, every: float | None = None) -> None:
        self.model, self.pk = model, pk
        self.every = HEARTBEAT_EVERY if every is None else every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{model.__name__}-{pk}", daemon=True)
        self._worker = worker_id()

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.every):
                try:
                    self.model.objects.filter(pk=self.pk, status=JobStatus.RUNNING, worker=self._worker).update(
                        heartbeat_at=Now()
                    )
                except Exception:  # a locked or unreachable database: try again at the next beat
                    logger.warning("Could not write the heartbeat of %s %s", self.model.__name__, self.pk)
        finally:
            # The thread ends and its connection with it: CONN_MAX_AGE would keep a PostgreSQL
            # connection open for a thread that no longer exists.
            connections.close_all()


class CancelOnInterrupt:
    """For commands that run a job in the foreground: Ctrl-C asks the job to stop, as its page's
    Cancel button does (the job notices at its next progress write); a second Ctrl-C stops at once
    (KeyboardInterrupt). Only the main thread can own signal handlers.
    """

    def __init__(self, model: type[Job], pk: int, say: Callable[[str], None], message: str) -> None:
        self.model, self.pk, self.say, self.message = model, pk, say, message
        self.previous = None
        self.interrupted = False

    def __enter__(self) -> CancelOnInterrupt:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)

    def _handle(self, signum, frame) -> None:
        self.interrupted = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            self.say(self.message)
        except RuntimeError:  # interrupted in the middle of writing a line: the message is not worth a crash
            pass
        self.model.objects.filter(pk=self.pk).update(cancel_requested=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_dead(job: Job, now: datetime) -> bool:
    """Whether the worker that claimed `job` is gone.

    Without a heartbeat for STALE_AFTER: gone, wherever it ran. On this host, a claim by another
    process that no longer exists, or by an earlier life of this very pid: gone at once.
    """
    if job.heartbeat_at is None or now - job.heartbeat_at > STALE_AFTER:
        return True
    host, _, rest = job.worker.partition(":")
    pid_text, _, token = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    if token == PROCESS_TOKEN:
        return False  # one of this process's own threads is running it
    pid = int(pid_text)
    return pid == os.getpid() or not _pid_alive(pid)


def interrupt(model: type[Job], pk: int, *, release_files: bool = True, claimed_by: str | None = None) -> bool:
    """Record that this job's worker stopped (or is stopping) mid-job, and release its files.

    `release_files=False` when the job's own thread may still be running (SIGTERM in this very
    process): its files are released by the next recovery instead. `claimed_by=worker_id()` when
    a stopping consumer records its own jobs: the task it held may have been a second delivery of
    a job another consumer runs, which must go on.
    """
    moved = model.transition(
        pk, JobStatus.INTERRUPTED, from_=(JobStatus.RUNNING,), claimed_by=claimed_by, message=model.INTERRUPTED_MESSAGE
    )
    if not moved:
        return False
    logger.warning("%s %s was interrupted: its worker stopped.", model._meta.verbose_name, pk)
    job = model.objects.filter(pk=pk).first()
    if job is not None and release_files:
        try:
            job.release_files()
        except Exception:  # e.g. another consumer's clean-up removing the same files: it finishes the job
            logger.exception("Could not release the files of %s %s; the periodic clean-up will.", model.__name__, pk)
    return True


def database_now() -> datetime:
    """The time by the database's clock, the one heartbeats are written with (`Now()`).

    Machines sharing one PostgreSQL server each have their own clock; SQLite lives on one machine,
    whose clock its `Now()` reads, so Python's time is the same clock there.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT STATEMENT_TIMESTAMP()")
            return cursor.fetchone()[0]
    return timezone.now()


def recover_jobs(now: datetime | None = None) -> int:
    """Mark running jobs whose worker is gone as interrupted, for every kind; returns how many.

    Safe to run at any time and from several consumers at once: each move is conditional.
    """
    now = now or database_now()
    count = 0
    for model in job_models():
        for job in model.objects.filter(status=JobStatus.RUNNING).only("pk", "worker", "heartbeat_at"):
            if is_dead(job, now):
                count += interrupt(model, job.pk)
    return count


# How each kind of job is run, by model label: its Huey task, and whether a queued job can be handed
# to a worker yet. Filled by the tasks modules (`runs_with`).
_TASKS: dict[str, tuple[Any, Callable[[Job], bool] | None]] = {}


def runs_with(model: type[Job], task: Any, *, ready: Callable[[Job], bool] | None = None) -> None:
    """Record that `task` (a Huey task taking the job's pk) runs jobs of `model`.

    So recovery can queue a job again whose task was lost, without knowing the kinds of jobs.
    `ready(job)` says whether a queued job is complete enough to run; one that is not (a command
    still copying its input) is left queued.
    """
    _TASKS[model._meta.label] = (task, ready)


def _waiting_ids(task: Any) -> set[object]:
    """The first arguments (job pks) of `task`'s deliveries waiting in its queue or its schedule.

    Read from the raw messages: a message of a task this process does not know is skipped, not an error.
    """
    huey = task.huey
    name = huey._registry.task_to_string(task.task_class)
    waiting = set()
    for data in [*huey.storage.enqueued_items(), *huey.storage.scheduled_items()]:
        try:
            message = huey.serializer.deserialize(data)
        except Exception:  # a message an older version wrote: not one of ours to judge
            continue
        if message.name == name and message.args:
            waiting.add(message.args[0])
    return waiting


def redispatch_lost(now: datetime | None = None) -> int:
    """Queue again every job queued for longer than REDISPATCH_AFTER whose task waits in no queue.

    Returns how many. The queue is read before the rows, so a task listed there was not lost; a task
    taken by a worker in between is delivered twice, which `Job.claim` makes harmless.
    """
    now = now or timezone.now()
    count = 0
    for model in job_models():
        if model._meta.label not in _TASKS:
            continue
        task, ready = _TASKS[model._meta.label]
        waiting = _waiting_ids(task)
        old = model.objects.filter(status=JobStatus.QUEUED, created_at__lt=now - REDISPATCH_AFTER)
        for pk in old.order_by("created_at", "pk").values_list("pk", flat=True):
            if pk in waiting:
                continue
            if ready is not None:
                job = model.objects.filter(pk=pk).first()
                if job is None or not ready(job):
                    continue
            task(pk)
            count += 1
            logger.warning("%s %s was queued but its task was lost: queued it again.", model._meta.verbose_name, pk)
    return count
