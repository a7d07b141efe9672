"""`manage.py import_weights` and `manage.py download_weights`: what the IT person types and reads."""

from __future__ import annotations

import shutil
import subprocess
import sys
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from classifier import engine as engine_module
from classifier import inference, weights
from classifier.models import WeightsDownload
from tests.helpers import make_zoo_weights
from tests.servers import process_environment

FAST = "mobilenet-0.5-128"
ROOT = Path(__file__).resolve().parent.parent


def run(*args) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_a_published_file_is_installed_and_the_command_says_where(weights_file):
    out, err = run("import_weights", str(weights_file(FAST)))
    assert "Installed mobilenet_5_0_128_tf.h5 for MobileNet 0.5 @128 with its ImageNet head" in out
    assert f"Weights folder: {settings.WEIGHTS_DIR}" in out
    assert err == ""
    assert (Path(settings.WEIGHTS_DIR) / "mobilenet_5_0_128_tf.h5").is_file()


def test_each_file_gets_its_line_and_any_refusal_fails_the_command(weights_file, tmp_path):
    bad = tmp_path / "notes.h5"
    bad.write_text("not weights")
    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError, match=r"1 of 3 files refused; nothing was changed for those\."):
        call_command(
            "import_weights",
            str(weights_file(FAST)),
            str(bad),
            str(weights_file(FAST, include_top=False)),
            stdout=out,
            stderr=err,
        )
    assert "Installed mobilenet_5_0_128_tf.h5" in out.getvalue()
    assert "Installed mobilenet_5_0_128_tf_no_top.h5" in out.getvalue()
    assert f"Refused {bad}: It is not an HDF5 file" in err.getvalue()
    assert err.getvalue().count("notes.h5") == 1  # the path, once


def test_model_and_head_options_name_the_variant_of_a_renamed_file(weights_file, tmp_path):
    renamed = tmp_path / "weights.h5"
    shutil.copyfile(weights_file(FAST, include_top=False), renamed)
    with pytest.raises(CommandError):
        run("import_weights", str(renamed))
    out, _ = run("import_weights", str(renamed), "--model", "mobilenet-0.5-192", "--no-top")
    assert "Installed mobilenet_5_0_192_tf_no_top.h5 for MobileNet 0.5 @192 without its head" in out


def test_a_wrong_head_option_is_refused_with_the_fix(weights_file):
    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError):
        call_command("import_weights", str(weights_file(FAST)), "--model", FAST, "--no-top", stdout=out, stderr=err)
    assert "holds MobileNet 0.5 @128 weights with its ImageNet head, but you said without its head" in err.getvalue()
    assert "import it with --top" in err.getvalue()


def test_an_unknown_model_key_is_an_error_before_any_file_is_read(tmp_path):
    with pytest.raises(CommandError) as info:
        run("import_weights", str(tmp_path / "x.h5"), "--model", "resnet9000")
    message = str(info.value)
    assert message.startswith("Unknown model 'resnet9000'.")
    assert message.count("Models page") == 1


def test_a_missing_file_says_there_is_no_file_at_that_path(tmp_path):
    missing = tmp_path / "nowhere.h5"
    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError, match=r"1 of 1 file refused"):
        call_command("import_weights", str(missing), stdout=out, stderr=err)
    assert err.getvalue().strip() == f"No file at {missing}."
    assert "empty" not in err.getvalue()


def test_a_folder_is_not_taken_for_a_file(tmp_path):
    err = StringIO()
    with pytest.raises(CommandError):
        call_command("import_weights", str(tmp_path), stdout=StringIO(), stderr=err)
    expected = f"{tmp_path} is a folder: name the weights files in it (for example {tmp_path}/*.h5)."
    assert err.getvalue().strip() == expected


def test_importing_another_file_makes_a_warm_model_reload(install_weights, tmp_path):
    install_weights(FAST)
    inference.get_engine().get(FAST)
    assert inference.engine_state(FAST) == "ready"
    out, _ = run("import_weights", str(make_zoo_weights(FAST, tmp_path, seed=1)))
    assert "Replaced mobilenet_5_0_128_tf.h5" in out
    assert inference.engine_state(FAST) is None


def test_a_file_replaced_by_another_machine_reloads_the_warm_model_within_seconds(
    install_weights, tmp_path, monkeypatch
):
    """Web servers on several machines share the weights folder: an import on one (here the Django-free
    install step, as that machine's command runs it, so nothing evicts this process's copy) reaches the others."""
    install_weights(FAST)
    picture = [np.random.default_rng(3).integers(0, 256, (128, 128, 3), dtype=np.uint8)]
    engine = inference.get_engine()
    before = engine.predict(FAST, picture).probabilities
    weights.import_file(make_zoo_weights(FAST, tmp_path, seed=1), settings.WEIGHTS_DIR)
    assert inference.engine_state(FAST) == "ready"  # nothing told this process
    monkeypatch.setattr(engine_module, "VERSION_RECHECK_SECONDS", 0.0)  # the next check is due
    after = engine.predict(FAST, picture).probabilities
    assert not np.allclose(before, after), "still the old weights"
    assert engine.loads == 2


def test_importing_the_installed_file_again_says_nothing_changed(install_weights, weights_file):
    install_weights(FAST)
    inference.get_engine().get(FAST)
    out, _ = run("import_weights", str(weights_file(FAST)))
    assert "mobilenet_5_0_128_tf.h5 was already installed for MobileNet 0.5 @128 with its ImageNet head" in out
    assert "Replaced" not in out
    assert inference.engine_state(FAST) == "ready"  # nothing changed: the warm copy stays


def test_the_real_command_line_exits_non_zero_on_refusal(tmp_path):
    bad = tmp_path / "broken.h5"
    bad.write_bytes(b"\x00" * 64)
    env = process_environment(tmp_path / "data")
    done = subprocess.run(
        [sys.executable, "manage.py", "import_weights", str(bad)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "Refused" in done.stderr and "It is not an HDF5 file" in done.stderr
    assert "Traceback" not in done.stderr


# --- download_weights: the network call is replaced, nothing leaves this machine ---------------


@pytest.mark.django_db
def test_download_command_offline_fails_clearly_and_records_the_attempt(offline):
    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError, match="1 of 1 download"):
        call_command("download_weights", "mobilenetv2", stdout=out, stderr=err)
    assert "Downloading mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5 from https://" in out.getvalue()
    assert "Could not download" in err.getvalue() and "timed out" in err.getvalue()
    record = WeightsDownload.objects.get()
    assert record.status == WeightsDownload.Status.FAILED and "import_weights" in record.message


@pytest.mark.django_db
def test_download_command_installs_what_it_fetched(weights_file, monkeypatch):
    def fake_fetch(url, filename, file_hash, target):
        path = Path(target) / filename
        shutil.copyfile(weights_file(FAST, include_top=False), path)
        return path

    monkeypatch.setattr(weights, "_resolve_host", lambda url, timeout: None)
    monkeypatch.setattr(weights, "_fetch", fake_fetch)
    out, _ = run("download_weights", FAST, "--no-top")
    assert "Installed mobilenet_5_0_128_tf_no_top.h5" in out
    assert WeightsDownload.objects.get().status == WeightsDownload.Status.SUCCEEDED


def test_download_command_rejects_unknown_keys():
    with pytest.raises(CommandError, match="Unknown model 'nope'"):
        run("download_weights", "nope")


@pytest.mark.django_db
def test_download_command_for_a_file_already_being_downloaded_says_so(offline):
    """The worker (or another command) is fetching it: one download per file, and a sentence, not a traceback."""
    WeightsDownload.objects.create(model_key="mobilenetv2", include_top=True, status=WeightsDownload.Status.RUNNING)
    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError, match="1 of 1 download"):
        call_command("download_weights", "mobilenetv2", stdout=out, stderr=err)
    assert (
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5 is already being downloaded "
        "(by the worker or another command); the Models page shows its progress." in err.getvalue()
    )
    assert WeightsDownload.objects.count() == 1
