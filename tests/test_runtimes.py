"""Which runtime serves a model: LiteRT once the worker's conversion agrees with Keras, TensorFlow until then.

What users see: the Models page and `GET /api/v1/models` name the runtime (and why it is
TensorFlow); predictions are the same either way; a request never converts anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from classifier import inference, installs, lite, runtimes, tasks, zoo
from classifier.models import ApiToken
from tests.conftest import FAST_MODEL
from tests.helpers import noise_image_bytes

pytestmark = pytest.mark.django_db
PREDICT = "/api/v1/predict"
MODELS = "/api/v1/models"


@pytest.fixture
def api(bob) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {ApiToken.issue(bob, 'runtime tests')[1]}")


def photos(count: int = 3) -> list[SimpleUploadedFile]:
    return [
        SimpleUploadedFile(f"photo{i}.jpg", noise_image_bytes(seed=i, size=(150, 100), fmt="JPEG"))
        for i in range(count)
    ]


def probabilities(api: Client) -> list[list[tuple[str, float]]]:
    body = api.post(PREDICT, {"images": photos(), "model": FAST_MODEL, "top_k": "5"}).json()
    return [[(p["label"], p["probability"]) for p in r["predictions"]] for r in body["results"]]


def model_entry(api: Client, key: str = FAST_MODEL) -> dict:
    return next(m for m in api.get(MODELS).json()["models"] if m["key"] == key)


def test_the_worker_converts_an_installed_model_and_requests_then_run_on_litert(api, litert, fast_model, admin_client):
    reference = probabilities(api)  # before the worker converted anything: TensorFlow serves it
    assert inference.engine_runtime(FAST_MODEL) == "tensorflow"
    entry = model_entry(api)
    assert entry["runtime"] == "tensorflow"
    assert "Being converted to LiteRT by the worker" in entry["reason"]

    assert tasks.convert_pending() == 1  # what the worker does after an install, and every minute

    entry = model_entry(api)
    assert entry["runtime"] == "litert" and entry["reason"] == ""
    assert entry["agreement"]["images"] == lite.PROBE_IMAGES and entry["agreement"]["top1"] == 1.0
    assert entry["agreement"]["max_difference"] <= lite.TOLERANCE

    inference.reset_engine()
    after = probabilities(api)
    assert inference.engine_runtime(FAST_MODEL) == "litert"
    for before_row, after_row in zip(reference, after, strict=True):
        assert [label for label, _ in after_row] == [label for label, _ in before_row]
        for (_, p_before), (_, p_after) in zip(before_row, after_row, strict=True):
            assert abs(p_before - p_after) <= lite.TOLERANCE

    page = admin_client.get("/models/").content.decode()
    assert "Runs on LiteRT" in page
    detail = admin_client.get(f"/models/{FAST_MODEL}/").content.decode()
    assert "checked against Keras on 8 images, same top answer on every one" in detail

    assert tasks.convert_pending() == 0  # converted once per weights file


def test_a_request_never_converts_a_model(api, litert, fast_model, monkeypatch):
    def no_conversion_in_a_request(*args, **kwargs):
        raise AssertionError("a request converted a model")

    monkeypatch.setattr(lite, "convert", no_conversion_in_a_request)
    monkeypatch.setattr(runtimes, "convert", no_conversion_in_a_request)
    assert len(probabilities(api)) == 3
    assert inference.engine_runtime(FAST_MODEL) == "tensorflow"


def test_a_conversion_that_disagrees_keeps_the_model_on_tensorflow_and_says_why(
    api, litert, fast_model, admin_client, monkeypatch
):
    real_compare = lite.compare

    def drifted(reference, candidate, tolerance=lite.TOLERANCE):
        return real_compare(reference, candidate + 0.01, tolerance)

    monkeypatch.setattr(lite, "compare", drifted)
    tasks.convert_pending()

    entry = model_entry(api)
    assert entry["runtime"] == "tensorflow"
    assert entry["reason"].startswith("Kept on TensorFlow: The converted model's probabilities differ by up to")
    assert not list((runtimes.lite_dir()).glob("*.tflite"))  # the disagreeing file was not kept
    probabilities(api)
    assert inference.engine_runtime(FAST_MODEL) == "tensorflow"
    detail = admin_client.get(f"/models/{FAST_MODEL}/").content.decode()
    assert "Kept on TensorFlow: The converted model" in detail
    assert tasks.convert_pending() == 0  # refused once, not retried every minute for the same file


def test_the_off_switch_serves_everything_with_tensorflow(api, litert, fast_model, settings):
    tasks.convert_pending()
    settings.INFERENCE_RUNTIME = "tensorflow"
    inference.reset_engine()
    probabilities(api)
    assert inference.engine_runtime(FAST_MODEL) == "tensorflow"
    entry = model_entry(api)
    assert entry["runtime"] == "tensorflow"
    assert entry["reason"] == "LiteRT is turned off on this server."
    assert tasks.convert_pending() == 0


def test_installing_weights_queues_a_conversion_and_replaced_weights_are_converted_anew(
    litert, install_weights, tmp_path, django_capture_on_commit_callbacks, monkeypatch
):
    from tests.helpers import make_zoo_weights

    queued = []
    monkeypatch.setattr(tasks, "convert_models", lambda: queued.append(1))
    source = make_zoo_weights(FAST_MODEL, tmp_path / "download", seed=1)
    with django_capture_on_commit_callbacks(execute=True):
        installed = installs.import_path(source)
    assert queued == [1]

    monkeypatch.undo()
    tasks.convert_pending()
    first = runtimes.converted_path(installed.path)
    assert first.is_file()

    other = make_zoo_weights(FAST_MODEL, tmp_path / "other", seed=2)
    with django_capture_on_commit_callbacks(execute=True):
        installs.import_path(other)  # the worker runs the queued conversion (tasks run in-process here)
    second = runtimes.converted_path(installed.path)
    assert second != first and second.is_file()
    assert not first.exists()  # the old weights' conversion was pruned
    verdict = json.loads(second.with_suffix(".json").read_text())
    assert verdict["ok"] is True


def test_a_no_head_file_is_not_converted_for_classify(litert, install_weights):
    install_weights(FAST_MODEL, include_top=False)
    assert tasks.convert_pending() == 0
    assert zoo.get(FAST_MODEL)


def test_a_trained_model_is_checked_on_its_validation_images_before_it_runs_on_litert(
    alice, install_weights, django_capture_on_commit_callbacks, settings
):
    from tests.training_helpers import TRAIN_BASE, colour_dataset
    from training import jobs, trainer
    from training.models import TrainedModel

    install_weights(TRAIN_BASE, include_top=False)
    dataset = colour_dataset(alice, per_label=8)
    with django_capture_on_commit_callbacks(execute=True):
        job = jobs.start_training(dataset, TRAIN_BASE, trainer.TrainConfig(epochs=2, fine_tune_epochs=0), alice)
    model = TrainedModel.objects.get(job=job)
    validation = sum(1 for image in job.snapshot["images"] if image[2] == "validation")

    settings.INFERENCE_RUNTIME = "litert"
    assert tasks.convert_pending() == 1
    runtime = runtimes.runtime_for(model.path)
    assert runtime.name == "litert", runtime.reason
    assert runtime.verdict.checked == lite.PROBE_IMAGES + validation


def test_a_finished_training_job_has_its_model_converted_without_waiting_for_the_minute(
    alice, install_weights, django_capture_on_commit_callbacks, litert
):
    from tests.training_helpers import TRAIN_BASE, colour_dataset
    from training import jobs, trainer
    from training.models import TrainedModel

    install_weights(TRAIN_BASE, include_top=False)
    dataset = colour_dataset(alice, per_label=8)
    with django_capture_on_commit_callbacks(execute=True):  # the job, then what its success queued
        job = jobs.start_training(dataset, TRAIN_BASE, trainer.TrainConfig(epochs=1, fine_tune_epochs=0), alice)
    model = TrainedModel.objects.get(job=job)
    runtime = runtimes.runtime_for(model.path)
    assert runtime.name == "litert", runtime.reason


def test_trainings_converted_bases_go_when_their_weights_file_is_removed(litert, settings):
    """DATA_DIR/lite/features keeps one extractor per base weights file; a removed file's goes too."""
    weights = Path(settings.WEIGHTS_DIR)
    weights.mkdir(parents=True, exist_ok=True)
    kept, removed = weights / "kept_notop.h5", weights / "removed_notop.h5"
    kept.write_bytes(b"kept weights")
    removed.write_bytes(b"removed weights")
    folder = runtimes.lite_dir() / "features" / "mobilenetv2"
    folder.mkdir(parents=True)
    names = {}
    for path in (kept, removed):
        stem = lite.file_stem(runtimes.weights_hash(path))
        names[path] = [f"{stem}-96px-pooled.tflite", f"{stem}-96px-pooled.json"]
        for name in names[path]:
            (folder / name).write_bytes(b"x")
    removed.unlink()

    tasks.convert_pending()

    assert sorted(p.name for p in folder.iterdir()) == sorted(names[kept])


def test_a_conversion_waits_while_the_machine_lacks_the_memory_for_it(api, litert, fast_model, monkeypatch, caplog):
    """Converting a large model takes GBs: a worker short of memory is not killed, it tries again later."""
    monkeypatch.setattr(runtimes, "available_memory_mb", lambda: 100.0)
    assert tasks.convert_pending() == 0
    assert tasks.convert_pending() == 0
    assert model_entry(api)["runtime"] == "tensorflow"
    warnings = [r.getMessage() for r in caplog.records if "not converted to LiteRT yet" in r.getMessage()]
    assert len(warnings) == 1 and "100 MB are free" in warnings[0]  # said once, not every minute

    monkeypatch.setattr(runtimes, "available_memory_mb", lambda: 10_000.0)
    assert tasks.convert_pending() == 1
    assert model_entry(api)["runtime"] == "litert"
