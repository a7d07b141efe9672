"""Shared actors and fixtures: users, a per-test data folder, installed weights, the task queue."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission

from tests.helpers import make_zoo_weights

# A fast model for tests that only need "some installed model"; the default MobileNetV2 is used
# where the default itself matters.
FAST_MODEL = "mobilenet-0.5-128"


@pytest.fixture(autouse=True)
def data_dir(settings, tmp_path: Path) -> Path:
    """Every test gets its own empty data folder: uploads, weights and datasets never leak."""
    settings.DATA_DIR = tmp_path
    settings.WEIGHTS_DIR = tmp_path / "weights"
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.DATASETS_DIR = tmp_path / "datasets"
    settings.MIN_FREE_DISK_MB = 0  # tests never depend on the host's free disk
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    return tmp_path


@pytest.fixture
def litert(settings) -> None:
    """The production default (tests run TensorFlow, see tests/bootstrap.py): installed models are
    converted to LiteRT by the worker and served by it once checked."""
    settings.INFERENCE_RUNTIME = "litert"


@pytest.fixture(autouse=True)
def fast_password_hashing(settings) -> None:
    """Tests create many users; the production hasher is deliberately slow (about a second each here)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def fresh_engine():
    """No warm model survives a test: each test sees the weights folder it set up."""
    from classifier.inference import reset_engine

    reset_engine()
    yield
    reset_engine()


@pytest.fixture(autouse=True)
def immediate_tasks():
    """Huey tasks run in-process during tests (tests of the real consumer start one themselves).

    Both queues: the main one (imports, downloads) and the training queue.
    """
    from huey.contrib.djhuey import HUEY

    from training.queue import TRAINING_HUEY

    previous = HUEY.immediate, TRAINING_HUEY.immediate
    HUEY.immediate = TRAINING_HUEY.immediate = True
    yield HUEY
    HUEY.immediate, TRAINING_HUEY.immediate = previous


@pytest.fixture
def offline(monkeypatch):
    """A machine with no internet access: weights downloads fail the way they fail here."""
    from classifier import weights

    def no_network(url, filename, file_hash, target):
        raise OSError("<urlopen error timed out>")

    monkeypatch.setattr(weights, "_resolve_host", lambda url, timeout: None)
    monkeypatch.setattr(weights, "_fetch", no_network)


@pytest.fixture(scope="session")
def weights_cache(tmp_path_factory) -> Path:
    """Generated weights files, built once per test session and copied into each test's folder."""
    return tmp_path_factory.mktemp("weights-cache")


def _install(weights_cache: Path, settings, key: str, include_top: bool = True) -> Path:
    from classifier import zoo

    filename = zoo.get(key).weights_file(include_top).filename
    cached = weights_cache / filename
    if not cached.exists():
        make_zoo_weights(key, weights_cache, include_top=include_top)
    target = Path(settings.WEIGHTS_DIR) / filename
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cached, target)
    return target


@pytest.fixture
def install_weights(weights_cache, settings):
    """Call with a registry key to put generated weights for it in this test's weights folder."""

    def install(key: str, include_top: bool = True) -> Path:
        return _install(weights_cache, settings, key, include_top)

    return install


@pytest.fixture
def fast_model(install_weights, settings) -> str:
    """A small installed model (MobileNet 0.5 at 128 px), made the default model."""
    install_weights(FAST_MODEL)
    settings.DEFAULT_MODEL = FAST_MODEL
    return FAST_MODEL


# --- Actors (healthchecks style): alice owns things, bob is a member, charlie an outsider. ---
@pytest.fixture
def alice(django_user_model):
    """A user who may create datasets (has the 'add dataset' permission)."""
    user = django_user_model.objects.create_user("alice", "alice@example.org", "alice-password")
    perm = Permission.objects.filter(codename="add_dataset").first()
    if perm is not None:
        user.user_permissions.add(perm)
    return user


@pytest.fixture
def bob(django_user_model):
    """A logged-in user with no special permission: browses and classifies."""
    return django_user_model.objects.create_user("bob", "bob@example.org", "bob-password")


@pytest.fixture
def charlie(django_user_model):
    return django_user_model.objects.create_user("charlie", "charlie@example.org", "charlie-password")


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user(
        "staff", "staff@example.org", "staff-password", is_staff=True, is_superuser=True
    )


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


@pytest.fixture
def bob_client(client, bob):
    client.force_login(bob)
    return client


@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client


@pytest.fixture
def weights_file(weights_cache):
    """Call with a registry key to get a generated weights file under its published name (not installed)."""
    from classifier import zoo

    def make(key: str, include_top: bool = True) -> Path:
        cached = weights_cache / zoo.get(key).weights_file(include_top).filename
        if not cached.exists():
            make_zoo_weights(key, weights_cache, include_top=include_top)
        return cached

    return make


def pytest_collection_modifyitems(config, items) -> None:
    """A `storage_free` test that asks for the database is a mistake: the PostgreSQL run would skip it silently."""
    for item in items:
        if item.get_closest_marker("storage_free") is None:
            continue
        uses_database = item.get_closest_marker("django_db") or {"db", "transactional_db"} & set(item.fixturenames)
        if uses_database:
            raise pytest.UsageError(
                f"{item.nodeid} is marked storage_free but uses the database: "
                "remove the mark so it runs on PostgreSQL too."
            )
