"""`manage.py serve`, the production server `make run` starts, run for real in subprocesses.

What an intranet deploys is exactly what `serve` starts, so these tests hold it to what a front
proxy would otherwise give: slow or idle clients cannot freeze it (they are buffered outside the
request threads and closed after WEB_CHANNEL_TIMEOUT), an oversized body is refused from its
Content-Length before it is read, children never outlive `serve`, and a port in use is a sentence.

Timeouts are generous where a loaded 2-core machine only has to get there eventually; the 1 s of
the slow-client target is measured as the request's own latency.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers import process_environment
from webapp.limits import MULTIPART_MARGIN_BYTES, max_request_body_bytes

ROOT = Path(__file__).resolve().parent.parent
CHANNEL_TIMEOUT_S = 3
# Small upload limits keep the "just at the limit" body a few MB; the server computes the same number.
SMALL_LIMITS = {
    "MAX_UPLOAD_MB": "1",
    "MAX_FILES_PER_REQUEST": "2",
    "MAX_WEIGHTS_UPLOAD_MB": "1",
    "IMPORT_MAX_ZIP_MB": "1",
}
SMALL_BODY_LIMIT = 2 * 1_048_576 + MULTIPART_MARGIN_BYTES  # 2 images of 1 MB, the largest of the three
SLOW_CLIENTS = 200
START_TIMEOUT_S = 120  # Django, the app and three processes starting on a busy 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(folder: Path) -> dict[str, str]:
    """A data folder migrated and static files collected, as `make run` does before `serve`."""
    (folder / "tmp").mkdir(parents=True, exist_ok=True)
    env = process_environment(
        folder,
        STATIC_ROOT=str(folder / "static"),
        TMPDIR=str(folder / "tmp"),  # where a server would spool a request body
        WEB_CHANNEL_TIMEOUT=str(CHANNEL_TIMEOUT_S),
        **SMALL_LIMITS,
    )
    for step in (["migrate"], ["collectstatic", "--noinput"]):
        subprocess.run([sys.executable, "manage.py", *step, "-v", "0"], cwd=ROOT, env=env, check=True)
    return env


@dataclass
class Served:
    """A running `manage.py serve` whose output goes to a file (a pipe nobody reads would fill up)."""

    proc: subprocess.Popen
    port: int
    log: Path

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def children(self) -> dict[int, str]:
        found = subprocess.run(["pgrep", "-a", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return {int(line.split()[0]): line for line in found.splitlines()}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_serve(env: dict[str, str], folder: Path, port: int | None = None, *extra: str) -> Served:
    port = port or free_port()
    log = folder / f"serve-{port}-{uuid.uuid4().hex[:6]}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--bind", f"127.0.0.1:{port}", *extra],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Served(proc, port, log)


def get(port: int, path: str, timeout: float = 30) -> tuple[int, float]:
    """Status and the request's own latency in seconds (connect to the last byte of the answer)."""
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status, time.monotonic() - started
    finally:
        conn.close()


def wait_until_answering(served: Served) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert served.proc.poll() is None, f"serve exited early:\n{served.output}"
        try:
            if get(served.port, "/accounts/login/", timeout=10)[0] == 200:
                return
        except OSError:  # not listening yet (refused, reset, timed out)
            pass
        time.sleep(0.3)
    raise AssertionError(f"the web server did not answer within {START_TIMEOUT_S} s:\n{served.output}")


def alive(pid: int) -> bool:
    """Running, not a zombie (an orphan's zombie waits for init to reap it, which some containers never do)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.2)
    return [pid for pid in pids if alive(pid)]


def closed_by_server(sock: socket.socket, timeout: float) -> bool:
    """True when the server closes the connection (EOF or reset) within `timeout` seconds."""
    sock.settimeout(timeout)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def read_answer(sock: socket.socket, timeout: float) -> bytes:
    """What the server sent within `timeout` seconds: a whole answer, or whatever came before it gave up."""
    sock.settimeout(timeout)
    answer = b""
    try:
        while b"\r\n\r\n" not in answer or len(answer) < answer.index(b"\r\n\r\n") + 4 + _length(answer):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    except (ConnectionResetError, TimeoutError):  # closed at once after answering, or no answer at all
        pass
    return answer


def raw_request(port: int, head: bytes, body: bytes = b"", timeout: float = 30) -> tuple[int, bytes]:
    """Send a request head (and maybe a body) on a bare socket; the status (0: no answer) and the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head + body)
        answer = read_answer(sock, timeout)
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0
    return status, answer


def _length(answer: bytes) -> int:
    for line in answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[dict[str, str], Path]:
    folder = tmp_path_factory.mktemp("serve")
    return prepare(folder), folder


@pytest.fixture(scope="module")
def server(prepared) -> Iterator[Served]:
    """One running `serve` shared by the tests that only talk to it."""
    env, folder = prepared
    served = start_serve(env, folder)
    try:
        wait_until_answering(served)
        yield served
    finally:
        served.stop()


def test_the_largest_body_is_the_largest_upload_plus_a_margin(settings):
    settings.IMPORT_MAX_ZIP_BYTES = 2048 * 1_048_576
    settings.MAX_WEIGHTS_UPLOAD_BYTES = 1024 * 1_048_576
    settings.MAX_UPLOAD_BYTES = 20 * 1_048_576
    settings.MAX_FILES_PER_REQUEST = 32
    assert max_request_body_bytes() == 2048 * 1_048_576 + MULTIPART_MARGIN_BYTES
    settings.MAX_WEIGHTS_UPLOAD_BYTES = 4096 * 1_048_576
    assert max_request_body_bytes() == 4096 * 1_048_576 + MULTIPART_MARGIN_BYTES
    settings.MAX_FILES_PER_REQUEST = 300  # 300 images of 20 MB: 6,000 MB
    assert max_request_body_bytes() == 300 * 20 * 1_048_576 + MULTIPART_MARGIN_BYTES
    # What the test server runs with (SMALL_LIMITS), as settings.py turns the variables into bytes:
    settings.IMPORT_MAX_ZIP_BYTES = settings.MAX_WEIGHTS_UPLOAD_BYTES = settings.MAX_UPLOAD_BYTES = 1_048_576
    settings.MAX_FILES_PER_REQUEST = 2
    assert max_request_body_bytes() == SMALL_BODY_LIMIT


def test_serve_starts_web_server_and_workers_and_ctrl_c_stops_them(prepared):
    env, folder = prepared
    served = start_serve(env, folder)
    try:
        wait_until_answering(served)
        children = served.children()
        commands = " ".join(children.values())
        assert len(children) == 3, children
        assert "waitress" in commands and "run_huey" in commands and "run_training_worker" in commands
    finally:
        served.proc.send_signal(signal.SIGINT)
        served.proc.wait(timeout=90)
    assert served.proc.returncode == 0, served.output
    assert wait_gone(list(children), timeout=30) == []
    output = served.output
    assert f"TransferLab is starting at http://127.0.0.1:{served.port}/  (Ctrl-C stops it)" in output
    assert "Huey consumer started" in output
    assert '"GET /accounts/login/ HTTP/1.1" 200' in output  # an access log line per request, on stdout
    assert output.rstrip().endswith("TransferLab stopped.")


def test_a_machine_of_several_starts_only_its_share(prepared):
    """`--only`: a web machine runs the web server alone, a worker machine the workers (docs/DEPLOYMENT.md)."""
    env, folder = prepared
    web = start_serve(env, folder, None, "--only", "web")
    workers = start_serve(env, folder, None, "--only", "worker,training-worker")
    try:
        wait_until_answering(web)
        deadline = time.monotonic() + 60
        while len(workers.children()) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        web_children = list(web.children().values())
        assert len(web_children) == 1 and "waitress" in web_children[0]
        commands = " ".join(workers.children().values())
        assert len(workers.children()) == 2 and "run_huey" in commands and "run_training_worker" in commands
        with pytest.raises(OSError):  # the workers' machine listens on nothing
            get(workers.port, "/accounts/login/", timeout=2)
    finally:
        web.stop()
        workers.stop()
    assert web.proc.returncode == 0 and workers.proc.returncode == 0, (web.output, workers.output)
    assert "TransferLab's worker and the training worker started (Ctrl-C stops it)" in workers.output


def test_an_unknown_role_is_a_sentence(prepared):
    env, _ = prepared
    done = subprocess.run(
        [sys.executable, "manage.py", "serve", "--only", "web,gpu"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode != 0
    assert "gpu: say one or more of web, worker, training-worker, separated by commas" in done.stderr


def test_two_hundred_slow_clients_do_not_hold_up_a_normal_request(server):
    assert get(server.port, "/accounts/login/")[0] == 200  # warm: templates loaded
    slow = []
    try:
        for _ in range(SLOW_CLIENTS):  # a request line and a header, never the blank line that ends them
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            slow.append(sock)
        time.sleep(0.5)  # let the server take them all in
        answers = [get(server.port, "/accounts/login/", timeout=30) for _ in range(5)]
        assert [status for status, _ in answers] == [200] * 5
        assert statistics.median(seconds for _, seconds in answers) < 1.0, answers
        # ...and the server closes them once they have been idle for WEB_CHANNEL_TIMEOUT.
        deadline = time.monotonic() + CHANNEL_TIMEOUT_S + 60
        still_open = [s for s in slow if not closed_by_server(s, max(0.1, deadline - time.monotonic()))]
        assert still_open == []
    finally:
        for sock in slow:
            sock.close()


def test_an_idle_connection_is_closed_after_the_channel_timeout(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        opened = time.monotonic()
        assert closed_by_server(sock, timeout=CHANNEL_TIMEOUT_S + 60)
        assert time.monotonic() - opened >= CHANNEL_TIMEOUT_S - 0.5  # the timeout, not a refusal


def post_head(path: str, length: int, content_type: str = "multipart/form-data; boundary=b0undary") -> bytes:
    """A POST's head. The CSRF cookie without its header makes Django look for the token in the form,
    so it parses (and spools) the body: what the 300 MB POST of the finding went through."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nCookie: csrftoken={'a' * 32}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def test_a_body_above_the_limit_is_refused_by_its_length_before_it_is_read(server, prepared):
    _env, folder = prepared
    spool = folder / "tmp"
    before = set(spool.iterdir())
    # The finding: 300 MB to a form without logging in were spooled to the temp folder, then refused.
    part = b'--b0undary\r\nContent-Disposition: form-data; name="archive"; filename="a.zip"\r\n\r\nPK\x03\x04'
    start_of_body = part + bytes(256 * 1024)  # more than one 64 KB chunk of Django's multipart parser
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        try:
            sock.sendall(post_head("/datasets/1/import/", 300 * 1_048_576) + start_of_body)
        except (BrokenPipeError, ConnectionResetError):  # refused before all of it was sent: what we want
            pass
        answer = read_answer(sock, timeout=10)
        spooled = set(spool.iterdir()) - before  # looked at while the request is still open
    assert spooled == set()
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:300]
    assert len(answer) < 2000 and b"Too Large" in answer  # a short plain answer

    status, answer = raw_request(server.port, post_head("/api/v1/predict", SMALL_BODY_LIMIT + 1), timeout=10)
    assert status == 413, answer[:300]


def test_a_body_at_the_limit_reaches_the_app(server):
    head = post_head("/api/v1/predict", SMALL_BODY_LIMIT, content_type="application/octet-stream")
    status, answer = raw_request(server.port, head, b"x" * SMALL_BODY_LIMIT, timeout=60)
    assert status == 401, answer[:300]  # the API's own answer: no token


def test_a_port_in_use_is_a_sentence_and_nothing_starts(server, prepared):
    env, folder = prepared
    second = start_serve(env, folder, port=server.port)
    seen_children: set[int] = set()
    deadline = time.monotonic() + 60
    while second.proc.poll() is None and time.monotonic() < deadline:
        seen_children |= set(second.children())
        time.sleep(0.05)
    assert second.proc.poll() is not None, "the second serve kept running"
    second.stop()
    assert second.proc.returncode != 0
    assert seen_children == set()
    assert (
        f"Port {server.port} on 127.0.0.1 is already in use — is TransferLab already running? Stop it, or set BIND="
        in second.output
    )
    assert "TransferLab is starting" not in second.output
    assert get(server.port, "/accounts/login/")[0] == 200  # the first one is untouched


def test_children_die_with_serve_when_it_is_killed(prepared):
    env, folder = prepared
    served = start_serve(env, folder)
    children: list[int] = []
    try:
        wait_until_answering(served)
        children = list(served.children())
        assert len(children) == 3
        served.proc.kill()  # kill -9: no handler runs in serve
        served.proc.wait(timeout=10)
        assert wait_gone(children, timeout=30) == [], "children outlived serve"
        with socket.socket() as sock:  # the next start can bind the port again
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", served.port))
    finally:
        served.stop()
        for pid in children:  # never leave strays holding the port for the next test
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_when_a_child_dies_serve_stops_the_others_and_fails(prepared):
    env, folder = prepared
    served = start_serve(env, folder)
    try:
        wait_until_answering(served)
        children = served.children()
        web = next(pid for pid, command in children.items() if "run_huey" not in command and "training" not in command)
        os.kill(web, signal.SIGKILL)
        served.proc.wait(timeout=90)
    finally:
        served.stop()
    assert served.proc.returncode != 0
    assert "The web server stopped unexpectedly" in served.output
    assert wait_gone(list(children), timeout=30) == []


@pytest.mark.parametrize("behind_proxy", [True, False])
def test_x_forwarded_proto_reaches_django_only_behind_an_https_proxy(settings, behind_proxy):
    """Waitress drops X-Forwarded-* headers it does not trust; BEHIND_HTTPS_PROXY needs X-Forwarded-Proto."""
    from waitress.adjustments import Adjustments
    from waitress.server import create_server

    from webapp.management.commands.serve import web_server_command

    if behind_proxy:
        settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    else:
        settings.SECURE_PROXY_SSL_HEADER = None
    options, _app = Adjustments.parse_args(web_server_command("127.0.0.1:0", 1)[3:])
    del options["call"], options["help"]
    seen = {}

    def app(environ, start_response):
        seen.update(environ)
        return []

    server = create_server(app, _start=False, **options)
    try:
        environ = {
            "REMOTE_ADDR": "192.0.2.1",
            "wsgi.url_scheme": "http",
            "HTTP_X_FORWARDED_PROTO": "https",
            "HTTP_X_FORWARDED_FOR": "198.51.100.7",  # never trusted: a client could claim any address
        }
        server.application(environ, lambda status, headers: None)
    finally:
        server.close()
    assert ("HTTP_X_FORWARDED_PROTO" in seen) is behind_proxy
    assert "HTTP_X_FORWARDED_FOR" not in seen
    assert seen["REMOTE_ADDR"] == "192.0.2.1"
