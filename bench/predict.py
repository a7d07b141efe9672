"""Inference benchmark: the engine as the product runs it (LiteRT) against TensorFlow, and the HTTP path.

    .venv/bin/python bench/predict.py [--model mobilenetv2] [--json PATH] [--check]

Measured in one run, on generated weights installed through the real import path (compute does
not depend on the weight values; no download), after the conversion the worker does
(`classifier.runtimes.convert`: TFLite float32, checked against Keras):

- engine: `Engine.predict` with the checked LiteRT file, as a web process serves the model;
- bare: a `tf.function` around `model(x, training=False)`, what the engine called before LiteRT;
- lite: the LiteRT interpreter alone (2 threads) on a preprocessed array; int8: a full-int8
  conversion (float input and output kept) calibrated on generated photo-like pictures, with its
  top-1 agreement against float32 on other, held-out ones;
- engine_tensorflow: the engine with LiteRT off (INFERENCE_RUNTIME=tensorflow);
- http: POST /api/v1/predict with one 300 px JPEG and an API token, against waitress started as
  `manage.py serve` starts it, with INFERENCE_RUNTIME=litert and the model converted before the
  server starts (GET /api/v1/models must say "litert"). `http_overhead_ms` is what the request
  path adds around the model: http p50 minus the engine's p50 timed in the same loop.

Single-image latencies are timed interleaved, one call of each path per round in a shuffled order,
so all see the same machine load: the model paths in one loop, the requests with the engine alone
in another (a call right after a TensorFlow call runs slower here, and no TensorFlow runs in a
LiteRT request). Batch-of-16 throughput the same way. Also: `model.predict` and the naive request
path (build + predict per request), the float32 conversion time, and the resident memory one warm
model adds to a process, for both runtimes. Prints a table; `--json PATH` writes one flat JSON
object (the figures recorded in docs/PERFORMANCE.md); `--check` exits 1 when a target is missed.
Exits 2 on error.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from webapp.tensorflow_logs import quiet_tensorflow  # noqa: E402

quiet_tensorflow()  # before anything loads TensorFlow: no C++ start-up notes among the figures

from bench.lib.figures import percentile, print_table, write_json  # noqa: E402
from bench.lib.machine import cpu_model, load_average  # noqa: E402

HTTP_SIDE = 300  # the JPEG posted to the API: a small photo, larger than the model's input
LITE_THREADS = 2


def make_weights(key: str, folder: Path) -> Path:
    """Generated weights for a registry entry, installed through classifier.weights like a real file."""
    from classifier import weights
    from tests.helpers import make_zoo_weights

    staging = folder / "staging"
    source = make_zoo_weights(key, staging)
    installed = weights.import_file(source, folder / "weights")
    return installed.path


def sample_jpeg(seed: int = 0, size: int = 224) -> bytes:
    """Random noise as a JPEG: the worst case for the decoder (bench/load.py posts these)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(out, format="JPEG", quality=90)
    return out.getvalue()


def photo_like(seed: int, size: int) -> np.ndarray:
    """A smooth random picture with fine detail (upscaled noise): compresses and quantizes like a photo."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)
    detail = rng.integers(-12, 13, size=(size, size, 3))
    return np.clip(np.asarray(image, dtype=np.int16) + detail, 0, 255).astype(np.uint8)


def photo_jpeg(seed: int, size: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(photo_like(seed, size)).save(out, format="JPEG", quality=88)
    return out.getvalue()


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return times


def interleaved(paths: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Milliseconds per call of each path, one call of each per round: all see the same machine load.

    The order changes every round (seeded): a path timed right after a LiteRT or TensorFlow call
    shares the cores with that call's worker threads while they spin down, and no path should
    always be the one that pays for it.
    """
    rng = random.Random(0)
    times: dict[str, list[float]] = {name: [] for name in paths}
    order = list(paths)
    for _ in range(rounds):
        rng.shuffle(order)
        for name in order:
            times[name] += timed(paths[name], 1)
    return times


def setup_django(data_dir: Path) -> None:
    """Django settings for this data folder, with LiteRT on, as the web process and the worker run."""
    os.environ["DATA_DIR"] = str(data_dir)
    os.environ["DJANGO_SETTINGS_MODULE"] = "webapp.settings"
    os.environ["INFERENCE_RUNTIME"] = "litert"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()


def convert_as_worker(key: str, weights_path: Path) -> tuple[float, float, Path]:
    """The worker's conversion of the installed file; returns (convert_s, convert_and_check_s, file)."""
    from classifier import runtimes, zoo

    entry = zoo.get(key)
    started = time.perf_counter()
    verdict = runtimes.convert(key, weights_path, entry.input_size, lambda: entry.build(weights_path), entry.preprocess)
    total = time.perf_counter() - started
    if verdict is None or not verdict.ok:
        raise RuntimeError(f"the LiteRT conversion was refused: {verdict}")
    return verdict.convert_seconds, total, runtimes.converted_path(weights_path)


def convert_int8(model, calibration: np.ndarray) -> bytes:
    """Full-int8 TFLite (training/exporting.py's settings), float32 input and output kept.

    `calibration` is preprocessed float32 input: the zoo's Keras models take preprocessed input.
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[None]] for x in calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return converter.convert()


# -- the web server --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def multipart(fields: dict[str, str], files: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = io.BytesIO()
    for name, value in fields.items():
        body.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, filename, data in files:
        body.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n".encode()
        )
        body.write(data + b"\r\n")
    body.write(f"--{boundary}--\r\n".encode())
    return body.getvalue(), f"multipart/form-data; boundary={boundary}"


@contextlib.contextmanager
def web_server(key: str, data_dir: Path, jpeg: bytes) -> Iterator[Callable[[], None]]:
    """waitress as `manage.py serve` starts it, LiteRT on; yields a function that posts `jpeg` once.

    The model's LiteRT file is already in the data folder, so the first request loads LiteRT;
    GET /api/v1/models must say so, or the bench stops rather than time TensorFlow.
    """
    from webapp.management.commands.serve import web_server_command

    env = {**os.environ, "DATA_DIR": str(data_dir), "DEBUG": "False", "INFERENCE_RUNTIME": "litert"}
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], env=env, check=True, cwd=ROOT)
    token = subprocess.run(
        [*manage, "shell", "-c", (
            "from django.contrib.auth.models import User; from classifier.models import ApiToken; "
            "u = User.objects.create_user('bench'); print(ApiToken.issue(u, 'bench')[1])"
        )],
        env=env, check=True, cwd=ROOT, capture_output=True, text=True,
    ).stdout.strip().splitlines()[-1]  # fmt: skip
    port = free_port()
    server = subprocess.Popen(
        web_server_command(f"127.0.0.1:{port}", 4), env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}/api/v1"
        auth = {"Authorization": f"Bearer {token}"}
        body, content_type = multipart({"model": key}, [("images", "photo.jpg", jpeg)])
        headers = {**auth, "Content-Type": content_type}

        def post() -> None:
            request = urllib.request.Request(f"{base}/predict", data=body, headers=headers, method="POST")
            with urllib.request.urlopen(request, timeout=120) as response:
                assert response.status == 200, response.status
                json.loads(response.read())

        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(urllib.request.Request(f"{base}/models", headers=auth)) as response:
                    listed = {m["key"]: m for m in json.loads(response.read())["models"]}
                break
            except (ConnectionError, urllib.error.URLError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        runtime = listed.get(key, {}).get("runtime")
        if runtime != "litert":
            raise RuntimeError(f"the server would serve {key} with {runtime!r}, not LiteRT: {listed.get(key)}")
        for _ in range(5):
            post()  # the first request loads and warms the model
        yield post
    finally:
        server.send_signal(2)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


# -- measurements ----------------------------------------------------------------------------


def measure(key: str, weights_path: Path, lite_path: Path, post: Callable[[], None], args) -> dict:
    """Every in-process figure, and the HTTP latency interleaved with them."""
    import tensorflow as tf
    from PIL import Image

    from classifier import imaging, runtimes, zoo
    from classifier.engine import Engine, ModelSpec
    from classifier.lite import LiteModel

    entry = zoo.get(key)
    size = entry.input_size
    labels = [str(i) for i in range(1000)]
    spec = ModelSpec(key, size, labels, lambda: entry.build(weights_path), entry.preprocess, weights_path)
    figures: dict = {}

    # The product's engine: LiteRT from the worker's checked file, the cores this process may use.
    started = time.perf_counter()
    engine = Engine(lambda k: spec, lite=lambda s: runtimes.lite_content(s.weights_path), cores=runtimes.cpu_count())
    engine.get(key)  # what a first request waits for
    figures["load_s"] = time.perf_counter() - started
    if engine.runtime(key) != "litert":
        raise RuntimeError(f"the engine serves {key} with {engine.runtime(key)}, not LiteRT")
    started = time.perf_counter()
    engine_tf = Engine(lambda k: spec)  # LiteRT off: what INFERENCE_RUNTIME=tensorflow serves
    engine_tf.get(key)
    figures["load_tensorflow_s"] = time.perf_counter() - started

    # The photo the HTTP path posts, decoded and resized as a request does: the engine's input.
    jpeg = photo_jpeg(7, HTTP_SIDE)
    decoded = imaging.decode(jpeg, max_bytes=1 << 30, max_pixels=1 << 30, draft_side=max(size, imaging.THUMBNAIL_SIDE))
    pixels = imaging.to_model_input(decoded.image, size)
    batch16 = [imaging.to_model_input(Image.fromarray(photo_like(100 + i, HTTP_SIDE)), size) for i in range(16)]
    x1 = entry.preprocess(pixels[None])
    x16 = entry.preprocess(np.stack(batch16))

    model = entry.build(weights_path)
    bare = tf.function(lambda x: model(x, training=False))
    content = lite_path.read_bytes()
    lite = LiteModel(content, threads=LITE_THREADS)

    print("converting to int8 ...", flush=True)
    calibration = entry.preprocess(np.stack([photo_like(1000 + i, size) for i in range(args.int8_images)]))
    held_out = entry.preprocess(np.stack([photo_like(5000 + i, size) for i in range(args.int8_held_out)]))
    int8 = LiteModel(convert_int8(model, calibration), threads=LITE_THREADS)
    float_top1 = np.concatenate([lite.run(held_out[i : i + 16]) for i in range(0, len(held_out), 16)]).argmax(1)
    int8_top1 = np.concatenate([int8.run(held_out[i : i + 16]) for i in range(0, len(held_out), 16)]).argmax(1)
    figures["int8_top1_agreement"] = float(np.mean(float_top1 == int8_top1))

    single = {
        "engine": lambda: engine.predict(key, [pixels]),
        "bare": lambda: np.asarray(bare(x1)),
        "lite": lambda: lite.run(x1),
        "int8": lambda: int8.run(x1),
        "engine_tensorflow": lambda: engine_tf.predict(key, [pixels]),
    }
    # A request against the same model in the same loop, without TensorFlow calls in between:
    # measured here, a call right after a TensorFlow call runs a few milliseconds slower, and no
    # TensorFlow runs in the path of a request served by LiteRT.
    request = {"engine": single["engine"], "http": post}
    batch = {
        "engine": lambda: engine.predict(key, batch16),
        "bare": lambda: np.asarray(bare(x16)),
        "lite": lambda: lite.run(x16),
        "int8": lambda: int8.run(x16),
        "engine_tensorflow": lambda: engine_tf.predict(key, batch16),
    }
    interleaved(single, 3)  # warm every path and shape used below
    interleaved(request, 3)
    interleaved(batch, 3)
    model.predict(x1, verbose=0)

    print("timing ...", flush=True)
    ms = interleaved(single, args.repeat)
    for name, values in ms.items():
        figures[f"{name}_p50_ms"] = percentile(values, 50)
        figures[f"{name}_p95_ms"] = percentile(values, 95)
    ms = interleaved(request, args.repeat)
    figures["http_p50_ms"] = percentile(ms["http"], 50)
    figures["http_p95_ms"] = percentile(ms["http"], 95)
    figures["http_engine_p50_ms"] = percentile(ms["engine"], 50)
    figures["http_overhead_ms"] = figures["http_p50_ms"] - figures["http_engine_p50_ms"]
    ms16 = interleaved(batch, max(5, args.repeat // 5))
    for name, values in ms16.items():
        figures[f"{name}_batch16_img_s"] = 16 / (percentile(values, 50) / 1000)
    figures["predict_p50_ms"] = percentile(timed(lambda: model.predict(x1, verbose=0), max(10, args.repeat // 3)), 50)

    def naive_request() -> None:
        entry.build(weights_path).predict(x1, verbose=0)  # keras.applications.X(weights=path), as the guide does

    figures["naive_p50_ms"] = percentile(timed(naive_request, args.naive_repeat), 50)
    return figures


def measure_real_int8(weights_file: Path, photos: Path, folder: Path) -> dict:
    """int8 against float32 LiteRT with real published weights on real photos (every other one calibrates).

    Generated weights give nearly flat outputs, whose top-1 the smallest rounding can change. Real
    weights do too on photos far from their classes (hands, for an ImageNet model): int8 may then
    pick another of several close guesses, so how often float32's answer stays in int8's top 5
    is reported as well.
    """
    from classifier import imaging, lite, weights

    installed = weights.import_file(weights_file, folder / "real-weights")
    entry = installed.model
    size = entry.input_size
    files = sorted(p for p in photos.rglob("*") if p.suffix.lower() in imaging.SUPPORTED_EXTENSIONS)
    pictures = []
    for path in files:
        decoded = imaging.decode(path, max_bytes=1 << 30, max_pixels=1 << 30, draft_side=size)
        pictures.append(imaging.to_model_input(decoded.image, size))
    x = entry.preprocess(np.stack(pictures))
    calibration, held_out = x[0::2], x[1::2]
    model = entry.build(installed.path)
    float32 = lite.LiteModel(lite.convert(model), threads=LITE_THREADS)
    int8 = lite.LiteModel(convert_int8(model, calibration), threads=LITE_THREADS)
    reference = np.concatenate([float32.run(held_out[i : i + 1]) for i in range(len(held_out))])
    quantized = np.concatenate([int8.run(held_out[i : i + 1]) for i in range(len(held_out))])
    best = reference.argmax(1)
    in_top5 = [b in np.argsort(-row)[:5] for b, row in zip(best, quantized, strict=True)]
    return {
        "int8_real_model": entry.key,
        "int8_real_images": len(held_out),
        "int8_real_top1_agreement": float(np.mean(best == quantized.argmax(1))),
        "int8_real_top5_keeps_top1": float(np.mean(in_top5)),
        "int8_real_float32_top1_p50": float(np.median(reference.max(1))),
    }


def measure_rss_per_model(key: str, weights_path: Path, lite_path: Path | None) -> float:
    """RSS a warm model adds to a process that already runs TensorFlow (a fresh subprocess).

    With `lite_path`, the engine serves it from that LiteRT file (one interpreter of the pool, as
    after a lone request); without, by TensorFlow. A web process imports TensorFlow either way.
    """
    lite = f"lambda spec: Path({str(lite_path)!r}).read_bytes()" if lite_path else "None"
    code = f"""
import sys; sys.path.insert(0, {str(ROOT)!r})
from pathlib import Path
import tensorflow as tf, keras
from bench.lib.figures import rss_mb
from classifier import zoo
from classifier.engine import Engine, ModelSpec
entry = zoo.get({key!r})
tf.constant(1.0) + 1  # start the runtime before the baseline
before = rss_mb()
engine = Engine(lambda k: ModelSpec(k, entry.input_size, [str(i) for i in range(1000)],
                lambda: entry.build({str(weights_path)!r}), entry.preprocess), lite={lite}, cores={LITE_THREADS})
engine.get({key!r})
assert engine.runtime({key!r}) == {"litert" if lite_path else "tensorflow"!r}
print(rss_mb() - before)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def litert_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ai-edge-litert")
    except PackageNotFoundError:
        return "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mobilenetv2")
    parser.add_argument("--repeat", type=int, default=100, help="timed single-image calls per path")
    parser.add_argument("--naive-repeat", type=int, default=5)
    parser.add_argument("--int8-images", type=int, default=100, help="generated pictures to calibrate int8 on")
    parser.add_argument("--int8-held-out", type=int, default=100, help="other pictures to compare int8 with float32")
    parser.add_argument("--real-weights", type=Path, help="a published weights file (with its head) for int8_real_*")
    parser.add_argument("--real-photos", type=Path, help="a folder of real photos for int8_real_*")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()

    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="transferlab-bench-") as tmp:
        data_dir = Path(tmp)
        weights_path = make_weights(args.model, data_dir)
        setup_django(data_dir)
        print("converting to LiteRT as the worker does ...", flush=True)
        convert_s, convert_check_s, lite_path = convert_as_worker(args.model, weights_path)
        with web_server(args.model, data_dir, photo_jpeg(7, HTTP_SIDE)) as post:
            figures = measure(args.model, weights_path, lite_path, post, args)
        figures["convert_s"] = convert_s
        figures["convert_and_check_s"] = convert_check_s
        figures["rss_mb_per_model"] = measure_rss_per_model(args.model, weights_path, lite_path)
        figures["rss_mb_per_model_tensorflow"] = measure_rss_per_model(args.model, weights_path, None)
        if args.real_weights and args.real_photos:
            print("int8 on real weights and photos ...", flush=True)
            figures.update(measure_real_int8(args.real_weights, args.real_photos, data_dir))

    import tensorflow as tf

    targets = {
        "engine p50 <= 0.35x bare p50": figures["engine_p50_ms"] <= 0.35 * figures["bare_p50_ms"],
        "engine batch16 >= 2x bare": figures["engine_batch16_img_s"] >= 2.0 * figures["bare_batch16_img_s"],
        "HTTP overhead <= engine p50": figures["http_overhead_ms"] <= figures["http_engine_p50_ms"],
    }
    figures.update(
        {
            "model": args.model,
            "machine": f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            "tensorflow": tf.__version__,
            "ai_edge_litert": litert_version(),
            "load_average_before": load_before,
            "load_average_after": load_average(),
            "engine_over_bare": figures["engine_p50_ms"] / figures["bare_p50_ms"],
            "naive_over_engine": figures["naive_p50_ms"] / figures["engine_p50_ms"],
            "batch16_engine_over_bare": figures["engine_batch16_img_s"] / figures["bare_batch16_img_s"],
            "targets_met": all(targets.values()),
        }
    )
    f = figures
    rows = [
        ("engine (LiteRT), 1 image (p50 / p95)", f"{f['engine_p50_ms']:.2f} / {f['engine_p95_ms']:.2f} ms"),
        ("bare tf.function, 1 image (p50 / p95)", f"{f['bare_p50_ms']:.1f} / {f['bare_p95_ms']:.1f} ms"),
        ("LiteRT interpreter, 2 threads (p50)", f"{f['lite_p50_ms']:.2f} ms"),
        ("LiteRT int8, 2 threads (p50)", f"{f['int8_p50_ms']:.2f} ms"),
        ("engine, LiteRT off (p50)", f"{f['engine_tensorflow_p50_ms']:.1f} ms"),
        ("model.predict on a loaded model (p50)", f"{f['predict_p50_ms']:.1f} ms"),
        ("naive: build + predict per request (p50)", f"{f['naive_p50_ms']:.0f} ms"),
        ("engine (LiteRT), batch of 16", f"{f['engine_batch16_img_s']:.0f} img/s"),
        ("bare tf.function, batch of 16", f"{f['bare_batch16_img_s']:.0f} img/s"),
        ("LiteRT interpreter, batch of 16", f"{f['lite_batch16_img_s']:.0f} img/s"),
        ("LiteRT int8, batch of 16", f"{f['int8_batch16_img_s']:.0f} img/s"),
        ("engine, LiteRT off, batch of 16", f"{f['engine_tensorflow_batch16_img_s']:.0f} img/s"),
        ("int8 top-1 agreement with float32", f"{f['int8_top1_agreement']:.1%}"),
    ]
    if "int8_real_top1_agreement" in f:
        real = f"  real weights ({f['int8_real_model']}), {f['int8_real_images']} photos"
        rows.append((real, f"{f['int8_real_top1_agreement']:.1%}"))
        rows.append(("  float32's top-1 within int8's top 5", f"{f['int8_real_top5_keeps_top1']:.1%}"))
        rows.append(("  float32's top-1 probability (median)", f"{f['int8_real_float32_top1_p50']:.2f}"))
    rows += [
        (f"HTTP POST /api/v1/predict, {HTTP_SIDE} px JPEG (p50)", f"{f['http_p50_ms']:.2f} ms"),
        ("engine, timed beside those requests (p50)", f"{f['http_engine_p50_ms']:.2f} ms"),
        ("HTTP overhead (HTTP p50 - engine p50 beside it)", f"{f['http_overhead_ms']:.2f} ms"),
        ("float32 conversion (with the check)", f"{f['convert_s']:.1f} s ({f['convert_and_check_s']:.1f} s)"),
        ("model load, LiteRT / TensorFlow", f"{f['load_s']:.2f} s / {f['load_tensorflow_s']:.1f} s"),
        (
            "RSS per warm model, LiteRT / TensorFlow",
            f"{f['rss_mb_per_model']:.0f} / {f['rss_mb_per_model_tensorflow']:.0f} MB",
        ),
        ("load average before / after", f"{f['load_average_before']:.1f} / {f['load_average_after']:.1f}"),
    ]
    rows += [(f"target: {name}", "met" if ok else "MISSED") for name, ok in targets.items()]
    print_table(f"Inference, {args.model} (LiteRT {f['ai_edge_litert']}, TensorFlow {f['tensorflow']})", rows)
    if args.json:
        write_json(args.json, figures)
    return 0 if (all(targets.values()) or not args.check) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:  # a benchmark reports its failure and exits non-zero
        print(f"bench/predict.py failed: {exc!r}", file=sys.stderr)
        sys.exit(2)
