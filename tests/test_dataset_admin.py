"""The Django admin for datasets: pages render with counts and thumbnails, bulk actions, zip import, access."""

from __future__ import annotations

import re

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.dataset_helpers import image_zip, make_zip
from tests.helpers import noise_image_bytes
from training import uploads
from training.models import Dataset, DatasetImage, ImportJob, Label

pytestmark = pytest.mark.django_db


@pytest.fixture
def pets(alice) -> Dataset:
    dataset = Dataset.objects.create(name="Pets", created_by=alice)
    for name, seeds in (("cats", range(0, 4)), ("dogs", range(10, 12))):
        files = [SimpleUploadedFile(f"{name}_{i}.png", noise_image_bytes(i)) for i in seeds]
        uploads.add_uploads(dataset, name, files, alice)
    return dataset


def html(response) -> str:
    return response.content.decode()


def test_dataset_list_shows_label_and_image_counts(staff_client, pets):
    page = html(staff_client.get("/admin/training/dataset/"))
    assert '<td class="field-label_count">2</td>' in page
    assert '<td class="field-image_count">6</td>' in page


def test_dataset_page_has_labels_inline_with_counts_and_an_import_link(staff_client, pets):
    page = html(staff_client.get(f"/admin/training/dataset/{pets.pk}/change/"))
    assert f'href="/admin/training/dataset/{pets.pk}/import/"' in page
    assert "Import zip" in page
    counts = re.findall(r'<td class="field-image_count">\s*<p>(\d+)</p>', page)
    assert counts[:2] == ["4", "2"]  # then the blank row "Add another label" copies
    assert "Becomes the folder name in exports" in page  # help texts reach the admin


def test_image_list_shows_thumbnails_filters_and_search(staff_client, pets, alice):
    Dataset.objects.create(name="Birds", created_by=alice)  # a filter shows once there is a choice
    page = html(staff_client.get("/admin/training/datasetimage/?q=cats_1"))
    image = DatasetImage.objects.get(original_name="cats_1.png")
    assert f'src="/datasets/images/{image.pk}/thumbnail/"' in page
    assert "1 result" in page
    filtered = html(
        staff_client.get(f"/admin/training/datasetimage/?split__exact=validation&dataset__id__exact={pets.pk}")
    )
    assert "By split" in filtered and "By dataset" in filtered and "By label" in filtered


def test_image_change_page_renders_with_a_preview(staff_client, pets):
    image = DatasetImage.objects.first()
    page = html(staff_client.get(f"/admin/training/datasetimage/{image.pk}/change/"))
    assert f'href="/datasets/images/{image.pk}/original/"' in page


def test_bulk_set_split(staff_client, pets):
    ids = list(DatasetImage.objects.filter(label__name="cats").values_list("pk", flat=True))
    response = staff_client.post(
        "/admin/training/datasetimage/", {"action": "set_split_test", ACTION_CHECKBOX_NAME: ids}, follow=True
    )
    assert "4 images now in the test split." in html(response)
    assert set(DatasetImage.objects.filter(pk__in=ids).values_list("split", flat=True)) == {"test"}


def test_bulk_move_to_label_asks_for_the_label_then_moves(staff_client, pets):
    ids = list(DatasetImage.objects.filter(label__name="cats").values_list("pk", flat=True))[:2]
    dogs = Label.objects.get(dataset=pets, name="dogs")
    ask = staff_client.post("/admin/training/datasetimage/", {"action": "move_to_label", ACTION_CHECKBOX_NAME: ids})
    assert "Move 2 images of “Pets” to another label." in html(ask)
    done = staff_client.post(
        "/admin/training/datasetimage/",
        {"action": "move_to_label", ACTION_CHECKBOX_NAME: ids, "apply": "1", "label": dogs.pk},
        follow=True,
    )
    assert "Moved 2 images to “dogs”." in html(done)
    assert set(DatasetImage.objects.filter(pk__in=ids).values_list("label__name", flat=True)) == {"dogs"}


def test_bulk_move_across_datasets_is_refused_with_message(staff_client, pets, alice):
    other = Dataset.objects.create(name="Other", created_by=alice)
    uploads.add_uploads(other, "x", [SimpleUploadedFile("x.png", noise_image_bytes(99))], alice)
    ids = list(DatasetImage.objects.values_list("pk", flat=True))
    response = staff_client.post(
        "/admin/training/datasetimage/", {"action": "move_to_label", ACTION_CHECKBOX_NAME: ids}, follow=True
    )
    assert "Choose images of one dataset at a time" in html(response)


def test_bulk_delete_removes_rows_and_files(staff_client, pets, django_capture_on_commit_callbacks):
    images = list(DatasetImage.objects.filter(label__name="dogs"))
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(
            "/admin/training/datasetimage/",
            {"action": "delete_selected", ACTION_CHECKBOX_NAME: [i.pk for i in images], "post": "yes"},
        )
    assert not DatasetImage.objects.filter(pk__in=[i.pk for i in images]).exists()
    assert not any(i.path.exists() or i.thumbnail_path.exists() for i in images)


def test_deleting_a_dataset_in_the_admin_removes_its_folder(staff_client, pets, django_capture_on_commit_callbacks):
    folder = pets.folder
    assert folder.exists()
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(f"/admin/training/dataset/{pets.pk}/delete/", {"post": "yes"})
    assert not Dataset.objects.exists() and not folder.exists()


def test_import_zip_page_in_the_admin_starts_a_job(staff_client, pets, django_capture_on_commit_callbacks):
    page = staff_client.get(f"/admin/training/dataset/{pets.pk}/import/")
    assert "Start import" in html(page)
    upload = SimpleUploadedFile("more.zip", image_zip({"owls": 2}, seed=500), content_type="application/zip")
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(f"/admin/training/dataset/{pets.pk}/import/", {"archive": upload}, follow=True)
    job = ImportJob.objects.get()
    assert "Import of “more.zip” queued." in html(response)
    assert job.status == ImportJob.Status.SUCCEEDED
    assert pets.labels.filter(name="owls").exists()
    report = html(staff_client.get(f"/admin/training/importjob/{job.pk}/change/"))
    assert "Added 2 images." in report and "new label" in report


def test_admin_import_of_a_bad_zip_shows_the_message(staff_client, pets):
    upload = SimpleUploadedFile("evil.zip", make_zip({"/abs/x.png": b"x"}))
    response = staff_client.post(f"/admin/training/dataset/{pets.pk}/import/", {"archive": upload})
    assert "unsafe path" in html(response)
    assert not ImportJob.objects.exists()


def test_admin_is_closed_to_people_who_are_not_staff(alice_client, pets):
    response = alice_client.get("/admin/training/dataset/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert alice_client.get(f"/admin/training/dataset/{pets.pk}/import/").status_code == 302


def test_staff_without_model_permissions_still_manage_datasets(client, django_user_model, pets):
    plain_staff = django_user_model.objects.create_user("sam", password="x", is_staff=True)
    client.force_login(plain_staff)
    assert client.get("/admin/training/dataset/").status_code == 200
    assert client.get(f"/admin/training/dataset/{pets.pk}/change/").status_code == 200
    assert client.get("/admin/training/datasetimage/").status_code == 200


def test_import_jobs_are_read_only_in_the_admin(staff_client, pets):
    job = ImportJob.objects.create(dataset=pets, archive_name="a.zip", status=ImportJob.Status.RUNNING)
    page = html(staff_client.get(f"/admin/training/importjob/{job.pk}/change/"))
    assert 'name="_save"' not in page
    assert staff_client.get(f"/admin/training/importjob/{job.pk}/delete/").status_code == 403
    assert staff_client.get("/admin/training/importjob/add/").status_code == 403


def test_two_new_labels_differing_only_in_case_are_refused_in_the_inline(staff_client, staff):
    data = {
        "name": "Birds",
        "description": "",
        "created_by": staff.pk,
        "validation_percent": 20,
        "test_percent": 0,
        "labels-TOTAL_FORMS": 2,
        "labels-INITIAL_FORMS": 0,
        "labels-0-name": "owls",
        "labels-1-name": "Owls ",
    }
    response = staff_client.post("/admin/training/dataset/add/", data)
    assert response.status_code == 200
    assert "Two labels are named “Owls”: label names ignore case and spaces." in html(response)
    assert not Dataset.objects.filter(name="Birds").exists()
