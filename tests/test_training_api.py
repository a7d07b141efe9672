"""Training JSON API: start, watch and cancel jobs by token; the form's defaults, the jobs' checks, JSON errors.

Most tests only record the job: `training.tasks.train` is replaced by a list's `append`. One test
trains for real (two epochs of a small MobileNetV2) and classifies with the model through the API.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone

from classifier import zoo
from classifier.models import ApiToken
from tests.training_helpers import TRAIN_BASE, colour_dataset, colour_png
from training import base_layers, exporting, tasks, trainer
from training.models import TrainedModel, TrainingJob

pytestmark = pytest.mark.django_db

URL = "/api/v1/jobs"
DEFAULTS = trainer.TrainConfig().as_dict()


def token_client(user) -> Client:
    """A client that authenticates like a script: bearer token, no cookies, no CSRF token."""
    return Client(enforce_csrf_checks=True, HTTP_AUTHORIZATION=f"Bearer {ApiToken.issue(user, 'script')[1]}")


@pytest.fixture
def api(alice) -> Client:
    return token_client(alice)


@pytest.fixture
def bob_api(bob) -> Client:
    return token_client(bob)


@pytest.fixture
def queued(monkeypatch) -> list[int]:
    """Job ids `start_training` queued (once its transaction committed); nothing trains."""
    sent: list[int] = []
    monkeypatch.setattr(tasks, "train", sent.append)
    return sent


@pytest.fixture
def base(install_weights) -> str:
    install_weights(TRAIN_BASE, include_top=False)
    return TRAIN_BASE


@pytest.fixture
def dataset(alice):
    return colour_dataset(alice, per_label=4)


def start(api: Client, dataset, base: str = TRAIN_BASE, **fields):
    return api.post(URL, {"dataset": dataset.pk, "base": base, **fields})


# --- Authentication and methods -------------------------------------------------------------------
def test_without_credentials_the_answer_is_a_json_401(client, dataset):
    response = client.post(URL, {"dataset": dataset.pk, "base": TRAIN_BASE})
    assert response.status_code == 401
    assert response.json()["error"].startswith("Authentication required: send 'Authorization: Bearer <token>'")
    assert client.get(f"{URL}/1").status_code == 401
    assert not TrainingJob.objects.exists()


def test_a_session_post_without_csrf_token_is_refused(alice, dataset, base, queued):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    response = browser.post(URL, {"dataset": dataset.pk, "base": base})
    assert response.status_code == 403 and response.json()["error"].startswith("CSRF check failed")
    assert not TrainingJob.objects.exists()


def test_other_methods_are_a_405_in_json(api):
    response = api.delete(URL)
    assert response.status_code == 405 and response["Allow"] == "GET, POST"
    assert response.json() == {"error": "Use GET or POST for this endpoint."}
    response = api.post(f"{URL}/1")
    assert response.status_code == 405 and response["Allow"] == "GET"
    response = api.get(f"{URL}/1/cancel")
    assert response.status_code == 405 and response["Allow"] == "POST"


# --- Creating a job ------------------------------------------------------------------------------
def test_a_job_with_defaults_is_created_queued_and_located(
    api, alice, dataset, base, queued, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = start(api, dataset)
    assert response.status_code == 201
    job = TrainingJob.objects.get()
    assert queued == [job.pk]
    assert response["Location"] == f"{URL}/{job.pk}"
    body = response.json()
    assert body["id"] == job.pk and body["status"] == "queued" and body["queue_position"] == 1
    assert body["dataset"] == {"id": dataset.pk, "name": "Colours"}
    assert body["base"] == TRAIN_BASE and body["base_name"] == zoo.get(TRAIN_BASE).name
    assert body["config"] == DEFAULTS
    assert body["model"] is None and body["exports"] == {} and body["evaluation"] == {} and body["history"] == []
    assert body["created_at"] == job.created_at.isoformat() and body["started_at"] is None
    assert job.created_by == alice and job.config == DEFAULTS


def test_the_stored_config_is_the_defaults_but_what_was_sent(api, dataset, base, queued):
    # class_weights is not sent: it stays on, although an absent checkbox means "off" to the web form.
    response = start(api, dataset, epochs="3", augment=["flip", "zoom"], early_stopping="false", seed="7")
    assert response.status_code == 201, response.json()
    expected = {**DEFAULTS, "epochs": 3, "augment": ["flip", "zoom"], "early_stopping": False, "seed": 7}
    assert TrainingJob.objects.get().config == expected == response.json()["config"]


def test_a_json_body_works_and_the_dataset_can_be_named_in_any_case(api, dataset, base, queued):
    body = {
        "dataset": "COLOURS",
        "base": TRAIN_BASE.upper(),
        "epochs": 4,
        "learning_rate": 0.01,
        "fine_tune_epochs": 2,
        "class_weights": False,
        "augment": ["rotate"],
        "seed": None,  # null: the default
    }
    response = api.post(URL, body, content_type="application/json")
    assert response.status_code == 201, response.json()
    config = TrainingJob.objects.get().config
    default_from = base_layers.default_fine_tune_from(zoo.get(TRAIN_BASE))
    assert default_from is not None
    assert config == {
        **DEFAULTS,
        "epochs": 4,
        "learning_rate": 0.01,
        "fine_tune_epochs": 2,
        "fine_tune_from": default_from,
        "class_weights": False,
        "augment": ["rotate"],
    }


def test_augment_may_be_one_comma_separated_value(api, dataset, base, queued):
    response = start(api, dataset, augment="flip, rotate")
    assert response.status_code == 201
    assert TrainingJob.objects.get().config["augment"] == ["flip", "rotate"]


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"epochs": "0"}, "epochs", "Ensure this value is greater than or equal to 1."),
        ({"learning_rate": "fast"}, "learning_rate", "Enter a number."),
        ({"augment": "flip,blur"}, "augment", "Select a valid choice. blur is not one of the available choices."),
        ({"early_stopping": "maybe"}, "early_stopping", "Send true or false for early_stopping."),
        ({"fine_tune_epochs": "2", "fine_tune_from": "999"}, "fine_tune_from", "has 154 layers without its head"),
        ({"epoch": "3"}, "epoch", "Unknown field epoch: send dataset, base, epochs,"),
    ],
)
def test_an_invalid_field_is_a_400_naming_it(api, dataset, base, queued, fields, field, message):
    response = start(api, dataset, **fields)
    assert response.status_code == 400
    body = response.json()
    assert message in body["error"]
    assert list(body["fields"]) == [field]
    assert not TrainingJob.objects.exists()


def test_invalid_json_is_a_400(api):
    response = api.post(URL, "{not json", content_type="application/json")
    assert response.status_code == 400 and response.json()["error"].startswith("The request body is not valid JSON")
    response = api.post(URL, [1, 2], content_type="application/json")
    assert response.status_code == 400 and response.json()["error"].startswith("The JSON body must be an object")


def test_a_missing_dataset_or_base_is_a_400_that_says_what_to_send(api, dataset, base):
    response = api.post(URL, {"base": base})
    assert response.status_code == 400
    assert response.json()["error"] == "Say which dataset to train on: send dataset (its id or name)."
    response = api.post(URL, {"dataset": dataset.pk})
    assert response.status_code == 400 and response.json()["error"].startswith("Say which base model to train on")


def test_an_unknown_base_is_a_400_naming_it(api, dataset, base):
    response = start(api, dataset, base="alexnet")
    assert response.status_code == 400
    assert response.json()["error"].startswith("Unknown model 'alexnet'. Known models: mobilenetv2")
    assert list(response.json()["fields"]) == ["base"]


def test_a_base_without_weights_is_a_409_that_says_so(api, dataset, base):
    response = start(api, dataset, base="vgg16")
    assert response.status_code == 409
    assert response.json()["error"].startswith("VGG16 cannot be trained on yet: its weights are not installed.")
    assert not TrainingJob.objects.exists()


def test_a_dataset_with_one_label_is_a_409_with_the_refusal(api, alice, base):
    single = colour_dataset(alice, name="Reds", labels=("red",), per_label=4)
    response = start(api, single)
    assert response.status_code == 409
    assert response.json() == {
        "error": "A model needs at least 2 labels to choose between: add labels and images to them."
    }
    assert not TrainingJob.objects.exists()


def test_someone_who_may_not_train_on_the_dataset_gets_a_403(bob_api, bob, dataset, base, queued):
    response = start(bob_api, dataset)
    assert response.status_code == 403
    assert response.json()["error"].startswith("Your account may not train on the dataset “Colours”")
    assert not TrainingJob.objects.exists()
    bob.user_permissions.add(Permission.objects.get(codename="add_trainingjob"))
    assert start(bob_api, dataset).status_code == 201


def test_an_unknown_dataset_is_a_404(api, base):
    response = api.post(URL, {"dataset": "nope", "base": base})
    assert response.status_code == 404
    assert response.json() == {"error": "No dataset has the id or name “nope”."}
    assert api.post(URL, {"dataset": "999", "base": base}).status_code == 404


# --- Reading jobs --------------------------------------------------------------------------------
def test_get_shows_the_queue_position_then_the_progress(api, bob_api, dataset, base, queued):
    first = start(api, dataset).json()["id"]
    second = start(api, dataset).json()["id"]
    assert api.get(f"{URL}/{second}").json()["queue_position"] == 2
    TrainingJob.objects.filter(pk=first).update(
        status="running", started_at=timezone.now(), phase="transfer", percent=40.0, epoch=2, batch=3, batches=5,
        eta_seconds=12.5, history=[{"phase": "transfer", "epoch": 1, "loss": 0.9, "accuracy": 0.5}],
    )  # fmt: skip
    body = api.get(f"{URL}/{first}").json()
    assert body["status"] == "running" and body["queue_position"] is None and body["started_at"] is not None
    assert body["progress"] == {
        "phase": "transfer", "percent": 40.0, "epoch": 2, "epochs": 10, "batch": 3, "batches": 5, "eta_seconds": 12.5,
    }  # fmt: skip
    assert body["history"] == [{"phase": "transfer", "epoch": 1, "loss": 0.9, "accuracy": 0.5}]
    assert api.get(f"{URL}/{second}").json()["queue_position"] == 1
    assert bob_api.get(f"{URL}/{first}").status_code == 200  # everyone logged in sees datasets and their jobs


def test_get_of_an_unknown_job_is_a_json_404(api):
    response = api.get(f"{URL}/999")
    assert response.status_code == 404
    assert response.json() == {"error": "No training job 999 (it may have been deleted)."}


def test_a_finished_job_shows_its_model_evaluation_summary_and_exports(api, dataset, base, queued):
    job = TrainingJob.objects.get(pk=start(api, dataset).json()["id"])
    full = {"images": 3, "accuracy": 0.6667, "macro_f1": 0.5556, "labels": [], "confusion": [], "mistakes": []}
    exports = {
        "keras": {"format": "keras", "path": "/x/model.zip", "size_bytes": 1000, "checked": 4, "agreeing": 3,
                  "max_abs_diff": 0.0, "ok": True, "message": "Matches the app."},
        "tflite-int8": {"format": "tflite-int8", "path": None, "size_bytes": 0, "checked": 0, "agreeing": 0,
                        "max_abs_diff": None, "ok": False, "message": "Conversion failed."},
    }  # fmt: skip
    TrainingJob.objects.filter(pk=job.pk).update(
        status="succeeded", finished_at=timezone.now(), model_ready_at=timezone.now(), evaluation={"validation": full},
        exports=exports, best_val_accuracy=0.6667, message="The model is ready.",
    )  # fmt: skip
    model = TrainedModel.objects.create(
        job=job, dataset=dataset, name="Colours model", base_key=TRAIN_BASE, input_size=96,
        labels=["blue", "green", "red"], val_accuracy=0.6667,
    )  # fmt: skip
    body = api.get(f"{URL}/{job.pk}").json()
    assert body["status"] == "succeeded" and body["best_val_accuracy"] == 0.6667
    assert body["model"] == {
        "key": f"trained-{model.pk}",
        "name": "Colours model",
        "labels": ["blue", "green", "red"],
        "val_accuracy": 0.6667,
    }
    assert body["evaluation"] == {"validation": {"accuracy": 0.6667, "macro_f1": 0.5556, "images": 3}}
    keras, int8 = body["exports"]["keras"], body["exports"]["tflite-int8"]
    assert keras["ok"] is True and keras["agreement"] == 0.75 and keras["size_bytes"] == 1000
    assert keras["url"] == f"/datasets/jobs/{job.pk}/exports/keras/"
    assert body["url"] == f"/datasets/jobs/{job.pk}/"
    assert int8 == {"ok": False, "message": "Conversion failed.", "agreement": None, "size_bytes": 0, "url": None}


def test_get_on_jobs_lists_the_users_own_jobs_newest_first(api, bob_api, dataset, base, queued):
    ids = [start(api, dataset).json()["id"] for _ in range(2)]
    assert [job["id"] for job in api.get(URL).json()["jobs"]] == ids[::-1]
    assert bob_api.get(URL).json() == {"jobs": []}


# --- Cancelling ----------------------------------------------------------------------------------
def test_cancelling_a_queued_job_cancels_it_at_once(api, dataset, base, queued):
    job_id = start(api, dataset).json()["id"]
    response = api.post(f"{URL}/{job_id}/cancel")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "cancelled" and body["message"] == "Cancelled before it started."
    assert body["finished_at"] is not None and body["queue_position"] is None
    assert TrainingJob.objects.get().status == "cancelled"


def test_cancelling_a_running_job_asks_it_to_stop(api, dataset, base, queued):
    job_id = start(api, dataset).json()["id"]
    TrainingJob.objects.filter(pk=job_id).update(status="running", started_at=timezone.now())
    body = api.post(f"{URL}/{job_id}/cancel").json()
    assert body["status"] == "running" and body["cancel_requested"] is True
    assert api.post(f"{URL}/{job_id}/cancel").status_code == 200  # asking twice is harmless


def test_someone_who_may_not_change_the_job_cannot_cancel_it(api, bob_api, dataset, base, queued):
    job_id = start(api, dataset).json()["id"]
    response = bob_api.post(f"{URL}/{job_id}/cancel")
    assert response.status_code == 403
    assert response.json() == {"error": "Only who started this job, or who manages its dataset, may cancel it."}
    assert TrainingJob.objects.get().status == "queued"


def test_cancelling_a_finished_job_is_a_409(api, dataset, base, queued):
    job_id = start(api, dataset).json()["id"]
    TrainingJob.objects.filter(pk=job_id).update(status="succeeded", finished_at=timezone.now())
    response = api.post(f"{URL}/{job_id}/cancel")
    assert response.status_code == 409
    assert response.json() == {"error": "This job has already ended (succeeded)."}
    assert api.post(f"{URL}/999/cancel").status_code == 404


# --- End to end ------------------------------------------------------------------------------------
def test_a_job_started_by_the_api_trains_and_its_model_classifies(
    api, alice, base, django_capture_on_commit_callbacks, monkeypatch
):
    # The Keras export only: the two TFLite conversions take half a minute, and test_exporting covers them.
    monkeypatch.setattr(exporting, "FORMATS", ("keras",))
    dataset = colour_dataset(alice, per_label=12)
    with django_capture_on_commit_callbacks(execute=True):  # the immediate training queue runs the job here
        response = start(api, dataset, epochs="2")
    assert response.status_code == 201
    body = api.get(response["Location"]).json()
    assert body["status"] == "succeeded", body["message"]
    job = TrainingJob.objects.get()
    assert body["model"]["key"] == f"trained-{job.trained_model.pk}"
    assert sorted(body["model"]["labels"]) == ["blue", "green", "red"]
    assert [entry["epoch"] for entry in body["history"]] == [1, 2]
    assert body["progress"]["percent"] == 100 and body["finished_at"] is not None
    keras = body["exports"]["keras"]
    assert list(body["exports"]) == ["keras"] and keras["ok"] is True, keras["message"]
    assert keras["agreement"] == 1.0 and keras["size_bytes"] > 0
    assert keras["url"] == f"/datasets/jobs/{job.pk}/exports/keras/"
    assert body["evaluation"]["validation"]["images"] == 9

    picture = SimpleUploadedFile("red.png", colour_png(0, 1), content_type="image/png")
    response = api.post("/api/v1/predict", {"images": [picture], "model": body["model"]["key"]})
    assert response.status_code == 200, response.json()
    predictions = response.json()["results"][0]["predictions"]
    assert sorted(p["label"] for p in predictions) == ["blue", "green", "red"]
