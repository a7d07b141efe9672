"""A dataset manager checks a job's labels in Chromium: starts the check, accepts one suggestion,
dismisses another, and fixes a photo that sits in two splits, each in place.

The job is a finished one with cached features made up for its pictures (tests.test_suspect_views);
the worker's task runs in the server (immediate mode) when the button queues it.
"""

from __future__ import annotations

from playwright.sync_api import expect

from tests.test_suspect_views import MISLABELLED, TWIN, finished_job, image, pictures_dataset
from training.models import DatasetImage, ImageChange, SuspectDecision


def test_check_a_jobs_labels_accept_one_dismiss_one_and_fix_a_pair(page, login, screenshot, alice):
    dataset = pictures_dataset(alice, name="Tinted scenes")
    for name, label in (("green_0.png", "red"), ("blue_0.png", "green")):  # two more planted label errors
        DatasetImage.objects.filter(original_name=name).update(label=dataset.labels.get(name=label))
    job = finished_job(dataset, alice)

    login("alice", "alice-password")
    page.goto(f"/datasets/jobs/{job.pk}/")
    card = page.locator("[data-testid=suspects-card]")
    expect(card).to_contain_text("have not been checked for label errors")
    card.get_by_role("button", name="Find suspected label errors").click()
    expect(card.locator("[data-testid=suspect-count]")).to_have_text("3 suspected label errors")
    expect(card.locator("[data-testid=pair-count]")).to_have_text("1 near-duplicate pair across splits")
    card.scroll_into_view_if_needed()
    screenshot("suspects-job-card")

    card.locator("[data-testid=suspect-count]").click()
    expect(page.locator("h1")).to_have_text("Suspected label errors")
    cards = page.locator("[data-testid=suspect]")
    expect(cards).to_have_count(3)
    expect(page.locator("[data-testid=suspect-summary]")).to_contain_text("3 suspected label errors · 3 to review")
    screenshot("suspects-list")

    accepted = page.locator(f"#suspect-{image(MISLABELLED).pk}")
    expect(accepted).to_contain_text("Labelled blue")
    accepted.get_by_role("button", name="Accept: move to “red”").click()
    expect(accepted).to_contain_text("Accepted by alice: moved to “red”.")
    dismissed = page.locator(f"#suspect-{image('green_0.png').pk}")
    dismissed.get_by_role("button", name="Dismiss: label is right").click()
    expect(dismissed).to_contain_text("Dismissed by alice: the label “red” stays.")
    expect(cards).to_have_count(3)  # in place: nothing reloaded
    screenshot("suspects-decided")

    assert image(MISLABELLED).label.name == "red"
    assert ImageChange.objects.filter(image=image(MISLABELLED), action="move").count() == 1
    assert sorted(SuspectDecision.objects.values_list("decision", flat=True)) == ["accepted", "dismissed"]

    page.reload()
    expect(cards).to_have_count(1)  # only the one still to review
    expect(page.locator("[data-testid=suspect-summary]")).to_contain_text("1 to review · 1 accepted · 1 dismissed")

    page.get_by_role("link", name="Near-duplicates").click()
    pair = page.locator("[data-testid=pair]")
    expect(pair).to_have_count(1)
    expect(pair).to_contain_text("red_1 copy.jpg")
    screenshot("duplicates-list")
    pair.get_by_role("button", name=f"Keep both in train: move “{TWIN}” there").click()
    expect(pair).to_contain_text("Both are in train now")
    screenshot("duplicates-fixed")
    assert image(TWIN).split == "train"
