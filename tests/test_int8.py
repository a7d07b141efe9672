"""Int8: an administrator calibrates a model on real images, sees its agreement with float32, switches.

What users see: int8 is off by default; once calibrated (an uploaded zip or a dataset for a
pretrained model, the training split for a trained one) the model's page shows its measured top-1
agreement with float32; switched on, requests run on the int8 file and the Models page, the model's
page and `GET /api/v1/models` say "int8"; switched back, float32 again. New weights need a new
calibration. Every bad input is refused in words with a 4xx, and nothing changes.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from classifier import inference, installs, int8, lite, runtimes, tasks
from classifier.models import ApiToken, Int8Calibration
from tests.conftest import FAST_MODEL
from tests.helpers import noise_image_bytes

pytestmark = pytest.mark.django_db
MODELS = "/api/v1/models"
PAGE = f"/models/{FAST_MODEL}/"
START = f"/models/{FAST_MODEL}/int8/start/"
SWITCH = f"/models/{FAST_MODEL}/int8/switch/"


@pytest.fixture
def api(bob) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {ApiToken.issue(bob, 'int8 tests')[1]}")


def model_entry(api: Client, key: str = FAST_MODEL) -> dict:
    return next(m for m in api.get(MODELS).json()["models"] if m["key"] == key)


def photos_zip(count: int, name: str = "birds.zip", extra: dict[str, bytes] | None = None) -> SimpleUploadedFile:
    """A zip of `count` JPEG photos in a folder, plus any `extra` members."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for i in range(count):
            zf.writestr(f"birds/photo{i}.jpg", noise_image_bytes(seed=i, size=(120, 90), fmt="JPEG"))
        for member, data in (extra or {}).items():
            zf.writestr(member, data)
    return SimpleUploadedFile(name, out.getvalue(), content_type="application/zip")


def text(response) -> str:
    return response.content.decode()


def predict(api: Client):
    return api.post("/api/v1/predict", {"images": [SimpleUploadedFile("a.png", noise_image_bytes(seed=99))],
                                        "model": FAST_MODEL})  # fmt: skip


def served_bytes() -> bytes:
    """The LiteRT file the engine's warm copy of the model was loaded from."""
    warm = inference.get_engine().get(FAST_MODEL)
    assert warm.runtime == "litert"
    return warm.pool._content


# --- lite: the Django-free pieces ------------------------------------------------------------
def test_calibration_holds_out_every_fourth_image_unless_there_are_too_few():
    calibrate, measure, held_out = lite.int8_split(100)
    assert held_out and len(measure) == 25 and len(calibrate) == 75
    assert not set(calibrate) & set(measure)
    calibrate, measure, held_out = lite.int8_split(12)
    assert not held_out and list(calibrate) == list(measure) == list(range(12))
    calibrate, _, _ = lite.int8_split(1000)
    assert len(calibrate) == lite.INT8_MAX_CALIBRATION

    reference = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    assert lite.top1_agreement(reference, np.array([[0.8, 0.2], [0.4, 0.6], [0.4, 0.6]])) == (2, 3)
    assert lite.agreement_text(2, 3) == "66.7%"
    assert lite.agreement_text(999, 1000) == "99.9%" and lite.agreement_text(5, 5) == "100%"


# --- A pretrained model, calibrated on an uploaded zip ---------------------------------------
def test_int8_is_off_by_default_and_only_administrators_get_the_switch(litert, fast_model, staff_client, bob, api):
    tasks.convert_pending()
    entry = model_entry(api)
    assert entry["runtime"] == "litert" and entry["precision"] == "float32" and "int8" not in entry

    page = text(staff_client.get(PAGE))
    assert "Faster int8 model" in page and 'data-state="none"' in page
    assert "about twice as fast as float32" in page and "It is off by default" in page
    assert 'action="/models/mobilenet-0.5-128/int8/start/"' in page and "Calibrate and measure" in page

    bob_client = Client()
    bob_client.force_login(bob)
    page = text(bob_client.get(PAGE))
    assert "Faster int8 model" in page and "Administrators can calibrate this model" in page
    assert "int8/start/" not in page
    assert bob_client.post(START, {"archive": photos_zip(12)}).status_code == 403
    assert bob_client.post(SWITCH, {"to": "int8"}).status_code == 403
    assert not Int8Calibration.objects.exists()


def test_calibrate_on_a_zip_see_the_agreement_switch_to_int8_and_back(
    litert, fast_model, staff_client, api, django_capture_on_commit_callbacks, monkeypatch
):
    tasks.convert_pending()
    weights = runtimes.converted_path(fast_model_path()).parent  # DATA_DIR/lite
    with django_capture_on_commit_callbacks(execute=True):  # the worker runs the task (in-process here)
        response = staff_client.post(START, {"archive": photos_zip(24)})
    assert response.status_code == 302 and response["Location"].endswith("#int8")

    row = Int8Calibration.objects.get()
    assert row.status == "succeeded", row.message
    assert row.source == "the uploaded zip birds.zip" and row.images == 24
    assert (row.calibration_images, row.checked_images, row.held_out) == (18, 6, True)
    assert row.reference == "LiteRT float32" and not row.enabled
    assert not list(int8.calibration_dir().iterdir())  # the zip went once read
    assert (weights / f"{runtimes.int8_path(fast_model_path()).name}").is_file()

    page = text(staff_client.get(PAGE))
    assert 'data-state="ready"' in page
    assert f"Top-1 agrees with float32 on {row.agreeing_images} of 6 images ({row.agreement_text})" in page
    assert "images it was not calibrated on" in page
    assert "Calibrated on 18 of the 24 images of the uploaded zip birds.zip" in page
    assert "Switch to int8" in page
    assert model_entry(api)["precision"] == "float32"  # off until someone switches it on

    # Switched on: the engine drops its warm float32 copy and loads the int8 file; every page and the API say so.
    float32_bytes = runtimes.converted_path(fast_model_path()).read_bytes()
    int8_bytes = runtimes.int8_path(fast_model_path()).read_bytes()
    assert predict(api).status_code == 200 and served_bytes() == float32_bytes
    response = staff_client.post(SWITCH, {"to": "int8"}, follow=True)
    assert response.status_code == 200
    assert f"MobileNet 0.5 @128 now runs on int8. Its top answer agreed with float32 on {row.agreeing_images} of 6" in (
        text(response)
    )
    assert runtimes.lite_content(fast_model_path()) == int8_bytes
    entry = model_entry(api)
    assert entry["runtime"] == "litert" and entry["precision"] == "int8"
    assert entry["int8"] == {
        "images": 6,
        "agreeing": row.agreeing_images,
        "top1_agreement_with_float32": round(row.agreeing_images / 6, 4),
        "held_out": True,
        "calibration": "the uploaded zip birds.zip (24 images)",
        "calibration_images": 18,
    }
    page = text(staff_client.get(PAGE))
    assert "<strong>LiteRT int8</strong>" in page and 'data-state="on"' in page
    assert "Switch back to float32" in page
    assert "Runs on LiteRT int8" in text(staff_client.get("/models/"))
    assert predict(api).status_code == 200 and served_bytes() == int8_bytes

    # Pruning keeps the int8 file while its weights are in use.
    tasks.convert_pending()
    assert runtimes.int8_path(fast_model_path()).is_file()

    # Switched back: float32 again.
    response = staff_client.post(SWITCH, {"to": "float32"}, follow=True)
    assert "MobileNet 0.5 @128 runs on float32 again." in text(response)
    assert runtimes.lite_content(fast_model_path()) == float32_bytes
    assert predict(api).status_code == 200 and served_bytes() == float32_bytes
    assert model_entry(api)["precision"] == "float32"
    assert 'data-state="ready"' in text(staff_client.get(PAGE))

    # The admin lists the record, read-only.
    listing = text(staff_client.get("/admin/classifier/int8calibration/"))
    assert FAST_MODEL in listing and f"{row.agreeing_images} of 6 ({row.agreement_text})" in listing
    assert staff_client.get(f"/admin/classifier/int8calibration/{row.pk}/change/").status_code == 200


def test_new_weights_need_a_new_calibration(
    litert, fast_model, staff_client, api, tmp_path, django_capture_on_commit_callbacks
):
    from tests.helpers import make_zoo_weights

    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(START, {"archive": photos_zip(12)})
    row = Int8Calibration.objects.get()
    assert row.status == "succeeded" and not row.held_out  # 12 images: measured on the same ones, and it says so
    assert "measured on the calibration images themselves" in text(staff_client.get(PAGE))
    staff_client.post(SWITCH, {"to": "int8"})
    assert model_entry(api)["precision"] == "int8"

    installs.import_path(make_zoo_weights(FAST_MODEL, tmp_path / "new", seed=7))  # its float32 conversion waits
    entry = model_entry(api)
    assert entry["precision"] == "float32"
    page = text(staff_client.get(PAGE))
    assert 'data-state="stale"' in page and "Needs calibrating again" in page
    assert "The weights were replaced after this int8 model was made" in page
    response = staff_client.post(SWITCH, {"to": "int8"})
    assert response.status_code == 409
    assert "The weights were replaced after this int8 model was made" in text(response)
    assert model_entry(api)["precision"] == "float32"


def test_a_dataset_calibrates_a_pretrained_model(
    litert, fast_model, staff_client, alice, django_capture_on_commit_callbacks
):
    from tests.training_helpers import colour_dataset

    dataset = colour_dataset(alice, name="Colours", per_label=4)  # 12 images
    page = text(staff_client.get(PAGE))
    assert f'<option value="{dataset.pk}">Colours (12 images)</option>' in page
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(START, {"dataset": dataset.pk})
    assert response.status_code == 302
    row = Int8Calibration.objects.get()
    assert row.status == "succeeded", row.message
    assert (row.source_kind, row.dataset_id, row.images) == ("dataset", dataset.pk, 12)
    assert row.reference == "Keras float32"  # the float32 LiteRT file was not made yet: compared with Keras
    assert "Calibrated on all 12 images of the dataset “Colours”" in text(staff_client.get(PAGE))


def test_bad_calibration_requests_are_refused_in_words_and_change_nothing(
    litert, fast_model, staff_client, alice, settings
):
    from tests.training_helpers import colour_dataset

    def refused(data: dict, status: int = 400) -> str:
        response = staff_client.post(START, data)
        assert response.status_code == status, text(response)[:500]
        return text(response)

    assert "Choose a dataset, or upload a zip of pictures, to calibrate int8 on." in refused({})
    not_zip = SimpleUploadedFile("birds.zip", b"this is not a zip")
    assert "This file is not a zip archive, or it is damaged." in refused({"archive": not_zip})
    assert "The zip holds no pictures" in refused({"archive": photos_zip(0, extra={"notes.txt": b"hello"})})
    assert "calibration needs at least 10" in refused({"archive": photos_zip(3)})
    unsafe = photos_zip(12, extra={"../../etc/evil.jpg": noise_image_bytes(seed=5)})
    assert "unsafe path" in refused({"archive": unsafe})
    small = colour_dataset(alice, name="Tiny", per_label=1)
    assert "“Tiny” has 3 images; calibration needs at least 10." in refused({"dataset": small.pk})
    assert "Select a valid choice." in refused({"dataset": 9999})
    enough = colour_dataset(alice, name="Enough", per_label=4)
    assert "Choose either a dataset or a zip, not both." in refused({"dataset": enough.pk, "archive": photos_zip(12)})
    settings.IMPORT_MAX_ZIP_BYTES = 100
    assert "the limit is 100 bytes" in refused({"archive": photos_zip(12)})
    settings.IMPORT_MAX_ZIP_BYTES = 1 << 30

    response = staff_client.post(SWITCH, {"to": "int8"})
    assert response.status_code == 409
    assert "has no finished int8 conversion to switch to: calibrate it first." in text(response)
    response = staff_client.post(SWITCH, {"to": "int4"})
    assert response.status_code == 400 and "Say which precision to switch to: int8 or float32." in text(response)

    settings.INFERENCE_RUNTIME = "tensorflow"
    assert "LiteRT is turned off on this server" in refused({"archive": photos_zip(12)}, status=409)
    assert not Int8Calibration.objects.exists()
    assert not int8.calibration_dir().exists() or not list(int8.calibration_dir().iterdir())
    assert staff_client.post("/models/no-such-model/int8/start/", {}).status_code == 404


def test_one_conversion_at_a_time_a_cancel_and_a_worker_failure_are_shown(
    litert, fast_model, staff_client, alice, django_capture_on_commit_callbacks
):
    from tests.training_helpers import colour_dataset

    dataset = colour_dataset(alice, name="Colours", per_label=4)
    staff_client.post(START, {"dataset": dataset.pk})  # not committed: stays queued (no worker ran it)
    row = Int8Calibration.objects.get()
    assert row.status == "queued"
    page = text(staff_client.get(PAGE))
    assert 'data-state="active"' in page and "Waiting for the worker" in page
    assert 'hx-get="/models/mobilenet-0.5-128/int8/"' in page  # the card polls itself
    assert 'data-state="active"' in text(staff_client.get(f"/models/{FAST_MODEL}/int8/"))
    response = staff_client.post(START, {"dataset": dataset.pk})
    assert response.status_code == 409 and "already queued or running" in text(response)

    response = staff_client.post(f"/models/{FAST_MODEL}/int8/cancel/", follow=True)
    assert "The int8 conversion was cancelled; the model stays on float32." in text(response)
    row.refresh_from_db()
    assert row.status == "cancelled"

    # The dataset goes before the worker gets to the conversion: it fails, in words.
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        staff_client.post(START, {"dataset": dataset.pk})
    dataset.delete()
    for callback in callbacks:
        callback()
    row = Int8Calibration.objects.latest("id")
    assert row.status == "failed"
    page = text(staff_client.get(PAGE))
    assert 'data-state="failed"' in page and "The dataset chosen for calibration does not exist any more." in page


# --- A trained model, calibrated on its training split, on its job page ----------------------
def finished_job(user, dataset):
    """A training job queued through the app, finished with a small real Keras model (no training run)."""
    import keras
    from django.utils import timezone

    from tests.training_helpers import TRAIN_BASE
    from training import jobs, trainer
    from training.models import TrainedModel, TrainingJob

    config = trainer.TrainConfig(epochs=1, fine_tune_epochs=0)
    job = jobs.start_training(dataset, TRAIN_BASE, config, user, enqueue=False)  # recorded, never run
    inputs = keras.Input((96, 96, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax")(x)
    job.folder.mkdir(parents=True, exist_ok=True)
    keras.Model(inputs, outputs).save(job.folder / "model.keras")
    TrainingJob.objects.filter(pk=job.pk).update(status="succeeded", finished_at=timezone.now(), message="Done.")
    TrainedModel.objects.create(job=job, dataset=dataset, name="Colours model", base_key=TRAIN_BASE, input_size=96,
                                labels=job.labels)  # fmt: skip
    job.refresh_from_db()
    return job


def test_a_trained_model_is_switched_to_int8_on_its_job_page(
    litert, alice, alice_client, bob, install_weights, django_capture_on_commit_callbacks
):
    from tests.training_helpers import TRAIN_BASE, colour_dataset
    from training.models import TrainedModel

    install_weights(TRAIN_BASE, include_top=False)
    dataset = colour_dataset(alice, per_label=12)
    job = finished_job(alice, dataset)
    model = TrainedModel.objects.get(job=job)
    train_images = sum(1 for image in job.snapshot["images"] if image[2] == "train")
    url = f"/datasets/jobs/{job.pk}/"

    page = text(alice_client.get(url))
    assert 'data-testid="job-runtime"' in page and "<strong>TensorFlow</strong>" in page
    assert "Faster int8 model" in page and f"the training split of job {job.pk}" in page
    assert "Calibrate on the training images and measure" in page

    bob_client = Client()
    bob_client.force_login(bob)
    assert "Those who manage the dataset can calibrate" in text(bob_client.get(url))
    assert bob_client.post(f"{url}int8/start/").status_code == 403

    with django_capture_on_commit_callbacks(execute=True):
        response = alice_client.post(f"{url}int8/start/")
    assert response.status_code == 302
    row = Int8Calibration.objects.get()
    assert row.status == "succeeded", row.message
    assert row.model_key == model.key and row.images == train_images
    assert row.source == f"the training split of job {job.pk}"

    page = text(alice_client.get(url))
    assert f"Top-1 agrees with float32 on {row.agreeing_images} of {row.checked_images} images" in page
    alice_client.post(f"{url}int8/switch/", {"to": "int8"})
    page = text(alice_client.get(url))
    assert "<strong>LiteRT int8</strong>" in page and "Switch back to float32" in page
    api = Client(HTTP_AUTHORIZATION=f"Bearer {ApiToken.issue(bob, 'trained')[1]}")
    entry = model_entry(api, model.key)
    assert entry["precision"] == "int8" and entry["int8"]["calibration"].startswith("the training split of job")
    assert bob_client.post(f"{url}int8/switch/", {"to": "float32"}).status_code == 403
    alice_client.post(f"{url}int8/switch/", {"to": "float32"})
    assert model_entry(api, model.key)["precision"] == "float32"
    job.delete()
    assert "This model was deleted." in text(alice_client.get(f"{url}int8/"))  # a polling card learns it, no 404


def fast_model_path():
    from django.conf import settings

    from classifier import zoo

    return settings.WEIGHTS_DIR / zoo.get(FAST_MODEL).top.filename
