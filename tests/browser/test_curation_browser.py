"""A person fixes the data behind a model's mistakes in Chromium: confusion cell → images → move → undo → history."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.test_curation_views import ANSWERS, finished_job
from tests.training_helpers import colour_dataset
from training.models import DatasetImage, ImageChange


def test_from_a_confusion_cell_to_its_images_fixed_in_place_and_the_history(page, login, screenshot, alice):
    dataset = colour_dataset(alice, per_label=8, validation=50)
    DatasetImage.objects.filter(dataset=dataset, original_name__in=list(ANSWERS)).update(split="validation")
    job = finished_job(dataset, alice)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    login("alice", "alice-password")
    page.goto(f"/datasets/jobs/{job.pk}/")
    matrix = page.locator("[data-testid=evaluation-validation] table.confusion")
    expect(page.locator("[data-testid=missed-link]").first).to_be_visible()
    matrix.scroll_into_view_if_needed()
    screenshot("curation-job-matrix")
    matrix.locator("tbody tr").nth(2).locator("a.cell-link").first.click()  # true red, answered blue

    expect(page.locator("h1")).to_have_text("“red” images answered “blue”")
    cards = page.locator("[data-testid=cell-image]")
    expect(cards).to_have_count(2)
    expect(cards.first).to_contain_text("red_1.png")  # the most confident mistake first
    expect(cards.first).to_contain_text("95%")
    screenshot("curation-cell")

    first = cards.first
    expect(first.locator("select[name=label]")).to_have_value(str(dataset.labels.get(name="blue").pk))
    first.get_by_role("button", name="Move").click()
    expect(first).to_contain_text("The image was moved to “blue”.")
    expect(first).to_contain_text("now in “blue”")
    expect(first.get_by_role("button", name="Undo")).to_be_visible()
    assert DatasetImage.objects.get(original_name="red_1.png").label.name == "blue"
    screenshot("curation-moved")

    first.get_by_role("button", name="Undo").click()
    expect(first).to_contain_text("Undone: “red_1.png” is in “red” again.")
    expect(first).not_to_contain_text("now in “blue”")
    assert DatasetImage.objects.get(original_name="red_1.png").label.name == "red"

    # Several at once: tick both, exclude them; one Undo for the two.
    for card in (cards.nth(0), cards.nth(1)):
        card.locator("input[type=checkbox]").check()
    page.select_option("#bulk-action", "exclude")
    page.get_by_role("button", name="Apply to ticked").click()
    result = page.locator("#selection-result")
    expect(result).to_contain_text("2 images were excluded from training")
    expect(cards.nth(1)).to_contain_text("excluded")
    expect(result.get_by_role("button", name="Undo these 2 changes")).to_be_visible()
    assert DatasetImage.objects.filter(excluded=True).count() == 2
    screenshot("curation-selection")

    page.get_by_role("link", name="Dataset history").click()
    expect(page.locator("h1")).to_have_text(f"History of “{dataset.name}”")
    rows = page.locator("[data-testid=change]")
    expect(rows).to_have_count(3)
    expect(page.locator("#history")).to_contain_text("2 changes made together")
    expect(rows.nth(2)).to_contain_text("moved from “red” to “blue”")
    expect(rows.nth(2)).to_contain_text("undone by alice")
    screenshot("curation-history")

    page.get_by_role("button", name="Undo these 2 changes").click()
    expect(page.locator("#history")).to_contain_text("Undone: 2 changes.")
    expect(page.locator("#history tr.is-undone")).to_have_count(3)
    assert not DatasetImage.objects.filter(excluded=True).exists()
    assert ImageChange.objects.filter(undone_at__isnull=True).count() == 0
    screenshot("curation-history-undone")

    # The dataset's grid: exclude in place, see the badge and the Undo there.
    page.get_by_role("link", name="Back to the dataset").click()
    card = page.locator(".image-card").first
    card.locator("summary").click()
    card.get_by_role("button", name="Exclude from training").click()
    expect(card).to_contain_text("excluded")
    expect(card.get_by_role("button", name="Undo")).to_be_visible()
    assert DatasetImage.objects.filter(excluded=True).count() == 1
    card.scroll_into_view_if_needed()
    screenshot("curation-grid")
    assert errors == [] and page.locator("#request-error").is_hidden()
