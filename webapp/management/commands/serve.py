"""Run the web server (waitress) and the workers (Huey consumers) together, as `make run` does.

One command for the IT person: the web server, the worker for imports and downloads and the
training worker start, the URL is printed, and Ctrl-C (or SIGTERM from a service manager) stops
them all. If one dies, the others are stopped too, so a half-running TransferLab never hides
behind a live web page; if this command dies (even `kill -9`), its children follow it. On several
machines each runs its share: `--only web` on web machines, `--only worker,training-worker` (or
one of them) on worker machines, all sharing one database, one Redis and one DATA_DIR.

An intranet deploys exactly this, often with no proxy in front, so the web server must hold on
its own. Waitress reads and buffers every request in its I/O loop and hands only complete
requests to its threads: a client that sends half a request, or sends it slowly, holds a few KB
of memory instead of a thread, and is closed after WEB_CHANNEL_TIMEOUT seconds idle. A body
above the largest upload TransferLab accepts (webapp/limits.py) is refused with 413 from its
Content-Length, before a byte of it is read.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from webapp.limits import max_request_body_bytes

# The signal a child gets when `serve` dies without stopping it (kill -9, a crash): the one a
# normal stop sends, so the training worker stops its job at once and records it as interrupted
# instead of training on for hours unsupervised (it would let the job finish on SIGTERM).
STOP_SIGNAL = signal.SIGINT
PR_SET_PDEATHSIG = 1  # linux/prctl.h
STOP_TIMEOUT_S = 30
# What `serve` starts, in order; `--only` picks some (one machine of several runs its share).
ROLE_NAMES = {"web": "web server", "worker": "worker", "training-worker": "training worker"}
ROLES = tuple(ROLE_NAMES)


def roles(text: str) -> tuple[str, ...]:
    """`--only web,worker` -> ("web", "worker"), in start order; an unknown role is a sentence."""
    wanted = {part.strip() for part in text.split(",") if part.strip()}
    unknown = sorted(wanted - set(ROLES))
    if unknown or not wanted:
        raise argparse.ArgumentTypeError(
            f"{', '.join(unknown) or 'nothing'}: say one or more of {', '.join(ROLES)}, separated by commas"
        )
    return tuple(role for role in ROLES if role in wanted)


WEB_APP = "webapp.management.commands.serve:web_application"  # waitress calls it to get the WSGI app


def channel_timeout_s() -> int:
    """Seconds a connection may stay silent (half a request, or idle between requests) before it is closed."""
    return settings.WEB_CHANNEL_TIMEOUT


def connection_limit() -> int:
    """Open connections the server accepts at once; more wait in the listen backlog until one closes."""
    return settings.WEB_CONNECTION_LIMIT


def split_bind(bind: str) -> tuple[str, int]:
    """'127.0.0.1:8000' -> ('127.0.0.1', 8000); '[::1]:8000' -> ('::1', 8000)."""
    host, _, port = bind.rpartition(":")
    if not host or not port.isdigit():
        raise CommandError(f"BIND must be host:port, e.g. 127.0.0.1:8000, not {bind!r}.")
    return host.strip("[]"), int(port)


def check_port_free(bind: str) -> None:
    """Bind the address once before anything starts: a port in use is a sentence, not three crashed processes.

    SO_REUSEADDR, as the server itself sets: a connection of the previous run in TIME_WAIT must not
    count as "in use".
    """
    host, port = split_bind(bind)
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise CommandError(f"Cannot listen on {bind}: {error.strerror}. Check BIND.") from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    raise CommandError(
                        f"Port {port} on {host} is already in use — is TransferLab already running? "
                        f"Stop it, or set BIND={bind.rpartition(':')[0]}:{port + 1} (any free port)."
                    ) from None
                raise CommandError(f"Cannot listen on {bind}: {error.strerror}. Check BIND.") from None


def _prctl() -> Callable[..., int] | None:
    """libc's prctl, loaded in the parent: loading a library between fork and exec is not safe."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def child_setup(open_files: int = 0) -> Callable[[], None]:
    """What a child runs between fork and exec: die with this process, and (web server) its file limit.

    PR_SET_PDEATHSIG makes the kernel signal the child when `serve` dies, however it dies. If
    `serve` died before the call, the child was already adopted by another process: it exits
    before exec (a signal would only reach the Python handler it inherited, not stop it).
    """
    prctl = _prctl()
    parent = os.getpid()

    def setup() -> None:
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(STOP_SIGNAL), *[ctypes.c_ulong(0)] * 3)  # unsigned longs
            if os.getppid() != parent:
                os._exit(1)
        if open_files:
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            wanted = open_files if hard == resource.RLIM_INFINITY else min(hard, open_files)
            if soft != resource.RLIM_INFINITY and soft < wanted:
                resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))

    return setup


def web_server_command(bind: str, threads: int) -> list[str]:
    """waitress, as its own process, with the limits that let it face clients without a proxy in front."""
    timeout = channel_timeout_s()
    command = [
        sys.executable, "-m", "waitress",
        f"--listen={bind}",
        f"--threads={threads}",
        f"--channel-timeout={timeout}",
        f"--cleanup-interval={max(1, min(10, timeout // 6))}",  # how often idle connections are looked for
        f"--connection-limit={connection_limit()}",
        f"--max-request-body-size={max_request_body_bytes() + 1}",  # waitress refuses Content-Length >= this
        "--recv-bytes=65536",  # an upload of 2 GB in 64 KB reads, not 8 KB ones, in the one I/O thread
        "--asyncore-use-poll",  # select() cannot watch sockets numbered above 1,023
        "--ident=TransferLab",
    ]  # fmt: skip
    if getattr(settings, "SECURE_PROXY_SSL_HEADER", None) == ("HTTP_X_FORWARDED_PROTO", "https"):
        # BEHIND_HTTPS_PROXY: Django reads X-Forwarded-Proto from the proxy, but waitress drops every
        # X-Forwarded-* header it is not told to trust. Let that one through; the others stay dropped.
        command += ["--trusted-proxy=*", "--trusted-proxy-headers=x-forwarded-proto"]
    return [*command, "--call", WEB_APP]


def web_application() -> Callable:
    """The WSGI application waitress serves: the project's (webapp/wsgi.py) behind a one-line access log."""
    from webapp.wsgi import application

    # With more clients than threads, waitress warns for every request that waits for a thread;
    # that is a queue working as intended, and the access log already shows each request.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    return AccessLog(application, access_logger())


def access_logger() -> logging.Logger:
    logger = logging.getLogger("transferlab.access")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


class AccessLog:
    """One line per request in the combined log format gunicorn printed (waitress prints none).

    A response that says its length (pages, JSON, files) is logged when the application returns
    and its body is passed on untouched, so waitress still sends files without a thread. Other
    responses are counted as they stream and logged when they end.
    """

    def __init__(self, application: Callable, logger: logging.Logger) -> None:
        self.application = application
        self.logger = logger

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        seen: dict = {}

        def recording_start_response(status: str, headers: list, exc_info=None):
            seen["status"], seen["headers"] = status, headers
            return start_response(status, headers, exc_info)

        try:
            body = self.application(environ, recording_start_response)
        except Exception:
            self.log(environ, "500", "-")
            raise
        length = next((v for k, v in seen.get("headers", []) if k.lower() == "content-length"), None)
        if length is not None:
            self.log(environ, seen.get("status", "500"), length)
            return body
        return self._counted(body, environ, seen)

    def _counted(self, body: Iterable[bytes], environ: dict, seen: dict) -> Iterable[bytes]:
        sent = 0
        try:
            for chunk in body:
                sent += len(chunk)
                yield chunk
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
            self.log(environ, seen.get("status", "500"), str(sent))

    def log(self, environ: dict, status: str, length: str) -> None:
        method, uri, protocol = (environ.get(k, "-") for k in ("REQUEST_METHOD", "REQUEST_URI", "SERVER_PROTOCOL"))
        self.logger.info(
            '%s - - [%s] "%s" %s %s "%s" "%s"',
            environ.get("REMOTE_ADDR", "-"),
            time.strftime("%d/%b/%Y:%H:%M:%S %z"),
            f"{method} {uri} {protocol}",
            status.split(" ", 1)[0],
            length,
            environ.get("HTTP_REFERER", "-"),
            environ.get("HTTP_USER_AGENT", "-"),
        )


class Command(BaseCommand):
    help = "Start the web server (waitress), the worker and the training worker together; Ctrl-C stops them all."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--bind", default=os.getenv("BIND", "127.0.0.1:8000"), help="host:port to listen on")
        parser.add_argument(
            "--threads",
            type=int,
            help="requests handled at once (default: WEB_THREADS or 4); slow clients never hold one",
        )
        parser.add_argument(
            "--only",
            type=roles,
            default=ROLES,
            metavar="ROLE[,ROLE]",
            help=f"start only these ({', '.join(ROLES)}): one machine of several runs its share",
        )

    def handle(self, *args, bind: str, threads: int | None, only: tuple[str, ...], **options) -> None:
        threads = threads or settings.WEB_THREADS
        if "web" in only:
            check_port_free(bind)  # before anything starts
        if os.getenv("WEB_WORKERS", "1").strip() not in ("", "1"):
            self.stderr.write(
                "WEB_WORKERS is no longer used: the web server is one process; raise WEB_THREADS instead."
            )
        stopping = False

        def stop(signum, frame) -> None:
            nonlocal stopping
            stopping = True

        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, stop)
        procs: dict[str, subprocess.Popen] = {}
        try:
            self._start_all(procs, bind, threads, only)
            if "web" in only:
                self.stdout.write(
                    self.style.SUCCESS(f"TransferLab is starting at {self._url(bind)}  (Ctrl-C stops it)")
                )
            else:
                started = " and the ".join(ROLE_NAMES[role] for role in only)
                self.stdout.write(self.style.SUCCESS(f"TransferLab's {started} started (Ctrl-C stops it)"))
            self.stdout.write(f"Data folder: {settings.DATA_DIR}")
            failed = self._watch(procs, lambda: stopping)
        finally:  # whatever ends this command (a signal, an exception), the children end with it
            self._stop_all(procs)
        if failed and not stopping:
            raise CommandError(
                f"The {failed} stopped unexpectedly (exit code {procs[failed].returncode}); stopped all."
            )
        self.stdout.write("TransferLab stopped.")

    def _start_all(self, procs: dict[str, subprocess.Popen], bind: str, threads: int, only: tuple[str, ...]) -> None:
        cwd = str(settings.BASE_DIR)
        commands = {
            "web": (web_server_command(bind, threads), child_setup(open_files=connection_limit() + 256)),
            "worker": ([sys.executable, "manage.py", "run_huey"], child_setup()),
            "training-worker": ([sys.executable, "manage.py", "run_training_worker"], child_setup()),
        }
        for role, (command, setup) in commands.items():
            if role not in only:
                continue
            name = ROLE_NAMES[role]
            # preexec_fn is safe here: this process runs no threads that could hold a lock across fork.
            procs[name] = subprocess.Popen(command, cwd=cwd, preexec_fn=setup)

    @staticmethod
    def _watch(procs: dict[str, subprocess.Popen], stopping: Callable[[], bool]) -> str | None:
        """Wait until asked to stop or a child exits; the name of the one that exited."""
        while not stopping():
            for name, proc in procs.items():
                if proc.poll() is not None:
                    return name
            time.sleep(0.5)
        return None

    def _stop_all(self, procs: dict[str, subprocess.Popen]) -> None:
        # SIGINT, as a Ctrl-C sends it to all of them: the web server closes, the worker lets a running
        # import or download finish, and the training worker stops a running job at once and records
        # it as interrupted (a job can run for hours; its curves are kept, "Train again" restarts it).
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(STOP_SIGNAL)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    @staticmethod
    def _url(bind: str) -> str:
        host, _, port = bind.rpartition(":")
        if host in ("0.0.0.0", "", "[::]"):
            host = socket.getfqdn()
        return f"http://{host}:{port}/"
