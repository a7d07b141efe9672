"""How a job did against the job it came from ("train again" or "continue"), image by image.

No Django. Both jobs' per-image outcomes (`training.outcomes`) are read for their validation
split, and everything is measured on the images BOTH evaluated: a job trained after images were
added, deleted, excluded or dealt into other splits has a different validation split, and
accuracy over two different sets of images says little about which model is better. Images
moved to another label in between are compared too: each job is judged by the label it was
trained with (that is how fixing a label shows up as a flip from wrong to right).

Labels are matched by name, ignoring case (as the dataset matches them): a label added since has
no earlier score, a label removed since no later one, and the page says so rather than showing 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from training.names import label_key
from training.outcomes import SplitOutcome

KEPT, NEW, REMOVED = "kept", "new", "removed"


@dataclass(frozen=True)
class Flip:
    """One compared image whose verdict changed between the jobs."""

    image_id: int
    truth: str  # its label in the later job
    earlier_truth: str  # its label in the earlier job (another one when it was moved in between)
    earlier_predicted: str
    predicted: str
    confidence: float  # the later model's probability for its answer

    @property
    def relabelled(self) -> bool:
        return label_key(self.truth) != label_key(self.earlier_truth)


@dataclass(frozen=True)
class LabelDelta:
    """One label's F1 in both jobs, on the compared images."""

    name: str
    status: str  # KEPT, NEW (only the later job knows it) or REMOVED (only the earlier one did)
    earlier_f1: float | None
    later_f1: float | None
    earlier_support: int  # compared images of this label, in the earlier job
    later_support: int

    @property
    def delta(self) -> float | None:
        if self.earlier_f1 is None or self.later_f1 is None:
            return None
        return self.later_f1 - self.earlier_f1


@dataclass(frozen=True)
class Comparison:
    compared: int  # validation images both jobs evaluated
    earlier_only: int  # evaluated by the earlier job only: deleted, excluded or dealt out of validation since
    later_only: int  # evaluated by the later job only: added, or dealt into validation since
    relabelled: int  # compared images whose label changed in between
    earlier_accuracy: float | None
    later_accuracy: float | None
    earlier_macro_f1: float | None
    later_macro_f1: float | None
    labels: list[LabelDelta]
    fixed: list[Flip]  # wrong in the earlier job, right in the later one; most confident first
    broken: list[Flip]  # right before, wrong now; most confident first

    @property
    def accuracy_delta(self) -> float | None:
        return _delta(self.earlier_accuracy, self.later_accuracy)

    @property
    def macro_f1_delta(self) -> float | None:
        return _delta(self.earlier_macro_f1, self.later_macro_f1)


def compare(
    earlier_labels: Sequence[str], earlier: SplitOutcome, later_labels: Sequence[str], later: SplitOutcome
) -> Comparison:
    """Compare two jobs' outcomes of one split; each job's truth indexes its own labels."""
    earlier_row = {int(image_id): i for i, image_id in enumerate(earlier.image_ids)}
    later_rows, earlier_rows = [], []
    for j, image_id in enumerate(later.image_ids):
        i = earlier_row.get(int(image_id))
        if i is not None:
            later_rows.append(j)
            earlier_rows.append(i)
    e_idx, l_idx = np.asarray(earlier_rows, np.int64), np.asarray(later_rows, np.int64)
    e_truth, e_pred = earlier.truth[e_idx], earlier.predicted[e_idx]
    l_truth, l_pred = later.truth[l_idx], later.predicted[l_idx]
    e_right, l_right = e_truth == e_pred, l_truth == l_pred
    compared = len(l_idx)

    e_scores = _f1_per_label(e_truth, e_pred, len(earlier_labels))
    l_scores = _f1_per_label(l_truth, l_pred, len(later_labels))
    labels = _label_deltas(earlier_labels, e_scores, later_labels, l_scores)

    def flips(mask: np.ndarray) -> list[Flip]:
        rows = np.flatnonzero(mask)
        confidence = later.confidence[l_idx[rows]] if len(rows) else np.zeros(0)
        return [
            Flip(
                image_id=int(later.image_ids[l_idx[r]]),
                truth=later_labels[l_truth[r]],
                earlier_truth=earlier_labels[e_truth[r]],
                earlier_predicted=earlier_labels[e_pred[r]],
                predicted=later_labels[l_pred[r]],
                confidence=float(c),
            )
            for r, c in sorted(zip(rows, confidence, strict=True), key=lambda rc: -rc[1])
        ]

    names_then = [label_key(earlier_labels[t]) for t in e_truth]
    names_now = [label_key(later_labels[t]) for t in l_truth]
    return Comparison(
        compared=compared,
        earlier_only=len(earlier.image_ids) - compared,
        later_only=len(later.image_ids) - compared,
        relabelled=sum(a != b for a, b in zip(names_then, names_now, strict=True)),
        earlier_accuracy=float(e_right.mean()) if compared else None,
        later_accuracy=float(l_right.mean()) if compared else None,
        earlier_macro_f1=_macro(e_scores),
        later_macro_f1=_macro(l_scores),
        labels=labels,
        fixed=flips(~e_right & l_right),
        broken=flips(e_right & ~l_right),
    )


def _f1_per_label(truth: np.ndarray, predicted: np.ndarray, classes: int) -> list[tuple[float | None, int]]:
    """(F1, support) per label: 2·hits / (support + predicted); None for a label neither seen nor predicted.

    A label with images but never predicted scores 0, as in the usual macro-F1 (not left out).
    """
    scores = []
    for c in range(classes):
        support, guessed = int(np.sum(truth == c)), int(np.sum(predicted == c))
        hits = int(np.sum((truth == c) & (predicted == c)))
        scores.append((2 * hits / (support + guessed) if support + guessed else None, support))
    return scores


def _macro(scores: list[tuple[float | None, int]]) -> float | None:
    values = [f1 for f1, _ in scores if f1 is not None]
    return float(np.mean(values)) if values else None


def _label_deltas(earlier_labels, e_scores, later_labels, l_scores) -> list[LabelDelta]:
    """The later job's labels in its order, then the labels removed since."""
    earlier_index = {label_key(name): i for i, name in enumerate(earlier_labels)}
    later_keys = {label_key(name) for name in later_labels}
    rows = []
    for j, name in enumerate(later_labels):
        i = earlier_index.get(label_key(name))
        later_f1, later_support = l_scores[j]
        if i is None:
            rows.append(LabelDelta(name, NEW, None, later_f1, 0, later_support))
        else:
            rows.append(LabelDelta(name, KEPT, e_scores[i][0], later_f1, e_scores[i][1], later_support))
    for i, name in enumerate(earlier_labels):
        if label_key(name) not in later_keys:
            rows.append(LabelDelta(name, REMOVED, e_scores[i][0], None, e_scores[i][1], 0))
    return rows


def _delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before
