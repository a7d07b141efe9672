"""Two quick submits with the same name: the one that loses the race gets the form's error, never a 500.

The race is forced: the clashing row is created by "another request" right after the form was
validated and before the view saves, which is exactly the window two real submits fall into.
"""

from __future__ import annotations

import pytest

from training.forms import DatasetForm, LabelForm
from training.models import Dataset, Label

pytestmark = pytest.mark.django_db


def race(monkeypatch, form_class, make_clash) -> None:
    """After the form says valid, another request creates the clashing row."""
    is_valid = form_class.is_valid

    def valid_then_clash(self) -> bool:
        valid = is_valid(self)
        if valid:
            make_clash()
        return valid

    monkeypatch.setattr(form_class, "is_valid", valid_then_clash)


def test_dataset_create_race_is_a_form_error(alice_client, alice, monkeypatch):
    race(monkeypatch, DatasetForm, lambda: Dataset.objects.create(name="pets", created_by=alice))
    response = alice_client.post("/datasets/new/", {"name": "Pets", "validation_percent": 20, "test_percent": 0})
    assert response.status_code == 400
    assert "A dataset with this name already exists. Choose another name." in response.text
    assert list(Dataset.objects.values_list("name", flat=True)) == ["pets"]


def test_dataset_rename_race_is_a_form_error(alice_client, alice, monkeypatch):
    mine = Dataset.objects.create(name="Cats", created_by=alice)
    race(monkeypatch, DatasetForm, lambda: Dataset.objects.create(name="DOGS", created_by=alice))
    response = alice_client.post(
        f"/datasets/{mine.pk}/edit/", {"name": "Dogs", "validation_percent": 20, "test_percent": 0}
    )
    assert response.status_code == 400
    assert "A dataset with this name already exists. Choose another name." in response.text
    mine.refresh_from_db()
    assert mine.name == "Cats"


def test_label_create_race_is_a_form_error(alice_client, alice, monkeypatch):
    dataset = Dataset.objects.create(name="Pets", created_by=alice)
    race(monkeypatch, LabelForm, lambda: Label.objects.create(dataset=dataset, name="cats"))
    response = alice_client.post(f"/datasets/{dataset.pk}/labels/new/", {"name": "Cats"})
    assert response.status_code == 400
    assert "This dataset already has a label “cats”" in response.text
    assert list(dataset.labels.values_list("name", flat=True)) == ["cats"]


def test_label_rename_race_is_a_form_error(alice_client, alice, monkeypatch):
    dataset = Dataset.objects.create(name="Pets", created_by=alice)
    label = Label.objects.create(dataset=dataset, name="kittens")
    race(monkeypatch, LabelForm, lambda: Label.objects.create(dataset=dataset, name="Cats"))
    response = alice_client.post(f"/datasets/{dataset.pk}/labels/{label.pk}/edit/", {"name": "cats"})
    assert response.status_code == 400
    assert "This dataset already has a label “Cats”" in response.text
    label.refresh_from_db()
    assert label.name == "kittens"


def test_an_integrity_error_that_validation_cannot_explain_is_not_hidden(alice_client, alice, monkeypatch):
    """Only a lost race becomes a form error: anything else still fails loudly (and is logged)."""
    from django.db import IntegrityError

    def broken_save(*args, **kwargs):
        raise IntegrityError("something else")

    monkeypatch.setattr(Dataset, "save", broken_save)
    alice_client.raise_request_exception = True
    with pytest.raises(IntegrityError):
        alice_client.post("/datasets/new/", {"name": "Pets", "validation_percent": 20, "test_percent": 0})


def test_the_admin_answers_a_lost_name_race_with_a_message_not_a_500(client, staff, monkeypatch):
    """Validation passed, then another administrator's row took the name before this save."""
    from django.contrib.admin import ModelAdmin

    from training.models import Dataset

    client.force_login(staff)
    real_save = ModelAdmin.save_model

    def someone_was_faster(self, request, obj, form, change):
        Dataset.objects.create(name="Birds")
        real_save(self, request, obj, form, change)

    monkeypatch.setattr(ModelAdmin, "save_model", someone_was_faster)
    response = client.post(
        "/admin/training/dataset/add/",
        {"name": "Birds", "validation_percent": 20, "test_percent": 0, "split_seed": 0,
         "labels-TOTAL_FORMS": 0, "labels-INITIAL_FORMS": 0},
        follow=True,
    )  # fmt: skip
    assert response.status_code == 200
    assert "Someone saved the same name at the same moment" in response.text
    assert response.redirect_chain[-1][0] == "/admin/training/dataset/add/"  # back on the form
