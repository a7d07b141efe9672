"""History: users see their predictions, staff see all; images are private; deleting removes files."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.files.base import ContentFile

from classifier.models import Prediction
from tests.helpers import image_bytes


def make_prediction(user, name="photo.jpg", label="zebra") -> Prediction:
    p = Prediction(
        user=user,
        model_key="mobilenetv2",
        model_name="MobileNetV2",
        original_name=name,
        image_format="JPEG",
        width=64,
        height=48,
        top=[{"label": label, "probability": 0.9, "index": 340}, {"label": "tiger", "probability": 0.05, "index": 292}],
        inference_ms=12.5,
    )
    p.image.save("x.jpg", ContentFile(image_bytes()), save=False)
    p.thumbnail.save("x-thumb.jpg", ContentFile(image_bytes()), save=False)
    p.save()
    return p


def test_history_lists_only_my_predictions(bob_client, bob, charlie):
    make_prediction(bob, "mine.jpg")
    make_prediction(charlie, "theirs.jpg")
    html = bob_client.get("/history/").text
    assert "mine.jpg" in html and "theirs.jpg" not in html
    assert "zebra" in html and "90%" in html


def test_staff_can_switch_to_everyones_predictions(staff_client, bob, charlie):
    make_prediction(bob, "bobs.jpg")
    make_prediction(charlie, "charlies.jpg")
    assert "bobs.jpg" not in staff_client.get("/history/").text
    html = staff_client.get("/history/?who=all").text
    assert "bobs.jpg" in html and "charlies.jpg" in html and "<th>User</th>" in html


def test_members_cannot_ask_for_everyones_predictions(bob_client, bob, charlie):
    make_prediction(charlie, "charlies.jpg")
    assert "charlies.jpg" not in bob_client.get("/history/?who=all").text


def test_empty_history_explains_itself(bob_client):
    assert "No predictions yet" in bob_client.get("/history/").text


def test_history_is_paginated_and_htmx_gets_only_the_list(bob_client, bob):
    for i in range(25):
        make_prediction(bob, f"p{i:02}.jpg")
    first = bob_client.get("/history/").text
    assert "Page 1 of 2 · 25 predictions" in first and "p24.jpg" in first and "p04.jpg" not in first
    second = bob_client.get("/history/?page=2", HTTP_HX_REQUEST="true").text
    assert "<html" not in second and "p04.jpg" in second


def test_delete_removes_the_row_and_its_files(bob_client, bob, django_capture_on_commit_callbacks):
    p = make_prediction(bob)
    image, thumb = Path(p.image.path), Path(p.thumbnail.path)
    with django_capture_on_commit_callbacks(execute=True):
        response = bob_client.post(f"/history/{p.pk}/delete/")
    assert response.status_code == 302
    assert not Prediction.objects.exists()
    assert not image.exists() and not thumb.exists()


def test_htmx_delete_answers_with_nothing_so_the_row_disappears(bob_client, bob):
    p = make_prediction(bob)
    response = bob_client.post(f"/history/{p.pk}/delete/", HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and response.content == b""


def test_others_cannot_delete_my_prediction(client, bob, charlie):
    p = make_prediction(bob)
    client.force_login(charlie)
    assert client.post(f"/history/{p.pk}/delete/").status_code == 404
    assert Prediction.objects.filter(pk=p.pk).exists()


def test_delete_never_redirects_off_site(bob_client, bob):
    p = make_prediction(bob)
    response = bob_client.post(f"/history/{p.pk}/delete/", {"next": "https://evil.example/"})
    assert response["Location"] == "/history/"


@pytest.mark.parametrize("kind", ["image", "thumbnail"])
def test_images_are_served_only_to_their_owner_and_staff(client, bob, charlie, staff, kind):
    p = make_prediction(bob)
    url = f"/predictions/{p.pk}/{kind}/"
    assert client.get(url).status_code == 302  # anonymous: to the login page
    client.force_login(charlie)
    assert client.get(url).status_code == 404
    client.force_login(bob)
    response = client.get(url)
    assert response.status_code == 200 and response["Content-Type"] == "image/jpeg"
    client.force_login(staff)
    assert client.get(url).status_code == 200


def test_uploads_have_no_public_url(client, bob):
    p = make_prediction(bob)
    client.force_login(bob)
    assert client.get("/private-media-not-served/" + p.image.name).status_code == 404
    assert client.get("/media/" + p.image.name).status_code == 404
