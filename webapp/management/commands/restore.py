"""`manage.py restore SRC`: check a backup against its manifest, then put its database and files in place."""

from __future__ import annotations

from pathlib import Path

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from webapp import backup


class Command(BaseCommand):
    help = (
        "Restore a backup made by `manage.py backup` into DATA_DIR and the configured database. Stop TransferLab "
        "first. Every file is checked against manifest.json before anything is written; a DATA_DIR that already "
        "holds data is refused unless --force is given."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("src", type=Path, help="the backup folder (it holds manifest.json)")
        parser.add_argument(
            "--force",
            action="store_true",
            help="replace the data there is now; it is moved to DATA_DIR/replaced-<date>/ (SQLite database too)",
        )

    def handle(self, *args, src: Path, force: bool, **options) -> None:
        try:
            result = backup.restore(src, force=force)
        except backup.BackupError as error:
            raise CommandError(str(error)) from None
        manifest = result["manifest"]
        self.stdout.write(
            self.style.SUCCESS(
                f"Restored the backup of {manifest['snapshot_at']} from {Path(src).absolute()}: the database and "
                f"{result['files']} files ({backup.size_of(manifest)})."
            )
        )
        if result["aside"]:
            self.stdout.write(f"What was there before is in {result['aside']}; delete it once all is well.")
        if manifest["missing"]:
            self.stdout.write(
                self.style.WARNING(
                    f"The backup lists {len(manifest['missing'])} files that were already missing when it was made; "
                    "the check below shows their rows."
                )
            )
        self.stdout.write("Checking the restored data:")
        try:
            call_command("check_data", "--min-age-minutes", "0", stdout=self.stdout)
        except CommandError as error:
            self.stdout.write(self.style.WARNING(str(error)))
        self.stdout.write(
            "Start TransferLab (`make run` applies the migrations of this version if the backup is older)."
        )
