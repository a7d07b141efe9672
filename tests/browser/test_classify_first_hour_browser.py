"""In Chromium: what a new user met in their first hour on Classify, History, API tokens and Models.

Result cards show whole labels and names with no blank strip; the drop zone says "too many files"
before anything is sent; names with quotes read as typed; copy buttons copy; the Models page shows
both weights files and lays out how to install them in a full-width row.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from classifier import catalog
from classifier.models import ApiToken, Prediction
from tests.helpers import image_bytes, noise_image_bytes

FAST = "mobilenet-0.5-128"
# ImageNet's longest everyday names, so every card has labels that do not fit on one line.
LONG_LABELS = (
    "American_black_bear",
    "Greater_Swiss_Mountain_dog",
    "German_short-haired_pointer",
    "soft-coated_wheaten_terrier",
    "Chesapeake_Bay_retriever",
    "black-and-tan_coonhound",
    "West_Highland_white_terrier",
    "Staffordshire_bullterrier",
)

# Whether an element's text is cut: wider content than its box, or an ellipsis on one line.
CUT = """el => {
  const style = getComputedStyle(el);
  return el.scrollWidth > el.clientWidth + 1 || (style.textOverflow === 'ellipsis' && style.whiteSpace === 'nowrap');
}"""

# The gap between a card's content and its edges, in pixels: [top, bottom].
CARD_GAPS = """card => {
  const box = card.getBoundingClientRect();
  const style = getComputedStyle(card);
  const content = Array.from(card.querySelectorAll('*')).map(e => e.getBoundingClientRect()).filter(r => r.height > 0);
  const top = Math.min(...content.map(r => r.top)), bottom = Math.max(...content.map(r => r.bottom));
  return [top - box.top - parseFloat(style.paddingTop), box.bottom - bottom - parseFloat(style.paddingBottom)];
}"""


@pytest.fixture
def long_labels(monkeypatch):
    labels = tuple(LONG_LABELS[i % len(LONG_LABELS)] for i in range(1000))
    monkeypatch.setattr(catalog, "imagenet_labels", lambda: labels)


def write(folder: Path, name: str, data: bytes) -> str:
    path = folder / name
    path.write_bytes(data)
    return str(path)


def test_result_cards_show_whole_labels_and_names_with_no_blank_strip(
    page, login, screenshot, wait_until, bob, fast_model, long_labels, tmp_path
):
    login("bob", "bob-password")
    page.goto("/")
    files = [
        write(tmp_path, "IMG_20240512_143012.jpg", image_bytes("JPEG", size=(640, 480), color=(250, 140, 40))),
        write(tmp_path, "cat.png", noise_image_bytes(3, size=(300, 300))),
        write(tmp_path, "notes.jpg", b"meeting notes, saved with the wrong extension"),
    ]
    page.set_input_files("input[name=images]", files)
    page.click("#classify-form button[type=submit]")
    page.wait_for_selector("[data-testid=result]")
    wait_until("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    screenshot("classify-first-hour-cards")

    labels = page.locator("[data-testid=result] .guess .label")
    assert labels.count() == 10
    assert all(" " in text for text in labels.all_inner_texts())  # "American black bear", not "American_black_bear"
    assert [labels.nth(i).evaluate(CUT) for i in range(10)] == [False] * 10
    names = page.locator(".result h3")
    assert names.all_inner_texts() == ["IMG_20240512_143012.jpg", "cat.png", "notes.jpg"]
    assert [names.nth(i).evaluate(CUT) for i in range(3)] == [False] * 3

    for card in page.locator(".result").all():
        top, bottom = card.evaluate(CARD_GAPS)
        assert top <= 1, f"a gap of {top:.0f} px above the name"
        assert bottom <= 1, f"a blank strip of {bottom:.0f} px at the bottom"


def test_too_many_files_are_said_before_the_upload_and_the_server_still_checks(
    page, login, screenshot, bob, fast_model, settings, tmp_path
):
    settings.MAX_FILES_PER_REQUEST = 3
    login("bob", "bob-password")
    page.goto("/")
    many = [write(tmp_path, f"photo-{i}.jpg", image_bytes()) for i in range(5)]
    page.set_input_files("input[name=images]", many)
    chosen = page.locator(".dropzone-files")
    assert chosen.inner_text() == (
        "5 files chosen: at most 3 can be classified at a time. Choose 3 or fewer, and send the others afterwards."
    )
    button = page.locator("#classify-form button[type=submit]")
    assert button.is_disabled()
    screenshot("classify-first-hour-too-many")

    page.set_input_files("input[name=images]", many[:2])
    assert chosen.inner_text() == "2 files: photo-0.jpg, photo-1.jpg"
    assert button.is_enabled()

    # A browser without the script (or a script around it) still gets the server's answer, in its place.
    page.set_input_files("input[name=images]", many)
    page.evaluate("document.querySelector('#classify-form button[type=submit]').disabled = false")
    button.click()
    alert = page.locator("#results .alert-error")
    alert.wait_for()
    assert alert.inner_text() == "You sent 5 files; send at most 3 at a time."
    gap = page.evaluate(
        "() => document.querySelector('#results .alert-error').getBoundingClientRect().top"
        " - document.querySelector('#classify-form').closest('.card').getBoundingClientRect().bottom"
    )
    assert gap >= 12, f"the error sits {gap:.0f} px under the form card"
    screenshot("classify-first-hour-too-many-server")
    assert Prediction.objects.count() == 0


def test_a_name_with_quotes_reads_as_typed_in_results_and_history(page, login, bob, fast_model, tmp_path):
    login("bob", "bob-password")
    page.goto("/")
    page.set_input_files("input[name=images]", [write(tmp_path, 'my "best" cat.jpg', image_bytes())])
    page.click("#classify-form button[type=submit]")
    page.wait_for_selector("[data-testid=result]")
    assert page.locator(".result h3").inner_text() == 'my "best" cat.jpg'
    page.goto("/history/")
    assert 'my "best" cat.jpg' in page.locator("table.table tbody").inner_text()
    assert Prediction.objects.get().original_name == 'my "best" cat.jpg'


def test_copy_buttons_copy_the_new_token_and_the_example(page, login, screenshot, bob, fast_model):
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    login("bob", "bob-password")
    page.goto("/tokens/")
    page.fill("#id_name", "sorting script")
    page.click("main form button[type=submit]")
    page.wait_for_selector("#new-token")
    token = page.locator("#new-token").inner_text()
    assert ApiToken.authenticate(token) == bob

    page.get_by_role("button", name="Copy").first.click()
    assert page.evaluate("navigator.clipboard.readText()") == token
    assert page.get_by_role("button", name="Copied").count() == 1
    screenshot("tokens-first-hour-copy")

    page.locator("button[data-copy=curl-example]").click()
    example = page.evaluate("navigator.clipboard.readText()")
    assert example.startswith('curl -H "Authorization: Bearer YOUR_TOKEN"')
    assert f'-F "model={FAST}"' in example and example.rstrip().endswith("/api/v1/predict")

    # A server reached over plain http (no secure context) has no navigator.clipboard: the text is selected.
    page.evaluate("Object.defineProperty(navigator, 'clipboard', {value: undefined})")
    page.locator("button[data-copy=new-token]").click()
    assert page.evaluate("window.getSelection().toString()") == token
    assert page.locator("button[data-copy=new-token]").inner_text() in ("Copied", "Selected: press Ctrl+C")


def test_install_help_reads_in_a_full_width_row_and_the_installed_badge_is_green(
    page, login, screenshot, staff, install_weights
):
    install_weights(FAST)
    login("staff", "staff-password")
    page.goto("/models/")
    fits = (
        "() => document.querySelector('table.models').scrollWidth <= document.querySelector('.table-wrap').clientWidth"
    )
    assert page.evaluate(fits), "all 11 columns fit 1280 px without scrolling sideways"
    page.goto("/models/?family=MobileNetV2")
    row = page.locator("#model-mobilenetv2")
    help_row = page.locator("#install-mobilenetv2")
    assert help_row.is_hidden()
    row.get_by_role("button", name="How to install").click()
    assert help_row.is_visible()
    assert row.get_by_role("button", name="How to install").get_attribute("aria-expanded") == "true"
    screenshot("models-first-hour-install-help")
    assert page.evaluate(fits), "the instructions' long lines scroll in their boxes, the table keeps its width"

    assert row.bounding_box()["height"] < 120, "the model's row stays one line or two"
    table_width = page.locator("table.models").bounding_box()["width"]
    assert help_row.bounding_box()["width"] >= table_width - 2
    url = help_row.locator("pre.install-code a").first
    assert url.bounding_box()["height"] < 30, "the URL is on one line, not broken mid-word"
    command = help_row.locator("pre.install-code code").first
    assert command.bounding_box()["height"] < 30
    assert help_row.get_by_role("button", name="Download from Keras").count() == 2  # with and without head

    page.goto(f"/models/?q={FAST}")
    badge = page.locator("#model-mobilenet-05-128 .model-status .badge")
    assert badge.inner_text() == "Installed"
    assert badge.evaluate("el => getComputedStyle(el).backgroundColor") == "rgb(227, 244, 234)"  # --ok-soft
    assert badge.evaluate("el => getComputedStyle(el).color") == "rgb(29, 122, 70)"  # --ok


def test_a_model_with_only_its_no_head_file_is_installed_for_training(page, login, screenshot, bob, install_weights):
    install_weights(FAST, include_top=False)
    login("bob", "bob-password")
    page.goto("/models/?status=installed")
    rows = page.locator("table.models tbody tr.model-row")
    assert rows.count() == 1
    row = page.locator("#model-mobilenet-05-128")
    assert row.locator(".model-status .badge").inner_text() == "Training only"
    assert "Classify needs the file with the head." in row.locator(".model-status").inner_text()
    assert row.locator(".model-training .badge").inner_text() == "Installed"
    screenshot("models-first-hour-training-only")

    row.get_by_role("link", name="MobileNet 0.5 @128").click()
    page.wait_for_selector("h1")
    assert page.locator("#model-weights .badge").first.inner_text() == "Training only"
    assert page.get_by_role("link", name="Classify with this model").count() == 0
    screenshot("models-first-hour-training-only-detail")


def test_after_an_upload_the_message_leads_to_classify_with_that_model(
    page, login, screenshot, staff, weights_file, settings
):
    login("staff", "staff-password")
    page.goto(f"/models/{FAST}/")
    page.set_input_files("#install-weights input[type=file]", str(weights_file(FAST)))
    page.click("#install-weights button[type=submit]")
    page.wait_for_selector(".messages .alert-success")
    assert "Installed mobilenet_5_0_128_tf.h5" in page.locator(".messages").inner_text()
    assert page.get_by_role("link", name="Classify with this model").count() == 1
    screenshot("models-first-hour-installed-detail")

    page.locator(".messages").get_by_role("link", name="Classify with MobileNet 0.5 @128").click()
    page.wait_for_selector("#classify-form")
    assert page.locator("select[name=model]").input_value() == FAST
