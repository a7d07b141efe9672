"""Run the web server (gunicorn) and the workers (Huey consumers) together, as `make run` does.

One command for the IT person: the web server, the worker for imports and downloads and the
training worker start, the URL is printed, and Ctrl-C (or SIGTERM from a service manager) stops
them all. If one dies, the others are stopped too, so a half-running TransferLab never hides
behind a live web page.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Start gunicorn, the worker and the training worker together; Ctrl-C stops them all."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--bind", default=os.getenv("BIND", "127.0.0.1:8000"), help="host:port to listen on")
        parser.add_argument(
            "--workers",
            type=int,
            default=int(os.getenv("WEB_WORKERS", "1")),
            help="gunicorn processes; each holds TensorFlow and its warm models (~0.5-1 GB)",
        )
        parser.add_argument("--threads", type=int, default=int(os.getenv("WEB_THREADS", "4")))

    def handle(self, *args, bind: str, workers: int, threads: int, **options) -> None:
        web = [
            sys.executable, "-m", "gunicorn", "webapp.wsgi:application",
            "--bind", bind,
            "--workers", str(workers),
            "--threads", str(threads),
            "--worker-class", "gthread",
            "--timeout", "300",  # the first request of a big model loads it
            "--graceful-timeout", "20",
            "--access-logfile", "-",
            "--no-control-socket",  # several instances on one machine must not share ~/.gunicorn
        ]  # fmt: skip
        worker = [sys.executable, "manage.py", "run_huey"]
        training_worker = [sys.executable, "manage.py", "run_training_worker"]
        cwd = str(settings.BASE_DIR)
        procs = {
            "web server": subprocess.Popen(web, cwd=cwd),
            "worker": subprocess.Popen(worker, cwd=cwd),
            "training worker": subprocess.Popen(training_worker, cwd=cwd),
        }
        self.stdout.write(self.style.SUCCESS(f"TransferLab is starting at {self._url(bind)}  (Ctrl-C stops it)"))
        self.stdout.write(f"Data folder: {settings.DATA_DIR}")

        stopping = False

        def stop(signum, frame) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        failed = None
        while not stopping and failed is None:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    failed = name
            time.sleep(0.5)
        self._stop_all(procs)
        if failed and not stopping:
            raise CommandError(
                f"The {failed} stopped unexpectedly (exit code {procs[failed].returncode}); stopped all."
            )
        self.stdout.write("TransferLab stopped.")

    def _stop_all(self, procs: dict[str, subprocess.Popen]) -> None:
        # SIGINT, as a Ctrl-C sends it to all of them: gunicorn shuts down, the worker lets a running
        # import or download finish, and the training worker stops a running job at once and records
        # it as interrupted (a job can run for hours; its curves are kept, "Train again" restarts it).
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 30
        for proc in procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()

    @staticmethod
    def _url(bind: str) -> str:
        host, _, port = bind.rpartition(":")
        if host in ("0.0.0.0", "", "[::]"):
            host = socket.getfqdn()
        return f"http://{host}:{port}/"
