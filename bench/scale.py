"""Scale benchmark: SQLite + SqliteHuey against PostgreSQL + Redis, each with 2 web processes and 2 consumers.

    .venv/bin/python bench/scale.py [--quick] [--json PATH] [--duration 30] [--clients 16] [--images 6000]
                                    [--pickups 20] [--pairs 5] [--backends sqlite,postgres] [--time-limit 2700]

Several machines run one TransferLab by sharing a database and a queue (issue 14). Two cores cannot
show that scaling out adds throughput; what they can show is that nothing serialises where it
should not: no lock errors, a queued job starts within a second, two queued jobs run on two
consumers at once. Loopback only; every server is a throw-away child of this process.

Per backend, in a throw-away DATA_DIR prepared as bench/load.py prepares it (migrated, static files
collected, a staff user with an API token, empty datasets, generated weights for the model through
`manage.py import_weights`): two web processes (`manage.py serve --only web`, one loopback port
each) and two consumers (`manage.py serve --only worker`: `run_huey` with its default
WORKER_CONCURRENCY threads). SQLite: both consumers share DATA_DIR/huey.sqlite3. PostgreSQL +
Redis: tests/servers.py starts both servers (Unix sockets only), the bench makes a database and
uses one Redis db for the queue. No training worker: nothing here trains. Before measuring, the
bench waits until GET /api/v1/models says the worker's LiteRT conversion serves the model.

1. Load: `--clients` threads, spread over the two ports as a load balancer would, each posting one
   JPEG to POST /api/v1/predict with its token over a keep-alive connection as fast as answers
   come, while a zip of `--images` generated JPEGs (bench/import.py's pictures) is imported
   through the web (logged in, POST /datasets/<id>/import/). Beside it, tiny imports (4 images)
   follow one another to sample the pickup under load. The clients run `--duration` seconds, and
   on until the big import has ended.
2. Pickup: `--pickups` tiny imports, one at a time, each queued 2.5-3.5 s after the last ended
   (the consumers idle and polling at their slowest), alternately through each web process.
3. Two jobs: `--pairs` times, two imports of 400 images queued at once, one through each web
   process; from the rows' `worker` (host:pid:token) and times, how many distinct consumers ran
   them at the same time. First on the consumers as started; a consumer runs WORKER_CONCURRENCY
   (2) jobs at once, so one may take both. Then the consumers are replaced by two started with
   WORKER_CONCURRENCY=1: two jobs, two job slots, so both consumers must be busy unless something
   serialises them.

Times come from the job rows the processes wrote: queued = `created_at` (the web process, when the
row is written), running = `started_at` (the consumer's claim), ended = `finished_at`.

Figures (one flat JSON object with --json), per backend with the prefix `sqlite_` or `postgres_`:
`req_s`, `p50_ms`, `p95_ms`, `p99_ms` (answered requests), `requests_per_web`, `api_errors`
(non-2xx answers and connection errors; `api_errors_5xx` of them 5xx), `import_s_under_load`
(queued -> succeeded) and `import_img_s`, `pickup_p50_s`, `pickup_p95_s`, `pickup_max_s`,
`pickup_under_load_p50_s`, `pickup_under_load_p95_s` (and their sample counts); `consumers_busy`,
the most distinct one-thread consumers seen running the two jobs of a pair at once (2 is the goal),
`pairs_on_two_consumers`, `pairs_overlapping` (the same with the suffix `_default_concurrency` for
the consumers as started); `jobs_per_consumer` (load and pickup), `jobs`, `jobs_failed` (every
import the bench queued that did not succeed), `upload_errors`, `lock_lines` (database is locked,
lock timeout, deadlock... in any server's log, PostgreSQL's included), `tracebacks` (in the web and
worker logs before they are stopped), `errors` (the sum of these error counts), `other_cpu_pct`
during the load. Unprefixed: `errors` over both backends; the worse backend's `pickup_p95_s`,
`import_s_under_load` and `consumers_busy`; the machine and versions. Exits 2 on error.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import http.client
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from webapp.tensorflow_logs import quiet_tensorflow  # noqa: E402

quiet_tensorflow()  # before anything loads TensorFlow: no C++ start-up notes among the figures

from bench import load  # noqa: E402
from bench.lib import processes  # noqa: E402
from bench.lib.figures import percentile, write_json  # noqa: E402
from bench.lib.machine import busy_processes, cpu_model, load_average, machine_info  # noqa: E402
from bench.lib.tables import print_grid  # noqa: E402
from bench.lib.webclient import Session  # noqa: E402
from bench.predict import free_port  # noqa: E402

BACKENDS = {"sqlite": "SQLite + SqliteHuey", "postgres": "PostgreSQL + Redis"}
WEB_PROCESSES = CONSUMERS = 2
DATASETS = 240  # one per import: an import needs a dataset without an active one
TINY_IMAGES, PAIR_IMAGES = 4, 400
IDLE_GAP_S = (2.5, 3.5)  # after 2.4 s without a job SqliteHuey's consumer polls every 0.5 s, its slowest
START_TIMEOUT_S = 240
JOB_TIMEOUT_S = 120  # a tiny or a pair's import
STARTED = "Huey consumer started"
ACTIVE = ("queued", "running")
# What a server logs when a write waited for a lock too long (SQLite, webapp.middleware, the
# heartbeat thread, PostgreSQL's own log), matched case-insensitively.
LOCK_PATTERNS = (
    "database is locked",
    "database table is locked",
    "stayed locked",
    "lock timeout",
    "deadlock",
    "could not serialize",
    "could not obtain lock",
    "could not write the heartbeat",
)
ACCESS_STATUS = re.compile(r'HTTP/[\d.]+" (\d{3}) ')
SERVE_HAS_ONLY = "--only" in (ROOT / "webapp/management/commands/serve.py").read_text()


# -- processes ----------------------------------------------------------------------------------


def web_command(port: int) -> list[str]:
    """One web process: `serve --only web`, or (before `--only` existed) waitress as serve starts it."""
    if SERVE_HAS_ONLY:
        return [sys.executable, "manage.py", "serve", "--only", "web", "--bind", f"127.0.0.1:{port}"]
    return [sys.executable, "-m", "waitress", f"--listen=127.0.0.1:{port}", "--threads=4", "--asyncore-use-poll",
            "--call", "webapp.management.commands.serve:web_application"]  # fmt: skip


def worker_command() -> list[str]:
    """One consumer of the main queue (imports, downloads, conversions)."""
    if SERVE_HAS_ONLY:
        return [sys.executable, "manage.py", "serve", "--only", "worker"]
    return [sys.executable, "manage.py", "run_huey"]


@dataclass
class Started:
    """A process the bench started, and the file its output goes to (scanned for errors at the end)."""

    name: str
    proc: subprocess.Popen
    log: Path


class Cluster:
    """The web processes and consumers of one backend; all stopped by `stop`, whatever happened."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.started: list[Started] = []
        self.retired: list[Started] = []
        logs.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, command: list[str], **env: str) -> Started:
        """Start `command` in the project folder with the backend's environment; output to logs/NAME.log."""
        log = self.logs / f"{name}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                command, cwd=ROOT, env={**self.env, **env}, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        self.started.append(Started(name, proc, log))
        return self.started[-1]

    def retire(self, some: list[Started]) -> None:
        """Stop these (as `stop` does) and keep only their logs."""
        for s in some:
            s.proc.send_signal(signal.SIGINT)
        for s in some:
            load.stop_server(s.proc)
            self.started.remove(s)
            self.retired.append(s)

    def check_alive(self) -> None:
        """A process that died mid-run ends the run: figures without it would measure something else."""
        for s in self.started:
            if s.proc.poll() is not None:
                raise RuntimeError(f"{s.name} exited with {s.proc.returncode}:\n{s.log.read_text()[-3000:]}")

    def logs_text(self) -> dict[str, str]:
        return {s.name: s.log.read_text(errors="replace") for s in self.retired + self.started}

    def stop(self) -> None:
        """SIGINT to all at once (as Ctrl-C), then wait: serve passes it on to its child."""
        for s in self.started:
            if s.proc.poll() is None:
                s.proc.send_signal(signal.SIGINT)
        for s in self.started:
            load.stop_server(s.proc)


def wait_for_text(started: Started, text: str, timeout: float) -> None:
    """Until `text` is in the process's log: how a consumer says it is ready."""
    deadline = time.monotonic() + timeout
    while text not in started.log.read_text(errors="replace"):
        if started.proc.poll() is not None:
            raise RuntimeError(f"{started.name} exited with {started.proc.returncode}:\n{started.log.read_text()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{started.name} did not log {text!r} within {timeout} s")
        time.sleep(0.2)


def wait_for_litert(ports: list[int], token: str, model: str, timeout: float) -> float:
    """Until every web process says LiteRT serves the model (the consumers convert it when they start)."""
    import json

    started = time.monotonic()
    for port in ports:
        while True:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                conn.request("GET", "/api/v1/models", headers={"Authorization": f"Bearer {token}"})
                listed = {m["key"]: m for m in json.loads(conn.getresponse().read())["models"]}
            finally:
                conn.close()
            if listed.get(model, {}).get("runtime") == "litert":
                break
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"{model} not converted to LiteRT after {timeout} s: {listed.get(model)}")
            time.sleep(1)
    return time.monotonic() - started


class OtherCpu(load.OtherCpu):
    """bench/load.py's, over this process's whole tree as it is at each reading (every server here is
    its descendant), ended children included: PostgreSQL runs each connection in a process of its
    own, and the one that wrote an import's rows is gone when the import ends."""

    def __init__(self) -> None:
        super().__init__([])

    def _own(self) -> float:
        return processes.cpu_seconds(processes.tree(os.getpid()), reaped=True)


@contextlib.contextmanager
def environment(**values: str | None) -> Iterator[None]:
    """Set (or, with None, remove) variables for bench/load.py's `prepare`, which copies os.environ."""
    before = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# -- job rows -----------------------------------------------------------------------------------


@dataclass
class Job:
    """One training_importjob row; times in seconds since the epoch."""

    id: int
    status: str
    worker: str
    created: float
    started: float | None
    finished: float | None
    done: int
    message: str


def epoch(value: object) -> float | None:
    """A timestamp column as seconds: SQLite gives naive UTC text, psycopg an aware datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    assert isinstance(value, dt.datetime)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


class JobRows:
    """training_importjob as the processes wrote it, from the SQLite file or the PostgreSQL database."""

    QUERY = "SELECT id, status, worker, created_at, started_at, finished_at, done, message FROM training_importjob"

    def __init__(self, sqlite_path: Path | None = None, database_url: str | None = None) -> None:
        self.sqlite_path, self.database_url = sqlite_path, database_url

    def _rows(self, ids: list[int] | None) -> list[tuple]:
        query = self.QUERY
        if ids is not None:
            if not ids:
                return []
            query += f" WHERE id IN ({','.join(str(int(i)) for i in ids)})"
        if self.database_url is not None:
            import psycopg

            with psycopg.connect(self.database_url, autocommit=True) as conn:
                return conn.execute(query).fetchall()
        with contextlib.closing(sqlite3.connect(f"file:{self.sqlite_path}?mode=ro", uri=True, timeout=30)) as db:
            return db.execute(query).fetchall()

    def fetch(self, ids: list[int] | None = None) -> dict[int, Job]:
        return {
            row[0]: Job(row[0], row[1], row[2], epoch(row[3]), epoch(row[4]), epoch(row[5]), row[6], row[7])
            for row in self._rows(ids)
        }  # fmt: skip

    def wait(self, ids: list[int], timeout: float, stop: threading.Event | None = None) -> dict[int, Job]:
        """Until every job in `ids` has ended (or `stop` is set); their rows."""
        deadline = time.monotonic() + timeout
        while True:
            jobs = self.fetch(ids)
            if all(job.status not in ACTIVE for job in jobs.values()) or (stop is not None and stop.is_set()):
                return jobs
            if time.monotonic() > deadline:
                raise TimeoutError(f"imports {sorted(j.id for j in jobs.values() if j.status in ACTIVE)} "
                                   f"still active after {timeout:.0f} s")  # fmt: skip
            time.sleep(0.1)


def pickups(jobs: list[Job]) -> list[float]:
    """Queued -> running of each job that started, in seconds."""
    return [job.started - job.created for job in jobs if job.started is not None]


# -- web traffic --------------------------------------------------------------------------------


class Uploads:
    """Zip imports queued through the web, each into a fresh dataset, through the web process asked for."""

    def __init__(self, ports: list[int], datasets: list[int]) -> None:
        self.sessions = []
        for port in ports:
            session = Session(port)
            session.login(load.USER, load.PASSWORD)
            self.sessions.append(session)
        self.datasets = list(datasets)
        self.lock = threading.Lock()
        self.errors: list[str] = []

    def queue(self, zip_path: Path, web: int) -> int | None:
        """The new job's id; None (and an error counted) when the upload was not accepted."""
        with self.lock:
            if not self.datasets:
                raise RuntimeError("the bench ran out of empty datasets")
            dataset = self.datasets.pop(0)
        try:
            status, location = self.sessions[web % len(self.sessions)].post_file(
                f"/datasets/{dataset}/import/", "archive", zip_path
            )
        except (OSError, http.client.HTTPException) as error:
            status, location = 0, repr(error)
        if status != 302 or "/imports/" not in location:
            with self.lock:
                self.errors.append(f"HTTP {status} for {zip_path.name} into dataset {dataset} {location}".strip())
            return None
        return int(location.rstrip("/").rsplit("/", 1)[1])

    def queue_together(self, zip_path: Path, count: int) -> list[int]:
        """`count` imports posted at the same moment, one through each web process in turn."""
        found: list[int | None] = [None] * count
        barrier = threading.Barrier(count)

        def post(i: int) -> None:
            barrier.wait()
            found[i] = self.queue(zip_path, i)

        threads = [threading.Thread(target=post, args=(i,)) for i in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return [job for job in found if job is not None]


def api_client(port: int, body: bytes, headers: dict[str, str], stop: threading.Event, samples: list) -> None:
    """bench/load.py's client, until `stop` is set rather than until a deadline."""
    load.post_until(port, body, headers, stop.is_set, samples)


class Clients:
    """API clients spread over the web processes (client i on port i mod n), as a load balancer would."""

    def __init__(self, ports: list[int], count: int, body: bytes, headers: dict[str, str]) -> None:
        self.ports, self.count = ports, count
        self.samples: dict[int, list] = {port: [] for port in ports}
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(
                target=api_client,
                args=(ports[i % len(ports)], body, headers, self.stop, self.samples[ports[i % len(ports)]]),
                daemon=True,
            )
            for i in range(count)
        ]

    def start(self) -> None:
        self.started = time.monotonic()
        for thread in self.threads:
            thread.start()

    def finish(self) -> load.Run:
        self.stop.set()
        for thread in self.threads:
            thread.join()
        run = load.Run(self.count, 0, seconds=time.monotonic() - self.started)
        for samples in self.samples.values():
            run.samples += samples
        return run


class PickupSampler:
    """Tiny imports one after another, beside the load: the pickup while the machine is busy."""

    def __init__(self, uploads: Uploads, rows: JobRows, zip_path: Path) -> None:
        self.uploads, self.rows, self.zip_path = uploads, rows, zip_path
        self.jobs: list[int] = []
        self.stop = threading.Event()
        self.error: str | None = None
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        try:
            while not self.stop.is_set():
                job = self.uploads.queue(self.zip_path, len(self.jobs))
                if job is not None:
                    self.jobs.append(job)
                    self.rows.wait([job], JOB_TIMEOUT_S, stop=self.stop)
                self.stop.wait(random.uniform(1.0, 2.0))
        except Exception as error:  # reported with the figures
            self.error = repr(error)


# -- one backend --------------------------------------------------------------------------------


@dataclass
class Zips:
    """The three zips, built once and imported by both backends."""

    big: Path
    tiny: Path
    pair: Path


def build_zips(folder: Path, images: int) -> Zips:
    """bench/import.py's pictures: the big import, the tiny pickup samples, the pairs' imports."""
    zips = Zips(folder / "big.zip", folder / "tiny.zip", folder / "pair.zip")
    load.build_zip(zips.big, images)
    load.build_zip(zips.tiny, TINY_IMAGES)
    load.build_zip(zips.pair, PAIR_IMAGES)
    return zips


def percentiles(values: list[float], prefix: str) -> dict[str, float | int | None]:
    """p50, p95, max and count of a list of seconds; None when there is no sample."""
    return {
        f"{prefix}_p50_s": round(percentile(values, 50), 3) if values else None,
        f"{prefix}_p95_s": round(percentile(values, 95), 3) if values else None,
        f"{prefix}_max_s": round(max(values), 3) if values else None,
        f"{prefix}_samples": len(values),
    }


def pair_consumers(jobs: list[Job]) -> int:
    """Distinct consumers running the pair's two jobs at the same moment (1 when they did not overlap)."""
    ran = [job for job in jobs if job.started is not None and job.finished is not None]
    if len(ran) < 2:
        return len(ran)
    a, b = ran[:2]
    overlap = min(a.finished, b.finished) - max(a.started, b.started)
    return 2 if overlap > 0 and a.worker != b.worker else 1


def scan_logs(texts: dict[str, str]) -> dict[str, int | list[str]]:
    """Lock lines, tracebacks and 5xx answers in the servers' logs."""
    lock_lines = [
        f"{name}: {line.strip()[:300]}"
        for name, text in texts.items()
        for line in text.splitlines()
        if any(pattern in line.lower() for pattern in LOCK_PATTERNS)
    ]
    return {
        "lock_lines": len(lock_lines),
        "lock_line_examples": lock_lines[:5],
        "tracebacks": sum(text.count("Traceback (most recent call last)") for text in texts.values()),
        "server_5xx": sum(
            1 for text in texts.values() for m in ACCESS_STATUS.finditer(text) if m.group(1).startswith("5")
        ),
    }


def measure_backend(backend: str, args: argparse.Namespace, work: Path, zips: Zips) -> dict:
    """Everything for one backend; its figures without the prefix."""
    servers = None
    data_dir = work / backend
    figures: dict = {}
    try:
        if backend == "postgres":
            from tests import servers as test_servers

            servers = test_servers.start()
            extra = {
                "DATABASE_URL": servers.new_database("transferlab_scale"),
                "REDIS_URL": f"{servers.redis_url}?db=1",
            }
            rows_of = {"database_url": extra["DATABASE_URL"]}
        else:
            extra = {"DATABASE_URL": None, "REDIS_URL": None}
            rows_of = {"sqlite_path": data_dir / "data" / "db.sqlite3"}
        started = time.monotonic()
        (data_dir / "data").mkdir(mode=0o700, parents=True)  # as settings make it: the check stays quiet
        with environment(**extra):
            env, token, datasets = load.prepare(data_dir / "data", args.model, DATASETS, channel_timeout=60)
        figures["prepare_s"] = round(time.monotonic() - started, 1)
        cluster = Cluster(env, data_dir / "logs")
        try:
            phases = Phases(cluster, JobRows(**rows_of), token, args, zips)
            figures.update(phases.start(datasets))
            figures.update(phases.under_load())
            figures.update(phases.idle_pickups())
            figures.update(phases.pairs())
            figures.update(phases.totals())
            postgres_log = servers.folder / "postgresql.log" if servers is not None else None
            texts = cluster.logs_text()  # before the stop: its own lines are no errors of the run
            if postgres_log is not None and postgres_log.exists():
                texts["postgresql"] = postgres_log.read_text(errors="replace")
            figures.update(scan_logs(texts))
        finally:
            cluster.stop()
    finally:
        if servers is not None:
            servers.stop()
    figures["errors"] = (
        figures["api_errors"] + figures["upload_errors"] + figures["jobs_failed"]
        + figures["lock_lines"] + figures["tracebacks"] + (1 if figures["sampler_error"] else 0)
    )  # fmt: skip
    return figures


class Phases:
    """One backend's processes, started and driven through the three measurements."""

    def __init__(self, cluster: Cluster, rows: JobRows, token: str, args: argparse.Namespace, zips: Zips) -> None:
        self.cluster, self.rows, self.token, self.args, self.zips = cluster, rows, token, args, zips
        self.ports: list[int] = []
        while len(self.ports) < WEB_PROCESSES:
            port = free_port()
            if port not in self.ports:
                self.ports.append(port)
        self.body, self.headers = load.predict_request(token, args.model)

    def start(self, datasets: list[int]) -> dict:
        """Web processes and consumers up, the model on LiteRT and warm, and a first job run by the consumers."""
        webs = [self.cluster.start(f"web-{i + 1}", web_command(port)) for i, port in enumerate(self.ports)]
        self.workers = workers = self.start_workers()
        started = time.monotonic()
        for web, port in zip(webs, self.ports, strict=True):
            load.wait_until_ready(web.proc, port, self.body, self.headers, web.log)
        first_answer_s = time.monotonic() - started
        for worker in workers:
            wait_for_text(worker, STARTED, START_TIMEOUT_S)
        litert_wait_s = wait_for_litert(self.ports, self.token, self.args.model, START_TIMEOUT_S)
        time.sleep(6)  # past engine.LITE_RECHECK_SECONDS: the next request moves a warm model to LiteRT
        for port in self.ports:
            for _ in range(30):  # warm: the first calls of a model are slower
                load.post_once(port, self.body, self.headers, timeout=60)
        self.uploads = Uploads(self.ports, datasets)
        self.rows.wait(self.uploads.queue_together(self.zips.tiny, 4), JOB_TIMEOUT_S)  # the consumers take jobs
        self.cluster.check_alive()
        return {"first_answer_s": round(first_answer_s, 1), "litert_wait_s": round(litert_wait_s, 1)}

    def start_workers(self, first: int = 1, **env: str) -> list[Started]:
        """The consumers, numbered from `first` (their logs stay apart when they are replaced)."""
        return [
            self.cluster.start(f"worker-{i}", worker_command(), PYTHONUNBUFFERED="1", **env)
            for i in range(first, first + CONSUMERS)
        ]

    def under_load(self) -> dict:
        """The clients for `--duration` s and until the big import has ended; tiny imports beside."""
        args = self.args
        others = OtherCpu()
        clients = Clients(self.ports, args.clients, self.body, self.headers)
        sampler = PickupSampler(self.uploads, self.rows, self.zips.tiny)
        clients.start()
        try:
            time.sleep(1)
            big = self.uploads.queue(self.zips.big, 0)
            if big is None:
                raise RuntimeError(f"the big import was not accepted: {self.uploads.errors}")
            sampler.thread.start()
            deadline = time.monotonic() + args.import_timeout
            while True:
                job = self.rows.fetch([big])[big]
                if job.status not in ACTIVE and time.monotonic() - clients.started >= args.duration:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the import of {args.images} images took over {args.import_timeout:.0f} s")
                self.cluster.check_alive()
                time.sleep(0.5)
        finally:
            run = clients.finish()
            sampler.stop.set()
        sampler.thread.join(timeout=JOB_TIMEOUT_S)
        other_cpu_pct = others.share()
        loaded = list(self.rows.wait(sampler.jobs, JOB_TIMEOUT_S).values())
        api = run.figures()
        succeeded = job.status == "succeeded"
        return {
            **{name: api[name] for name in ("req_s", "p50_ms", "p95_ms", "p99_ms", "requests")},
            "requests_per_web": [len(clients.samples[port]) for port in self.ports],
            "api_errors": api["errors"],
            "api_errors_5xx": api["errors_5xx"],
            "load_s": round(run.seconds, 1),
            "import_status": job.status,
            "import_s_under_load": round(job.finished - job.created, 1) if succeeded else None,
            "import_running_s": round(job.finished - job.started, 1) if succeeded else None,
            "import_img_s": round(job.done / (job.finished - job.started), 1) if succeeded else None,
            "other_cpu_pct": round(other_cpu_pct, 1),
            "sampler_error": sampler.error,
            **percentiles(pickups(loaded), "pickup_under_load"),
        }

    def idle_pickups(self) -> dict:
        """Tiny imports one at a time, each after the consumers have idled to their slowest polling."""
        idle: list[Job] = []
        for i in range(self.args.pickups):
            time.sleep(random.uniform(*IDLE_GAP_S))
            job = self.uploads.queue(self.zips.tiny, i)
            if job is not None:
                idle += self.rows.wait([job], JOB_TIMEOUT_S).values()
        return percentiles(pickups(idle), "pickup")

    def pairs(self) -> dict:
        """Two imports queued at once, `--pairs` times: how many consumers ran them at the same moment.

        First on the consumers as started: each runs WORKER_CONCURRENCY jobs at once (2 by default), so
        one of them may take both and nothing is proven. Then on two consumers started with one
        thread each: if nothing serialises them, both are busy.
        """
        ran = collections.Counter(job.worker.split(":")[1] for job in self.rows.fetch().values() if job.worker)
        as_started = self._pairs()
        self.cluster.retire(self.workers)
        self.workers = self.start_workers(first=CONSUMERS + 1, WORKER_CONCURRENCY="1")
        for worker in self.workers:
            wait_for_text(worker, STARTED, START_TIMEOUT_S)
        single = self._pairs()
        return {
            "jobs_per_consumer": sorted(ran.values(), reverse=True),
            "consumers_busy": single["busy"],
            "pairs_on_two_consumers": single["on_two"],
            "pairs_overlapping": single["overlapping"],
            "consumers_busy_default_concurrency": as_started["busy"],
            "pairs_on_two_consumers_default_concurrency": as_started["on_two"],
            "pairs_overlapping_default_concurrency": as_started["overlapping"],
            "pairs": self.args.pairs,
            "pair_pickup_s": as_started["pickups"] + single["pickups"],
        }

    def _pairs(self) -> dict:
        busy: list[int] = []
        overlapping = 0
        pickup: list[float] = []
        for _ in range(self.args.pairs):
            time.sleep(random.uniform(*IDLE_GAP_S))
            pair = list(self.rows.wait(self.uploads.queue_together(self.zips.pair, 2), JOB_TIMEOUT_S).values())
            busy.append(pair_consumers(pair))
            ran = [job for job in pair if job.started and job.finished]
            if len(ran) == 2 and min(job.finished for job in ran) > max(job.started for job in ran):
                overlapping += 1
            pickup += [round(p, 3) for p in pickups(pair)]
        self.cluster.check_alive()
        return {
            "busy": max(busy, default=0),
            "on_two": sum(1 for n in busy if n == 2),
            "overlapping": overlapping,
            "pickups": pickup,
        }

    def totals(self) -> dict:
        """Every import the bench queued, as the rows tell: failures, and which consumer ran how many."""
        everything = self.rows.fetch()
        failed = [job for job in everything.values() if job.status != "succeeded"]
        return {
            "jobs": len(everything),
            "jobs_failed": len(failed),
            "job_failures": [f"{job.id} {job.status}: {job.message[:200]}" for job in failed[:5]],
            "upload_errors": len(self.uploads.errors),
            "upload_error_examples": self.uploads.errors[:5],
            "web_processes": WEB_PROCESSES,
            "consumers": CONSUMERS,
            "serve_only": SERVE_HAS_ONLY,
        }


# -- the whole benchmark ------------------------------------------------------------------------


def show(figures: dict, backends: list[str], images: int) -> None:
    """The table, one column per backend, and the details of any error."""

    def value(backend: str, name: str, fmt: str = "{}") -> str:
        found = figures.get(f"{backend}_{name}")
        return "-" if found is None else fmt.format(found)

    def row(label: str, target: str, *parts: tuple[str, str]) -> tuple[str, ...]:
        cells = [" / ".join(value(b, name, fmt) for name, fmt in parts) for b in backends]
        return (label, *cells, target)

    rows = [
        row(f"API req/s, {figures['clients']} clients on 2 web processes", "", ("req_s", "{:.1f}")),
        row("API p50 / p95 / p99 ms", "", ("p50_ms", "{:.0f}"), ("p95_ms", "{:.0f}"), ("p99_ms", "{:.0f}")),
        row("requests answered by web 1 / web 2", "", ("requests_per_web", "{}")),
        row(
            f"import of {images:,} images under load, s (img/s)",
            "",
            ("import_s_under_load", "{:.1f}"),
            ("import_img_s", "{:.0f}"),
        ),
        row(
            "pickup, idle consumers, p50 / p95 / max s",
            "p95 < 1 s",
            ("pickup_p50_s", "{:.2f}"),
            ("pickup_p95_s", "{:.2f}"),
            ("pickup_max_s", "{:.2f}"),
        ),
        row(
            "pickup under load, p50 / p95 / max s",
            "",
            ("pickup_under_load_p50_s", "{:.2f}"),
            ("pickup_under_load_p95_s", "{:.2f}"),
            ("pickup_under_load_max_s", "{:.2f}"),
        ),
        row("consumers busy, two jobs queued, 1 thread each", "2", ("consumers_busy", "{}")),
        row(
            "pairs on two consumers / overlapping / pairs",
            "",
            ("pairs_on_two_consumers", "{}"),
            ("pairs_overlapping", "{}"),
            ("pairs", "{}"),
        ),
        row(
            "the same, consumers of WORKER_CONCURRENCY threads",
            "",
            ("pairs_on_two_consumers_default_concurrency", "{}"),
            ("pairs_overlapping_default_concurrency", "{}"),
            ("pairs", "{}"),
        ),
        row("jobs run per consumer, load and pickup", "", ("jobs_per_consumer", "{}")),
        row("API errors (5xx)", "0", ("api_errors", "{}"), ("api_errors_5xx", "{}")),
        row("jobs failed / uploads refused", "0", ("jobs_failed", "{}"), ("upload_errors", "{}")),
        row("lock lines / tracebacks in logs", "0", ("lock_lines", "{}"), ("tracebacks", "{}")),
        row("errors", "0", ("errors", "{}")),
        row("other processes' CPU during the load, %", "", ("other_cpu_pct", "{:.1f}")),
    ]
    print_grid(
        f"{WEB_PROCESSES} web processes and {CONSUMERS} consumers per backend, {figures['model']}, "
        f"{figures['duration_s']:.0f} s or more of load",
        ("figure", *(BACKENDS[b] for b in backends), "target"),
        [tuple(str(cell) for cell in r) for r in rows],
    )
    for backend in backends:
        for name in ("lock_line_examples", "job_failures", "upload_error_examples"):
            for line in figures.get(f"{backend}_{name}") or []:
                print(f"{backend}: {line}")
    print(
        f"machine: {figures['cpu']}, {figures['cpu_count']} cores; load average {figures['load_avg_start']} at the "
        f"start, {figures['load_avg_end']} at the end\n"
    )


def versions() -> dict[str, str]:
    """What the figures depend on besides the machine: the servers and the libraries between them."""
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str] = {"sqlite": sqlite3.sqlite_version}
    for package in ("django", "huey", "waitress", "psycopg", "redis"):
        with contextlib.suppress(PackageNotFoundError):
            found[package] = version(package)
    with contextlib.suppress(Exception):
        from tests.servers import postgresql_bin, redis_server

        for name, command in (("postgresql", [str(postgresql_bin() / "postgres"), "--version"]),
                              ("redis_server", [redis_server(), "--version"])):  # fmt: skip
            words = subprocess.run(command, capture_output=True, text=True, timeout=10).stdout.split()
            found[name] = next((w.removeprefix("v=") for w in words if w[:1].isdigit() or w.startswith("v=")), "")
    return found


def worst(figures: dict, backends: list[str], name: str) -> float | None:
    """The larger of the backends' figure; None when one is missing (its import failed, no sample)."""
    values = [figures[f"{backend}_{name}"] for backend in backends]
    return None if None in values else max(values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 s of load, 1,000 images, fewer samples (~4 min)")
    parser.add_argument("--backends", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    parser.add_argument("--clients", type=int, default=16, help="API client threads (default 16)")
    parser.add_argument("--duration", type=float, help="seconds of load at least (default 30; --quick: 10)")
    parser.add_argument("--images", type=int, help="JPEGs in the big import (default 6000; --quick: 1000)")
    parser.add_argument("--pickups", type=int, help="pickup samples on idle consumers (default 20; --quick: 8)")
    parser.add_argument("--pairs", type=int, help="times two jobs are queued at once (default 5; --quick: 3)")
    parser.add_argument("--model", default=load.DEFAULT_MODEL)
    parser.add_argument("--import-timeout", type=float, default=900, help="seconds the big import may take")
    parser.add_argument("--time-limit", type=float, help="seconds for the whole run (default 2700; --quick: 900)")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (data folders, logs)")
    args = parser.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends:
        parser.error(f"--backends: say sqlite, postgres or both, not {args.backends!r}")
    args.duration = args.duration or (10 if args.quick else 30)
    args.images = args.images or (1000 if args.quick else 6000)
    args.pickups = args.pickups or (8 if args.quick else 20)
    args.pairs = args.pairs or (3 if args.quick else 5)
    args.time_limit = args.time_limit or (900 if args.quick else 2700)

    def over_time(signum: int, frame: object) -> None:
        raise TimeoutError(f"over the time limit of {args.time_limit:.0f} s")

    signal.signal(signal.SIGALRM, over_time)
    signal.alarm(int(args.time_limit))
    figures: dict = {"load_avg_start": round(load_average(), 2), "cpu": cpu_model(), "cpu_count": os.cpu_count()}
    busy = busy_processes()
    if busy:
        print("other busy processes (figures will show it):\n  " + "\n  ".join(busy), file=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="transferlab-bench-scale-"))
    started = time.monotonic()
    try:
        zips = build_zips(work, args.images)
        for backend in backends:
            print(f"measuring {BACKENDS[backend]}...", file=sys.stderr)
            measured = measure_backend(backend, args, work, zips)
            figures.update({f"{backend}_{name}": value for name, value in measured.items()})
    finally:
        signal.alarm(0)
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    figures.update(
        {
            "errors": sum(figures[f"{b}_errors"] for b in backends),
            "pickup_p95_s": worst(figures, backends, "pickup_p95_s"),
            "import_s_under_load": worst(figures, backends, "import_s_under_load"),
            "consumers_busy": min(figures[f"{b}_consumers_busy"] for b in backends),
            "backends": backends,
            "clients": args.clients,
            "duration_s": args.duration,
            "images": args.images,
            "model": args.model,
            "total_s": round(time.monotonic() - started),
            "load_avg_end": round(load_average(), 2),
            "busy_at_start": busy,
            **machine_info(),
            **{f"{name}_version": value for name, value in versions().items()},
        }
    )
    show(figures, backends, args.images)
    if args.json:
        write_json(args.json, figures)
    if figures["errors"]:
        print(f"{figures['errors']} errors: see the figures above", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:  # a benchmark reports its failure and exits non-zero
        print(f"bench/scale.py failed: {exc!r}", file=sys.stderr)
        sys.exit(2)
