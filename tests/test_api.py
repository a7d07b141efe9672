"""JSON API: POST /api/v1/predict and GET /api/v1/models, by token or session; errors are JSON 4xx."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from classifier.models import ApiToken, Prediction
from tests.helpers import image_bytes, noise_image_bytes

URL = "/api/v1/predict"


def jpeg(name: str = "photo.jpg", seed: int | None = None) -> SimpleUploadedFile:
    data = image_bytes("JPEG") if seed is None else noise_image_bytes(seed, fmt="JPEG")
    return SimpleUploadedFile(name, data, content_type="image/jpeg")


@pytest.fixture
def token(bob) -> str:
    return ApiToken.issue(bob, "test script")[1]


@pytest.fixture
def api(token) -> Client:
    """A client that authenticates like a script: bearer token, no cookies, no CSRF token."""
    return Client(enforce_csrf_checks=True, HTTP_AUTHORIZATION=f"Bearer {token}")


def test_without_credentials_the_answer_is_a_json_401(client):
    response = client.post(URL, {"images": [jpeg()]})
    assert response.status_code == 401
    assert response.json()["error"].startswith("Authentication required: send 'Authorization: Bearer <token>'")


def test_a_revoked_or_wrong_token_is_refused(client, db):
    response = client.post(URL, {"images": [jpeg()]}, HTTP_AUTHORIZATION="Bearer tl_nope")
    assert response.status_code == 401
    assert response.json() == {"error": "This API token is not valid (it may have been revoked)."}


def test_token_request_classifies_and_records_who_asked(api, bob, fast_model):
    response = api.post(URL, {"images": [jpeg("zebra.jpg")], "model": fast_model})
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == fast_model and body["model_name"] == "MobileNet 0.5 @128" and body["top_k"] == 5
    [result] = body["results"]
    assert result["filename"] == "zebra.jpg"
    assert len(result["predictions"]) == 5
    probabilities = [p["probability"] for p in result["predictions"]]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < probabilities[0] <= 1
    assert set(result["predictions"][0]) == {"label", "probability", "index"}
    assert Prediction.objects.get().user == bob
    assert ApiToken.objects.get().last_used_at is not None


def test_without_a_model_the_default_is_used(api, fast_model):
    assert api.post(URL, {"images": [jpeg()]}).json()["model"] == fast_model


def test_model_names_are_matched_regardless_of_case(api, fast_model):
    assert api.post(URL, {"images": [jpeg()], "model": "MOBILENET-0.5-128"}).json()["model"] == fast_model


def test_several_images_come_back_in_order_from_one_batch(api, fast_model):
    files = [jpeg(f"{i}.jpg", seed=i) for i in range(3)]
    body = api.post(URL, {"images": files}).json()
    assert [r["filename"] for r in body["results"]] == ["0.jpg", "1.jpg", "2.jpg"]
    assert {p.batch_size for p in Prediction.objects.all()} == {3}


def test_several_images_are_stored_with_one_insert_and_their_ids_come_back(api, fast_model):
    """One commit for the rows of a request: SQLite's write lock once, not once per image."""
    files = [jpeg(f"{i}.jpg", seed=i) for i in range(3)]
    with CaptureQueriesContext(connection) as queries:
        body = api.post(URL, {"images": files}).json()
    inserts = [q["sql"] for q in queries.captured_queries if q["sql"].startswith('INSERT INTO "classifier_prediction"')]
    assert len(inserts) == 1
    ids = [r["id"] for r in body["results"]]
    assert ids == sorted(set(ids)) and set(ids) == set(Prediction.objects.values_list("pk", flat=True))
    assert [Prediction.objects.get(pk=i).original_name for i in ids] == ["0.jpg", "1.jpg", "2.jpg"]
    assert all(p.image and p.thumbnail for p in Prediction.objects.all())


def test_a_tokens_last_use_is_written_at_most_once_a_minute(api, fast_model):
    """Every request reads the token; only a request a minute after the last write updates last_used_at."""

    def token_writes() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert api.post(URL, {"images": [jpeg()]}).status_code == 200
        return sum(q["sql"].startswith('UPDATE "classifier_apitoken"') for q in queries.captured_queries)

    assert token_writes() == 1  # never used before
    first = ApiToken.objects.get().last_used_at
    assert token_writes() == 0
    assert ApiToken.objects.get().last_used_at == first
    ApiToken.objects.update(last_used_at=first - timedelta(minutes=2))
    assert token_writes() == 1
    assert ApiToken.objects.get().last_used_at > first


def test_top_k_sets_how_many_labels_come_back(api, fast_model):
    body = api.post(URL, {"images": [jpeg()], "top_k": "12"}).json()
    assert len(body["results"][0]["predictions"]) == 12


def test_the_singular_image_field_is_accepted_too(api, fast_model):
    assert api.post(URL, {"image": jpeg()}).status_code == 200


def test_top_k_out_of_range_is_a_400_with_the_reason(api, fast_model):
    response = api.post(URL, {"images": [jpeg()], "top_k": "500"})
    assert response.status_code == 400
    assert response.json()["error"] == "Ensure this value is less than or equal to 20."


def test_no_image_is_a_400(api, fast_model):
    response = api.post(URL, {"model": fast_model})
    assert response.status_code == 400
    assert response.json()["error"] == "Choose at least one image to classify."


def test_unknown_model_is_a_400_naming_it_and_the_models_installed_here(api, fast_model, install_weights):
    install_weights("mobilenet-0.25-128")
    response = api.post(URL, {"images": [jpeg()], "model": "alexnet"})
    assert response.status_code == 400
    assert response.json()["error"] == (
        "Unknown model 'alexnet'. Models you can use here: mobilenet-0.25-128, mobilenet-0.5-128."
    )


def test_unknown_model_when_none_is_installed_says_so(api):
    response = api.post(URL, {"images": [jpeg()], "model": "alexnet"})
    assert response.status_code == 400
    assert response.json()["error"].startswith(
        "Unknown model 'alexnet'. No model can run here yet: an administrator installs weights on the Models page."
    )


def test_model_without_weights_is_a_409_that_says_so(api, fast_model):
    response = api.post(URL, {"images": [jpeg()], "model": "vgg16"})
    assert response.status_code == 409
    assert "VGG16 cannot run yet: its weights are not installed on this server." in response.json()["error"]


def test_too_many_files_is_a_400_with_the_limit(api, fast_model, settings):
    settings.MAX_FILES_PER_REQUEST = 2
    response = api.post(URL, {"images": [jpeg(f"{i}.jpg") for i in range(3)]})
    assert response.status_code == 400
    assert response.json()["error"] == "You sent 3 files; send at most 2 at a time."


def test_beyond_djangos_own_file_count_cap_the_answer_is_still_json(api, fast_model, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 3
    response = api.post(URL, {"images": [jpeg(f"{i}.jpg") for i in range(5)]})
    assert response.status_code == 400
    assert "send fewer per request" in response.json()["error"]


def test_bad_files_get_per_file_errors_and_the_good_ones_are_classified(api, fast_model):
    bad = SimpleUploadedFile("broken.jpg", image_bytes("JPEG")[:40], content_type="image/jpeg")
    body = api.post(URL, {"images": [jpeg("ok.jpg"), bad]}).json()
    assert [r["filename"] for r in body["results"]] == ["ok.jpg", "broken.jpg"]
    assert "predictions" in body["results"][0]
    assert body["results"][1] == {
        "filename": "broken.jpg",
        "error": "The image data is damaged or incomplete (the file may be truncated).",
    }


def test_when_every_file_is_bad_the_answer_is_422(api, fast_model):
    text = SimpleUploadedFile("notes.png", b"hello", content_type="image/png")
    response = api.post(URL, {"images": [text]})
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "None of the files could be classified; see each file's error."
    assert body["results"][0]["error"].startswith("This file is not an image TransferLab can read")


def test_get_on_predict_is_a_405_in_json(api):
    response = api.get(URL)
    assert response.status_code == 405 and response["Allow"] == "POST"
    assert response.json() == {"error": "Use POST for this endpoint."}


def test_a_logged_in_session_works_with_its_csrf_token(bob, fast_model):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(bob)
    page = browser.get("/")
    csrf = page.cookies["csrftoken"].value
    response = browser.post(URL, {"images": [jpeg()]}, HTTP_X_CSRFTOKEN=csrf)
    assert response.status_code == 200


def test_a_logged_in_session_without_csrf_token_is_refused(bob, fast_model):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(bob)
    response = browser.post(URL, {"images": [jpeg()]})
    assert response.status_code == 403
    assert response.json()["error"].startswith("CSRF check failed")
    assert not Prediction.objects.exists()


def test_unknown_api_paths_answer_in_json(api):
    response = api.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"].startswith("There is nothing at this address.")


def test_models_endpoint_lists_the_zoo_with_installed_flags(api, fast_model):
    body = api.get("/api/v1/models").json()
    by_key = {m["key"]: m for m in body["models"]}
    assert body["default"] == fast_model
    assert [m["key"] for m in body["models"][:6]] == [
        "mobilenetv2",
        "resnet50",
        "efficientnetb0",
        "efficientnetb7",
        "vgg16",
        "inceptionv3",
    ]
    assert by_key[fast_model]["installed"] is True and by_key["vgg16"]["installed"] is False
    assert by_key["mobilenetv2"]["recommended"] is True and by_key["mobilenetv2"]["top1"] == 71.3


def test_models_endpoint_needs_credentials(client):
    assert client.get("/api/v1/models").status_code == 401


def test_without_a_model_an_installed_one_is_used_when_the_default_is_missing(api, settings, install_weights):
    settings.DEFAULT_MODEL = "mobilenetv2"  # not installed here
    install_weights("mobilenet-0.5-128")
    response = api.post(URL, {"images": [jpeg()]})
    assert response.status_code == 200 and response.json()["model"] == "mobilenet-0.5-128"
