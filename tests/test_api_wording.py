"""Each way a request can be unreadable gets its own true sentence, in JSON on the API and HTML on pages."""

from __future__ import annotations

import pytest
from django.test import Client

from classifier.models import ApiToken
from tests.helpers import image_bytes

pytestmark = pytest.mark.django_db
URL = "/api/v1/predict"


@pytest.fixture
def api(bob) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {ApiToken.issue(bob, 'script')[1]}")


def part(name: str, value: bytes, filename: str | None = None, boundary: bytes = b"real") -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
    headers = f"Content-Disposition: {disposition}\r\n" + ("Content-Type: image/jpeg\r\n" if filename else "")
    return b"--" + boundary + b"\r\n" + headers.encode() + b"\r\n" + value + b"\r\n"


def multipart(*parts: bytes, boundary: bytes = b"real") -> bytes:
    return b"".join(parts) + b"--" + boundary + b"--\r\n"


def post_raw(client: Client, body: bytes, content_type: str, **extra):
    return client.generic("POST", URL, body, content_type=content_type, **extra)


def error_of(response) -> str:
    assert response["Content-Type"] == "application/json", response.content[:200]
    return response.json()["error"]


# --- What the form says --------------------------------------------------------------------------


def test_no_image_is_said_first_even_when_no_model_is_installed(api):
    response = api.post(URL, {})
    assert response.status_code == 400
    assert error_of(response) == "Choose at least one image to classify."


def test_without_an_installed_model_an_image_gets_the_409(api):
    response = api.post(URL, {"images": [image_file()]})
    assert response.status_code == 409
    assert "MobileNetV2 cannot run yet" in error_of(response)


def image_file():
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("a.jpg", image_bytes(), content_type="image/jpeg")


# --- Bodies that cannot be read ------------------------------------------------------------------


@pytest.mark.parametrize("with_model_field", [True, False])
def test_a_wrong_multipart_boundary_says_so(api, fast_model, with_model_field):
    """Django splits nothing (or one field swallows the rest of the body): the boundary is the problem."""
    parts = [part("images", image_bytes(), "a.jpg")]
    if with_model_field:
        parts.insert(0, part("model", fast_model.encode()))
    response = post_raw(api, multipart(*parts), "multipart/form-data; boundary=wrong")
    assert response.status_code == 400
    message = error_of(response)
    assert message.startswith("The request body does not use the multipart boundary its Content-Type header names")
    assert "Null characters" not in message


def test_a_right_boundary_still_works(api, fast_model):
    response = post_raw(api, multipart(part("images", image_bytes(), "a.jpg")), "multipart/form-data; boundary=real")
    assert response.status_code == 200


def test_a_chunked_body_without_content_length_is_a_411(api, fast_model):
    response = post_raw(api, b"", "multipart/form-data; boundary=real", HTTP_TRANSFER_ENCODING="chunked")
    assert response.status_code == 411
    assert "Content-Length" in error_of(response) and "chunked" in error_of(response)


def test_too_many_fields_says_fields(api, fast_model, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 10
    response = api.post(URL, {f"field{i}": "x" for i in range(20)})
    assert response.status_code == 400
    message = error_of(response)
    assert "more than 10 form fields" in message and "files" not in message


def test_a_huge_text_field_says_text(api, fast_model, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = api.post(URL, {"model": "x" * 5000})
    assert response.status_code == 400
    message = error_of(response)
    assert "text fields" in message and "send fewer" not in message


def test_a_very_long_file_name_says_so(api, fast_model):
    body = multipart(part("images", image_bytes(), "a" * 1024 + ".jpg"))
    response = post_raw(api, body, "multipart/form-data; boundary=real")
    assert response.status_code == 400
    assert "file name" in error_of(response) and "send fewer" not in error_of(response)


def test_too_many_files_for_django_says_files_and_the_limit(api, fast_model, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 3
    settings.MAX_FILES_PER_REQUEST = 2
    response = api.post(URL, {"images": [image_file() for _ in range(5)]})
    assert response.status_code == 400
    message = error_of(response)
    assert "more than 3 files" in message and "at most 2" in message


def test_a_multipart_content_type_without_boundary_says_so(api, fast_model):
    response = post_raw(api, b"--x\r\n", "multipart/form-data")
    assert response.status_code == 400
    assert "boundary" in error_of(response)


def test_pages_get_the_same_sentence_in_html(bob_client, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 10
    response = bob_client.post("/tokens/", {f"field{i}": "x" for i in range(20)})
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")
    assert "more than 10 form fields" in response.text
