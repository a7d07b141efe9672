"""Moving a SQLite install to PostgreSQL with `manage.py copy_database`, against a real PostgreSQL server.

The source is this run's SQLite database, filled as people fill it: users with a permission, an API
token, a logged-in session, a dataset uploaded through the app, a model trained for real and
predictions made with it. The target is a new database on the test PostgreSQL server (this file
starts one when the run uses SQLite). After the copy every row is compared value for value, and
a separate process started as the moved install (DATABASE_URL at the copy, the same DATA_DIR) uses
it: the token classifies with the trained model from its files, the session still opens pages,
and `check_data`'s inventory finds every file the rows name, as it did on SQLite.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.test import Client

from classifier.models import ApiToken, Prediction
from tests import servers
from tests.training_helpers import TRAIN_BASE, colour_dataset, colour_png
from training import exporting
from training.models import Dataset, TrainedModel, TrainingJob
from webapp import database_copy, datafiles

ROOT = Path(__file__).resolve().parent.parent
ON_SQLITE = django_settings.DATABASES["default"]["ENGINE"].endswith("sqlite3")
from_sqlite = pytest.mark.skipif(not ON_SQLITE, reason="copies a SQLite install: runs in the SQLite part of the suite")

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="session")
def postgresql() -> Iterator[servers.Servers]:
    """This run's PostgreSQL server, or one started for these tests when the run uses SQLite."""
    if servers.RUNNING is not None:
        yield servers.RUNNING
        return
    try:
        started = servers.start()
    except servers.ServersUnavailable as error:
        pytest.skip(str(error))
    yield started
    started.stop()


@pytest.fixture
def empty_database(postgresql) -> Iterator[str]:
    """The URL of a new, empty database on the server; dropped after the test."""
    name = f"moved_{uuid.uuid4().hex[:10]}"
    yield postgresql.new_database(name)
    database_copy.close_target()
    postgresql.drop_database(name)


def copy(url: str) -> str:
    out = StringIO()
    call_command("copy_database", "--to", url, stdout=out)
    return out.getvalue()


def every_row(alias: str) -> dict[str, list[dict]]:
    """Each table's rows as values, in id order: equal on both sides means nothing changed on the way."""
    return {
        model._meta.db_table: list(model._base_manager.using(alias).order_by("pk").values())
        for model in database_copy.copied_models()
    }


@contextmanager
def in_target(url: str) -> Iterator[str]:
    """The copy, reached through a second connection of this process."""
    database_copy.open_target(url)
    try:
        yield database_copy.TARGET
    finally:
        database_copy.close_target()


# --- A moved install --------------------------------------------------------------------------------


# Runs as the moved install: its own process, DATABASE_URL at the copy, the same DATA_DIR and secret key.
MOVED_INSTALL = """
import json, sys, django
from datetime import timedelta
django.setup()
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.test.utils import setup_test_environment
from tests.training_helpers import colour_png
from webapp import datafiles
setup_test_environment()  # lets the test client's "testserver" host in
plain = "django.contrib.staticfiles.storage.StaticFilesStorage"  # no collectstatic manifest here
settings.STORAGES = {**settings.STORAGES, "staticfiles": {"BACKEND": plain}}
token, model, session, dataset = sys.argv[1:5]
files = datafiles.inspect(timedelta(0))  # before this process adds a prediction of its own
api = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
picture = SimpleUploadedFile("red.png", colour_png(0, 7), content_type="image/png")
predicted = api.post("/api/v1/predict", {"images": [picture], "model": model})
browser = Client()
browser.cookies["sessionid"] = session
page = browser.get(f"/datasets/{dataset}/")
print(json.dumps({"vendor": connection.vendor, "predict": predicted.status_code, "body": predicted.json(),
                  "page": page.status_code, "page_has_dataset": b"Colours" in page.content,
                  "files": {"named": files.named, "missing": [m.data_path for m in files.missing],
                            "unnamed": sorted(o.shown for o in files.orphans)}}))
"""


@from_sqlite
def test_a_sqlite_install_moves_to_postgresql_whole_and_works_there(
    alice, staff, client, install_weights, empty_database, django_capture_on_commit_callbacks, monkeypatch
):
    monkeypatch.setattr(exporting, "FORMATS", ("keras",))  # the TFLite exports are test_exporting's business
    install_weights(TRAIN_BASE, include_top=False)
    _, key = ApiToken.issue(alice, "nightly script")
    api = Client(HTTP_AUTHORIZATION=f"Bearer {key}")
    dataset = colour_dataset(alice, per_label=12)
    with django_capture_on_commit_callbacks(execute=True):  # the immediate training queue trains it here
        started = api.post("/api/v1/jobs", {"dataset": dataset.pk, "base": TRAIN_BASE, "epochs": "2"})
    job = TrainingJob.objects.get(pk=started.json()["id"])
    assert job.status == TrainingJob.Status.SUCCEEDED, job.message
    model_key = f"trained-{job.trained_model.pk}"
    pictures = [SimpleUploadedFile(f"blue{i}.png", colour_png(2, 50 + i), content_type="image/png") for i in range(2)]
    assert api.post("/api/v1/predict", {"images": pictures, "model": model_key}).status_code == 200
    client.force_login(alice)
    before = every_row("default")
    files_before = datafiles.inspect(timedelta(0))
    assert Prediction.objects.count() == 2 and dataset.images.count() == 36 and TrainedModel.objects.count() == 1

    out = copy(empty_database)

    assert "Checked: every table holds as many rows in PostgreSQL as in SQLite" in out
    tables = len(database_copy.copied_models())
    assert f"Copied {sum(len(rows) for rows in before.values()):,} rows of {tables} tables into moved_" in out
    with in_target(empty_database) as alias:
        assert every_row(alias) == before  # ids, microseconds, JSON, content types and permissions alike
        assert get_user_model().objects.db_manager(alias).get(username="alice").has_perm("training.add_dataset")
        newcomer = get_user_model().objects.db_manager(alias).create_user("dave")
        assert newcomer.pk > max(user["id"] for user in before["auth_user"])  # sequences moved past the copied ids
        extra = Dataset.objects.using(alias).create(name="Added after the move", created_by=newcomer)
        assert extra.pk > dataset.pk

    env = servers.process_environment(
        Path(django_settings.DATA_DIR), DATABASE_URL=empty_database, SECRET_KEY=django_settings.SECRET_KEY,
        PYTHONPATH=str(ROOT), DJANGO_SETTINGS_MODULE="webapp.settings", TF_CPP_MIN_LOG_LEVEL="3",
    )  # fmt: skip
    session = client.cookies["sessionid"].value
    args = [sys.executable, "-c", MOVED_INSTALL, key, model_key, session, str(dataset.pk)]
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    moved = json.loads(done.stdout.strip().splitlines()[-1])
    assert moved["vendor"] == "postgresql"
    assert moved["predict"] == 200, moved["body"]
    assert sorted(p["label"] for p in moved["body"]["results"][0]["predictions"]) == ["blue", "green", "red"]
    assert moved["page"] == 200 and moved["page_has_dataset"]
    assert (
        moved["files"]["missing"] == [] and moved["files"]["named"] == files_before.named
    )  # same DATA_DIR, same files
    assert moved["files"]["unnamed"] == sorted(o.shown for o in files_before.orphans)


# --- Refusals: nothing is copied, nothing is left half-done -----------------------------------------


@from_sqlite
def test_a_copy_that_does_not_arrive_whole_leaves_nothing_behind(alice, empty_database, monkeypatch):
    colour_dataset(alice, per_label=2)
    real = database_copy._copy_table

    def lose_a_row(model):
        copied = real(model)
        if model is Dataset:
            Dataset.objects.using(database_copy.TARGET).filter(name="Colours").delete()
        return copied

    monkeypatch.setattr(database_copy, "_copy_table", lose_a_row)
    with pytest.raises(CommandError, match=r"did not arrive whole, so nothing was kept: training_dataset: 1 rows"):
        copy(empty_database)
    with in_target(empty_database) as alias:
        assert not get_user_model().objects.using(alias).exists()
        assert not Dataset.objects.using(alias).exists()


@from_sqlite
def test_a_database_that_already_holds_data_is_refused(alice, empty_database):
    copy(empty_database)
    colour_dataset(alice, per_label=1)
    with pytest.raises(CommandError, match=r"already holds data \(auth.User.*Copy into a new, empty database"):
        copy(empty_database)
    with in_target(empty_database) as alias:
        assert not Dataset.objects.using(alias).exists()


@from_sqlite
def test_queued_or_running_jobs_are_named_and_refused(alice, empty_database):
    dataset = colour_dataset(alice, per_label=2)
    job = TrainingJob.objects.create(dataset=dataset, base_key=TRAIN_BASE, base_name="MobileNetV2")
    with pytest.raises(CommandError, match=rf"1 background job is queued or running \(training job {job.pk}\).*"
                                           r"Let them finish or cancel them"):  # fmt: skip
        copy(empty_database)


@from_sqlite
def test_only_a_postgresql_url_is_accepted():
    with pytest.raises(CommandError, match="--to must name a PostgreSQL database"):
        copy("sqlite:////tmp/other.sqlite3")


@pytest.mark.skipif(ON_SQLITE, reason="what a PostgreSQL install is told: runs in the PostgreSQL part of the suite")
def test_an_install_on_postgresql_is_told_to_use_pg_dump(empty_database):
    with pytest.raises(CommandError, match=r"already uses postgresql.*use pg_dump and pg_restore"):
        copy(empty_database)
