"""In Chromium: log in, drop images on the Classify page, see results appear without a reload."""

from __future__ import annotations

from classifier.models import Prediction
from tests.helpers import image_bytes, noise_image_bytes


def test_upload_shows_results_in_place_without_reloading(
    page, login, screenshot, wait_until, bob, install_weights, tmp_path
):
    install_weights("mobilenetv2")  # the default model, as a new user gets it
    login("bob", "bob-password")
    page.goto("/")
    assert page.locator("select[name=model]").input_value() == "mobilenetv2"
    page.evaluate("window.__sameDocument = true")
    screenshot("classify-empty")

    good = tmp_path / "sunset.jpg"
    good.write_bytes(image_bytes("JPEG", size=(640, 480), color=(250, 140, 40)))
    texture = tmp_path / "texture.png"
    texture.write_bytes(noise_image_bytes(3, size=(300, 300)))
    bad = tmp_path / "notes.jpg"
    bad.write_bytes(b"meeting notes, saved with the wrong extension")
    page.set_input_files("input[name=images]", [str(good), str(texture), str(bad)])
    assert "3 files" in page.locator(".dropzone-files").inner_text()
    page.click("#classify-form button[type=submit]")

    page.wait_for_selector("[data-testid=result]")
    assert page.locator("[data-testid=result]").count() == 2
    assert page.locator("[data-testid=result] .guess").count() == 10
    assert "not an image TransferLab can read" in page.locator("[data-testid=result-error]").inner_text()
    assert page.evaluate("window.__sameDocument") is True  # no page load happened
    wait_until("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    screenshot("classify-results")
    assert Prediction.objects.count() == 2

    page.click("text=All your predictions")
    page.wait_for_selector("table.table")
    assert page.locator("table.table tbody tr").count() == 2
    screenshot("history")
