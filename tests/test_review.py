"""The review of a trained model's low-confidence predictions: who sees it, what it lists, what adding
and dismissing do to the dataset, and the sentences bad input gets."""

from __future__ import annotations

import html
import io
from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone
from PIL import Image

from classifier.models import ApiToken, Prediction
from tests.training_helpers import TRAIN_BASE, colour_dataset, colour_png
from training import storage
from training.models import Dataset, ImageChange, Label, PredictionReview, TrainedModel, TrainingJob

HTMX = {"HTTP_HX_REQUEST": "true"}


def text(response) -> str:
    """The page as a reader sees it (entities such as &#x27; read as the characters they are)."""
    return html.unescape(response.content.decode())


def trained_model(dataset: Dataset, user, name: str = "Colours v1") -> TrainedModel:
    """A finished job's model as rows only: listing and adding never run it."""
    job = TrainingJob.objects.create(dataset=dataset, created_by=user, base_key=TRAIN_BASE, base_name="MobileNetV2",
                                     status="succeeded", snapshot=dataset.snapshot())  # fmt: skip
    return TrainedModel.objects.create(job=job, dataset=dataset, name=name, base_key=TRAIN_BASE, input_size=96,
                                       labels=["blue", "green", "red"])  # fmt: skip


_age = iter(range(100_000, 0, -1))  # seconds ago: every prediction is newer than the last


def jpeg(data: bytes) -> bytes:
    """The thumbnail Classify keeps: a JPEG of the picture."""
    out = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(out, format="JPEG")
    return out.getvalue()


def prediction(user, model_key: str, best: float, name: str, *, data: bytes | None = None, keep: bool = True):
    """A stored prediction as Classify or the API leaves it; each one newer than the one made before."""
    data = data if data is not None else colour_png(2, seed=hash(name) % 10_000)
    second = min(best * 0.9, (1 - best) * 0.6)  # guesses come best first
    row = Prediction(
        user=user, model_key=model_key, model_name="Colours v1", original_name=name, image_format="PNG",
        width=64, height=64, inference_ms=3.0, created_at=timezone.now() - timedelta(seconds=next(_age)),
        top=[{"label": "red", "probability": best, "index": 2},
             {"label": "green", "probability": round(second, 6), "index": 1},
             {"label": "blue", "probability": round(min(second * 0.8, 1 - best - second), 6), "index": 0}],
    )  # fmt: skip
    if keep:
        row.image.save(f"{name}.png", ContentFile(data), save=False)
    row.thumbnail.save(f"{name}.jpg", ContentFile(jpeg(data)), save=False)
    row.save()
    return row


@pytest.fixture
def setup(alice, bob):
    """Alice's dataset with one trained model, and predictions bob made with it."""
    dataset = colour_dataset(alice, per_label=3)
    model = trained_model(dataset, alice)
    return dataset, model


def url(dataset: Dataset, action: str = "") -> str:
    return f"/datasets/{dataset.pk}/review/{action + '/' if action else ''}"


def label(dataset: Dataset, name: str) -> Label:
    return dataset.labels.get(name=name)


# --- The list ---------------------------------------------------------------------------------


def test_the_list_shows_the_models_unsure_unreviewed_predictions_newest_first(setup, alice, alice_client, bob):
    dataset, model = setup
    older = prediction(bob, model.key, 0.31, "older-dusk.png")
    newer = prediction(bob, model.key, 0.52, "newer-fog.png")
    prediction(bob, model.key, 0.93, "sure-red.png")
    prediction(bob, "mobilenetv2", 0.20, "zoo-model.png")
    reviewed = prediction(bob, model.key, 0.25, "already-seen.png")
    PredictionReview.objects.create(prediction=reviewed, trained_model=model, decision="dismissed", reviewed_by=alice)

    response = alice_client.get(url(dataset))

    page = text(response)
    assert response.status_code == 200
    assert page.index("newer-fog.png") < page.index("older-dusk.png")
    for hidden in ("sure-red.png", "zoo-model.png", "already-seen.png"):
        assert hidden not in page
    assert "by bob" in page and "31%" in page and "52%" in page
    assert f"/datasets/{dataset.pk}/review/{newer.pk}/thumbnail/" in page
    assert f'id="review-{older.pk}"' in page
    assert "made 4 predictions; 3 below 60% confidence, <strong>2 to review</strong>" in " ".join(page.split())


def test_the_threshold_comes_from_the_setting_and_the_page_can_change_it(setup, alice_client, bob, settings):
    dataset, model = setup
    prediction(bob, model.key, 0.35, "unsure.png")
    prediction(bob, model.key, 0.75, "fairly-sure.png")
    settings.REVIEW_CONFIDENCE = 0.5

    page = text(alice_client.get(url(dataset)))
    assert "unsure.png" in page and "fairly-sure.png" not in page

    page = text(alice_client.get(url(dataset), {"below": 80}))
    assert "unsure.png" in page and "fairly-sure.png" in page
    assert "less than 80% sure" in page


def test_a_threshold_that_is_not_a_percentage_says_so_and_the_default_list_shows(setup, alice_client, bob):
    dataset, model = setup
    prediction(bob, model.key, 0.35, "unsure.png")

    response = alice_client.get(url(dataset), {"below": "lots"})

    in_place = alice_client.get(url(dataset), {"below": "0"}, **HTMX)

    assert response.status_code == 400
    assert "The confidence is a whole percentage from 1 to 100. Showing the usual list instead." in text(response)
    assert "unsure.png" in text(response)
    assert in_place.status_code == 200 and "The confidence is a whole percentage from 1 to 100." in text(in_place)


def test_the_dataset_list_covers_every_model_and_can_narrow_to_one(setup, alice, alice_client, bob):
    dataset, first = setup
    second = trained_model(dataset, alice, name="Colours v2")
    prediction(bob, first.key, 0.4, "from-first.png")
    prediction(bob, second.key, 0.4, "from-second.png")

    page = text(alice_client.get(url(dataset)))
    assert "from-first.png" in page and "from-second.png" in page

    page = text(alice_client.get(url(dataset), {"model": second.pk}))
    assert "from-second.png" in page and "from-first.png" not in page


def test_many_predictions_come_in_pages(setup, alice_client, bob):
    dataset, model = setup
    for i in range(23):
        prediction(bob, model.key, 0.3, f"many-{i:02d}.png")

    first = text(alice_client.get(url(dataset)))
    second = text(alice_client.get(url(dataset), {"page": 2}))

    assert "many-22.png" in first and "many-02.png" not in first and "Page 1 of 2" in first
    assert "many-02.png" in second and "many-22.png" not in second


# --- Adding and dismissing ----------------------------------------------------------------------


def test_adding_a_picture_under_an_existing_label_stores_it_like_an_upload(setup, alice, alice_client, bob):
    dataset, model = setup
    picture = colour_png(0, seed=777)
    unsure = prediction(bob, model.key, 0.41, "dusk-car.png", data=picture)

    response = alice_client.post(url(dataset, "add"), {"prediction": unsure.pk, "label": label(dataset, "blue").pk})

    assert response.status_code == 302
    image = dataset.images.get(sha256=storage.sha256(picture))
    assert (image.label.name, image.original_name, image.added_by) == ("blue", "dusk-car.png", alice)
    assert image.path.read_bytes() == picture and image.thumbnail_path.is_file()
    assert image.split in ("train", "validation")
    change = ImageChange.objects.get(image=image)
    assert change.action == "add" and change.changed_by == alice
    assert change.reason == "review of low-confidence predictions of Colours v1"
    review = PredictionReview.objects.get(prediction=unsure)
    assert (review.decision, review.image, review.reviewed_by, review.trained_model) == ("added", image, alice, model)
    page = text(alice_client.get(response["Location"]))
    assert "Added 1 picture to “blue”." in page and f'id="review-{unsure.pk}"' not in page


def test_an_addition_from_the_review_is_undone_like_any_change(setup, alice, alice_client, bob):
    from training import curation

    dataset, model = setup
    picture = colour_png(0, seed=778)
    unsure = prediction(bob, model.key, 0.41, "undo-me.png", data=picture)
    alice_client.post(url(dataset, "add"), {"prediction": unsure.pk, "label": label(dataset, "blue").pk})

    curation.undo(ImageChange.objects.get(action="add"), alice)

    assert not dataset.images.filter(sha256=storage.sha256(picture)).exists()
    assert f'id="review-{unsure.pk}"' not in text(alice_client.get(url(dataset)))  # reviewed stays reviewed


def test_adding_with_a_new_label_creates_the_label(setup, alice_client, bob):
    dataset, model = setup
    unsure = prediction(bob, model.key, 0.41, "sunset.png", data=colour_png(1, seed=4242))

    response = alice_client.post(url(dataset, "add"), {"prediction": unsure.pk, "label": "", "new_label": " orange "})

    assert response.status_code == 302
    orange = label(dataset, "orange")
    assert [i.original_name for i in orange.images.all()] == ["sunset.png"]
    assert ImageChange.objects.filter(dataset=dataset, action="add").count() == 1


def test_a_picture_already_in_the_dataset_says_where_it_is(setup, alice_client, bob):
    dataset, model = setup
    existing = label(dataset, "green").images.first()
    same = prediction(bob, model.key, 0.45, "again.png", data=existing.path.read_bytes())

    response = alice_client.post(url(dataset, "add"), {"prediction": same.pk, "label": label(dataset, "red").pk})

    assert response.status_code == 409
    assert "This picture is already in the dataset, in “green”." in text(response)
    assert dataset.images.filter(sha256=existing.sha256).count() == 1
    assert not PredictionReview.objects.filter(prediction=same).exists()
    assert not ImageChange.objects.exists()


def test_dismissing_takes_a_prediction_off_the_list_and_adds_nothing(setup, alice, alice_client, bob):
    dataset, model = setup
    unsure = prediction(bob, model.key, 0.2, "blurry.png")
    images = dataset.images.count()

    response = alice_client.post(url(dataset, "dismiss"), {"prediction": unsure.pk})

    assert response.status_code == 302
    review = PredictionReview.objects.get(prediction=unsure)
    assert (review.decision, review.image, review.reviewed_by) == ("dismissed", None, alice)
    assert dataset.images.count() == images
    page = text(alice_client.get(response["Location"]))
    assert "Dismissed 1 picture." in page and "Nothing to review." in page


def test_a_selection_is_added_to_one_label_or_dismissed_together(setup, alice_client, bob):
    dataset, model = setup
    first = prediction(bob, model.key, 0.3, "first.png", data=colour_png(1, seed=501))
    second = prediction(bob, model.key, 0.3, "second.png", data=colour_png(1, seed=502))
    third = prediction(bob, model.key, 0.3, "third.png")
    fourth = prediction(bob, model.key, 0.3, "fourth.png")

    response = alice_client.post(
        url(dataset, "add"), {"prediction": [first.pk, second.pk], "label": "", "new_label": "teal"}
    )
    assert response.status_code == 302
    assert sorted(i.original_name for i in label(dataset, "teal").images.all()) == ["first.png", "second.png"]

    response = alice_client.post(url(dataset, "dismiss"), {"prediction": [third.pk, fourth.pk]})
    assert response.status_code == 302
    assert PredictionReview.objects.filter(decision="dismissed").count() == 2
    page = text(alice_client.get(response["Location"]))
    assert "Dismissed 2 pictures." in page and "Nothing to review." in page


def test_a_prediction_someone_already_reviewed_says_who(setup, alice, alice_client, bob, staff):
    dataset, model = setup
    unsure = prediction(bob, model.key, 0.3, "seen.png")
    PredictionReview.objects.create(prediction=unsure, trained_model=model, decision="dismissed", reviewed_by=staff)

    response = alice_client.post(url(dataset, "add"), {"prediction": unsure.pk, "label": label(dataset, "red").pk})

    assert response.status_code == 409
    assert "Already reviewed: dismissed by staff." in text(response)


def test_without_the_original_a_prediction_can_only_be_dismissed(setup, alice_client, bob):
    dataset, model = setup
    thumb_only = prediction(bob, model.key, 0.3, "thumb-only.png", keep=False)

    page = text(alice_client.get(url(dataset)))
    assert "Only a thumbnail of this picture was kept, so it cannot be added." in page
    assert f'id="review-label-{thumb_only.pk}"' not in page

    response = alice_client.post(url(dataset, "add"), {"prediction": thumb_only.pk, "label": label(dataset, "red").pk})
    assert response.status_code == 409
    assert "Only a thumbnail of this picture was kept" in text(response)
    assert alice_client.get(url(dataset, f"{thumb_only.pk}/image")).status_code == 404

    assert alice_client.post(url(dataset, "dismiss"), {"prediction": thumb_only.pk}).status_code == 302
    assert PredictionReview.objects.get(prediction=thumb_only).decision == "dismissed"


# --- HTMX: in place ------------------------------------------------------------------------------


def test_a_rows_buttons_answer_with_what_became_of_that_row(setup, alice_client, bob):
    dataset, model = setup
    keep = prediction(bob, model.key, 0.3, "keep-me.png", data=colour_png(0, seed=901))
    drop = prediction(bob, model.key, 0.3, "drop-me.png")
    left = prediction(bob, model.key, 0.3, "still-here.png")
    row = {"row": "1", "below": "60", "page": "1"}

    added = alice_client.post(url(dataset, "add"), {**row, "prediction": keep.pk, "label": label(dataset, "red").pk},
                              **HTMX)  # fmt: skip
    dismissed = alice_client.post(url(dataset, "dismiss"), {**row, "prediction": drop.pk}, **HTMX)
    refused = alice_client.post(url(dataset, "add"), {**row, "prediction": left.pk, "label": "", "new_label": ""},
                                **HTMX)  # fmt: skip

    assert added.status_code == dismissed.status_code == refused.status_code == 200
    assert f'<tr id="review-{keep.pk}" class="review-done">' in text(added)
    assert "“keep-me.png” is now in “red”" in text(added) and "Open it in the dataset" in text(added)
    assert 'id="review-counts"' in text(added) and 'hx-swap-oob="true"' in text(added)
    assert "“drop-me.png” will not be listed again." in text(dismissed)
    assert f'<tr id="review-{left.pk}" class="review-row">' in text(refused)
    assert "Choose a label, or type the name of a new one." in text(refused)
    assert "<html" not in text(added) + text(refused)


def test_the_selections_buttons_answer_with_the_whole_list(setup, alice_client, bob):
    dataset, model = setup
    one = prediction(bob, model.key, 0.3, "one.png", data=colour_png(1, seed=333))
    two = prediction(bob, model.key, 0.3, "two.png")

    response = alice_client.post(
        url(dataset, "add"), {"prediction": [one.pk], "label": label(dataset, "green").pk, "below": "60"}, **HTMX
    )

    page = text(response)
    assert response.status_code == 200 and page.strip().startswith('<div id="review-list"')
    assert "Added 1 picture to “green”." in page
    assert f'id="review-{one.pk}"' not in page and f'id="review-{two.pk}"' in page


# --- Bad input: a sentence, never a 500 ----------------------------------------------------------


@pytest.mark.parametrize(
    ("form", "sentence"),
    [
        ({"label": "999999"}, "Choose one of this dataset's labels, or type the name of a new one."),
        ({"label": "", "new_label": ""}, "Choose a label, or type the name of a new one."),
        ({"label": "", "new_label": "   "}, "Choose a label, or type the name of a new one."),
        ({"label": "", "new_label": "cats/dogs"}, "A label name cannot contain /"),
        ({"new_label": "x" * 65}, "A label name can be at most 64 characters"),
        ({"label": "red", "new_label": "blue"}, "Choose an existing label or type a new name, not both."),
    ],
)
def test_a_bad_label_choice_gets_a_sentence(setup, alice_client, bob, form, sentence):
    dataset, model = setup
    unsure = prediction(bob, model.key, 0.3, "unsure.png")
    if form.get("label") == "red":
        form = {**form, "label": label(dataset, "red").pk}

    response = alice_client.post(url(dataset, "add"), {"prediction": unsure.pk, **form})
    in_place = alice_client.post(url(dataset, "add"), {"prediction": unsure.pk, **form}, **HTMX)

    assert response.status_code == 400 and sentence in text(response)
    assert in_place.status_code == 200 and sentence in text(in_place)
    assert not PredictionReview.objects.exists() and not ImageChange.objects.exists()


def test_a_label_of_another_dataset_is_refused(setup, alice, alice_client, bob):
    dataset, model = setup
    other = colour_dataset(alice, name="Other", per_label=1, labels=("red",))
    unsure = prediction(bob, model.key, 0.3, "unsure.png")

    response = alice_client.post(url(dataset, "add"), {"prediction": unsure.pk, "label": label(other, "red").pk})

    assert response.status_code == 400
    assert "Choose one of this dataset's labels, or type the name of a new one." in text(response)
    assert not other.images.filter(original_name="unsure.png").exists()


def test_no_picture_chosen_or_one_of_another_model_gets_a_sentence(setup, alice_client, bob):
    dataset, _ = setup
    foreign = prediction(bob, "mobilenetv2", 0.3, "zoo.png")

    nothing = alice_client.post(url(dataset, "dismiss"), {})
    elsewhere = alice_client.post(url(dataset, "dismiss"), {"prediction": foreign.pk})
    garbage = alice_client.post(url(dataset, "dismiss"), {"prediction": "abc"})

    assert nothing.status_code == 400 and "Choose at least one picture first." in text(nothing)
    for response in (elsewhere, garbage):
        assert response.status_code == 400
        assert "One of the chosen pictures is no longer on the list" in text(response)
    assert not PredictionReview.objects.exists()


# --- Who may see and act -------------------------------------------------------------------------


def test_only_who_may_change_the_dataset_sees_or_acts_on_the_review(setup, bob, bob_client):
    dataset, model = setup
    unsure = prediction(bob, model.key, 0.3, "bobs-own.png")

    assert bob_client.get(url(dataset)).status_code == 403
    assert bob_client.get(url(dataset, f"{unsure.pk}/thumbnail")).status_code == 403
    assert bob_client.get(url(dataset, f"{unsure.pk}/image")).status_code == 403
    assert bob_client.post(url(dataset, "add"), {"prediction": unsure.pk, "new_label": "mine"}).status_code == 403
    assert bob_client.post(url(dataset, "dismiss"), {"prediction": unsure.pk}).status_code == 403
    assert not PredictionReview.objects.exists() and not dataset.labels.filter(name="mine").exists()
    assert Client().get(url(dataset)).status_code == 302  # to the log-in page


def test_staff_review_any_dataset_and_files_of_other_models_are_not_served(setup, alice, staff_client, bob):
    dataset, model = setup
    unsure = prediction(bob, model.key, 0.3, "unsure.png")
    foreign = prediction(bob, "mobilenetv2", 0.3, "zoo.png")

    assert "unsure.png" in text(staff_client.get(url(dataset)))
    thumbnail = staff_client.get(url(dataset, f"{unsure.pk}/thumbnail"))
    assert thumbnail.status_code == 200 and thumbnail["Content-Type"] == "image/jpeg"
    assert staff_client.get(url(dataset, f"{foreign.pk}/thumbnail")).status_code == 404
    assert staff_client.get("/datasets/999999/review/").status_code == 404


def test_the_dataset_and_job_pages_say_how_many_wait_but_link_only_for_who_may_act(setup, alice_client, bob):
    dataset, model = setup
    bob_client = Client()
    bob_client.force_login(bob)
    prediction(bob, model.key, 0.3, "one.png")
    prediction(bob, model.key, 0.4, "two.png")
    prediction(bob, model.key, 0.9, "sure.png")
    review_url = f"/datasets/{dataset.pk}/review/"

    dataset_page = " ".join(text(alice_client.get(f"/datasets/{dataset.pk}/")).split())
    job_page = " ".join(text(alice_client.get(f"/datasets/jobs/{model.job_id}/")).split())

    assert f'<a href="{review_url}"><strong>2 low-confidence predictions to review</strong></a>' in dataset_page
    assert "Used for 3 predictions in Classify and the API; 2 below 60% confidence." in job_page
    assert f'href="{review_url}?model={model.pk}"><strong>2 low-confidence predictions to review' in job_page
    bobs_job_page = text(bob_client.get(f"/datasets/jobs/{model.job_id}/"))
    assert "Used for 3 predictions" in bobs_job_page and review_url not in bobs_job_page
    assert review_url not in text(bob_client.get(f"/datasets/{dataset.pk}/"))


# --- The real path: the API with a trained model --------------------------------------------------


def test_a_prediction_made_through_the_api_is_listed_and_added_to_the_dataset(
    alice, alice_client, bob, install_weights, settings
):
    from tests.test_int8 import finished_job

    install_weights(TRAIN_BASE, include_top=False)
    dataset = colour_dataset(alice, per_label=4)
    model = TrainedModel.objects.get(job=finished_job(alice, dataset))
    api = Client(HTTP_AUTHORIZATION=f"Bearer {ApiToken.issue(bob, 'sorting script')[1]}")
    picture = colour_png(1, seed=8080)
    settings.REVIEW_CONFIDENCE = 1.0  # the untrained model's answers are random: list them all

    kept = api.post("/api/v1/predict", {"images": [SimpleUploadedFile("field.png", picture)], "model": model.key})
    settings.KEEP_CLASSIFIED_IMAGES = False
    thumb = api.post("/api/v1/predict", {"images": [SimpleUploadedFile("night.png", colour_png(0, 9))],
                                         "model": model.key})  # fmt: skip

    assert kept.status_code == thumb.status_code == 200
    page = text(alice_client.get(url(dataset), {"model": model.pk}))
    assert "field.png" in page and "night.png" in page and "by bob" in page
    kept_id = kept.json()["results"][0]["id"]
    response = alice_client.post(url(dataset, "add"), {"prediction": kept_id, "label": label(dataset, "green").pk})
    assert response.status_code == 302
    assert dataset.images.get(sha256=storage.sha256(picture)).label.name == "green"
    thumb_id = thumb.json()["results"][0]["id"]
    refused = alice_client.post(url(dataset, "add"), {"prediction": thumb_id, "label": label(dataset, "green").pk})
    assert refused.status_code == 409 and "Only a thumbnail of this picture was kept" in text(refused)
