"""The dataset page's model history: its jobs in order, and the data changes between them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import strip_tags

from tests.training_helpers import TRAIN_BASE, colour_dataset
from training import timeline
from training.models import ImageChange, ImportJob, TrainingJob

pytestmark = pytest.mark.django_db
HOUR = timedelta(hours=1)


def _job(dataset, queued, **fields) -> TrainingJob:
    return TrainingJob.objects.create(
        dataset=dataset, base_key=TRAIN_BASE, base_name="MobileNetV2 0.35", created_at=queued,
        status=TrainingJob.Status.SUCCEEDED, config={"epochs": 10}, **fields,
    )  # fmt: skip


def _change(image, action, when, undone=None) -> ImageChange:
    return ImageChange.objects.create(
        dataset=image.dataset, image=image, sha256=image.sha256, original_name=image.original_name,
        action=action, created_at=when, undone_at=undone,
    )  # fmt: skip


@pytest.fixture
def history(alice):
    """Jobs 1, 2 (continued from 1) and 3 (trained again from 2), an hour apart, and changes between them."""
    start = timezone.now() - 5 * HOUR
    dataset = colour_dataset(alice, per_label=4)
    images = list(dataset.images.order_by("id"))
    dataset.images.update(created_at=start - HOUR)
    first = _job(dataset, start, best_val_accuracy=0.75)
    between = start + HOUR / 2
    dataset.images.filter(pk__in=[i.pk for i in images[:3]]).update(created_at=between)  # 3 added
    for image in images[3:5]:
        _change(image, ImageChange.Action.MOVE, between)
    _change(images[5], ImageChange.Action.MOVE, between, undone=start + 3 * HOUR)  # undone after job 2: counts
    _change(images[6], ImageChange.Action.EXCLUDE, between)
    _change(images[7], ImageChange.Action.EXCLUDE, between, undone=between + timedelta(minutes=5))  # never reached
    _change(images[8], ImageChange.Action.DELETE, between)
    _change(images[8], ImageChange.Action.ADD, between)  # an added picture is counted from the image rows
    ImportJob.objects.create(dataset=dataset, archive_name="more.zip", status=ImportJob.Status.SUCCEEDED,
                             finished_at=between)  # fmt: skip
    second = _job(dataset, start + HOUR, start_from=first, best_val_accuracy=0.9)
    third = _job(dataset, start + 2 * HOUR, parent=second, best_val_accuracy=0.95)
    _change(images[9], ImageChange.Action.SPLIT, start + 3 * HOUR)
    return dataset, (first, second, third)


def test_jobs_oldest_first_with_how_each_came_about(history):
    dataset, (first, second, third) = history
    entries = timeline.dataset_timeline(dataset).entries
    assert [e.job.pk for e in entries] == [first.pk, second.pk, third.pk]
    assert [(e.origin, e.origin_job) for e in entries] == [
        ("", None),
        ("continued from", first.pk),
        ("trained again from", second.pk),
    ]


def test_changes_between_two_jobs_are_counted_by_kind(history):
    dataset, (first, _, _) = history
    entries = timeline.dataset_timeline(dataset).entries
    assert entries[0].changes_before is None
    changes = entries[1].changes_before
    assert entries[1].previous_job == first.pk
    assert changes.counts == {"added": 3, "move": 3, "exclude": 1, "delete": 1}
    assert changes.sentence() == "3 images added, 3 moved to another label, 1 excluded, 1 deleted"
    assert changes.imports == ["more.zip"]
    assert entries[2].changes_before.empty


def test_changes_after_the_last_job_are_in_no_model_yet(history):
    dataset, _ = history
    pending = timeline.dataset_timeline(dataset).since_last
    assert pending.sentence() == "1 image moved to another split"


def test_only_the_most_recent_jobs_are_shown(history):
    dataset, (_, second, third) = history
    shown = timeline.dataset_timeline(dataset, limit=2)
    assert [e.job.pk for e in shown.entries] == [second.pk, third.pk]
    assert shown.older_jobs == 1
    assert shown.entries[0].changes_before is None


def test_the_timeline_takes_the_same_few_queries_however_many_jobs(history, django_assert_num_queries):
    dataset, _ = history
    with django_assert_num_queries(5):
        timeline.dataset_timeline(dataset)


def _text(html: str) -> str:
    """What a reader sees: the page without tags, spaces collapsed."""
    return " ".join(strip_tags(html).split())


def test_the_dataset_page_shows_the_model_history(history, bob_client):
    dataset, (first, second, third) = history
    page = _text(bob_client.get(reverse("training:dataset_detail", args=[dataset.pk])).content.decode())
    assert "Model history" in page
    assert (
        f"Job {first.pk}" in page
        and f"3 images added, 3 moved to another label, 1 excluded, 1 deleted between job {first.pk} and job "
        f"{second.pk} (zip import “more.zip”)."
        in page
    )
    assert f"No change to the images between job {second.pk} and job {third.pk}." in page
    assert f"90% validation accuracy Finished ↳ continued from job {first.pk}" in page
    assert f"95% validation accuracy Finished ↳ trained again from job {second.pk}" in page
    assert f"1 image moved to another split since job {third.pk}, in no model yet." in page


def test_a_dataset_without_jobs_shows_no_history(alice, bob_client):
    dataset = colour_dataset(alice, per_label=2)
    page = bob_client.get(reverse("training:dataset_detail", args=[dataset.pk])).content.decode()
    assert "Model history" not in page
