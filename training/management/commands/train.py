"""Start a training job from the command line: queued for the training worker, or run right here.

    python manage.py train --dataset Pets --base mobilenetv2
    python manage.py train --dataset 3 --base efficientnetb0 --epochs 20 --augment flip,zoom --user alice
    python manage.py train --dataset Pets --base mobilenetv2 --fine-tune-epochs 5 --foreground
    python manage.py train --dataset Pets --base mobilenetv2 --foreground --json | tail -n 1

The options are those of the web form, checked by the same form (same defaults, same messages),
and the job is the same row the web page shows. Without --foreground the job is queued and the
command returns at once; with it, the job runs in this process through the worker's own code,
printing a line per phase and per epoch, and Ctrl-C cancels it (it stops within a batch and keeps
its curves). --json ends the output with one JSON line on stdout (everything else goes to stderr):
{"job": id, "status": ..., "model": "trained-N" or null, "val_accuracy": ..., "seconds": ...}.
Exit status 1 when the job cannot start, or a foreground job fails or is cancelled.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.management.base import BaseCommand, CommandError
from django.db.models.functions import Lower
from django.urls import reverse

from classifier import zoo
from training import exporting, jobs
from training.models import Dataset, TrainedModel, TrainingJob
from training.training_forms import TrainingForm
from webapp import background

MAX_LISTED_DATASETS = 20
# Command options that are fields of TrainingForm (same names, so the form's messages can name the option).
FORM_OPTIONS = (
    "epochs",
    "fine_tune_epochs",
    "fine_tune_from",
    "batch_size",
    "learning_rate",
    "fine_tune_learning_rate",
    "augment",
    "early_stopping",
    "class_weights",
    "seed",
)


class Command(BaseCommand):
    help = "Start a training job on a dataset: queued for the training worker, or run here with --foreground."

    def add_arguments(self, parser) -> None:
        form = TrainingForm.base_fields
        parser.add_argument("--dataset", required=True, metavar="NAME", help="dataset name (any case) or id")
        parser.add_argument(
            "--base", required=True, metavar="KEY", help="pretrained base, e.g. mobilenetv2 (its weights installed)"
        )
        parser.add_argument(
            "--epochs", type=int, metavar="N", help=_help("epochs", "transfer-learning epochs, base frozen")
        )
        parser.add_argument(
            "--fine-tune-epochs",
            type=int,
            metavar="N",
            help=_help("fine_tune_epochs", "then epochs adjusting the base's upper layers; 0: none"),
        )
        parser.add_argument(
            "--fine-tune-from", type=int, metavar="N", help="first base layer that learns (default: the base's)"
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            metavar="N",
            help=_help("batch_size", "images per step, lowered if memory is short"),
        )
        parser.add_argument(
            "--learning-rate", type=float, metavar="F", help=_help("learning_rate", "learning rate of the new head")
        )
        parser.add_argument(
            "--fine-tune-learning-rate",
            type=float,
            metavar="F",
            help=_help("fine_tune_learning_rate", "learning rate while fine-tuning"),
        )
        parser.add_argument(
            "--augment",
            metavar="flip,rotate,zoom",
            help=f"comma-separated, from {', '.join(key for key, _ in form['augment'].choices)} (default: none)",
        )
        parser.add_argument(
            "--early-stopping",
            action=argparse.BooleanOptionalAction,
            default=None,
            help=f"stop a phase when validation loss stalls (default: {_on(form['early_stopping'].initial)})",
        )
        parser.add_argument(
            "--class-weights",
            action=argparse.BooleanOptionalAction,
            default=None,
            help=f"balance labels of unequal size (default: {_on(form['class_weights'].initial)})",
        )
        parser.add_argument(
            "--seed", type=int, metavar="N", help=_help("seed", "same seed, settings and data: same model")
        )
        parser.add_argument("--user", metavar="USERNAME", help="recorded as who started it (default: nobody)")
        parser.add_argument(
            "--foreground", action="store_true", help="run the job in this process instead of queueing it"
        )
        parser.add_argument(
            "--json", dest="as_json", action="store_true", help="end with one JSON line on stdout; the rest on stderr"
        )

    def handle(self, *args, foreground: bool, as_json: bool, **options) -> None:
        started = time.monotonic()
        # With --json, stdout carries the JSON line only: a script reads the last line.
        self.out = self.stderr if as_json else self.stdout
        dataset = _dataset(options["dataset"])
        user = _user(options["user"])
        base = _base_key(options["base"])
        form = TrainingForm(data=_form_data(base, options))
        if not form.is_valid():
            raise CommandError(_form_errors(form))
        try:
            job = jobs.start_training(dataset, base, form.config(), user, enqueue=not foreground)
        except jobs.TrainingRefused as exc:
            raise CommandError(str(exc)) from None
        what = f"job {job.pk}: {job.base_name} on “{dataset.name}” ({len(job.labels)} labels, {job.image_count} images)"
        if not foreground:
            self._say(self.style.SUCCESS(f"Queued training {what}."))
            self._say(f"The training worker runs it (make run, or manage.py run_training_worker).{_page(job)}")
            if as_json:
                self._json(job.pk, "queued", None, None, time.monotonic() - started)
            return
        guard = background.CancelOnInterrupt(
            TrainingJob,
            job.pk,
            self._say,
            f"Cancelling job {job.pk}: it stops within a batch and keeps its curves. (Ctrl-C again: stop at once.)",
        )
        stray = contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()
        with guard, stray:
            try:
                self._say(f"Training {what} in this process; Ctrl-C cancels it.{_page(job)}")
                finished = jobs.run_training_job(job.pk, echo=self._echo)
            except KeyboardInterrupt:
                # A second Ctrl-C: recorded now (curves kept, half-written files removed), not at the next recovery.
                _abandon(job.pk)
                finished = None
                guard.interrupted = True
        finished = finished or TrainingJob.objects.filter(pk=job.pk).first()
        if finished is None:
            raise CommandError(f"Training job {job.pk} was deleted while it ran.")
        seconds = finished.duration.total_seconds() if finished.duration else time.monotonic() - started
        model = TrainedModel.objects.filter(job_id=finished.pk).first()
        self._summary(finished, model, seconds)
        if as_json:
            self._json(finished.pk, finished.status, model.key if model else None, finished.best_val_accuracy, seconds)
        if finished.status != TrainingJob.Status.SUCCEEDED:
            raise CommandError(finished.message or f"Training job {finished.pk} ended {finished.status}.")
        if guard.interrupted:
            raise CommandError(f"Interrupted: {finished.message}")

    def _say(self, text: str) -> None:
        """To stdout, or to stderr with --json; unstyled there (stderr's own style paints every line red)."""
        self.out.write(text, style_func=_plain)
        self.out.flush()  # a line per epoch is the point of --foreground, also through a pipe

    def _echo(self, line: str) -> None:
        self._say(line)

    def _summary(self, job: TrainingJob, model: TrainedModel | None, seconds: float) -> None:
        style = self.style.SUCCESS if job.status == TrainingJob.Status.SUCCEEDED else self.style.ERROR
        self._say(style(f"Job {job.pk} {job.get_status_display().lower()} after {seconds:.1f} s: {job.message}"))
        if job.best_val_accuracy is not None:
            self._say(f"  Validation accuracy: {job.best_val_accuracy:.1%}")
        if model is not None:
            self._say(f"  Model: {model.key} (usable in Classify and the API)")
        for data in job.exports.values():
            result = exporting.ExportResult.from_dict(data)
            size = f"{result.size_bytes / 1e6:.1f} MB, " if result.size_bytes else ""
            if result.message:
                line = result.message  # says the agreement with the app's model, or why the export failed
            elif result.agreement is not None:
                line = f"{result.agreement:.0%} agreement with the app's model on {result.checked} images."
            else:
                line = "not checked."
            self._say(f"  Export {result.format_name} ({size}{'usable' if result.ok else 'not usable'}): {line}")

    def _json(self, job: int, status: str, model: str | None, val_accuracy: float | None, seconds: float) -> None:
        line = {"job": job, "status": status, "model": model, "val_accuracy": val_accuracy, "seconds": seconds}
        self.stdout.write(json.dumps({**line, "seconds": round(seconds, 3)}))
        self.stdout.flush()


def _plain(text: str) -> str:
    return text


def _abandon(job_id: int) -> None:
    """A job this process will not finish: interrupted when it runs, cancelled when it never started."""
    if not background.interrupt(TrainingJob, job_id):
        queued = (TrainingJob.Status.QUEUED,)
        TrainingJob.transition(job_id, TrainingJob.Status.CANCELLED, from_=queued, message="Stopped before it started.")


def _on(value: bool) -> str:
    return "on" if value else "off"


def _help(field: str, text: str) -> str:
    """Help with the form's default, so the two never disagree."""
    return f"{text} (default {TrainingForm.base_fields[field].initial})"


def _form_data(base: str, options: dict) -> dict:
    """The form's initial values, overridden by the options given: the web page's defaults exactly."""
    data = {name: field.initial for name, field in TrainingForm.base_fields.items()}
    data["base"] = base
    data["augment"] = data.get("augment") or []
    for name in FORM_OPTIONS:
        value = options.get(name)
        if value is None:
            continue
        if name == "augment":
            value = [part.strip() for part in value.split(",") if part.strip()]
        data[name] = value
    return {name: value for name, value in data.items() if value is not None}


def _form_errors(form: TrainingForm) -> str:
    """One line per message, naming the option as typed (--fine-tune-from: ...)."""
    lines = []
    for field, messages in form.errors.items():
        for message in messages:
            lines.append(message if field == "__all__" else f"--{field.replace('_', '-')}: {message}")
    return "\n".join(lines)


def _dataset(value: str) -> Dataset:
    """By name ignoring case, else by id; unknown: the names there are, so the next try works."""
    text = " ".join(value.split())
    dataset = Dataset.objects.filter(name__iexact=text).first()
    if dataset is None and text.isdigit():
        dataset = Dataset.objects.filter(pk=int(text)).first()
    if dataset is not None:
        return dataset
    names = list(Dataset.objects.order_by(Lower("name")).values_list("name", flat=True)[: MAX_LISTED_DATASETS + 1])
    if not names:
        raise CommandError(f"No dataset {value!r}: there are no datasets yet (manage.py import_dataset creates one).")
    listed = ", ".join(names[:MAX_LISTED_DATASETS])
    more = Dataset.objects.count() - MAX_LISTED_DATASETS
    suffix = f", and {more} more" if more > 0 else ""
    raise CommandError(f"No dataset named {value!r} (or with that id). Datasets: {listed}{suffix}.")


def _base_key(name: str) -> str:
    """The zoo key (names and aliases accepted, as elsewhere); unknown or not installed: why."""
    refusal = jobs.base_refusal(name)
    if refusal:
        raise CommandError(refusal)
    try:
        return zoo.get(name).key
    except zoo.UnknownModel as exc:  # base_refusal already said so; kept for a zoo that changes
        raise CommandError(str(exc)) from None


def _user(username: str | None) -> AbstractBaseUser | None:
    if not username:
        return None
    model = get_user_model()
    try:
        return model.objects.get_by_natural_key(username)
    except model.DoesNotExist:
        raise CommandError(f"No user named {username!r}.") from None


def _page(job: TrainingJob) -> str:
    """ " Its page: /datasets/jobs/<id>/" for the sentence that introduces the job."""
    return f" Its page: {reverse('training:job_detail', args=[job.pk])}"
