"""A finished job keeps each image's prediction and features beside its model (training.outcomes)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.training_helpers import TRAIN_BASE, colour_dataset
from training import jobs, outcomes, trainer
from training.models import TrainingJob

pytestmark = pytest.mark.django_db


def test_a_finished_job_keeps_every_evaluated_images_prediction_and_features(alice, install_weights):
    install_weights(TRAIN_BASE, include_top=False)
    dataset = colour_dataset(alice, per_label=8, validation=25, test=25)
    job = jobs.start_training(dataset, TRAIN_BASE, trainer.TrainConfig(epochs=2, fine_tune_epochs=0), alice)
    jobs.run_training_job(job.pk)
    job.refresh_from_db()
    assert job.status == TrainingJob.Status.SUCCEEDED, job.message

    kept = outcomes.load_outcomes(job.folder)
    assert set(kept) == {"validation", "test"}
    snapshot = {image_id: (label_id, split) for image_id, label_id, split, *_ in job.snapshot["images"]}
    label_index = {label_id: i for i, (label_id, _) in enumerate(job.snapshot["labels"])}
    for split, outcome in kept.items():
        assert sorted(outcome.image_ids) == sorted(i for i, (_, s) in snapshot.items() if s == split)
        assert [label_index[snapshot[i][0]] for i in outcome.image_ids] == list(outcome.truth)
        assert outcome.probabilities.shape == (len(outcome.image_ids), 3)
        # The same numbers as the job's evaluation: its confusion matrix is rebuilt from the file.
        confusion = np.zeros((3, 3), int)
        np.add.at(confusion, (outcome.truth, outcome.predicted), 1)
        assert confusion.tolist() == job.evaluation[split]["confusion"]

    features = outcomes.load_features(job.folder)
    assert set(features) == {"train", "validation", "test"}
    assert sum(len(f.image_ids) for f in features.values()) == len(snapshot)
    assert features["train"].features.shape[0] == len(features["train"].image_ids)
    assert features["train"].features.dtype == np.float16


def test_a_job_without_files_reads_as_empty(tmp_path):
    assert outcomes.load_outcomes(tmp_path) == {}
    assert outcomes.load_features(tmp_path) == {}
