"""Moving an install from SQLite to PostgreSQL: every row copied with its id, then counted on both sides.

Why not `dumpdata` / `loaddata`: Django's JSON keeps datetimes to the millisecond only, loaddata
inserts one row per query (minutes for a year of predictions), and content types need natural keys
or the right ids. Here rows go table by table, in batches, as Python values read through the ORM
and written with the target's own adapters, exactly as they were: ids, microseconds, JSON, content
types and permissions included (the target's own, which `migrate` just made, are replaced by the
source's so every reference keeps pointing at the same row).

The whole copy is one transaction on the target: it commits only when every table holds as many
rows as the source did, read in one transaction too; otherwise nothing is left behind. Then the
target's sequences are moved past the copied ids, so the next row gets a new one. Files stay in
DATA_DIR where they are: rows name them by paths relative to it (and trained models' exports by
absolute paths in DATA_DIR), so the PostgreSQL install must use the same DATA_DIR.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import dj_database_url
from django.apps import apps
from django.core.management import call_command
from django.core.management.color import no_style
from django.db import DEFAULT_DB_ALIAS, connections, models, transaction
from django.db.migrations.executor import MigrationExecutor
from django.db.utils import ConnectionDoesNotExist, load_backend

from webapp.background import ACTIVE, job_models, recover_jobs

TARGET = "copy_target"
BATCH = 500  # rows per INSERT: a few thousand parameters, well inside PostgreSQL's 65,535
# Rows `migrate` creates on its own; the copy replaces them with the source's (same ids as before).
MIGRATE_MADE = ("contenttypes.ContentType", "auth.Permission")


class CopyError(Exception):
    """A copy that cannot start or did not arrive whole; str() says why and what to do."""


@dataclass
class CopyReport:
    """What was copied: rows per table (the same on both sides, or the copy was rolled back)."""

    target: str
    tables: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(self.tables.values())


def copied_models() -> list[type[models.Model]]:
    """Every table Django manages, many-to-many tables included; proxies share their model's table."""
    found = apps.get_models(include_auto_created=True)
    return [m for m in found if m._meta.managed and not m._meta.proxy and not m._meta.swapped]


def describe(settings_dict: dict) -> str:
    """`name on host`, without the password, for messages."""
    host = settings_dict.get("HOST") or (settings_dict.get("OPTIONS") or {}).get("host") or "localhost"
    return f"{settings_dict['NAME']} on {host}"


def open_target(url: str) -> str:
    """Open the PostgreSQL database at `url` as a second connection of this thread; returns its description.

    Not added to settings.DATABASES: nothing else in the process should find it, and it goes with `close_target`.
    """
    try:
        config = dj_database_url.parse(url)
    except ValueError as error:
        raise CopyError(f"{url!r} is not a database URL ({error}). Give one like postgres://USER@HOST/NAME.") from None
    if config.get("ENGINE") != "django.db.backends.postgresql":
        raise CopyError(f"--to must name a PostgreSQL database (postgres://USER@HOST/NAME), not {url!r}.")
    default = dict(connections.settings[DEFAULT_DB_ALIAS])
    configured = connections.configure_settings({DEFAULT_DB_ALIAS: default, TARGET: config})[TARGET]
    connections[TARGET] = load_backend(configured["ENGINE"]).DatabaseWrapper(configured, TARGET)
    return describe(configured)


def close_target() -> None:
    try:
        target = connections[TARGET]
    except ConnectionDoesNotExist:
        return
    target.close()
    del connections[TARGET]


def check_source() -> None:
    """SQLite, every migration applied, no job waiting in the SQLite queue or running."""
    source = connections[DEFAULT_DB_ALIAS]
    if source.vendor != "sqlite":
        raise CopyError(
            f"This install already uses {source.vendor} (DATABASE_URL is set): copy_database moves a SQLite install. "
            "To copy a PostgreSQL database to another server, use pg_dump and pg_restore."
        )
    executor = MigrationExecutor(source)
    if executor.migration_plan(executor.loader.graph.leaf_nodes()):
        raise CopyError(
            "The SQLite database has migrations to apply: run `manage.py migrate` (make run does), then copy."
        )
    recover_jobs()  # running jobs of workers that are gone become interrupted, as at a worker's start
    active = [
        f"{model._meta.verbose_name} {pk}"
        for model in job_models()
        for pk in model.objects.filter(status__in=ACTIVE).values_list("pk", flat=True)
    ]
    if active:
        raise CopyError(
            f"{len(active)} background job{'s are' if len(active) != 1 else ' is'} queued or running "
            f"({', '.join(active[:5])}): their tasks wait in the SQLite queue, which does not move. Let them finish "
            "or cancel them, stop TransferLab, then copy."
        )


def prepare_target() -> None:
    """Migrate the target and make sure it holds nothing yet (beyond what `migrate` made)."""
    try:
        connections[TARGET].ensure_connection()
    except Exception as error:
        raise CopyError(f"Cannot connect to {describe(connections[TARGET].settings_dict)}: {error}".strip()) from None
    call_command("migrate", database=TARGET, interactive=False, verbosity=0)
    made = {apps.get_model(label) for label in MIGRATE_MADE}
    holding = [m._meta.label for m in copied_models() if m not in made and m._base_manager.using(TARGET).exists()]
    if holding:
        raise CopyError(
            f"{describe(connections[TARGET].settings_dict)} already holds data ({', '.join(holding[:5])}). Copy into "
            "a new, empty database (createdb), never over one in use."
        )


def _copy_table(model: type[models.Model]) -> int:
    """Every row of one table, in batches, values exactly as read (raw: no defaults, no auto_now)."""
    fields = model._meta.local_concrete_fields
    target = model._base_manager.using(TARGET)
    batch: list[models.Model] = []
    copied = 0
    for obj in model._base_manager.using(DEFAULT_DB_ALIAS).order_by("pk").iterator(chunk_size=BATCH):
        batch.append(obj)
        if len(batch) == BATCH:
            target._insert(batch, fields=fields, raw=True, using=TARGET)  # what loaddata's raw save does, per batch
            copied, batch = copied + len(batch), []
    if batch:
        target._insert(batch, fields=fields, raw=True, using=TARGET)
        copied += len(batch)
    return copied


def _reset_sequences(tables: list[type[models.Model]]) -> None:
    target = connections[TARGET]
    with target.cursor() as cursor:
        for sql in target.ops.sequence_reset_sql(no_style(), tables):
            cursor.execute(sql)


def copy_rows() -> dict[str, int]:
    """Source rows counted and read in one transaction; the target's copy committed only if it matches."""
    tables = copied_models()
    with transaction.atomic(using=DEFAULT_DB_ALIAS), transaction.atomic(using=TARGET):
        for label in MIGRATE_MADE:  # cascades to permissions, and to nothing else in an empty database
            apps.get_model(label)._base_manager.using(TARGET).all().delete()
        expected = {m._meta.db_table: m._base_manager.using(DEFAULT_DB_ALIAS).count() for m in tables}
        written = {m._meta.db_table: _copy_table(m) for m in tables}
        arrived = {m._meta.db_table: m._base_manager.using(TARGET).count() for m in tables}
        wrong = [f"{t}: {expected[t]} rows, {written[t]} written, {arrived[t]} there" for t in expected
                 if not expected[t] == written[t] == arrived[t]]  # fmt: skip
        if wrong:
            raise CopyError(f"The copy did not arrive whole, so nothing was kept: {'; '.join(wrong[:10])}.")
        _reset_sequences(tables)
    from django.contrib.contenttypes.models import ContentType

    ContentType.objects.clear_cache()
    return expected


def copy_database(url: str) -> CopyReport:
    """Copy this install's SQLite database into the empty PostgreSQL database at `url`, checked table by table."""
    started = time.monotonic()
    check_source()
    try:
        report = CopyReport(target=open_target(url))
        prepare_target()
        report.tables = copy_rows()
    finally:
        close_target()
    report.seconds = time.monotonic() - started
    return report
