"""The data folder is readable by the service account alone: sessions, tokens and images stay private."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from tests.servers import process_environment
from webapp.checks import check_data_permissions

ROOT = Path(__file__).resolve().parent.parent
# The check reads DATABASES; these tests point it at a file of their own, not at the live connection.
uses_own_database = pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def sqlite_file(db: Path) -> dict:
    """The DATABASES entry of a SQLite install, whichever database this run uses."""
    return {"ENGINE": "django.db.backends.sqlite3", "NAME": db}


def run_with_umask_022(args: list[str], data_dir: Path) -> subprocess.CompletedProcess:
    """Start a process the way a service manager or a shell with the usual umask (022) does."""
    env = process_environment(data_dir)
    return subprocess.run(
        args, cwd=ROOT, env=env, capture_output=True, text=True, check=True, preexec_fn=lambda: os.umask(0o022)
    )


def test_manage_py_creates_the_data_folder_and_database_for_the_service_account_only(tmp_path):
    data_dir = tmp_path / "data"
    run_with_umask_022([sys.executable, "manage.py", "migrate", "-v", "0"], data_dir)
    assert mode(data_dir) == 0o700
    if connection.vendor == "sqlite":  # a PostgreSQL server keeps its files to itself
        assert mode(data_dir / "db.sqlite3") == 0o600
    assert mode(data_dir / "secret_key") == 0o600


def test_the_wsgi_entry_point_sets_a_private_umask(tmp_path):
    code = "import os, webapp.wsgi; print(oct(os.umask(0)))"
    result = run_with_umask_022([sys.executable, "-c", code], tmp_path / "data")
    assert result.stdout.strip() == "0o77"


@uses_own_database
def test_the_check_warns_when_others_can_read_the_data_folder_or_database(settings, tmp_path):
    settings.DATA_DIR = tmp_path
    db = tmp_path / "db.sqlite3"
    db.write_bytes(b"")
    settings.DATABASES = {**settings.DATABASES, "default": {**settings.DATABASES["default"], **sqlite_file(db)}}
    tmp_path.chmod(0o755)
    db.chmod(0o644)
    warnings = check_data_permissions(None)
    assert [w.id for w in warnings] == ["transferlab.W001", "transferlab.W001"]
    assert str(tmp_path) in warnings[0].msg and "0755" in warnings[0].msg
    assert str(db) in warnings[1].msg and "0644" in warnings[1].msg
    assert f"chmod 700 {tmp_path}" in warnings[0].hint and f"chmod -R go-rwx {tmp_path}" in warnings[0].hint

    tmp_path.chmod(0o700)
    db.chmod(0o600)
    assert check_data_permissions(None) == []


@uses_own_database
def test_the_check_also_looks_at_the_write_ahead_log(settings, tmp_path):
    settings.DATA_DIR = tmp_path
    tmp_path.chmod(0o700)
    db = tmp_path / "db.sqlite3"
    db.write_bytes(b"")
    db.chmod(0o600)
    wal = tmp_path / "db.sqlite3-wal"
    wal.write_bytes(b"")
    wal.chmod(0o644)
    settings.DATABASES = {**settings.DATABASES, "default": {**settings.DATABASES["default"], **sqlite_file(db)}}
    assert [str(wal) in w.msg for w in check_data_permissions(None)] == [True]
