"""A width/resolution variant is picked like any model: on the Classify page, in the API, on the Models page."""

from __future__ import annotations

import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.helpers import image_bytes

pytestmark = pytest.mark.django_db

SMALL, LARGER = "mobilenet-0.5-128", "mobilenet-0.5-160"


def jpeg() -> SimpleUploadedFile:
    return SimpleUploadedFile("photo.jpg", image_bytes("JPEG", size=(200, 150)), content_type="image/jpeg")


@pytest.fixture
def two_variants(install_weights):
    install_weights(SMALL)
    install_weights(LARGER)


def test_installed_variants_are_offered_on_the_classify_page(bob_client, two_variants):
    html = bob_client.get("/").content.decode()
    group = re.search(r'<optgroup label="MobileNet">(.*?)</optgroup>', html, re.S).group(1)
    assert f'<option value="{SMALL}"' in group and f'<option value="{LARGER}"' in group
    assert "mobilenet-0.25-128" not in html  # not installed, not offered


def test_each_variant_runs_at_its_own_input_size_through_the_api(bob_client, two_variants):
    from classifier import inference

    for key, size in ((SMALL, 128), (LARGER, 160)):
        response = bob_client.post("/api/v1/predict", {"images": [jpeg()], "model": key, "top_k": "3"})
        assert response.status_code == 200, response.content
        assert response.json()["model"] == key
        assert len(response.json()["results"][0]["predictions"]) == 3
        assert inference.get_engine().get(key).spec.input_size == size


def test_a_variant_can_be_named_as_the_models_page_shows_it(bob_client, two_variants):
    response = bob_client.post("/api/v1/predict", {"images": [jpeg()], "model": "MobileNet 0.5 @160"})
    assert response.status_code == 200 and response.json()["model"] == LARGER


def test_a_variant_without_weights_or_that_does_not_exist_is_a_clear_4xx(bob_client, two_variants):
    missing = bob_client.post("/api/v1/predict", {"images": [jpeg()], "model": "mobilenet-0.25-128"})
    assert missing.status_code == 409
    assert "cannot run yet: its weights are not installed" in missing.json()["error"]
    unknown = bob_client.post("/api/v1/predict", {"images": [jpeg()], "model": "mobilenet-0.3-128"})
    assert unknown.status_code == 400 and "Unknown model 'mobilenet-0.3-128'" in unknown.json()["error"]


def test_each_variant_has_its_own_status_on_the_models_page(bob_client, install_weights):
    install_weights(SMALL)
    html = bob_client.get("/models/?family=MobileNet&q=0.5").content.decode()
    statuses = dict(
        re.findall(
            r'<tr id="model-([^"]+)".*?<td class="model-status">\s*<span class="badge [^"]+">([^<]+)<', html, re.S
        )
    )
    assert statuses == {
        "mobilenet-05-128": "Installed",
        "mobilenet-05-160": "Weights missing",
        "mobilenet-05-192": "Weights missing",
        "mobilenet-05-224": "Weights missing",
    }
