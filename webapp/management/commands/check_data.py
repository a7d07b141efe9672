"""`manage.py check_data`: rows whose files are gone, and files no row names; --fix cleans up.

The logic is in `webapp.datafiles`; this command prints it and fails (exit status 1) while problems
remain, so it can run from cron or monitoring.
"""

from __future__ import annotations

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from webapp import datafiles
from webapp.sizes import human_size

SHOWN = 50  # lines per list; the count says how many more there are


class Command(BaseCommand):
    help = (
        "Report database rows whose files are missing and files in DATA_DIR no row names (predictions, dataset "
        "images and thumbnails, trained models and exports). --fix removes the files no row names."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--fix",
            action="store_true",
            help="remove files no row names and temporary files of interrupted writes (what a killed upload, "
            "import or delete left behind)",
        )
        parser.add_argument(
            "--delete-rows-without-files",
            action="store_true",
            help="also delete the rows whose files are gone (History entries, dataset images, trained models)",
        )
        parser.add_argument(
            "--min-age-minutes",
            type=int,
            default=60,
            help="leave files younger than this alone: a request may still be writing its row (default 60)",
        )

    def handle(self, *args, fix: bool, delete_rows_without_files: bool, min_age_minutes: int, **options) -> None:
        min_age = timedelta(minutes=max(0, min_age_minutes))
        if fix:
            self._run_recovery()
        report = datafiles.inspect(min_age)
        self._print(report, min_age)
        if delete_rows_without_files and report.missing:
            done = datafiles.delete_rows_without_files(report)
            rows = ", ".join(f"{n} {model}" for model, n in done.items()) or "none (they were gone already)"
            self.stdout.write(f"Deleted rows whose files were gone: {rows}.")
        if fix and report.orphans:
            files, freed = datafiles.remove_orphans(report, min_age)
            self.stdout.write(f"Removed {files} file{'s' if files != 1 else ''} no row named ({human_size(freed)}).")
        if fix and report.leftovers:
            files, freed = datafiles.remove_leftovers(report, min_age)
            plural = "s" if files != 1 else ""
            self.stdout.write(f"Removed {files} temporary file{plural} of interrupted writes ({human_size(freed)}).")
        if fix or delete_rows_without_files:
            report = datafiles.inspect(min_age)
            if report.problems:
                self.stdout.write("Still there after the fixes:")
                self._print(report, min_age)
            else:
                self.stdout.write(self.style.SUCCESS("No problems left."))
        if report.problems:
            raise CommandError(self._advice(report, fix, delete_rows_without_files))

    def _run_recovery(self) -> None:
        """What the worker does every five minutes: undo interrupted imports and uploads (journals first)."""
        from training import recovery

        recovery.clean_abandoned_files()

    def _print(self, report: datafiles.Report, min_age: timedelta) -> None:
        if report.missing:
            self.stdout.write(f"Rows whose files are missing ({len(report.missing)}):")
            for missing in report.missing[:SHOWN]:
                self.stdout.write(f"  {missing.owner}: {missing.data_path}")
            self._more(len(report.missing))
        if report.orphans:
            size = human_size(sum(o.size for o in report.orphans))
            self.stdout.write(f"Files no row names ({len(report.orphans)}, {size}):")
            for orphan in report.orphans[:SHOWN]:
                kind = "folder, " if orphan.folder else ""
                self.stdout.write(f"  {orphan.shown} ({kind}{human_size(orphan.size)})")
            self._more(len(report.orphans))
        if report.leftovers:  # no damage: a write killed half way never touched the file it was replacing
            size = human_size(sum(o.size for o in report.leftovers))
            self.stdout.write(f"Temporary files of interrupted writes: {len(report.leftovers)} ({size}); not damage, "
                              "--fix removes them.")  # fmt: skip
        left = []
        if report.in_use:
            left.append(f"{report.in_use} file{'s' if report.in_use != 1 else ''} in use by imports, uploads or "
                        "training jobs still running")  # fmt: skip
        if report.too_recent:
            minutes = int(min_age.total_seconds() // 60)
            left.append(f"{report.too_recent} file{'s' if report.too_recent != 1 else ''} or folders younger than "
                        f"{minutes} minutes")  # fmt: skip
        if left:
            self.stdout.write(f"Left alone: {'; '.join(left)}.")
        if not report.problems:
            self.stdout.write(
                self.style.SUCCESS(
                    f"No problems: the {report.named} files the database names are all there, and no other file is."
                )
            )

    def _more(self, count: int) -> None:
        if count > SHOWN:
            self.stdout.write(f"  … and {count - SHOWN} more.")

    @staticmethod
    def _advice(report: datafiles.Report, fix: bool, delete_rows: bool) -> str:
        n = report.problems
        steps = []
        if report.orphans and not fix:
            steps.append("run `manage.py check_data --fix` to remove the files no row names")
        if report.missing and not delete_rows:
            steps.append(
                "restore the missing files from a backup, or add --delete-rows-without-files to delete the rows "
                "whose files are gone"
            )
        advice = "; ".join(steps) or "look at the files listed above (they may be in use), then run it again"
        return f"{n} problem{'s' if n != 1 else ''} found: {advice}."
