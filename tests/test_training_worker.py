"""The real training worker in a subprocess: it runs a queued job end to end against a temporary
database and queue, and a second worker recovers the job of one that was killed mid-training.

Nothing is mocked: `manage.py run_training_worker` consumes the queue (SQLite, or Redis with
TEST_BACKENDS=postgresql), the job trains a
small MobileNetV2 with generated weights, and the test reads the database the worker writes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.servers import process_environment, process_rows

ROOT = Path(__file__).resolve().parent.parent

SETUP = """
import json, sys
from django.contrib.auth import get_user_model
from tests.helpers import make_zoo_weights
from tests.training_helpers import TRAIN_BASE, colour_dataset
from training import jobs, trainer
from django.conf import settings
make_zoo_weights(TRAIN_BASE, settings.WEIGHTS_DIR, include_top=False)
user = get_user_model().objects.create_user("worker-test", is_staff=True)
dataset = colour_dataset(user, per_label=10)
ids = [jobs.start_training(dataset, TRAIN_BASE, trainer.TrainConfig(**json.loads(c)), user).pk for c in sys.argv[1:]]
print(json.dumps(ids))
"""


def _env(tmp_path: Path, **extra: str) -> dict:
    return process_environment(tmp_path, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2", **extra)


def _manage(env: dict, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    )
    return done.stdout


def _setup(tmp_path: Path, *configs: dict, **extra_env: str) -> tuple[dict, list[int]]:
    env = _env(tmp_path, **extra_env)
    _manage(env, "migrate", "-v", "0")
    script = tmp_path / "setup.py"
    script.write_text(
        "import django, os\nos.environ.setdefault('DJANGO_SETTINGS_MODULE', 'webapp.settings')\ndjango.setup()\n"
        + SETUP
    )
    out = subprocess.run(
        [sys.executable, str(script), *(json.dumps(c) for c in configs)],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return env, json.loads(out.stdout.strip().splitlines()[-1])


def _job(tmp_path: Path, job_id: int) -> dict:
    return process_rows(tmp_path, "SELECT * FROM training_trainingjob WHERE id = ?", job_id)[0]


def _wait(tmp_path: Path, job_id: int, done, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = _job(tmp_path, job_id)
        if done(job):
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not get there in {timeout} s: {_job(tmp_path, job_id)}")


def _worker(env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "run_training_worker"],
        cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_the_training_worker_runs_a_queued_job_end_to_end(tmp_path):
    """With LiteRT on, as in production: the base is converted once and computes the features."""
    env, [job_id] = _setup(tmp_path, {"epochs": 8}, INFERENCE_RUNTIME="litert")
    worker = _worker(env, tmp_path / "worker.log")
    try:
        job = _wait(tmp_path, job_id, lambda j: j["status"] not in ("queued", "running"))
    finally:
        _stop(worker)
    assert job["status"] == "succeeded", (job["message"], job["detail"], (tmp_path / "worker.log").read_text()[-3000:])
    assert json.loads(job["evaluation"])["validation"]["images"] > 0
    assert len(json.loads(job["history"])) >= 1 and job["model_ready_at"]
    assert (tmp_path / "models" / str(job_id) / "model.keras").exists()
    assert len(process_rows(tmp_path, "SELECT id FROM training_trainedmodel WHERE job_id = ?", job_id)) == 1
    assert json.loads(job["strategy"])["features"] == "LiteRT"
    assert json.loads(job["timings"])["features_convert_s"] > 0
    assert len(list((tmp_path / "lite" / "features").glob("*/*.tflite"))) == 1


def test_a_second_worker_recovers_the_job_of_a_worker_killed_mid_training(tmp_path):
    env, [job_id] = _setup(tmp_path, {"epochs": 400, "early_stopping": False})
    first = _worker(env, tmp_path / "first.log")
    try:
        running = _wait(tmp_path, job_id, lambda j: j["status"] == "running" and json.loads(j["history"] or "[]"))
        assert running["worker"].split(":")[1] == str(first.pid)
        os.kill(first.pid, signal.SIGKILL)  # no chance to record anything
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    assert _job(tmp_path, job_id)["status"] == "running"  # what a killed worker leaves behind

    second = _worker(env, tmp_path / "second.log")
    try:
        job = _wait(tmp_path, job_id, lambda j: j["status"] != "running", timeout=60)
    finally:
        _stop(second)
    assert job["status"] == "interrupted" and "the worker stopped" in job["message"]
    assert len(json.loads(job["history"])) >= 1  # the curves so far are kept
    assert not (tmp_path / "models" / str(job_id)).exists()


def test_ctrl_c_stops_the_training_worker_at_once_and_records_the_job_as_interrupted(tmp_path):
    """A training job can take hours: SIGINT (Ctrl-C, `make run` stopping) does not wait for it."""
    env, [job_id] = _setup(tmp_path, {"epochs": 400, "early_stopping": False})
    worker = _worker(env, tmp_path / "worker.log")
    try:
        _wait(tmp_path, job_id, lambda j: j["status"] == "running" and json.loads(j["history"] or "[]"))
        worker.send_signal(signal.SIGINT)
        worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
    job = _job(tmp_path, job_id)
    assert job["status"] == "interrupted", (tmp_path / "worker.log").read_text()[-3000:]
