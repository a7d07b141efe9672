"""The Classify page: upload images, pick a model, see top-5 per image; bad files get their message."""

from __future__ import annotations

import re
from pathlib import Path

from django.core.files.uploadedfile import SimpleUploadedFile

from classifier.models import Prediction
from tests.helpers import image_bytes, noise_image_bytes

HTMX = {"HTTP_HX_REQUEST": "true"}


def upload(name: str, data: bytes, content_type: str = "image/jpeg") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type=content_type)


def test_classify_page_requires_login(client):
    response = client.get("/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_without_installed_weights_the_page_says_why_and_links_to_models(bob_client):
    response = bob_client.get("/")
    assert response.status_code == 200
    assert "No model can run yet" in response.text
    assert 'href="/models/"' in response.text


def test_page_offers_the_installed_models_with_the_default_selected(bob_client, fast_model):
    response = bob_client.get("/")
    assert 'name="images"' in response.text and "multiple" in response.text
    assert f'<option value="{fast_model}" selected>MobileNet 0.5 @128</option>' in response.text
    assert 'hx-post="/"' in response.text and 'enctype="multipart/form-data"' in response.text


def test_htmx_upload_returns_the_results_partial_with_top5_and_stores_predictions(bob_client, bob, fast_model):
    files = [upload("cat.jpg", image_bytes("JPEG", size=(300, 200))), upload("dog.png", noise_image_bytes(1))]
    response = bob_client.post("/", {"model": fast_model, "images": files}, **HTMX)
    assert response.status_code == 200
    html = response.text
    assert "<html" not in html  # a partial, swapped in place
    assert "2 images</strong> classified with <strong>MobileNet 0.5 @128" in html
    assert html.count('data-testid="result"') == 2
    assert html.count('class="guess"') == 10  # top-5 for each image

    rows = list(Prediction.objects.order_by("id"))
    assert [p.original_name for p in rows] == ["cat.jpg", "dog.png"]
    assert all(p.user == bob and p.model_key == fast_model and len(p.top) == 5 for p in rows)
    assert rows[0].batch_size == 2 and rows[0].inference_ms > 0
    assert (rows[0].width, rows[0].height, rows[0].image_format) == (300, 200, "JPEG")
    assert Path(rows[0].image.path).read_bytes().startswith(b"\xff\xd8")
    assert Path(rows[0].thumbnail.path).exists()


def test_form_without_javascript_renders_the_full_page_with_results(bob_client, fast_model):
    response = bob_client.post("/", {"images": [upload("a.jpg", image_bytes())]})
    assert response.status_code == 200
    assert "<html" in response.text and 'data-testid="result"' in response.text


def test_bad_files_get_their_own_message_while_the_rest_is_classified(bob_client, fast_model):
    files = [
        upload("good.jpg", image_bytes()),
        upload("notes.jpg", b"just some text, not a photo"),
        upload("empty.png", b"", "image/png"),
    ]
    response = bob_client.post("/", {"images": files}, **HTMX)
    html = response.text
    assert html.count('data-testid="result"') == 1
    assert html.count('data-testid="result-error"') == 2
    assert "This file is not an image TransferLab can read (JPEG, PNG, GIF, WebP, BMP or TIFF)." in html
    assert "The file is empty (0 bytes)." in html
    assert "<strong>2 files</strong> could not be classified" in html
    assert Prediction.objects.count() == 1


def test_file_over_the_size_limit_is_refused_without_reading_it(bob_client, fast_model, settings):
    settings.MAX_UPLOAD_BYTES = 1024 * 1024
    response = bob_client.post("/", {"images": [upload("big.jpg", b"\xff" * (1024 * 1024 + 10))]}, **HTMX)
    assert "The file is 1.0 MiB; the limit is 1 MiB. Resize or compress it and try again." in response.text
    assert Prediction.objects.count() == 0


def test_too_many_files_are_refused_with_the_limit(bob_client, fast_model, settings):
    settings.MAX_FILES_PER_REQUEST = 2
    files = [upload(f"{i}.jpg", image_bytes()) for i in range(3)]
    response = bob_client.post("/", {"images": files}, **HTMX)
    assert response.status_code == 200
    assert "You sent 3 files; send at most 2 at a time." in response.text
    assert Prediction.objects.count() == 0


def test_the_drop_zone_knows_the_limits_so_it_can_say_them_before_the_upload(bob_client, fast_model, settings):
    settings.MAX_FILES_PER_REQUEST = 5
    settings.MAX_UPLOAD_BYTES = 20 * 1024 * 1024
    html = bob_client.get("/").text
    assert 'data-max-files="5"' in html
    assert "Up to 5 files at once, 20 MiB each" in html


def test_quotes_in_a_file_name_are_shown_as_typed(bob_client, fast_model):
    # Browsers (and curl, and Python's requests) send a " in a file name as %22 in the form data.
    files = [upload("my %22best%22 cat.jpg", image_bytes())]
    html = bob_client.post("/", {"images": files}, **HTMX).text
    assert "my &quot;best&quot; cat.jpg" in html and "%22" not in html
    assert Prediction.objects.get().original_name == 'my "best" cat.jpg'
    history = bob_client.get("/history/").text
    assert "my &quot;best&quot; cat.jpg" in history and "%22" not in history


def test_no_file_chosen_asks_for_one(bob_client, fast_model):
    response = bob_client.post("/", {"model": fast_model}, **HTMX)
    assert "Choose at least one image to classify." in response.text


def test_unknown_model_is_refused_with_a_message(bob_client, fast_model):
    response = bob_client.post("/", {"model": "alexnet", "images": [upload("a.jpg", image_bytes())]}, **HTMX)
    assert "Unknown model &#x27;alexnet&#x27;. Models you can use here: mobilenet-0.5-128." in response.text


def test_model_without_weights_is_refused_with_a_message(bob_client, fast_model):
    response = bob_client.post("/", {"model": "resnet50", "images": [upload("a.jpg", image_bytes())]}, **HTMX)
    assert "ResNet50 cannot run yet: its weights are not installed on this server." in response.text


def test_a_variant_is_chosen_like_any_model(bob_client, install_weights):
    install_weights("mobilenet-0.25-128")
    response = bob_client.post("/", {"model": "mobilenet-0.25-128", "images": [upload("a.jpg", image_bytes())]})
    assert "classified with <strong>MobileNet 0.25 @128" in response.text
    assert Prediction.objects.get().model_key == "mobilenet-0.25-128"


def test_damaged_weights_give_a_message_not_a_500(bob_client, settings, fast_model):
    from classifier import zoo

    (Path(settings.WEIGHTS_DIR) / zoo.get(fast_model).top.filename).write_bytes(b"garbage, not HDF5")
    response = bob_client.post("/", {"images": [upload("a.jpg", image_bytes())]}, **HTMX)
    assert response.status_code == 200
    assert "could not be loaded or run on this server" in response.text
    assert Prediction.objects.count() == 0
    # The files, written while the model was trying to run, went with the failure.
    assert [p for p in Path(settings.MEDIA_ROOT).rglob("*") if p.is_file()] == []


def test_post_without_csrf_token_is_refused(client, bob, fast_model):
    from django.test import Client

    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.force_login(bob)
    response = csrf_client.post("/", {"images": [upload("a.jpg", image_bytes())]})
    assert response.status_code == 403
    assert "Reload the page and try again." in response.text
    assert Prediction.objects.count() == 0


def test_base_page_sends_the_csrf_token_with_every_htmx_request(bob_client, fast_model):
    assert 'hx-headers=\'{"x-csrftoken": "' in bob_client.get("/").text


def test_limits_are_said_in_numbers_never_by_their_setting_names(bob_client, fast_model, settings):
    settings.MAX_UPLOAD_BYTES = 1_048_576
    settings.MAX_IMAGE_PIXELS = 2_000_000
    settings.MAX_REQUEST_PIXELS = 2_700_000
    files = [
        upload("big.jpg", b"\xff" * 1_100_000),
        upload("wide.png", image_bytes("PNG", size=(2000, 1500)), "image/png"),
        upload("first.png", image_bytes("PNG", size=(1500, 1000)), "image/png"),
        upload("second.png", image_bytes("PNG", size=(1500, 1000)), "image/png"),
    ]
    html = bob_client.post("/", {"images": files}, **HTMX).text
    errors = re.findall(r'<p class="alert alert-error">(.*?)</p>', html, re.S)
    assert errors == [
        "The file is 1.0 MiB; the limit is 1 MiB. Resize or compress it and try again.",
        "The image is 2000 x 1500 pixels (3 megapixels); the limit is 2 megapixels. Downscale it and try again.",
        "The image is 1500 x 1000 pixels (1.5 megapixels) and only 1.2 megapixels are left in this request: the "
        "images of one request may hold at most 2.7 megapixels together; send this one again in another request.",
    ]
    assert not any(re.search(r"\b[A-Z]+_[A-Z_]+\b", error) for error in errors)
