"""A person creates a dataset, imports a zip, watches the progress, and sees counts and thumbnails.

The worker is played by the test itself: the queue is switched to non-immediate so the page
really waits, then the test runs the task in this thread and, half way through, waits for the
page's own polling to show the progress before letting the import finish. No sleeps.
"""

from __future__ import annotations

import io
import zipfile

import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import expect

from training import imports, tasks
from training.models import DatasetImage, ImportJob
from webapp import background

# The first `n` thumbnails of the grid have arrived and decoded (they load lazily, by view).
THUMBS_LOADED = (
    "n => [...document.querySelectorAll('#image-grid img')].slice(0, n).every(i => i.complete && i.naturalWidth)"
)
LABELS = {"cats": (28, (235, 150, 60)), "dogs": (18, (70, 120, 210)), "owls": (6, (120, 90, 60))}


def picture(color: tuple[int, int, int], i: int) -> bytes:
    """A small distinct picture: the label's colour, a shape that moves with `i`."""
    image = Image.new("RGB", (160, 120), tuple(min(255, c + (i * 7) % 40) for c in color))
    draw = ImageDraw.Draw(image)
    x, y = 20 + (i * 23) % 100, 15 + (i * 17) % 60
    draw.ellipse((x, y, x + 40, y + 40), fill=(250, 250, 250))
    draw.rectangle((0, 100, 160, 120), fill=tuple(c // 2 for c in color))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def pets_zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for label, (count, color) in LABELS.items():
            for i in range(count):
                zf.writestr(f"pets/{label}/{label}_{i:02d}.jpg", picture(color, i))
        zf.writestr("pets/cats/notes.txt", "not a picture")
        zf.writestr("pets/dogs/dogs_00_copy.jpg", picture(LABELS["dogs"][1], 0))
        zf.writestr("pets/__MACOSX/._cats_00.jpg", b"resource fork")
    return out.getvalue()


@pytest.fixture
def queued_tasks(immediate_tasks):
    """Tasks wait in the queue like with a real worker; the test runs them itself."""
    immediate_tasks.immediate = False
    yield immediate_tasks
    immediate_tasks.flush()
    immediate_tasks.immediate = True


def test_create_dataset_import_zip_watch_progress_and_browse(
    page, login, screenshot, wait_until, alice, queued_tasks, monkeypatch
):
    login("alice", "alice-password")
    page.goto("/datasets/")
    expect(page.locator(".empty")).to_contain_text("No datasets yet.")
    page.get_by_role("link", name="Create the first dataset").click()

    page.fill("#id_name", "Pets")
    page.fill("#id_description", "Photos of our office pets, one folder per animal.")
    page.get_by_role("button", name="Create dataset").click()
    expect(page.locator("h1")).to_have_text("Pets")
    expect(page.locator(".alert-success")).to_contain_text("Dataset “Pets” created.")
    screenshot("dataset-empty")

    page.get_by_role("link", name="Import zip").click()
    page.set_input_files(
        "#id_archive", files=[{"name": "pets.zip", "mimeType": "application/zip", "buffer": pets_zip()}]
    )
    expect(page.locator(".dropzone-files")).to_have_text("pets.zip")
    screenshot("dataset-import-form")
    page.get_by_role("button", name="Start import").click()

    progress = page.locator("#import-progress")
    expect(progress).to_have_attribute("data-status", "queued")
    expect(progress).to_contain_text("Waiting for the worker to start the import")
    screenshot("dataset-import-queued")

    # The worker: every progress step is written, and half way the page must show it by polling.
    job = ImportJob.objects.get()
    total = sum(count for count, _ in LABELS.values()) + 2  # notes.txt and the duplicate are looked at too
    monkeypatch.setattr(background, "PROGRESS_INTERVAL", 0)
    real_save = imports._Progress.__call__
    seen_half_way = []

    def save_and_watch(progress_writer, done, count):
        real_save(progress_writer, done, count)
        if done == count // 2 and not seen_half_way:
            expect(progress).to_have_attribute("data-status", "running")
            expect(progress).to_contain_text(f"Checked {done} of {count} files (50%)")
            expect(progress.locator(".bar-fill")).to_have_attribute("style", "width: 50%")
            screenshot("dataset-import-progress")
            seen_half_way.append(done)

    monkeypatch.setattr(imports._Progress, "__call__", save_and_watch)
    tasks.import_archive.call_local(job.pk)
    assert seen_half_way == [total // 2]

    expect(progress).to_have_attribute("data-status", "succeeded")
    expect(progress.locator(".alert-success")).to_have_text("Added 52 images, skipped 1 duplicate, rejected 1 file.")
    assert progress.get_attribute("hx-trigger") is None  # polling stopped with the job
    expect(progress).to_contain_text("cats/notes.txt — This file is not an image TransferLab can read")
    screenshot("dataset-import-report")

    page.get_by_role("link", name="Open the dataset").click()
    chart = page.locator("table.label-chart")
    expect(chart.locator("tbody tr")).to_have_count(3)
    expect(chart.locator("tbody tr").first).to_contain_text("cats")
    expect(chart.locator(".chart-count")).to_have_text(["28", "18", "6"])
    expect(page.locator(".readiness")).to_contain_text("The labels are unbalanced: “cats” has 28 images, “owls” only 6")
    cards = page.locator("#image-grid .image-card")
    expect(cards).to_have_count(48)
    page.locator("#image-grid").scroll_into_view_if_needed()
    wait_until(THUMBS_LOADED, arg=12)
    screenshot("dataset-page")

    # HTMX pagination swaps the grid and keeps the address in sync.
    page.get_by_role("link", name="Next →").click()
    expect(page.locator("#image-grid")).to_contain_text("page 2 of 2")
    expect(cards).to_have_count(4)
    assert page.url.endswith("?page=2")

    # A per-image action: move an image to the test split without leaving the page.
    first = cards.first
    first.locator("summary").click()
    first.locator("select[name=split]").select_option("test")
    first.get_by_role("button", name="Save").click()
    expect(page.locator("#image-grid .image-card").first.locator(".badge.split-test")).to_have_text("Test")
    assert DatasetImage.objects.filter(split="test").count() == 1
    wait_until(THUMBS_LOADED, arg=4)
    screenshot("dataset-page-2")


def test_upload_images_into_a_new_label_shows_the_report_in_place(page, login, screenshot, alice):
    from training.models import Dataset

    dataset = Dataset.objects.create(name="Birds", created_by=alice)
    login("alice", "alice-password")
    page.goto(f"/datasets/{dataset.pk}/upload/")
    page.fill("#id_new_label", "robins")
    files = [
        {"name": f"robin_{i}.jpg", "mimeType": "image/jpeg", "buffer": picture((200, 60, 40), i)} for i in range(3)
    ]
    files.append({"name": "readme.txt", "mimeType": "text/plain", "buffer": b"not an image"})
    page.set_input_files("#id_images", files=files)
    expect(page.locator(".dropzone-files")).to_have_text("4 files: robin_0.jpg, robin_1.jpg, robin_2.jpg, readme.txt")
    page.get_by_role("button", name="Upload").click()

    report = page.locator("#upload .import-report")
    expect(report).to_contain_text("robins")
    expect(report.locator("tbody td.num").first).to_have_text("3")
    expect(report).to_contain_text("readme.txt — This file is not an image TransferLab can read")
    assert page.url.endswith(f"/datasets/{dataset.pk}/upload/")  # swapped in place by HTMX
    expect(page.locator("#id_label")).to_have_value(str(dataset.labels.get().pk))  # ready for the next batch
    screenshot("dataset-upload-report")
