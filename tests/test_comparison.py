"""A job compares itself with the job it came from: deltas and flipped images on the images both evaluated.

The pair of jobs is constructed: two finished job rows whose outcomes files are written with
training.outcomes.save_outcomes, so every number below is worked out by hand.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import strip_tags

from tests.training_helpers import TRAIN_BASE, colour_dataset
from training import comparison, outcomes
from training.models import TrainingJob
from training.outcomes import SplitOutcome

EARLIER_LABELS = ["blue", "green", "purple", "red"]
LATER_LABELS = ["Blue", "green", "red", "yellow"]  # "Blue" is "blue" (case is ignored), purple went, yellow came
# image -> (true label, answered label, confidence of the answer), each job in its own labels.
EARLIER = {
    1: ("blue", "green", 0.6),  # wrong, then right
    2: ("green", "green", 0.9),  # right, then wrong
    3: ("red", "red", 0.9),
    4: ("red", "blue", 0.8),  # wrong, then right
    5: ("purple", "purple", 0.9),  # moved from purple to red in between, right both times
    6: ("blue", "blue", 0.9),
    9: ("green", "green", 0.9),  # only the earlier job saw it (deleted or re-split since)
}
LATER = {
    1: ("Blue", "Blue", 0.9),
    2: ("green", "red", 0.55),
    3: ("red", "red", 0.9),
    4: ("red", "red", 0.7),
    5: ("red", "red", 0.9),
    6: ("Blue", "Blue", 0.9),
    7: ("yellow", "yellow", 0.9),  # added since
    8: ("yellow", "yellow", 0.9),
}


def _outcome(rows: dict, labels: list[str], ids: dict[int, int] | None = None) -> SplitOutcome:
    """A split outcome where each image's probabilities put `confidence` on the answered label."""
    ids = ids or {}
    probabilities = []
    for truth, answer, confidence in rows.values():
        p = np.full(len(labels), (1 - confidence) / (len(labels) - 1), np.float32)
        p[labels.index(answer)] = confidence
        probabilities.append(p)
        assert truth in labels
    return SplitOutcome(
        np.array([ids.get(i, i) for i in rows], np.int64),
        np.array([labels.index(truth) for truth, _, _ in rows.values()], np.int64),
        np.array(probabilities, np.float32),
    )


def _compare() -> comparison.Comparison:
    return comparison.compare(
        EARLIER_LABELS, _outcome(EARLIER, EARLIER_LABELS), LATER_LABELS, _outcome(LATER, LATER_LABELS)
    )


def test_only_images_both_jobs_evaluated_are_compared():
    result = _compare()
    assert (result.compared, result.earlier_only, result.later_only) == (6, 1, 2)
    assert result.relabelled == 1  # image 5, moved from purple to red


def test_accuracy_and_macro_f1_deltas_on_the_compared_images():
    result = _compare()
    assert result.earlier_accuracy == pytest.approx(4 / 6)
    assert result.later_accuracy == pytest.approx(5 / 6)
    assert result.accuracy_delta == pytest.approx(1 / 6)
    # Earlier: blue 2·1/(2+2), green 2·1/(1+2), purple 1, red 2·1/(2+1). Later: Blue 1, green 0 (never
    # answered, still counted), red 2·3/(3+4); yellow has no compared image and is left out.
    assert result.earlier_macro_f1 == pytest.approx((0.5 + 2 / 3 + 1 + 2 / 3) / 4)
    assert result.later_macro_f1 == pytest.approx((1 + 0 + 6 / 7) / 3)


def test_labels_are_matched_by_name_and_new_or_removed_labels_say_so():
    rows = {row.name: row for row in _compare().labels}
    assert list(rows) == ["Blue", "green", "red", "yellow", "purple"]
    assert (rows["Blue"].status, rows["Blue"].earlier_f1, rows["Blue"].later_f1) == ("kept", 0.5, 1.0)
    assert rows["Blue"].delta == pytest.approx(0.5)
    assert rows["green"].delta == pytest.approx(-2 / 3)
    assert rows["red"].delta == pytest.approx(6 / 7 - 2 / 3)
    assert rows["red"].later_support == 3
    assert (rows["yellow"].status, rows["yellow"].earlier_f1, rows["yellow"].delta) == ("new", None, None)
    assert (rows["purple"].status, rows["purple"].earlier_f1, rows["purple"].later_f1) == ("removed", 1.0, None)


def test_flipped_images_in_both_directions_most_confident_first():
    result = _compare()
    assert [f.image_id for f in result.fixed] == [1, 4]
    assert [f.image_id for f in result.broken] == [2]
    fixed = result.fixed[0]
    assert (fixed.truth, fixed.earlier_predicted, fixed.predicted) == ("Blue", "green", "Blue")
    assert fixed.confidence == pytest.approx(0.9)
    assert not fixed.relabelled
    broken = result.broken[0]
    assert (broken.truth, broken.earlier_predicted, broken.predicted) == ("green", "green", "red")


def test_jobs_without_a_common_image_compare_nothing():
    later = _outcome({7: ("yellow", "yellow", 0.9)}, LATER_LABELS)
    result = comparison.compare(EARLIER_LABELS, _outcome(EARLIER, EARLIER_LABELS), LATER_LABELS, later)
    assert result.compared == 0
    assert result.earlier_accuracy is None and result.accuracy_delta is None
    assert result.fixed == [] and result.broken == []


# --- On the job page ------------------------------------------------------------------------------
def _text(html: str) -> str:
    """What a reader sees: the page without tags, spaces collapsed."""
    return " ".join(strip_tags(html).split())


def _job(dataset, user, labels: list[str], *, status=TrainingJob.Status.SUCCEEDED, seconds=30, **fields):
    started = timezone.now() - timedelta(minutes=10)
    return TrainingJob.objects.create(
        dataset=dataset, created_by=user, base_key=TRAIN_BASE, base_name="MobileNetV2 0.35", status=status,
        config={"epochs": 10}, snapshot={"labels": [[i, name] for i, name in enumerate(labels)], "images": []},
        started_at=started, model_ready_at=started + timedelta(seconds=seconds),
        finished_at=started + timedelta(seconds=seconds + 5), **fields,
    )  # fmt: skip


def _write(job: TrainingJob, rows: dict, labels: list[str], ids: dict[int, int]) -> None:
    outcome = _outcome(rows, labels, ids)
    split = "validation"
    outcomes.save_outcomes(
        job.folder, {split: outcome.image_ids}, {split: outcome.truth}, {split: outcome.probabilities}
    )


@pytest.fixture
def pair(alice):
    """Job `earlier` and job `later` trained again from it; images 1-3 and 5-8 are real dataset images,
    image 4 was deleted since."""
    dataset = colour_dataset(alice, per_label=3)
    real = list(dataset.images.order_by("id").values_list("id", flat=True))
    ids = {1: real[0], 2: real[1], 3: real[2], 4: max(real) + 100, 5: real[3], 6: real[4], 7: real[5], 8: real[6],
           9: real[7]}  # fmt: skip
    earlier = _job(dataset, alice, EARLIER_LABELS, seconds=60)
    later = _job(dataset, alice, LATER_LABELS, parent=earlier, seconds=20)
    _write(earlier, EARLIER, EARLIER_LABELS, ids)
    _write(later, LATER, LATER_LABELS, ids)
    return earlier, later, ids


@pytest.mark.django_db
def test_the_job_page_shows_the_comparison_with_its_parent(alice_client, pair):
    earlier, later, ids = pair
    html = alice_client.get(reverse("training:job_detail", args=[later.pk])).content.decode()
    page = _text(html)
    assert f"Against job {earlier.pk} This job was trained again from job {earlier.pk}." in page
    assert "Measured on the 6 validation images both jobs evaluated." in page
    assert f"1 only job {earlier.pk} evaluated and 2 only this job evaluated" in page
    assert "compared only where both saw them" in page
    assert "1 of the compared images changed label in between" in page
    assert "+16.7 points" in page and "accuracy: 67% → 83%" in page and "mean F1: 0.71 → 0.62" in page
    assert "Blue 0.50 1.00 +0.50 2" in page and "green 0.67 0.00 −0.67 1" in page
    assert "yellow new label not a label then — — 0" in page and "purple removed since 1.00 not a label now — 1" in page
    # Flips, with thumbnails of the images still in the dataset.
    assert "Wrong before, right now (2)" in page and "Right before, wrong now (1)" in page
    assert "is green job 1: green now: red (55%)" in page
    assert reverse("training:image_thumbnail", args=[ids[1]]) in html
    assert reverse("training:image_thumbnail", args=[ids[2]]) in html
    assert reverse("training:image_thumbnail", args=[ids[4]]) not in html
    assert "deleted since is red job 1: blue now: red (70%)" in page


@pytest.mark.django_db
def test_a_continued_job_says_how_long_it_took_against_the_job_it_continued_from(alice_client, pair):
    earlier, _, ids = pair
    continued = _job(earlier.dataset, None, LATER_LABELS, start_from=earlier, seconds=20)
    _write(continued, LATER, LATER_LABELS, ids)
    page = _text(alice_client.get(reverse("training:job_detail", args=[continued.pk])).content.decode())
    assert f"· continued from job {earlier.pk}" in page
    assert f"Continued from job {earlier.pk}: this model was ready in 20 s; job {earlier.pk}'s took 1 min 00 s." in page
    assert "+16.7 points" in page


@pytest.mark.django_db
def test_no_comparison_until_both_jobs_finished(alice_client, pair):
    earlier, later, _ = pair
    TrainingJob.objects.filter(pk=earlier.pk).update(status=TrainingJob.Status.FAILED)
    page = alice_client.get(reverse("training:job_detail", args=[later.pk])).content.decode()
    assert "Against job" not in page
    TrainingJob.objects.filter(pk=earlier.pk).update(status=TrainingJob.Status.SUCCEEDED)
    TrainingJob.objects.filter(pk=later.pk).update(status=TrainingJob.Status.RUNNING)
    page = alice_client.get(reverse("training:job_progress", args=[later.pk])).content.decode()
    assert "Against job" not in page


@pytest.mark.django_db
def test_a_parent_without_outcomes_is_named_but_not_compared(alice_client, pair):
    earlier, later, _ = pair
    (earlier.folder / outcomes.OUTCOMES_FILE).unlink()
    response = alice_client.get(reverse("training:job_detail", args=[later.pk]))
    assert response.status_code == 200
    page = response.content.decode()
    assert f"Against job {earlier.pk}" in page
    assert "cannot be compared image by image" in page
