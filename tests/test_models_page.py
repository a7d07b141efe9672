"""The Models page, a model's page, and the administrator's upload and download actions."""

from __future__ import annotations

import io
import re
import shutil

import pytest
from django.urls import reverse

from classifier import catalog, inference, model_table, weights, zoo
from classifier.models import Prediction, WeightsDownload
from tests.helpers import make_zoo_weights

pytestmark = pytest.mark.django_db

FAST = "mobilenet-0.5-128"
MODELS = reverse("classifier:models")


def row_keys(html: str) -> list[str]:
    return re.findall(r'<tr id="model-([^"]+)"', html)


def row_html(html: str, key_slug: str) -> str:
    """A model's row, with the full-width row of install instructions under it when it has one."""
    start = html.index(f'<tr id="model-{key_slug}"')
    end = html.index("</tr>", start) + len("</tr>")
    if html[end:].lstrip().startswith(f'<tr id="install-{key_slug}"'):
        end = html.index("</tr>", end) + len("</tr>")
    return html[start:end]


def status_cell(row: str) -> str:
    return row.split('<td class="model-status">')[1].split("</td>")[0]


def training_cell(row: str) -> str:
    return row.split('<td class="model-training">')[1].split("</td>")[0]


# --- The table ---------------------------------------------------------------------------------
def test_the_page_needs_a_login(client):
    response = client.get(MODELS)
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_every_model_is_listed_with_the_guides_six_first(bob_client):
    response = bob_client.get(MODELS)
    assert response.status_code == 200
    html = response.content.decode()
    keys = row_keys(html)
    assert len(keys) == 80
    assert keys[:6] == ["mobilenetv2", "resnet50", "efficientnetb0", "efficientnetb7", "vgg16", "inceptionv3"]
    assert "80 models." in html
    assert html.count('title="One of the reference guide\'s six models">Guide</span>') == 6
    for label in (
        "Family",
        "Input",
        "Size (MiB)",
        "Params (M)",
        "Speed",
        "Top-1",
        "Top-5",
        "Measured",
        "Status",
        "Training",
    ):
        assert f">{label}</a>" in html


def test_a_row_shows_the_facts_and_unknown_numbers_as_a_dash(bob_client):
    html = bob_client.get(MODELS).content.decode()
    resnet = row_html(html, "resnet50")
    assert ">ResNet</td>" in resnet and ">98</td>" in resnet and ">25.64</td>" in resnet
    assert '74.9<div class="small muted">high</div>' in resnet and ">92.1</td>" in resnet
    assert 'medium<div class="small muted" title="Multiply-accumulates per image">3.9 G MACs' in resnet
    convnext = row_html(html, "convnexttiny")
    assert '<td class="num">—</td>' in convnext  # top-5 was never published
    assert "≈</span>109" in convnext  # size computed from the parameter count


def test_a_model_without_weights_says_which_file_where_to_get_it_and_how_to_install_it(bob_client):
    row = row_html(bob_client.get(MODELS).content.decode(), "mobilenetv2")
    assert "Weights missing" in row
    assert "<code>mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5</code>" in row
    assert (
        'href="https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/'
        'mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5"' in row
    )
    assert "python manage.py import_weights mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5" in row
    assert "ask an administrator" in row and "Download from Keras" not in row  # bob is no admin


def test_no_weights_at_all_is_explained_once_at_the_top(bob_client):
    html = bob_client.get(MODELS).content.decode()
    assert "No weights are installed yet." in html and "works without internet access" in html


def test_status_words_follow_the_engine_and_the_weights_folder(bob_client, install_weights, monkeypatch):
    install_weights(FAST)
    install_weights("mobilenet-0.75-128")
    inference.get_engine().get(FAST)
    states = {"mobilenet-0.75-128": None}
    real_state = inference.engine_state
    monkeypatch.setattr(
        inference, "engine_state", lambda key: "loading" if key == "resnet50" else real_state(key) or states.get(key)
    )
    html = bob_client.get(MODELS).content.decode()
    assert "No weights are installed yet." not in html
    assert '<span class="badge badge-ok">Ready</span>' in row_html(html, "mobilenet-05-128")
    assert '<span class="badge badge-ok">Installed</span>' in row_html(html, "mobilenet-075-128")
    assert '<span class="badge badge-info">Loading</span>' in row_html(html, "resnet50")
    assert '<span class="badge badge-warn">Weights missing</span>' in row_html(html, "vgg16")


def test_measured_latency_is_the_median_of_recent_engine_times(bob_client, bob):
    for ms in (10.0, 30.0, 12.0):
        Prediction.objects.create(
            user=bob, model_key=FAST, model_name="MobileNet 0.5 @128", image="x.png", thumbnail="t.png",
            original_name="x.png", image_format="PNG", width=1, height=1, top=[], inference_ms=ms,
        )  # fmt: skip
    html = bob_client.get(MODELS).content.decode()
    row = row_html(html, "mobilenet-05-128")
    assert "12 ms" in row and "3 images" in row
    assert '<span class="muted" title="Not run on this server yet">—</span>' in row_html(html, "resnet50")
    assert model_table.measured_latency()[FAST] == model_table.Latency(median_ms=12.0, runs=3)


# --- Filters and sorting ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("family=MobileNetV3", 6),
        ("family=MobileNetV2", 22),
        ("q=convnext", 5),
        ("q=mobilenet+0.25", 4),
        ("recommended=1", 6),
        ("speed=very+fast&family=MobileNet", 14),  # 1.0 at 192 and 224 count as "fast"
        ("accuracy=very+high&family=EfficientNet", 4),  # B4-B7: top-1 of 82% and more
        ("size=20&family=ResNet", 0),
        ("status=missing", 80),
        ("status=installed", 0),
        ("family=NoSuchFamily&speed=warp", 80),  # unknown values are ignored, not errors
    ],
)
def test_filters_narrow_the_table(bob_client, query, expected):
    html = bob_client.get(f"{MODELS}?{query}").content.decode()
    assert len(row_keys(html)) == expected


def test_status_filters_follow_installed_weights(bob_client, install_weights):
    install_weights(FAST)
    assert row_keys(bob_client.get(f"{MODELS}?status=installed").content.decode()) == ["mobilenet-05-128"]
    assert row_keys(bob_client.get(f"{MODELS}?status=ready").content.decode()) == []
    assert len(row_keys(bob_client.get(f"{MODELS}?status=missing").content.decode())) == 79


def test_a_loaded_model_still_counts_as_installed(bob_client, install_weights):
    from classifier.inference import get_engine

    install_weights(FAST)
    get_engine().get(FAST)  # warm in this process: its status is "ready"
    for status in ("installed", "ready"):
        assert row_keys(bob_client.get(f"{MODELS}?status={status}").content.decode()) == ["mobilenet-05-128"]


def test_a_no_head_file_alone_counts_as_installed_and_says_it_is_for_training(bob_client, install_weights):
    install_weights(FAST, include_top=False)
    html = bob_client.get(f"{MODELS}?status=installed").content.decode()
    assert row_keys(html) == ["mobilenet-05-128"]
    row = row_html(html, "mobilenet-05-128")
    assert '<span class="badge badge-info">Training only</span>' in status_cell(row)
    assert "Classify needs the file with the head" in status_cell(row)
    assert '<span class="badge badge-ok">Installed</span>' in training_cell(row)
    assert "No weights are installed yet." not in html
    assert "mobilenet-05-128" not in row_keys(bob_client.get(f"{MODELS}?status=missing").content.decode())


def test_the_training_column_shows_the_no_head_file_of_every_model(bob_client, install_weights):
    install_weights(FAST)
    html = bob_client.get(MODELS).content.decode()
    row = row_html(html, "mobilenet-05-128")
    assert '<span class="badge badge-ok">Installed</span>' in status_cell(row)
    assert "Not installed" in training_cell(row)
    assert "mobilenet_5_0_128_tf_no_top.h5" in row  # how to install the missing one
    install_weights(FAST, include_top=False)
    row = row_html(bob_client.get(MODELS).content.decode(), "mobilenet-05-128")
    assert '<span class="badge badge-ok">Installed</span>' in training_cell(row)
    assert 'id="install-mobilenet-05-128"' not in row  # nothing left to install


def test_a_no_head_file_installed_by_the_command_shows_on_the_models_pages(bob_client, weights_file):
    from django.core.management import call_command

    call_command("import_weights", str(weights_file(FAST, include_top=False)), stdout=io.StringIO())
    html = bob_client.get(f"{MODELS}?status=installed").content.decode()
    assert row_keys(html) == ["mobilenet-05-128"]
    detail = bob_client.get(reverse("classifier:model_detail", args=[FAST])).content.decode()
    header = detail.split('id="model-weights"')[1].split("</p>")[0]
    assert "Training only" in header and "Weights missing" not in header


def test_install_instructions_sit_in_a_full_width_row_under_the_model(bob_client):
    html = bob_client.get(MODELS).content.decode()
    row = row_html(html, "mobilenetv2")
    assert '<tr id="install-mobilenetv2" class="install-row" hidden>' in row
    assert f'<td colspan="{len(model_table.COLUMNS)}">' in row
    assert 'aria-controls="install-mobilenetv2"' in status_cell(row)
    assert 'href="/models/mobilenetv2/#model-weights"' in status_cell(row)  # without JavaScript: the model's page
    assert "storage.googleapis.com" not in status_cell(row)  # the narrow cell holds no URL or command


def test_an_installed_model_links_to_classify_with_it_preselected(bob_client, install_weights):
    install_weights(FAST)
    detail = bob_client.get(reverse("classifier:model_detail", args=[FAST])).content.decode()
    assert '<a class="button primary" href="/?model=mobilenet-0.5-128">Classify with this model</a>' in detail
    missing = bob_client.get(reverse("classifier:model_detail", args=["vgg16"])).content.decode()
    assert "/?model=vgg16" not in missing


def test_filters_matching_nothing_say_so_in_words(bob_client):
    html = bob_client.get(f"{MODELS}?q=transformer").content.decode()
    assert "0 of 80 models match." in html and "No model matches these filters." in html
    assert f'href="{MODELS}">Show all 80 models' in html


def test_sorting_by_a_column_orders_the_rows_and_marks_the_header(bob_client):
    html = bob_client.get(f"{MODELS}?sort=-top1").content.decode()
    keys = row_keys(html)
    assert keys[:2] == ["convnextxlarge", "convnextlarge"]
    assert 'aria-sort="descending"' in html
    # clicking the sorted header again reverses it, keeping the filters
    assert f'href="{MODELS}?sort=top1"' in html

    by_size = row_keys(bob_client.get(f"{MODELS}?sort=size&family=MobileNetV3").content.decode())
    sizes = [zoo.get(key.replace("-075", "-0.75")).size_mb for key in by_size]
    assert len(by_size) == 6 and sizes == sorted(sizes)
    speed = row_keys(bob_client.get(f"{MODELS}?sort=speed").content.decode())
    assert speed[0] == "mobilenetv2-035-96" and speed[-1] == "convnextxlarge"  # 12 M and 61 G MACs


def test_rows_without_a_value_go_last_whatever_the_direction(bob_client):
    for sort in ("top5", "-top5"):
        keys = row_keys(bob_client.get(f"{MODELS}?sort={sort}").content.decode())
        assert set(keys[-11:]) == {
            "convnexttiny", "convnextsmall", "convnextbase", "convnextlarge", "convnextxlarge",
            "mobilenetv3large", "mobilenetv3large-075", "mobilenetv3large-minimalistic",
            "mobilenetv3small", "mobilenetv3small-075", "mobilenetv3small-minimalistic",
        }  # fmt: skip


def test_sort_links_keep_the_filters_and_a_bad_sort_is_ignored(bob_client):
    html = bob_client.get(f"{MODELS}?family=VGG&sort=nonsense").content.decode()
    assert row_keys(html) == ["vgg16", "vgg19"]
    assert f'href="{MODELS}?family=VGG&amp;sort=size"' in html


def test_htmx_requests_get_only_the_table_and_the_new_sort(bob_client):
    response = bob_client.get(f"{MODELS}?family=VGG&sort=-size", HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert response.status_code == 200 and "<html" not in html
    assert html.lstrip().startswith('<div id="models-table"')
    assert '<input type="hidden" name="sort" id="models-sort" value="-size" hx-swap-oob="true">' in html
    assert row_keys(html) == ["vgg19", "vgg16"]
    assert "HX-Request" in response["Vary"]


def test_the_full_page_works_without_javascript(bob_client):
    html = bob_client.get(MODELS).content.decode()
    assert f'<form class="toolbar models-filters" method="get" action="{MODELS}"' in html
    assert '<button type="submit" class="button">Apply</button>' in html
    assert "hx-swap-oob" not in html


def test_an_unreadable_weights_folder_is_an_error_in_words_not_a_500(bob_client, monkeypatch):
    def unreadable():
        raise model_table.WeightsFolderError(
            "TransferLab cannot read its weights folder /srv/weights (Permission denied)."
        )

    monkeypatch.setattr(model_table, "installed_files", unreadable)
    response = bob_client.get(MODELS)
    html = response.content.decode()
    assert response.status_code == 200
    assert 'class="alert alert-error" role="alert">TransferLab cannot read its weights folder' in html
    assert "The model list cannot be shown right now." in html
    detail = bob_client.get(reverse("classifier:model_detail", args=["resnet50"])).content.decode()
    assert "cannot read its weights folder" in detail


# --- Downloads ---------------------------------------------------------------------------------
def download_url(key: str) -> str:
    return reverse("classifier:download_weights", args=[key])


def test_only_administrators_may_ask_for_a_download(bob_client):
    assert bob_client.post(download_url("mobilenetv2")).status_code == 403
    assert not WeightsDownload.objects.exists()


def test_a_download_needs_a_post(staff_client):
    assert staff_client.get(download_url("mobilenetv2")).status_code == 405


def test_an_offline_download_shows_its_failure_on_the_page(staff_client, offline, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(download_url("mobilenetv2"), {"head": "top", "next": f"{MODELS}?family=VGG"})
    assert response.status_code == 302 and response["Location"] == f"{MODELS}?family=VGG"
    html = staff_client.get(MODELS).content.decode()
    row = row_html(html, "mobilenetv2")
    assert "Download failed" in row and 'href="/models/mobilenetv2/">Why?</a>' in row
    assert "python manage.py import_weights" in row
    detail = staff_client.get(reverse("classifier:model_detail", args=["mobilenetv2"])).content.decode()
    assert "Could not download mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5" in detail
    assert "&lt;urlopen error timed out&gt;" in detail and "model-download-error" in detail
    assert "hx-trigger" not in html.split('id="models-table"')[1].split(">")[0]  # nothing left to poll


def test_a_queued_download_is_shown_and_polled_until_it_ends(staff_client, staff):
    WeightsDownload.objects.create(model_key="resnet50", requested_by=staff)
    html = staff_client.get(MODELS).content.decode()
    table_tag = html.split('<div id="models-table"')[1].split(">")[0]
    assert 'hx-trigger="every 3s"' in table_tag
    row = row_html(html, "resnet50")
    assert '<span class="badge badge-info">Downloading</span>' in row and "waiting for the background worker" in row
    WeightsDownload.objects.update(status=WeightsDownload.Status.FAILED, message="Could not download it.")
    html = staff_client.get(MODELS, HTTP_HX_REQUEST="true").content.decode()
    assert "hx-trigger" not in html.split(">")[0]


def test_a_second_click_does_not_queue_a_second_download(staff_client, monkeypatch):
    from classifier import tasks

    monkeypatch.setattr(tasks, "download_weights", lambda pk: None)
    staff_client.post(download_url("resnet50"))
    response = staff_client.post(download_url("resnet50"), follow=True)
    assert "is already being downloaded" in response.content.decode()
    assert WeightsDownload.objects.count() == 1


def test_a_successful_download_installs_the_file(
    staff_client, weights_file, monkeypatch, django_capture_on_commit_callbacks
):
    def fake_fetch(url, filename, file_hash, target):
        path = target / filename
        shutil.copyfile(weights_file(FAST), path)
        return path

    monkeypatch.setattr(weights, "_resolve_host", lambda url, timeout: None)
    monkeypatch.setattr(weights, "_fetch", fake_fetch)
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(download_url(FAST))
    assert response.status_code == 302
    assert catalog.find(FAST).available
    html = staff_client.get(response["Location"]).content.decode()
    row = row_html(html, "mobilenet-05-128")
    assert '<span class="badge badge-ok">Installed</span>' in row and "Downloaded" in row
    assert '<a href="/?model=mobilenet-0.5-128">Classify</a>' in row
    assert WeightsDownload.objects.get().message.startswith("Installed mobilenet_5_0_128_tf.h5 for MobileNet 0.5 @128")


def test_an_unknown_model_is_a_404(staff_client):
    assert staff_client.post(download_url("resnet9000")).status_code == 404
    assert staff_client.get(reverse("classifier:model_detail", args=["resnet9000"])).status_code == 404


def test_an_outside_next_address_is_not_followed(staff_client, monkeypatch):
    from classifier import tasks

    monkeypatch.setattr(tasks, "download_weights", lambda pk: None)
    response = staff_client.post(download_url("resnet50"), {"next": "https://evil.example/"})
    assert response["Location"] == MODELS


# --- Upload ------------------------------------------------------------------------------------
def upload(client, path, **data):
    with open(path, "rb") as f:
        return client.post(reverse("classifier:import_weights"), {"file": f, **data}, follow=True)


def test_administrators_see_the_upload_form_and_others_do_not(client, staff, bob):
    client.force_login(staff)
    html = client.get(MODELS).content.decode()
    assert 'action="/models/import/"' in html and "Download from Keras" in html
    client.force_login(bob)
    html = client.get(MODELS).content.decode()
    assert 'action="/models/import/"' not in html and "Download from Keras" not in html


def test_only_administrators_may_upload(bob_client, weights_file, settings):
    response = upload(bob_client, weights_file(FAST))
    assert response.status_code == 403
    assert not (settings.WEIGHTS_DIR / "mobilenet_5_0_128_tf.h5").exists()


def test_an_uploaded_file_is_checked_installed_and_the_row_changes(staff_client, weights_file, settings):
    response = upload(staff_client, weights_file(FAST))
    html = response.content.decode()
    assert "Installed mobilenet_5_0_128_tf.h5 for MobileNet 0.5 @128 with its ImageNet head" in html
    assert '<span class="badge badge-ok">Installed</span>' in row_html(html, "mobilenet-05-128")
    assert (settings.WEIGHTS_DIR / "mobilenet_5_0_128_tf.h5").is_file()
    message = html.split('<div class="messages"')[1].split("</div>")[0]
    assert '<a href="/?model=mobilenet-0.5-128">Classify with MobileNet 0.5 @128</a>' in message
    assert '<a href="/models/mobilenet-0.5-128/">See the model</a>' in message


def test_an_uploaded_file_without_head_links_to_the_model_and_says_what_classify_needs(staff_client, weights_file):
    html = upload(staff_client, weights_file(FAST, include_top=False)).content.decode()
    message = html.split('<div class="messages"')[1].split("</div>")[0]
    assert "Installed mobilenet_5_0_128_tf_no_top.h5 for MobileNet 0.5 @128 without its head" in message
    assert "Training can use it now; Classify needs the file with the head." in message
    assert "/?model=" not in message


def test_an_upload_replacing_weights_makes_the_warm_model_reload(staff_client, install_weights, tmp_path):
    install_weights(FAST)
    inference.get_engine().get(FAST)
    html = upload(staff_client, make_zoo_weights(FAST, tmp_path, seed=1)).content.decode()
    assert "Replaced mobilenet_5_0_128_tf.h5" in html
    assert inference.engine_state(FAST) is None


def test_uploading_the_installed_file_again_says_nothing_changed(staff_client, install_weights, weights_file):
    install_weights(FAST)
    html = upload(staff_client, weights_file(FAST)).content.decode()
    assert "mobilenet_5_0_128_tf.h5 was already installed for MobileNet 0.5 @128 with its ImageNet head" in html
    assert "Replaced" not in html


def test_a_renamed_upload_needs_the_model_choice(staff_client, weights_file, tmp_path, settings):
    renamed = tmp_path / "download.h5"
    shutil.copyfile(weights_file(FAST, include_top=False), renamed)
    html = upload(staff_client, renamed).content.decode()
    assert "download.h5 was not installed. It holds MobileNet 0.5 weights without its head." in html
    assert "several input sizes" in html and html.count("download.h5") == 1
    html = upload(staff_client, renamed, model="mobilenet-0.5-160", head="notop").content.decode()
    assert "Installed mobilenet_5_0_160_tf_no_top.h5" in html


def test_a_bad_upload_is_refused_in_words_and_nothing_is_installed(staff_client, tmp_path, settings):
    bad = tmp_path / "mobilenet_5_0_128_tf.h5"
    bad.write_bytes(b"GIF89a not weights")
    response = upload(staff_client, bad)
    html = response.content.decode()
    assert response.status_code == 400
    assert "mobilenet_5_0_128_tf.h5 was not installed. It is not an HDF5 file" in html
    assert html.count("It is not an HDF5 file") == 1  # said once, not again under the form
    assert not settings.WEIGHTS_DIR.exists() or not any(settings.WEIGHTS_DIR.iterdir())


def test_an_upload_without_a_file_asks_for_one(staff_client):
    response = staff_client.post(reverse("classifier:import_weights"), {}, follow=True)
    assert "Choose a weights file (.h5) to install." in response.content.decode()


# --- A model's page ------------------------------------------------------------------------------
def test_a_models_page_shows_both_weights_files_and_their_status(bob_client, install_weights):
    install_weights("mobilenet-0.25-128", include_top=False)
    html = bob_client.get(reverse("classifier:model_detail", args=["mobilenet-0.25-128"])).content.decode()
    assert "<h1>MobileNet 0.25 @128" in html
    assert "keras.applications.MobileNet(alpha=0.25)" in html
    assert "keras.applications.mobilenet.preprocess_input" in html
    assert "mobilenet_2_5_128_tf.h5" in html and "mobilenet_2_5_128_tf_no_top.h5" in html
    assert 'Published md5: <span class="mono">8ef07e656c29ed236576fed9fdd37ce8</span>' in html
    assert "Keras publishes no hash for this file" in html  # the no-top file at 128
    assert re.search(r"<p class=\"small\">[\d.]+ MiB on disk\.</p>", html)  # sizes in MiB, as measured
    assert '<span class="badge badge-ok">Installed</span>' in html
    assert '<span class="badge badge-warn">Missing</span>' in html
    assert "Weights missing" not in html  # the file without head is there: the model can be trained
    assert "top-1 41.5%, top-5 66.3%" in html and "TF-slim" in html


def test_a_models_page_accepts_aliases_and_offers_the_upload_preselected(staff_client):
    html = staff_client.get(reverse("classifier:model_detail", args=["MobileNetV2"])).content.decode()
    assert "<h1>MobileNetV2" in html
    assert '<option value="mobilenetv2" selected>' in html


def test_a_models_page_refreshes_its_weights_while_downloading(bob_client):
    WeightsDownload.objects.create(model_key="vgg16", include_top=False)
    url = reverse("classifier:model_detail", args=["vgg16"])
    html = bob_client.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert html.lstrip().startswith('<section class="card model-weights" id="model-weights" hx-get="/models/vgg16/"')
    assert 'hx-trigger="every 3s"' in html and "Downloading from Keras" not in html and "Queued" in html
