"""Load benchmark: API clients against the real `manage.py serve` during an import, with and without slow clients.

    .venv/bin/python bench/load.py [--quick] [--json PATH] [--clients 8,16] [--duration 60] [--slow 200]
                                   [--images 6000] [--model mobilenet-0.5-128]

In a throw-away DATA_DIR: migrate, collect static files, create a staff user with an API token
and empty datasets, install generated weights for the model through `manage.py import_weights`
(compute does not depend on the weight values; nothing is downloaded), build a zip of generated
JPEGs (bench/import.py's pictures), then start `manage.py serve` on a free loopback port exactly
as `make run` does.

While a zip import runs through the web (logged in, POST /datasets/<id>/import/, handled by the
server's own worker; when one finishes the next starts, so an import runs throughout), each
client thread posts one small JPEG to POST /api/v1/predict with its token over a keep-alive
connection, as fast as answers come, for `--duration` seconds; once per client count. Then
`--slow` connections are opened, each sending a request line and a header but never the blank
line that ends them, and the runs are repeated while they are held. The server runs with
WEB_CHANNEL_TIMEOUT just above that part, so the slow connections must stay open through it and
be closed by the server's timeout afterwards.

Figures (one flat JSON object with --json): per client count N, `req_s_N`, `p50_ms_N`,
`p95_ms_N`, `p99_ms_N`, `errors_N` (non-2xx answers and connection errors; `errors_5xx_N` of
them 5xx), the same with slow connections held (`..._with_slow_clients_N`);
`p50_ms_with_slow_clients` is the one at the largest N; `errors` sums all runs; `peak_rss_mb` of
the web server process (its whole process tree for a forking server); `slow_clients_held`: slow
connections that stayed open through the runs and were then closed by the server's timeout.
Latency percentiles are over the answered (2xx) requests. Exits 2 on error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import importlib
import json
import os
import selectors
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from webapp.tensorflow_logs import quiet_tensorflow  # noqa: E402

quiet_tensorflow()  # before anything loads TensorFlow: no C++ start-up notes among the figures

from bench.lib import processes  # noqa: E402
from bench.lib.figures import percentile, write_json  # noqa: E402
from bench.lib.machine import busy_processes, cpu_model, load_average, machine_info  # noqa: E402
from bench.lib.tables import print_grid  # noqa: E402
from bench.lib.webclient import Session  # noqa: E402
from bench.predict import free_port, multipart, sample_jpeg  # noqa: E402

DEFAULT_MODEL = "mobilenet-0.5-128"
USER, PASSWORD = "bench", "bench-load-password"
REQUEST_TIMEOUT_S = 10  # a request without an answer by then counts as an error
SLOW_REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n"  # never the blank line that ends the headers
START_TIMEOUT_S = 180


# -- the server --------------------------------------------------------------------------------


def manage(env: dict[str, str], *args: str, capture: bool = False) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=capture, text=True
    )
    return done.stdout if capture else ""


SETUP_CODE = """
import json
from django.contrib.auth import get_user_model
from classifier.models import ApiToken
from training.models import Dataset
user = get_user_model().objects.create_user({user!r}, password={password!r}, is_staff=True)
ids = [Dataset.objects.create(name=f"Load {{i}}", created_by=user).pk for i in range({datasets})]
print(json.dumps({{"token": ApiToken.issue(user, "load")[1], "datasets": ids}}))
"""


def prepare(data_dir: Path, model: str, datasets: int, channel_timeout: int) -> tuple[dict[str, str], str, list[int]]:
    """Migrated data folder, static files, a staff user with a token, empty datasets, installed weights."""
    env = {
        **os.environ,
        "DATA_DIR": str(data_dir),
        "STATIC_ROOT": str(data_dir / "static"),
        "TMPDIR": str(data_dir / "tmp"),
        "DEBUG": "False",
        "LOG_LEVEL": "WARNING",
        "WEB_CHANNEL_TIMEOUT": str(channel_timeout),
    }
    (data_dir / "tmp").mkdir(parents=True)
    manage(env, "migrate", "--noinput", "-v", "0")
    manage(env, "collectstatic", "--noinput", "-v", "0")
    code = SETUP_CODE.format(user=USER, password=PASSWORD, datasets=datasets)
    made = json.loads(manage(env, "shell", "-c", code, capture=True).strip().splitlines()[-1])
    staging = data_dir / "staging"
    code = f"from tests.helpers import make_zoo_weights as m; print(m({model!r}, {str(staging)!r}))"
    generated = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True,
    ).stdout.strip().splitlines()[-1]  # fmt: skip
    manage(env, "import_weights", generated, capture=True)
    shutil.rmtree(staging)
    return env, made["token"], made["datasets"]


def start_server(env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--bind", f"127.0.0.1:{port}"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def stop_server(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=90)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def web_server_tree(serve_pid: int) -> list[int]:
    """The web server's processes: serve's child that is not a worker, and its own children."""
    for pid in processes.children(serve_pid):
        command = processes.command_line(pid)
        if "run_huey" not in command and "run_training_worker" not in command:
            return processes.tree(pid)
    return []


def predict_request(token: str, model: str) -> tuple[bytes, dict[str, str]]:
    body, content_type = multipart({"model": model, "top_k": "3"}, [("images", "photo.jpg", sample_jpeg(7))])
    return body, {"Authorization": f"Bearer {token}", "Content-Type": content_type}


def post_once(port: int, body: bytes, headers: dict[str, str], timeout: float) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/api/v1/predict", body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def wait_until_ready(server: subprocess.Popen, port: int, body: bytes, headers: dict[str, str], log: Path) -> float:
    """Until the first prediction answers (which also loads the model); returns the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < START_TIMEOUT_S:
        if server.poll() is not None:
            raise RuntimeError(f"serve exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            status = post_once(port, body, headers, timeout=120)
            if status == 200:
                return time.monotonic() - started
            raise RuntimeError(f"the first prediction answered HTTP {status}")
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"serve did not answer within {START_TIMEOUT_S} s")


# -- the clients -------------------------------------------------------------------------------


@dataclass
class Run:
    """One measured run: every request's latency and status (0: connection error or no answer)."""

    clients: int
    slow: int
    seconds: float = 0.0
    samples: list[tuple[float, int]] = field(default_factory=list)

    @property
    def ok_ms(self) -> list[float]:
        return [s * 1000 for s, status in self.samples if 200 <= status < 300]

    def figures(self) -> dict[str, float | int | None]:
        ok = self.ok_ms
        return {
            "req_s": round(len(ok) / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": round(percentile(ok, 50), 1) if ok else None,
            "p95_ms": round(percentile(ok, 95), 1) if ok else None,
            "p99_ms": round(percentile(ok, 99), 1) if ok else None,
            "errors": sum(1 for _, status in self.samples if not 200 <= status < 300),
            "errors_5xx": sum(1 for _, status in self.samples if status >= 500),
            "requests": len(self.samples),
        }


def client(port: int, body: bytes, headers: dict[str, str], deadline: float, samples: list) -> None:
    """Post on one keep-alive connection until the deadline; reconnect after an error."""
    post_until(port, body, headers, lambda: time.monotonic() >= deadline, samples)


def post_until(port: int, body: bytes, headers: dict[str, str], done: Callable[[], bool], samples: list) -> None:
    """Post one JPEG after another on a keep-alive connection until `done()`; (seconds, status) per request."""
    conn = None
    while not done():
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
        started = time.perf_counter()
        try:
            conn.request("POST", "/api/v1/predict", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            status = response.status
            if response.will_close:
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException):
            status = 0
            conn.close()
            conn = None
        samples.append((time.perf_counter() - started, status))  # list.append is atomic
    if conn is not None:
        conn.close()


def run_clients(port: int, clients: int, slow: int, duration: float, body: bytes, headers: dict[str, str]) -> Run:
    run = Run(clients, slow)
    started = time.monotonic()
    threads = [
        threading.Thread(target=client, args=(port, body, headers, started + duration, run.samples), daemon=True)
        for _ in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    run.seconds = time.monotonic() - started
    return run


# -- slow connections --------------------------------------------------------------------------


class SlowClients:
    """Connections that sent a partial request and wait; a thread notes when the server closes each."""

    def __init__(self, port: int, count: int) -> None:
        self.opened_at = time.monotonic()
        self.closed_at: dict[int, float] = {}
        self.refused = 0
        self.sockets: list[socket.socket] = []
        for _ in range(count):
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                sock.sendall(SLOW_REQUEST)
                sock.setblocking(False)
                self.sockets.append(sock)
            except OSError:
                self.refused += 1
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        selector = selectors.DefaultSelector()
        for sock in self.sockets:
            selector.register(sock, selectors.EVENT_READ)
        while not self._stop.is_set() and len(self.closed_at) < len(self.sockets):
            for key, _ in selector.select(timeout=0.2):
                sock = key.fileobj
                try:
                    if sock.recv(65536):  # an answer (400, 408...): wait for the close that follows
                        continue
                except BlockingIOError:
                    continue
                except OSError:
                    pass
                self.closed_at[sock.fileno()] = time.monotonic()
                selector.unregister(sock)
        selector.close()

    def open_now(self) -> int:
        return len(self.sockets) - len(self.closed_at)

    def wait_closed(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.open_now() and time.monotonic() < deadline:
            time.sleep(0.2)

    def close(self) -> None:
        self._stop.set()
        self._watcher.join(timeout=5)
        for sock in self.sockets:
            sock.close()


# -- the import running beside ----------------------------------------------------------------


class Imports:
    """Zip imports through the web, one after another into fresh datasets, until stopped."""

    def __init__(self, port: int, zip_path: Path, datasets: list[int], db: Path) -> None:
        self.port, self.zip_path, self.datasets, self.db = port, zip_path, datasets, db
        self.stop = threading.Event()
        self.jobs: list[int] = []
        self.error: str | None = None
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _status(self, job: int) -> str:
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30) as db:
            return db.execute("SELECT status FROM training_importjob WHERE id = ?", (job,)).fetchone()[0]

    def _loop(self) -> None:
        try:
            session = Session(self.port)
            session.login(USER, PASSWORD)
            for dataset in self.datasets:
                if self.stop.is_set():
                    return
                status, location = session.post_file(f"/datasets/{dataset}/import/", "archive", self.zip_path)
                if status != 302 or "/imports/" not in location:
                    raise RuntimeError(f"the import was not accepted (HTTP {status})")
                job = int(location.rstrip("/").rsplit("/", 1)[1])
                self.jobs.append(job)
                while not self.stop.is_set() and self._status(job) in ("queued", "running"):
                    time.sleep(0.5)
        except Exception as error:  # reported with the figures: a run without its import is not this bench
            self.error = repr(error)

    def summary(self) -> dict[str, float | int]:
        """Finished imports and their speed, from the job rows the worker wrote."""
        if not self.jobs:
            return {"imports_started": 0, "imports_finished": 0, "imports_failed": 0, "import_img_s": 0.0}
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30) as db:
            marks = ",".join("?" * len(self.jobs))
            query = (
                f"SELECT status, done, started_at, finished_at, message FROM training_importjob WHERE id IN ({marks})"
            )
            rows = db.execute(query, self.jobs).fetchall()
        finished = [r for r in rows if r[0] == "succeeded"]
        seconds = sum(
            (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()
            for _, _, start, end, _ in finished
        )
        failures = [r[4] for r in rows if r[0] in ("failed", "interrupted", "cancelled")]
        images = sum(r[1] for r in finished)
        return {
            "imports_started": len(rows),
            "imports_finished": len(finished),
            "imports_failed": len(failures),
            "import_failure": failures[0][:300] if failures else None,
            "import_img_s": round(images / seconds, 1) if seconds else 0.0,
        }


class OtherCpu:
    """Share of the cores other processes used since created: the machine's busy time minus ours.

    bench.lib.machine.OtherCpu counts only waited-for children; the server here is a live process tree.
    """

    def __init__(self, ours: list[int]) -> None:
        self.ours = ours
        self.wall, self.busy, self.own = time.monotonic(), processes.machine_busy_seconds(), self._own()

    def _own(self) -> float:
        return processes.cpu_seconds(self.ours)

    def share(self) -> float:
        wall = time.monotonic() - self.wall
        other = (processes.machine_busy_seconds() - self.busy) - (self._own() - self.own)
        return max(0.0, 100.0 * other / max(wall * (os.cpu_count() or 1), 1e-9))


# -- the whole benchmark -----------------------------------------------------------------------


def build_zip(path: Path, images: int) -> float:
    """bench/import.py's zip of smooth generated JPEGs, 10 labels; its size in MB."""
    size, _ = importlib.import_module("bench.import").build_zip(path, images, labels=10)
    return size / 1_048_576


def measure(args: argparse.Namespace, data_dir: Path) -> dict:
    slow_part_s = args.duration * len(args.clients)
    channel_timeout = int(slow_part_s + 15)  # the slow connections must outlive the runs held beside them
    zip_mb = build_zip(data_dir / "load.zip", args.images)
    env, token, datasets = prepare(data_dir / "data", args.model, args.datasets, channel_timeout)
    port = free_port()
    log = data_dir / "serve.log"
    body, headers = predict_request(token, args.model)
    server = start_server(env, port, log)
    figures: dict = {}
    try:
        figures["first_answer_s"] = round(wait_until_ready(server, port, body, headers, log), 1)
        for _ in range(20):  # warm: the first few calls of a traced model are slower
            post_once(port, body, headers, timeout=60)
        web = web_server_tree(server.pid)
        ours = [os.getpid(), *processes.tree(server.pid)]
        imports = Imports(port, data_dir / "load.zip", datasets, data_dir / "data" / "db.sqlite3")
        imports.thread.start()
        time.sleep(3)  # the upload is under way
        others = OtherCpu(ours)
        runs = [run_clients(port, n, 0, args.duration, body, headers) for n in args.clients]
        slow = SlowClients(port, args.slow)
        time.sleep(1)
        held_at_start = slow.open_now()
        runs += [run_clients(port, n, args.slow, args.duration, body, headers) for n in args.clients]
        held_through = slow.open_now()
        other_cpu_pct = others.share()
        imports.stop.set()
        slow.wait_closed(timeout=channel_timeout + 30 - (time.monotonic() - slow.opened_at))
        closed_by_timeout = [t - slow.opened_at for t in slow.closed_at.values() if t - slow.opened_at >= slow_part_s]
        figures.update(
            {
                "peak_rss_mb": round(max(processes.peak_rss_mb(pid) for pid in web), 1),
                "slow_clients": args.slow,
                "slow_clients_refused": slow.refused,
                "slow_clients_open_at_start": held_at_start,
                "slow_clients_open_through_runs": held_through,
                "slow_clients_held": len(closed_by_timeout),
                "slow_clients_never_closed": slow.open_now(),
                "slow_clients_closed_after_s": round(percentile(closed_by_timeout, 50), 1) if closed_by_timeout else 0,
                "channel_timeout_s": channel_timeout,
                "other_cpu_pct": round(other_cpu_pct, 1),
                "server_alive": server.poll() is None,
                **imports.summary(),
                "import_error": imports.error,
            }
        )  # fmt: skip
        slow.close()
    finally:
        stop_server(server)
    figures["server_lines_with_traceback"] = log.read_text(errors="replace").count("Traceback")
    for run in runs:
        suffix = f"_with_slow_clients_{run.clients}" if run.slow else f"_{run.clients}"
        figures.update({f"{name}{suffix}": value for name, value in run.figures().items()})
    largest = max(args.clients)
    figures["p50_ms_with_slow_clients"] = figures[f"p50_ms_with_slow_clients_{largest}"]
    figures["errors"] = sum(run.figures()["errors"] for run in runs)
    figures["errors_5xx"] = sum(run.figures()["errors_5xx"] for run in runs)
    figures["clients"] = args.clients
    figures.update({"model": args.model, "duration_s": args.duration, "images": args.images, "zip_mb": round(zip_mb)})
    return figures


def show(figures: dict, clients: list[int]) -> None:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:,.0f}"

    rows = []
    for suffix, label in [(f"_{n}", f"{n} clients") for n in clients] + [
        (f"_with_slow_clients_{n}", f"{n} clients + {figures['slow_clients']} slow") for n in clients
    ]:
        rows.append(
            (
                label,
                f"{figures['req_s' + suffix]:.1f}",
                ms(figures["p50_ms" + suffix]),
                ms(figures["p95_ms" + suffix]),
                ms(figures["p99_ms" + suffix]),
                str(figures["errors" + suffix]),
                str(figures["errors_5xx" + suffix]),
            )
        )
    print_grid(
        f"POST /api/v1/predict, {figures['model']}, {figures['duration_s']} s per run, import running",
        ("run", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors", "5xx"),
        rows,
    )
    print(f"peak RSS of the web server: {figures['peak_rss_mb']:,.0f} MB")
    print(
        f"slow connections: {figures['slow_clients']} opened, {figures['slow_clients_open_through_runs']} open "
        f"through the runs, {figures['slow_clients_held']} then closed by the server's timeout "
        f"(median {figures['slow_clients_closed_after_s']} s after opening; timeout "
        f"{figures['channel_timeout_s']} s), {figures['slow_clients_never_closed']} never closed"
    )
    print(
        f"imports: {figures['imports_finished']} of {figures['imports_started']} finished "
        f"({figures['images']:,} images, {figures['zip_mb']} MB zip) at {figures['import_img_s']} images/s"
        + (f"; error: {figures['import_error']}" if figures["import_error"] else "")
    )
    print(
        f"machine: {figures['cpu']}, {figures['cpu_count']} cores; load average {figures['load_avg_start']} "
        f"at the start; other processes took {figures['other_cpu_pct']}% of the CPU during the runs\n"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 s runs and 600 images: a smoke run (about 2 min)")
    parser.add_argument("--clients", default="8,16", help="comma-separated client counts (default 8,16)")
    parser.add_argument("--duration", type=float, help="seconds per run (default 60; --quick: 10)")
    parser.add_argument("--slow", type=int, default=200, help="slow connections held in the second part")
    parser.add_argument("--images", type=int, help="JPEGs in the imported zip (default 6000; --quick: 600)")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (data, serve.log)")
    args = parser.parse_args()
    args.clients = sorted({int(n) for n in args.clients.split(",")})
    args.duration = args.duration or (10 if args.quick else 60)
    args.images = args.images or (600 if args.quick else 6000)
    args.datasets = 40

    started = {"load_avg_start": round(load_average(), 2), "cpu": cpu_model(), "cpu_count": os.cpu_count()}
    busy = busy_processes()
    if busy:
        print("other busy processes (figures will show it):\n  " + "\n  ".join(busy), file=sys.stderr)
    data_dir = Path(tempfile.mkdtemp(prefix="transferlab-bench-load-"))
    try:
        figures = {**started, **measure(args, data_dir), "busy_at_start": busy, **machine_info()}
    finally:
        if args.keep:
            print(f"kept {data_dir}", file=sys.stderr)
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    figures["load_avg_end"] = round(load_average(), 2)
    show(figures, args.clients)
    if args.json:
        write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:  # a benchmark reports its failure and exits non-zero
        print(f"bench/load.py failed: {exc!r}", file=sys.stderr)
        sys.exit(2)
