"""`manage.py backup DEST`: a consistent online copy of the database and of the files it names.

The logic, and why it is consistent while uploads, imports and deletions go on, is in `webapp.backup`.
"""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from webapp import backup
from webapp.sizes import human_size


class Command(BaseCommand):
    help = (
        "Write a backup of this TransferLab into the new folder DEST while it runs: the database, the files it "
        "names (classified images, dataset images, trained models and exports), the installed weights, the "
        "secret key, and manifest.json (sizes, SHA-256, rows per table, versions). Restore with `restore DEST`."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("dest", type=Path, help="a new (or empty) folder, outside DATA_DIR")
        parser.add_argument(
            "--no-weights",
            action="store_true",
            help="leave out the pretrained weights files (they can be imported again, and are large)",
        )
        parser.add_argument(
            "--database-format",
            choices=["auto", "native", "json"],
            default="auto",
            help="auto: SQLite's own copy, or pg_dump on PostgreSQL (Django's dumpdata when pg_dump is not "
            "installed); json: dumpdata, to move between SQLite and PostgreSQL",
        )

    def handle(self, *args, dest: Path, no_weights: bool, database_format: str, **options) -> None:
        try:
            manifest = backup.backup(dest, weights=not no_weights, requested_format=database_format)
        except backup.BackupError as error:
            raise CommandError(str(error)) from None
        database = manifest["database"]
        files = manifest["files"]
        self.stdout.write(
            self.style.SUCCESS(
                f"Backup written to {Path(dest).absolute()}: the database ({database['format']}, "
                f"{human_size(database['size'])}, {sum(database['tables'].values())} rows) and {len(files)} "
                f"file{'s' if len(files) != 1 else ''} ({backup.size_of(manifest)}), taken by {manifest['capture']}."
            )
        )
        missing = len(manifest["missing"])
        if missing:
            files = "1 file the database names was" if missing == 1 else f"{missing} files the database names were"
            self.stdout.write(
                self.style.WARNING(
                    f"{files} missing from DATA_DIR before the backup began (manifest.json lists them under "
                    "'missing'). Run `manage.py check_data` to see their rows."
                )
            )
