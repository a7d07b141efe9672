"""`manage.py import_dataset` and `manage.py train`: the web page's import and training, from a shell."""

from __future__ import annotations

import json
import os
import signal
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from tests.dataset_helpers import files_under, image_zip, write
from tests.training_helpers import TRAIN_BASE, colour_dataset
from training import imports
from training.models import Dataset, ImportJob, TrainedModel, TrainingJob

pytestmark = pytest.mark.django_db


def run(name: str, *args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(name, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


# --- import_dataset ----------------------------------------------------------------------------
def test_import_creates_the_dataset_and_reports_per_label(tmp_path: Path, alice):
    archive = write(tmp_path / "incoming" / "pets.zip", image_zip({"cats": 3, "dogs": 2}))

    out, _ = run("import_dataset", str(archive), "--name", "Pets", "--user", "alice")

    dataset = Dataset.objects.get(name="Pets")
    assert dataset.created_by == alice
    assert dataset.images.count() == 5
    assert set(dataset.images.values_list("added_by__username", flat=True)) == {"alice"}
    job = ImportJob.objects.get(dataset=dataset)
    assert job.status == ImportJob.Status.SUCCEEDED and job.created_by == alice
    lines = out.splitlines()
    assert any(line.split()[:4] == ["cats", "3", "0", "0"] for line in lines), out
    assert any(line.split()[:4] == ["dogs", "2", "0", "0"] for line in lines), out
    assert "Added 5 images." in lines
    assert archive.exists(), "the original zip stays where it was"
    assert files_under(imports.archives_dir()) == [], "the linked or copied zip goes when the job ends"


def test_import_into_an_existing_dataset_ignores_case_and_reports_duplicates(tmp_path: Path, alice):
    existing = Dataset.objects.create(name="Pets", created_by=alice)
    first = write(tmp_path / "first.zip", image_zip({"cats": 3}))
    run("import_dataset", str(first), "--name", "pets")
    both = write(tmp_path / "both.zip", image_zip({"cats": 3, "dogs": 2}))  # same seeds: the same cats

    out, _ = run("import_dataset", str(both), "--name", "PETS")

    assert Dataset.objects.count() == 1
    assert existing.images.count() == 5
    assert "existing dataset “Pets”" in out
    assert any(line.split()[:4] == ["cats", "0", "3", "0"] for line in out.splitlines()), out
    assert "Added 2 images, skipped 3 duplicates." in out.splitlines()
    assert all(image.added_by is None for image in existing.images.all())


def test_import_lists_rejected_files_with_reasons(tmp_path: Path):
    from tests.dataset_helpers import make_zip
    from tests.helpers import noise_image_bytes

    archive = write(
        tmp_path / "mixed.zip",
        make_zip({"cats/good.png": noise_image_bytes(1, size=(48, 48)), "cats/broken.png": b"not an image"}),
    )

    out, _ = run("import_dataset", str(archive), "--name", "Mixed")

    assert "Rejected in “cats” (1):" in out
    assert "cats/broken.png — " in out
    assert "Added 1 image, rejected 1 file." in out.splitlines()


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda folder: folder / "nowhere.zip", "No such file"),
        (lambda folder: write(folder / "notes.zip", b"these are not zip bytes"), "not a zip archive"),
        (lambda folder: folder, "is not a file"),
    ],
    ids=["missing", "not-a-zip", "a-folder"],
)
def test_import_refuses_a_missing_or_non_zip_file_before_creating_anything(tmp_path: Path, make, words):
    path = make(tmp_path)

    with pytest.raises(CommandError, match=words):
        run("import_dataset", str(path), "--name", "Pets")

    assert not Dataset.objects.exists()
    assert not ImportJob.objects.exists()


def test_import_refuses_an_unknown_user_before_creating_anything(tmp_path: Path):
    archive = write(tmp_path / "pets.zip", image_zip({"cats": 1}))
    with pytest.raises(CommandError, match="No user named 'nobody'"):
        run("import_dataset", str(archive), "--name", "Pets", "--user", "nobody")
    assert not Dataset.objects.exists()


def test_a_failed_import_exits_with_the_jobs_message_and_keeps_the_dataset_as_it_was(tmp_path: Path, alice, settings):
    dataset = Dataset.objects.create(name="Pets", created_by=alice)
    settings.IMPORT_MAX_MEMBERS = 2
    archive = write(tmp_path / "big.zip", image_zip({"cats": 3, "dogs": 2}))

    with pytest.raises(CommandError) as caught:
        run("import_dataset", str(archive), "--name", "Pets")

    job = ImportJob.objects.get(dataset=dataset)
    assert job.status == ImportJob.Status.FAILED
    assert str(caught.value) == job.message
    assert not dataset.images.exists() and not dataset.labels.exists()
    assert files_under(imports.archives_dir()) == []


def test_a_failed_import_removes_the_dataset_it_created(tmp_path: Path, settings):
    settings.IMPORT_MAX_MEMBERS = 2
    archive = write(tmp_path / "big.zip", image_zip({"cats": 3, "dogs": 2}))

    with pytest.raises(CommandError):
        run("import_dataset", str(archive), "--name", "Pets")

    assert not Dataset.objects.exists()
    assert not ImportJob.objects.exists()


# --- train: queueing and refusals ------------------------------------------------------------
@pytest.fixture
def trainable(alice, install_weights) -> Dataset:
    install_weights(TRAIN_BASE, include_top=False)
    return colour_dataset(alice, per_label=8)


def test_train_queues_a_job_like_the_form_and_prints_its_id(
    trainable, alice, monkeypatch, django_capture_on_commit_callbacks
):
    from training import tasks

    sent: list[int] = []
    monkeypatch.setattr(tasks, "train", sent.append)
    with django_capture_on_commit_callbacks(execute=True):
        out, _ = run(
            "train", "--dataset", "colours", "--base", TRAIN_BASE, "--epochs", "4", "--augment", "flip,zoom",
            "--no-early-stopping", "--user", "alice",
        )  # fmt: skip

    job = TrainingJob.objects.get()
    assert sent == [job.pk]
    assert job.status == TrainingJob.Status.QUEUED and job.created_by == alice
    assert job.config["epochs"] == 4 and job.config["augment"] == ["flip", "zoom"]
    assert job.config["early_stopping"] is False and job.config["class_weights"] is True  # the form's default
    assert f"job {job.pk}" in out


def test_train_queued_with_json_prints_one_json_line_on_stdout(
    trainable, monkeypatch, django_capture_on_commit_callbacks
):
    from training import tasks

    monkeypatch.setattr(tasks, "train", lambda job_id: None)
    with django_capture_on_commit_callbacks(execute=True):
        out, err = run("train", "--dataset", str(trainable.pk), "--base", TRAIN_BASE, "--json")

    job = TrainingJob.objects.get()
    assert out.count("\n") == 1
    result = json.loads(out)
    assert result["job"] == job.pk and result["status"] == "queued" and result["model"] is None
    assert result["val_accuracy"] is None and result["seconds"] >= 0
    assert f"job {job.pk}" in err


def test_train_refuses_invalid_options_with_the_forms_messages(trainable):
    with pytest.raises(CommandError, match=r"--epochs: .*greater than or equal to 1"):
        run("train", "--dataset", "Colours", "--base", TRAIN_BASE, "--epochs", "0")
    with pytest.raises(CommandError, match="--augment: "):
        run("train", "--dataset", "Colours", "--base", TRAIN_BASE, "--augment", "flip,blur")
    assert not TrainingJob.objects.exists()


def test_train_on_an_unknown_dataset_lists_the_names(alice):
    Dataset.objects.create(name="Birds", created_by=alice)
    Dataset.objects.create(name="pets", created_by=alice)
    with pytest.raises(CommandError, match=r"No dataset named 'Fish'.*Datasets: Birds, pets\.$"):
        run("train", "--dataset", "Fish", "--base", TRAIN_BASE)


def test_train_lists_at_most_twenty_dataset_names(alice):
    Dataset.objects.bulk_create(Dataset(name=f"Set {i:02d}", created_by=alice) for i in range(23))
    with pytest.raises(CommandError) as caught:
        run("train", "--dataset", "99", "--base", TRAIN_BASE)
    message = str(caught.value)
    assert "Set 19" in message and "Set 20" not in message and message.endswith("and 3 more.")


def test_train_on_a_dataset_that_cannot_be_trained_on_says_why(alice, install_weights):
    install_weights(TRAIN_BASE, include_top=False)
    colour_dataset(alice, name="Lonely", labels=("red",), per_label=4)
    with pytest.raises(CommandError, match="A model needs at least 2 labels"):
        run("train", "--dataset", "Lonely", "--base", TRAIN_BASE)
    assert not TrainingJob.objects.exists()


def test_train_refuses_an_unknown_or_missing_base(trainable):
    with pytest.raises(CommandError, match="Unknown model 'no-such-net'"):
        run("train", "--dataset", "Colours", "--base", "no-such-net")
    with pytest.raises(CommandError, match="weights are not installed"):
        run("train", "--dataset", "Colours", "--base", "resnet50")
    assert not TrainingJob.objects.exists()


def test_ctrl_c_during_a_foreground_job_cancels_it_and_exits_non_zero_after_the_json_line(trainable, monkeypatch):
    """The handler asks the job to stop through its row; the job (here a stand-in) ends cancelled."""
    from training import jobs

    seen = {}

    def stand_in(job_id: int, echo=None) -> TrainingJob:
        TrainingJob.claim(job_id)
        os.kill(os.getpid(), signal.SIGINT)  # Python runs the handler before the next line
        seen["cancel_requested"] = TrainingJob.objects.get(pk=job_id).cancel_requested
        message = "Cancelled during transfer learning, after 1 epoch; the curves so far are kept."
        TrainingJob.transition(job_id, TrainingJob.Status.CANCELLED, message=message)
        return TrainingJob.objects.get(pk=job_id)

    monkeypatch.setattr(jobs, "run_training_job", stand_in)
    before = signal.getsignal(signal.SIGINT)
    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError, match="Cancelled during transfer learning"):
        call_command(
            "train", "--dataset", "Colours", "--base", TRAIN_BASE, "--foreground", "--json", stdout=out, stderr=err
        )

    assert seen == {"cancel_requested": True}
    assert json.loads(out.getvalue().splitlines()[-1])["status"] == "cancelled"
    assert "Cancelling job" in err.getvalue()
    assert signal.getsignal(signal.SIGINT) is before, "the command's handler is gone when it ends"


def test_ctrl_c_during_an_import_cancels_and_undoes_it(tmp_path: Path, alice, monkeypatch):
    from training import archives

    dataset = Dataset.objects.create(name="Pets", created_by=alice)
    real_import_zip = archives.import_zip

    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return real_import_zip(*args, **kwargs)

    monkeypatch.setattr(archives, "import_zip", interrupted)
    archive = write(tmp_path / "pets.zip", image_zip({"cats": 3}))

    with pytest.raises(CommandError, match="Cancelled while it ran and undone"):
        run("import_dataset", str(archive), "--name", "Pets")

    assert ImportJob.objects.get(dataset=dataset).status == ImportJob.Status.CANCELLED
    assert not dataset.images.exists()
    assert files_under(dataset.folder) == [] and files_under(imports.archives_dir()) == []


# --- train --foreground: one real training ----------------------------------------------------
def test_train_in_the_foreground_trains_and_ends_with_a_json_line(alice, install_weights, monkeypatch):
    from training import exporting, tasks

    monkeypatch.setattr(tasks, "train", lambda job_id: pytest.fail("a foreground job must not be queued"))
    monkeypatch.setattr(exporting, "FORMATS", ("keras",))  # the TFLite conversions would take ~30 s more
    install_weights(TRAIN_BASE, include_top=False)
    colour_dataset(alice)

    out, err = run("train", "--dataset", "Colours", "--base", TRAIN_BASE, "--epochs", "3", "--foreground", "--json")

    lines = out.splitlines()
    assert len(lines) == 1, "with --json, stdout holds the JSON line only"
    result = json.loads(lines[-1])
    job = TrainingJob.objects.get()
    model = TrainedModel.objects.get(job=job)
    assert result["job"] == job.pk and result["status"] == "succeeded", job.message
    assert result["model"] == f"trained-{model.pk}" == model.key
    assert result["val_accuracy"] == pytest.approx(job.best_val_accuracy)
    assert result["seconds"] > 0
    assert "Preparing…" in err and "epoch 1:" in err
    assert f"Model: {model.key}" in err
    assert "Export Keras (.keras) (" in err and "agrees with the app's model" in err.lower()
