"""`manage.py copy_database --to postgres://USER@HOST/NAME`: move a SQLite install's rows to PostgreSQL.

The logic, and why rows are copied this way rather than through dumpdata/loaddata, is in
`webapp.database_copy`.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from webapp import database_copy


class Command(BaseCommand):
    help = (
        "Copy this install's SQLite database, every row with its id, into an empty PostgreSQL database, then "
        "check that each table holds as many rows there as here (nothing is kept otherwise). Stop TransferLab "
        "first. Files stay in DATA_DIR. Afterwards, start TransferLab with DATABASE_URL set to the same URL."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--to",
            required=True,
            metavar="URL",
            help="the empty PostgreSQL database, e.g. postgres://transferlab@dbhost/transferlab (a password is "
            "better kept in PGPASSWORD or ~/.pgpass than on the command line)",
        )

    def handle(self, *args, to: str, **options) -> None:
        try:
            report = database_copy.copy_database(to)
        except database_copy.CopyError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(
            f"Copied {report.rows:,} rows of {len(report.tables)} tables into {report.target} "
            f"in {report.seconds:.1f} s."
        )
        self.stdout.write(
            self.style.SUCCESS(
                "Checked: every table holds as many rows in PostgreSQL as in SQLite. Start TransferLab with "
                "DATABASE_URL set to that database (and REDIS_URL for the queues); the SQLite file is left as it was."
            )
        )
