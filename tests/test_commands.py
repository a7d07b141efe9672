"""The commands behind `make run`: the first admin account, and web server + worker started together."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from io import StringIO
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management import call_command

ROOT = Path(__file__).resolve().parent.parent


def test_first_run_creates_an_admin_with_a_random_password_printed_once(db):
    out = StringIO()
    call_command("ensure_admin", stdout=out)
    text = out.getvalue()
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser and admin.is_staff
    password = text.split("password:")[1].split()[0]
    assert len(password) >= 12 and admin.check_password(password)
    assert "shown only once" in text

    again = StringIO()
    call_command("ensure_admin", stdout=again)
    assert "user name:" not in again.getvalue()
    assert get_user_model().objects.count() == 1


def test_two_installs_get_different_admin_passwords(db):
    passwords = []
    for _ in range(2):
        get_user_model().objects.all().delete()
        out = StringIO()
        call_command("ensure_admin", stdout=out)
        passwords.append(out.getvalue().split("password:")[1].split()[0])
    assert passwords[0] != passwords[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_starts_web_server_and_worker_and_ctrl_c_stops_both(tmp_path):
    env = {**os.environ, "DATA_DIR": str(tmp_path), "STATIC_ROOT": str(tmp_path / "static")}
    for step in (["migrate"], ["collectstatic", "--noinput"]):  # what `make run` does before serving
        subprocess.run([sys.executable, "manage.py", *step, "-v", "0"], cwd=ROOT, env=env, check=True)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--bind", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        status = None
        while time.monotonic() < deadline and status is None:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/accounts/login/", timeout=10)
                status = 200
            except OSError:  # not listening yet (URLError, ConnectionError and timeouts are OSErrors)
                time.sleep(0.3)
        assert status == 200, "the web server did not answer"
        children = subprocess.run(["pgrep", "-P", str(proc.pid), "-a"], capture_output=True, text=True).stdout
        assert "gunicorn" in children and "run_huey" in children
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert f"TransferLab is starting at http://127.0.0.1:{port}/" in output
    assert "Huey consumer started" in output
    assert output.rstrip().endswith("TransferLab stopped.")
