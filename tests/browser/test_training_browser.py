"""A person trains a model in Chromium: the form, the live job page, the evaluation, then Classify.

The training worker is played by the test itself: the job is queued (not run), then the test runs
it in this thread and, after an epoch, waits for the page's own polling to show it before letting
training go on. No sleeps, no reloads.
"""

from __future__ import annotations

from playwright.sync_api import expect

from tests.training_helpers import TRAIN_BASE, colour_dataset, colour_png
from training import jobs, tasks
from training.models import TrainingJob
from webapp import background

WATCH_EPOCH = 4


def test_train_a_model_watch_it_learn_read_the_evaluation_and_classify_with_it(
    page, login, screenshot, alice, install_weights, monkeypatch
):
    install_weights(TRAIN_BASE, include_top=False)
    dataset = colour_dataset(alice, name="Paint colours", labels=("red paint", "green_paint", "Blue"), per_label=24,
                             test=15)  # fmt: skip
    queued: list[int] = []
    monkeypatch.setattr(tasks, "train", queued.append)

    login("alice", "alice-password")
    page.goto(f"/datasets/{dataset.pk}/")
    expect(page.locator("#jobs")).to_contain_text("No model trained on this dataset yet.")
    page.get_by_role("link", name="Train a model").first.click()
    expect(page.locator("h1")).to_have_text("Train a model")
    expect(page.locator("[data-fine-tune-hint]")).to_contain_text("154 layers without its head")
    page.fill("#id_epochs", "20")
    page.fill("#id_fine_tune_epochs", "2")
    expect(page.locator("#id_fine_tune_from")).to_have_attribute("placeholder", "default: 100")
    page.check("input[name=augment][value=flip]")
    page.uncheck("#id_early_stopping")
    screenshot("training-form")
    page.get_by_role("button", name="Start training").click()

    body = page.locator("#job-body")
    expect(body).to_have_attribute("data-status", "queued")
    expect(body).to_contain_text("number 1 in the queue")
    screenshot("training-queued")
    job = TrainingJob.objects.get()
    assert queued == [job.pk] and job.config["fine_tune_from"] == 100

    # The worker: every progress step is written; after an epoch the page must show it by polling.
    monkeypatch.setattr(background, "PROGRESS_INTERVAL", 0)
    real_epoch = jobs._Reporter.epoch
    watched = []

    def epoch_and_watch(reporter, result):
        real_epoch(reporter, result)
        if result.epoch == WATCH_EPOCH and result.phase == "transfer" and not watched:
            expect(body).to_have_attribute("data-status", "running")
            expect(page.locator("[data-testid=job-where]")).to_contain_text(f"epoch {WATCH_EPOCH} of 20")
            expect(body.locator("svg.chart circle").first).to_be_visible()
            screenshot("training-running")
            watched.append(result.epoch)

    monkeypatch.setattr(jobs._Reporter, "epoch", epoch_and_watch)
    jobs.run_training_job(job.pk)
    assert watched == [WATCH_EPOCH]

    expect(body).to_have_attribute("data-status", "succeeded", timeout=30_000)
    assert body.get_attribute("hx-trigger") is None  # polling stopped with the job
    expect(body.locator(".alert-success")).to_contain_text("The model is ready:")
    validation = page.locator("[data-testid=evaluation-validation]")
    expect(validation.locator("table.confusion tbody tr")).to_have_count(3)
    expect(validation.locator("table.confusion")).to_contain_text("green_paint")
    expect(page.locator("[data-testid=evaluation-test]")).to_be_visible()
    expect(page.locator("[data-testid=exports] a", has_text="Download zip")).to_have_count(3)
    screenshot("training-finished")

    page.get_by_text("Settings and record").click()  # what ran where: device and worker machine
    record = page.locator("tr", has=page.locator("th", has_text="Ran on"))
    expect(record).to_contain_text("CPU: ")
    expect(record).to_contain_text("worker on ")
    record.scroll_into_view_if_needed()
    screenshot("training-record")

    page.get_by_role("link", name="Classify images with it").click()
    model_key = f"trained-{job.trained_model.pk}"
    expect(page.locator("select[name=model]")).to_have_value(model_key)
    page.set_input_files(
        "input[name=images]", files=[{"name": "leaf.png", "mimeType": "image/png", "buffer": colour_png(1, 777)}]
    )
    page.click("#classify-form button[type=submit]")
    result = page.locator("[data-testid=result]")
    expect(result).to_have_count(1, timeout=30_000)  # the first request loads the model (seconds on a busy machine)
    expect(result.locator(".guess").first).to_contain_text("green_paint")
    screenshot("training-classify")

    page.goto(f"/datasets/{dataset.pk}/")
    expect(page.locator("#jobs [data-testid=job-row]")).to_have_count(1)
    screenshot("training-dataset-jobs")
