"""In Chromium: an administrator calibrates int8 on a zip, reads the agreement, switches on and back."""

from __future__ import annotations

import zipfile

from playwright.sync_api import expect

from classifier import tasks
from tests.conftest import FAST_MODEL
from tests.helpers import noise_image_bytes


def photos_zip(path, count: int = 24):
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(count):
            zf.writestr(f"birds/photo{i}.jpg", noise_image_bytes(seed=i, size=(120, 90), fmt="JPEG"))
    return path


def test_an_administrator_switches_a_model_to_int8_and_back(
    page, login, screenshot, staff, litert, fast_model, tmp_path
):
    tasks.convert_pending()  # the worker's float32 conversion, done before the page is opened
    login("staff", "staff-password")
    page.goto(f"/models/{FAST_MODEL}/")
    card = page.locator("#int8")
    expect(card.locator(".badge")).to_have_text("Off")
    expect(page.locator(".model-runtime td")).to_contain_text("LiteRT (XNNPACK, float32)")
    screenshot("int8-off")

    card.locator("input[type=file]").set_input_files(str(photos_zip(tmp_path / "birds.zip")))
    card.get_by_role("button", name="Calibrate and measure").click()  # the worker runs it (in-process here)
    page.wait_for_load_state("networkidle")
    expect(page.locator(".messages")).to_contain_text("Int8 conversion of MobileNet 0.5 @128 queued")
    expect(card.locator(".badge")).to_have_text("Ready · off")
    expect(card.get_by_test_id("int8-agreement")).to_contain_text("Top-1 agrees with float32 on")
    expect(card.get_by_test_id("int8-agreement")).to_contain_text("of 6 images")
    expect(card.get_by_test_id("int8-agreement")).to_contain_text("18 of the 24 images of the uploaded zip birds.zip")
    screenshot("int8-ready")

    card.get_by_role("button", name="Switch to int8").click()
    page.wait_for_load_state("networkidle")
    expect(page.locator(".messages")).to_contain_text("now runs on int8")
    expect(card.locator(".badge")).to_have_text("On")
    expect(page.locator(".model-runtime td")).to_contain_text("LiteRT int8")
    expect(page.locator(".model-runtime td")).to_contain_text("top-1 agrees with float32 on")
    screenshot("int8-on")

    page.locator(".model-runtime").get_by_role("button", name="Switch back to float32").click()
    page.wait_for_load_state("networkidle")
    expect(page.locator(".messages")).to_contain_text("runs on float32 again")
    expect(page.locator(".model-runtime td")).to_contain_text("LiteRT (XNNPACK, float32)")
    expect(card.locator(".badge")).to_have_text("Ready · off")


def test_a_refused_zip_is_explained_on_the_card(page, login, staff, litert, fast_model, tmp_path):
    login("staff", "staff-password")
    page.goto(f"/models/{FAST_MODEL}/")
    card = page.locator("#int8")
    bad = tmp_path / "notes.zip"
    bad.write_bytes(b"not a zip at all")
    card.locator("input[type=file]").set_input_files(str(bad))
    card.get_by_role("button", name="Calibrate and measure").click()
    page.wait_for_load_state("networkidle")
    expect(card.locator(".errorlist")).to_contain_text("This file is not a zip archive, or it is damaged.")
    expect(page.locator(".messages")).to_contain_text("This file is not a zip archive")
    expect(card.locator(".badge")).to_have_text("Off")


def test_the_job_page_follows_an_int8_conversion_live(
    page, login, screenshot, alice, litert, install_weights, monkeypatch
):
    from classifier import int8
    from classifier.models import Int8Calibration
    from tests.test_int8 import finished_job
    from tests.training_helpers import TRAIN_BASE, colour_dataset

    install_weights(TRAIN_BASE, include_top=False)
    dataset = colour_dataset(alice, per_label=8)
    job = finished_job(alice, dataset)
    monkeypatch.setattr(tasks, "calibrate_int8", lambda pk: None)  # no worker: the conversion stays queued
    login("alice", "alice-password")
    page.goto(f"/datasets/jobs/{job.pk}/")
    card = page.locator("#int8")
    expect(page.get_by_test_id("job-runtime")).to_contain_text("TensorFlow")
    expect(card.locator(".badge")).to_have_text("Off")
    screenshot("int8-job-off")

    card.get_by_role("button", name="Calibrate on the training images and measure").click()
    page.wait_for_load_state("networkidle")
    expect(card.locator(".badge")).to_have_text("Queued")
    expect(card).to_contain_text("Waiting for the worker: calibrating on the training split of job")
    screenshot("int8-job-queued")

    int8.run_calibration(Int8Calibration.objects.get().pk)  # the worker, while the page polls
    expect(card.locator(".badge")).to_have_text("Ready · off", timeout=15_000)
    expect(card.get_by_test_id("int8-agreement")).to_contain_text("Top-1 agrees with float32 on")
    screenshot("int8-job-ready")
