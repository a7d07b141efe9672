"""In Chromium: the dataset's owner opens the low-confidence predictions from the dataset page, adds one
picture under a label, dismisses another, then adds a selection under a new label, all in place."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.test_review import prediction, trained_model
from tests.training_helpers import colour_dataset, colour_png


def test_a_reviewer_adds_and_dismisses_uncertain_predictions_in_place(page, login, screenshot, wait_until, alice, bob):
    dataset = colour_dataset(alice, per_label=3)
    model = trained_model(dataset, alice)
    dusk = prediction(bob, model.key, 0.41, "dusk-sky.png", data=colour_png(2, seed=71))
    blurry = prediction(bob, model.key, 0.34, "blurry.png", data=colour_png(0, seed=72))
    first = prediction(bob, model.key, 0.52, "leaf-1.png", data=colour_png(1, seed=73))
    second = prediction(bob, model.key, 0.47, "leaf-2.png", data=colour_png(1, seed=74))
    prediction(bob, model.key, 0.95, "sure.png")

    login("alice", "alice-password")
    page.goto(f"/datasets/jobs/{model.job_id}/")
    expect(page.get_by_test_id("review-link")).to_contain_text("Used for 5 predictions in Classify and the API")
    screenshot("review-job-page")
    page.goto(f"/datasets/{dataset.pk}/")
    screenshot("review-dataset-page")
    page.get_by_role("link", name="4 low-confidence predictions to review").click()
    expect(page.get_by_role("heading", name="Low-confidence predictions")).to_be_visible()
    expect(page.get_by_test_id("review-counts")).to_contain_text("4 to review")
    expect(page.locator("tr.review-row")).to_have_count(4)
    wait_until("() => [...document.images].every(img => img.complete && img.naturalWidth > 0)")
    screenshot("review-list")
    page.evaluate("window.reviewPageMark = 1")  # gone if the page reloads

    row = page.locator(f"#review-{dusk.pk}")
    expect(row.get_by_label("Add to the dataset as")).to_have_value(str(dataset.labels.get(name="red").pk))
    row.get_by_label("Add to the dataset as").select_option(label="blue")
    row.get_by_role("button", name="Add", exact=True).click()
    expect(page.locator(f"#review-{dusk.pk}")).to_contain_text("“dusk-sky.png” is now in “blue”")
    expect(page.get_by_test_id("review-counts")).to_contain_text("3 to review")

    page.locator(f"#review-{blurry.pk}").get_by_role("button", name="Dismiss").click()
    expect(page.locator(f"#review-{blurry.pk}")).to_contain_text("“blurry.png” will not be listed again.")
    expect(page.get_by_test_id("review-counts")).to_contain_text("2 to review")
    assert page.evaluate("window.reviewPageMark") == 1
    screenshot("review-row-actions")

    page.get_by_label("Tick leaf-1.png").check()
    page.get_by_label("Tick leaf-2.png").check()
    page.get_by_label("New label name", exact=True).fill("leaves")
    page.get_by_role("button", name="Add ticked").click()
    expect(page.get_by_test_id("review-notice")).to_contain_text("Added 2 pictures to “leaves”.")
    expect(page.locator("tr.review-row")).to_have_count(0)
    expect(page.get_by_text("Nothing to review.")).to_be_visible()
    assert page.evaluate("window.reviewPageMark") == 1
    screenshot("review-bulk-added")

    assert dataset.images.get(original_name="dusk-sky.png").label.name == "blue"
    assert sorted(dataset.labels.get(name="leaves").images.values_list("original_name", flat=True)) == [
        "leaf-1.png",
        "leaf-2.png",
    ]
    assert first.review.decision == second.review.decision == "added"
