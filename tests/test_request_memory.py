"""Memory of one request with big pictures: decoded one at a time, model-sized, and given back.

Each measurement runs in a fresh Python process (`python -m tests.test_request_memory MODE PNG_DIR`)
so that the resident size is not polluted by other tests: the child sets up Django on its own data
folder, warms the path with small pictures, then measures the big request with the kernel's peak
counter (VmHWM, reset through /proc/self/clear_refs) and VmRSS after it. It prints JSON.

The pictures are 7000 x 7000 PNGs (49 megapixels, under MAX_IMAGE_PIXELS): a few hundred kB on
disk, 196 MB each once Pillow holds them in RGB. They are written by another child process so that
their making leaves nothing behind in the measured one.
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from tests.servers import process_environment

SIDE = 7000
API_FILES = 16
DATASET_FILES = 4
MB = 1024 * 1024
MAX_PEAK_ADDED = 300 * MB
MAX_RETAINED = 50 * MB
FAST_MODEL = "mobilenet-0.5-128"
ROOT = Path(__file__).resolve().parent.parent
URL = "/api/v1/predict"


# --- The parent: pytest ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_pngs(tmp_path_factory) -> Path:
    """16 distinct 7000 x 7000 PNGs, written once for the module by a child process."""
    folder = tmp_path_factory.mktemp("big-pngs")
    _child("make", folder, tmp_path_factory.mktemp("unused"))
    return folder


def _child(mode: str, pngs: Path, data_dir: Path) -> dict:
    env = process_environment(data_dir, DJANGO_SETTINGS_MODULE="webapp.settings", TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [sys.executable, "-m", "tests.test_request_memory", mode, str(pngs)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _assert_flat(report: dict) -> None:
    added, retained = report["peak_added"], report["retained"]
    assert added < MAX_PEAK_ADDED, f"the request added {added / MB:.0f} MB at its peak: {report}"
    assert retained < MAX_RETAINED, f"the process kept {retained / MB:.0f} MB after the request: {report}"


needs_proc = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc/self/status (Linux)")


@needs_proc
def test_api_request_of_sixteen_7000px_pngs_stays_small_and_gives_memory_back(big_pngs, tmp_path):
    report = _child("api", big_pngs, tmp_path)
    _assert_flat(report)
    # 400 megapixels per request by default: 8 pictures of 49 MP fit, the other 8 are refused one by one.
    assert report["status"] == 200
    assert report["classified"] == 8 and report["sizes"] == [[SIDE, SIDE]]
    assert report["refused"] == 8
    assert report["error"].endswith(
        "the images of one request may hold at most 400 megapixels together; send this one again in another request."
    )


@needs_proc
def test_dataset_upload_of_7000px_pngs_decodes_one_at_a_time(big_pngs, tmp_path):
    report = _child("upload", big_pngs, tmp_path)
    assert report["added"] == DATASET_FILES and report["sizes"] == [[SIDE, SIDE]]
    _assert_flat(report)


@needs_proc
def test_zip_import_of_7000px_pngs_decodes_one_at_a_time(big_pngs, tmp_path):
    report = _child("import", big_pngs, tmp_path)
    assert report["added"] == DATASET_FILES and report["sizes"] == [[SIDE, SIDE]]
    _assert_flat(report)


# --- The per-request pixel cap, quickly (small pictures, a small cap) --------------------------


@pytest.fixture
def api(bob) -> Client:
    from classifier.models import ApiToken

    return Client(HTTP_AUTHORIZATION=f"Bearer {ApiToken.issue(bob, 'memory')[1]}")


def _png(name: str, size: tuple[int, int]) -> SimpleUploadedFile:
    from tests.helpers import image_bytes

    return SimpleUploadedFile(name, image_bytes("PNG", size=size), content_type="image/png")


def test_files_beyond_the_request_pixel_cap_get_their_own_error_and_the_others_are_classified(
    api, fast_model, settings
):
    from classifier.models import Prediction

    settings.MAX_REQUEST_PIXELS = 10_000
    files = [_png("a.png", (64, 64)), _png("b.png", (64, 64)), _png("c.png", (64, 64)), _png("d.png", (10, 10))]
    body = api.post(URL, {"images": files}).json()
    a, b, c, d = body["results"]
    assert "predictions" in a and "predictions" in b and "predictions" in d  # d still fits: 8192 + 100 pixels
    assert c == {
        "filename": "c.png",
        "error": "The image is 64 x 64 pixels (0 megapixels) and only 0 megapixels are left in this request: the "
        "images of one request may hold at most 0 megapixels together; send this one again in another request.",
    }
    assert Prediction.objects.count() == 3


def test_a_single_image_above_the_request_cap_is_still_classified(api, fast_model, settings):
    settings.MAX_REQUEST_PIXELS = 1000  # the per-image limit (MAX_IMAGE_PIXELS) is what bounds one file
    [result] = api.post(URL, {"images": [_png("big.png", (64, 64))]}).json()["results"]
    assert (result["width"], result["height"]) == (64, 64) and "predictions" in result


# --- The children ------------------------------------------------------------------------------


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} is not in /proc/self/status")


class _Peak:
    """The process's peak resident size over a stretch of code.

    The kernel's own high-water mark (VmHWM, reset through clear_refs) sees every page; where that
    reset is not allowed, a thread samples VmRSS every 10 ms instead.
    """

    def __enter__(self) -> _Peak:
        import gc
        import threading

        gc.collect()
        self.before = _status_kb("VmRSS")
        self.sampled = self.before
        self.done = threading.Event()
        self.sampler = None
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS
        except OSError:
            self.sampler = threading.Thread(target=self._sample, daemon=True)
            self.sampler.start()
        return self

    def _sample(self) -> None:
        while not self.done.wait(0.01):
            self.sampled = max(self.sampled, _status_kb("VmRSS"))

    def __exit__(self, *exc) -> None:
        import gc

        self.done.set()
        if self.sampler is not None:
            self.sampler.join()
        self.peak = self.sampled if self.sampler is not None else _status_kb("VmHWM")
        gc.collect()
        self.after = _status_kb("VmRSS")

    def report(self, **extra) -> dict:
        return {
            "before": self.before,
            "peak_added": self.peak - self.before,
            "retained": self.after - self.before,
            **extra,
        }


def _make_pngs(folder: Path) -> None:
    """One picture with a grid and a noise patch (a few hundred kB), saved under 16 distinct contents.

    Encoding 16 such PNGs takes 12 s; a text chunk per copy makes each file (and its hash) distinct.
    """
    import numpy as np
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (SIDE, SIDE), (30, 120, 200))
    draw = ImageDraw.Draw(image)
    for x in range(0, SIDE, 97):
        draw.line([(x, 0), (x, SIDE - 1)], fill=(200, 40, 40), width=3)
    for y in range(0, SIDE, 89):
        draw.line([(0, y), (SIDE - 1, y)], fill=(40, 200, 40), width=2)
    noise = np.random.default_rng(7).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    image.paste(Image.fromarray(noise), (500, 700))
    out = io.BytesIO()
    image.save(out, format="PNG")
    data = out.getvalue()
    iend = data.rindex(b"IEND") - 4  # the chunk's length field
    for i in range(API_FILES):
        text = b"Comment\0copy %d" % i
        chunk = struct.pack(">I", len(text)) + b"tEXt" + text + struct.pack(">I", zlib.crc32(b"tEXt" + text))
        (folder / f"big-{i:02d}.png").write_bytes(data[:iend] + chunk + data[iend:])


def _small_png(seed: int) -> bytes:
    from tests.helpers import noise_image_bytes

    return noise_image_bytes(seed, size=(300, 200))


def _setup_django():
    from django.core.management import call_command
    from django.test.utils import setup_test_environment

    setup_test_environment()  # lets the test client's "testserver" host in
    call_command("migrate", verbosity=0)
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user("memory", "memory@example.org", "memory-password")


def _measure_api(pngs: Path) -> dict:
    from django.conf import settings
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.test import Client

    from classifier.models import ApiToken
    from tests.helpers import make_zoo_weights

    user = _setup_django()
    make_zoo_weights(FAST_MODEL, settings.WEIGHTS_DIR)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {ApiToken.issue(user, 'memory')[1]}")

    def post(files: list[tuple[str, bytes]]):
        uploads = [SimpleUploadedFile(name, data, content_type="image/png") for name, data in files]
        return client.post(URL, {"images": uploads, "model": FAST_MODEL})

    warm = post([(f"small-{i}.png", _small_png(i)) for i in range(API_FILES)])
    assert warm.status_code == 200, warm.content
    big = [(path.name, path.read_bytes()) for path in sorted(pngs.glob("big-*.png"))]
    with _Peak() as peak:
        status, body = _in_thread(lambda: _status_and_json(post(big)))
    results = body["results"]
    good = [r for r in results if "error" not in r]
    bad = [r for r in results if "error" in r]
    return peak.report(
        status=status,
        classified=len(good),
        sizes=sorted({(r["width"], r["height"]) for r in good}),
        refused=len(bad),
        error=bad[0]["error"] if bad else None,
    )


def _status_and_json(response) -> tuple[int, dict]:
    return response.status_code, response.json()


def _in_thread(work):
    """Run `work` in a new thread, as a threaded web server or worker does (its own malloc arena)."""
    import threading

    result = []
    thread = threading.Thread(target=lambda: result.append(work()))
    thread.start()
    thread.join()
    return result[0]


def _new_dataset(user):
    from training.models import Dataset

    return Dataset.objects.create(name="memory", created_by=user)


def _measure_upload(pngs: Path) -> dict:
    from django.core.files.uploadedfile import SimpleUploadedFile

    from training.uploads import add_uploads

    dataset = _new_dataset(_setup_django())

    def upload(files: list[tuple[str, bytes]]) -> dict:
        uploads = [SimpleUploadedFile(name, data, content_type="image/png") for name, data in files]
        return add_uploads(dataset, "pictures", uploads, None)

    upload([(f"small-{i}.png", _small_png(i)) for i in range(DATASET_FILES)])
    big = [(path.name, path.read_bytes()) for path in sorted(pngs.glob("big-*.png"))[:DATASET_FILES]]
    with _Peak() as peak:
        _in_thread(lambda: upload(big))
    return peak.report(**_added_images(dataset))


def _measure_import(pngs: Path) -> dict:
    import zipfile

    from training import archives, storage
    from training.imports import image_store, zip_limits

    dataset = _new_dataset(_setup_django())
    folder = pngs.parent

    def import_zip(name: str, files: list[tuple[str, bytes]]) -> archives.ImportResult:
        path = folder / name
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
            for member, data in files:
                zf.writestr(f"pictures/{member}", data)
        journal = storage.Journal(dataset.folder, name)
        try:
            return archives.import_zip(
                path, store=image_store(dataset, journal), known=set(), existing_labels={}, limits=zip_limits()
            )
        finally:
            journal.forget()
            path.unlink()

    import_zip("warm.zip", [(f"small-{i}.png", _small_png(i)) for i in range(DATASET_FILES)])
    big = [(path.name, path.read_bytes()) for path in sorted(pngs.glob("big-*.png"))[:DATASET_FILES]]
    with _Peak() as peak:
        result = _in_thread(lambda: import_zip("big.zip", big))
        added = [(a.image.width, a.image.height) for a in result.added]
        del result
    return peak.report(added=len(added), sizes=sorted(set(added)))


def _added_images(dataset) -> dict:
    sizes = list(dataset.images.filter(width=SIDE).values_list("width", "height"))
    return {"added": len(sizes), "sizes": sorted(set(sizes))}


def main(mode: str, pngs: Path) -> None:
    if mode == "make":
        _make_pngs(pngs)
        print(json.dumps({"made": API_FILES}))
        return
    import django

    django.setup()
    measure = {"api": _measure_api, "upload": _measure_upload, "import": _measure_import}[mode]
    print(json.dumps(measure(pngs)))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
