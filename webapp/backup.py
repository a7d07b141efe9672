"""Backups and restores: a consistent copy of the database and of exactly the files it names.

Why it works this way
---------------------
Rows and files change while TransferLab runs. Files are written before their rows and removed only
after their rows' delete has committed, so at any moment every committed row's files exist. The
danger is the time between the two copies: copy the database, then the files, and a row deleted in
between names a file that is gone by the time it is copied. So the files are taken *before* the
database copy can name them, in rounds:

1. Open a read snapshot of the database (SQLite: a read transaction on a connection of its own, WAL
   lets writers go on meanwhile; PostgreSQL: a REPEATABLE READ transaction, exported to pg_dump).
2. Take every file the snapshot names that is not taken yet: a hard link into a staging folder on
   DATA_DIR's file system (free, instant, and it keeps the bytes even when the live file is removed
   later); a copy where links are refused.
3. If every file of the snapshot is taken, copy the database *from this snapshot*: each file it names
   was taken while its row still existed (a file goes only after its row), and files never change
   in place (dataset files are named by their SHA-256, predictions and models by unique names).
   If a file vanished after the snapshot began, its row was deleted meanwhile and the next snapshot
   will not name it: release this snapshot and go again. Later rounds only take what is new.

A file missing in two rounds in a row while its row is still there was missing before the backup
began (a damaged install): the manifest lists it under "missing", it is never skipped silently.

The database copy is one step from the snapshot (SQLite's backup API with all pages at once, not the
sqlite3 shell's `.backup`, which starts over whenever a writer changes a page and never finishes on
a busy server). The manifest (files with size and SHA-256, rows per table, versions, times) is
written last: a backup without it did not finish, and `restore` refuses it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import tomllib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import django
from django.conf import settings
from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone

from webapp import atomic, datafiles
from webapp.datafiles import SECRET_KEY_FILE, STAGING_LOCK, STAGING_PREFIX, UnsafePath, local_path
from webapp.sizes import human_size

FORMAT = 1
MANIFEST = "manifest.json"
DATA = "data"
MAX_ROUNDS = 10
CHUNK = 1024 * 1024
DATABASE_FILES = {"sqlite": "database.sqlite3", "pg_dump": "database.pgdump", "json": "database.json"}
# Tables dumpdata leaves out: `migrate` creates their rows again (natural keys refer to them).
JSON_EXCLUDE = ["contenttypes", "auth.permission"]


class BackupError(Exception):
    """A backup or restore that cannot go on; str() says why and what to do."""


# --- Taking files before the database names them ------------------------------------------------


@dataclass
class Capture:
    """Files taken into the staging folder: hard links where the file system allows, copies elsewhere."""

    staging: Path
    taken: set[str] = field(default_factory=set)
    linked: int = 0
    copied: int = 0

    def take(self, data_path: str) -> bool:
        """Take one file; False when it is not there (or its name leaves its folder)."""
        if data_path in self.taken:
            return True
        try:
            source = local_path(data_path)
        except UnsafePath:
            return False
        target = self.staging / data_path
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
            self.linked += 1
        except FileNotFoundError:
            return False
        except OSError:  # another file system, no hard links there, too many links: copy it now
            try:
                atomic.copy_file(source, target)
            except FileNotFoundError:
                return False
            self.copied += 1
        self.taken.add(data_path)
        return True

    @property
    def method(self) -> str:
        if self.copied and self.linked:
            return "hard links and copies"
        return "copies" if self.copied else "hard links"


def same_filesystem(a: Path, b: Path) -> bool:
    return a.stat().st_dev == b.stat().st_dev


@contextmanager
def _staging(dest: Path) -> Iterator[Path]:
    """Where files are linked: the backup itself when on DATA_DIR's file system, else a locked folder in DATA_DIR.

    The lock tells `check_data` the folder is in use; a folder left by a killed backup is an orphan.
    """
    data_dir = Path(settings.DATA_DIR)
    if same_filesystem(data_dir, dest):
        yield dest / DATA
        return
    folder = data_dir / f"{STAGING_PREFIX}{uuid.uuid4().hex[:12]}"
    folder.mkdir(mode=0o700)
    with open(folder / STAGING_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield folder / DATA
        finally:
            shutil.rmtree(folder, ignore_errors=True)


# --- Database snapshots -------------------------------------------------------------------------


class Snapshot:
    """A consistent read view of the database, held from creation until `release`."""

    format = ""

    def __init__(self) -> None:
        self.cursor = None
        self.released = False

    def table_names(self) -> list[str]:
        return connection.introspection.table_names(self.cursor)

    def counts(self) -> dict[str, int]:
        tables = {}
        for name in sorted(self.table_names()):
            self.cursor.execute(f'SELECT COUNT(*) FROM "{name}"')
            tables[name] = self.cursor.fetchone()[0]
        return tables

    def migrations(self) -> list[str]:
        self.cursor.execute("SELECT app, name FROM django_migrations")
        return sorted(f"{app}.{name}" for app, name in self.cursor.fetchall())

    def write(self, target: Path) -> None:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError


class SqliteSnapshot(Snapshot):
    """A read transaction on a connection of its own: in WAL mode writers go on, this view stays."""

    format = "sqlite"

    def __init__(self) -> None:
        super().__init__()
        if connection.is_in_memory_db():  # the test database: reach it through Django's connection
            connection.ensure_connection()
            self.conn, self.own = connection.connection, False
        else:
            self.conn = sqlite3.connect(connection.settings_dict["NAME"], timeout=30, isolation_level=None)
            self.own = True
        self.conn.execute("BEGIN")
        self.cursor = self.conn.cursor()
        self.cursor.execute("SELECT COUNT(*) FROM sqlite_master")  # the snapshot starts with the first read

    def table_names(self) -> list[str]:
        self.cursor.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        return [name for (name,) in self.cursor.fetchall()]

    def write(self, target: Path) -> None:
        """All pages in one step from this snapshot, then checked; a single file (no WAL) to keep."""
        copy = sqlite3.connect(target)
        try:
            self.conn.backup(copy)
            copy.execute("PRAGMA journal_mode=DELETE")
            result = copy.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            copy.close()
        if result != "ok":
            raise BackupError(f"The copy of the database failed its check ({result}). Run the backup again.")

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        self.conn.execute("COMMIT")
        if self.own:
            self.conn.close()


class DjangoSnapshot(Snapshot):
    """A transaction on Django's connection: REPEATABLE READ on PostgreSQL, exported to pg_dump.

    On SQLite (the json format) the transaction takes the write lock: writers wait until the dump
    is written. That format is for moving to PostgreSQL, best run with TransferLab stopped.
    """

    def __init__(self, fmt: str) -> None:
        super().__init__()
        self.format = fmt
        self._atomic = transaction.atomic()
        self._atomic.__enter__()
        self.cursor = connection.cursor()
        self.snapshot_id = None
        if connection.vendor == "postgresql":
            self.cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            self.cursor.execute("SELECT pg_export_snapshot()")
            self.snapshot_id = self.cursor.fetchone()[0]

    def write(self, target: Path) -> None:
        if self.format == "pg_dump":
            _pg_dump(self.snapshot_id, target)
        else:
            call_command("dumpdata", natural_foreign=True, exclude=JSON_EXCLUDE, output=str(target), verbosity=0)

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.cursor.close()
            self._atomic.__exit__(None, None, None)


def _pg_environment() -> dict[str, str]:
    """libpq's variables from DATABASES: the password never appears on a command line."""
    db = connection.settings_dict
    env = dict(os.environ)
    values = {"PGHOST": db.get("HOST"), "PGPORT": db.get("PORT"), "PGUSER": db.get("USER"),
              "PGPASSWORD": db.get("PASSWORD"), "PGDATABASE": db.get("NAME"),
              "PGSSLMODE": (db.get("OPTIONS") or {}).get("sslmode")}  # fmt: skip
    env.update({key: str(value) for key, value in values.items() if value})
    return env


def _run(args: list[str], what: str) -> None:
    result = subprocess.run(args, env=_pg_environment(), capture_output=True, text=True)
    if result.returncode != 0:
        raise BackupError(f"{what} failed: {result.stderr.strip() or result.stdout.strip()}")


def _pg_dump(snapshot_id: str, target: Path) -> None:
    _run(["pg_dump", "--format=custom", f"--snapshot={snapshot_id}", f"--file={target}"], "pg_dump")


def database_format(requested: str) -> str:
    """sqlite for SQLite; pg_dump for PostgreSQL when installed, else json (Django's dumpdata)."""
    vendor = connection.vendor
    if requested == "json":
        return "json"
    if vendor == "sqlite":
        return "sqlite"
    if vendor == "postgresql" and shutil.which("pg_dump"):
        return "pg_dump"
    if requested == "native":
        raise BackupError("pg_dump is not installed: install PostgreSQL's client tools, or use --database-format json.")
    return "json"


def _open_snapshot(fmt: str) -> Snapshot:
    return SqliteSnapshot() if fmt == "sqlite" else DjangoSnapshot(fmt)


def copy_database(snapshot: Snapshot, target: Path) -> dict:
    """Rows per table, migrations and the copy itself, all from the snapshot; then let it go."""
    try:
        info = {
            "snapshot_at": timezone.now().isoformat(),
            "tables": snapshot.counts(),
            "migrations": snapshot.migrations(),
        }
        with atomic.replacing(target) as partial:  # a copy cut short never sits under the final name
            snapshot.write(partial)
    finally:
        snapshot.release()
    return info


@dataclass
class DatabaseCopy:
    format: str
    file: str
    info: dict
    names: dict[str, str]
    missing: dict[str, str]
    rounds: int


def _copy_consistently(capture: Capture, dest: Path, fmt: str) -> DatabaseCopy:
    """The rounds of the module docstring: take the files of a snapshot, copy that snapshot once all are taken."""
    failed_before: set[str] | None = None
    filename = DATABASE_FILES[fmt]
    for round_number in range(1, MAX_ROUNDS + 1):
        snapshot = _open_snapshot(fmt)
        try:
            names = datafiles.named_files(snapshot.cursor)
            failed = {path for path in names if not capture.take(path)}
            if not failed or (failed_before is not None and failed <= failed_before):
                info = copy_database(snapshot, dest / filename)
                missing = {path: names[path] for path in failed}
                return DatabaseCopy(fmt, filename, info, names, missing, round_number)
            failed_before = failed
        finally:
            snapshot.release()
    raise BackupError(
        f"Files kept disappearing during {MAX_ROUNDS} rounds of the backup (many deletions at once?). "
        "Run the backup again."
    )


# --- The backup ---------------------------------------------------------------------------------


def _prepare_destination(dest: Path) -> None:
    data_dir = Path(settings.DATA_DIR).resolve()
    resolved = dest.resolve()
    if resolved == data_dir or data_dir in resolved.parents:
        raise BackupError(f"{dest} is inside DATA_DIR ({data_dir}). Choose a folder outside it.")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BackupError(f"{dest} is not empty. Give the name of a new folder (for example with the date in it).")
    dest.mkdir(mode=0o700, parents=True, exist_ok=True)
    dest.chmod(0o700)  # sessions, password hashes and the secret key are in it


def _take_extras(capture: Capture, weights: bool) -> set[str]:
    """Files no row names that a restore needs: the secret key, and the installed weights (re-importable)."""
    wanted = set()
    if capture.take(SECRET_KEY_FILE):
        wanted.add(SECRET_KEY_FILE)
    folder = datafiles.root_dirs()["weights"]
    if weights and folder.is_dir():
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.name.startswith("."):  # dot files are downloads in progress
                data_path = f"weights/{path.relative_to(folder).as_posix()}"
                if capture.take(data_path):
                    wanted.add(data_path)
    return wanted


def _hash_file(path: Path, copy_to: Path | None = None) -> tuple[int, str]:
    """Size and SHA-256 of a file, copied on the way when `copy_to` is given (one read)."""
    digest, size = hashlib.sha256(), 0
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(atomic.open_replacing(copy_to)) if copy_to is not None else None
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
                if out is not None:
                    out.write(chunk)
    return size, digest.hexdigest()


def _finish_files(capture: Capture, staging: Path, dest_data: Path, wanted: set[str]) -> list[dict]:
    """The manifest's file list; files are copied out of a staging folder in DATA_DIR, or kept where they are."""
    entries = []
    for data_path in sorted(wanted & capture.taken):
        copy_to = None if staging == dest_data else dest_data / data_path
        size, sha = _hash_file(staging / data_path, copy_to)
        entries.append({"path": data_path, "size": size, "sha256": sha})
    if staging == dest_data:  # links of rows deleted before the final snapshot: not part of the backup
        for data_path in capture.taken - wanted:
            (staging / data_path).unlink(missing_ok=True)
        _remove_empty_folders(staging)
    return entries


def _remove_empty_folders(folder: Path) -> None:
    for dirpath, _dirnames, _filenames in sorted(os.walk(folder), key=lambda item: -len(item[0])):
        try:
            Path(dirpath).rmdir()
        except OSError:
            pass  # not empty


def versions(migrations: list[str]) -> dict:
    """What made the backup: a restore refuses migrations this code does not know (a newer version)."""
    found = {"transferlab": _project_version(), "python": platform.python_version(), "django": django.get_version(),
             "sqlite": sqlite3.sqlite_version, "database": f"{connection.vendor} {_server_version()}".strip(),
             "migrations": migrations}  # fmt: skip
    commit = _git_commit()
    if commit:
        found["commit"] = commit
    return found


def _project_version() -> str:
    try:
        with open(Path(settings.BASE_DIR) / "pyproject.toml", "rb") as f:
            return tomllib.load(f)["project"]["version"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


def _git_commit() -> str | None:
    """The checkout's commit, read from .git without running git (the server may not have it)."""
    git = Path(settings.BASE_DIR) / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if head.startswith("ref: "):
            return (git / head[5:]).read_text().strip()
        return head
    except OSError:
        return None


def _server_version() -> str:
    if connection.vendor == "postgresql":
        return str(connection.pg_version)
    return ""


def _write_manifest(dest: Path, manifest: dict) -> None:
    """Last, through a temporary name: a backup without manifest.json did not finish."""
    atomic.write_text(dest / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))


def backup(dest: Path, *, weights: bool = True, requested_format: str = "auto") -> dict:
    """Write a backup of this install into the new folder `dest`; returns its manifest."""
    dest = Path(dest).absolute()
    fmt = database_format(requested_format)
    created = not dest.exists()
    _prepare_destination(dest)
    started = timezone.now()
    try:
        with _staging(dest) as staging:
            capture = Capture(staging)
            extras = _take_extras(capture, weights)
            db = _copy_consistently(capture, dest, fmt)
            # The per-image results beside the snapshot's models (no row names them; optional).
            extras |= {path for path in datafiles.job_companions(db.names) if capture.take(path)}
            files = _finish_files(capture, staging, dest / DATA, set(db.names) - set(db.missing) | extras)
        size, sha = _hash_file(dest / db.file)
    except BaseException:
        if created:  # half a backup is no backup: leave nothing that looks like one
            shutil.rmtree(dest, ignore_errors=True)
        raise
    manifest = {
        "format": FORMAT,
        "created_at": started.isoformat(),
        "snapshot_at": db.info["snapshot_at"],
        "finished_at": timezone.now().isoformat(),
        "data_dir": str(settings.DATA_DIR),
        "versions": versions(db.info["migrations"]),
        "database": {
            "engine": connection.vendor,
            "format": fmt,
            "file": db.file,
            "size": size,
            "sha256": sha,
            "tables": db.info["tables"],
        },
        "files": files,
        "missing": [{"path": path, "owner": owner} for path, owner in sorted(db.missing.items())],
        "weights": weights,
        "capture": capture.method,
        "rounds": db.rounds,
    }
    _write_manifest(dest, manifest)
    return manifest


# --- Restore ------------------------------------------------------------------------------------


def read_manifest(src: Path) -> dict:
    path = Path(src) / MANIFEST
    if not path.is_file():
        raise BackupError(
            f"{src} has no {MANIFEST}: it is not a TransferLab backup, or the backup did not finish (the manifest "
            "is written last). Restore another backup."
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise BackupError(f"{path} cannot be read ({error}). Restore another backup.") from None
    if manifest.get("format") != FORMAT:
        raise BackupError(
            f"{src} was written in backup format {manifest.get('format')!r}; this TransferLab reads format {FORMAT}. "
            "Restore it with the version that made it."
        )
    return manifest


def check_migrations(manifest: dict) -> None:
    """A backup of a newer version has tables this code does not know: refuse rather than half-work."""
    from django.db.migrations.loader import MigrationLoader

    known = {f"{app}.{name}" for app, name in MigrationLoader(None, ignore_no_migrations=True).disk_migrations}
    unknown = sorted(set(manifest["versions"].get("migrations", [])) - known)
    if unknown:
        made_by = manifest["versions"].get("transferlab", "a newer version")
        raise BackupError(
            f"This backup was made by a newer TransferLab ({made_by}): it has migrations this version does not know "
            f"({', '.join(unknown[:5])}). Install the version that made it, then restore."
        )


def verify(src: Path, manifest: dict) -> None:
    """Every file of the backup against its size and SHA-256, before anything is touched."""
    src = Path(src)
    damaged = []
    database = manifest["database"]
    entries = [(database["file"], src / database["file"], database)]
    for entry in manifest["files"]:
        try:
            local_path(entry["path"], base=src)  # only names that stay in their folder
        except UnsafePath:
            damaged.append(f"{entry['path']} (a name outside the data folder)")
            continue
        entries.append((entry["path"], src / DATA / entry["path"], entry))
    for shown, path, entry in entries:
        problem = _file_problem(path, entry)
        if problem:
            damaged.append(f"{shown} ({problem})")
    if damaged:
        more = f"; and {len(damaged) - 10} more" if len(damaged) > 10 else ""
        raise BackupError(
            f"The backup in {src} is damaged: {len(damaged)} file{'s' if len(damaged) != 1 else ''} do not match "
            f"{MANIFEST}, so nothing was restored: {'; '.join(damaged[:10])}{more}. Restore another backup."
        )


def _file_problem(path: Path, entry: dict) -> str | None:
    if not path.is_file():
        return "missing from the backup"
    if path.stat().st_size != entry["size"]:
        return f"{path.stat().st_size} bytes instead of {entry['size']}"
    if _hash_file(path)[1] != entry["sha256"]:
        return "its content changed: the SHA-256 differs"
    return None


def existing_data() -> list[str]:
    """What a restore would overwrite: rows people made, and files in DATA_DIR's folders (not weights)."""
    from django.apps import apps

    found = []
    tables = set(connection.introspection.table_names())
    counts = []
    for label, word in (("auth.User", "user"), ("classifier.Prediction", "prediction"),
                        ("training.Dataset", "dataset"), ("training.TrainingJob", "training job")):  # fmt: skip
        model = apps.get_model(label)
        if model._meta.db_table in tables and (n := model.objects.count()):
            counts.append(f"{n} {word}{'s' if n != 1 else ''}")
    if counts:
        found.append(f"the database has {', '.join(counts)}")
    for root in ("media", "datasets", "models"):
        n = sum(1 for _ in datafiles.walk_files(datafiles.root_dirs()[root]))
        if n:
            found.append(f"{root}/ holds {n} file{'s' if n != 1 else ''}")
    return found


def _move_aside() -> Path:
    """--force: what is there goes to DATA_DIR/replaced-<time>/ (renames: instant, nothing lost by mistake)."""
    aside = Path(settings.DATA_DIR) / f"replaced-{timezone.now():%Y%m%d-%H%M%S}"
    aside.mkdir(mode=0o700, parents=True)
    for root in ("media", "datasets", "models"):
        folder = datafiles.root_dirs()[root]
        if folder.exists():
            shutil.move(str(folder), str(aside / root))
    if connection.vendor == "sqlite":
        connection.ensure_connection()
        copy = sqlite3.connect(aside / "db.sqlite3")
        try:
            connection.connection.backup(copy)
        finally:
            copy.close()
    return aside


def _put_files(src: Path, manifest: dict) -> int:
    """Every file of the backup into DATA_DIR's folders, each through a temporary name."""
    for entry in manifest["files"]:
        target = local_path(entry["path"])
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        mode = 0o600 if entry["path"] == SECRET_KEY_FILE else None  # the key is never readable by others
        atomic.copy_file(Path(src) / DATA / entry["path"], target, mode=mode)
    return len(manifest["files"])


def _restore_database(src: Path, manifest: dict, replace: bool) -> None:
    fmt, path = manifest["database"]["format"], Path(src) / manifest["database"]["file"]
    vendor = connection.vendor
    if fmt == "sqlite":
        if vendor != "sqlite":
            raise BackupError(
                "This backup holds a SQLite database and DATABASE_URL points at PostgreSQL. Restore it with SQLite "
                "(without DATABASE_URL), then move it with `manage.py copy_database --to <the PostgreSQL URL>`."
            )
        connection.ensure_connection()
        source = sqlite3.connect(path)
        try:
            source.backup(connection.connection)  # into Django's connection: a new file, or the one there
        finally:
            source.close()
    elif fmt == "pg_dump":
        if vendor != "postgresql":
            raise BackupError("This backup holds a PostgreSQL dump: set DATABASE_URL to a PostgreSQL database.")
        _run(["pg_restore", "--clean", "--if-exists", "--no-owner", "--no-privileges", "--single-transaction",
              "--exit-on-error", f"--dbname={connection.settings_dict['NAME']}", str(path)], "pg_restore")  # fmt: skip
    else:
        call_command("migrate", interactive=False, verbosity=0)
        if replace:
            call_command("flush", interactive=False, verbosity=0)
        call_command("loaddata", str(path), verbosity=0)
    connection.close()
    from django.contrib.contenttypes.models import ContentType

    ContentType.objects.clear_cache()


def rebase_exports() -> int:
    """Export paths are recorded absolute: point them into this DATA_DIR. Returns how many jobs changed."""
    from training.models import TrainingJob

    changed = 0
    for job in TrainingJob.objects.only("pk", "exports").iterator():
        exports = dict(job.exports or {})
        for fmt, data_path in datafiles.export_paths(exports, job.pk).items():
            exports[fmt] = {**exports[fmt], "path": str(local_path(data_path))}
        if exports != job.exports:
            TrainingJob.objects.filter(pk=job.pk).update(exports=exports)
            changed += 1
    return changed


def restore(src: Path, *, force: bool = False) -> dict:
    """Check the backup in `src`, then put its files and its database in place. Returns what was done."""
    src = Path(src).absolute()
    manifest = read_manifest(src)
    check_migrations(manifest)
    verify(src, manifest)
    found = existing_data()
    if found and not force:
        kept = "the files and the SQLite database" if connection.vendor == "sqlite" else "the files (not the database)"
        raise BackupError(
            f"DATA_DIR ({settings.DATA_DIR}) already holds data: {'; '.join(found)}. Restore into a new, empty "
            f"DATA_DIR (and an empty database), or add --force to replace it ({kept} there now are moved to "
            "DATA_DIR/replaced-<date>/)."
        )
    aside = _move_aside() if found else None
    data_dir = Path(settings.DATA_DIR)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    files = _put_files(src, manifest)  # files first, then the rows that name them
    _restore_database(src, manifest, replace=bool(found))
    rebase_exports()
    return {"manifest": manifest, "files": files, "aside": aside}


def size_of(manifest: dict) -> str:
    return human_size(sum(f["size"] for f in manifest["files"]))
