"""Label names: one rule for forms, admin and zip folders."""

from __future__ import annotations

import unicodedata

import pytest

from training import names
from training.names import InvalidName, clean_label_name, label_key


def test_surrounding_and_repeated_spaces_are_removed():
    assert clean_label_name("  golden   retriever \t") == "golden retriever"


def test_decomposed_unicode_from_macos_is_normalised():
    decomposed = unicodedata.normalize("NFD", "café")
    assert clean_label_name(decomposed) == "café"
    assert label_key(decomposed) == label_key("CAFÉ ")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("   ", "cannot be empty"),
        ("x" * 65, "at most 64 characters; this one has 65"),
        (".hidden", "cannot start with a dot"),
        ("..", "cannot start with a dot"),
        ("cats/dogs", "cannot contain /"),
        ("what?", "cannot contain ?"),
        ("tab\x00zero", "cannot contain"),
    ],
)
def test_names_that_cannot_be_labels_are_refused_with_the_reason(raw, message):
    with pytest.raises(InvalidName, match=message.replace("?", r"\?")):
        clean_label_name(raw)


def test_names_differing_only_in_case_or_spaces_share_a_key():
    assert label_key("Cats") == label_key(" cats ") == label_key("CATS")
    assert label_key("cats") != label_key("cat s")


@pytest.mark.parametrize(
    "raw",
    ["CON", "con", "Prn", "AUX", "nul", "COM1", "com9", "LPT1", "lpt9", "aux.txt", "NUL.tar.gz", "Con .txt", "COM¹",
     "CONIN$", "conout$"],
)  # fmt: skip
def test_names_windows_reserves_for_devices_are_refused_with_the_reason(raw):
    with pytest.raises(InvalidName) as excinfo:
        clean_label_name(raw)
    message = str(excinfo.value)
    assert "Windows" in message and "cannot be a folder name there" in message
    assert message.endswith("Choose another name.")


@pytest.mark.parametrize("raw", ["cats.", "cats..", "cats . ", "dogs. ."])
def test_names_ending_with_a_dot_are_refused_because_windows_drops_it(raw):
    with pytest.raises(InvalidName, match="cannot end with a dot"):
        clean_label_name(raw)


@pytest.mark.parametrize("raw", ["COM10", "console", "auxiliary", "con man", "nul-results", "LPT", "my.con", "v1.0"])
def test_names_that_only_resemble_device_names_are_accepted(raw):
    assert clean_label_name(raw) == raw


@pytest.mark.parametrize(
    ("name", "folder"),
    [("cats", "cats"), ("CON", "CON_"), ("aux.txt", "aux_.txt"), ("Nul .x", "Nul_ .x"), ("cats.", "cats"),
     ("COM¹", "COM¹_"), ("con..", "con_")],
)  # fmt: skip
def test_safe_folder_name_changes_only_names_windows_cannot_create(name, folder):
    assert names.safe_folder_name(name) == folder
    assert names.windows_problem(folder) is None


# --- The label cap in the forms and uploads -----------------------------------------------------


@pytest.fixture
def small_cap(settings, alice):
    """A dataset with two labels, and room for two."""
    from training.models import Dataset, Label

    settings.MAX_LABELS_PER_DATASET = 2
    dataset = Dataset.objects.create(name="Pets", created_by=alice)
    Label.objects.create(dataset=dataset, name="cats")
    Label.objects.create(dataset=dataset, name="dogs")
    return dataset


FULL = "This dataset already has 2 labels, the most a dataset can have. Delete labels you no longer need"


@pytest.mark.django_db
def test_label_form_refuses_a_label_beyond_the_cap_and_still_renames(small_cap):
    from training.forms import LabelForm

    form = LabelForm({"name": "owls"}, dataset=small_cap)
    assert not form.is_valid()
    assert form.errors["name"][0].startswith(FULL)
    assert "Delete labels you no longer need" in form.errors["name"][0]
    cats = small_cap.labels.get(name="cats")
    assert LabelForm({"name": "kittens"}, dataset=small_cap, instance=cats).is_valid()


@pytest.mark.django_db
def test_label_form_refuses_a_name_windows_reserves(alice):
    from training.forms import LabelForm
    from training.models import Dataset

    form = LabelForm({"name": "aux"}, dataset=Dataset.objects.create(name="Pets", created_by=alice))
    assert not form.is_valid()
    assert "Windows" in form.errors["name"][0]


@pytest.mark.django_db
def test_upload_form_refuses_a_new_label_beyond_the_cap_but_not_an_existing_one(small_cap):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.helpers import noise_image_bytes
    from training.forms import UploadForm

    def form(new_label: str) -> UploadForm:
        files = {"images": [SimpleUploadedFile("a.png", noise_image_bytes(1))]}
        return UploadForm({"new_label": new_label}, files, dataset=small_cap)

    refused = form("owls")
    assert not refused.is_valid()
    assert refused.errors["new_label"][0].startswith(FULL)
    assert form("CATS").is_valid()  # the existing label "cats": nothing new


@pytest.mark.django_db
def test_upload_into_a_new_label_beyond_the_cap_rejects_the_files_with_the_reason(small_cap, alice):
    """Labels added after the form was checked: the upload itself refuses, and keeps no file."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.dataset_helpers import files_under
    from tests.helpers import noise_image_bytes
    from training import uploads

    report = uploads.add_uploads(small_cap, "owls", [SimpleUploadedFile("o.png", noise_image_bytes(3))], alice)
    assert (report["added"], report["rejected"]) == (0, 1)
    assert report["labels"][0]["rejected_files"][0]["reason"].startswith(FULL)
    assert not small_cap.labels.filter(name="owls").exists()
    assert files_under(small_cap.folder / "images") == []


@pytest.mark.django_db
def test_the_admin_refuses_a_label_beyond_the_cap(small_cap):
    from django.core.exceptions import ValidationError

    from training.models import Label

    with pytest.raises(ValidationError, match="already has 2 labels"):
        Label(dataset=small_cap, name="owls").full_clean()
    cats = small_cap.labels.get(name="cats")
    cats.name = "kittens"
    cats.full_clean()
