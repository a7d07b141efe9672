"""End to end with Keras's real published weights (MobileNet alpha 0.25) and real photos.

Optional: the files live in the shared folder beside the project, never in it. Without that
folder these tests are skipped with the reason; with it they check that the real path works:
import through `manage.py import_weights` (published md5 checked), then classify real photos
through the web API and find each photo's true label in the top 5.
"""

from __future__ import annotations

import shutil
from contextlib import ExitStack
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from tests.helpers import SHARED

REAL_WEIGHTS = SHARED / "weights"
PHOTOS = SHARED / "photos" / "imagenet-dev"
WITH_HEAD = "mobilenet_2_5_128_tf.h5"
WITHOUT_HEAD = "mobilenet_2_5_224_tf_no_top.h5"

pytestmark = [
    pytest.mark.realweights,
    pytest.mark.skipif(
        not (REAL_WEIGHTS / WITH_HEAD).is_file() or not PHOTOS.is_dir(),
        reason=f"the real weights and photos are not here ({REAL_WEIGHTS}, {PHOTOS})",
    ),
]


def import_weights(*args: str) -> str:
    out = StringIO()
    call_command("import_weights", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def photos() -> list[tuple[str, Path]]:
    """(true label, photo) for each class folder, e.g. ("fire_engine", .../fire_engine/1733cbc68a2ae05d.png)."""
    return [
        (folder.name, path) for folder in sorted(PHOTOS.iterdir()) if folder.is_dir() for path in folder.glob("*.png")
    ]


def test_the_real_files_are_imported_with_their_published_md5(settings):
    out = import_weights(str(REAL_WEIGHTS / WITH_HEAD), str(REAL_WEIGHTS / WITHOUT_HEAD))
    assert (
        "Installed mobilenet_2_5_128_tf.h5 for MobileNet 0.25 @128 with its ImageNet head; its md5 matches the "
        "published file." in out
    )
    assert "Installed mobilenet_2_5_224_tf_no_top.h5 for MobileNet 0.25 @224 without its head" in out
    assert (settings.WEIGHTS_DIR / WITH_HEAD).read_bytes() == (REAL_WEIGHTS / WITH_HEAD).read_bytes()


def test_a_renamed_real_file_is_recognised_by_its_layers(tmp_path):
    renamed = tmp_path / "weights (1).h5"
    shutil.copyfile(REAL_WEIGHTS / WITH_HEAD, renamed)
    err = StringIO()
    with pytest.raises(CommandError):
        call_command("import_weights", str(renamed), stdout=StringIO(), stderr=err)
    assert "holds MobileNet 0.25 weights with its ImageNet head" in err.getvalue()
    assert "mobilenet-0.25-128, mobilenet-0.25-160, mobilenet-0.25-192, mobilenet-0.25-224" in err.getvalue()
    out = import_weights(str(renamed), "--model", "mobilenet-0.25-128")
    assert "its md5 matches the published file" in out


@pytest.mark.django_db
def test_real_photos_get_their_true_label_in_the_top_5_through_the_api(client, bob):
    import_weights(str(REAL_WEIGHTS / WITH_HEAD))
    client.force_login(bob)
    cases = photos()
    assert len(cases) == 6
    with ExitStack() as stack:
        handles = [stack.enter_context(open(path, "rb")) for _, path in cases]
        response = client.post("/api/v1/predict", {"images": handles, "model": "mobilenet-0.25-128", "top_k": "5"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["model"] == "mobilenet-0.25-128"
    by_name = {result["filename"]: result for result in body["results"]}
    for label, path in cases:
        guesses = [guess["label"] for guess in by_name[path.name]["predictions"]]
        assert len(guesses) == 5
        assert label in guesses, f"{path.name}: {label} not in {guesses}"


SIGNS = SHARED / "photos" / "signdigits5"


@pytest.mark.django_db
@pytest.mark.skipif(not SIGNS.is_dir() or not (REAL_WEIGHTS / WITHOUT_HEAD).is_file(), reason=f"no {SIGNS}")
def test_real_photos_train_through_the_commands_and_classify_through_the_api(client, bob, tmp_path, capsys):
    """Real MobileNet 0.25 weights, real sign-language photos: import_dataset, train --foreground, then the API."""
    import io
    import json
    import zipfile

    from training.models import Dataset

    archive = tmp_path / "signdigits5.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(p for p in SIGNS.rglob("*") if p.is_file()):
            zf.write(path, f"signdigits5/{path.parent.name}/{path.name}")
    import_weights(str(REAL_WEIGHTS / WITHOUT_HEAD))
    call_command("import_dataset", str(archive), "--name", "Sign digits", stdout=StringIO())
    dataset = Dataset.objects.get(name="Sign digits")
    dataset.test_percent = 20
    dataset.save(update_fields=["test_percent"])
    dataset.redraw_splits(seed=0)  # hold out a fifth of each label that training never sees

    out = StringIO()
    call_command("train", "--dataset", "Sign digits", "--base", "mobilenet-0.25-224", "--foreground", "--json",
                 stdout=out, stderr=StringIO())  # fmt: skip
    summary = json.loads(out.getvalue().strip().splitlines()[-1])
    assert summary["status"] == "succeeded", summary

    held_out = list(dataset.images.filter(split="test").select_related("label"))
    client.force_login(bob)
    right = 0
    for start in range(0, len(held_out), 32):
        batch = held_out[start : start + 32]
        files = [io.BytesIO(image.path.read_bytes()) for image in batch]
        for handle, image in zip(files, batch, strict=True):
            handle.name = image.original_name
        body = client.post("/api/v1/predict", {"images": files, "model": summary["model"], "top_k": "1"}).json()
        right += sum(r["predictions"][0]["label"] == i.label.name for r, i in zip(body["results"], batch, strict=True))
    accuracy = right / len(held_out)
    with capsys.disabled():
        print(f"\nsigndigits5, MobileNet 0.25 @224 (real weights), default settings: validation accuracy "
              f"{summary['val_accuracy']:.1%}, held-out accuracy through the API {accuracy:.1%} "
              f"({right}/{len(held_out)}), job {summary['seconds']:.1f} s")  # fmt: skip
    assert accuracy >= 0.8
