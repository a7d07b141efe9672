"""Training from the browser: the form and its refusals, the job's live page, results, using the model."""

from __future__ import annotations

import io
import socket
import zipfile
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone

from classifier import catalog
from classifier.models import Prediction
from tests.training_helpers import TRAIN_BASE, colour_dataset, colour_png
from training import jobs, tasks, trainer
from training.models import Dataset, ImportJob, TrainedModel, TrainingJob
from webapp import background

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def base_installed(install_weights) -> str:
    install_weights(TRAIN_BASE, include_top=False)
    return TRAIN_BASE


@pytest.fixture
def colours(alice) -> Dataset:
    return colour_dataset(alice, per_label=12)


@pytest.fixture
def queued(monkeypatch) -> list[int]:
    """Jobs sent to the training queue, not run (tests that run one use the real task)."""
    sent: list[int] = []
    monkeypatch.setattr(tasks, "train", sent.append)
    return sent


def start(dataset, user, **config) -> TrainingJob:
    return jobs.start_training(dataset, TRAIN_BASE, trainer.TrainConfig(**config), user)


# --- The form and what it refuses --------------------------------------------------------------
def test_the_form_shows_defaults_help_and_the_bases_that_can_be_trained(alice_client, colours, base_installed):
    response = alice_client.get(f"/datasets/{colours.pk}/train/")
    assert response.status_code == 200
    html = response.text
    assert "MobileNetV2 0.35 @96 (96 px, 154 layers)" in html
    assert 'name="epochs"' in html and 'value="10"' in html
    assert "fine-tuning starts at layer 100 unless you say otherwise" in html
    assert "Passes over the training images with the base frozen" in html
    assert 'data-testid="refusals"' not in html


def test_a_base_with_only_its_full_model_file_can_be_trained_on(alice_client, colours, install_weights):
    install_weights(TRAIN_BASE, include_top=True)
    html = alice_client.get(f"/datasets/{colours.pk}/train/").text
    assert "MobileNetV2 0.35 @96 (96 px, 154 layers) · cut from the full model" in html


def test_without_any_base_weights_the_form_says_what_to_install(alice_client, colours):
    html = alice_client.get(f"/datasets/{colours.pk}/train/").text
    assert "No base model can be trained on yet." in html and "Models" in html


def test_a_dataset_with_one_label_is_refused_before_queueing(alice_client, alice, base_installed, queued):
    dataset = colour_dataset(alice, labels=("red",), per_label=8)
    html = alice_client.get(f"/datasets/{dataset.pk}/train/").text
    assert "A model needs at least 2 labels to choose between" in html
    response = alice_client.post(f"/datasets/{dataset.pk}/train/", {"base": TRAIN_BASE, "epochs": 3})
    assert "A model needs at least 2 labels" in response.text
    assert not TrainingJob.objects.exists() and queued == []


def test_a_label_without_training_images_is_named(alice, colours, base_installed):
    colours.labels.create(name="purple")
    with pytest.raises(jobs.TrainingRefused, match="“purple” has no training image"):
        start(colours, alice)


def test_no_validation_images_is_refused_with_what_to_change(alice, base_installed):
    dataset = colour_dataset(alice, validation=0, per_label=6)
    with pytest.raises(jobs.TrainingRefused, match=r"There are no validation images.*set a validation share above 0"):
        start(dataset, alice)


def test_training_is_refused_while_an_import_runs_into_the_dataset(alice, colours, base_installed):
    ImportJob.objects.create(dataset=colours, archive_name="more.zip", status=ImportJob.Status.RUNNING)
    with pytest.raises(jobs.TrainingRefused, match="A zip import is running into this dataset"):
        start(colours, alice)


def test_missing_weights_are_refused_with_the_file_to_install(alice, colours):
    with pytest.raises(jobs.TrainingRefused, match=r"its weights are not installed.*_no_top\.h5"):
        start(colours, alice)


def test_fine_tuning_beyond_the_base_is_refused_with_the_layer_range(alice_client, colours, base_installed, queued):
    response = alice_client.post(
        f"/datasets/{colours.pk}/train/",
        {"base": TRAIN_BASE, "epochs": 3, "learning_rate": 0.001, "fine_tune_epochs": 2, "fine_tune_from": 200,
         "fine_tune_learning_rate": 0.0001, "batch_size": 32},
    )  # fmt: skip
    assert "has 154 layers without its head: start fine-tuning at a layer from 0 to 153 (default 100)" in response.text
    assert not TrainingJob.objects.exists()


def test_fine_tuning_without_a_layer_starts_at_the_base_default(alice_client, colours, base_installed, queued):
    alice_client.post(
        f"/datasets/{colours.pk}/train/",
        {"base": TRAIN_BASE, "epochs": 3, "learning_rate": 0.001, "fine_tune_epochs": 2,
         "fine_tune_learning_rate": 0.0001, "batch_size": 16, "augment": ["flip", "zoom"], "early_stopping": "on",
         "seed": 7},
    )  # fmt: skip
    job = TrainingJob.objects.get()
    assert job.config["fine_tune_from"] == 100 and job.config["fine_tune_epochs"] == 2
    assert job.config["augment"] == ["flip", "zoom"] and job.config["early_stopping"] is True
    assert job.config["class_weights"] is False  # an unticked box
    assert job.config["seed"] == 7 and job.config["batch_size"] == 16


def test_only_people_who_may_train_see_the_form(bob_client, colours, base_installed):
    assert bob_client.get(f"/datasets/{colours.pk}/train/").status_code == 403
    assert "Train a model" not in bob_client.get(f"/datasets/{colours.pk}/").text


def test_the_job_records_its_configuration_and_the_datasets_snapshot(alice, colours, base_installed, queued):
    job = start(colours, alice, epochs=4, seed=3)
    assert job.status == TrainingJob.Status.QUEUED and job.base_name == "MobileNetV2 0.35 @96"
    assert job.config["epochs"] == 4 and job.config["seed"] == 3
    assert job.labels == ["blue", "green", "red"]
    assert len(job.snapshot["images"]) == 36 and {row[2] for row in job.snapshot["images"]} == {"train", "validation"}


# --- The job page ----------------------------------------------------------------------------
def test_a_queued_job_shows_its_place_in_the_queue_and_polls(alice_client, alice, colours, base_installed, queued):
    first = start(colours, alice)
    second = start(colours, alice)
    html = alice_client.get(f"/datasets/jobs/{second.pk}/progress/", **HTMX).text
    assert "number 2 in the queue" in html
    assert 'hx-trigger="every 1s"' in html
    assert first.queue_position() == 1


def test_a_running_job_shows_phase_epoch_and_eta(alice_client, alice, colours, base_installed, queued):
    job = start(colours, alice)
    TrainingJob.objects.filter(pk=job.pk).update(
        status="running", phase="transfer", percent=42.0, epoch=3, epochs=10, batch=2, batches=4, eta_seconds=95,
        started_at=timezone.now(), history=[{"phase": "transfer", "epoch": 1, "loss": 1.0, "accuracy": 0.5,
                                             "val_loss": 1.1, "val_accuracy": 0.4, "seconds": 1.0}],
    )  # fmt: skip
    html = alice_client.get(f"/datasets/jobs/{job.pk}/progress/", **HTMX).text
    assert "42%</strong> · Transfer learning" in html and "epoch 3 of 10, batch 2 of 4" in html
    assert "about 1 min 35 s left" in html
    assert html.count("<svg") == 2 and "Cancel job" in html


def test_an_ended_job_stops_polling(alice_client, alice, colours, base_installed, queued):
    job = start(colours, alice)
    TrainingJob.transition(job.pk, TrainingJob.Status.CANCELLED, message="Cancelled before it started.")
    html = alice_client.get(f"/datasets/jobs/{job.pk}/progress/", **HTMX).text
    assert "hx-trigger" not in html and "Cancelled before it started." in html


def test_a_deleted_job_answers_the_poll_with_the_news(alice_client):
    html = alice_client.get("/datasets/jobs/999/progress/", **HTMX).text
    assert "This training job no longer exists" in html and "hx-trigger" not in html


def test_cancelling_a_queued_job_cancels_it_at_once(alice_client, alice, colours, base_installed, queued):
    job = start(colours, alice)
    alice_client.post(f"/datasets/jobs/{job.pk}/cancel/")
    job.refresh_from_db()
    assert job.status == TrainingJob.Status.CANCELLED and job.message == "Cancelled before it started."


def test_cancelling_a_running_job_asks_the_worker_to_stop(alice_client, alice, colours, base_installed, queued):
    job = start(colours, alice)
    TrainingJob.objects.filter(pk=job.pk).update(status="running")
    alice_client.post(f"/datasets/jobs/{job.pk}/cancel/")
    job.refresh_from_db()
    assert job.status == TrainingJob.Status.RUNNING and job.cancel_requested


def test_others_may_look_but_not_cancel(bob_client, alice, colours, base_installed, queued):
    job = start(colours, alice)
    assert bob_client.get(f"/datasets/jobs/{job.pk}/").status_code == 200
    assert bob_client.post(f"/datasets/jobs/{job.pk}/cancel/").status_code == 403
    assert "Cancel job" not in bob_client.get(f"/datasets/jobs/{job.pk}/").text


def test_an_active_job_offers_cancel_not_delete_or_train_again(alice_client, alice, colours, base_installed, queued):
    job = start(colours, alice)
    html = alice_client.get(f"/datasets/jobs/{job.pk}/").text
    assert "Cancel job" in html and "Train again" not in html and f"/datasets/jobs/{job.pk}/delete/" not in html
    TrainingJob.transition(job.pk, TrainingJob.Status.CANCELLED)
    html = alice_client.get(f"/datasets/jobs/{job.pk}/").text
    assert "Train again" in html and f"/datasets/jobs/{job.pk}/delete/" in html


def test_who_may_not_train_is_not_offered_train_again(bob_client, alice, colours, base_installed, queued):
    job = start(colours, alice)
    TrainingJob.transition(job.pk, TrainingJob.Status.CANCELLED)
    assert "Train again" not in bob_client.get(f"/datasets/jobs/{job.pk}/").text
    assert bob_client.post(f"/datasets/jobs/{job.pk}/again/").status_code == 403


def test_a_dataset_cannot_be_deleted_while_a_model_trains_on_it(alice_client, alice, colours, base_installed, queued):
    start(colours, alice)
    response = alice_client.post(f"/datasets/{colours.pk}/delete/")
    assert response.status_code == 409 and "A model is being trained on this dataset" in response.text
    assert Dataset.objects.filter(pk=colours.pk).exists()


def test_train_again_queues_the_same_settings_as_a_child(alice_client, alice, colours, base_installed, queued):
    job = start(colours, alice, epochs=4, augment=("flip",))
    TrainingJob.transition(job.pk, TrainingJob.Status.CANCELLED)
    response = alice_client.post(f"/datasets/jobs/{job.pk}/again/")
    child = TrainingJob.objects.exclude(pk=job.pk).get()
    assert response["Location"] == f"/datasets/jobs/{child.pk}/"
    assert child.parent == job and child.config == job.config


def test_two_jobs_compare_side_by_side_with_differences_marked(alice_client, alice, colours, base_installed, queued):
    a = start(colours, alice, epochs=4)
    b = start(colours, alice, epochs=8)
    html = alice_client.get(f"/datasets/jobs/compare/?jobs={a.pk}&jobs={b.pk}").text
    assert f"Job {a.pk} and job {b.pk} side by side" in html
    assert '<tr class="differs"><th>Epochs</th><td>4</td><td>8</td></tr>' in html
    assert html.count("<svg") == 4


def test_comparing_needs_two_jobs(alice_client, colours):
    response = alice_client.get(f"/datasets/jobs/compare/?jobs=1&dataset={colours.pk}", follow=True)
    assert "Tick two different jobs to compare them." in response.text


# --- Recovery -------------------------------------------------------------------------------
def test_a_job_whose_worker_died_is_marked_interrupted_and_its_files_removed(alice, colours, base_installed, queued):
    job = start(colours, alice)
    TrainingJob.objects.filter(pk=job.pk).update(
        status="running", worker=f"{socket.gethostname()}:999999999:gone", heartbeat_at=timezone.now(),
        history=[{"phase": "transfer", "epoch": 1, "loss": 1, "accuracy": 0.5, "val_loss": 1, "val_accuracy": 0.5,
                  "seconds": 1}],
    )  # fmt: skip
    job.folder.mkdir(parents=True)
    (job.folder / "half-written.tmp").write_bytes(b"x")
    assert background.recover_jobs() == 1
    job.refresh_from_db()
    assert job.status == TrainingJob.Status.INTERRUPTED and "the worker stopped" in job.message
    assert len(job.history) == 1  # the curves so far are kept
    assert not job.folder.exists()


def test_a_live_workers_job_elsewhere_is_left_alone(alice, colours, base_installed, queued):
    job = start(colours, alice)
    TrainingJob.objects.filter(pk=job.pk).update(
        status="running", worker="gpu-box:12:abc", heartbeat_at=timezone.now() - timedelta(seconds=30)
    )
    assert background.recover_jobs() == 0


# --- End to end: train, evaluate, classify, export, delete ----------------------------------
def test_a_job_trains_evaluates_and_its_model_classifies_like_any_other(
    alice_client, alice, bob, base_installed, django_capture_on_commit_callbacks
):
    bob_client = Client()
    bob_client.force_login(bob)
    dataset = colour_dataset(alice, labels=("Red roses", "green_leaves", "blue sky"), per_label=14, test=15)
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_client.post(
            f"/datasets/{dataset.pk}/train/",
            {"base": TRAIN_BASE, "epochs": 15, "learning_rate": 0.001, "fine_tune_learning_rate": 0.0001,
             "batch_size": 32, "early_stopping": "on", "class_weights": "on", "seed": 0},
        )  # fmt: skip
    job = TrainingJob.objects.get()
    assert response["Location"] == f"/datasets/jobs/{job.pk}/"
    job.refresh_from_db()
    assert job.status == TrainingJob.Status.SUCCEEDED, job.message + job.detail
    assert job.message.startswith("The model is ready:")
    assert job.evaluation["validation"]["accuracy"] > 0.9 and "test" in job.evaluation
    assert job.model_ready_at is not None and job.versions["tensorflow"]

    page = alice_client.get(f"/datasets/jobs/{job.pk}/").text
    assert 'data-testid="evaluation-validation"' in page and 'data-testid="evaluation-test"' in page
    assert 'class="confusion"' in page and "Red roses" in page and "green_leaves" in page
    assert "Agrees with the app&#x27;s model on" in page or "Agrees with the app's model on" in page
    assert "hx-trigger" not in page
    ran_on = f'<th>Ran on</th><td class="small">{job.strategy["device"]}, worker on {socket.gethostname()}</td>'
    assert job.strategy["device"].startswith("CPU: ") and ran_on in page  # a GPU machine names its GPU
    assert alice_client.get(f"/api/v1/jobs/{job.pk}").json()["device"] == job.strategy["device"]

    model = TrainedModel.objects.get()
    assert model.key in [c.key for c in catalog.available(bob)]
    classify = bob_client.get(f"/?model={model.key}").text
    assert f'<option value="{model.key}" selected>' in classify and "Trained models" in classify

    listed = {m["key"]: m for m in bob_client.get("/api/v1/models").json()["models"]}
    assert listed[model.key]["kind"] == "trained" and listed[model.key]["installed"] is True
    assert listed[model.key]["labels"] == ["blue sky", "green_leaves", "Red roses"]
    assert listed["mobilenetv2"]["kind"] == "pretrained"

    upload = SimpleUploadedFile("leaf.png", colour_png(1, 424242), content_type="image/png")
    result = bob_client.post("/", {"model": model.key, "images": [upload]}, **HTMX).text
    assert "green_leaves" in result  # label names as typed, underscores kept
    prediction = Prediction.objects.get()
    assert prediction.model_key == model.key and prediction.top[0]["label"] == "green_leaves"
    assert "green_leaves" in bob_client.get("/history/").text

    for fmt in ("keras", "tflite-float32", "tflite-int8"):
        download = alice_client.get(f"/datasets/jobs/{job.pk}/exports/{fmt}/")
        assert download.status_code == 200 and download["Content-Type"] == "application/zip"
        names = zipfile.ZipFile(io.BytesIO(b"".join(download.streaming_content))).namelist()
        assert "labels.txt" in names and "README.md" in names
    assert job.exports["tflite-float32"]["agreeing"] == job.exports["tflite-float32"]["checked"] > 0

    folder = job.folder
    assert (folder / "model.keras").exists()
    with django_capture_on_commit_callbacks(execute=True):
        alice_client.post(f"/datasets/jobs/{job.pk}/delete/")
    assert not TrainingJob.objects.exists() and not TrainedModel.objects.exists()
    assert not folder.exists()
    assert model.key not in [c.key for c in catalog.available(alice)]
