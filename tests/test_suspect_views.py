"""A job's suspected label errors and near-duplicates: computed by the worker, reviewed in place, remembered.

Most tests give a finished job cached features made up for its images (each picture's features
point at the colour it really has), so the worker's computation takes milliseconds; one test
trains a real small job and lets its success queue the computation.
"""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone

from tests.test_duplicates import as_jpeg_85, scene
from tests.training_helpers import TRAIN_BASE
from training import analysis, jobs, outcomes, trainer, uploads
from training.models import Dataset, DatasetImage, ImageChange, SuspectDecision, TrainingJob

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}
TINTS = {"red": (150, -60, -60), "green": (-60, 150, -60), "blue": (-60, -60, 150)}
MISLABELLED = "red_0.png"  # a red picture filed under blue
TWIN = "red_1 copy.jpg"  # red_1.png again, re-encoded, in validation


def text(response) -> str:
    """What a person reads: the page without its tags, entities decoded."""
    import html

    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", response.content.decode())).split())


def png(picture) -> bytes:
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()


def pictures_dataset(user, per_label: int = 10, name: str = "Scenes") -> Dataset:
    """Three tinted labels of photo-like pictures, uploaded as users upload, 30% validation; with one
    red picture filed under blue and one training picture again (re-encoded) in validation."""
    dataset = Dataset.objects.create(name=name, created_by=user, validation_percent=30)
    for channel, (label, tint) in enumerate(TINTS.items()):
        files = [
            SimpleUploadedFile(f"{label}_{i}.png", png(scene(channel * 1000 + i, side=96, tint=tint)))
            for i in range(per_label)
        ]
        uploads.add_uploads(dataset, label, files, user)
    DatasetImage.objects.filter(original_name="red_1.png").update(split="train")
    twin = as_jpeg_85(scene(1, side=96, tint=TINTS["red"]))
    out = io.BytesIO()
    twin.save(out, format="JPEG", quality=85)
    uploads.add_uploads(dataset, "red", [SimpleUploadedFile(TWIN, out.getvalue())], user)
    DatasetImage.objects.filter(original_name=TWIN).update(split="validation")
    DatasetImage.objects.filter(original_name=MISLABELLED).update(label=dataset.labels.get(name="blue"))
    return dataset


def image(name: str) -> DatasetImage:
    return DatasetImage.objects.select_related("label").get(original_name=name)


def finished_job(dataset: Dataset, user) -> TrainingJob:
    """A finished job on the dataset as it is, with cached features that say each picture's true colour."""
    snapshot = dataset.snapshot()
    job = TrainingJob.objects.create(
        dataset=dataset, created_by=user, base_key=TRAIN_BASE, base_name="MobileNetV2 0.35", snapshot=snapshot,
        status="succeeded", finished_at=timezone.now(),
    )  # fmt: skip
    rng = np.random.default_rng(job.pk)
    ids: dict[str, list[int]] = {"train": [], "validation": [], "test": []}
    features: dict[str, list[np.ndarray]] = {"train": [], "validation": [], "test": []}
    names = dict(DatasetImage.objects.values_list("pk", "original_name"))
    for image_id, _label, split, _sha, _fmt in snapshot["images"]:
        colour = list(TINTS).index(names[image_id].split("_")[0])
        vector = np.abs(rng.normal(0, 0.15, size=32))
        vector[colour * 4 : colour * 4 + 4] += 1.0
        ids[split].append(image_id)
        features[split].append(vector)
    outcomes.save_features(job.folder, ids, {s: np.array(v) for s, v in features.items() if v})
    return job


def computed(job: TrainingJob) -> analysis.Analysis:
    """The worker's task, run here."""
    analysis.run(job.pk)
    result = analysis.read(job)
    assert result is not None and result.status == analysis.DONE, result
    return result


@pytest.fixture
def scenes(alice) -> Dataset:
    return pictures_dataset(alice)


@pytest.fixture
def job(scenes, alice) -> TrainingJob:
    job = finished_job(scenes, alice)
    computed(job)
    return job


# --- The worker ---------------------------------------------------------------------------------------
def test_the_worker_finds_the_mislabelled_picture_and_the_copy_across_splits(job):
    result = analysis.read(job)

    assert [s["image"] for s in result.suspects] == [image(MISLABELLED).pk]
    suspect = result.suspects[0]
    assert (suspect["label"], suspect["suggested"]) == (image(MISLABELLED).label_id, image("red_2.png").label_id)
    assert [(p["kept"], p["moved"]) for p in result.duplicates] == [(image("red_1.png").pk, image(TWIN).pk)]
    assert result.duplicates[0]["kept_split"] == "train" and result.duplicates[0]["moved_split"] == "validation"
    assert result.facts["images_scored"] == 31


def test_the_result_is_written_at_once_in_the_job_folder(job):
    files = sorted(p.name for p in job.folder.iterdir())

    assert files == ["analysis.json", "features.npz"]  # no temporary file left behind
    assert json.loads((job.folder / "analysis.json").read_text())["status"] == "done"


def test_a_job_that_did_not_keep_features_and_lost_its_base_says_why(scenes, alice):
    job = finished_job(scenes, alice)
    (job.folder / "features.npz").unlink()

    analysis.run(job.pk)

    result = analysis.read(job)
    assert result.status == analysis.FAILED
    assert result.message == (
        "This job did not keep its images' features, and its base MobileNetV2 0.35 is no longer installed to compute "
        "them. Install its weights again (Models page), or train again and look at the new job."
    )


def test_excluded_images_are_not_scored(scenes, alice):
    DatasetImage.objects.filter(original_name=MISLABELLED).update(excluded=True)
    job = finished_job(scenes, alice)

    result = computed(job)

    assert result.suspects == []
    assert result.facts["images_scored"] == 30


def test_a_real_job_queues_the_check_when_it_succeeds_and_the_worker_writes_it(
    alice, install_weights, django_capture_on_commit_callbacks
):
    install_weights(TRAIN_BASE, include_top=False)
    dataset = pictures_dataset(alice, per_label=8)
    with django_capture_on_commit_callbacks(execute=True):  # the job, then what its success queued
        job = jobs.start_training(dataset, TRAIN_BASE, trainer.TrainConfig(epochs=3, fine_tune_epochs=0), alice)
    job.refresh_from_db()
    assert job.status == TrainingJob.Status.SUCCEEDED, job.message

    result = analysis.read(job)
    assert result is not None and result.status == analysis.DONE
    assert result.facts["features"] == "kept by the job"
    assert [(p["kept"], p["moved"]) for p in result.duplicates] == [(image("red_1.png").pk, image(TWIN).pk)]

    # An older job without kept features: the worker runs the job's base over its images first.
    (job.folder / "features.npz").unlink()
    analysis.run(job.pk)
    again = analysis.read(job)
    assert again.status == analysis.DONE and again.facts["features"] == "computed with the job's base"
    assert [(p["kept"], p["moved"]) for p in again.duplicates] == [(image("red_1.png").pk, image(TWIN).pk)]
    assert (job.folder / "features.npz").is_file()


# --- The job page -----------------------------------------------------------------------------------------
def test_the_job_page_shows_how_many_suspects_and_pairs_with_links(alice_client, job):
    page = alice_client.get(reverse("training:job_detail", args=[job.pk]))

    assert "1 suspected label error · 1 to review" in text(page)
    assert "1 near-duplicate pair across splits · 1 to fix" in text(page)
    assert reverse("training:job_suspects", args=[job.pk]) in page.content.decode()
    assert reverse("training:job_duplicates", args=[job.pk]) in page.content.decode()


def test_while_the_worker_computes_the_card_says_so_and_polls(alice_client, scenes, alice):
    job = finished_job(scenes, alice)
    analysis.write(job, analysis.QUEUED)

    card = alice_client.get(reverse("training:job_analysis", args=[job.pk]))

    assert "being computed" in text(card)
    assert 'hx-trigger="every 2s"' in card.content.decode()


def test_an_older_job_offers_the_check_and_the_button_queues_it(
    alice_client, scenes, alice, django_capture_on_commit_callbacks
):
    job = finished_job(scenes, alice)
    page = alice_client.get(reverse("training:job_detail", args=[job.pk]))
    assert "Find suspected label errors" in text(page)

    with django_capture_on_commit_callbacks(execute=True):  # the worker's task runs here (immediate mode)
        card = alice_client.post(reverse("training:job_analysis_start", args=[job.pk]), **HTMX)

    assert card.status_code == 200
    assert analysis.read(job).status == analysis.DONE
    assert "1 suspected label error" in text(alice_client.get(reverse("training:job_analysis", args=[job.pk])))


def test_the_check_is_not_queued_twice(alice_client, scenes, alice):
    job = finished_job(scenes, alice)
    analysis.write(job, analysis.RUNNING)

    card = alice_client.post(reverse("training:job_analysis_start", args=[job.pk]), **HTMX)

    assert "Suspected label errors are being looked for already" in text(card)


def test_a_check_whose_worker_died_can_be_started_again(alice_client, scenes, alice):
    job = finished_job(scenes, alice)
    analysis.write(job, analysis.RUNNING)
    data = json.loads((job.folder / "analysis.json").read_text())
    data["updated_at"] = (timezone.now() - analysis.STALE_AFTER * 2).isoformat()
    (job.folder / "analysis.json").write_text(json.dumps(data))

    card = alice_client.get(reverse("training:job_analysis", args=[job.pk]))

    assert "interrupted: the worker stopped while it ran" in text(card)
    assert "Find suspected label errors" in text(card)


# --- Suspected label errors --------------------------------------------------------------------------------
def test_the_suspects_page_shows_given_and_suggested_labels_and_the_score(alice_client, job):
    page = alice_client.get(reverse("training:job_suspects", args=[job.pk]))

    assert page.status_code == 200
    words = text(page)
    assert "1 suspected label error · 1 to review" in words
    assert "red_0.png Labelled blue" in words and "Looks like red" in words
    assert "Accept: move to “red”" in words and "Dismiss: label is right" in words
    assert reverse("training:image_thumbnail", args=[image(MISLABELLED).pk]) in page.content.decode()


def test_accept_moves_the_image_in_place_and_records_who_and_why(alice_client, alice, job):
    suspect = image(MISLABELLED)
    url = reverse("training:suspect_accept", args=[job.pk, suspect.pk])

    row = alice_client.post(url, **HTMX)

    assert row.status_code == 200
    assert "Accepted by alice: moved to “red”." in text(row)
    assert image(MISLABELLED).label.name == "red"
    change = ImageChange.objects.get(image=suspect)
    assert (change.action, change.changed_by, change.reason) == ("move", alice, f"job {job.pk}: suspected label error")
    assert (change.before["label_name"], change.after["label_name"]) == ("blue", "red")
    decision = SuspectDecision.objects.get(image=suspect)
    assert (decision.decision, decision.label.name, decision.suggested_label.name) == ("accepted", "blue", "red")


def test_dismiss_keeps_the_label_and_the_list_moves_on(alice_client, alice, job):
    url = reverse("training:suspect_dismiss", args=[job.pk, image(MISLABELLED).pk])

    row = alice_client.post(url, **HTMX)

    assert "Dismissed by alice: the label “blue” stays." in text(row)
    assert image(MISLABELLED).label.name == "blue"
    assert not ImageChange.objects.exists()
    page = alice_client.get(reverse("training:job_suspects", args=[job.pk]))
    assert "Every suspected label error of job" in text(page)
    assert "1 dismissed" in text(page)


def test_dismissed_stays_dismissed_in_a_later_jobs_list(alice_client, scenes, alice, job):
    alice_client.post(reverse("training:suspect_dismiss", args=[job.pk, image(MISLABELLED).pk]))

    later = finished_job(scenes, alice)

    assert computed(later).suspects == []


def test_an_accepted_suggestion_is_not_listed_again_either(alice_client, scenes, alice, job):
    alice_client.post(reverse("training:suspect_accept", args=[job.pk, image(MISLABELLED).pk]))
    DatasetImage.objects.filter(original_name=MISLABELLED).update(label=scenes.labels.get(name="blue"))  # undone

    later = finished_job(scenes, alice)

    assert computed(later).suspects == []


def test_without_htmx_the_buttons_are_forms_that_come_back_to_the_list(alice_client, job):
    response = alice_client.post(reverse("training:suspect_accept", args=[job.pk, image(MISLABELLED).pk]))

    assert response.status_code == 302 and response.url == reverse("training:job_suspects", args=[job.pk])
    assert image(MISLABELLED).label.name == "red"


def test_an_image_moved_since_the_job_is_shown_moved_and_left_alone(alice_client, scenes, job):
    DatasetImage.objects.filter(original_name=MISLABELLED).update(label=scenes.labels.get(name="green"))

    row = alice_client.post(reverse("training:suspect_accept", args=[job.pk, image(MISLABELLED).pk]), **HTMX)

    assert "This image was moved to “green” since the job: nothing was changed." in text(row)
    assert image(MISLABELLED).label.name == "green"
    assert not SuspectDecision.objects.exists()
    page = alice_client.get(reverse("training:job_suspects", args=[job.pk]) + "?show=all")
    assert "Moved to “green” since the job." in text(page)


def test_an_image_deleted_since_the_job_is_shown_deleted(alice_client, job):
    DatasetImage.objects.filter(original_name=MISLABELLED).delete()

    page = alice_client.get(reverse("training:job_suspects", args=[job.pk]) + "?show=all")

    assert "Deleted from the dataset since the job." in text(page)
    assert "1 deleted since" in text(page)


def test_an_image_not_in_the_list_is_404(alice_client, job):
    url = reverse("training:suspect_accept", args=[job.pk, image("green_3.png").pk])

    assert alice_client.post(url).status_code == 404


def test_others_see_the_lists_but_may_not_change_the_dataset(bob_client, job):
    suspects_page = bob_client.get(reverse("training:job_suspects", args=[job.pk]))
    pairs_page = bob_client.get(reverse("training:job_duplicates", args=[job.pk]))

    assert suspects_page.status_code == pairs_page.status_code == 200
    assert "Only the dataset’s managers can accept or dismiss suggestions." in text(suspects_page)
    assert "Accept" not in text(suspects_page) and "Keep both" not in text(pairs_page)
    twin, original = image(TWIN), image("red_1.png")
    for url in (
        reverse("training:suspect_accept", args=[job.pk, image(MISLABELLED).pk]),
        reverse("training:suspect_dismiss", args=[job.pk, image(MISLABELLED).pk]),
        reverse("training:duplicate_fix", args=[job.pk, original.pk, twin.pk]),
        reverse("training:job_analysis_start", args=[job.pk]),
    ):
        assert bob_client.post(url).status_code == 403, url
        assert bob_client.post(url, **HTMX).status_code == 403, url
    assert image(MISLABELLED).label.name == "blue" and image(TWIN).split == "validation"
    assert not SuspectDecision.objects.exists()


def test_lists_need_a_login(client, job):
    response = client.get(reverse("training:job_suspects", args=[job.pk]))

    assert response.status_code == 302 and "/login" in response.url


def test_a_job_not_checked_yet_says_where_to_start(alice_client, scenes, alice):
    job = finished_job(scenes, alice)

    page = alice_client.get(reverse("training:job_suspects", args=[job.pk]))

    assert page.status_code == 200
    assert "have not been checked for label errors" in text(page)


# --- Near-duplicates ---------------------------------------------------------------------------------------
def test_the_pairs_page_shows_both_pictures_their_splits_and_the_fix(alice_client, job):
    page = alice_client.get(reverse("training:job_duplicates", args=[job.pk]))

    words = text(page)
    assert "1 pair · 1 to fix" in words
    assert "red_1.png Train red" in words and "red_1 copy.jpg Validation red" in words
    assert "Keep both in train: move “red_1 copy.jpg” there" in words


def test_the_fix_keeps_both_in_the_same_split_and_records_it(alice_client, alice, job):
    twin, original = image(TWIN), image("red_1.png")

    row = alice_client.post(reverse("training:duplicate_fix", args=[job.pk, original.pk, twin.pk]), **HTMX)

    assert "Both are in train now" in text(row)
    assert image(TWIN).split == "train"
    change = ImageChange.objects.get(image=twin)
    assert (change.action, change.before, change.after) == ("split", {"split": "validation"}, {"split": "train"})
    assert change.reason == f"job {job.pk}: near-duplicate of “red_1.png”"
    assert "1 pair · 0 to fix" in text(alice_client.get(reverse("training:job_duplicates", args=[job.pk])))


def test_a_pair_the_job_did_not_list_is_404(alice_client, job):
    url = reverse("training:duplicate_fix", args=[job.pk, image("red_2.png").pk, image(TWIN).pk])

    assert alice_client.post(url).status_code == 404
