"""System checks: a setting that cannot work fails at start with a message, not later with a 500."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from django.conf import settings
from django.core.checks import Error, Warning, register


@register()
def check_data_dir(app_configs, **kwargs) -> list[Error]:
    errors = []
    if not os.access(settings.DATA_DIR, os.W_OK):
        errors.append(
            Error(
                f"DATA_DIR {settings.DATA_DIR} is not writable.",
                hint="Point DATA_DIR at a folder the TransferLab user can write to.",
                id="transferlab.E001",
            )
        )
    limits = {
        "MAX_UPLOAD_MB": settings.MAX_UPLOAD_BYTES,
        "MAX_IMAGE_PIXELS": settings.MAX_IMAGE_PIXELS,
        "MAX_FILES_PER_REQUEST": settings.MAX_FILES_PER_REQUEST,
        "MODEL_CACHE_SIZE": settings.MODEL_CACHE_SIZE,
    }
    for name, value in limits.items():
        if value < 1:
            errors.append(
                Error(f"{name} must be at least 1.", hint="Unset it to use the default.", id="transferlab.E002")
            )
    return errors


def _private_paths() -> list[Path]:
    """What holds sessions, password hashes, tokens and images: DATA_DIR, and the SQLite files in it."""
    paths = [Path(settings.DATA_DIR)]
    database = settings.DATABASES.get("default", {})
    if database.get("ENGINE", "").endswith("sqlite3") and str(database.get("NAME", "")).startswith("/"):
        db = Path(database["NAME"])
        paths += [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]
    return paths


@register()
def check_data_permissions(app_configs, **kwargs) -> list[Warning]:
    """Warn when other accounts on this server can read the data folder or the database.

    A readable db.sqlite3 gives away session keys (log in as anyone, staff included) and API token
    hashes. New installs are private (manage.py and wsgi.py set umask 077); this is for older ones.
    """
    data_dir = Path(settings.DATA_DIR)
    warnings = []
    for path in _private_paths():
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError:
            continue  # not created yet (the WAL), or not readable: nothing to report
        if mode & 0o077:
            warnings.append(
                Warning(
                    f"{path} can be read by other accounts on this server (mode {mode:04o}): they could copy "
                    "session keys and log in as anyone, staff included.",
                    hint=f"Run: chmod 700 {data_dir} && chmod -R go-rwx {data_dir}",
                    id="transferlab.W001",
                )
            )
    return warnings


@register()
def check_disk_settings(app_configs, **kwargs) -> list[Error]:
    """The reserve and the retention are counts of MiB and days: negative ones are a typo."""
    values = {
        "MIN_FREE_DISK_MB": getattr(settings, "MIN_FREE_DISK_MB", 500),
        "PREDICTION_RETENTION_DAYS": getattr(settings, "PREDICTION_RETENTION_DAYS", 0),
        "TRASH_RETENTION_DAYS": getattr(settings, "TRASH_RETENTION_DAYS", 30),
    }
    return [
        Error(f"{name} cannot be negative.", hint="Unset it to use the default.", id="transferlab.E003")
        for name, value in values.items()
        if value < 0
    ]
