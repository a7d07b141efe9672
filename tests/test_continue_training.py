"""Continue training: a job starts from an earlier job's model on the dataset as it is now.

Three layers, cheapest first: the Keras side alone on a small hand-built model (training.continuing),
the form and its refusals on constructed jobs, then two real jobs: a first one, a label added, and a
continued job whose head grew (the old labels' weights checked right after the warm start).
"""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone
from django.utils.html import strip_tags
from PIL import Image

from tests.helpers import reinitialise
from tests.training_helpers import TRAIN_BASE, colour_dataset, colour_png
from training import continuing, jobs, outcomes, trainer, uploads
from training.models import TrainedModel, TrainingJob
from training.trainer import TrainingError

SIZE = 48
LABELS = ("blue", "green", "red")


def yellow_png(seed: int, size: int = 64) -> bytes:
    """A picture dominated by red and green together: a colour none of the first labels has."""
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 30, size=(size, size, 3)).astype(np.int16)
    array[..., :2] += 225
    out = io.BytesIO()
    Image.fromarray(np.clip(array, 0, 255).astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


def _text(html: str) -> str:
    return " ".join(strip_tags(html).split())


# --- The Keras side alone ------------------------------------------------------------------------------
def _base(seed: int = 0):
    import keras

    base = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(SIZE, SIZE, 3), alpha=0.35)
    reinitialise(base, seed)
    return base


@pytest.fixture(scope="module")
def earlier_model(tmp_path_factory):
    """A saved model as the trainer assembles it (preprocessing, base, pooling, head), with a trained-looking
    head: every weight random, so each label's output weights are recognisable."""
    from keras.applications import mobilenet_v2

    base = _base()
    head = trainer.build_head(int(base.output.shape[-1]), len(LABELS), trainer.TrainConfig())
    rng = np.random.default_rng(7)
    for layer in head.layers:
        layer.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in layer.get_weights()])
    model = trainer.assemble(base, head, trainer.preprocessing_layer(mobilenet_v2.preprocess_input), SIZE)
    path = tmp_path_factory.mktemp("earlier") / "model.keras"
    model.save(path)
    return path, [w.copy() for w in head.get_layer("dense").get_weights()], head.get_layer("predictions").get_weights()


def _start(path, labels=LABELS, base=None, size: int = SIZE, **warm) -> continuing.Earlier:
    """Start a job on `base` (the installed one by default) from the model at `path`, as the trainer does."""
    from keras.applications import mobilenet_v2

    base = base if base is not None else _base()
    return continuing.start_from(continuing.WarmStart(path, labels, name="job 3", **warm), base,
                                 trainer.preprocessing_layer(mobilenet_v2.preprocess_input), size, "Tiny MobileNetV2",
                                 trainer.TrainConfig())  # fmt: skip


def test_the_head_grows_old_labels_keep_their_weights_and_removed_ones_go(earlier_model):
    path, dense, (kernel, bias) = earlier_model
    earlier = _start(path)
    now = ["Blue", "red", "yellow"]  # green removed, yellow added; names match whatever the case
    head = trainer.build_head(dense[0].shape[0], len(now), trainer.TrainConfig())
    start = continuing.warm_head(head, earlier, now)

    assert (start.kept, start.new, start.dropped) == (("Blue", "red"), ("yellow",), ("green",))
    new_kernel, new_bias = head.get_layer("predictions").get_weights()
    assert new_kernel.shape == (dense[0].shape[1], 3)
    np.testing.assert_array_equal(new_kernel[:, 0], kernel[:, 0])  # blue
    np.testing.assert_array_equal(new_kernel[:, 1], kernel[:, 2])  # red
    assert new_bias[:2].tolist() == [bias[0], bias[2]]
    assert not np.allclose(new_kernel[:, 2], kernel[:, 1])  # yellow: fresh, not green's
    assert new_bias[2] == pytest.approx((bias[0] + bias[2]) / 2)  # on an equal footing with the kept ones
    for mine, theirs in zip(head.get_layer("dense").get_weights(), dense, strict=True):
        np.testing.assert_array_equal(mine, theirs)
    assert continuing.describe(earlier, start) == (
        "Started from the model of job 3: its head kept the weights of 2 labels (“Blue”, “red”); “yellow” is new "
        "and starts from fresh weights; “green”, no longer in the dataset, was dropped."
    )


def test_the_earlier_jobs_fine_tuned_layers_are_loaded_into_the_base(earlier_model):
    path, _, _ = earlier_model
    base = _base()
    tuned_layer = next(layer for layer in base.layers[100:] if layer.get_weights()
                       and type(layer).__name__ != "BatchNormalization")  # fmt: skip
    earlier_weights = tuned_layer.get_weights()
    tuned_layer.set_weights([w + 1 for w in earlier_weights])  # the installed base differs above the cut
    earlier = _start(path, base=base, fine_tuned_from=100)
    assert earlier.changes_base and earlier.layers_loaded > 0
    for mine, theirs in zip(tuned_layer.get_weights(), earlier_weights, strict=True):
        np.testing.assert_array_equal(mine, theirs)  # the earlier model's, not the installed ones


def test_a_base_whose_weights_changed_is_refused(earlier_model):
    path, _, _ = earlier_model
    with pytest.raises(TrainingError, match="Tiny MobileNetV2's weights file changed since job 3 was trained"):
        _start(path, base=_base(seed=1))


def test_another_base_is_refused(earlier_model):
    import keras

    path, _, _ = earlier_model
    wider = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(SIZE, SIZE, 3), alpha=0.5)
    with pytest.raises(TrainingError, match="The model of job 3 was built on another base than Tiny MobileNetV2"):
        _start(path, base=wider)


def test_another_input_size_is_refused(earlier_model):
    path, _, _ = earlier_model
    with pytest.raises(TrainingError, match="takes 48-pixel images, and Tiny MobileNetV2 now takes 96"):
        _start(path, size=96)


def test_a_model_file_gone_or_damaged_is_refused(earlier_model, tmp_path):
    with pytest.raises(TrainingError, match="The model of job 3 is gone"):
        _start(tmp_path / "model.keras")
    (tmp_path / "model.keras").write_bytes(b"not a zip")
    with pytest.raises(TrainingError, match="The model file of job 3 cannot be read any more"):
        _start(tmp_path / "model.keras")
    path, _, _ = earlier_model
    with pytest.raises(TrainingError, match="answers with 3 labels but its record names 2"):
        _start(path, labels=LABELS[:2])


def _examples(folder, labels: list[str], per_label: int = 12, first_id: int = 1) -> trainer.TrainData:
    """Pictures of each label (9 train, 3 validation of 12), ids numbered from `first_id` label by label."""
    parts: dict[str, list[trainer.Example]] = {"train": [], "validation": []}
    image_id = first_id
    for index, label in enumerate(labels):
        for i in range(per_label):
            path = folder / f"{label}-{i}.png"
            path.write_bytes(yellow_png(i) if label == "yellow" else colour_png(["red", "green", "blue"].index(label),
                                                                               image_id))  # fmt: skip
            parts["train" if i < per_label * 3 // 4 else "validation"].append(trainer.Example(path, index, image_id))
            image_id += 1
    return trainer.TrainData(labels, parts["train"], parts["validation"])


def test_a_continued_job_takes_the_earlier_features_of_the_images_it_saw(tmp_path):
    from keras.applications import mobilenet_v2

    base = trainer.Base("tiny", "Tiny", SIZE, _base, mobilenet_v2.preprocess_input)
    first_data = _examples(tmp_path, ["blue", "green", "red"])
    first = trainer.run(trainer.TrainConfig(epochs=3), base, first_data, tmp_path / "first")
    ids = {split: [e.image_id for e in getattr(first_data, split)] for split in ("train", "validation", "test")}
    outcomes.save_features(tmp_path / "first", ids, first.features)  # as the job keeps them
    start = continuing.WarmStart(first.model_path, tuple(first_data.labels), name="job 1")
    yellow = _examples(tmp_path, ["yellow"], first_id=100)
    added = {split: [replace(e, label=3) for e in getattr(yellow, split)] for split in ("train", "validation")}
    now = trainer.TrainData(["blue", "green", "red", "yellow"], first_data.train + added["train"],
                            first_data.validation + added["validation"])  # fmt: skip

    later = trainer.run(trainer.TrainConfig(epochs=3), base, now, tmp_path / "later", start=start)

    assert later.strategy["reused_features"] == 27
    assert "The features of 27 of the 36 training images came from job 1; 9 went through the base." in later.notes
    reused = later.features["train"][:27]
    np.testing.assert_array_equal(reused, first.features["train"].astype(np.float16).astype(np.float32))
    assert later.evaluation["validation"]["images"] == 12  # validation images always go through the base
    augmented = trainer.run(trainer.TrainConfig(epochs=1, augment=("flip",)), base, now, tmp_path / "aug", start=start)
    assert "reused_features" not in augmented.strategy  # augmented views need every image decoded again


# --- The form, and its refusals, on constructed jobs ------------------------------------------------
def _finished(dataset, user, *, input_size: int = 96, with_file: bool = True, **config) -> TrainingJob:
    """A finished job row with its model row; its model file is a stand-in (nothing trains on it here)."""
    settings = trainer.TrainConfig(**{"epochs": 10, **config})
    job = TrainingJob.objects.create(
        dataset=dataset, created_by=user, base_key=TRAIN_BASE, base_name="MobileNetV2 0.35 (96)",
        status=TrainingJob.Status.SUCCEEDED, config=settings.as_dict(), snapshot=dataset.snapshot(),
        started_at=timezone.now(), model_ready_at=timezone.now(),
    )  # fmt: skip
    model = TrainedModel.objects.create(job=job, dataset=dataset, name=f"job {job.pk}", base_key=TRAIN_BASE,
                                        input_size=input_size, labels=job.labels)  # fmt: skip
    if with_file:
        model.path.parent.mkdir(parents=True, exist_ok=True)
        model.path.write_bytes(b"stand-in")
    return job


@pytest.fixture
def finished(alice, install_weights):
    install_weights(TRAIN_BASE, include_top=False)
    dataset = colour_dataset(alice, per_label=4)
    return _finished(dataset, alice, fine_tune_epochs=5, fine_tune_from=100, augment=("flip",), seed=3)


@pytest.mark.django_db
def test_a_finished_jobs_page_offers_to_continue_to_who_may_train(finished, client, alice, bob):
    url = reverse("training:job_detail", args=[finished.pk])
    client.force_login(alice)
    assert "Continue training" in client.get(url).content.decode()
    client.force_login(bob)
    assert "Continue training" not in client.get(url).content.decode()
    assert client.get(reverse("training:job_continue", args=[finished.pk])).status_code == 403


@pytest.mark.django_db
def test_the_continue_form_keeps_the_base_and_proposes_fewer_epochs(finished, alice_client):
    response = alice_client.get(reverse("training:job_continue", args=[finished.pk]))
    assert response.status_code == 200
    form = response.context["form"]
    assert form["epochs"].value() == 5  # half of 10: the head starts trained
    assert form["fine_tune_epochs"].value() == 0  # the base keeps its fine-tuned layers; fine-tuning again is a choice
    assert form["fine_tune_from"].value() == 100 and form["augment"].value() == ["flip"] and form["seed"].value() == 3
    page = _text(response.content.decode())
    assert f"Continue training from job {finished.pk}" in page
    assert "A continued job keeps the base of the job it continues from." in page


@pytest.mark.django_db
def test_continuing_queues_a_job_that_records_where_it_starts_from(
    finished, alice_client, monkeypatch, django_capture_on_commit_callbacks
):
    from training import tasks

    queued: list[int] = []
    monkeypatch.setattr(tasks, "train", queued.append)
    data = {"base": "resnet50", "epochs": 4, "learning_rate": 0.001, "fine_tune_epochs": 2, "fine_tune_from": 100,
            "fine_tune_learning_rate": 0.0001, "batch_size": 16, "class_weights": "on", "seed": 0}  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_client.post(reverse("training:job_continue", args=[finished.pk]), data)
    new = TrainingJob.objects.exclude(pk=finished.pk).get()
    assert response.status_code == 302 and response.url == reverse("training:job_detail", args=[new.pk])
    assert queued == [new.pk]
    assert new.start_from == finished and new.parent is None
    assert new.base_key == TRAIN_BASE  # the posted base is ignored: a continued job keeps its base
    assert (new.config["epochs"], new.config["fine_tune_epochs"], new.config["batch_size"]) == (4, 2, 16)
    assert new.snapshot["start_from"] == {"job": finished.pk, "labels": finished.labels, "fine_tuned_from": 100}
    page = _text(alice_client.get(response.url).content.decode())
    assert f"it continues from the model of job {finished.pk}" in page
    assert f"continued from job {finished.pk}" in page


@pytest.mark.django_db
def test_bad_settings_show_the_form_again_with_what_to_change(finished, alice_client):
    response = alice_client.post(reverse("training:job_continue", args=[finished.pk]), {"epochs": 0})
    assert response.status_code == 400
    assert "Ensure this value is greater than or equal to 1." in response.content.decode()
    assert TrainingJob.objects.count() == 1


@pytest.mark.django_db
def test_a_model_whose_files_are_gone_cannot_be_continued(finished, alice_client):
    finished.trained_model.path.unlink()
    url = reverse("training:job_continue", args=[finished.pk])
    page = _text(alice_client.get(url).content.decode())
    assert f"The model files of job {finished.pk} are gone, so there is nothing to continue from." in page
    response = alice_client.post(url, {"epochs": 5, "learning_rate": 0.001, "fine_tune_learning_rate": 0.0001,
                                       "batch_size": 32})  # fmt: skip
    assert response.status_code == 409
    assert "are gone" in response.content.decode()
    assert TrainingJob.objects.count() == 1


@pytest.mark.django_db
def test_refusals_in_words(finished, alice, install_weights):
    dataset = finished.dataset
    config = trainer.TrainConfig(epochs=3)
    install_weights("mobilenet-0.5-128", include_top=False)
    with pytest.raises(jobs.TrainingRefused, match=f"Job {finished.pk} was trained on MobileNetV2 0.35 \\(96\\), and "
                                                   "a continued job keeps its base"):  # fmt: skip
        jobs.start_training(dataset, "mobilenet-0.5-128", config, alice, start_from=finished)
    other = _finished(dataset, alice, input_size=128)
    with pytest.raises(jobs.TrainingRefused, match="takes 128-pixel images"):
        jobs.continue_training(other, config, alice)
    TrainingJob.objects.filter(pk=other.pk).update(status=TrainingJob.Status.FAILED)
    other.refresh_from_db()
    with pytest.raises(jobs.TrainingRefused, match="Only a finished job's model can be continued"):
        jobs.continue_training(other, config, alice)


@pytest.mark.django_db
def test_an_earlier_job_deleted_while_the_job_waits_fails_it_in_words(
    finished, alice, monkeypatch, django_capture_on_commit_callbacks
):
    from training import tasks

    monkeypatch.setattr(tasks, "train", lambda pk: None)
    waiting = jobs.continue_training(finished, trainer.TrainConfig(epochs=2), alice)
    earlier = finished.pk
    with django_capture_on_commit_callbacks(execute=True):  # its files go once the delete commits
        finished.delete()
    jobs.run_training_job(waiting.pk)
    waiting.refresh_from_db()
    assert waiting.status == TrainingJob.Status.FAILED
    assert waiting.message == (
        f"The model of job {earlier} is gone (its files were deleted), so there is nothing to continue from. "
        "Start a new job with “Train a model” instead."
    )


@pytest.mark.django_db
def test_training_a_continued_job_again_continues_from_the_same_model(finished, alice, monkeypatch):
    from training import tasks

    monkeypatch.setattr(tasks, "train", lambda pk: None)
    continued = jobs.continue_training(finished, trainer.TrainConfig(epochs=2), alice)
    again = jobs.train_again(continued, alice)
    assert (again.parent, again.start_from) == (continued, finished)


# --- Two real jobs ------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_continuing_with_a_new_label_grows_the_head_keeps_the_old_weights_and_learns_it(
    alice, alice_client, install_weights, monkeypatch
):
    import keras

    install_weights(TRAIN_BASE, include_top=False)
    monkeypatch.setattr(jobs, "_build_exports", lambda *args: {})  # exports are another test's business
    dataset = colour_dataset(alice, per_label=20)
    first = jobs.start_training(dataset, TRAIN_BASE, trainer.TrainConfig(epochs=15, fine_tune_epochs=1,
                                                                           fine_tune_from=100), alice)  # fmt: skip
    jobs.run_training_job(first.pk)
    first.refresh_from_db()
    assert first.status == TrainingJob.Status.SUCCEEDED, first.message

    files = [SimpleUploadedFile(f"yellow_{i}.png", yellow_png(500 + i)) for i in range(20)]
    uploads.add_uploads(dataset, "yellow", files, alice)
    after_warm_start = {}
    real_warm_head = continuing.warm_head

    def watch(head, earlier, labels):
        start = real_warm_head(head, earlier, labels)
        after_warm_start.update(labels=list(labels), dense=head.get_layer("dense").get_weights(),
                                predictions=head.get_layer("predictions").get_weights())  # fmt: skip
        return start

    monkeypatch.setattr(continuing, "warm_head", watch)
    second = jobs.continue_training(first, trainer.TrainConfig(epochs=10), alice)
    jobs.run_training_job(second.pk)
    second.refresh_from_db()
    assert second.status == TrainingJob.Status.SUCCEEDED, second.message

    # Right after the warm start: the old labels' output weights and the dense layer are the first model's.
    earlier_model = keras.models.load_model(first.trained_model.path, compile=False)
    earlier_head = earlier_model.get_layer("head")
    old_kernel, old_bias = earlier_head.get_layer("predictions").get_weights()
    assert after_warm_start["labels"] == ["blue", "green", "red", "yellow"]
    kernel, bias = after_warm_start["predictions"]
    assert kernel.shape[1] == 4
    for i, name in enumerate(first.trained_model.labels):
        j = after_warm_start["labels"].index(name)
        np.testing.assert_array_equal(kernel[:, j], old_kernel[:, i])
        assert bias[j] == old_bias[i]
    for mine, theirs in zip(after_warm_start["dense"], earlier_head.get_layer("dense").get_weights(), strict=True):
        np.testing.assert_array_equal(mine, theirs)

    # The base kept the first job's fine-tuned layers, and features were still computed once and cached.
    later_model = keras.models.load_model(second.trained_model.path, compile=False)
    earlier_base, later_base = (
        next(layer for layer in m.layers if isinstance(layer, keras.Model) and layer.name != "head")
        for m in (earlier_model, later_model)
    )
    for mine, theirs in zip(later_base.layers[100:], earlier_base.layers[100:], strict=True):
        for a, b in zip(mine.get_weights(), theirs.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    assert second.strategy["cached_features"] is True
    assert "the base carries the fine-tuned layers of job" in second.strategy["features"]
    started = f"Started from the model of job {first.pk}: its head kept the weights of 3 labels"
    assert any(note.startswith(started) for note in second.notes), second.notes

    # It answers with the new label, and gets it right on validation images it never trained on.
    assert second.trained_model.labels == ["blue", "green", "red", "yellow"]
    yellow = next(row for row in second.evaluation["validation"]["labels"] if row["name"] == "yellow")
    assert yellow["support"] >= 2 and yellow["recall"] == 1.0, second.evaluation["validation"]
    assert second.evaluation["validation"]["accuracy"] >= 0.9

    page = _text(alice_client.get(reverse("training:job_detail", args=[second.pk])).content.decode())
    assert f"Continued from job {first.pk}: this model was ready in" in page
    assert "yellow new label" in page
    timeline = _text(alice_client.get(reverse("training:dataset_detail", args=[dataset.pk])).content.decode())
    assert f"20 images added between job {first.pk} and job {second.pk}" in timeline
