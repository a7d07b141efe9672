"""Datasets: labelled image collections, and the zip imports that fill them.

Rows are shaped for the training work that follows: a `DatasetImage` never changes content (its
file is named by its SHA-256), so a training job can snapshot a dataset as (image id, label id,
split, sha256, format) rows (`Dataset.snapshot`) and rely on them until an image is deleted.
"""

from __future__ import annotations

from pathlib import Path

from django.apps import apps
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.db.models import Count, F, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce, Lower, Trim
from django.db.models.signals import post_delete, pre_delete
from django.dispatch import receiver
from django.urls import reverse
from django.utils import timezone

from classifier import installs
from training import archives, splits, storage
from training.names import DEFAULT_MAX_LABELS, InvalidName, clean_label_name, label_key, labels_full_message
from webapp.background import Job, JobStatus


def max_labels() -> int:
    """MAX_LABELS_PER_DATASET, read at call time (tests and deployments change it)."""
    return int(getattr(settings, "MAX_LABELS_PER_DATASET", DEFAULT_MAX_LABELS))


class Split(models.TextChoices):
    """Where an image serves during training; the values are those of `training.splits`."""

    TRAIN = splits.TRAIN, "Train"
    VALIDATION = splits.VALIDATION, "Validation"
    TEST = splits.TEST, "Test"


class DatasetQuerySet(models.QuerySet):
    def with_counts(self) -> DatasetQuerySet:
        """`label_count` and `image_count` per dataset, as subqueries: two Count() joins would
        multiply every label by every image."""
        return self.annotate(label_count=_count_per_dataset("Label"), image_count=_count_per_dataset("DatasetImage"))


def _count_per_dataset(model_name: str) -> Coalesce:
    model = apps.get_model("training", model_name)
    rows = model.objects.filter(dataset=OuterRef("pk")).order_by().values("dataset").annotate(n=Count("pk"))
    return Coalesce(Subquery(rows.values("n")), 0)


class Dataset(models.Model):
    """A named collection of labelled images that a team trains models on."""

    name = models.CharField(max_length=100, help_text="Shown in lists; unique, whatever the case.")
    description = models.TextField(blank=True, help_text="What the images show and where they come from.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="datasets",
        verbose_name="created by",
        help_text="The owner: with the 'add dataset' permission, they manage this dataset.",
    )
    validation_percent = models.PositiveSmallIntegerField(
        "validation share (%)", default=20, help_text="Share of each label kept aside to measure a model."
    )
    test_percent = models.PositiveSmallIntegerField(
        "test share (%)", default=0, help_text="Share of each label kept for a final test; 0 for none."
    )
    split_seed = models.PositiveIntegerField(
        "split seed", default=0, help_text="Re-drawing the splits with another seed deals the images out anew."
    )
    # The shares the images were dealt out with, kept when the shares change without a re-draw;
    # empty while the splits follow the shares above (see `splits_outdated`).
    drawn_validation_percent = models.PositiveSmallIntegerField(
        "validation share of the splits (%)", null=True, blank=True, editable=False
    )
    drawn_test_percent = models.PositiveSmallIntegerField(
        "test share of the splits (%)", null=True, blank=True, editable=False
    )
    created_at = models.DateTimeField("created", default=timezone.now)
    updated_at = models.DateTimeField("last change", default=timezone.now, db_index=True)

    objects = DatasetQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            # Forms and the admin report it as "a dataset with this name already exists".
            models.UniqueConstraint(
                Lower("name"),
                name="dataset_name_unique_ci",
                violation_error_message="A dataset with this name already exists. Choose another name.",
            ),
            models.CheckConstraint(
                condition=~Q(name="") & Q(name=Trim("name")),
                name="dataset_name_not_blank",
                violation_error_message="A dataset name cannot be empty or start or end with spaces.",
            ),
            # splits.Shares refuses other values; this keeps the rows honest too.
            models.CheckConstraint(
                condition=Q(validation_percent__lte=90)
                & Q(test_percent__lte=90)
                & Q(validation_percent__lte=90 - F("test_percent")),
                name="dataset_shares_leave_training",
                violation_error_message=(
                    "Validation and test together can be at most 90 percent: training needs images too."
                ),
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("training:dataset_detail", args=[self.pk])

    @property
    def folder(self) -> Path:
        """Where this dataset's files live: DATASETS_DIR/<id>/."""
        return Path(settings.DATASETS_DIR) / str(self.pk)

    @property
    def shares(self) -> splits.Shares:
        return splits.Shares(validation=self.validation_percent, test=self.test_percent)

    @staticmethod
    def can_create(user) -> bool:
        return bool(user.is_active and (user.is_staff or user.has_perm("training.add_dataset")))

    def can_be_changed_by(self, user) -> bool:
        """Staff manage every dataset; people with 'add dataset' manage the ones they created."""
        if not (user.is_authenticated and user.is_active):
            return False
        return user.is_staff or (self.created_by_id == user.pk and user.has_perm("training.add_dataset"))

    def touch(self) -> None:
        """Record a change of content (images added, moved, removed) for the datasets list."""
        self.updated_at = timezone.now()
        Dataset.objects.filter(pk=self.pk).update(updated_at=self.updated_at)

    def active_import(self) -> ImportJob | None:
        return self.import_jobs.filter(status__in=ImportJob.ACTIVE).first()

    def label_key_map(self) -> dict[str, str]:
        """label_key(name) -> name, for matching folder names and form input to existing labels."""
        return {label_key(name): name for name in self.labels.values_list("name", flat=True)}

    def split_counts(self, *, trainable: bool = False) -> dict[int, dict[str, int]]:
        """Images per label id and split, in one query; `trainable`: only those jobs train on (not excluded)."""
        counts: dict[int, dict[str, int]] = {}
        images = self.images.filter(excluded=False) if trainable else self.images
        rows = images.values("label_id", "split").annotate(n=Count("id")).order_by()
        for row in rows:
            counts.setdefault(row["label_id"], dict.fromkeys(splits.SPLITS, 0))[row["split"]] = row["n"]
        return counts

    def redraw_splits(self, seed: int) -> dict[str, int]:
        """Deal every image out again with `seed` and the current shares; returns images per split.

        One transaction; afterwards the splits follow the shares again.
        """
        with transaction.atomic():
            by_label: dict[int, list[str]] = {}
            for label_id, sha in self.images.values_list("label_id", "sha256"):
                by_label.setdefault(label_id, []).append(sha)
            assignment = splits.draw(by_label, shares=self.shares, seed=seed)
            for split in splits.SPLITS:
                hashes = [sha for sha, s in assignment.items() if s == split]
                for start in range(0, len(hashes), 500):
                    self.images.filter(sha256__in=hashes[start : start + 500]).update(split=split)
            self.split_seed = seed
            self.updated_at = timezone.now()
            self.save(update_fields=["split_seed", "updated_at"])
            self.splits_follow_shares()
        return {s: sum(1 for v in assignment.values() if v == s) for s in splits.SPLITS}

    @property
    def drawn_shares(self) -> splits.Shares:
        """The shares the images were dealt out with."""
        if self.drawn_validation_percent is None or self.drawn_test_percent is None:
            return self.shares
        return splits.Shares(validation=self.drawn_validation_percent, test=self.drawn_test_percent)

    def keep_splits_drawn_with(self, old: splits.Shares) -> None:
        """Record that the shares changed from `old` while the images kept their splits.

        An empty dataset has nothing to re-draw: its first images follow the new shares. The shares
        the splits were first drawn with are kept through several changes; changing back clears them.
        """
        drawn = self.drawn_shares if self.drawn_validation_percent is not None else old
        if drawn == self.shares or not self.images.exists():
            self.splits_follow_shares()
            return
        self.drawn_validation_percent, self.drawn_test_percent = drawn.validation, drawn.test
        Dataset.objects.filter(pk=self.pk).update(
            drawn_validation_percent=drawn.validation, drawn_test_percent=drawn.test
        )

    def splits_follow_shares(self) -> None:
        """The images are dealt out with the current shares: after a re-draw, or into an empty dataset."""
        self.drawn_validation_percent = self.drawn_test_percent = None
        Dataset.objects.filter(pk=self.pk).update(drawn_validation_percent=None, drawn_test_percent=None)

    @property
    def splits_outdated(self) -> bool:
        """Whether the images were dealt out with other shares than the dataset now asks for."""
        return self.drawn_shares != self.shares

    def outdated_splits_note(self) -> str:
        """What the dataset's pages say while the splits follow other shares than it asks for; "" otherwise."""
        if not self.splits_outdated:
            return ""
        drawn, now = self.drawn_shares, self.shares
        if drawn.test == now.test:
            was, asks = drawn.text(), now.text() if now.test else f"{now.validation}%"
        else:
            was, asks = drawn.text(with_test=True), now.text(with_test=True)
        return f"The splits were drawn with {was}; the dataset now asks for {asks}: re-draw to apply it."

    def snapshot(self) -> dict:
        """What a training job records of the dataset it trains on, JSON-ready.

        {"labels": [[label id, name], ...] in the model's output order (by name, ignoring case),
         "images": [[image id, label id, split, sha256, format], ...]}; excluded images are left out.
        """
        labels = [[label.pk, label.name] for label in sorted(self.labels.all(), key=lambda la: label_key(la.name))]
        trainable = self.images.filter(excluded=False).order_by("id")
        images = [list(row) for row in trainable.values_list("id", "label_id", "split", "sha256", "format")]
        return {"labels": labels, "images": images}

    @staticmethod
    def can_be_seen_by(user) -> bool:
        """Everyone logged in may browse datasets, and use the models trained on them."""
        return bool(user is not None and user.is_authenticated and user.is_active)

    def can_train(self, user) -> bool:
        """Who may start training on this dataset: those who manage it, or hold 'add training job'."""
        return self.can_be_changed_by(user) or bool(
            user.is_authenticated and user.is_active and user.has_perm("training.add_trainingjob")
        )

    def active_training(self) -> TrainingJob | None:
        return self.training_jobs.filter(status__in=TrainingJob.ACTIVE).first()


class Label(models.Model):
    """A class of the dataset: the answer a trained model gives for a picture."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="labels")
    name = models.CharField(
        max_length=64,
        help_text="Becomes the folder name in exports and the class name of trained models.",
    )
    description = models.CharField(max_length=500, blank=True, help_text="Optional: what belongs in this label.")
    created_at = models.DateTimeField("created", default=timezone.now)
    import_job = models.ForeignKey(
        "ImportJob",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        editable=False,
        related_name="created_labels",
        help_text="The zip import that created it. Until that import has succeeded the label is provisional: "
        "it goes if the import fails (see training.imports).",
    )

    class Meta:
        ordering = ["dataset", Lower("name")]
        constraints = [
            # Zip imports and forms match names with label_key(); this backs them in the database
            # (SQLite's LOWER folds ASCII only, Python's casefold the rest).
            models.UniqueConstraint(
                "dataset",
                Lower("name"),
                name="label_name_unique_in_dataset_ci",
                violation_error_message="This dataset already has a label with this name.",
            ),
            models.CheckConstraint(
                condition=~Q(name="") & Q(name=Trim("name")),
                name="label_name_not_blank",
                violation_error_message="A label name cannot be empty or start or end with spaces.",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        try:
            self.name = clean_label_name(self.name or "")
        except InvalidName as error:
            raise ValidationError({"name": str(error)}) from None
        if self.dataset_id:
            others = self.dataset.labels.exclude(pk=self.pk).values_list("name", flat=True)
            if label_key(self.name) in {label_key(n) for n in others}:
                raise ValidationError({"name": "This dataset already has a label with this name."})
            if self._state.adding and len(others) >= max_labels():
                raise ValidationError(labels_full_message(len(others)))


class DatasetImage(models.Model):
    """One picture in one label. Its content never changes: the file is named by its SHA-256."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="images")
    label = models.ForeignKey(Label, on_delete=models.CASCADE, related_name="images")
    sha256 = models.CharField(
        "SHA-256", max_length=64, help_text="Hash of the file's bytes; the same picture is never stored twice."
    )
    original_name = models.CharField(
        "file name", max_length=255, help_text="The name the file had when it was added; used again on export."
    )
    format = models.CharField(max_length=10, help_text="Decoded image format (JPEG, PNG, ...), not the extension.")
    width = models.PositiveIntegerField(help_text="Pixels, after the camera's rotation is applied.")
    height = models.PositiveIntegerField(help_text="Pixels, after the camera's rotation is applied.")
    size_bytes = models.PositiveBigIntegerField("size (bytes)", default=0)
    split = models.CharField(max_length=10, choices=Split.choices, default=Split.TRAIN)
    excluded = models.BooleanField(
        "excluded from training",
        default=False,
        help_text="Kept in the dataset and shown, but skipped by training jobs (reversible).",
    )
    added_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name="added by",
    )
    created_at = models.DateTimeField("added", default=timezone.now)
    import_job = models.ForeignKey(
        "ImportJob",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        editable=False,
        related_name="added_images",
        help_text="The zip import that added it. Until that import has succeeded the row is provisional: "
        "it goes if the import fails (see training.imports).",
    )

    class Meta:
        ordering = ["id"]
        verbose_name = "dataset image"
        constraints = [
            # Duplicate detection in imports and uploads relies on it; files are named by the hash.
            models.UniqueConstraint(
                fields=["dataset", "sha256"],
                name="image_sha256_unique_in_dataset",
                violation_error_message="This picture is already in the dataset.",
            ),
            models.CheckConstraint(condition=Q(split__in=[s.value for s in Split]), name="image_split_valid"),
        ]
        indexes = [
            # The dataset page filters the grid by label and split.
            models.Index(fields=["dataset", "label", "split"], name="image_grid_filter"),
            models.Index(fields=["original_name"], name="image_original_name"),
        ]

    def __str__(self) -> str:
        return self.original_name

    def get_absolute_url(self) -> str:
        return reverse("training:image_detail", args=[self.pk])

    def clean(self) -> None:
        if self.label_id and self.dataset_id and self.label.dataset_id != self.dataset_id:
            raise ValidationError({"label": "Choose a label of the same dataset."})

    @property
    def folder(self) -> Path:
        return Path(settings.DATASETS_DIR) / str(self.dataset_id)

    @property
    def path(self) -> Path:
        return storage.image_path(self.folder, self.sha256, self.format)

    @property
    def thumbnail_path(self) -> Path:
        return storage.thumbnail_path(self.folder, self.sha256)


@receiver(post_delete, sender=DatasetImage)
def _delete_image_files(sender, instance: DatasetImage, **kwargs) -> None:
    """Files go with the row (also for bulk and admin deletes), once the delete has committed."""
    folder, sha, fmt = instance.folder, instance.sha256, instance.format
    transaction.on_commit(lambda: storage.delete_image_files(folder, sha, fmt))


@receiver(post_delete, sender=Dataset)
def _delete_dataset_folder(sender, instance: Dataset, **kwargs) -> None:
    folder = instance.folder
    transaction.on_commit(lambda: storage.delete_folder(folder))


class ImportJob(Job):
    """A zip import run by the worker. The page polls this row; the worker writes it."""

    INTERRUPTED_MESSAGE = (
        "The import was interrupted (the worker stopped while it ran), so it was undone: nothing was "
        "imported. Upload the zip again to retry."
    )
    STATUS_WORDS = {
        JobStatus.QUEUED: "Waiting for the worker",
        JobStatus.RUNNING: "Importing",
        JobStatus.SUCCEEDED: "Finished",
    }

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="import_jobs")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    archive_name = models.CharField("zip file", max_length=255, help_text="The name of the uploaded zip.")
    archive_path = models.CharField(
        max_length=500, blank=True, help_text="Where the upload waits for the worker; removed when the job ends."
    )
    archive_size = models.PositiveBigIntegerField("zip size (bytes)", default=0)
    total = models.PositiveIntegerField(default=0, help_text="Files in label folders to look at.")
    done = models.PositiveIntegerField(default=0, help_text="Files looked at so far.")
    report = models.JSONField(
        default=dict, blank=True, help_text="Per label: added, duplicates, rejected with reasons."
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "zip import"
        constraints = [
            # One import at a time per dataset: views and the admin turn the IntegrityError into
            # "an import is already running"; duplicate detection relies on it.
            models.UniqueConstraint(
                fields=["dataset"],
                condition=Q(status__in=["queued", "running"]),
                name="import_one_active_per_dataset",
                violation_error_message="An import is already running for this dataset.",
            ),
            models.CheckConstraint(condition=Q(done__lte=F("total")), name="import_done_within_total"),
            models.CheckConstraint(condition=Q(status__in=JobStatus.values), name="import_status_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.archive_name} → {self.dataset}"

    def release_files(self) -> None:
        """The zip goes, the rows the unfinished import committed go, then the files its journal lists."""
        from training import imports

        imports.remove_archive(self.archive_path)
        imports.discard_rows(self.pk)
        imports.undo_import_files(self)

    @property
    def outcome(self) -> str:
        """The job's sentence for lists; a finished import's is rebuilt from its report, so rows written
        before the wording changed no longer promise "reasons below" where no reasons are shown."""
        if self.status == self.Status.SUCCEEDED and self.report:
            return archives.summary(self.report)
        return self.message

    @property
    def percent(self) -> int:
        if self.status == self.Status.SUCCEEDED:
            return 100
        return int(self.done * 100 / self.total) if self.total else 0


@receiver(pre_delete, sender=ImportJob)
def _discard_rows_of_unfinished_import(sender, instance: ImportJob, **kwargs) -> None:
    """Rows an unfinished import committed stay provisional only while they name it: they go first.

    A succeeded job's rows stay and forget the job (SET_NULL). The status is read from the row: the
    instance being deleted may be older than the job's last move.
    """
    status = ImportJob.objects.filter(pk=instance.pk).values_list("status", flat=True).first()
    if status is not None and status != ImportJob.Status.SUCCEEDED:
        from training import imports

        imports.discard_rows(instance.pk)


def job_folder(job_id: int) -> Path:
    return Path(settings.DATA_DIR) / "models" / str(job_id)


class TrainingJob(Job):
    """Transfer learning (and optional fine-tuning) of one base on one dataset, run by the training worker.

    The row is the job's whole record: the configuration and the dataset snapshot it trained on
    (so "Train again" and a later audit know exactly what ran), the progress the page polls,
    the curves, the evaluation and the exports.
    """

    INTERRUPTED_MESSAGE = (
        "Training was interrupted: the worker stopped while it ran. The curves so far are kept; press "
        "“Train again” to start over."
    )
    STATUS_WORDS = {JobStatus.QUEUED: "Queued", JobStatus.RUNNING: "Training", JobStatus.SUCCEEDED: "Finished"}
    PHASES = {
        "preparing": "Preparing",
        "decoding": "Reading images",
        "features": "Computing features",
        "transfer": "Transfer learning",
        "fine-tune": "Fine-tuning",
        "evaluating": "Evaluating",
        "saving": "Saving the model",
        "exporting": "Building exports",
    }

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="training_jobs")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
        verbose_name="started by",
    )  # fmt: skip
    parent = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="children",
        help_text="The job this one was started again from.",
    )  # fmt: skip
    start_from = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="continued_by",
        verbose_name="continued from",
        help_text="Continue training: the earlier job whose model (head and fine-tuned layers) this one starts from.",
    )  # fmt: skip
    base_key = models.CharField("base model", max_length=100, help_text="Zoo key of the pretrained base.")
    base_name = models.CharField(max_length=200)
    config = models.JSONField(default=dict, help_text="The full configuration, as the trainer received it.")
    snapshot = models.JSONField(default=dict, help_text="Labels and images (id, label, split, hash) it trains on.")
    versions = models.JSONField(default=dict, blank=True, help_text="Python, TensorFlow, Keras, NumPy versions.")
    phase = models.CharField(max_length=20, blank=True)
    percent = models.FloatField(default=0)
    epoch = models.PositiveIntegerField(null=True, blank=True)
    epochs = models.PositiveIntegerField(null=True, blank=True)
    batch = models.PositiveIntegerField(null=True, blank=True)
    batches = models.PositiveIntegerField(null=True, blank=True)
    eta_seconds = models.FloatField(null=True, blank=True)
    history = models.JSONField(default=list, blank=True, help_text="Per epoch: phase, loss, accuracy, val_*, seconds.")
    notes = models.JSONField(default=list, blank=True, help_text="What the job changed or chose, in sentences.")
    batch_size_used = models.PositiveIntegerField(null=True, blank=True)
    strategy = models.JSONField(default=dict, blank=True, help_text="Caches and paths the trainer used.")
    timings = models.JSONField(default=dict, blank=True)
    evaluation = models.JSONField(default=dict, blank=True, help_text="Per split: accuracy, per-label scores, ...")
    exports = models.JSONField(default=dict, blank=True, help_text="Per format: file, size, agreement, message.")
    best_val_accuracy = models.FloatField(null=True, blank=True)
    model_ready_at = models.DateTimeField(null=True, blank=True, help_text="When the model became usable.")

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "training job"
        indexes = [
            # The datasets page lists its jobs, newest first; the queue position counts queued jobs.
            models.Index(fields=["dataset", "-created_at"], name="trainingjob_dataset_recent"),
            models.Index(fields=["status", "created_at"], name="trainingjob_queue"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=JobStatus.values), name="trainingjob_status_valid"),
        ]

    def __str__(self) -> str:
        return f"Job {self.pk}: {self.base_name} on {self.dataset}"

    def get_absolute_url(self) -> str:
        return reverse("training:job_detail", args=[self.pk])

    @property
    def folder(self) -> Path:
        """Where this job's files live (its model, exports, temporary files): DATA_DIR/models/<job id>/."""
        return job_folder(self.pk)

    def release_files(self) -> None:
        """A job that will not finish keeps its curves but not its half-written files."""
        if not TrainedModel.objects.filter(job_id=self.pk).exists():
            storage.delete_folder(self.folder)

    def can_be_changed_by(self, user) -> bool:
        """Cancel, delete, train again: who started it, or who manages the dataset."""
        if not (user.is_authenticated and user.is_active):
            return False
        return user.is_staff or self.created_by_id == user.pk or self.dataset.can_be_changed_by(user)

    @property
    def phase_text(self) -> str:
        return self.PHASES.get(self.phase, self.phase.capitalize())

    @property
    def worker_host(self) -> str:
        """The machine whose training worker ran the job (the host part of `worker`)."""
        return self.worker.partition(":")[0]

    @property
    def labels(self) -> list[str]:
        return [name for _, name in self.snapshot.get("labels", [])]

    @property
    def image_count(self) -> int:
        return len(self.snapshot.get("images", []))

    def queue_position(self) -> int | None:
        """1 for the next job to start; None unless queued."""
        if self.status != JobStatus.QUEUED:
            return None
        earlier = TrainingJob.objects.filter(status=JobStatus.QUEUED).filter(
            Q(created_at__lt=self.created_at) | Q(created_at=self.created_at, pk__lt=self.pk)
        )
        return earlier.count() + 1

    @property
    def fine_tunes(self) -> bool:
        return bool(self.config.get("fine_tune_epochs")) and self.config.get("fine_tune_from") is not None


class TrainedModel(models.Model):
    """A model a job produced: it classifies in the Classify page and the API as `trained-<id>`."""

    job = models.OneToOneField(TrainingJob, on_delete=models.CASCADE, related_name="trained_model")
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="trained_models")
    name = models.CharField(max_length=200, help_text="Shown in the model picker.")
    base_key = models.CharField("base model", max_length=100)
    input_size = models.PositiveIntegerField(help_text="Pixels per side the model takes.")
    labels = models.JSONField(help_text="Label names in the model's output order, as typed in the dataset.")
    val_accuracy = models.FloatField("validation accuracy", null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "trained model"

    def __str__(self) -> str:
        return self.name

    @property
    def key(self) -> str:
        """The catalog key: its own key space, so no name a user types shadows a zoo model."""
        return f"trained-{self.pk}"

    @property
    def path(self) -> Path:
        return job_folder(self.job_id) / "model.keras"


@receiver(post_delete, sender=TrainingJob)
def _delete_job_files(sender, instance: TrainingJob, **kwargs) -> None:
    """The model, exports and any temporary files go with the job, once the delete has committed."""
    folder = instance.folder
    transaction.on_commit(lambda: storage.delete_folder(folder))


@receiver(post_delete, sender=TrainedModel)
def _forget_warm_model(sender, instance: TrainedModel, **kwargs) -> None:
    """This process's warm copy of a deleted model goes too (others find its files gone)."""
    key = instance.key
    transaction.on_commit(lambda: installs.forget_warm(key))


class ImageChange(models.Model):
    """One change to one dataset image: who, when, from what to what; undone from the history.

    `before` and `after` hold what the action changed ({"label": id, "label_name": ...},
    {"split": ...}, {"excluded": ...}); a deletion keeps in `before` everything needed to put
    the image back (its row's fields; its files wait in the dataset's trash folder). Changes made
    together (one selection) share a `batch`.
    """

    class Action(models.TextChoices):
        MOVE = "move", "moved to another label"
        SPLIT = "split", "moved to another split"
        EXCLUDE = "exclude", "excluded from training"
        INCLUDE = "include", "included in training again"
        DELETE = "delete", "deleted"
        ADD = "add", "added"

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="changes")
    image = models.ForeignKey(
        DatasetImage, on_delete=models.SET_NULL, null=True, blank=True, related_name="changes",
        help_text="Empty once the image is deleted.",
    )  # fmt: skip
    sha256 = models.CharField("SHA-256", max_length=64, help_text="The picture, also after a deletion.")
    original_name = models.CharField("file name", max_length=255)
    action = models.CharField(max_length=10, choices=Action.choices)
    before = models.JSONField(default=dict, blank=True)
    after = models.JSONField(default=dict, blank=True)
    reason = models.CharField(
        max_length=200, blank=True, help_text='Where the change was made from, e.g. "job 12: suspected label error".'
    )
    batch = models.CharField(max_length=32, blank=True, db_index=True, help_text="Changes made together.")
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
        verbose_name="changed by",
    )  # fmt: skip
    created_at = models.DateTimeField("changed", default=timezone.now)
    undone_at = models.DateTimeField(null=True, blank=True)
    undone_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
        verbose_name="undone by",
    )  # fmt: skip

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "image change"
        indexes = [models.Index(fields=["dataset", "-created_at"], name="imagechange_dataset_recent")]
        constraints = [
            models.CheckConstraint(condition=Q(action__in=["move", "split", "exclude", "include", "delete", "add"]),
                                   name="imagechange_action_valid"),
        ]  # fmt: skip

    def __str__(self) -> str:
        return f"{self.original_name} {self.get_action_display()}"


class SuspectDecision(models.Model):
    """A person's answer to "is this image's label wrong?": it stays answered for that image and label.

    Accepted: the image was moved to the suggested label (the move is an ImageChange). Dismissed:
    the label is right; later jobs do not list the image again while it keeps that label.
    """

    class Decision(models.TextChoices):
        ACCEPTED = "accepted", "accepted"
        DISMISSED = "dismissed", "dismissed"

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="suspect_decisions")
    image = models.ForeignKey(DatasetImage, on_delete=models.CASCADE, related_name="suspect_decisions")
    label = models.ForeignKey(
        Label, on_delete=models.CASCADE, related_name="+", help_text="The label the image had when it was judged."
    )
    suggested_label = models.ForeignKey(Label, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    job = models.ForeignKey(TrainingJob, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    decision = models.CharField(max_length=10, choices=Decision.choices)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    decided_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-decided_at", "-id"]
        verbose_name = "suspected label error decision"
        constraints = [
            models.UniqueConstraint(fields=["image", "label"], name="suspect_decision_once_per_label"),
            models.CheckConstraint(condition=Q(decision__in=["accepted", "dismissed"]), name="suspect_decision_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.image} ({self.decision})"


class PredictionReview(models.Model):
    """What a reviewer did with a low-confidence prediction of a trained model.

    Added: the picture became a dataset image with the reviewer's label. Dismissed: nothing to
    learn from it; it leaves the review list.
    """

    class Decision(models.TextChoices):
        ADDED = "added", "added to the dataset"
        DISMISSED = "dismissed", "dismissed"

    prediction = models.OneToOneField("classifier.Prediction", on_delete=models.CASCADE, related_name="review")
    trained_model = models.ForeignKey(TrainedModel, on_delete=models.CASCADE, related_name="reviews")
    decision = models.CharField(max_length=10, choices=Decision.choices)
    image = models.ForeignKey(
        DatasetImage, on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
        help_text="The dataset image made from the prediction's picture.",
    )  # fmt: skip
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    reviewed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-reviewed_at", "-id"]
        verbose_name = "prediction review"
        constraints = [
            models.CheckConstraint(condition=Q(decision__in=["added", "dismissed"]), name="prediction_review_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.prediction} ({self.decision})"
