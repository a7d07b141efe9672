"""Downloads name their file in a header every browser reads, and private files say how to cache them."""

from __future__ import annotations

from urllib.parse import unquote

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from classifier.models import Prediction
from tests.helpers import image_bytes, noise_image_bytes
from training import uploads
from training.models import Dataset, DatasetImage
from webapp.http import download_name

pytestmark = pytest.mark.django_db

NAME = "été à Zürich 北京.jpg"


def rfc6266_name(header: str) -> str:
    """The file name a browser reads from an RFC 6266 header with `filename*=utf-8''...`."""
    assert "filename*=utf-8''" in header, header
    return unquote(header.split("filename*=utf-8''", 1)[1])


def test_prediction_download_with_a_non_ascii_name_uses_rfc_6266(bob_client, fast_model):
    bob_client.post("/", {"images": [SimpleUploadedFile(NAME, image_bytes(), content_type="image/jpeg")]})
    prediction = Prediction.objects.get()
    response = bob_client.get(f"/predictions/{prediction.pk}/image/")
    assert response.status_code == 200
    header = response["Content-Disposition"]
    header.encode("ascii")  # nothing a browser would have to guess the encoding of
    assert header.startswith("inline; ")
    assert rfc6266_name(header) == NAME
    assert response["Cache-Control"] == "private, max-age=3600"


def test_prediction_download_with_an_ascii_name_is_quoted_plainly(bob_client, fast_model):
    bob_client.post("/", {"images": [SimpleUploadedFile('my "cat".jpg', image_bytes(), content_type="image/jpeg")]})
    response = bob_client.get(f"/predictions/{Prediction.objects.get().pk}/image/")
    assert response["Content-Disposition"] == 'inline; filename="my \\"cat\\".jpg"'


def test_prediction_thumbnail_is_private(bob_client, fast_model):
    bob_client.post("/", {"images": [SimpleUploadedFile("a.jpg", image_bytes(), content_type="image/jpeg")]})
    response = bob_client.get(f"/predictions/{Prediction.objects.get().pk}/thumbnail/")
    assert response.status_code == 200 and response["Content-Type"] == "image/jpeg"
    assert response["Cache-Control"] == "private, max-age=3600"


def test_missing_prediction_file_is_a_404(bob_client, fast_model):
    bob_client.post("/", {"images": [SimpleUploadedFile("a.jpg", image_bytes(), content_type="image/jpeg")]})
    prediction = Prediction.objects.get()
    prediction.image.storage.delete(prediction.image.name)
    assert bob_client.get(f"/predictions/{prediction.pk}/image/").status_code == 404


def test_dataset_image_download_uses_the_same_header_and_stays_immutable(alice_client, alice):
    dataset = Dataset.objects.create(name="Pets", created_by=alice)
    uploads.add_uploads(dataset, "cats", [SimpleUploadedFile(NAME, noise_image_bytes(1))], alice)
    image = DatasetImage.objects.get()
    response = alice_client.get(f"/datasets/images/{image.pk}/original/")
    assert response.status_code == 200
    assert rfc6266_name(response["Content-Disposition"]) == image.original_name
    assert response["Cache-Control"] == "private, max-age=86400, immutable"
    thumb = alice_client.get(f"/datasets/images/{image.pk}/thumbnail/")
    assert thumb["Cache-Control"] == "private, max-age=86400, immutable"


def test_download_names_lose_control_characters_and_keep_their_extension():
    assert download_name("a\r\nb\x00.jpg") == "ab.jpg"
    long = download_name("x" * 500 + ".jpeg")
    assert len(long) == 150 and long.endswith(".jpeg")
    assert download_name("../../etc/passwd") == "passwd"
