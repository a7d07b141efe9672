"""Several consumers sharing one install, as on several machines with one database, one queue and
one DATA_DIR on shared storage.

Real consumer processes, two of a kind at once (`manage.py run_huey` for imports and downloads,
`manage.py run_training_worker` for training), all on one install: the same DATA_DIR, the same
database and the same queues (SQLite and SqliteHuey; PostgreSQL and Redis with
TEST_BACKENDS=postgresql). These tests prove, as a user would see it:

- every job runs exactly once, even when its task is delivered twice, and the consumers share the
  work; imports and training keep their own queues, so imports finish while training runs;
- a consumer killed mid-import and one killed mid-training (on "another machine", so noticed by its
  missing heartbeat) are noticed by the consumers that are still up, not by a new one: both jobs end
  up interrupted, with what they left behind removed, and the next jobs are done by survivors;
- starting and restarting a consumer never fails another consumer's live job, not even when the
  consumer stopped held a second delivery of that job's task;
- two consumers downloading weights at once install one whole, correct file each; a second request
  for a file being downloaded finds the download under way instead of starting another.

A few things are changed inside the consumers, for the tests' sake only (`LAUNCH`, each asked for
by an environment variable): imports pause between small batches of rows, so a test can act while
one is half way; weights come from a local HTTP server that sends them slowly, so that two downloads
overlap; a consumer can pretend to run on another machine, and recovery can give up on a silent
worker after seconds rather than minutes; where a test only counts training jobs, they skip building
their export files. Everything else is the code as it runs in production.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.dataset_helpers import files_under
from tests.servers import process_environment, process_rows

ROOT = Path(__file__).resolve().parent.parent
STARTED = "Huey consumer started"
MAIN = "run_huey"
TRAINING = "run_training_worker"

# How every consumer here starts: manage.py, after the test-only changes its environment asks for.
LAUNCH = """
import os, runpy, socket, sys, time
from datetime import timedelta

if os.environ.get("TEST_HOSTNAME"):  # as if on another machine: its pid means nothing to this one
    socket.gethostname = lambda: os.environ["TEST_HOSTNAME"]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
import django

django.setup()
if os.environ.get("TEST_STALE_AFTER"):  # a silent worker elsewhere is given up on sooner than in production
    from webapp import background

    background.STALE_AFTER = timedelta(seconds=float(os.environ["TEST_STALE_AFTER"]))
if os.environ.get("TEST_ROW_PAUSE"):  # imports write 10 rows at a time, then pause
    from training import imports

    pause = float(os.environ["TEST_ROW_PAUSE"])
    imports.BULK_BATCH = 10
    imports._yield_to_other_writers = lambda held: time.sleep(pause)
if os.environ.get("TEST_NO_EXPORTS"):  # a trained model without its export files: half a minute less per job
    from training import exporting

    exporting.FORMATS = ()
if os.environ.get("TEST_WEIGHTS_URL"):  # weights come from the test's own server, not Keras's
    from classifier import weights

    keras_fetch = weights._fetch
    weights._resolve_host = lambda url, timeout: None
    weights._fetch = lambda url, *args: keras_fetch(os.environ["TEST_WEIGHTS_URL"] + url.rsplit("/", 1)[-1], *args)
sys.argv = ["manage.py", *sys.argv[1:]]
runpy.run_path("manage.py", run_name="__main__")
"""

SCRIPT_PRELUDE = """
import json, os, sys
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
import django

django.setup()
from django.contrib.auth import get_user_model

user, _ = get_user_model().objects.get_or_create(username="owner", defaults={"is_staff": True})
"""

# argv: the number of images of each import, and whether each task is delivered twice.
QUEUE_IMPORTS = """
from django.core.files.uploadedfile import SimpleUploadedFile
from tests.dataset_helpers import image_zip
from training import imports, tasks
from training.models import Dataset

sizes, twice = json.loads(sys.argv[1]), json.loads(sys.argv[2])
ids = []
for size in sizes:
    dataset = Dataset.objects.create(name=f"Pets {Dataset.objects.count() + 1}", created_by=user)
    data = image_zip({"cats": size // 2, "dogs": size - size // 2}, seed=dataset.pk * 10_000)
    job = imports.start_import(dataset, SimpleUploadedFile("pets.zip", data), user)
    if twice:
        tasks.import_archive(job.pk)  # the same task again: a duplicate delivery
    ids.append(job.pk)
print(json.dumps(ids))
"""

PREPARE_TRAINING = """
from django.conf import settings
from tests.helpers import make_zoo_weights
from tests.training_helpers import TRAIN_BASE, colour_dataset

make_zoo_weights(TRAIN_BASE, settings.WEIGHTS_DIR, include_top=False)
print(json.dumps(colour_dataset(user, per_label=10).pk))
"""

# argv: the dataset, the configuration of each job, and whether each task is delivered twice.
QUEUE_TRAINING = """
from tests.training_helpers import TRAIN_BASE
from training import jobs, tasks, trainer
from training.models import Dataset

dataset = Dataset.objects.get(pk=int(sys.argv[1]))
configs, twice = json.loads(sys.argv[2]), json.loads(sys.argv[3])
ids = []
for config in configs:
    job = jobs.start_training(dataset, TRAIN_BASE, trainer.TrainConfig(**config), user)
    if twice:
        tasks.train(job.pk)  # the same task again: a duplicate delivery
    ids.append(job.pk)
print(json.dumps(ids))
"""

# argv: a task of training.tasks and its job, to be delivered once more.
DELIVER_AGAIN = """
from training import tasks

getattr(tasks, sys.argv[1])(int(sys.argv[2]))
print("null")
"""

# argv: the models to download, in the order they are asked for (a model twice: asked twice).
REQUEST_DOWNLOADS = """
from classifier import installs, tasks, zoo

asked = []
for key in json.loads(sys.argv[1]):
    download, created = installs.request_download(zoo.get(key), True, user)
    if created:
        tasks.download_weights(download.pk)  # the same task again: a duplicate delivery
    asked.append([download.pk, created])
print(json.dumps(asked))
"""


@dataclass
class Consumer:
    command: str
    process: subprocess.Popen
    log: Path
    stopped: bool = False  # by the test: its exit is no failure

    @property
    def pid(self) -> int:
        return self.process.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def executed(self, task: str) -> int:
        """How many deliveries of `task` this consumer has finished (huey logs each one)."""
        return len(re.findall(rf"{re.escape(task)}: \S+ executed in", self.text()))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> None:
        """Send `sig` and wait for the exit (killed after `timeout`)."""
        self.stopped = True
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Install:
    """One install (DATA_DIR, database, queues) and the consumers started on it."""

    path: Path
    env: dict[str, str]
    consumers: list[Consumer] = field(default_factory=list)

    def run(self, code: str, *args: object) -> object:
        """Run a Python snippet with Django set up on this install; returns the JSON it printed last."""
        script = self.path / "script.py"
        script.write_text(SCRIPT_PRELUDE + code)
        args = [a if isinstance(a, str) else json.dumps(a) for a in args]
        done = subprocess.run(
            [sys.executable, str(script), *args], cwd=ROOT, env=self.env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    def start(self, command: str, **env: str) -> Consumer:
        """Start a consumer and wait until it takes tasks."""
        log = self.path / f"{command}-{len(self.consumers) + 1}.log"
        with log.open("w") as out:
            process = subprocess.Popen(
                [sys.executable, "-c", LAUNCH, command],
                cwd=ROOT, env={**self.env, **env}, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        consumer = Consumer(command, process, log)
        self.consumers.append(consumer)
        self.wait(lambda: STARTED in consumer.text(), f"{command} to start", timeout=120)
        return consumer

    def rows(self, sql: str, *params: object) -> list[dict]:
        return process_rows(self.path, sql, *params)

    def job(self, table: str, pk: int) -> dict:
        return self.rows(f"SELECT * FROM {table} WHERE id = ?", pk)[0]

    def wait(self, done: Callable[[], object], what: str, timeout: float) -> object:
        """Poll `done` until it is true; a consumer that exits on its own fails the test at once."""
        deadline = time.monotonic() + timeout
        while True:
            outcome = done()
            if outcome:
                return outcome
            for consumer in self.consumers:
                code = consumer.process.poll()
                if code is not None and not consumer.stopped:
                    raise AssertionError(
                        f"{consumer.command} {consumer.pid} exited ({code}):\n{consumer.text()[-3000:]}"
                    )
            if time.monotonic() > deadline:
                raise AssertionError(f"Waited {timeout} s for {what}.\n{self.logs()}")
            time.sleep(0.2)

    def wait_for_jobs(self, table: str, ids: list[int], timeout: float) -> list[dict]:
        """Wait until none of the jobs is queued or running; returns their rows."""

        def ended() -> list[dict] | None:
            jobs = [self.job(table, pk) for pk in ids]
            return jobs if all(job["status"] not in ("queued", "running") for job in jobs) else None

        return self.wait(ended, f"{table} {ids} to end", timeout)

    def logs(self) -> str:
        return "\n".join(f"--- {c.command} {c.pid}:\n{c.text()[-2500:]}" for c in self.consumers)


@pytest.fixture
def install(tmp_path) -> Iterator[Install]:
    """A migrated install; every consumer a test started is killed at its end (the install is thrown away)."""
    env = process_environment(
        tmp_path, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2", no_proxy="127.0.0.1,localhost"
    )
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
    place = Install(tmp_path, env)
    yield place
    for consumer in place.consumers:
        consumer.stop(signal.SIGKILL)


def worker_pid(job: dict) -> int:
    """The pid of the consumer that ran a job (its `worker` column is host:pid:token)."""
    return int(job["worker"].split(":")[1])


def image_rows(install: Install, import_id: int) -> int:
    """Image rows the import has written so far (provisional until it succeeds)."""
    return install.rows("SELECT count(*) AS n FROM training_datasetimage WHERE import_job_id = ?", import_id)[0]["n"]


def epochs_done(job: dict) -> int:
    return len(json.loads(job["history"] or "[]"))


def test_every_job_runs_exactly_once_and_two_consumers_of_each_kind_share_the_work(install):
    dataset = install.run(PREPARE_TRAINING)
    mains = [install.start(MAIN, TEST_ROW_PAUSE="0.2") for _ in range(2)]
    trainers = [install.start(TRAINING, TEST_NO_EXPORTS="1") for _ in range(2)]

    # Every task is delivered twice, the copy right behind the original: two consumers get both at once.
    training = install.run(QUEUE_TRAINING, dataset, [{"epochs": 3}, {"epochs": 3}], True)
    sizes = [60, 60, 60, 60]
    imported = install.run(QUEUE_IMPORTS, sizes, True)

    imports = install.wait_for_jobs("training_importjob", imported, timeout=120)
    # Imports have their own queue and consumers: queued after the training jobs, they end first.
    assert {install.job("training_trainingjob", pk)["status"] for pk in training} <= {"queued", "running"}
    trained = install.wait_for_jobs("training_trainingjob", training, timeout=240)
    install.wait(
        lambda: sum(c.executed("training.tasks.import_archive") for c in mains) == 2 * len(imported)
        and sum(c.executed("training.tasks.train") for c in trainers) == 2 * len(training),
        "every delivery, the copies included, to be done",
        timeout=60,
    )  # fmt: skip

    assert [job["message"] for job in imports] == [f"Added {size} images." for size in sizes]
    assert [job["status"] for job in imports] == ["succeeded"] * len(sizes)
    assert [image_rows(install, pk) for pk in imported] == sizes  # imported once, not twice
    assert {worker_pid(job) for job in imports} == {main.pid for main in mains}

    assert [job["status"] for job in trained] == ["succeeded", "succeeded"], [job["message"] for job in trained]
    for pk in training:
        assert len(install.rows("SELECT id FROM training_trainedmodel WHERE job_id = ?", pk)) == 1
        assert (install.path / "models" / str(pk) / "model.keras").is_file()
    assert {worker_pid(job) for job in trained} == {trainer.pid for trainer in trainers}


def test_consumers_killed_mid_import_and_mid_training_are_cleaned_up_after_by_the_survivors(install):
    """No new consumer starts: the survivors' once-a-minute check finds the dead workers' jobs.

    The training workers run as if on another machine: there, a dead worker's pid tells nothing,
    and only its silence (no heartbeat for STALE_AFTER, shortened here to 20 s) says it is gone.
    """
    dataset = install.run(PREPARE_TRAINING)
    mains = [install.start(MAIN, TEST_ROW_PAUSE="0.3", TEST_STALE_AFTER="20") for _ in range(2)]
    trainers = [install.start(TRAINING, TEST_HOSTNAME="gpu-box") for _ in range(2)]
    # The whole network runs every epoch (no cached features): minutes of training, not seconds.
    slow = {"epochs": 400, "early_stopping": False, "cache_features": False}
    [training] = install.run(QUEUE_TRAINING, dataset, [slow], False)
    install.wait(lambda: epochs_done(install.job("training_trainingjob", training)), "a first epoch", timeout=120)
    [imported] = install.run(QUEUE_IMPORTS, [400], False)
    install.wait(lambda: image_rows(install, imported) >= 20, "the import's first rows", timeout=60)

    import_job, training_job = (
        install.job("training_importjob", imported),
        install.job("training_trainingjob", training),
    )
    [killed_main] = [main for main in mains if main.pid == worker_pid(import_job)]
    [killed_trainer] = [trainer for trainer in trainers if trainer.pid == worker_pid(training_job)]
    for consumer in (killed_main, killed_trainer):
        consumer.stop(signal.SIGKILL)  # no chance to record anything
    [survivor] = [main for main in mains if main is not killed_main]
    [surviving_trainer] = [trainer for trainer in trainers if trainer is not killed_trainer]
    folder = install.path / "datasets" / str(import_job["dataset_id"])
    assert image_rows(install, imported) > 0 and files_under(folder)  # what a killed consumer leaves behind
    assert training_job["model_ready_at"] is None  # mid-training: no model yet
    assert training_job["worker"].startswith("gpu-box:")

    # Recovery runs once a minute on each consumer of the main queue: within a minute or two.
    install.wait(
        lambda: install.job("training_importjob", imported)["status"] != "running"
        and install.job("training_trainingjob", training)["status"] != "running",
        "the survivors to notice",
        timeout=150,
    )  # fmt: skip
    import_job, training_job = (
        install.job("training_importjob", imported),
        install.job("training_trainingjob", training),
    )
    assert import_job["status"] == "interrupted" and "worker stopped" in import_job["message"]
    assert image_rows(install, imported) == 0
    assert install.rows("SELECT id FROM training_label WHERE dataset_id = ?", import_job["dataset_id"]) == []
    assert files_under(folder) == []  # pictures, thumbnails and the journal
    assert not Path(import_job["archive_path"]).exists()
    assert training_job["status"] == "interrupted" and "worker stopped" in training_job["message"]
    assert epochs_done(training_job) >= 1  # the curves so far are kept
    assert not (install.path / "models" / str(training)).exists()
    assert install.rows("SELECT id FROM training_trainedmodel WHERE job_id = ?", training) == []
    assert f"zip import {imported} was interrupted" in survivor.text()
    assert f"training job {training} was interrupted" in survivor.text()

    # The survivors take the next jobs.
    [after] = install.run(QUEUE_IMPORTS, [10], False)
    [done] = install.wait_for_jobs("training_importjob", [after], timeout=60)
    assert done["status"] == "succeeded" and worker_pid(done) == survivor.pid
    [retrained] = install.run(QUEUE_TRAINING, dataset, [{"epochs": 1}], False)
    started = install.wait(
        lambda: (job := install.job("training_trainingjob", retrained))["status"] != "queued" and job,
        "the surviving training worker to take the next job",
        timeout=60,
    )
    assert started["status"] == "running" and worker_pid(started) == surviving_trainer.pid


SETTLE_S = 2.0  # a consumer's start-up hooks (recovery, clean-up) run within milliseconds of its start


def test_starting_and_restarting_consumers_never_fails_the_jobs_another_consumer_runs(install):
    dataset = install.run(PREPARE_TRAINING)
    main, trainer = install.start(MAIN, TEST_ROW_PAUSE="0.3"), install.start(TRAINING)
    [training] = install.run(QUEUE_TRAINING, dataset, [{"epochs": 3}], False)
    [imported] = install.run(QUEUE_IMPORTS, [600], False)
    install.wait(
        lambda: image_rows(install, imported) >= 10
        and install.job("training_trainingjob", training)["status"] == "running",
        "both jobs to be under way",
        timeout=60,
    )  # fmt: skip

    # Another pair of consumers starts next to the busy ones, then is restarted as a service manager does.
    others = [install.start(MAIN), install.start(TRAINING)]
    time.sleep(SETTLE_S)
    for consumer in others:
        consumer.stop(signal.SIGTERM)
    others = [install.start(MAIN), install.start(TRAINING)]
    time.sleep(SETTLE_S)
    assert install.job("training_importjob", imported)["status"] == "running", "the import ended too soon to tell"

    # The new training worker takes a second delivery of the running job's task, and is stopped with
    # Ctrl-C (at once, recording its own running job as interrupted) while it holds it.
    install.run(DELIVER_AGAIN, "train", training)
    install.wait(lambda: "Executing training.tasks.train" in others[1].text(), "the copy to be taken", timeout=30)
    others[1].stop(signal.SIGINT)
    assert install.job("training_trainingjob", training)["status"] == "running", "training ended too soon to tell"

    [import_job] = install.wait_for_jobs("training_importjob", [imported], timeout=120)
    [training_job] = install.wait_for_jobs("training_trainingjob", [training], timeout=240)
    assert (import_job["status"], import_job["message"]) == ("succeeded", "Added 600 images.")
    assert image_rows(install, imported) == 600 and worker_pid(import_job) == main.pid
    folder = install.path / "datasets" / str(import_job["dataset_id"])
    assert len([p for p in files_under(folder) if p.suffix == ".png"]) >= 600  # no picture was undone
    assert training_job["status"] == "succeeded", training_job["message"]
    assert worker_pid(training_job) == trainer.pid
    assert (install.path / "models" / str(training) / "model.keras").is_file()


GENERATE_WEIGHTS = """
from classifier import zoo
from tests.helpers import make_zoo_weights

keys = json.loads(sys.argv[1])
print(json.dumps([make_zoo_weights(key, Path(sys.argv[2]), seed=n).name for n, key in enumerate(keys)]))
"""
DOWNLOADED = ("mobilenet-0.5-128", "mobilenet-0.5-160")  # Keras publishes no hash for these: generated files pass


@contextmanager
def publishing(folder: Path, seconds: float) -> Iterator[tuple[str, Counter]]:
    """Keras's download site, on this machine: serves `folder`, each file over `seconds`; counts requests."""
    requests: Counter = Counter()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            name = self.path.lstrip("/")
            requests[name] += 1
            path = folder / name
            if "/" in name or not path.is_file():
                self.send_error(404)
                return
            data = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            step = len(data) // 20 + 1
            for start in range(0, len(data), step):
                self.wfile.write(data[start : start + step])
                time.sleep(seconds / 20)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/", requests
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def watching(folder: Path, sizes: dict[str, int]) -> Iterator[list[str]]:
    """Every 20 ms, what sits in `folder` under a published name with the wrong size (half written, doubled)."""
    seen: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.02):
            for name, size in sizes.items():
                try:
                    actual = (folder / name).stat().st_size
                except FileNotFoundError:
                    continue
                if actual != size:
                    seen.append(f"{name}: {actual} bytes")

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join()


def test_two_consumers_downloading_weights_at_once_install_one_whole_file_each(install):
    published = install.path / "published"
    names = install.run(GENERATE_WEIGHTS, list(DOWNLOADED), str(published))
    expected = {name: (published / name).read_bytes() for name in names}
    weights = install.path / "weights"
    with (
        publishing(published, seconds=2) as (url, requests),
        watching(weights, {n: len(b) for n, b in expected.items()}) as wrong,
    ):
        # One task at a time per consumer: the two downloads are necessarily on two consumers at once.
        mains = [install.start(MAIN, WORKER_CONCURRENCY="1", TEST_WEIGHTS_URL=url) for _ in range(2)]
        # The first model is asked for again while its download is under way (and each task is delivered twice).
        (first, created), (second, also_created), (again, created_again) = install.run(
            REQUEST_DOWNLOADS, [DOWNLOADED[0], DOWNLOADED[1], DOWNLOADED[0]]
        )
        downloads = install.wait_for_jobs("classifier_weightsdownload", [first, second], timeout=120)
        install.wait(
            lambda: sum(main.executed("classifier.tasks.download_weights") for main in mains) == 4,
            "every delivery, the copies included, to be done",
            timeout=60,
        )

    assert created and also_created and (again, created_again) == (first, False)  # found under way, not started twice
    assert [download["status"] for download in downloads] == ["succeeded", "succeeded"], downloads
    assert [download["message"].split(" for ")[0] for download in downloads] == [f"Installed {name}" for name in names]
    assert {worker_pid(download) for download in downloads} == {main.pid for main in mains}
    one, other = downloads
    assert one["started_at"] < other["finished_at"] and other["started_at"] < one["finished_at"]  # at the same time
    assert len(install.rows("SELECT id FROM classifier_weightsdownload")) == 2
    assert requests == Counter({name: 1 for name in names})  # each file fetched once, duplicates included
    for name, data in expected.items():
        assert (weights / name).read_bytes() == data
    assert sorted(p.name for p in weights.iterdir()) == sorted(names)  # no partial or staging file left
    assert wrong == []  # never a half-written file under a published name
