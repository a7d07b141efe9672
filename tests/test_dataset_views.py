"""Datasets pages: what people see and may do, what gets stored, and a clear sentence for every bad input."""

from __future__ import annotations

import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings

from tests.dataset_helpers import files_under, image_zip, make_zip
from tests.helpers import noise_image_bytes
from training import imports, tasks, uploads
from training.models import Dataset, DatasetImage, ImportJob, Label

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def dataset(alice) -> Dataset:
    return Dataset.objects.create(name="Pets", description="Our pets", created_by=alice)


def fill(dataset: Dataset, labels: dict[str, int], seed: int = 0) -> None:
    """Images through the real upload path, label by label."""
    for name, count in labels.items():
        files = [SimpleUploadedFile(f"{name}_{i}.png", noise_image_bytes(seed + i)) for i in range(count)]
        uploads.add_uploads(dataset, name, files, dataset.created_by)
        seed += count


def html(response) -> str:
    return response.content.decode()


def zip_upload(data: bytes, name: str = "pets.zip") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="application/zip")


# --- Permissions ---------------------------------------------------------------------------


def test_pages_and_files_need_a_login(client, dataset):
    fill(dataset, {"cats": 1})
    image = DatasetImage.objects.get()
    for url in ("/datasets/", f"/datasets/{dataset.pk}/", f"/datasets/images/{image.pk}/thumbnail/"):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_member_without_permission_browses_but_cannot_change(bob_client, dataset):
    fill(dataset, {"cats": 2})
    image = DatasetImage.objects.first()
    page = bob_client.get(f"/datasets/{dataset.pk}/")
    assert page.status_code == 200
    assert "Upload images" not in html(page) and "Export zip" in html(page)
    assert bob_client.get(f"/datasets/images/{image.pk}/thumbnail/").status_code == 200
    assert bob_client.get(f"/datasets/{dataset.pk}/export/").status_code == 200
    label = dataset.labels.get()
    for method, url in [
        ("get", "/datasets/new/"),
        ("get", f"/datasets/{dataset.pk}/edit/"),
        ("post", f"/datasets/{dataset.pk}/delete/"),
        ("post", f"/datasets/{dataset.pk}/labels/new/"),
        ("post", f"/datasets/{dataset.pk}/labels/{label.pk}/edit/"),
        ("post", f"/datasets/{dataset.pk}/upload/"),
        ("post", f"/datasets/{dataset.pk}/import/"),
        ("post", f"/datasets/{dataset.pk}/splits/"),
        ("post", f"/datasets/images/{image.pk}/update/"),
        ("post", f"/datasets/images/{image.pk}/delete/"),
    ]:
        response = getattr(bob_client, method)(url)
        assert response.status_code == 403, url
        assert "Your account is not allowed to do this." in html(response)
    assert dataset.images.count() == 2 and Dataset.objects.filter(pk=dataset.pk).exists()


def test_creator_manages_only_their_own_datasets(alice_client, django_user_model, staff):
    other_owner = django_user_model.objects.create_user("dora", password="x")
    theirs = Dataset.objects.create(name="Theirs", created_by=other_owner)
    assert alice_client.get(f"/datasets/{theirs.pk}/edit/").status_code == 403
    assert alice_client.get(f"/datasets/{theirs.pk}/").status_code == 200


def test_staff_manage_every_dataset(client, staff, dataset):
    client.force_login(staff)
    response = client.post(
        f"/datasets/{dataset.pk}/edit/", {"name": "Pets 2", "validation_percent": 20, "test_percent": 0}
    )
    assert response.status_code == 302
    dataset.refresh_from_db()
    assert dataset.name == "Pets 2"


# --- Datasets list, create, edit, delete ---------------------------------------------------


def test_datasets_list_shows_counts_and_empty_state(alice_client, dataset):
    empty = alice_client.get("/datasets/")
    assert "Pets" in html(empty)
    fill(dataset, {"cats": 2, "dogs": 1})
    row = re.search(r"<tr>\s*<td>.*?Pets.*?</tr>", html(alice_client.get("/datasets/")), re.S).group(0)
    assert re.findall(r'<td class="num">(\d+)</td>', row) == ["2", "3"]
    Dataset.objects.all().delete()
    assert "Create the first dataset" in html(alice_client.get("/datasets/"))


def test_create_dataset_with_the_form(alice_client, alice):
    response = alice_client.post(
        "/datasets/new/", {"name": "  Birds  ", "description": "", "validation_percent": 20, "test_percent": 10}
    )
    dataset = Dataset.objects.get()
    assert response["Location"] == f"/datasets/{dataset.pk}/"
    assert (dataset.name, dataset.created_by, dataset.test_percent) == ("Birds", alice, 10)


def test_dataset_name_taken_in_another_case_is_refused_with_message(alice_client, dataset):
    response = alice_client.post("/datasets/new/", {"name": "PETS", "validation_percent": 20, "test_percent": 0})
    assert response.status_code == 400
    assert "A dataset with this name already exists. Choose another name." in html(response)
    assert Dataset.objects.count() == 1


def test_shares_leaving_nothing_to_train_are_refused_with_message(alice_client):
    response = alice_client.post("/datasets/new/", {"name": "X", "validation_percent": 60, "test_percent": 40})
    assert "Validation and test together can be at most 90 percent" in html(response)
    assert not Dataset.objects.exists()


def test_delete_asks_for_confirmation_then_removes_rows_and_folder(
    alice_client, dataset, django_capture_on_commit_callbacks
):
    fill(dataset, {"cats": 2})
    folder = dataset.folder
    confirm = alice_client.get(f"/datasets/{dataset.pk}/delete/")
    assert "Delete “Pets”?" in html(confirm) and "2 images" in html(confirm)
    assert Dataset.objects.filter(pk=dataset.pk).exists()
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_client.post(f"/datasets/{dataset.pk}/delete/")
    assert response["Location"] == "/datasets/"
    assert not Dataset.objects.exists() and not DatasetImage.objects.exists()
    assert not folder.exists()


def test_delete_is_refused_while_an_import_runs(alice_client, dataset):
    ImportJob.objects.create(dataset=dataset, archive_name="a.zip", status=ImportJob.Status.RUNNING)
    response = alice_client.post(f"/datasets/{dataset.pk}/delete/")
    assert response.status_code == 409
    assert "An import into this dataset is still running." in html(response)
    assert Dataset.objects.filter(pk=dataset.pk).exists()


# --- Dataset page --------------------------------------------------------------------------


def test_dataset_page_shows_label_chart_warnings_and_thumbnails(alice_client, dataset):
    fill(dataset, {"cats": 12, "dogs": 2})
    page = html(alice_client.get(f"/datasets/{dataset.pk}/"))
    assert 'class="split-bar" style="width: 100.0%"' in page  # the largest label spans the chart
    assert 'aria-label="12 images: 10 train, 2 validation, 0 test"' in page
    assert "Label “dogs” has 2 images: too few for a validation split. Add images until it has at least 10." in page
    assert "The labels are unbalanced: “cats” has 12 images, “dogs” only 2 (6×)." in page
    assert page.count('class="image-card"') == 14
    assert "/private-media" not in page and "/media/" not in page


def test_dataset_with_one_label_gets_a_warning(alice_client, dataset):
    fill(dataset, {"cats": 12})
    assert "The dataset has one label: a classifier needs at least two labels" in html(
        alice_client.get(f"/datasets/{dataset.pk}/")
    )


def test_grid_is_paginated_and_htmx_gets_only_the_grid(alice_client, dataset, monkeypatch):
    from training import views

    monkeypatch.setattr(views, "PAGE_SIZE", 4)
    fill(dataset, {"cats": 6, "dogs": 3})
    page = html(alice_client.get(f"/datasets/{dataset.pk}/?page=2"))
    assert "Page 2 of 3" in page and page.count('class="image-card"') == 4
    assert f'href="/datasets/{dataset.pk}/?page=3#images"' in page  # works as a plain link
    partial = alice_client.get(f"/datasets/{dataset.pk}/?page=3", HTTP_HX_TARGET="image-grid", **HTMX)
    body = html(partial)
    assert body.lstrip().startswith('<div id="image-grid">') and "<html" not in body
    assert body.count('class="image-card"') == 1
    assert partial["Vary"] and "HX-Request" in partial["Vary"]


def test_grid_filters_by_label_and_split(alice_client, dataset):
    fill(dataset, {"cats": 10, "dogs": 3})
    cats = dataset.labels.get(name="cats")
    page = html(alice_client.get(f"/datasets/{dataset.pk}/?label={cats.pk}&split=validation"))
    assert page.count('class="image-card"') == 2
    assert "2 images match the filters" in page
    nothing = html(alice_client.get(f"/datasets/{dataset.pk}/?split=test"))
    assert "No images match these filters." in nothing
    ignored = html(alice_client.get(f"/datasets/{dataset.pk}/?label=banana"))
    assert ignored.count('class="image-card"') == 13


def test_thumbnail_and_original_are_served_by_views_with_the_stored_type(bob_client, dataset):
    fill(dataset, {"cats": 1})
    image = DatasetImage.objects.get()
    thumb = bob_client.get(f"/datasets/images/{image.pk}/thumbnail/")
    assert thumb["Content-Type"] == "image/jpeg" and thumb["Cache-Control"].startswith("private")
    original = bob_client.get(f"/datasets/images/{image.pk}/original/")
    assert original["Content-Type"] == "image/png"
    assert b"".join(original.streaming_content) == image.path.read_bytes()


def test_missing_file_answers_not_found_not_an_error(alice_client, dataset):
    fill(dataset, {"cats": 1})
    image = DatasetImage.objects.get()
    image.thumbnail_path.unlink()
    response = alice_client.get(f"/datasets/images/{image.pk}/thumbnail/")
    assert response.status_code == 404
    assert alice_client.get("/datasets/images/999999/thumbnail/").status_code == 404


# --- Labels --------------------------------------------------------------------------------


def test_add_rename_and_delete_a_label(alice_client, dataset, django_capture_on_commit_callbacks):
    alice_client.post(f"/datasets/{dataset.pk}/labels/new/", {"name": " cats "})
    label = dataset.labels.get()
    assert label.name == "cats"
    alice_client.post(f"/datasets/{dataset.pk}/labels/{label.pk}/edit/", {"name": "Cats", "description": "Felines"})
    label.refresh_from_db()
    assert (label.name, label.description) == ("Cats", "Felines")
    fill(dataset, {"Cats": 2})
    paths = [image.path for image in label.images.all()]
    assert "2 images" in html(alice_client.get(f"/datasets/{dataset.pk}/labels/{label.pk}/delete/"))
    with django_capture_on_commit_callbacks(execute=True):
        alice_client.post(f"/datasets/{dataset.pk}/labels/{label.pk}/delete/")
    assert not dataset.labels.exists() and not DatasetImage.objects.exists()
    assert not any(p.exists() for p in paths)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("   ", "This field is required."),
        ("x" * 70, "A label name can be at most 64 characters; this one has 70."),
        ("CATS ", "This dataset already has a label “cats” (names ignore case and surrounding spaces)."),
        ("a/b", "A label name cannot contain /: it must also work as a folder name."),
    ],
)
def test_bad_label_names_are_refused_with_message(alice_client, dataset, name, message):
    Label.objects.create(dataset=dataset, name="cats")
    response = alice_client.post(f"/datasets/{dataset.pk}/labels/new/", {"name": name})
    assert response.status_code == 400
    assert message in html(response)
    assert dataset.labels.count() == 1


# --- Uploads -------------------------------------------------------------------------------


def test_upload_several_images_into_a_label_shows_a_report(alice_client, dataset):
    label = Label.objects.create(dataset=dataset, name="cats")
    files = [SimpleUploadedFile("a.png", noise_image_bytes(1)), SimpleUploadedFile("b.png", noise_image_bytes(2)),
             SimpleUploadedFile("bad.png", b"not really a png")]  # fmt: skip
    response = alice_client.post(f"/datasets/{dataset.pk}/upload/", {"label": label.pk, "images": files})
    page = html(response)
    assert "Upload report" in page
    assert "<code>bad.png</code> — This file is not an image TransferLab can read" in page
    assert label.images.count() == 2


def test_upload_with_htmx_answers_with_the_form_partial(alice_client, dataset):
    response = alice_client.post(
        f"/datasets/{dataset.pk}/upload/",
        {"new_label": "owls", "images": [SimpleUploadedFile("o.png", noise_image_bytes(5))]},
        **HTMX,
    )
    body = html(response)
    assert body.lstrip().startswith('<div id="upload">') and "new label" in body
    assert dataset.labels.get().name == "owls"


def test_upload_without_files_or_label_says_what_is_missing(alice_client, dataset):
    response = alice_client.post(f"/datasets/{dataset.pk}/upload/", {}, **HTMX)
    body = html(response)
    assert response.status_code == 200  # htmx shows 200 answers; the error block is in the partial
    assert "Choose one or more images to upload." in body
    assert "Choose a label, or type the name of a new one." in body


@override_settings(MAX_FILES_PER_REQUEST=2)
def test_upload_of_too_many_files_is_refused_with_message(alice_client, dataset):
    files = [SimpleUploadedFile(f"{i}.png", noise_image_bytes(i)) for i in range(3)]
    response = alice_client.post(f"/datasets/{dataset.pk}/upload/", {"new_label": "cats", "images": files})
    assert "You chose 3 files; at most 2 go in one upload." in html(response)
    assert not DatasetImage.objects.exists()


@override_settings(MAX_UPLOAD_BYTES=1000)
def test_upload_of_a_file_over_the_size_limit_is_rejected_with_reason(alice_client, dataset):
    response = alice_client.post(
        f"/datasets/{dataset.pk}/upload/",
        {"new_label": "cats", "images": [SimpleUploadedFile("big.png", noise_image_bytes(1))]},
    )
    assert (
        "<code>big.png</code> — The file is 27 KiB; the limit for one image is 1,000 bytes. Resize or compress it."
        in html(response)
    )
    assert not DatasetImage.objects.exists() and files_under(dataset.folder / "images") == []


# --- Zip import ----------------------------------------------------------------------------


def test_zip_import_queues_a_job_after_commit_and_shows_the_report(
    alice_client, dataset, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = alice_client.post(
            f"/datasets/{dataset.pk}/import/", {"archive": zip_upload(image_zip({"cats": 3, "dogs": 2}))}
        )
    assert len(callbacks) == 1  # enqueued only once the job row committed
    job = ImportJob.objects.get()
    assert response["Location"] == f"/datasets/{dataset.pk}/imports/{job.pk}/"
    page = alice_client.get(response["Location"])
    assert "Added 5 images." in html(page)
    assert dataset.images.count() == 5


def test_progress_partial_polls_while_running_and_stops_when_done(alice_client, dataset):
    job = ImportJob.objects.create(
        dataset=dataset, archive_name="a.zip", status=ImportJob.Status.RUNNING, total=10, done=4
    )
    running = html(alice_client.get(f"/datasets/{dataset.pk}/imports/{job.pk}/", **HTMX))
    assert 'hx-trigger="every 1s"' in running and "Checked <strong>4</strong> of 10 files (40%)" in running
    assert "<html" not in running
    ImportJob.objects.filter(pk=job.pk).update(status=ImportJob.Status.SUCCEEDED, done=10, message="Added 10 images.",
                                               report={"labels": [], "notes": [], "other": []})  # fmt: skip
    done = html(alice_client.get(f"/datasets/{dataset.pk}/imports/{job.pk}/", **HTMX))
    assert "hx-trigger" not in done and "Added 10 images." in done


def test_full_progress_page_refreshes_without_javascript_while_queued(alice_client, dataset):
    job = ImportJob.objects.create(dataset=dataset, archive_name="a.zip")
    page = html(alice_client.get(f"/datasets/{dataset.pk}/imports/{job.pk}/"))
    assert '<noscript><meta http-equiv="refresh" content="2"></noscript>' in page
    assert "Waiting for the worker to start the import" in page


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"PK\x03\x04 not really", "This file is not a zip archive, or it is damaged."),
        (make_zip({"../evil.png": noise_image_bytes(1)}), "unsafe path (&#x27;../evil.png&#x27;)"),
        (make_zip({}), "The zip archive is empty"),
    ],
)
def test_bad_zip_is_refused_on_the_form_without_starting_a_job(alice_client, dataset, data, message):
    response = alice_client.post(f"/datasets/{dataset.pk}/import/", {"archive": zip_upload(data)})
    assert response.status_code == 400
    assert message in html(response)
    assert not ImportJob.objects.exists()
    assert list(imports.archives_dir().glob("*")) == [] if imports.archives_dir().exists() else True


@override_settings(IMPORT_MAX_ZIP_BYTES=100)
def test_zip_over_the_upload_limit_is_refused_with_message(alice_client, dataset):
    response = alice_client.post(f"/datasets/{dataset.pk}/import/", {"archive": zip_upload(image_zip({"cats": 1}))})
    assert (
        "; the limit is 100 bytes. Split it into smaller zips, or ask your administrator to raise the limit."
        in html(response)
    )


def test_second_import_while_one_runs_is_refused_with_message(alice_client, dataset):
    ImportJob.objects.create(dataset=dataset, archive_name="first.zip", status=ImportJob.Status.RUNNING)
    response = alice_client.post(f"/datasets/{dataset.pk}/import/", {"archive": zip_upload(image_zip({"cats": 1}))})
    assert "An import is already running for this dataset. Wait for it to finish, then try again." in html(response)
    assert ImportJob.objects.count() == 1
    assert not any(imports.archives_dir().glob("*.zip"))


def test_cancel_a_queued_import_from_its_page(alice_client, dataset):
    job = ImportJob.objects.create(dataset=dataset, archive_name="a.zip")
    alice_client.post(f"/datasets/{dataset.pk}/imports/{job.pk}/cancel/")
    job.refresh_from_db()
    assert job.status == ImportJob.Status.CANCELLED


# --- Per-image actions, splits, export -----------------------------------------------------


def test_move_an_image_and_change_its_split_with_htmx(alice_client, dataset):
    fill(dataset, {"cats": 1, "dogs": 1})
    image = DatasetImage.objects.get(label__name="cats")
    dogs = dataset.labels.get(name="dogs")
    response = alice_client.post(f"/datasets/images/{image.pk}/update/", {"label": dogs.pk, "split": "test"}, **HTMX)
    body = html(response)
    assert body.lstrip().startswith(f'<figure id="image-{image.pk}"')
    image.refresh_from_db()
    assert (image.label, image.split) == (dogs, "test")


def test_moving_an_image_to_a_label_of_another_dataset_is_refused(alice_client, dataset, alice):
    fill(dataset, {"cats": 1})
    other = Dataset.objects.create(name="Other", created_by=alice)
    foreign = Label.objects.create(dataset=other, name="x")
    image = DatasetImage.objects.get()
    response = alice_client.post(
        f"/datasets/images/{image.pk}/update/", {"label": foreign.pk, "split": "train"}, **HTMX
    )
    assert "Choose a label of this dataset and a split." in html(response)
    image.refresh_from_db()
    assert image.label.dataset == dataset


def test_delete_an_image_removes_its_files(alice_client, dataset, django_capture_on_commit_callbacks):
    fill(dataset, {"cats": 2})
    image = DatasetImage.objects.first()
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_client.post(f"/datasets/images/{image.pk}/delete/", HTTP_HX_TARGET=f"image-{image.pk}", **HTMX)
    assert response.status_code == 200 and response.content == b""
    assert not image.path.exists() and not image.thumbnail_path.exists()
    assert dataset.images.count() == 1


def test_redraw_splits_with_a_seed(alice_client, dataset):
    fill(dataset, {"cats": 20})
    before = dict(DatasetImage.objects.values_list("pk", "split"))
    response = alice_client.post(f"/datasets/{dataset.pk}/splits/", {"seed": "42"}, follow=True)
    assert "Splits re-drawn with seed 42: 16 train, 4 validation, 0 test." in html(response)
    after = dict(DatasetImage.objects.values_list("pk", "split"))
    assert after != before and list(after.values()).count("validation") == 4
    bad = alice_client.post(f"/datasets/{dataset.pk}/splits/", {"seed": "-3"}, follow=True)
    assert "The seed must be a whole number from 0 to 2147483647." in html(bad)


def test_export_is_a_zip_download_named_after_the_dataset(bob_client, dataset):
    fill(dataset, {"cats": 2})
    response = bob_client.get(f"/datasets/{dataset.pk}/export/")
    assert response["Content-Type"] == "application/zip"
    assert re.match(r'attachment; filename="pets-\d{8}\.zip"', response["Content-Disposition"])


def test_import_job_page_of_another_dataset_is_not_found(alice_client, dataset, alice):
    other = Dataset.objects.create(name="Other", created_by=alice)
    job = ImportJob.objects.create(dataset=other, archive_name="a.zip")
    assert alice_client.get(f"/datasets/{dataset.pk}/imports/{job.pk}/").status_code == 404


def test_task_runs_through_huey_in_immediate_mode(alice_client, dataset, django_capture_on_commit_callbacks):
    """The view enqueues the real Huey task (immediate mode runs it in-process in tests)."""
    with django_capture_on_commit_callbacks(execute=True):
        alice_client.post(f"/datasets/{dataset.pk}/import/", {"archive": zip_upload(image_zip({"cats": 1}))})
    assert ImportJob.objects.get().status == ImportJob.Status.SUCCEEDED
    assert tasks.import_archive.huey.immediate is True


def test_file_names_with_control_characters_are_cleaned_before_they_reach_a_header(alice_client, dataset):
    job_zip = make_zip({"cats/evil\r\nSet-Cookie: x.png": noise_image_bytes(1)})
    path = imports.archives_dir() / "evil.zip"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(job_zip)
    job = ImportJob.objects.create(dataset=dataset, archive_name="evil.zip", archive_path=str(path))
    tasks.import_archive.call_local(job.pk)
    image = DatasetImage.objects.get()
    assert image.original_name == "evilSet-Cookie: x.png"
    response = alice_client.get(f"/datasets/images/{image.pk}/original/")
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'inline; filename="evilSet-Cookie: x.png"'
    DatasetImage.objects.filter(pk=image.pk).update(original_name='café "chat".png')
    header = alice_client.get(f"/datasets/images/{image.pk}/original/")["Content-Disposition"]
    assert header == "inline; filename*=utf-8''caf%C3%A9%20%22chat%22.png"


def test_dataset_page_queries_do_not_grow_with_images(alice_client, dataset, django_assert_num_queries):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    fill(dataset, {"cats": 2, "dogs": 1})
    with CaptureQueriesContext(connection) as few:
        alice_client.get(f"/datasets/{dataset.pk}/")
    fill(dataset, {"owls": 20, "bats": 10}, seed=100)
    with django_assert_num_queries(len(few)):
        alice_client.get(f"/datasets/{dataset.pk}/")


def test_polling_an_import_that_no_longer_exists_stops_with_a_message(alice_client, dataset):
    response = alice_client.get(f"/datasets/{dataset.pk}/imports/999/", **HTMX)
    body = html(response)
    assert response.status_code == 200 and "hx-trigger" not in body
    assert "This import no longer exists: its dataset was probably deleted." in body
    assert alice_client.get(f"/datasets/{dataset.pk}/imports/999/").status_code == 404
