"""From a job's confusion matrix to its images, changed in place, and the dataset's history that undoes them."""

from __future__ import annotations

import re

import numpy as np
import pytest
from django.utils import timezone

from tests.training_helpers import TRAIN_BASE, colour_dataset
from training import curation, evaluation, outcomes
from training.models import Dataset, DatasetImage, ImageChange, TrainingJob

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}

# The model's answer for each validation image, by file name: (answered label, confidence). Labels in
# the model's order: blue 0, green 1, red 2. Images not listed are answered right at 0.9.
ANSWERS = {
    "red_0.png": ("blue", 0.6),
    "red_1.png": ("blue", 0.95),
    "red_2.png": ("green", 0.7),
    "red_3.png": ("red", 0.4),
    "blue_0.png": ("blue", 0.55),
}


def html(response) -> str:
    return " ".join(response.content.decode().split())


def text(response) -> str:
    """What a person reads: the page without its tags, entities decoded."""
    import html as entities

    return " ".join(entities.unescape(re.sub(r"<[^>]+>", " ", response.content.decode())).split()).replace(" ,", ",")


def finished_job(dataset: Dataset, user, answers: dict = ANSWERS) -> TrainingJob:
    """A finished job whose validation results (the outcomes file and the evaluation) are the ANSWERS."""
    snapshot = dataset.snapshot()
    labels = [name for _, name in snapshot["labels"]]
    index = {label_id: i for i, (label_id, _) in enumerate(snapshot["labels"])}
    names = dict(DatasetImage.objects.values_list("pk", "original_name"))
    rows = [row for row in snapshot["images"] if row[2] == "validation"]
    ids, truth = [row[0] for row in rows], [index[row[1]] for row in rows]
    probabilities = np.zeros((len(rows), len(labels)), np.float32)
    for i, (image_id, true) in enumerate(zip(ids, truth, strict=True)):
        answered, confidence = answers.get(names[image_id], (labels[true], 0.9))
        probabilities[i] = (1 - confidence) / (len(labels) - 1)
        probabilities[i, labels.index(answered)] = confidence
    job = TrainingJob.objects.create(
        dataset=dataset, created_by=user, base_key=TRAIN_BASE, base_name="MobileNetV2 0.35", snapshot=snapshot,
        status="succeeded", finished_at=timezone.now(),
        evaluation={"validation": evaluation.evaluate(probabilities, truth, labels, ids)},
    )  # fmt: skip
    outcomes.save_outcomes(job.folder, {"validation": ids}, {"validation": truth}, {"validation": probabilities})
    return job


@pytest.fixture
def colours(alice) -> Dataset:
    """Three labels of 8 images each, half of them validation: 4 validation images per label."""
    dataset = colour_dataset(alice, per_label=8, validation=50)
    for name in ANSWERS:  # the planted answers are on validation images
        DatasetImage.objects.filter(dataset=dataset, original_name=name).update(split="validation")
    return dataset


@pytest.fixture
def job(colours, alice) -> TrainingJob:
    return finished_job(colours, alice)


def image(name: str) -> DatasetImage:
    return DatasetImage.objects.select_related("label").get(original_name=name)


def cell_url(job: TrainingJob, query: str) -> str:
    return f"/datasets/jobs/{job.pk}/images/?{query}"


def names_on(response) -> list[str]:
    """The images of a cell page, in the order shown."""
    return re.findall(r'<label class="truncate" for="pick-\d+" title="([^"]+)"', response.content.decode())


# --- From the matrix to the images --------------------------------------------------------------------


def test_every_confusion_cell_and_each_labels_missed_count_links_to_its_images(alice_client, job):
    page = alice_client.get(f"/datasets/jobs/{job.pk}/").content.decode()
    assert f'href="/datasets/jobs/{job.pk}/images/?split=validation&amp;true=2&amp;predicted=0"' in page  # red→blue
    assert f'href="/datasets/jobs/{job.pk}/images/?split=validation&amp;true=2&amp;missed=1"' in page
    assert ">3 missed</a>" in page  # red: two answered blue, one green


def test_a_cell_shows_its_images_most_confident_mistake_first(alice_client, job):
    response = alice_client.get(cell_url(job, "split=validation&true=2&predicted=0"))
    assert response.status_code == 200
    assert names_on(response) == ["red_1.png", "red_0.png"]  # 95% before 60%
    page = text(response)
    assert "“red” images answered “blue”" in page
    assert "is red, answered blue 95%" in page


def test_a_diagonal_cell_shows_the_least_confident_right_answers_first(alice_client, job):
    response = alice_client.get(cell_url(job, "split=validation&true=0&predicted=0"))
    assert names_on(response)[0] == "blue_0.png"  # right, but only 55% sure
    assert "“blue” images answered right" in text(response)


def test_missed_images_of_a_label_are_every_wrong_answer_for_it(alice_client, job):
    response = alice_client.get(cell_url(job, "split=validation&true=2&missed=1"))
    assert names_on(response) == ["red_1.png", "red_2.png", "red_0.png"]  # 95%, 70%, 60%; red_3 was right


def test_the_cell_page_marks_images_moved_excluded_or_deleted_since(
    alice_client, alice, job, colours, django_capture_on_commit_callbacks
):
    curation.move_images([image("red_1.png")], colours.labels.get(name="blue"), alice)
    curation.set_excluded([image("red_2.png")], True, alice)
    with django_capture_on_commit_callbacks(execute=True):
        curation.delete_images([image("red_0.png")], alice)

    response = alice_client.get(cell_url(job, "split=validation&true=2&missed=1"))

    page = text(response)
    assert "now in “blue”" in page
    assert 'badge-muted" title="Kept in the dataset, skipped by training jobs">excluded</span>' in html(response)
    assert "deleted by alice" in page and "Undo the deletion" in page


def test_the_cell_page_is_paginated(alice_client, job, monkeypatch):
    from training import curation_views

    monkeypatch.setattr(curation_views, "CELL_PAGE_SIZE", 2)
    first = alice_client.get(cell_url(job, "split=validation&true=2&missed=1"))
    second = alice_client.get(cell_url(job, "split=validation&true=2&missed=1&page=2"))
    assert names_on(first) == ["red_1.png", "red_2.png"] and names_on(second) == ["red_0.png"]
    assert "page=2" in first.content.decode() and "Page 1 of 2" in text(first)
    assert "true=2&amp;missed=1&amp;page=2" in first.content.decode()  # the next page stays in the cell


@pytest.mark.parametrize(
    ("query", "sentence"),
    [
        ("split=validation&true=abc", "true= must be a label's number"),
        ("split=validation&true=-1", "true= must be a label's number"),
        ("split=validation&true=7", "This job has 3 labels, numbered 0 to 2: true=7 is none of them."),
        ("split=validation&predicted=3", "predicted=3 is none of them"),
        ("split=train", "There is no split “train” to show"),
        ("split=test", "has no results on a test split"),
        ("split=validation&true=1&missed=yes", "missed= must be 1, or left out."),
        ("split=validation&true=1&predicted=0&missed=1", "Use either predicted= or missed=1, not both."),
        ("split=validation&missed=1", "missed=1 needs true="),
    ],
)
def test_bad_query_parameters_are_refused_with_a_sentence(alice_client, job, query, sentence):
    response = alice_client.get(cell_url(job, query))
    assert response.status_code == 400
    assert sentence in text(response).replace("&#x27;", "'")


def test_a_job_without_per_image_results_says_so(alice_client, job):
    (job.folder / outcomes.OUTCOMES_FILE).unlink()
    response = alice_client.get(cell_url(job, "split=validation&true=2&predicted=0"))
    assert response.status_code == 200
    assert f"Job {job.pk} kept no per-image results: it ran before TransferLab kept them" in text(response)


def test_someone_who_may_not_change_the_dataset_sees_the_images_read_only(bob_client, job):
    response = bob_client.get(cell_url(job, "split=validation&true=2&predicted=0"))
    assert response.status_code == 200
    page = response.content.decode()
    assert "red_1.png" in page
    assert "bulk-form" not in page and "/curate/" not in page and ">Move<" not in page


# --- Changing an image in place -------------------------------------------------------------------


def card_post(job: TrainingJob, **fields) -> dict:
    return {"job": job.pk, "split": "validation", "view": "cell", "next": "/back/", **fields}


def test_moving_an_image_in_place_answers_its_card_with_the_change_and_an_undo(alice_client, alice, job, colours):
    red_1, blue = image("red_1.png"), colours.labels.get(name="blue")

    response = alice_client.post(
        f"/datasets/images/{red_1.pk}/curate/", card_post(job, action="move", label=blue.pk), **HTMX
    )

    assert response.status_code == 200
    page = text(response)
    assert f'id="cell-image-{red_1.pk}"' in html(response) and "<html" not in html(response)
    assert "now in “blue” The image was moved to “blue”. Undo" in page
    assert image("red_1.png").label == blue
    change = ImageChange.objects.get()
    assert (change.action, change.changed_by, change.reason) == ("move", alice, f"job {job.pk}: images behind "
                                                                 "its validation results")  # fmt: skip

    undone = alice_client.post(f"/datasets/{colours.pk}/history/{change.pk}/undo/", card_post(job), **HTMX)

    assert "Undone: “red_1.png” is in “red” again." in text(undone)
    assert image("red_1.png").label.name == "red"


def test_the_move_select_starts_on_the_label_the_model_answered(alice_client, job, colours):
    page = alice_client.get(cell_url(job, "split=validation&true=2&predicted=0")).content.decode()
    blue = colours.labels.get(name="blue")
    assert f'<option value="{blue.pk}" selected>blue</option>' in page


def test_excluding_and_including_an_image_in_place(alice_client, job):
    red_2 = image("red_2.png")
    excluded = alice_client.post(f"/datasets/images/{red_2.pk}/curate/", card_post(job, action="exclude"), **HTMX)
    assert "The image was excluded from training" in text(excluded) and ">Include</button>" in html(excluded)
    assert image("red_2.png").excluded

    included = alice_client.post(f"/datasets/images/{red_2.pk}/curate/", card_post(job, action="include"), **HTMX)
    assert "included in training again" in text(included)
    assert not image("red_2.png").excluded


def test_deleting_in_place_and_undoing_brings_back_the_row_and_its_files(
    alice_client, job, colours, django_capture_on_commit_callbacks
):
    red_0 = image("red_0.png")
    path = red_0.path
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_client.post(f"/datasets/images/{red_0.pk}/curate/", card_post(job, action="delete"), **HTMX)
    page = text(response)
    assert "deleted by alice The image was deleted (its files are kept 30 days, so Undo can bring it back)." in page
    assert ">Undo</button>" in html(response)
    assert not DatasetImage.objects.filter(pk=red_0.pk).exists() and not path.exists()

    change = ImageChange.objects.get(action="delete")
    undone = alice_client.post(f"/datasets/{colours.pk}/history/{change.pk}/undo/", card_post(job), **HTMX)

    assert "Undone: “red_0.png” is in “red” again." in text(undone)
    assert DatasetImage.objects.get(pk=red_0.pk).label.name == "red" and path.exists()


def test_a_refused_action_keeps_200_for_htmx_and_says_why(alice_client, job):
    red_1 = image("red_1.png")
    response = alice_client.post(f"/datasets/images/{red_1.pk}/curate/", card_post(job, action="move"), **HTMX)
    assert response.status_code == 200
    assert "Choose the label to move the images to." in text(response)
    assert not ImageChange.objects.exists()


def test_a_label_of_another_dataset_is_refused(alice_client, alice, job):
    other = colour_dataset(alice, name="Other", per_label=1)
    red_1 = image("red_1.png")
    label = other.labels.get(name="blue")
    response = alice_client.post(f"/datasets/images/{red_1.pk}/curate/", card_post(job, action="move", label=label.pk))
    assert response.status_code == 400
    assert "That label is not in this dataset any more" in text(response)
    assert image("red_1.png").label.name == "red"


def test_without_javascript_an_action_comes_back_to_the_page_with_a_message(alice_client, job, colours):
    red_1 = image("red_1.png")
    back = cell_url(job, "split=validation&true=2&predicted=0")
    response = alice_client.post(
        f"/datasets/images/{red_1.pk}/curate/", card_post(job, action="exclude", next=back), follow=True
    )
    assert response.redirect_chain[-1] == (back, 302)
    assert "The image was excluded from training" in text(response)


def test_unknown_actions_are_refused_without_a_change(alice_client, job):
    red_1 = image("red_1.png")
    response = alice_client.post(f"/datasets/images/{red_1.pk}/curate/", card_post(job, action="paint"))
    assert response.status_code == 400 and "Choose move, exclude, include or delete." in text(response)


def test_only_who_may_change_the_dataset_may_change_or_undo(bob_client, alice, job, colours):
    red_1 = image("red_1.png")
    (change,) = curation.set_excluded([red_1], True, alice)
    posts = [
        (f"/datasets/images/{red_1.pk}/curate/", card_post(job, action="delete")),
        (f"/datasets/{colours.pk}/images/curate/", card_post(job, action="delete", image=[red_1.pk])),
        (f"/datasets/{colours.pk}/history/{change.pk}/undo/", card_post(job)),
        (f"/datasets/{colours.pk}/history/batches/{change.batch}/undo/", card_post(job)),
    ]
    for url, data in posts:
        assert bob_client.post(url, data).status_code == 403, url
        assert bob_client.post(url, data, **HTMX).status_code == 403, url
    assert DatasetImage.objects.get(pk=red_1.pk).excluded
    assert ImageChange.objects.get().undone_at is None


def test_changes_need_a_post(alice_client, job, colours):
    red_1 = image("red_1.png")
    assert alice_client.get(f"/datasets/images/{red_1.pk}/curate/").status_code == 405
    assert alice_client.get(f"/datasets/{colours.pk}/images/curate/").status_code == 405


# --- Several at once ------------------------------------------------------------------------------


def test_ticked_images_are_moved_together_and_undone_together(alice_client, job, colours):
    red_0, red_1 = image("red_0.png"), image("red_1.png")
    blue = colours.labels.get(name="blue")

    response = alice_client.post(
        f"/datasets/{colours.pk}/images/curate/",
        card_post(job, action="move", label=blue.pk, image=[red_0.pk, red_1.pk], scope="selected"),
        **HTMX,
    )

    page = text(response)
    assert "2 images were moved to “blue”." in page and "Undo these 2 changes" in page
    assert html(response).count('hx-swap-oob="outerHTML"') == 2  # both cards show their change
    changes = list(ImageChange.objects.all())
    assert len(changes) == 2 and len({c.batch for c in changes}) == 1

    undone = alice_client.post(f"/datasets/{colours.pk}/history/batches/{changes[0].batch}/undo/",
                               card_post(job, view="selection"), **HTMX)  # fmt: skip

    assert "Undone: 2 changes." in text(undone)
    assert {image("red_0.png").label.name, image("red_1.png").label.name} == {"red"}


def test_apply_to_all_on_this_page(alice_client, job, colours):
    ids = [image(name).pk for name in ("red_0.png", "red_1.png", "red_2.png")]
    response = alice_client.post(
        f"/datasets/{colours.pk}/images/curate/",
        card_post(job, action="exclude", page_images=ids, image=[ids[0]], scope="page"),
        **HTMX,
    )
    assert "3 images were excluded from training" in text(response)
    assert DatasetImage.objects.filter(pk__in=ids, excluded=True).count() == 3


def test_a_selection_with_nothing_ticked_is_refused(alice_client, job, colours):
    data = card_post(job, action="exclude", scope="selected")
    htmx = alice_client.post(f"/datasets/{colours.pk}/images/curate/", data, **HTMX)
    assert htmx.status_code == 200 and "Tick at least one image first." in text(htmx)
    plain = alice_client.post(f"/datasets/{colours.pk}/images/curate/", data)
    assert plain.status_code == 400 and "Tick at least one image first." in text(plain)
    garbled = alice_client.post(f"/datasets/{colours.pk}/images/curate/", {**data, "image": ["x1"]})
    assert garbled.status_code == 400 and "The selection could not be read" in text(garbled)


def test_images_of_another_dataset_are_never_changed_by_a_selection(alice_client, alice, job, colours):
    other = colour_dataset(alice, name="Other", per_label=1)
    foreign = other.images.first()
    response = alice_client.post(
        f"/datasets/{colours.pk}/images/curate/", card_post(job, action="exclude", image=[foreign.pk])
    )
    assert response.status_code == 409 and "None of the chosen images is in the dataset" in text(response)
    assert not DatasetImage.objects.get(pk=foreign.pk).excluded


# --- History ----------------------------------------------------------------------------------------


def test_the_history_lists_every_change_newest_first_with_who_what_and_why(alice_client, alice, colours, bob):
    red_1 = image("red_1.png")
    curation.move_images([red_1], colours.labels.get(name="blue"), alice, reason="job 4: confusion")
    (excluded,) = curation.set_excluded([image("green_0.png")], True, alice)
    curation.undo(excluded, bob)

    response = alice_client.get(f"/datasets/{colours.pk}/history/")

    page = text(response)
    assert response.status_code == 200
    assert page.index("green_0.png") < page.index("red_1.png")  # newest first
    assert "moved from “red” to “blue”" in page and "job 4: confusion" in page and "alice" in page
    assert 'class="is-undone"' in html(response) and "undone by bob" in page
    assert f'src="/datasets/images/{red_1.pk}/thumbnail/"' in html(response)


def test_the_dataset_page_links_to_its_history(alice_client, colours):
    assert f'href="/datasets/{colours.pk}/history/"' in alice_client.get(f"/datasets/{colours.pk}/").content.decode()


def test_undo_from_the_history_in_place(alice_client, alice, colours):
    (change,) = curation.set_excluded([image("red_1.png")], True, alice)
    response = alice_client.post(
        f"/datasets/{colours.pk}/history/{change.pk}/undo/", {"view": "history", "page": "1"}, **HTMX
    )
    page = text(response)
    assert response.status_code == 200 and html(response).startswith('<div id="history"')
    assert "Undone: “red_1.png” is included in training again." in page and "undone by alice" in page
    assert not image("red_1.png").excluded


def test_a_batch_is_undone_from_the_history(alice_client, alice, colours):
    curation.set_excluded(colours.images.filter(label__name="red"), True, alice)
    page = text(alice_client.get(f"/datasets/{colours.pk}/history/"))
    assert "8 changes made together" in page and "Undo these 8 changes" in page
    batch = ImageChange.objects.first().batch

    response = alice_client.post(f"/datasets/{colours.pk}/history/batches/{batch}/undo/", {"view": "history"})

    assert response.status_code == 302
    assert not colours.images.filter(excluded=True).exists()


def test_an_undo_blocked_by_a_later_change_says_which(alice_client, alice, colours):
    red_1 = image("red_1.png")
    (moved,) = curation.move_images([red_1], colours.labels.get(name="blue"), alice)
    curation.set_excluded([red_1], True, alice)
    url = f"/datasets/{colours.pk}/history/{moved.pk}/undo/"

    htmx = alice_client.post(url, {"view": "history"}, **HTMX)
    plain = alice_client.post(url, {"view": "history"})

    assert htmx.status_code == 200 and plain.status_code == 409
    for response in (htmx, plain):
        assert "“red_1.png” changed again later: excluded from training by alice" in text(response)
        assert "Undo the later change first." in text(response)
    assert image("red_1.png").label.name == "blue"


def test_someone_who_may_not_change_the_dataset_reads_the_history_without_undo(bob_client, alice, colours):
    curation.set_excluded([image("red_1.png")], True, alice)
    page = bob_client.get(f"/datasets/{colours.pk}/history/").content.decode()
    assert "red_1.png" in page and "/undo/" not in page


def test_an_empty_history_says_what_will_appear_there(alice_client, colours):
    assert "No image of this dataset has been changed yet" in text(alice_client.get(f"/datasets/{colours.pk}/history/"))


# --- The dataset page and the image page ------------------------------------------------------------


def test_the_grid_shows_excluded_images_and_filters_them(alice_client, alice, colours):
    red_1 = image("red_1.png")
    curation.set_excluded([red_1], True, alice)

    excluded = alice_client.get(f"/datasets/{colours.pk}/?training=excluded")
    included = alice_client.get(f"/datasets/{colours.pk}/?training=included")

    assert "1 image match the filters" in text(excluded) and ">excluded</span>" in html(excluded)
    assert "red_1.png" not in included.content.decode()


def test_the_grid_excludes_in_place_with_an_undo(alice_client, colours):
    red_1 = image("red_1.png")
    response = alice_client.post(
        f"/datasets/images/{red_1.pk}/curate/", {"action": "exclude", "view": "grid", "next": "/x/"}, **HTMX
    )
    page = text(response)
    assert f'id="image-{red_1.pk}"' in html(response) and ">excluded</span>" in html(response)
    assert "The image was excluded from training" in page and ">Undo</button>" in html(response)
    assert ImageChange.objects.get().reason == "dataset page"


def test_the_image_page_edits_and_deletes_are_recorded_and_undoable(
    alice_client, colours, django_capture_on_commit_callbacks
):
    red_1 = image("red_1.png")
    blue = colours.labels.get(name="blue")
    alice_client.post(f"/datasets/images/{red_1.pk}/update/", {"label": blue.pk, "split": "train"})
    with django_capture_on_commit_callbacks(execute=True):
        alice_client.post(f"/datasets/images/{red_1.pk}/delete/")

    actions = list(ImageChange.objects.order_by("id").values_list("action", "reason"))
    assert actions == [("move", "image page"), ("split", "image page"), ("delete", "image page")]
    deletion = ImageChange.objects.get(action="delete")
    alice_client.post(f"/datasets/{colours.pk}/history/{deletion.pk}/undo/", {"view": "history"})
    restored = DatasetImage.objects.get(pk=red_1.pk)
    assert (restored.label, restored.split) == (blue, "train") and restored.path.exists()


def test_the_training_form_counts_excluded_images_out(alice_client, alice, colours):
    curation.set_excluded(colours.images.filter(label__name="red", split="train"), True, alice)
    page = text(alice_client.get(f"/datasets/{colours.pk}/train/"))
    assert "“red” has no training image" in page


def test_image_changes_are_read_only_in_the_admin(staff_client, alice, colours):
    curation.set_excluded([image("red_1.png")], True, alice)
    change = ImageChange.objects.get()
    listing = staff_client.get("/admin/training/imagechange/?action__exact=exclude")
    assert listing.status_code == 200 and "red_1.png" in listing.content.decode()
    assert staff_client.get("/admin/training/imagechange/add/").status_code == 403
    detail = staff_client.get(f"/admin/training/imagechange/{change.pk}/change/")
    assert detail.status_code == 200 and 'name="_save"' not in detail.content.decode()
