"""The per-image results a finished job keeps beside its model belong to it: check_data and backups know.

`outcomes.npz`, `features.npz` and `analysis.json` are named by no row (older jobs have none), so
they must be neither reported as orphans (check_data --fix would delete them) nor left out of a
backup (a restored job would lose its confusion cells, comparisons and label check).
"""

from __future__ import annotations

import json

import pytest

from tests.test_backup import backup
from tests.test_check_data import check, dataset_with_images, make_old, trained_model

pytestmark = pytest.mark.django_db(transaction=True)
COMPANIONS = ("outcomes.npz", "features.npz", "analysis.json")


def with_companions(user):
    model = trained_model(dataset_with_images(user, n=1))
    for name in COMPANIONS:
        (model.path.parent / name).write_bytes(b"results")
    make_old(model.path.parent)
    return model


def test_check_data_leaves_a_jobs_results_alone(alice):
    model = with_companions(alice)
    stray = model.path.parent / "leftover.tmp"
    stray.write_bytes(b"x")
    make_old(stray)

    out = check("--fix")

    assert "leftover.tmp" in out
    assert sorted(p.name for p in model.path.parent.iterdir() if p.is_file()) == sorted([*COMPANIONS, "model.keras"])


def test_a_backup_takes_a_jobs_results_with_its_model(alice, tmp_path_factory):
    model = with_companions(alice)
    (model.path.parent / "features.npz").unlink()  # optional: a job without cached features has none

    dest = tmp_path_factory.mktemp("backups") / "b"
    backup(dest)

    listed = {entry["path"] for entry in json.loads((dest / "manifest.json").read_text())["files"]}
    assert f"models/{model.job_id}/outcomes.npz" in listed and f"models/{model.job_id}/analysis.json" in listed
    assert f"models/{model.job_id}/features.npz" not in listed
    assert (dest / "data" / f"models/{model.job_id}/outcomes.npz").read_bytes() == b"results"
