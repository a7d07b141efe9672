"""In Chromium: the Models table filters and sorts in place, and an offline download says why it failed."""

from __future__ import annotations

from playwright.sync_api import expect

from classifier import weights


def rows(page) -> list[str]:
    model_rows = page.locator("table.models tbody tr.model-row")
    return model_rows.evaluate_all("rows => rows.map(r => r.id.replace('model-', ''))")


def test_models_table_filters_and_sorts_without_reloading(page, login, screenshot, staff, install_weights):
    install_weights("mobilenet-0.5-128")
    login("staff", "staff-password")
    page.goto("/models/")
    assert len(rows(page)) == 80
    assert rows(page)[:6] == ["mobilenetv2", "resnet50", "efficientnetb0", "efficientnetb7", "vgg16", "inceptionv3"]
    page.evaluate("window.__sameDocument = true")
    screenshot("models-page")

    page.select_option("#models-family", "MobileNet")
    expect(page.locator("table.models tbody tr.model-row")).to_have_count(16)
    assert "family=MobileNet" in page.url  # the address keeps the filter, so reload and back work

    page.click("table.models th >> text=Top-1")
    page.wait_for_selector("th[aria-sort=descending] >> text=Top-1")
    assert rows(page)[0] == "mobilenet-10-224" and rows(page)[-1] == "mobilenet-025-128"
    assert page.locator("#models-sort").input_value() == "-top1"  # later filters keep this order

    page.fill("#models-q", "0.5")
    expect(page.locator("table.models tbody tr.model-row")).to_have_count(4)
    assert rows(page) == ["mobilenet-05-224", "mobilenet-05-192", "mobilenet-05-160", "mobilenet-05-128"]
    assert page.locator("#model-mobilenet-05-128 .badge").first.inner_text() == "Installed"
    assert page.evaluate("window.__sameDocument") is True  # every change was swapped in, no page load
    screenshot("models-filtered")

    page.fill("#models-q", "transformer")
    page.wait_for_selector("text=No model matches these filters.")
    assert page.evaluate("window.__sameDocument") is True


def test_an_offline_download_shows_its_failure_in_the_table(page, login, screenshot, staff, monkeypatch):
    def no_network(url, filename, file_hash, target):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(weights, "_resolve_host", lambda url, timeout: None)
    monkeypatch.setattr(weights, "_fetch", no_network)
    login("staff", "staff-password")
    page.goto("/models/?family=MobileNetV3")
    row = page.locator("#model-mobilenetv3small")
    row.get_by_role("button", name="How to install").click()
    with_head = page.locator("#install-mobilenetv3small .install-help").first
    with_head.get_by_role("button", name="Download from Keras").click()
    page.wait_for_load_state("networkidle")
    message = page.locator(".messages .alert-error").inner_text()
    assert "Could not download weights_mobilenet_v3_small_224_1.0_float.h5" in message
    row = page.locator("#model-mobilenetv3small")
    assert "Download failed" in row.inner_text()
    screenshot("models-download-failed")

    row.get_by_role("link", name="Why?").click()
    page.wait_for_selector("h1 >> text=MobileNetV3Small")
    assert page.locator(".weights-file").count() == 2
    assert "Temporary failure in name resolution" in page.locator(".model-download-error").inner_text()
    screenshot("model-detail")
