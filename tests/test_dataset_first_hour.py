"""What a new user and an administrator met in their first hour with datasets (issue 11), page by page."""

from __future__ import annotations

import io
import re

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings

from tests.dataset_helpers import image_zip, make_zip
from tests.helpers import noise_image_bytes
from training import archives, imports, trainer, uploads
from training.forms import ImportForm
from training.models import Dataset, DatasetImage, ImportJob, Label, TrainingJob
from training.names import labels_full_message, too_many_labels_message

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}
SETTING_NAMES = re.compile(r"\b(MAX_UPLOAD_MB|IMPORT_MAX_\w+|MAX_LABELS_PER_DATASET|TRAINING_MEMORY_MB)\b")


@pytest.fixture
def dataset(alice) -> Dataset:
    return Dataset.objects.create(name="Pets", created_by=alice)


def fill(dataset: Dataset, labels: dict[str, int], seed: int = 0) -> None:
    for name, count in labels.items():
        files = [SimpleUploadedFile(f"{name}_{i}.png", noise_image_bytes(seed + i)) for i in range(count)]
        uploads.add_uploads(dataset, name, files, dataset.created_by)
        seed += count


def html(response) -> str:
    return response.content.decode()


# --- 1. An empty file among good ones ------------------------------------------------------


def test_an_empty_file_is_rejected_by_name_and_the_good_images_are_added(alice_client, dataset):
    files = [SimpleUploadedFile("a.png", noise_image_bytes(1)), SimpleUploadedFile("empty.jpg", b""),
             SimpleUploadedFile("b.png", noise_image_bytes(2))]  # fmt: skip
    response = alice_client.post(f"/datasets/{dataset.pk}/upload/", {"new_label": "cats", "images": files}, **HTMX)
    body = html(response)
    assert "The submitted file is empty." not in body
    assert "<code>empty.jpg</code> — The file is empty (0 bytes)." in body
    assert dataset.images.count() == 2


def test_an_upload_of_only_empty_files_reports_each_and_creates_no_label(alice_client, dataset):
    files = [SimpleUploadedFile("one.jpg", b""), SimpleUploadedFile("two.jpg", b"")]
    body = html(alice_client.post(f"/datasets/{dataset.pk}/upload/", {"new_label": "cats", "images": files}))
    assert "<code>one.jpg</code> — The file is empty (0 bytes)." in body
    assert "<code>two.jpg</code> — The file is empty (0 bytes)." in body
    assert not dataset.labels.exists()


# --- 3. Deleting a busy dataset in the admin -----------------------------------------------


def test_admin_delete_page_of_a_dataset_being_imported_into_says_why_and_links_the_import(staff_client, dataset, alice):
    job = ImportJob.objects.create(dataset=dataset, archive_name="more.zip", created_by=alice)
    change = html(staff_client.get(f"/admin/training/dataset/{dataset.pk}/change/"))
    assert f'href="/admin/training/dataset/{dataset.pk}/delete/"' in change  # offered, then explained
    for method in ("get", "post"):
        response = getattr(staff_client, method)(f"/admin/training/dataset/{dataset.pk}/delete/", {"post": "yes"},
                                                 follow=True)  # fmt: skip
        page = html(response)
        assert "an import is running" in page
        assert f'href="/datasets/{dataset.pk}/imports/{job.pk}/"' in page
        assert "have permission" not in page  # Django's words for a refused delete
    assert Dataset.objects.filter(pk=dataset.pk).exists()


def test_admin_bulk_delete_of_a_dataset_being_trained_on_says_why_and_links_the_job(staff_client, dataset, alice):
    other = Dataset.objects.create(name="Birds", created_by=alice)
    job = TrainingJob.objects.create(dataset=dataset, base_key="mobilenet", base_name="MobileNet", created_by=alice)
    for confirmed in ({}, {"post": "yes"}):
        response = staff_client.post(
            "/admin/training/dataset/",
            {"action": "delete_selected", ACTION_CHECKBOX_NAME: [dataset.pk, other.pk], **confirmed},
            follow=True,
        )
        page = html(response)
        assert "a model is being trained on it" in page
        assert f'href="/datasets/jobs/{job.pk}/"' in page
        assert "have permission" not in page
    assert Dataset.objects.count() == 2  # nothing deleted: the selection is kept whole


def test_admin_bulk_delete_of_idle_datasets_still_works(staff_client, dataset):
    response = staff_client.post(
        "/admin/training/dataset/", {"action": "delete_selected", ACTION_CHECKBOX_NAME: [dataset.pk], "post": "yes"}
    )
    assert response.status_code == 302
    assert not Dataset.objects.exists()


# --- 4. Import outcomes --------------------------------------------------------------------


def test_import_outcome_does_not_promise_reasons_below(alice_client, dataset, django_capture_on_commit_callbacks):
    data = make_zip({"cats/a.png": noise_image_bytes(1), "cats/notes.png": b"not a picture"})
    upload = SimpleUploadedFile("pets.zip", data, content_type="application/zip")
    with django_capture_on_commit_callbacks(execute=True):
        alice_client.post(f"/datasets/{dataset.pk}/import/", {"archive": upload})
    job = ImportJob.objects.get()
    assert job.message == "Added 1 image, rejected 1 file."
    page = html(alice_client.get(f"/datasets/{dataset.pk}/"))
    assert "Added 1 image, rejected 1 file." in page
    assert f'<a href="/datasets/{dataset.pk}/imports/{job.pk}/">See the report</a>' in page


def test_an_old_outcome_with_reasons_below_reads_without_it_on_the_dataset_page(alice_client, dataset, alice):
    report = archives.build_report([archives.LabelOutcome(name="cats", added=5, rejected=2)])
    ImportJob.objects.create(dataset=dataset, archive_name="old.zip", created_by=alice, report=report,
                             status=ImportJob.Status.SUCCEEDED,
                             message="Added 5 images, rejected 2 files (reasons below).")  # fmt: skip
    page = html(alice_client.get(f"/datasets/{dataset.pk}/"))
    assert "reasons below" not in page
    assert "Added 5 images, rejected 2 files." in page


# --- 5. Changed shares and the splits ------------------------------------------------------


def test_edit_form_redraws_the_splits_with_new_shares_by_default(alice_client, dataset):
    fill(dataset, {"cats": 10, "dogs": 10})
    form = html(alice_client.get(f"/datasets/{dataset.pk}/edit/"))
    assert re.search(r'<input type="checkbox" name="redraw"[^>]* checked', form)
    response = alice_client.post(
        f"/datasets/{dataset.pk}/edit/",
        {"name": "Pets", "validation_percent": "30", "test_percent": "0", "redraw": "on"},
        follow=True,
    )
    page = html(response)
    assert "Dataset “Pets” saved; splits re-drawn with 30% validation: 14 train, 6 validation, 0 test." in page
    assert "splits-outdated" not in page
    assert DatasetImage.objects.filter(split="validation").count() == 6


def test_kept_splits_are_called_outdated_until_they_are_redrawn(alice_client, dataset):
    fill(dataset, {"cats": 10, "dogs": 10})
    response = alice_client.post(
        f"/datasets/{dataset.pk}/edit/", {"name": "Pets", "validation_percent": "30", "test_percent": "10"}, follow=True
    )
    page = html(response)
    assert "Dataset “Pets” saved." in page
    assert (
        "The splits were drawn with 20% validation and no test share; the dataset now asks for 30% validation "
        "and 10% test: re-draw to apply it." in page
    )
    assert DatasetImage.objects.filter(split="validation").count() == 4  # kept
    dataset.refresh_from_db()
    redrawn = alice_client.post(f"/datasets/{dataset.pk}/splits/", {"seed": dataset.split_seed}, follow=True)
    assert "splits-outdated" not in html(redrawn)
    assert DatasetImage.objects.filter(split="validation").count() == 6
    assert DatasetImage.objects.filter(split="test").count() == 2


def test_shares_changed_back_are_no_longer_outdated(alice_client, dataset):
    fill(dataset, {"cats": 10})
    url = f"/datasets/{dataset.pk}/edit/"
    alice_client.post(url, {"name": "Pets", "validation_percent": "30", "test_percent": "0"})
    alice_client.post(url, {"name": "Pets", "validation_percent": "20", "test_percent": "0"})
    assert "splits-outdated" not in html(alice_client.get(f"/datasets/{dataset.pk}/"))


def test_shares_of_an_empty_dataset_apply_to_the_first_images(alice_client, dataset):
    alice_client.post(
        f"/datasets/{dataset.pk}/edit/", {"name": "Pets", "validation_percent": "30", "test_percent": "0"}
    )
    dataset.refresh_from_db()
    fill(dataset, {"cats": 10})
    assert "splits-outdated" not in html(alice_client.get(f"/datasets/{dataset.pk}/"))
    assert DatasetImage.objects.filter(split="validation").count() == 3


def test_shares_changed_in_the_admin_are_called_outdated_on_the_dataset_page(staff_client, dataset):
    fill(dataset, {"cats": 10})
    data = {"name": "Pets", "description": "", "validation_percent": "30", "test_percent": "0",
            "created_by": dataset.created_by_id, "labels-TOTAL_FORMS": "0", "labels-INITIAL_FORMS": "0"}  # fmt: skip
    response = staff_client.post(f"/admin/training/dataset/{dataset.pk}/change/", data)
    assert response.status_code == 302
    dataset.refresh_from_db()
    assert dataset.validation_percent == 30
    assert "The splits were drawn with 20% validation; the dataset now asks for 30%" in html(
        staff_client.get(f"/datasets/{dataset.pk}/")
    )


# --- 15. The admin -------------------------------------------------------------------------


def test_admin_is_branded_transferlab(staff_client):
    page = html(staff_client.get("/admin/"))
    assert '<a href="/admin/">TransferLab administration</a>' in page
    assert "<h1>Site administration · TransferLab</h1>" in page
    assert "<title>Site administration · TransferLab | TransferLab admin</title>" in page


def test_admin_label_filter_names_the_dataset_and_narrows_to_the_chosen_one(staff_client, dataset, alice):
    fill(dataset, {"cats": 2, "dogs": 1})
    birds = Dataset.objects.create(name="Birds", created_by=alice)
    fill(birds, {"cats": 1}, seed=50)
    page = html(staff_client.get("/admin/training/datasetimage/"))
    assert "Pets / cats" in page and "Birds / cats" in page and "Pets / dogs" in page
    filtered = html(staff_client.get(f"/admin/training/datasetimage/?dataset__id__exact={dataset.pk}"))
    label_filter = filtered.split("By label", 1)[1].split("</details>", 1)[0]
    assert "Birds" not in label_filter and ">cats</a>" in label_filter and ">dogs</a>" in label_filter
    cats = Label.objects.get(dataset=dataset, name="cats")
    listed = staff_client.get(
        f"/admin/training/datasetimage/?dataset__id__exact={dataset.pk}&label__id__exact={cats.pk}"
    )
    assert listed.context["cl"].result_count == 2


# --- 17. Wording: no setting names in users' messages, MiB where the arithmetic is binary --------


@override_settings(MAX_UPLOAD_BYTES=3 * 1_048_576)
def test_a_file_over_the_size_limit_is_named_in_mib_without_the_setting(alice_client, dataset):
    big = SimpleUploadedFile("big.bmp", b"BM" + b"\0" * (3 * 1_048_576 + 500_000))
    body = html(alice_client.post(f"/datasets/{dataset.pk}/upload/", {"new_label": "cats", "images": [big]}))
    assert "<code>big.bmp</code> — The file is 3.5 MiB; the limit for one image is 3 MiB." in body
    assert not SETTING_NAMES.search(body)


@override_settings(MAX_UPLOAD_BYTES=20 * 1_048_576, MAX_FILES_PER_REQUEST=32)
def test_upload_help_says_mib(alice_client, dataset):
    assert "up to 32 files of 20 MiB each" in html(alice_client.get(f"/datasets/{dataset.pk}/upload/"))


@override_settings(IMPORT_MAX_ZIP_BYTES=2 * 1_048_576)
def test_a_zip_over_the_limit_says_mib_and_whom_to_ask(dataset):
    data = b"PK" + b"\0" * (3 * 1_048_576)
    form = ImportForm(files={"archive": SimpleUploadedFile("big.zip", data)})
    assert not form.is_valid()
    message = form.errors["archive"][0]
    assert message.startswith("The zip is 3 MiB; the limit is 2 MiB.")
    assert "ask your administrator" in message and not SETTING_NAMES.search(message)


def test_archive_and_label_limits_say_what_to_do_without_setting_names(tmp_path):
    limits = imports.zip_limits()
    few = archives.ZipLimits(max_members=1, max_total_bytes=limits.max_total_bytes, max_ratio=limits.max_ratio,
                             max_file_bytes=limits.max_file_bytes)  # fmt: skip
    small = archives.ZipLimits(max_members=100, max_total_bytes=1_048_576, max_ratio=limits.max_ratio,
                               max_file_bytes=limits.max_file_bytes)  # fmt: skip
    messages = []
    for zip_limits, data in ((few, image_zip({"cats": 2})), (small, image_zip({"cats": 1}, size=(900, 900)))):
        with pytest.raises(archives.ArchiveError) as refused, archives.open_zip(io.BytesIO(data)) as zf:
            archives.inspect(zf, zip_limits)
        messages.append(str(refused.value))
    messages += [labels_full_message(3), too_many_labels_message(5, 2, 3), trainer.OUT_OF_MEMORY]
    for message in messages:
        assert not SETTING_NAMES.search(message), message
    assert "MiB" in messages[1] and " MB" not in messages[1]
    assert "ask your administrator" in messages[2]
