"""What the database says is in DATA_DIR, and what is there: the inventory behind `backup` and `check_data`.

Three kinds of rows own files:

- classifier.Prediction: `media/<image>` (empty when KEEP_CLASSIFIED_IMAGES=False) and `media/<thumbnail>`;
- training.DatasetImage: `datasets/<dataset>/images/<sha[:2]>/<sha>.<ext>` and `thumbs/<sha[:2]>/<sha>.jpg`;
- training.TrainedModel: `models/<job>/model.keras`, and the export zips its job recorded (TrainingJob.exports).
  Beside them a finished job may keep its per-image results (JOB_COMPANIONS: training.outcomes and the
  label check's file); no row names them and older jobs have none, so they are neither missing nor
  orphans, and a backup takes those that are there.

A file is named by its *data path*, the folder key and the path inside it ("media/predictions/2025/01/x.jpg"),
so a backup restores into any DATA_DIR. Names are read with plain SQL through any DB-API cursor: the same
code reads the live database (`check_data`) and a snapshot a backup holds open.

Everywhere: files are written before their rows and removed after their rows' delete commits, so a row never
names a missing file; a process killed in between leaves files no row names. `inspect` finds both kinds of
problems, leaving alone what may still be in use: files of imports and uploads that are running (their
journals), folders of active training jobs, and files younger than a grace period.

Every file is written under a temporary name and renamed into place (`webapp.atomic`); a process killed
mid-write leaves its temporary file. Such a file is no damage and no orphan (nothing can name it): it is
listed apart as a leftover, removed by `remove_leftovers` (check_data --fix) and, in the folders of
models, weights and waiting zips, by the periodic clean-up (`remove_stale_temporaries`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path, PurePath, PurePosixPath

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from webapp import atomic

ROOTS = ("media", "datasets", "models", "weights")
SECRET_KEY_FILE = "secret_key"
# Folders an unfinished backup stages its hard links in (see webapp.backup).
STAGING_PREFIX = ".backup-"
STAGING_LOCK = ".lock"
FETCH = 2000


class UnsafePath(ValueError):
    """A name that would leave its folder ("..", an absolute path): never read, written or removed."""


def root_dirs() -> dict[str, Path]:
    """Where each folder of DATA_DIR is, read at call time (tests and restores change the settings)."""
    return {
        "media": Path(settings.MEDIA_ROOT),
        "datasets": Path(settings.DATASETS_DIR),
        "models": Path(settings.DATA_DIR) / "models",
        "weights": Path(settings.WEIGHTS_DIR),
    }


def local_path(data_path: str, base: Path | None = None) -> Path:
    """The file a data path names: in DATA_DIR's folders, or under `base` laid out the same way."""
    if data_path == SECRET_KEY_FILE:
        return (base or Path(settings.DATA_DIR)) / SECRET_KEY_FILE
    root, _, rest = data_path.partition("/")
    parts = PurePosixPath(rest).parts
    if root not in ROOTS or not parts or rest.startswith("/") or any(p in ("..", ".") for p in parts):
        raise UnsafePath(data_path)
    folder = base / root if base is not None else root_dirs()[root]
    return folder.joinpath(*parts)


def data_path_of(path: Path) -> str | None:
    """The data path of a file in DATA_DIR's folders, or None when it is in none of them."""
    for root, folder in root_dirs().items():
        try:
            return f"{root}/{path.relative_to(folder).as_posix()}"
        except ValueError:
            continue
    return None


# --- What the database names ------------------------------------------------------------------


def _table(model_label: str) -> str:
    from django.apps import apps

    return apps.get_model(model_label)._meta.db_table


def _rows(cursor, sql: str) -> Iterator[tuple]:
    cursor.execute(sql)
    while batch := cursor.fetchmany(FETCH):
        yield from batch


def named_files(cursor) -> dict[str, str]:
    """Every file the database names: data path -> its owner ("classifier.Prediction 12 (image)")."""
    names: dict[str, str] = {}
    names.update(_prediction_files(cursor))
    names.update(_dataset_image_files(cursor))
    names.update(_trained_model_files(cursor))
    return names


def _prediction_files(cursor) -> Iterator[tuple[str, str]]:
    table = _table("classifier.Prediction")
    for pk, image, thumbnail in _rows(cursor, f"SELECT id, image, thumbnail FROM {table}"):
        for what, name in (("image", image), ("thumbnail", thumbnail)):
            if name:  # no original when KEEP_CLASSIFIED_IMAGES=False
                yield f"media/{name}", f"classifier.Prediction {pk} ({what})"


def _dataset_image_files(cursor) -> Iterator[tuple[str, str]]:
    from training import storage

    table = _table("training.DatasetImage")
    for pk, dataset_id, sha, fmt in _rows(cursor, f"SELECT id, dataset_id, sha256, format FROM {table}"):
        folder = Path("datasets") / str(dataset_id)
        yield storage.image_path(folder, sha, fmt).as_posix(), f"training.DatasetImage {pk} (image)"
        yield storage.thumbnail_path(folder, sha).as_posix(), f"training.DatasetImage {pk} (thumbnail)"


def _trained_model_files(cursor) -> Iterator[tuple[str, str]]:
    models, jobs = _table("training.TrainedModel"), _table("training.TrainingJob")
    sql = f"SELECT m.id, m.job_id, j.exports FROM {models} m JOIN {jobs} j ON j.id = m.job_id"
    for pk, job_id, exports in _rows(cursor, sql):
        yield f"models/{job_id}/model.keras", f"training.TrainedModel {pk} (model)"
        for fmt, path in export_paths(exports, job_id).items():
            yield path, f"training.TrainingJob {job_id} (export {fmt})"


# Files a finished job keeps beside its model when it has them (training.outcomes, training.analysis).
JOB_COMPANIONS = ("outcomes.npz", "features.npz", "analysis.json")


def job_companions(names: dict[str, str]) -> list[str]:
    """Data paths of the companion files present beside each model that `names` holds."""
    models = root_dirs()["models"]
    found = []
    for data_path in names:
        parts = PurePosixPath(data_path).parts
        if len(parts) == 3 and parts[0] == "models" and parts[2] == "model.keras":
            for name in JOB_COMPANIONS:
                if (models / parts[1] / name).is_file():
                    found.append(f"models/{parts[1]}/{name}")
    return found


def export_paths(exports: dict | str | None, job_id: int) -> dict[str, str]:
    """Format -> data path of each export file a job recorded.

    Jobs record absolute paths; the part from `models/<job>/` on is what names the file, so a
    database restored into another DATA_DIR still names the right files.
    """
    if isinstance(exports, str):
        exports = json.loads(exports or "{}")
    found = {}
    for fmt, record in (exports or {}).items():
        path = record.get("path") if isinstance(record, dict) else None
        if path:
            data_path = _from_job_folder(PurePath(path), job_id)
            if data_path:
                found[fmt] = data_path
    return found


def _from_job_folder(path: PurePath, job_id: int) -> str | None:
    parts = path.parts
    for i in range(len(parts) - 2, 0, -1):
        if parts[i] == str(job_id) and parts[i - 1] == "models":
            return "/".join(("models", *parts[i:]))
    return None


# --- What is on disk ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Missing:
    """A row naming a file that is not there."""

    data_path: str
    owner: str

    @property
    def model(self) -> str:
        return self.owner.split(" ", 1)[0]

    @property
    def pk(self) -> int:
        return int(self.owner.split(" ")[1])


@dataclass(frozen=True)
class Orphan:
    """A file (or a whole folder) no row names."""

    path: Path
    shown: str  # the data path, with a "/" at the end for a folder
    size: int
    folder: bool = False


@dataclass
class Report:
    """What `inspect` found: problems, and what it left alone because it may still be in use."""

    missing: list[Missing] = field(default_factory=list)
    orphans: list[Orphan] = field(default_factory=list)
    named: int = 0
    in_use: int = 0  # files of running imports, uploads and training jobs
    too_recent: int = 0  # files younger than the grace period, maybe of a request still running
    leftovers: list[Orphan] = field(default_factory=list)  # temporary files of writes killed half way

    @property
    def problems(self) -> int:
        return len(self.missing) + len(self.orphans)


def walk_files(folder: Path) -> Iterator[Path]:
    """Regular files below `folder` (symbolic links included, never followed into folders)."""
    if not folder.is_dir():
        return
    for dirpath, _dirnames, filenames in os.walk(folder):
        for name in filenames:
            yield Path(dirpath) / name


def _mtime(path: Path) -> float:
    try:
        return path.lstat().st_mtime
    except FileNotFoundError:
        return time.time()  # vanished meanwhile: treat as new, leave alone


def _size(path: Path) -> int:
    try:
        return path.lstat().st_size
    except FileNotFoundError:
        return 0


def _folder_stats(folder: Path) -> tuple[float, int]:
    """Newest modification time and total size of a folder and everything in it."""
    newest, total = _mtime(folder), 0
    for path in walk_files(folder):
        newest, total = max(newest, _mtime(path)), total + _size(path)
    return newest, total


def inspect(min_age: timedelta = timedelta(hours=1)) -> Report:
    """Rows whose files are missing, and files no row names (older than `min_age`).

    Files are listed before the rows are read: a file whose row commits in between is then seen
    with its row. A file whose row commits later than that is younger than the grace period.
    """
    cutoff = time.time() - min_age.total_seconds()
    report = Report()
    media = list(walk_files(root_dirs()["media"]))
    datasets = _dataset_folders()
    jobs = _job_folders()
    with connection.cursor() as cursor:
        names = named_files(cursor)
    report.named = len(names)
    _find_missing(names, report)
    _media_orphans(media, names, cutoff, report)
    _dataset_orphans(datasets, names, cutoff, report)
    _model_orphans(jobs, names, cutoff, report)
    _stale_backups(cutoff, report)
    _other_leftovers(cutoff, report)
    return report


def _find_missing(names: dict[str, str], report: Report) -> None:
    for data_path, owner in names.items():
        try:
            present = local_path(data_path).exists()
        except UnsafePath:
            present = False
        if not present:
            report.missing.append(Missing(data_path, owner))
    report.missing = [m for m in report.missing if _still_named(m)]


def _still_named(missing: Missing) -> bool:
    """Not deleted meanwhile (a row goes before its files): only rows still there are problems."""
    from django.apps import apps

    if not apps.get_model(missing.model).objects.filter(pk=missing.pk).exists():
        return False
    try:
        return not local_path(missing.data_path).exists()
    except UnsafePath:
        return True


def _judge(path: Path, shown: str, cutoff: float, report: Report) -> None:
    if _mtime(path) > cutoff:
        report.too_recent += 1
    else:
        report.orphans.append(Orphan(path, shown, _size(path)))


def _is_leftover(path: Path, shown: str | None) -> bool:
    """A temporary file of an interrupted write (`webapp.atomic`), or a file in such a temporary folder."""
    parts = PurePosixPath(shown).parts if shown else path.parts[-1:]
    return any(atomic.is_temporary(part) for part in parts)


def _judge_leftover(path: Path, shown: str, cutoff: float, report: Report) -> None:
    if _mtime(path) > cutoff:
        report.too_recent += 1  # maybe a write still going on
    else:
        report.leftovers.append(Orphan(path, shown, _size(path)))


def _judge_folder(folder: Path, shown: str, cutoff: float, report: Report) -> None:
    newest, size = _folder_stats(folder)
    if newest > cutoff:
        report.too_recent += 1
    else:
        report.orphans.append(Orphan(folder, shown, size, folder=True))


def _media_orphans(files: list[Path], names: dict[str, str], cutoff: float, report: Report) -> None:
    """Uploads of a Classify request killed before its row was saved (there is no journal for them)."""
    for path in files:
        shown = data_path_of(path)
        if shown in names:
            continue
        if _is_leftover(path, shown):
            _judge_leftover(path, shown or str(path), cutoff, report)
        else:
            _judge(path, shown or str(path), cutoff, report)


def _dataset_folders() -> dict[int, tuple[Path, list[Path]]]:
    root = root_dirs()["datasets"]
    if not root.is_dir():
        return {}
    found = {}
    for folder in root.iterdir():
        if folder.is_dir() and folder.name.isdigit():
            found[int(folder.name)] = (folder, [p for sub in ("images", "thumbs") for p in walk_files(folder / sub)])
    return found


def _journalled(folder: Path) -> set[Path]:
    """Files the journals of unfinished imports and uploads list: `training.recovery` owns them."""
    listed = set()
    for journal in sorted((folder / "journal").glob("*.txt")):
        try:
            lines = journal.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            continue
        listed.update(folder / line for line in lines if line and ".." not in line)
    return listed


def _dataset_orphans(datasets: dict, names: dict[str, str], cutoff: float, report: Report) -> None:
    from training.models import Dataset

    alive = set(Dataset.objects.filter(pk__in=list(datasets)).values_list("pk", flat=True))
    for dataset_id, (folder, files) in datasets.items():
        if dataset_id not in alive:
            _judge_folder(folder, f"datasets/{dataset_id}/", cutoff, report)
            continue
        journalled = _journalled(folder)
        for path in files:
            shown = data_path_of(path)
            if shown in names:
                continue
            final = atomic.final_name(path.name)
            if path in journalled or (final and path.with_name(final) in journalled):
                report.in_use += 1  # a running import or upload is writing it
            elif _is_leftover(path, shown):
                _judge_leftover(path, shown, cutoff, report)
            else:
                _judge(path, shown, cutoff, report)


def _job_folders() -> dict[int, Path]:
    root = root_dirs()["models"]
    if not root.is_dir():
        return {}
    return {int(p.name): p for p in root.iterdir() if p.is_dir() and p.name.isdigit()}


def _model_orphans(jobs: dict[int, Path], names: dict[str, str], cutoff: float, report: Report) -> None:
    """A folder of a job that is gone, or ended without a model, is an orphan; active jobs are left alone."""
    from training.models import TrainedModel, TrainingJob

    statuses = dict(TrainingJob.objects.filter(pk__in=list(jobs)).values_list("pk", "status"))
    with_model = set(TrainedModel.objects.filter(job_id__in=list(jobs)).values_list("job_id", flat=True))
    for job_id, folder in jobs.items():
        if statuses.get(job_id) in TrainingJob.ACTIVE:
            report.in_use += sum(1 for _ in walk_files(folder))
        elif job_id in with_model:
            for path in walk_files(folder):
                shown = data_path_of(path)
                if shown in names or path.name in JOB_COMPANIONS:
                    continue
                if _is_leftover(path, shown):
                    _judge_leftover(path, shown, cutoff, report)
                else:
                    _judge(path, shown, cutoff, report)
        else:
            _judge_folder(folder, f"models/{job_id}/", cutoff, report)


def _stale_backups(cutoff: float, report: Report) -> None:
    """Staging folders of backups that were killed: a running backup holds the lock of its folder."""
    for folder in Path(settings.DATA_DIR).glob(f"{STAGING_PREFIX}*"):
        if folder.is_dir() and not staging_in_use(folder):
            _judge_folder(folder, f"{folder.name}/ (an unfinished backup)", cutoff, report)


def _other_leftovers(cutoff: float, report: Report) -> None:
    """Temporary files in the folders no row's files are in: the data folder itself, weights, waiting zips."""
    for folder in _temporary_folders(models=False):
        for entry in _entries(folder):
            if atomic.is_temporary(entry.name) and entry.is_file():
                _judge_leftover(entry, _shown(entry), cutoff, report)


def _shown(path: Path) -> str:
    try:
        return path.relative_to(settings.DATA_DIR).as_posix()
    except ValueError:
        return str(path)


def _entries(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def _temporary_folders(*, models: bool) -> list[Path]:
    """Folders writes go to that hold few files: cheap to list every few minutes.

    The data folder (secret key), weights, zips waiting for an import or an int8 calibration, and with
    `models` each job's folder and its exports. Not media and datasets: they hold a file per picture
    (`inspect` walks them; dataset writes are journalled, and `training.recovery` undoes them).
    """
    data_dir = Path(settings.DATA_DIR)
    folders = [data_dir, root_dirs()["weights"], data_dir / "imports", data_dir / "calibration"]
    if models:
        for job in _job_folders().values():
            folders += [job, job / "exports"]
    return folders


def remove_stale_temporaries(grace: timedelta) -> int:
    """Remove temporary files of writes killed half way, not written for `grace`; returns how many went.

    For the periodic clean-up. A write in progress keeps its temporary file's time fresh.
    """
    return sum(atomic.remove_stale(folder, grace.total_seconds()) for folder in _temporary_folders(models=True))


def staging_in_use(folder: Path) -> bool:
    """Whether a running backup holds the lock of this staging folder (a killed one's lock is free)."""
    try:
        handle = open(folder / STAGING_LOCK)  # noqa: SIM115 (closed below)
    except OSError:
        return False  # no lock file: the backup died before it took the lock
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        handle.close()  # also releases a lock taken here
    return False


# --- Fixing -------------------------------------------------------------------------------------


def remove_orphans(report: Report, min_age: timedelta) -> tuple[int, int]:
    """Remove what `inspect` found no row for; returns (files removed, bytes freed).

    Each file is looked at again first: written since (the same picture uploaded again), or named
    by a row now, it stays.
    """
    cutoff = time.time() - min_age.total_seconds()
    files = freed = 0
    for orphan in report.orphans:
        if orphan.folder:
            newest, _ = _folder_stats(orphan.path)
            if newest > cutoff:
                continue
            files += sum(1 for _ in walk_files(orphan.path))
            shutil.rmtree(orphan.path, ignore_errors=True)
        else:
            if _mtime(orphan.path) > cutoff or _named_now(orphan.shown):
                continue
            orphan.path.unlink(missing_ok=True)
            files += 1
        freed += orphan.size
    return files, freed


def remove_leftovers(report: Report, min_age: timedelta) -> tuple[int, int]:
    """Remove the temporary files `inspect` found (each looked at again first); returns (files, bytes)."""
    cutoff = time.time() - min_age.total_seconds()
    files = freed = 0
    for leftover in report.leftovers:
        if _mtime(leftover.path) > cutoff:
            continue  # written again since: a write is going on
        leftover.path.unlink(missing_ok=True)
        files += 1
        freed += leftover.size
        if atomic.is_temporary(leftover.path.parent.name):  # an export's staging folder, emptied
            with contextlib.suppress(OSError):
                leftover.path.parent.rmdir()
    return files, freed


def _named_now(data_path: str) -> bool:
    """Whether a dataset image row names this file now (the same picture was uploaded again)."""
    from training.models import DatasetImage

    parts = data_path.split("/")
    if parts[0] != "datasets" or len(parts) != 5 or not parts[1].isdigit():
        return False
    sha = parts[4].split(".", 1)[0]
    return DatasetImage.objects.filter(dataset_id=int(parts[1]), sha256=sha).exists()


MISSING_EXPORT = "The export file was missing from the data folder; train the model again to build it."


def delete_rows_without_files(report: Report) -> dict[str, int]:
    """Delete the rows whose files are gone (their remaining files go with them); returns counts per model.

    A trained model's row goes and its job stays with its curves; a missing export is marked as
    not available on its job. Dataset images: the dataset's "last change" moves.
    """
    from django.apps import apps

    from training.models import Dataset, TrainingJob

    done: dict[str, int] = {}
    for missing in report.missing:
        if not _still_named(missing):
            continue
        if missing.model == "training.TrainingJob":
            _forget_export(TrainingJob, missing)
        else:
            model = apps.get_model(missing.model)
            with transaction.atomic():
                row = model.objects.filter(pk=missing.pk).first()
                if row is None:
                    continue
                row.delete()
                if missing.model == "training.DatasetImage":
                    Dataset.objects.filter(pk=row.dataset_id).update(updated_at=timezone.now())
        done[missing.model] = done.get(missing.model, 0) + 1
    return done


def _forget_export(job_model, missing: Missing) -> None:
    with transaction.atomic():
        job = job_model.objects.select_for_update().filter(pk=missing.pk).first()
        if job is None:
            return
        exports = dict(job.exports)
        for fmt, path in export_paths(exports, job.pk).items():
            if path == missing.data_path:
                exports[fmt] = {**exports[fmt], "ok": False, "path": None, "message": MISSING_EXPORT}
        job_model.objects.filter(pk=job.pk).update(exports=exports)
