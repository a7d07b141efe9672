"""The PostgreSQL and Redis servers a test run starts for itself (tests/servers.py, TEST_BACKENDS=postgresql)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests import servers

ROOT = Path(__file__).resolve().parent.parent


def test_missing_postgresql_is_a_sentence_that_says_what_to_install(monkeypatch):
    monkeypatch.setattr(servers.shutil, "which", lambda name: None)
    monkeypatch.setattr(servers.glob, "glob", lambda pattern: [])
    with pytest.raises(servers.ServersUnavailable) as caught:
        servers.postgresql_bin()
    assert "PostgreSQL is not installed" in str(caught.value)
    assert "`make servers` does: apt-get install postgresql redis-server" in str(caught.value)
    with pytest.raises(servers.ServersUnavailable, match="Redis is not installed"):
        servers.redis_server()


def test_a_run_asked_for_servers_it_cannot_start_stops_at_once_with_that_sentence(tmp_path):
    """No binaries on PATH or in /usr/lib/postgresql: the run ends before any test, saying why."""
    code = (
        "import glob, shutil, sys; shutil.which = lambda name: None; glob.glob = lambda pattern: []; "
        "import pytest; sys.exit(pytest.main(['--co', '-q', 'tests/test_zoo.py']))"
    )
    env = {"PATH": "/usr/bin:/bin", "TEST_BACKENDS": "postgresql", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "TEST_BACKENDS=postgresql: PostgreSQL is not installed" in done.stdout + done.stderr


def test_the_servers_answer_keep_each_install_apart_and_leave_nothing_when_stopped(tmp_path):
    import psycopg
    import redis

    started = servers.start()
    processes = list(started.processes)
    try:
        with psycopg.connect(started.url("postgres")) as conn:
            assert conn.execute("SHOW fsync").fetchone() == ("off",)
        queue = redis.Redis.from_url(started.redis_url)
        assert queue.ping() and queue.config_get("save") == {"save": ""}

        first = started.child_environment(tmp_path / "one")
        assert started.child_environment(tmp_path / "one") == first  # a DATA_DIR keeps its database
        second = started.child_environment(tmp_path / "two")
        assert first["DATABASE_URL"] != second["DATABASE_URL"] and first["REDIS_URL"] != second["REDIS_URL"]
        with psycopg.connect(second["DATABASE_URL"]) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("child_2",)
    finally:
        started.stop()
    assert not started.folder.exists()
    assert len(processes) == 2 and all(proc.poll() is not None for proc in processes)
