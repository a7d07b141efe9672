"""A dataset's model history: its jobs in order, and what happened to the data between them.

A job trains on the dataset as it was when it was queued (its snapshot), so the changes that
separate two jobs are those made between their queue times: images added (uploads, zip imports,
reviewed predictions: counted by the image's `created_at`, so an image added and deleted in
between counts as neither), and the recorded changes (`ImageChange`) by action. A change undone
before the later job was queued did not reach it and is not counted.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from django.utils import timezone

from training.models import Dataset, ImageChange, ImportJob, TrainingJob

MAX_JOBS = 12  # the most recent jobs shown; the jobs list has the rest
Action = ImageChange.Action
# How each kind of change reads after a count, in the order sentences list them. Additions are
# counted from the images themselves, so an ADD change (a reviewed prediction) is not counted twice.
WORDS = {
    "added": "added",
    Action.MOVE: "moved to another label",
    Action.SPLIT: "moved to another split",
    Action.EXCLUDE: "excluded",
    Action.INCLUDE: "included again",
    Action.DELETE: "deleted",
}


@dataclass
class Changes:
    """What happened to the data in one stretch of time."""

    counts: Counter = field(default_factory=Counter)  # "added" and ImageChange actions -> images
    imports: list[str] = field(default_factory=list)  # zip names of the imports that succeeded meanwhile

    @property
    def empty(self) -> bool:
        return not any(self.counts.values())

    def sentence(self) -> str:
        """E.g. "40 images added, 12 moved to another label, 3 excluded"; "no change to the images"."""
        parts = []
        for key, words in WORDS.items():
            n = self.counts.get(key, 0)
            if n:
                noun = ("image" if n == 1 else "images") + " " if not parts else ""
                parts.append(f"{n:,} {noun}{words}")
        return ", ".join(parts) if parts else "no change to the images"


@dataclass
class Entry:
    """One job on the timeline, with the data changes since the job before it."""

    job: TrainingJob
    origin: str  # "continued from" / "trained again from" / ""
    origin_job: int | None
    changes_before: Changes | None  # None for the first job shown
    previous_job: int | None  # the job before it on the timeline


@dataclass
class Timeline:
    entries: list[Entry]  # oldest first
    since_last: Changes | None  # changes after the newest job: not in any model yet
    older_jobs: int  # jobs before the first one shown

    @property
    def last_job(self) -> TrainingJob | None:
        return self.entries[-1].job if self.entries else None


def dataset_timeline(dataset: Dataset, limit: int = MAX_JOBS) -> Timeline:
    """The dataset's most recent jobs, oldest first, and the changes between them, in five queries."""
    total = dataset.training_jobs.count()
    jobs = list(
        dataset.training_jobs.defer("snapshot", "history", "evaluation", "exports", "detail")
        .order_by("-created_at", "-id")[:limit]
    )[::-1]  # fmt: skip
    if not jobs:
        return Timeline([], None, 0)
    start = jobs[0].created_at
    added = sorted(dataset.images.filter(created_at__gt=start).values_list("created_at", flat=True))
    changes = list(
        ImageChange.objects.filter(dataset=dataset, created_at__gt=start)
        .exclude(action=Action.ADD)
        .values_list("created_at", "action", "undone_at")
    )  # fmt: skip
    imports = list(
        ImportJob.objects.filter(dataset=dataset, status=ImportJob.Status.SUCCEEDED, finished_at__gt=start)
        .order_by("finished_at")
        .values_list("finished_at", "archive_name")
    )  # fmt: skip
    entries: list[Entry] = []
    for job in jobs:
        previous = entries[-1].job if entries else None
        between = None if previous is None else _changes(previous.created_at, job.created_at, added, changes, imports)
        entries.append(Entry(job, *_origin(job), between, previous.pk if previous else None))
    pending = _changes(jobs[-1].created_at, timezone.now(), added, changes, imports)
    return Timeline(entries, None if pending.empty else pending, total - len(jobs))


def _changes(after: datetime, until: datetime, added: list[datetime], changes, imports) -> Changes:
    """Changes in (after, until], leaving out those undone by `until`."""
    result = Changes()
    result.counts["added"] = bisect_right(added, until) - bisect_right(added, after)
    for created, action, undone in changes:
        if after < created <= until and (undone is None or undone > until):
            result.counts[action] += 1
    result.imports = [name for finished, name in imports if after < finished <= until]
    return result


def _origin(job: TrainingJob) -> tuple[str, int | None]:
    if job.start_from_id:
        return "continued from", job.start_from_id
    if job.parent_id:
        return "trained again from", job.parent_id
    return "", None
