"""What a new user and an administrator met in their first hour with datasets, as the browser shows it.

Each test takes its screenshot before the checks that matter, so a failing run still leaves the
picture of what was wrong in tests/screenshots/.
"""

from __future__ import annotations

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image
from playwright.sync_api import expect

from tests.browser.test_datasets_browser import THUMBS_LOADED, picture
from training import uploads
from training.models import Dataset, DatasetImage, ImportJob, TrainingJob


def fill(dataset: Dataset, labels: dict[str, int], user) -> None:
    """Images through the real upload path, label by label, each a distinct picture."""
    seed = 0
    for name, count in labels.items():
        color = (40 + (seed * 37) % 200, 90, 200 - (seed * 23) % 150)
        files = [SimpleUploadedFile(f"{name}_{i:02d}.jpg", picture(color, seed + i)) for i in range(count)]
        uploads.add_uploads(dataset, name, files, user)
        seed += count


def no_horizontal_overflow(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")


def box(locator) -> dict:
    result = locator.bounding_box()
    assert result is not None, locator
    return result


# --- 1. An empty file among good ones ------------------------------------------------------


def test_an_empty_file_in_an_upload_is_reported_alone_and_the_good_images_are_added(page, login, screenshot, alice):
    dataset = Dataset.objects.create(name="Birds", created_by=alice)
    login("alice", "alice-password")
    page.goto(f"/datasets/{dataset.pk}/upload/")
    page.fill("#id_new_label", "robins")
    files = [
        {"name": f"robin_{i}.jpg", "mimeType": "image/jpeg", "buffer": picture((200, 60, 40), i)} for i in range(2)
    ]
    files.append({"name": "empty.jpg", "mimeType": "image/jpeg", "buffer": b""})
    page.set_input_files("#id_images", files=files)
    page.get_by_role("button", name="Upload").click()
    page.wait_for_load_state("networkidle")
    screenshot("first-hour-upload-empty-file")

    report = page.locator("#upload .import-report")
    expect(report).to_contain_text("empty.jpg — The file is empty (0 bytes).")  # as Classify says it
    expect(report.locator("tbody td.num").first).to_have_text("2")
    expect(page.locator("#upload")).not_to_contain_text("The submitted file is empty.")
    assert dataset.images.count() == 2


def test_a_refused_upload_keeps_the_chosen_files_for_the_next_try(page, login, screenshot, alice):
    dataset = Dataset.objects.create(name="Birds", created_by=alice)
    login("alice", "alice-password")
    page.goto(f"/datasets/{dataset.pk}/upload/")
    files = [{"name": f"owl_{i}.jpg", "mimeType": "image/jpeg", "buffer": picture((90, 60, 40), i)} for i in range(2)]
    page.set_input_files("#id_images", files=files)
    page.get_by_role("button", name="Upload").click()  # no label yet
    expect(page.locator("#upload")).to_contain_text("Choose a label, or type the name of a new one.")
    screenshot("first-hour-upload-no-label")
    assert page.locator("#id_images").evaluate("e => e.files.length") == 2
    page.fill("#id_new_label", "owls")
    page.get_by_role("button", name="Upload").click()
    expect(page.locator("#upload .import-report tbody td.num").first).to_have_text("2")
    assert page.locator("#id_images").evaluate("e => e.files.length") == 0  # uploaded: not sent twice
    assert dataset.images.count() == 2


# --- 4. Recent imports on the dataset page -------------------------------------------------


def test_recent_imports_on_the_dataset_page_give_the_outcome_and_link_to_the_report(page, login, screenshot, alice):
    dataset = Dataset.objects.create(name="Pets", created_by=alice)
    fill(dataset, {"cats": 3}, alice)
    report = {
        "labels": [
            {"name": "cats", "new": False, "added": 5, "duplicates": 1, "rejected": 2,
             "duplicate_files": [{"file": "cats/a copy.jpg", "reason": "Same picture as cats/a.jpg."}],
             "rejected_files": [{"file": "cats/notes.txt", "reason": "This file is not an image TransferLab can read."},
                                {"file": "cats/broken.jpg", "reason": "The image is damaged."}]},
        ],
        "other": [], "other_count": 0, "ignored": 0, "notes": [], "added": 5, "duplicates": 1, "rejected": 2,
    }  # fmt: skip
    job = ImportJob.objects.create(
        dataset=dataset,
        archive_name="pets.zip",
        created_by=alice,
        status=ImportJob.Status.SUCCEEDED,
        message="Added 5 images, skipped 1 duplicate, rejected 2 files (reasons below).",
        report=report,
    )
    failed = ImportJob.objects.create(
        dataset=dataset,
        archive_name="broken.zip",
        created_by=alice,
        status=ImportJob.Status.FAILED,
        message="This file is not a zip archive, or it is damaged.",
    )
    login("alice", "alice-password")
    page.goto(f"/datasets/{dataset.pk}/")
    table = page.locator("section[aria-labelledby=imports-heading]")
    table.scroll_into_view_if_needed()
    screenshot("first-hour-recent-imports")

    expect(table).not_to_contain_text("reasons below")
    row = table.locator("tbody tr", has_text="pets.zip")
    expect(row).to_contain_text("Added 5 images, skipped 1 duplicate, rejected 2 files")
    link = row.get_by_role("link", name="see the report")
    expect(link).to_have_attribute("href", f"/datasets/{dataset.pk}/imports/{job.pk}/")
    expect(table.locator("tbody tr", has_text="broken.zip")).to_contain_text("not a zip archive")
    link.click()
    expect(page.locator("#import-progress")).to_contain_text("cats/notes.txt — This file is not an image")
    assert failed.pk


# --- 5. Changed shares and the splits ------------------------------------------------------


def test_changed_shares_offer_a_redraw_on_the_form_and_on_the_dataset_page(page, login, screenshot, alice):
    dataset = Dataset.objects.create(name="Pets", created_by=alice)
    fill(dataset, {"cats": 10, "dogs": 10}, alice)
    login("alice", "alice-password")

    # Keep the old splits: the page must say so and offer the re-draw.
    page.goto(f"/datasets/{dataset.pk}/edit/")
    redraw = page.get_by_label("Re-draw the splits now with these shares")
    expect(redraw).to_be_checked()
    page.fill("#id_validation_percent", "30")
    redraw.uncheck()
    screenshot("first-hour-edit-shares")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("h1")).to_have_text("Pets")
    note = page.locator(".splits-outdated")
    screenshot("first-hour-shares-outdated")
    expect(note).to_contain_text(
        "The splits were drawn with 20% validation; the dataset now asks for 30%: re-draw to apply it"
    )
    chart = page.locator("table.label-chart")
    expect(chart.locator("tbody tr").first.locator("td.num").nth(1)).to_have_text("2")  # still 20%
    note.get_by_role("button", name="Re-draw").click()
    expect(page.locator(".alert-success")).to_contain_text("Splits re-drawn")
    expect(page.locator(".splits-outdated")).to_have_count(0)
    expect(chart.locator("tbody tr").first.locator("td.num").nth(1)).to_have_text("3")  # now 30%
    screenshot("first-hour-shares-redrawn")

    # Re-draw from the form, as offered by default.
    page.goto(f"/datasets/{dataset.pk}/edit/")
    page.fill("#id_validation_percent", "40")
    expect(page.get_by_label("Re-draw the splits now with these shares")).to_be_checked()
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".alert-success")).to_contain_text("splits re-drawn")
    expect(page.locator(".splits-outdated")).to_have_count(0)
    expect(chart.locator("tbody tr").first.locator("td.num").nth(1)).to_have_text("4")
    assert DatasetImage.objects.filter(split="validation").count() == 8


# --- 14. Layout of forms, grid cards and the image page ------------------------------------


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("dataset-form", "/datasets/{pk}/edit/"),
        ("new-dataset", "/datasets/new/"),
        ("label-form", "/datasets/{pk}/labels/new/"),
        ("label-rename", "/datasets/{pk}/labels/{label}/edit/"),
        ("dataset-delete", "/datasets/{pk}/delete/"),
        ("label-delete", "/datasets/{pk}/labels/{label}/delete/"),
        ("upload", "/datasets/{pk}/upload/"),
        ("import", "/datasets/{pk}/import/"),
    ],
)
def test_breadcrumbs_sit_in_the_column_of_the_form(page, login, screenshot, alice, name, path):
    dataset = Dataset.objects.create(name="Pets", created_by=alice)
    fill(dataset, {"cats": 1}, alice)
    label = dataset.labels.get()
    login("alice", "alice-password")
    page.goto(path.format(pk=dataset.pk, label=label.pk))
    screenshot(f"first-hour-crumbs-{name}")
    crumbs = page.locator("main nav.crumbs")
    expect(crumbs).to_have_count(1)
    expect(crumbs.get_by_role("link", name="Pets")).to_have_count(0 if name == "new-dataset" else 1)
    card = page.locator("main section.card").first
    assert abs(box(crumbs)["x"] - box(card)["x"]) <= 1, (box(crumbs), box(card))


def test_grid_cards_in_a_row_are_equal_and_long_names_wrap(page, login, screenshot, wait_until, alice):
    dataset = Dataset.objects.create(name="Pets", created_by=alice)
    long_label = "long-haired cats from the neighbours' garden"
    fill(dataset, {"dogs": 5, long_label: 1}, alice)
    long_name = "IMG_20240611_a_very_long_camera_file_name_without_any_spaces_in_it_at_all.jpg"
    image = DatasetImage.objects.get(label__name=long_label)
    DatasetImage.objects.filter(pk=image.pk).update(original_name=long_name)
    login("alice", "alice-password")
    page.goto(f"/datasets/{dataset.pk}/")
    grid = page.locator("#image-grid")
    grid.scroll_into_view_if_needed()
    wait_until(THUMBS_LOADED, arg=6)
    screenshot("first-hour-grid-cards")

    cards = page.locator("#image-grid .image-card")
    expect(cards).to_have_count(6)
    first_row = [box(cards.nth(i)) for i in range(6)]
    top = first_row[0]["y"]
    same_row = [b for b in first_row if abs(b["y"] - top) < 1]
    assert len(same_row) == 6, first_row  # 1280 px: all six in one row
    assert len({round(b["height"]) for b in same_row}) == 1, [b["height"] for b in same_row]
    badge = page.locator(".image-card .label-badge", has_text="long-haired")
    assert badge.evaluate("e => e.scrollWidth <= e.clientWidth"), "the label is cut"
    assert box(badge)["height"] > 1.6 * box(page.locator(".image-card .label-badge", has_text="dogs").first)["height"]
    card_box = box(page.locator(f"#image-{image.pk}"))
    assert box(badge)["x"] + box(badge)["width"] <= card_box["x"] + card_box["width"]
    # the "Change" links line up at the bottom of every card
    summaries = [box(cards.nth(i).locator("summary")) for i in range(6)]
    assert len({round(s["y"]) for s in summaries}) == 1, summaries

    page.locator(f"#image-{image.pk} a").first.click()
    heading = page.locator("h1")
    expect(heading).to_have_text(long_name)
    screenshot("first-hour-image-page-long-name")
    assert heading.evaluate("e => e.scrollWidth <= e.clientWidth"), "the file name is cut"
    assert no_horizontal_overflow(page)


# --- 3 and 15. The admin -------------------------------------------------------------------


def test_admin_is_branded_and_the_image_list_fits_with_a_label_filter_by_dataset(page, login, screenshot, staff):
    pets = Dataset.objects.create(name="Pets", created_by=staff)
    birds = Dataset.objects.create(name="Birds", created_by=staff)
    fill(pets, {"cats": 3, "dogs": 2}, staff)
    uploads.add_uploads(birds, "cats", [SimpleUploadedFile("bird_cat.png", _png((10, 200, 10)))], staff)
    DatasetImage.objects.filter(original_name="cats_00.jpg").update(
        original_name="IMG_20240611_153012_a_rather_long_original_file_name_from_a_phone.jpg"
    )
    login("staff", "staff-password")
    page.goto("/admin/")
    expect(page.locator("#site-name")).to_have_text("TransferLab administration")
    assert "TransferLab" in page.title()
    expect(page.locator("h1")).to_have_text("Site administration · TransferLab")
    screenshot("first-hour-admin-index")

    page.goto("/admin/training/datasetimage/")
    screenshot("first-hour-admin-images")
    assert no_horizontal_overflow(page), page.evaluate("document.documentElement.scrollWidth")
    results = page.locator("#changelist .results")  # the admin scrolls a wide table inside this box
    assert results.evaluate("e => e.scrollWidth <= e.clientWidth"), results.evaluate("e => e.scrollWidth")
    label_filter = page.locator("#changelist-filter details", has_text="By label")
    expect(label_filter).to_contain_text("Pets / cats")
    expect(label_filter).to_contain_text("Birds / cats")

    page.goto(f"/admin/training/datasetimage/?dataset__id__exact={pets.pk}")
    label_filter = page.locator("#changelist-filter details", has_text="By label")
    expect(label_filter).not_to_contain_text("Birds")
    label_filter.get_by_role("link", name="cats").click()
    expect(page.locator("#result_list tbody tr")).to_have_count(3)
    screenshot("first-hour-admin-images-filtered")


def test_admin_refuses_to_delete_a_busy_dataset_with_a_reason_and_a_link(page, login, screenshot, staff):
    pets = Dataset.objects.create(name="Pets", created_by=staff)
    job = ImportJob.objects.create(dataset=pets, archive_name="more.zip", created_by=staff)
    login("staff", "staff-password")
    page.goto(f"/admin/training/dataset/{pets.pk}/change/")
    page.get_by_role("link", name="Delete", exact=True).click()
    screenshot("first-hour-admin-delete-busy")
    message = page.locator(".messagelist .error")
    expect(message).to_contain_text("an import is running")
    expect(page.locator("body")).not_to_contain_text("have permission")  # Django's refusal
    expect(message.get_by_role("link")).to_have_attribute("href", f"/datasets/{pets.pk}/imports/{job.pk}/")
    assert Dataset.objects.filter(pk=pets.pk).exists()

    ImportJob.objects.filter(pk=job.pk).update(status=ImportJob.Status.SUCCEEDED)
    training = TrainingJob.objects.create(dataset=pets, base_key="mobilenet", base_name="MobileNet", created_by=staff)
    page.goto("/admin/training/dataset/")
    page.locator(f"input[name=_selected_action][value='{pets.pk}']").check()
    page.select_option("select[name=action]", "delete_selected")
    page.get_by_role("button", name="Go").click()
    screenshot("first-hour-admin-bulk-delete-busy")
    message = page.locator(".messagelist .error")
    expect(message).to_contain_text("a model is being trained on it")
    expect(message.get_by_role("link")).to_have_attribute("href", f"/datasets/jobs/{training.pk}/")
    assert Dataset.objects.filter(pk=pets.pk).exists()


def _png(color: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(out, format="PNG")
    return out.getvalue()
