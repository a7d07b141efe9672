"""A person fixes labels after a first model, trains again and reads what changed, in Chromium.

The first job is trained before the browser opens, on a dataset with two validation pictures filed
under the wrong label. The person opens the confusion-matrix cell where they sit ("green" images
answered "red"), moves both to "red" in place, goes back to the job and presses "Train again".
The test plays the training worker for the new job while the page follows it by polling; the
finished page compares the job with its parent: the two fixed pictures flipped from wrong to
right. Then the dataset's model history, and the Continue form.
"""

from __future__ import annotations

from playwright.sync_api import expect

from tests.training_helpers import TRAIN_BASE, colour_dataset
from training import jobs, tasks, trainer
from training.models import TrainingJob


def test_train_again_after_fixing_labels_and_read_the_comparison_with_the_parent(
    page, login, screenshot, alice, install_weights, monkeypatch
):
    install_weights(TRAIN_BASE, include_top=False)
    monkeypatch.setattr(jobs, "_build_exports", lambda *args: {})  # not what this walk looks at
    dataset = colour_dataset(alice, name="Paint", labels=("red", "green", "blue"), per_label=20)
    red, green = dataset.labels.get(name="red"), dataset.labels.get(name="green")
    mislabelled = list(dataset.images.filter(label=red, split="validation").order_by("id")[:2])
    dataset.images.filter(pk__in=[i.pk for i in mislabelled]).update(label=green)  # red pictures filed as green
    first = jobs.start_training(dataset, TRAIN_BASE, trainer.TrainConfig(epochs=15), alice)  # runs at once here
    first.refresh_from_db()
    assert first.status == TrainingJob.Status.SUCCEEDED, first.message
    queued: list[int] = []
    monkeypatch.setattr(tasks, "train", queued.append)

    login("alice", "alice-password")
    page.goto(f"/datasets/jobs/{first.pk}/")
    expect(page.locator("#job-body")).to_have_attribute("data-status", "succeeded")
    expect(page.get_by_role("link", name="Continue training")).to_be_visible()
    screenshot("loop-first-job")

    # The cell of "green" pictures the model answered "red" (labels in name order: blue, green, red).
    matrix = page.locator("[data-testid=evaluation-validation] table.confusion")
    matrix.locator("a.cell-link[href*='true=1'][href*='predicted=2']").click()
    expect(page.locator("h1")).to_have_text("“green” images answered “red”")
    cards = page.locator("[data-testid=cell-image]")
    expect(cards).to_have_count(2)
    for i in range(2):
        card = cards.nth(i)
        expect(card.locator("select[name=label]")).to_have_value(str(red.pk))  # the model's answer, proposed
        card.get_by_role("button", name="Move").click()
        expect(card.get_by_role("button", name="Undo")).to_be_visible()  # changed in place, undoable
    screenshot("loop-cell-fixed")
    assert set(dataset.images.filter(pk__in=[i.pk for i in mislabelled]).values_list("label", flat=True)) == {red.pk}
    page.get_by_role("link", name="Back to the job").click()

    page.get_by_role("button", name="Train again").click()
    body = page.locator("#job-body")
    expect(body).to_have_attribute("data-status", "queued")
    again = TrainingJob.objects.exclude(pk=first.pk).get()
    assert queued == [again.pk] and again.parent_id == first.pk
    expect(page.locator("h1")).to_have_text(f"Training job {again.pk}")
    expect(page.locator(".page-header")).to_contain_text(f"again from job {first.pk}")

    jobs.run_training_job(again.pk)  # the worker; the page follows by polling
    expect(body).to_have_attribute("data-status", "succeeded", timeout=30_000)
    comparison = page.locator("[data-testid=comparison]")
    expect(comparison).to_contain_text(f"Against job {first.pk}")
    expect(comparison.locator("[data-testid=comparison-scope]")).to_contain_text(
        "validation images both jobs evaluated"
    )
    expect(comparison).to_contain_text("2 of the compared images changed label in between")
    fixed = comparison.locator("[data-testid=flips-fixed] [data-testid=flip]", has_text="(was green)")
    expect(fixed).to_have_count(2)  # the two fixed pictures (a model may also get others right by chance)
    expect(fixed.first).to_contain_text("is red")
    expect(fixed.first.locator("img")).to_have_js_property("complete", True)
    assert fixed.first.locator("img").evaluate("img => img.naturalWidth") > 0  # the thumbnail loaded
    expect(comparison.locator("[data-testid=label-delta]")).to_have_count(3)
    comparison.scroll_into_view_if_needed()
    screenshot("loop-comparison")

    page.goto(f"/datasets/{dataset.pk}/")
    history = page.locator("[data-testid=timeline]")
    expect(history.locator("[data-testid=timeline-job]")).to_have_count(2)
    expect(history.locator("[data-testid=timeline-job]").last).to_contain_text(f"trained again from job {first.pk}")
    expect(history.locator("[data-testid=timeline-changes]")).to_have_text(
        f"2 images moved to another label between job {first.pk} and job {again.pk}."
    )
    history.scroll_into_view_if_needed()
    screenshot("loop-dataset-history")

    page.goto(f"/datasets/jobs/{again.pk}/")
    page.get_by_role("link", name="Continue training").click()
    expect(page.locator("h1")).to_have_text(f"Continue training from job {again.pk}")
    expect(page.locator("#id_epochs")).to_have_value("8")  # half of 15: the head starts trained
    screenshot("loop-continue-form")
    page.get_by_role("button", name="Continue training").click()
    expect(page.locator(".page-header")).to_contain_text(f"continued from job {again.pk}")
    continued = TrainingJob.objects.get(start_from=again)
    assert queued[-1] == continued.pk and continued.base_key == TRAIN_BASE
