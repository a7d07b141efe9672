"""A finished job's suspected label errors and near-duplicate pairs: computed on the worker, kept beside its model.

After a job succeeds (`request`, from `training.jobs`), or when someone asks on an older job's
page, the worker (`tasks.find_suspects` -> `run`) reads the job's cached base features
(`training.outcomes`; a job without them gets them computed once with its base), scores its
training and validation images (`training.suspects`) and looks for the same photo in two splits
(`training.duplicates`). The result is `analysis.json` in the job folder, written under a
temporary name and renamed, with the state the page shows while it is computed:

    {"status": "queued" | "running" | "done" | "failed", "updated_at": ISO time, "message": "...",
     "suspects": [{"image", "label", "suggested", "split", "score", "p_label", "p_suggested"}, ...],
     "duplicates": [{"kept", "moved", "kept_split", "moved_split", "features", "picture"}, ...],
     "facts": {"images_scored", "features", "suspects_s", "duplicates_s", ...}}

The lists are the job's (label ids as the job saw them); the decisions are now: the pages compare
each entry with the image as it is (deleted, moved, excluded) and with the `SuspectDecision`s.
A dismissed or accepted suggestion is never listed again for that image and label, in any job.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from classifier import imaging, inference, zoo
from training import curation, duplicates, outcomes, storage, suspects, trainer
from training.models import DatasetImage, Label, SuspectDecision, TrainingJob
from webapp import atomic

logger = logging.getLogger(__name__)

ANALYSIS_FILE = "analysis.json"
QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
# A computation whose state has not moved for this long was lost (its worker was stopped).
STALE_AFTER = timedelta(minutes=30)
SUSPECT_SPLITS = ("train", "validation")  # the test split stays untouched: it is the final check
MAX_LISTED = 2000  # entries kept per list: more than anyone reviews
UNEXPECTED_MESSAGE = (
    "Looking for suspected label errors stopped on an unexpected error. Try again; if it happens again, tell "
    "your administrator (the worker's log has the details)."
)
PICTURE_BYTES = 64 * 1024 * 1024  # largest file read for a near-duplicate check (thumbnails are far smaller)


class AnalysisRefused(Exception):
    """It cannot be computed (now); str() says why."""


class ReviewRefused(Exception):
    """A suggestion can no longer be accepted or dismissed as listed; str() says why."""


# --- The stored result -------------------------------------------------------------------------------
@dataclass
class Analysis:
    status: str
    updated_at: datetime | None = None
    message: str = ""
    suspects: list[dict] = field(default_factory=list)
    duplicates: list[dict] = field(default_factory=list)
    facts: dict = field(default_factory=dict)

    @property
    def stale(self) -> bool:
        """Queued or running, but nothing moved for STALE_AFTER: the worker that had it is gone."""
        if self.status not in (QUEUED, RUNNING) or self.updated_at is None:
            return False
        return timezone.now() - self.updated_at > STALE_AFTER

    @property
    def pending(self) -> bool:
        return self.status in (QUEUED, RUNNING) and not self.stale

    @property
    def done(self) -> bool:
        return self.status == DONE


def path_of(job: TrainingJob) -> Path:
    return job.folder / ANALYSIS_FILE


def read(job: TrainingJob) -> Analysis | None:
    """The job's stored analysis, or None when it was never asked for (or its file is unreadable)."""
    try:
        data = json.loads(path_of(job).read_text())
        updated = datetime.fromisoformat(data["updated_at"]) if data.get("updated_at") else None
        return Analysis(
            status=str(data["status"]),
            updated_at=updated,
            message=str(data.get("message", "")),
            suspects=list(data.get("suspects", [])),
            duplicates=list(data.get("duplicates", [])),
            facts=dict(data.get("facts", {})),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write(job: TrainingJob, status: str, **content) -> None:
    """Replace the job's analysis file at once (temporary name, then rename)."""
    data = {"status": status, "updated_at": timezone.now().isoformat(), **content}
    atomic.write_bytes(path_of(job), json.dumps(data, separators=(",", ":")).encode())


# --- Asking for it -------------------------------------------------------------------------------------
def refusal(job: TrainingJob) -> str | None:
    """Why the job's images cannot be looked at now, in a sentence; None when they can."""
    if job.status != TrainingJob.Status.SUCCEEDED or not job.folder.is_dir():
        return "Only a finished job with its model can be looked at for label errors."
    current = read(job)
    if current is not None and current.pending:
        return "Suspected label errors are being looked for already: the job's page shows them when they are ready."
    return None


def request(job: TrainingJob) -> None:
    """Record that the job's analysis is wanted and queue it for the worker once the transaction commits.

    Raises AnalysisRefused (a sentence) when it cannot be computed now.
    """
    from training import tasks

    reason = refusal(job)
    if reason:
        raise AnalysisRefused(reason)
    write(job, QUEUED, message="")
    transaction.on_commit(lambda: tasks.find_suspects(job.pk))


def request_after_training(job_id: int) -> None:
    """Queue a finished job's analysis (called by the training worker); never stops the job's success."""
    try:
        job = TrainingJob.objects.get(pk=job_id)
        request(job)
    except (TrainingJob.DoesNotExist, AnalysisRefused, OSError):
        logger.warning("Suspected label errors of job %s were not queued.", job_id, exc_info=True)


# --- On the worker ---------------------------------------------------------------------------------------
def run(job_id: int) -> None:
    """The worker's whole task: compute and store, or store why not. Never raises; a re-run redoes it."""
    job = TrainingJob.objects.select_related("dataset").filter(pk=job_id).first()
    if job is None or job.status != TrainingJob.Status.SUCCEEDED or not job.folder.is_dir():
        return  # deleted, or its files are gone: nothing to keep a result beside
    try:
        write(job, RUNNING, message="")
        result = compute(job)
    except AnalysisRefused as refused:
        _write_if_present(job, FAILED, message=str(refused))
    except Exception:
        logger.exception("Suspected label errors of job %s could not be computed", job_id)
        _write_if_present(job, FAILED, message=UNEXPECTED_MESSAGE, detail=traceback.format_exc()[-4000:])
    else:
        _write_if_present(job, DONE, message="", **result)


def _write_if_present(job: TrainingJob, status: str, **content) -> None:
    """The job may have been deleted meanwhile: then its folder is gone and stays gone."""
    if TrainingJob.objects.filter(pk=job.pk).exists() and job.folder.is_dir():
        write(job, status, **content)


def compute(job: TrainingJob) -> dict:
    """Suspects and near-duplicate pairs of the job's images, as the JSON-ready lists of `analysis.json`."""
    facts: dict = {}
    features = job_features(job, facts)
    labels = job.snapshot.get("labels", [])
    label_index = {label_id: i for i, (label_id, _) in enumerate(labels)}
    recorded = {row[0]: (row[1], row[2]) for row in job.snapshot.get("images", [])}  # id -> (label id, split)
    fields = ("pk", "label_id", "excluded", "sha256", "format")
    rows_now = DatasetImage.objects.filter(dataset_id=job.dataset_id).values(*fields)  # no IN list: any size
    now = {row["pk"]: row for row in rows_now if row["pk"] in recorded}

    # Suspects: training and validation images still in the dataset and not excluded.
    started = time.perf_counter()
    ids, rows, given = [], [], []
    for split in SUSPECT_SPLITS:
        part = features.get(split)
        if part is None:
            continue
        for row, image_id in enumerate(part.image_ids.tolist()):
            label_id = recorded.get(image_id, (None, None))[0]
            current = now.get(image_id)
            if current is None or current["excluded"] or label_id not in label_index:
                continue
            ids.append((image_id, split))
            rows.append(part.features[row])
            given.append(label_index[label_id])
    found: list[dict] = []
    if rows:
        try:
            scores = suspects.find_suspects(np.stack(rows), np.asarray(given), len(labels))
        except suspects.SuspectError as exc:
            facts["suspects_note"] = str(exc)
        else:
            reviewed = reviewed_pairs(job.dataset_id)
            for suspect in scores.suspects:
                image_id, split = ids[suspect.index]
                label_id, suggested_id = labels[suspect.given][0], labels[suspect.suggested][0]
                if (image_id, label_id) in reviewed:
                    continue
                found.append({
                    "image": image_id, "label": label_id, "suggested": suggested_id, "split": split,
                    "score": suspect.score, "p_label": suspect.given_probability,
                    "p_suggested": suspect.suggested_probability,
                })  # fmt: skip
    facts["images_scored"] = len(rows)
    facts["suspects_s"] = round(time.perf_counter() - started, 3)

    # Near-duplicates: every split, images still in the dataset.
    started = time.perf_counter()
    pair_ids, pair_splits, pair_rows = [], [], []
    for split, part in features.items():
        for row, image_id in enumerate(part.image_ids.tolist()):
            if image_id in now:
                pair_ids.append(image_id)
                pair_splits.append(split)
                pair_rows.append(part.features[row])
    folder = job.dataset.folder
    pairs = []
    if pair_rows:

        def picture(index: int):
            image = now[pair_ids[index]]
            return _picture(folder, image["sha256"], image["format"])

        for pair in duplicates.find_pairs(pair_splits, np.stack(pair_rows), picture):
            pairs.append({
                "kept": pair_ids[pair.kept], "moved": pair_ids[pair.moved], "kept_split": pair_splits[pair.kept],
                "moved_split": pair_splits[pair.moved], "features": pair.feature_similarity,
                "picture": pair.picture_similarity,
            })  # fmt: skip
    facts["images_compared"] = len(pair_rows)
    facts["duplicates_s"] = round(time.perf_counter() - started, 3)
    return {"suspects": found[:MAX_LISTED], "duplicates": pairs[:MAX_LISTED], "facts": facts}


def job_features(job: TrainingJob, facts: dict) -> dict[str, outcomes.SplitFeatures]:
    """The job's cached features; computed once with its base (and kept) when the job has none."""
    kept = outcomes.load_features(job.folder)
    if kept.get("train") is not None and kept.get("validation") is not None:
        facts["features"] = "kept by the job"
        return kept
    try:
        base = trainer.zoo_base(zoo.get(job.base_key), settings.WEIGHTS_DIR)
    except (zoo.UnknownModel, trainer.TrainingError):
        raise AnalysisRefused(
            f"This job did not keep its images' features, and its base {job.base_name} is no longer installed to "
            "compute them. Install its weights again (Models page), or train again and look at the new job."
        ) from None
    folder = job.dataset.folder
    examples: dict[str, list[trainer.Example]] = {split: [] for split in outcomes.SPLITS}
    present = set(DatasetImage.objects.filter(dataset_id=job.dataset_id).values_list("pk", flat=True))
    for image_id, _label_id, split, sha, fmt in job.snapshot.get("images", []):
        path = storage.image_path(folder, sha, fmt)
        if image_id in present and path.exists() and split in examples:
            examples[split].append(trainer.Example(path, 0, image_id))
    started = time.perf_counter()
    inference.configure_tensorflow()
    every = [example for items in examples.values() for example in items]
    try:
        values = trainer.base_features(base, every)  # one build of the base for every split
    except trainer.TrainingError as exc:
        raise AnalysisRefused(f"The images' features could not be computed: {exc}") from None
    computed, start = {}, 0
    for split, items in examples.items():
        if items:
            computed[split] = values[start : start + len(items)]
            start += len(items)
    ids = {split: [e.image_id for e in items] for split, items in examples.items()}
    outcomes.save_features(job.folder, ids, computed)
    facts["features"] = "computed with the job's base"
    facts["features_s"] = round(time.perf_counter() - started, 3)
    return outcomes.load_features(job.folder)


def _picture(folder: Path, sha: str, fmt: str):
    """The image's thumbnail (made when the image was added), else its original; None if neither reads."""
    for path in (storage.thumbnail_path(folder, sha), storage.image_path(folder, sha, fmt)):
        try:
            return imaging.decode(
                path, max_bytes=PICTURE_BYTES, max_pixels=trainer.MAX_DECODE_PIXELS, draft_side=storage.THUMBNAIL_SIDE
            ).image
        except (imaging.ImageError, OSError):
            continue
    return None


def reviewed_pairs(dataset_id: int) -> set[tuple[int, int]]:
    """(image id, label id) a person has confirmed: dismissed for that label, or accepted into it."""
    pairs: set[tuple[int, int]] = set()
    rows = SuspectDecision.objects.filter(dataset_id=dataset_id).values_list(
        "image_id", "label_id", "suggested_label_id", "decision"
    )
    for image_id, label_id, suggested_id, decision in rows:
        pairs.add((image_id, label_id))
        if decision == SuspectDecision.Decision.ACCEPTED and suggested_id is not None:
            pairs.add((image_id, suggested_id))
    return pairs


# --- What the pages show -----------------------------------------------------------------------------------
OPEN, ACCEPTED, DISMISSED, DELETED, MOVED, EXCLUDED = "open", "accepted", "dismissed", "deleted", "moved", "excluded"


@dataclass
class SuspectRow:
    """One listed image as it is now: `state` says whether it can still be accepted or dismissed."""

    entry: dict
    image: DatasetImage | None
    label_name: str
    suggested_name: str
    state: str
    decision: SuspectDecision | None = None
    error: str = ""

    @property
    def image_id(self) -> int:
        return int(self.entry["image"])

    @property
    def is_open(self) -> bool:
        return self.state == OPEN

    @property
    def percent(self) -> int:
        return round(100 * float(self.entry.get("score", 0)))

    @property
    def state_text(self) -> str:
        if self.state == ACCEPTED:
            who = f" by {self.decision.decided_by}" if self.decision and self.decision.decided_by else ""
            return f"Accepted{who}: moved to “{self.suggested_name}”."
        if self.state == DISMISSED:
            who = f" by {self.decision.decided_by}" if self.decision and self.decision.decided_by else ""
            return f"Dismissed{who}: the label “{self.label_name}” stays."
        if self.state == DELETED:
            return "Deleted from the dataset since the job."
        if self.state == MOVED and self.image is not None:
            return f"Moved to “{self.image.label.name}” since the job."
        if self.state == EXCLUDED:
            return "Excluded from training since the job."
        return ""


def label_names(job: TrainingJob) -> dict[int, str]:
    """Label id -> name: as the dataset has it now, else as the job knew it (a label deleted since)."""
    names = {label_id: name for label_id, name in job.snapshot.get("labels", [])}
    names.update(dict(Label.objects.filter(dataset_id=job.dataset_id).values_list("pk", "name")))
    return names


def suspect_rows(job: TrainingJob, entries: list[dict]) -> list[SuspectRow]:
    """The listed images with their state now, in the list's order (two queries)."""
    names = label_names(job)
    images = DatasetImage.objects.select_related("label").in_bulk([e["image"] for e in entries])
    decisions = {
        (d.image_id, d.label_id): d
        for d in SuspectDecision.objects.select_related("decided_by").filter(image_id__in=[e["image"] for e in entries])
    }
    rows = []
    for entry in entries:
        image = images.get(entry["image"])
        decision = decisions.get((entry["image"], entry["label"]))
        if decision is not None:
            state = ACCEPTED if decision.decision == SuspectDecision.Decision.ACCEPTED else DISMISSED
        elif image is None:
            state = DELETED
        elif image.label_id != entry["label"]:
            state = MOVED
        elif image.excluded:
            state = EXCLUDED
        else:
            state = OPEN
        rows.append(
            SuspectRow(
                entry=entry, image=image, label_name=names.get(entry["label"], "?"),
                suggested_name=names.get(entry["suggested"], "?"), state=state, decision=decision,
            )
        )  # fmt: skip
    return rows


def find_entry(analysis: Analysis | None, image_id: int) -> dict | None:
    if analysis is None:
        return None
    return next((e for e in analysis.suspects if e["image"] == image_id), None)


# --- Accept, dismiss ---------------------------------------------------------------------------------------
def accept(job: TrainingJob, entry: dict, user) -> None:
    """Move the image to the suggested label (recorded, undoable) and remember the answer."""
    with transaction.atomic():
        image = _open_image(job, entry)
        suggested = Label.objects.filter(pk=entry["suggested"], dataset_id=job.dataset_id).first()
        if suggested is None:
            raise ReviewRefused(
                f"The suggested label “{label_names(job).get(entry['suggested'], '?')}” was deleted since the job: "
                "move the image from its own page instead."
            )
        SuspectDecision.objects.create(
            dataset_id=job.dataset_id, image=image, label_id=image.label_id, suggested_label=suggested, job=job,
            decision=SuspectDecision.Decision.ACCEPTED, decided_by=_user(user),
        )  # fmt: skip
        curation.move_images([image], suggested, user, reason=f"job {job.pk}: suspected label error")


def dismiss(job: TrainingJob, entry: dict, user) -> None:
    """The label is right: remember it, so no later job lists this image for this label again."""
    with transaction.atomic():
        image = _open_image(job, entry)
        SuspectDecision.objects.create(
            dataset_id=job.dataset_id, image=image, label_id=image.label_id,
            suggested_label=Label.objects.filter(pk=entry["suggested"], dataset_id=job.dataset_id).first(),
            job=job, decision=SuspectDecision.Decision.DISMISSED, decided_by=_user(user),
        )  # fmt: skip


def _open_image(job: TrainingJob, entry: dict) -> DatasetImage:
    """The listed image, locked, if it is still as the job listed it and undecided; ReviewRefused otherwise."""
    image = (
        DatasetImage.objects.select_for_update()
        .select_related("label")
        .filter(pk=entry["image"], dataset_id=job.dataset_id)
        .first()
    )
    if image is None:
        raise ReviewRefused("This image was deleted from the dataset since the job: there is nothing to change.")
    if image.label_id != entry["label"]:
        raise ReviewRefused(f"This image was moved to “{image.label.name}” since the job: nothing was changed.")
    decided = SuspectDecision.objects.filter(image=image, label_id=image.label_id).select_related("decided_by").first()
    if decided is not None:
        who = f" by {decided.decided_by}" if decided.decided_by else ""
        raise ReviewRefused(f"This suggestion was already {decided.get_decision_display()}{who}.")
    return image


def _user(user):
    return user if getattr(user, "is_authenticated", False) else None


# --- Near-duplicate pairs ------------------------------------------------------------------------------------
@dataclass
class PairRow:
    entry: dict
    kept: DatasetImage | None
    moved: DatasetImage | None
    error: str = ""

    @property
    def fixed(self) -> bool:
        return self.kept is not None and self.moved is not None and self.kept.split == self.moved.split

    @property
    def gone(self) -> bool:
        return self.kept is None or self.moved is None

    @property
    def can_fix(self) -> bool:
        return not self.gone and not self.fixed

    @property
    def sides(self) -> list[tuple[DatasetImage | None, str]]:
        """(image now, split the job saw it in), the one that stays first."""
        return [(self.kept, self.entry["kept_split"]), (self.moved, self.entry["moved_split"])]

    @property
    def key(self) -> str:
        return f"{self.entry['kept']}-{self.entry['moved']}"

    @property
    def picture_percent(self) -> str:
        return f"{100 * float(self.entry.get('picture', 0)):.1f}"


def pair_rows(entries: list[dict]) -> list[PairRow]:
    ids = [e["kept"] for e in entries] + [e["moved"] for e in entries]
    images = DatasetImage.objects.select_related("label").in_bulk(ids)
    return [PairRow(entry=e, kept=images.get(e["kept"]), moved=images.get(e["moved"])) for e in entries]


def find_pair(analysis: Analysis | None, kept_id: int, moved_id: int) -> dict | None:
    if analysis is None:
        return None
    return next((e for e in analysis.duplicates if e["kept"] == kept_id and e["moved"] == moved_id), None)


def keep_in_same_split(job: TrainingJob, entry: dict, user) -> None:
    """Move the pair's validation or test image into the split of the other one (recorded, undoable)."""
    row = pair_rows([entry])[0]
    if row.gone:
        raise ReviewRefused("One of these images was deleted since the job: there is nothing left to fix.")
    if row.fixed:
        return
    assert row.kept is not None and row.moved is not None
    curation.change_split(
        [row.moved], row.kept.split, user, reason=f"job {job.pk}: near-duplicate of “{row.kept.original_name}”"
    )
