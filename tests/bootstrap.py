"""Loaded by pytest before Django reads its settings (pyproject: `-p tests.bootstrap`).

Test runs never touch the real data folder: DATA_DIR points at a temporary folder, removed at exit.

`TEST_BACKENDS=postgresql` runs the tests against real PostgreSQL and Redis servers that this run
starts in a temporary folder (tests/servers.py): DATABASE_URL and REDIS_URL are set before Django
reads its settings, so the app, and every web server and worker a test starts, use them
(pytest-django creates the test database on that server).
"""

import atexit
import os
import shutil
import signal
import tempfile

_data_dir = tempfile.mkdtemp(prefix="transferlab-test-")
os.environ["DATA_DIR"] = _data_dir
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # as manage.py: no TensorFlow start-up notes
# Models are served by TensorFlow in tests (and the servers and workers they start): converting
# every model a test installs to LiteRT would add seconds to each. Tests of the LiteRT runtime
# turn it on (the `litert` fixture, or INFERENCE_RUNTIME=litert for a subprocess).
os.environ.setdefault("INFERENCE_RUNTIME", "tensorflow")
atexit.register(shutil.rmtree, _data_dir, ignore_errors=True)

BACKENDS = os.environ.get("TEST_BACKENDS", "sqlite")
if BACKENDS not in ("sqlite", "postgresql"):
    raise SystemExit(f"TEST_BACKENDS must be sqlite or postgresql (PostgreSQL and Redis), not {BACKENDS!r}.")
SERVERS = None
# The servers are the run's choice, never the shell's: a DATABASE_URL left in it is not a test server.
os.environ.pop("DATABASE_URL", None)
os.environ.pop("REDIS_URL", None)
if BACKENDS == "postgresql":
    from tests import servers

    try:
        SERVERS = servers.RUNNING = servers.start()
    except servers.ServersUnavailable as error:
        raise SystemExit(f"TEST_BACKENDS=postgresql: {error}") from None
    os.environ["DATABASE_URL"] = SERVERS.database_url
    os.environ["REDIS_URL"] = SERVERS.redis_url
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        # A stopped run (CI's timeout, `kill`) ends like Ctrl-C: the servers stop, their folder goes.
        signal.signal(signal.SIGTERM, signal.default_int_handler)


def pytest_report_header(config) -> str:
    """Say which servers this run talks to, at the top of its output."""
    if SERVERS is None:
        return "backends: SQLite and SqliteHuey (TEST_BACKENDS=postgresql for PostgreSQL and Redis)"
    return f"backends: PostgreSQL and Redis, on Unix sockets in {SERVERS.folder}"
