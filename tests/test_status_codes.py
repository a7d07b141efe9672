"""A form shown again with its errors is a 4xx, so scripts and monitors can tell a refusal from a success.

400: the input is wrong. 409: the input is fine but the state of things refuses it (an import is
already running, the dataset cannot be trained on yet, the model's weights are missing).
HTMX requests keep 200, because htmx swaps only 2xx answers and the partial carries the errors.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from classifier.models import ApiToken
from tests.dataset_helpers import image_zip
from tests.helpers import image_bytes
from tests.training_helpers import TRAIN_BASE, colour_dataset
from training.models import Dataset, ImportJob, Label, TrainingJob
from webapp.http import form_status

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}


def jpeg(name: str = "a.jpg") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, image_bytes(), content_type="image/jpeg")


@pytest.fixture
def dataset(alice) -> Dataset:
    return Dataset.objects.create(name="Pets", created_by=alice)


# --- The helper ------------------------------------------------------------------------------


class _Request:
    def __init__(self, htmx: bool) -> None:
        self.htmx = htmx


class _Form:
    def __init__(self, bound: bool, errors: dict) -> None:
        self.is_bound, self.errors = bound, errors


@pytest.mark.parametrize(
    ("htmx", "bound", "errors", "conflict", "expected"),
    [
        (False, False, {}, False, 200),  # a GET: the empty form
        (False, True, {}, False, 200),  # valid input
        (False, True, {"name": ["required"]}, False, 400),
        (False, True, {}, True, 409),
        (True, True, {"name": ["required"]}, False, 200),  # htmx swaps only 2xx
        (True, True, {}, True, 200),
    ],
)
def test_form_status(htmx, bound, errors, conflict, expected):
    assert form_status(_Request(htmx), _Form(bound, errors), conflict=conflict) == expected


# --- Classify and tokens -----------------------------------------------------------------------


def test_classify_without_javascript_refuses_bad_input_with_400(bob_client, fast_model):
    response = bob_client.post("/", {"model": fast_model})
    assert response.status_code == 400
    assert "Choose at least one image to classify." in response.text and "<html" in response.text


def test_classify_with_a_model_that_cannot_run_is_409(bob_client, fast_model):
    response = bob_client.post("/", {"model": "resnet50", "images": [jpeg()]})
    assert response.status_code == 409
    assert "ResNet50 cannot run yet" in response.text


def test_classify_with_damaged_weights_is_409(bob_client, fast_model, settings):
    from classifier import zoo

    (Path(settings.WEIGHTS_DIR) / zoo.get(fast_model).top.filename).write_bytes(b"garbage, not HDF5")
    response = bob_client.post("/", {"images": [jpeg()]})
    assert response.status_code == 409
    assert "could not be loaded or run on this server" in response.text


def test_classify_over_htmx_keeps_200_for_the_partial(bob_client, fast_model):
    response = bob_client.post("/", {"model": fast_model}, **HTMX)
    assert response.status_code == 200 and "Choose at least one image to classify." in response.text


def test_classify_success_is_200(bob_client, fast_model):
    assert bob_client.post("/", {"images": [jpeg()]}).status_code == 200


def test_a_token_without_a_name_is_400(bob_client):
    response = bob_client.post("/tokens/", {"name": "  "})
    assert response.status_code == 400 and "This field is required." in response.text
    assert not ApiToken.objects.exists()
    assert bob_client.post("/tokens/", {"name": "script"}).status_code == 200


# --- Datasets and labels -----------------------------------------------------------------------


def test_dataset_create_and_edit_refuse_bad_input_with_400(alice_client, alice, dataset):
    Dataset.objects.create(name="Birds", created_by=alice)
    response = alice_client.post("/datasets/new/", {"name": "birds", "validation_percent": 20, "test_percent": 0})
    assert response.status_code == 400 and "A dataset with this name already exists." in response.text
    response = alice_client.post(
        f"/datasets/{dataset.pk}/edit/", {"name": "Pets", "validation_percent": 80, "test_percent": 50}
    )
    assert response.status_code == 400
    assert alice_client.get("/datasets/new/").status_code == 200


def test_label_create_and_edit_refuse_bad_input_with_400(alice_client, dataset):
    Label.objects.create(dataset=dataset, name="cats")
    dogs = Label.objects.create(dataset=dataset, name="dogs")
    response = alice_client.post(f"/datasets/{dataset.pk}/labels/new/", {"name": "CATS"})
    assert response.status_code == 400 and "This dataset already has a label “cats”" in response.text
    response = alice_client.post(f"/datasets/{dataset.pk}/labels/{dogs.pk}/edit/", {"name": ""})
    assert response.status_code == 400


def test_upload_without_images_is_400_and_200_over_htmx(alice_client, dataset):
    response = alice_client.post(f"/datasets/{dataset.pk}/upload/", {"new_label": "cats"})
    assert response.status_code == 400 and "Choose one or more images to upload." in response.text
    response = alice_client.post(f"/datasets/{dataset.pk}/upload/", {"new_label": "cats"}, **HTMX)
    assert response.status_code == 200 and "Choose one or more images to upload." in response.text


def test_a_bad_zip_is_400(alice_client, dataset):
    archive = SimpleUploadedFile("pets.zip", b"PK\x03\x04 not really", content_type="application/zip")
    response = alice_client.post(f"/datasets/{dataset.pk}/import/", {"archive": archive})
    assert response.status_code == 400 and "This file is not a zip archive" in response.text


def test_a_second_import_while_one_runs_is_409(alice_client, dataset):
    ImportJob.objects.create(dataset=dataset, archive_name="first.zip", status=ImportJob.Status.RUNNING)
    archive = SimpleUploadedFile("pets.zip", image_zip({"cats": 1}), content_type="application/zip")
    response = alice_client.post(f"/datasets/{dataset.pk}/import/", {"archive": archive})
    assert response.status_code == 409 and "An import is already running for this dataset." in response.text


# --- Training --------------------------------------------------------------------------------


def test_train_form_refusals(alice_client, alice, install_weights, monkeypatch):
    from training import tasks

    monkeypatch.setattr(tasks, "train", lambda pk: None)
    install_weights(TRAIN_BASE, include_top=False)
    settings = {"base": TRAIN_BASE, "epochs": 3, "learning_rate": 0.001, "fine_tune_learning_rate": 0.0001,
                "batch_size": 16}  # fmt: skip
    one_label = colour_dataset(alice, labels=("red",), per_label=8)
    response = alice_client.post(f"/datasets/{one_label.pk}/train/", settings)
    assert response.status_code == 409 and "A model needs at least 2 labels" in response.text
    colours = colour_dataset(alice, name="Colours 2", per_label=12)
    response = alice_client.post(f"/datasets/{colours.pk}/train/", {**settings, "epochs": "many"})
    assert response.status_code == 400
    too_deep = {**settings, "fine_tune_epochs": 2, "fine_tune_from": 200}  # valid fields, refused together
    response = alice_client.post(f"/datasets/{colours.pk}/train/", too_deep)
    assert response.status_code == 400 and "has 154 layers without its head" in response.text
    assert not TrainingJob.objects.exists()


# --- Weights upload ----------------------------------------------------------------------------


def test_a_refused_weights_upload_is_400_on_the_page_it_came_from(staff_client, tmp_path):
    bad = tmp_path / "mobilenet_5_0_128_tf.h5"
    bad.write_bytes(b"GIF89a not weights")
    with open(bad, "rb") as f:
        response = staff_client.post("/models/import/", {"file": f, "next": "/models/?family=MobileNet"})
    assert response.status_code == 400
    assert "mobilenet_5_0_128_tf.h5 was not installed." in response.text
    assert 'id="install-weights"' in response.text  # the models page, with its upload form
    with open(bad, "rb") as f:
        response = staff_client.post("/models/import/", {"file": f, "next": "/models/mobilenetv2/"})
    assert response.status_code == 400
    assert "was not installed." in response.text and "MobileNetV2" in response.text


def test_a_weights_upload_without_a_file_is_400(staff_client):
    response = staff_client.post("/models/import/", {})
    assert response.status_code == 400
    assert "Choose a weights file (.h5) to install." in response.text
