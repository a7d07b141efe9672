"""Training jobs, the Django side of `training.trainer`: refuse, queue, run, cancel, export.

The order a job follows: the web process (form, API, `manage.py train`) checks the dataset and
the base (`refusals`), records the job with its configuration and the dataset's snapshot, and
queues it on the training queue once the row has committed. The training worker claims it
(`run_training_job`), trains through `trainer.run` with progress written about once a second,
creates the `TrainedModel` as soon as the model is saved (it is usable in Classify from then on),
then builds the exports, which never delay the model.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models.functions import Now
from django.utils import timezone

from classifier import inference, runtimes, zoo
from classifier import tasks as classifier_tasks
from classifier.weights import installed_filenames
from training import analysis, base_layers, continuing, exporting, outcomes, storage, trainer
from training.models import Dataset, ImportJob, TrainedModel, TrainingJob, job_folder
from webapp import background
from webapp.diskspace import DiskFull, ensure_free_space

logger = logging.getLogger(__name__)

UNEXPECTED_MESSAGE = (
    "Training stopped on an unexpected error. Try again; if it happens again, tell your administrator "
    "(the details are in the job's record in the admin)."
)
CALIBRATION_IMAGES = 200  # training images the int8 export is calibrated on


class TrainingRefused(Exception):
    """A job cannot start; str() says why and what to change."""


# --- Which bases can be trained on -----------------------------------------------------------
@dataclass(frozen=True)
class BaseOption:
    model: zoo.ZooModel
    with_head_only: bool  # only the full model's file is installed: the feature extractor is cut from it
    layers: int | None  # layers of the base without its head
    default_fine_tune_from: int | None


def base_options() -> list[BaseOption]:
    """Zoo entries a job can build on: their no-head file, or else their full file, is installed."""
    try:
        present = installed_filenames(settings.WEIGHTS_DIR)
    except OSError:
        return []
    options = []
    for model in zoo.all_models():
        has_notop = model.notop is not None and model.notop.filename in present
        if has_notop or model.top.filename in present:
            layers = base_layers.count(model)
            options.append(BaseOption(model, not has_notop, layers, base_layers.default_fine_tune_from(model)))
    return options


# --- Before queueing ---------------------------------------------------------------------------
def refusals(dataset: Dataset) -> list[str]:
    """Why this dataset cannot be trained on now, in sentences that say what to change (empty: it can)."""
    problems = []
    labels = list(dataset.labels.all())
    counts = dataset.split_counts(trainable=True)  # excluded images never train
    if len(labels) < 2:
        problems.append("A model needs at least 2 labels to choose between: add labels and images to them.")
    empty = [label.name for label in labels if counts.get(label.pk, {}).get("train", 0) == 0]
    if empty:
        names = ", ".join(f"“{name}”" for name in empty)
        problems.append(
            f"{names} {'have' if len(empty) > 1 else 'has'} no training image: add images, re-draw the splits, "
            f"or delete the label{'s' if len(empty) > 1 else ''}."
        )
    if labels and not any(row.get("validation", 0) for row in counts.values()):
        problems.append(
            "There are no validation images, so the model could not be measured: set a validation share above 0 "
            "(Edit) and re-draw the splits."
        )
    if ImportJob.objects.filter(dataset=dataset, status__in=ImportJob.ACTIVE).exists():
        problems.append("A zip import is running into this dataset: wait for it to finish, then train.")
    return problems


def base_refusal(base_key: str) -> str | None:
    """Why this base cannot be used (unknown, or no weights file installed), or None."""
    try:
        model = zoo.get(base_key)
    except zoo.UnknownModel as exc:
        return str(exc)
    if not any(option.model.key == model.key for option in base_options()):
        file = model.notop or model.top
        return (
            f"{model.name} cannot be trained on yet: its weights are not installed. An administrator can install "
            f"{file.filename} (or the full model's file) from the Models page."
        )
    return None


def start_training(
    dataset: Dataset,
    base_key: str,
    config: trainer.TrainConfig,
    user,
    parent: TrainingJob | None = None,
    *,
    start_from: TrainingJob | None = None,
    enqueue: bool = True,
) -> TrainingJob:
    """Check, record and queue a job; raises TrainingRefused with every reason at once.

    `start_from` continues from that job's model (see `continue_refusal`). `enqueue=False` records
    it without queueing: `manage.py train --foreground` runs it itself.
    """
    from training import tasks

    problems = refusals(dataset)
    refused_base = base_refusal(base_key)
    if refused_base:
        problems.append(refused_base)
    refused_start = continue_refusal(start_from, dataset, base_key) if start_from is not None else None
    if refused_start:
        problems.append(refused_start)
    try:
        config.validate()
    except trainer.TrainingError as exc:
        problems.append(str(exc))
    if not problems:
        layers = base_layers.count(zoo.get(base_key))
        if config.fine_tunes and layers is not None and config.fine_tune_from >= layers:
            problems.append(
                f"Fine-tuning must start below layer {layers}: {zoo.get(base_key).name} has {layers} layers "
                "without its head."
            )
    if problems:
        raise TrainingRefused(" ".join(problems))
    model = zoo.get(base_key)
    with transaction.atomic():
        job = TrainingJob.objects.create(
            dataset=dataset,
            created_by=user if user is not None and user.is_authenticated else None,
            parent=parent,
            start_from=start_from,
            base_key=model.key,
            base_name=model.name,
            config=config.as_dict(),
            snapshot={**dataset.snapshot(), **_start_record(start_from)},
            epochs=config.epochs,
        )
        if enqueue:
            transaction.on_commit(lambda: tasks.train(job.pk))
    return job


def train_again(job: TrainingJob, user) -> TrainingJob:
    """The same settings on the dataset as it is now (new images included); a continued job
    continues again from the same earlier model while it exists."""
    config = trainer.TrainConfig.from_dict(job.config)
    return start_training(job.dataset, job.base_key, config, user, parent=job, start_from=job.start_from)


# --- Continue training ---------------------------------------------------------------------------
def continue_refusal(earlier: TrainingJob, dataset: Dataset, base_key: str) -> str | None:
    """Why a job cannot continue from `earlier`'s model, in a sentence; None when it can.

    The trainer checks the model itself again when the job runs (`training.continuing`): its
    files may go, or the base's weights file change, while the job waits in the queue.
    """
    model = TrainedModel.objects.filter(job=earlier).first()
    name = f"job {earlier.pk}"
    if earlier.status != TrainingJob.Status.SUCCEEDED or model is None:
        return f"Only a finished job's model can be continued, and {name} has none. Start a new job instead."
    if earlier.dataset_id != dataset.pk:
        return f"{name.capitalize()} was trained on another dataset; continue it from its own dataset's jobs."
    try:
        base = zoo.get(base_key)
    except zoo.UnknownModel:
        return None  # base_refusal says it
    if base.key != earlier.base_key:
        return (
            f"{name.capitalize()} was trained on {earlier.base_name}, and a continued job keeps its base. To train "
            f"on {base.name}, start a new job with “Train a model”."
        )
    if model.input_size != base.input_size:
        return (
            f"The model of {name} takes {model.input_size}-pixel images and {base.name} now takes "
            f"{base.input_size}: its head cannot carry over. Start a new job instead."
        )
    if not model.path.is_file():
        return f"The model files of {name} are gone, so there is nothing to continue from. Start a new job instead."
    return None


def continue_training(earlier: TrainingJob, config: trainer.TrainConfig, user) -> TrainingJob:
    """A job that starts from `earlier`'s model, on the dataset as it is now (new images and labels included)."""
    return start_training(earlier.dataset, earlier.base_key, config, user, start_from=earlier)


def fine_tuned_from(job: TrainingJob) -> int | None:
    """The lowest base layer this job's model changed: its own fine-tuning, or what it continued from."""
    own = job.config.get("fine_tune_from") if job.fine_tunes else None
    inherited = job.snapshot.get("start_from", {}).get("fine_tuned_from")
    layers = [layer for layer in (own, inherited) if layer is not None]
    return min(layers) if layers else None


def _start_record(earlier: TrainingJob | None) -> dict:
    """What the job keeps of the model it continues from, so it still knows when that job is deleted."""
    if earlier is None:
        return {}
    labels = list(earlier.trained_model.labels)
    return {"start_from": {"job": earlier.pk, "labels": labels, "fine_tuned_from": fine_tuned_from(earlier)}}


def warm_start(job: TrainingJob) -> continuing.WarmStart | None:
    """The trainer's `start` for a continued job (its earlier model is read, and checked, when it runs)."""
    record = job.snapshot.get("start_from")
    if not record:
        return None
    return continuing.WarmStart(
        model_path=job_folder(record["job"]) / "model.keras",
        labels=tuple(record["labels"]),
        fine_tuned_from=record.get("fine_tuned_from"),
        name=f"job {record['job']}",
    )


def cancel(job: TrainingJob) -> bool:
    """A queued job is cancelled at once; a running one stops within a batch. True when cancelled at once."""
    return job.request_cancel("Cancelled before it started.")


# --- In the training worker --------------------------------------------------------------------
class _Reporter:
    """The trainer's callbacks: progress about once a second, every epoch at once, cancel noticed.

    `echo`, when given, also receives a line per phase and per epoch (the foreground command prints them).
    """

    def __init__(self, job: TrainingJob, echo: Callable[[str], None] | None = None) -> None:
        self.job = job
        self.echo = echo
        self.write = background.Progress(TrainingJob, job.pk)
        self.history: list[dict] = list(job.history)
        self.stop = False
        self.lost = False

    def progress(self, event: trainer.ProgressEvent) -> None:
        if self.echo is not None and event.phase != self.job.phase:
            self.echo(f"{TrainingJob.PHASES.get(event.phase, event.phase)}…")
        self._write(
            force=event.phase != self.job.phase,
            phase=event.phase,
            percent=event.percent,
            eta_seconds=event.eta_seconds,
            epoch=event.epoch,
            epochs=event.epochs if event.epochs is not None else self.job.epochs,
            batch=event.batch,
            batches=event.batches,
        )
        self.job.phase = event.phase

    def epoch(self, result: trainer.EpochResult) -> None:
        if self.echo is not None:
            val = f", validation accuracy {result.val_accuracy:.1%}" if result.val_accuracy is not None else ""
            self.echo(
                f"  {result.phase} epoch {result.epoch}: loss {result.loss:.4f}, accuracy {result.accuracy:.1%}{val} "
                f"({result.seconds:.1f} s)"
            )
        self.history.append(result.as_dict())
        best = max((h["val_accuracy"] for h in self.history if h.get("val_accuracy") is not None), default=None)
        self._write(force=True, history=self.history, best_val_accuracy=best)

    def should_stop(self) -> bool:
        return self.stop

    def _write(self, force: bool = False, **fields) -> None:
        if self.stop:
            return
        try:
            self.write(force=force, **fields)
        except background.Cancelled:
            self.stop = True
        except background.JobLost:
            self.stop = self.lost = True


def training_data(job: TrainingJob) -> tuple[trainer.TrainData, list[str]]:
    """The snapshot as the trainer's examples; images deleted since the job was queued are skipped."""
    labels = job.snapshot.get("labels", [])
    index = {label_id: i for i, (label_id, _) in enumerate(labels)}
    folder = job.dataset.folder
    splits: dict[str, list[trainer.Example]] = {"train": [], "validation": [], "test": []}
    missing = 0
    for image_id, label_id, split, sha, fmt in job.snapshot.get("images", []):
        path = storage.image_path(folder, sha, fmt)
        if label_id not in index or not path.exists():
            missing += 1
            continue
        splits[split].append(trainer.Example(path, index[label_id], image_id))
    notes = []
    if missing:
        notes.append(f"{missing} image{'s' if missing != 1 else ''} deleted since the job was queued were skipped.")
    data = trainer.TrainData([name for _, name in labels], splits["train"], splits["validation"], splits["test"])
    return data, notes


def run_training_job(job_id: int, echo: Callable[[str], None] | None = None) -> TrainingJob | None:
    """The worker's whole job: claim, train, make the model usable, export, record. Never raises.

    `echo` receives a line per phase and epoch (for `manage.py train --foreground`).
    """
    # Claimed first, TensorFlow imported after (seconds, in a new worker): the page says "running" at once.
    if not TrainingJob.claim(job_id):
        logger.info("Training job %s is not queued any more; nothing to do.", job_id)
        return None
    job = TrainingJob.objects.select_related("dataset").get(pk=job_id)
    reporter = _Reporter(job, echo)
    try:
        with background.Heartbeat(TrainingJob, job.pk):
            job.versions = trainer.versions()
            TrainingJob.objects.filter(pk=job.pk).update(versions=job.versions)
            _train(job, reporter, job.folder)
    except trainer.Cancelled:
        if reporter.lost:
            _release(job)
        else:
            _finish_unsuccessful(job, TrainingJob.Status.CANCELLED, _cancel_message(reporter))
    except trainer.TrainingError as exc:
        _finish_unsuccessful(job, TrainingJob.Status.FAILED, str(exc))
    except Exception:
        logger.exception("Training job %s failed", job.pk)
        _finish_unsuccessful(job, TrainingJob.Status.FAILED, UNEXPECTED_MESSAGE, detail=traceback.format_exc())
    return TrainingJob.objects.filter(pk=job.pk).first()


def _train(job: TrainingJob, reporter: _Reporter, workdir: Path) -> None:
    base_model = zoo.get(job.base_key)
    try:
        # The model and its three exports take about four times the base's weights.
        ensure_free_space(workdir.parent, int(4 * (base_model.size_mb or 100) * 1024 * 1024))
    except DiskFull as exc:
        logger.error("Training job %s not started: %s", job.pk, exc)
        raise trainer.TrainingError(
            "The server's disk is too full to keep a trained model. Tell your administrator (the server needs "
            "free disk space), then train again."
        ) from None
    inference.configure_tensorflow()
    # The server's budget applies when the job runs (it may differ from when it was queued).
    config = replace(trainer.TrainConfig.from_dict(job.config), memory_mb=settings.TRAINING_MEMORY_MB)
    data, notes = training_data(job)
    base = trainer.zoo_base(base_model, settings.WEIGHTS_DIR)
    result = trainer.run(
        config,
        base,
        data,
        workdir,
        on_progress=reporter.progress,
        on_epoch=reporter.epoch,
        should_stop=reporter.should_stop,
        lite=lite_features(base_model),
        start=warm_start(job),
    )
    _keep_outcomes(workdir, data, result)
    validation = result.evaluation.get("validation", {})
    notes = notes + list(result.notes)
    if base.source:
        notes.insert(0, f"Base: {base.source}.")
    with transaction.atomic():
        done = TrainingJob.objects.filter(pk=job.pk, status=TrainingJob.Status.RUNNING).update(
            evaluation=result.evaluation,
            notes=notes,
            batch_size_used=result.batch_size,
            strategy=result.strategy,
            timings=result.timings,
            best_val_accuracy=validation.get("accuracy"),
            model_ready_at=timezone.now(),
            phase="exporting",
            heartbeat_at=Now(),
        )
        if not done:  # marked interrupted elsewhere, or deleted, meanwhile: nothing to publish
            reporter.lost = True
            raise trainer.Cancelled
        TrainedModel.objects.create(
            job=job,
            dataset=job.dataset,
            name=f"{job.dataset.name} · {job.base_name} (job {job.pk})",
            base_key=job.base_key,
            input_size=result.input_size,
            labels=result.labels,
            val_accuracy=validation.get("accuracy"),
        )
        # The import worker converts the new model to LiteRT and checks it on these validation
        # images; the web serves it with TensorFlow until then.
        classifier_tasks.schedule_conversions()
    exports = _build_exports(job, result, data, reporter)
    accuracy = validation.get("accuracy")
    message = (
        f"The model is ready: {accuracy:.0%} of the validation images right ({validation['images']} images)."
        if accuracy is not None
        else "The model is ready."
    )
    if reporter.stop and not reporter.lost:
        message += " Building the exports was cancelled."
    if TrainingJob.transition(job.pk, TrainingJob.Status.SUCCEEDED, message=message, exports=exports, percent=100):
        analysis.request_after_training(job.pk)  # suspected label errors and near-duplicates, on the main worker


def _keep_outcomes(workdir: Path, data: trainer.TrainData, result: trainer.TrainResult) -> None:
    """Each image's prediction and features, beside the model (see training.outcomes)."""
    splits = {"train": data.train, "validation": data.validation, "test": data.test}
    ids = {split: [e.image_id for e in examples] for split, examples in splits.items()}
    truth = {split: [e.label for e in examples] for split, examples in splits.items()}
    outcomes.save_outcomes(workdir, ids, truth, result.probabilities)
    outcomes.save_features(workdir, ids, result.features)


def lite_features(base_model: zoo.ZooModel) -> trainer.LiteFeatures:
    """Whether this job's features may come from LiteRT, and where its converted base is kept.

    The converted base (no head, preprocessing and pooling included) sits in DATA_DIR/lite/features,
    one folder per base, named by the weights file's SHA-256 and the TensorFlow version: a job on
    the same base reuses it, a replaced weights file or a TensorFlow upgrade converts again.
    """
    if getattr(settings, "INFERENCE_RUNTIME", runtimes.LITERT) == runtimes.TENSORFLOW:
        return trainer.LiteFeatures.off("LiteRT is turned off on this server.")
    found = trainer.base_file(base_model, settings.WEIGHTS_DIR)
    try:
        weights_id = runtimes.weights_hash(found[0]) if found is not None else ""
    except OSError:
        weights_id = ""
    if not weights_id:
        return trainer.LiteFeatures.off("The base's weights file cannot be read.")
    threads = settings.TF_INTRA_OP_THREADS or runtimes.cpu_count()  # the training worker owns the cores
    return trainer.LiteFeatures(runtimes.lite_dir() / "features", weights_id, threads=threads)


def _build_exports(job: TrainingJob, result: trainer.TrainResult, data: trainer.TrainData, reporter) -> dict:
    """Every export format, each checked against the app's model on the validation images."""
    exports: dict[str, dict] = {}
    if reporter.stop:
        return exports
    size = result.input_size
    try:
        check = trainer.load_images(data.validation, size)
        rng = np.random.default_rng(0)
        chosen = sorted(rng.permutation(len(data.train))[:CALIBRATION_IMAGES])
        calibration = trainer.load_images([data.train[i] for i in chosen], size)
    except trainer.TrainingError as exc:
        return {fmt: _export_failure(fmt, str(exc)) for fmt in exporting.FORMATS}
    for fmt in exporting.FORMATS:
        if reporter.stop:
            break
        reporter.progress(trainer.ProgressEvent(phase="exporting", percent=99.0))  # the model is usable already
        outcome = exporting.build_export(
            fmt,
            result.model_path,
            result.labels,
            job.folder / "exports",
            name=f"{job.dataset.name} {job.base_name} job {job.pk}",
            calibration=calibration,
            check=check,
            reference=result.validation_probabilities,
        )
        exports[fmt] = outcome.as_dict()
        TrainingJob.objects.filter(pk=job.pk).update(exports=exports, heartbeat_at=Now())
    return exports


def _export_failure(fmt: str, message: str) -> dict:
    return exporting.ExportResult(fmt, None, 0, 0, 0, None, False, message).as_dict()


def _cancel_message(reporter: _Reporter) -> str:
    done = len(reporter.history)
    if not done:
        return "Cancelled while it ran, before the first epoch ended."
    last = reporter.history[-1]
    phase = "fine-tuning" if last["phase"] == trainer.PHASE_FINE_TUNE else "transfer learning"
    return f"Cancelled during {phase}, after {done} epoch{'s' if done != 1 else ''}; the curves so far are kept."


def _finish_unsuccessful(job: TrainingJob, status: str, message: str, detail: str = "") -> None:
    TrainingJob.transition(job.pk, status, message=message, detail=detail)
    _release(job)


def _release(job: TrainingJob) -> None:
    fresh = TrainingJob.objects.filter(pk=job.pk).first()
    if fresh is not None:
        fresh.release_files()


def clean_abandoned_folders() -> int:
    """Remove job folders nothing owns any more; returns how many went.

    A worker stopped with SIGTERM records its job as interrupted but cannot wait for the job's
    thread to let go of its files; a folder of a job that no longer exists, or of an ended job
    without a model, is removed here (the training worker runs this when it starts). Folders of
    active jobs and of models are never touched.
    """
    root = Path(settings.DATA_DIR) / "models"
    if not root.is_dir():
        return 0
    ids = [int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit()]
    statuses = dict(TrainingJob.objects.filter(pk__in=ids).values_list("pk", "status"))
    with_model = set(TrainedModel.objects.filter(job_id__in=ids).values_list("job_id", flat=True))
    removed = 0
    for job_id in ids:
        if statuses.get(job_id) in TrainingJob.ACTIVE or job_id in with_model:
            continue
        storage.delete_folder(root / str(job_id))
        removed += 1
    return removed
