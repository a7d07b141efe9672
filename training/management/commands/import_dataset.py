"""Import a zip of labelled images from this server's disk, for zips too big to upload comfortably.

    python manage.py import_dataset /srv/incoming/pets.zip --name Pets
    python manage.py import_dataset birds.zip --name "Garden birds" --user alice

The same import as the web page (one folder per label, images inside; duplicates skipped, broken
files rejected with reasons), run in this process instead of the worker. The dataset is created
when no dataset has that name (ignoring case), else the zip is added to it. The zip is hard-linked
(or copied, on another file system) into DATA_DIR/imports, never read into memory; the original
stays where it is. Ctrl-C cancels the import, which is then undone. Exit status 1 when the import
failed or was cancelled: nothing of it was kept.
"""

from __future__ import annotations

import os
import uuid
import zipfile
from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.management.base import BaseCommand, CommandError

from training import imports
from training.forms import DatasetForm
from training.models import Dataset, ImportJob
from webapp import atomic, background


class Command(BaseCommand):
    help = "Import a zip of labelled images (one folder per label) into a dataset, in the foreground."

    def add_arguments(self, parser) -> None:
        parser.add_argument("archive", metavar="ZIP", help="the zip file on this server")
        parser.add_argument(
            "--name", required=True, help="dataset to import into; created when no dataset has this name (any case)"
        )
        parser.add_argument("--user", metavar="USERNAME", help="who added the images (default: nobody)")

    def handle(self, *args, archive: str, name: str, user: str | None, **options) -> None:
        self.verbosity = options["verbosity"]
        path = _checked_zip(Path(archive).expanduser())
        owner = _user(user)
        name = " ".join(name.split())
        dataset = Dataset.objects.filter(name__iexact=name).first()
        created = dataset is None
        if created:
            dataset = _create_dataset(name, owner)
            self.stdout.write(f"Created the dataset “{dataset.name}” (id {dataset.pk}).")
        else:
            self.stdout.write(f"Importing into the existing dataset “{dataset.name}” (id {dataset.pk}).")
        try:
            job = self._import(dataset, path, owner)
        except BaseException:
            if created:
                _drop_if_empty(dataset)
            raise
        if job.status != ImportJob.Status.SUCCEEDED:
            if created and _drop_if_empty(dataset):
                self.stderr.write(f"The dataset “{dataset.name}” was created for this import and removed again.")
            raise CommandError(job.message or f"The import ended {job.get_status_display().lower()}.")
        self.stdout.write(self.style.SUCCESS(job.message))  # the sentence first, then the report with the reasons
        self._print_report(job.report)

    def _import(self, dataset: Dataset, path: Path, user: AbstractBaseUser | None) -> ImportJob:
        """Record the job as the web form does, but run it here instead of queueing it for the worker."""
        target = imports.archives_dir() / f"{uuid.uuid4().hex}.zip"
        size = path.stat().st_size
        try:
            # The row first: the stray-zip cleaner leaves alone a zip an active job names, and a
            # hard link keeps the original's (old) date, which it would otherwise take as abandoned.
            job = imports.record_import(dataset, path.name, target, size, user)
        except imports.ImportRefused:
            raise CommandError(
                f"An import is already running for the dataset “{dataset.name}”. Wait for it to finish, then try again."
            ) from None
        try:
            try:
                how = _place(path, target)
            except OSError as exc:
                ImportJob.transition(job.pk, ImportJob.Status.FAILED, message=f"Could not copy the zip: {exc}")
                raise CommandError(f"Could not copy {path} into {target.parent}: {exc}") from None
            self.stdout.write(f"Importing {path} ({_size(size)}, {how}) as import job {job.pk}; Ctrl-C cancels it.")
            self.stdout.flush()
            message = "Cancelling the import: it stops and undoes itself. (Ctrl-C again: stop at once.)"
            with background.CancelOnInterrupt(ImportJob, job.pk, self.stderr.write, message):
                finished = imports.run_import_job(job.pk)
        except KeyboardInterrupt:  # a second Ctrl-C
            _abandon(job.pk, target, "Stopped at once (Ctrl-C) and undone: nothing was imported.")
            raise CommandError("Stopped at once; the import was undone: nothing was imported.") from None
        except BaseException:
            _abandon(job.pk, target, "The import command stopped before the import ran: nothing was imported.")
            raise
        if finished is None:  # cancelled or removed before it started
            imports.remove_archive(str(target))
            finished = ImportJob.objects.filter(pk=job.pk).first()
            if finished is None:
                raise CommandError("The import job was deleted before it started.")
        return finished

    def _print_report(self, report: dict) -> None:
        rows = report.get("labels") or []
        if rows:
            width = max(5, *(len(row["name"]) for row in rows))
            self.stdout.write(f"  {'Label':<{width}}  {'Added':>7}  {'Duplicates':>10}  {'Rejected':>8}")
            for row in rows:
                new = "  (new label)" if row.get("new") else ""
                self.stdout.write(
                    f"  {row['name']:<{width}}  {row['added']:>7}  {row['duplicates']:>10}  {row['rejected']:>8}{new}"
                )
        for note in report.get("notes") or []:
            self.stdout.write(f"Note: {note}")
        for row in rows:
            self._files(f"Rejected in “{row['name']}”", row["rejected"], row.get("rejected_files") or [])
            if self.verbosity >= 2:
                self._files(f"Duplicates skipped in “{row['name']}”", row["duplicates"], row.get("duplicate_files"))
        self._files("Not imported", report.get("other_count", 0), report.get("other") or [])
        ignored = report.get("ignored", 0)
        if ignored:
            files = "file" if ignored == 1 else "files"
            self.stdout.write(f"{ignored} hidden or system {files} (such as __MACOSX or .DS_Store) ignored.")

    def _files(self, title: str, count: int, items: list[dict] | None) -> None:
        if not items:
            return
        self.stdout.write(f"{title} ({count}):")
        for item in items:
            self.stdout.write(f"  {item['file']} — {item['reason']}")
        if count > len(items):
            self.stdout.write(f"  …and {count - len(items)} more; the first {len(items)} are listed.")


def _checked_zip(path: Path) -> Path:
    """The zip's absolute path, or CommandError before anything is created."""
    if not path.exists():
        raise CommandError(f"No such file: {path}")
    if not path.is_file():
        raise CommandError(f"{path} is not a file: give the path of a zip archive.")
    try:
        readable = zipfile.is_zipfile(path)
    except OSError as exc:
        raise CommandError(f"Cannot read {path}: {exc.strerror or exc}") from None
    if not readable:
        raise CommandError(
            f"{path} is not a zip archive, or it is damaged. Create the zip again (one folder per label, images "
            "inside)."
        )
    return path.resolve()


def _user(username: str | None) -> AbstractBaseUser | None:
    if not username:
        return None
    model = get_user_model()
    try:
        return model.objects.get_by_natural_key(username)
    except model.DoesNotExist:
        raise CommandError(f"No user named {username!r}.") from None


def _create_dataset(name: str, user: AbstractBaseUser | None) -> Dataset:
    """Through the web page's form, so a name the page refuses is refused here too."""
    fields = {f: Dataset._meta.get_field(f).default for f in ("validation_percent", "test_percent")}
    form = DatasetForm(data={"name": name, "description": "", **fields})
    if not form.is_valid():
        messages = [f"{field}: {m}" if field != "__all__" else m for field, ms in form.errors.items() for m in ms]
        raise CommandError("Cannot create the dataset: " + " ".join(messages))
    dataset = form.save(commit=False)
    dataset.created_by = user
    dataset.save()
    return dataset


def _abandon(job_id: int, archive: Path, message: str) -> None:
    """The job never ends on its own now: record it, undo what it wrote, and free the dataset for imports."""
    if not background.interrupt(ImportJob, job_id):  # running: interrupted, its files undone
        ImportJob.transition(job_id, ImportJob.Status.CANCELLED, from_=(ImportJob.Status.QUEUED,), message=message)
    imports.remove_archive(str(archive))


def _drop_if_empty(dataset: Dataset) -> bool:
    """A dataset this command created for an import that kept nothing goes again."""
    if dataset.images.exists() or dataset.labels.exists():
        return False
    dataset.delete()
    return True


def _place(source: Path, target: Path) -> str:
    """Hard link when the data folder is on the same file system, else a streamed copy; never in memory."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
        return "hard-linked"
    except OSError:
        atomic.copy_file(source, target)  # through a temporary name: the worker never reads half a zip
        return "copied"


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"
