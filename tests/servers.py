"""Real PostgreSQL and Redis servers for a test run, in a temporary folder, gone when the run ends.

`TEST_BACKENDS=postgresql` (tests/bootstrap.py) runs the suite against both, the way a larger install
runs (`DATABASE_URL`, `REDIS_URL`): Debian's `postgresql` and `redis-server` packages, started here
as plain child processes, never as system services. Both listen on Unix sockets inside the folder
only, so two runs on one machine never meet and no port is ever in use. PostgreSQL runs without
fsync (a crash loses nothing a test needs).

The folder and both servers go at exit, on Ctrl-C too; if the test run is killed outright the
servers follow it (the kernel signals them when their parent dies) and the next run removes the
folder it left.
"""

from __future__ import annotations

import atexit
import ctypes
import glob
import os
import pwd
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

PREFIX = "transferlab-servers-"
SUPERUSER = "transferlab"
READY_TIMEOUT_S = 60
STOP_TIMEOUT_S = 20
REDIS_DATABASES = 1024  # one per test process that gets a queue of its own (child_environment)
PR_SET_PDEATHSIG = 1  # linux/prctl.h
POSTGRESQL_SETTINGS = {
    "listen_addresses": "",  # the Unix socket only
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",  # every web server and worker a test starts holds a few
    "shared_buffers": "64MB",
    "log_min_messages": "warning",
}
INSTALL_HINT = (
    "Install Debian's packages (`make servers` does: apt-get install postgresql redis-server), "
    "or run the tests without TEST_BACKENDS to use SQLite."
)


class ServersUnavailable(RuntimeError):
    """A server cannot start here; str() says which and what to install."""


@dataclass
class Servers:
    """Where the servers of this run listen, and how to stop them."""

    folder: Path
    processes: list[subprocess.Popen] = field(default_factory=list)
    _children: dict[str, dict[str, str]] = field(default_factory=dict)

    def stop(self) -> None:
        """Stop both servers (PostgreSQL's fast shutdown, Redis's SIGTERM) and remove the folder."""
        for proc in self.processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT if proc.args[0].endswith("postgres") else signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.processes.clear()
        shutil.rmtree(self.folder, ignore_errors=True)

    def new_database(self, name: str) -> str:
        """Create an empty database on the server; returns its URL."""
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def child_environment(self, data_dir: Path) -> dict[str, str]:
        """DATABASE_URL and REDIS_URL of the database and queue that go with `data_dir`, new at first use.

        A web server or worker a test starts with a DATA_DIR of its own must not share rows or queued
        tasks with the next test's: with SQLite the folder alone keeps them apart (it holds both files).
        """
        key = str(Path(data_dir).absolute())
        if key not in self._children:
            number = len(self._children) + 1
            url = self.new_database(f"child_{number}")
            index = number % (REDIS_DATABASES - 1) + 1  # 0 is the test run's own
            import redis

            redis.Redis.from_url(self.redis_url, db=index).flushdb()
            self._children[key] = {"DATABASE_URL": url, "REDIS_URL": f"{self.redis_url}?db={index}"}
        return self._children[key]

    @property
    def database_url(self) -> str:
        """Named in the run's DATABASE_URL, never created: pytest-django makes `test_transferlab` beside it,
        and a process a test starts without `process_environment` fails at once rather than share rows."""
        return self.url(SUPERUSER)

    @property
    def redis_url(self) -> str:
        return f"unix://{self.folder / 'redis.sock'}"

    def url(self, database: str) -> str:
        """The URL of `database` on this server (through its Unix socket)."""
        return f"postgres://{SUPERUSER}@{quote(str(self.folder), safe='')}/{database}"


RUNNING: Servers | None = None  # the servers the whole run uses (TEST_BACKENDS=postgresql), set by tests.bootstrap


def process_environment(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a TransferLab process a test starts: this run's, with a DATA_DIR of its own.

    Against servers it also gets the database and queue of that DATA_DIR, as a separate install would.
    """
    own = RUNNING.child_environment(data_dir) if RUNNING is not None else {}
    return {**os.environ, "DATA_DIR": str(data_dir), **own, **extra}


def process_rows(data_dir: Path, sql: str, *params: object) -> list[dict]:
    """Rows from the database of the install at `data_dir` (its SQLite file, or its database on the server).

    `?` placeholders; JSON columns come back as text on both, as SQLite stores them.
    """
    if RUNNING is None:
        with sqlite3.connect(Path(data_dir) / "db.sqlite3", timeout=20) as db:
            db.row_factory = sqlite3.Row
            return [dict(row) for row in db.execute(sql, params)]
    import psycopg
    from psycopg.rows import dict_row
    from psycopg.types.string import TextLoader

    with psycopg.connect(RUNNING.child_environment(data_dir)["DATABASE_URL"], row_factory=dict_row) as conn:
        for json_type in ("json", "jsonb"):
            conn.adapters.register_loader(json_type, TextLoader)
        return conn.execute(sql.replace("?", "%s"), params).fetchall()


# --- Finding and starting the servers ------------------------------------------------------------


def postgresql_bin() -> Path:
    """The folder holding initdb and postgres: Debian keeps them out of PATH, one folder per version."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True):
        if (Path(folder) / "initdb").is_file():
            return Path(folder)
    raise ServersUnavailable(
        f"PostgreSQL is not installed (no initdb in PATH or /usr/lib/postgresql/*/bin). {INSTALL_HINT}"
    )


def redis_server() -> str:
    found = shutil.which("redis-server")
    if not found:
        raise ServersUnavailable(f"Redis is not installed (no redis-server in PATH). {INSTALL_HINT}")
    return found


def _server_user() -> pwd.struct_passwd | None:
    """PostgreSQL refuses to run as root: as root, the servers run as `postgres` (or `nobody`)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise ServersUnavailable("Running as root with neither a `postgres` nor a `nobody` account to run PostgreSQL as.")


def _die_with_parent() -> Callable[[], None]:
    """Run in the child before exec: the kernel sends it SIGTERM when the test run dies, however it dies."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # loaded in the parent: never between fork and exec

    def set_signal() -> None:
        prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGTERM), *[ctypes.c_ulong(0)] * 3)

    return set_signal


def _start(args: list[str], log: Path, user: pwd.struct_passwd | None) -> subprocess.Popen:
    as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []} if user else {}
    with log.open("ab") as out:
        return subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent(), **as_user,
        )  # fmt: skip


def _wait_until(ready: Callable[[], bool], proc: subprocess.Popen, what: str, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServersUnavailable(f"{what} exited at start (status {proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if ready():
                return
        except Exception:  # not accepting connections yet
            pass
        time.sleep(0.05)
    raise ServersUnavailable(f"{what} was not ready after {READY_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def _start_postgresql(servers: Servers, user: pwd.struct_passwd | None) -> None:
    bindir = postgresql_bin()
    data = servers.folder / "postgresql"
    log = servers.folder / "postgresql.log"
    initdb = [str(bindir / "initdb"), "-D", str(data), f"--username={SUPERUSER}", "--auth=trust",
              "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync", "--no-instructions"]  # fmt: skip
    as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []} if user else {}
    done = subprocess.run(initdb, capture_output=True, text=True, **as_user)
    if done.returncode != 0:
        raise ServersUnavailable(f"initdb failed: {done.stderr.strip() or done.stdout.strip()}")
    options = [f"--{name.replace('_', '-')}={value}" for name, value in POSTGRESQL_SETTINGS.items()]
    proc = _start(
        [str(bindir / "postgres"), "-D", str(data), f"--unix-socket-directories={servers.folder}", *options], log, user
    )
    servers.processes.append(proc)

    def ready() -> bool:
        import psycopg

        with psycopg.connect(servers.url("postgres"), connect_timeout=2) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)

    _wait_until(ready, proc, "PostgreSQL", log)


def _start_redis(servers: Servers, user: pwd.struct_passwd | None) -> None:
    socket_path = servers.redis_url.removeprefix("unix://")
    log = servers.folder / "redis.log"
    args = [redis_server(), "--port", "0", "--unixsocket", str(socket_path), "--unixsocketperm", "700",
            "--save", "", "--appendonly", "no", "--databases", str(REDIS_DATABASES), "--dir", str(servers.folder),
            "--daemonize", "no"]  # fmt: skip
    proc = _start(args, log, user)
    servers.processes.append(proc)

    def ready() -> bool:
        import redis

        return bool(redis.Redis(unix_socket_path=str(socket_path), socket_connect_timeout=2).ping())

    _wait_until(ready, proc, "Redis", log)


def _remove_leftovers() -> None:
    """Folders of earlier runs that were killed outright (their servers died with them)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
        try:
            owner = int((folder / "owner.pid").read_text())
            os.kill(owner, 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (OSError, ValueError):
            continue  # being created, or not ours to judge


def start() -> Servers:
    """Start PostgreSQL and Redis in a new temporary folder; both are stopped and removed at exit."""
    postgresql_bin(), redis_server()  # both missing binaries are named before anything starts
    _remove_leftovers()
    user = _server_user()
    folder = Path(tempfile.mkdtemp(prefix=PREFIX))
    (folder / "owner.pid").write_text(str(os.getpid()))
    if user is not None:
        os.chown(folder, user.pw_uid, user.pw_gid)
    servers = Servers(folder=folder)
    atexit.register(servers.stop)
    try:
        _start_postgresql(servers, user)
        _start_redis(servers, user)
    except BaseException:
        servers.stop()
        raise
    return servers
