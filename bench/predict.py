"""Inference benchmark: the engine against a bare compiled Keras call, model.predict and the naive path.

    .venv/bin/python bench/predict.py [--model mobilenetv2] [--json PATH] [--check]

Measured in one run, on generated weights installed through the real import path (compute does
not depend on the weight values; no download): warm single-image latency through the engine and
through a bare `tf.function` around `model(x, training=False)` (interleaved, so both see the same
machine load), the reference guide's `model.predict` on a loaded model and its naive request
path (build the model + `model.predict` per request), batch-of-16 throughput, end-to-end HTTP
latency of POST /api/v1/predict through the web server as `make run` starts it (waitress), and the resident memory
one warm model adds to a process. Prints a table; `--json PATH` writes the figures named in
DESIGN.md; `--check` exits 1 when a target of issue 2 is missed. Exits 2 on error.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from webapp.tensorflow_logs import quiet_tensorflow  # noqa: E402

quiet_tensorflow()  # before anything loads TensorFlow: no C++ start-up notes among the figures

from bench.lib.figures import percentile, print_table, write_json  # noqa: E402


def make_weights(key: str, folder: Path) -> Path:
    """Generated weights for a registry entry, installed through classifier.weights like a real file."""
    from classifier import weights
    from tests.helpers import make_zoo_weights

    staging = folder / "staging"
    source = make_zoo_weights(key, staging)
    installed = weights.import_file(source, folder / "weights")
    return installed.path


def sample_jpeg(seed: int = 0, size: int = 224) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(out, format="JPEG", quality=90)
    return out.getvalue()


def timed(fn, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return times


def measure_in_process(key: str, weights_path: Path, repeat: int, naive_repeat: int) -> dict:
    import tensorflow as tf
    from PIL import Image

    from classifier import zoo
    from classifier.engine import Engine, ModelSpec

    entry = zoo.get(key)
    size = entry.input_size
    labels = [str(i) for i in range(1000)]
    engine = Engine(lambda k: ModelSpec(k, size, labels, lambda: entry.build(weights_path), entry.preprocess))
    started = time.perf_counter()
    engine.get(key)  # build, load the weights file, trace and warm: what a first request waits for
    load_s = time.perf_counter() - started
    image = Image.open(io.BytesIO(sample_jpeg(1, size))).convert("RGB")
    batch16 = [Image.open(io.BytesIO(sample_jpeg(i, size))).convert("RGB") for i in range(16)]

    model = entry.build(weights_path)
    bare = tf.function(lambda x: model(x, training=False))
    x1 = entry.preprocess(np.asarray(image)[None])
    x16 = entry.preprocess(np.stack([np.asarray(im) for im in batch16]))
    for _ in range(3):  # warm both paths and every shape used below
        np.asarray(bare(x1))
        np.asarray(bare(x16))
        engine.predict(key, [image])
        engine.predict(key, batch16)
        model.predict(x1, verbose=0)

    engine_ms, bare_ms = [], []
    for _ in range(repeat):  # interleaved: both see the same background load
        engine_ms += timed(lambda: engine.predict(key, [image]), 1)
        bare_ms += timed(lambda: np.asarray(bare(x1)), 1)
    predict_ms = timed(lambda: model.predict(x1, verbose=0), max(10, repeat // 3))

    engine16_ms, bare16_ms = [], []
    for _ in range(max(5, repeat // 10)):
        engine16_ms += timed(lambda: engine.predict(key, batch16), 1)
        bare16_ms += timed(lambda: np.asarray(bare(x16)), 1)

    def naive_request():
        entry.build(weights_path).predict(x1, verbose=0)  # keras.applications.X(weights=path), as the guide does

    naive_ms = timed(naive_request, naive_repeat)
    return {
        "load_s": load_s,
        "engine_p50_ms": percentile(engine_ms, 50),
        "engine_p95_ms": percentile(engine_ms, 95),
        "bare_p50_ms": percentile(bare_ms, 50),
        "bare_p95_ms": percentile(bare_ms, 95),
        "predict_p50_ms": percentile(predict_ms, 50),
        "naive_p50_ms": percentile(naive_ms, 50),
        "engine_batch16_img_s": 16 / (percentile(engine16_ms, 50) / 1000),
        "bare_batch16_img_s": 16 / (percentile(bare16_ms, 50) / 1000),
    }


def measure_rss_per_model(key: str, weights_path: Path) -> float:
    """RSS a warm model adds to a process that already imported TensorFlow (a fresh subprocess)."""
    code = f"""
import sys; sys.path.insert(0, {str(ROOT)!r})
import tensorflow as tf, keras
from bench.lib.figures import rss_mb
from classifier import zoo
from classifier.engine import Engine, ModelSpec
entry = zoo.get({key!r})
tf.constant(1.0) + 1  # start the runtime before the baseline
before = rss_mb()
engine = Engine(lambda k: ModelSpec(k, entry.input_size, [str(i) for i in range(1000)],
                lambda: entry.build({str(weights_path)!r}), entry.preprocess))
engine.get({key!r})
print(rss_mb() - before)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


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


def measure_http(key: str, data_dir: Path, repeat: int) -> float:
    """p50 of POST /api/v1/predict (one JPEG, token auth) against waitress, as `manage.py serve` runs it."""
    env = {**os.environ, "DATA_DIR": str(data_dir), "DEBUG": "False"}
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
        [sys.executable, "-m", "waitress", f"--listen=127.0.0.1:{port}", "--threads=4",
         "webapp.wsgi:application"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/api/v1/predict"
        body, content_type = multipart({"model": key}, [("images", "photo.jpg", sample_jpeg(7))])
        headers = {"Authorization": f"Bearer {token}", "Content-Type": content_type}

        def post():
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")
            with urllib.request.urlopen(request, timeout=120) as response:
                assert response.status == 200, response.status
                json.loads(response.read())

        deadline = time.monotonic() + 60
        while True:
            try:
                post()  # the first request also loads and warms the model
                break
            except (ConnectionError, urllib.error.URLError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        for _ in range(3):
            post()
        return percentile(timed(post, repeat), 50)
    finally:
        server.send_signal(2)
        server.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mobilenetv2")
    parser.add_argument("--repeat", type=int, default=100, help="timed single-image calls per path")
    parser.add_argument("--naive-repeat", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="transferlab-bench-") as tmp:
        data_dir = Path(tmp)
        weights_path = make_weights(args.model, data_dir)
        figures = measure_in_process(args.model, weights_path, args.repeat, args.naive_repeat)
        figures["http_p50_ms"] = measure_http(args.model, data_dir, max(20, args.repeat // 3))
        figures["rss_mb_per_model"] = measure_rss_per_model(args.model, weights_path)

    targets = {
        "engine p50 <= 1.3x bare p50": figures["engine_p50_ms"] <= 1.3 * figures["bare_p50_ms"],
        "engine >= 10x faster than naive": figures["naive_p50_ms"] >= 10 * figures["engine_p50_ms"],
        "engine batch16 >= 0.8x bare": figures["engine_batch16_img_s"] >= 0.8 * figures["bare_batch16_img_s"],
    }
    figures.update(
        {
            "model": args.model,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            "engine_over_bare": figures["engine_p50_ms"] / figures["bare_p50_ms"],
            "naive_over_engine": figures["naive_p50_ms"] / figures["engine_p50_ms"],
            "batch16_engine_over_bare": figures["engine_batch16_img_s"] / figures["bare_batch16_img_s"],
            "targets_met": all(targets.values()),
        }
    )
    print_table(
        f"Inference, {args.model}",
        [
            ("engine, 1 image (p50 / p95)", f"{figures['engine_p50_ms']:.1f} / {figures['engine_p95_ms']:.1f} ms"),
            (
                "bare tf.function, 1 image (p50 / p95)",
                f"{figures['bare_p50_ms']:.1f} / {figures['bare_p95_ms']:.1f} ms",
            ),
            ("model.predict on a loaded model (p50)", f"{figures['predict_p50_ms']:.1f} ms"),
            ("naive: build + predict per request (p50)", f"{figures['naive_p50_ms']:.0f} ms"),
            ("engine, batch of 16", f"{figures['engine_batch16_img_s']:.1f} img/s"),
            ("bare tf.function, batch of 16", f"{figures['bare_batch16_img_s']:.1f} img/s"),
            ("HTTP POST /api/v1/predict, 1 JPEG (p50)", f"{figures['http_p50_ms']:.1f} ms"),
            ("model load (first request, warm-up included)", f"{figures['load_s']:.1f} s"),
            ("resident memory per warm model", f"{figures['rss_mb_per_model']:.0f} MB"),
        ]
        + [(f"target: {name}", "met" if ok else "MISSED") for name, ok in targets.items()],
    )
    if args.json:
        write_json(args.json, figures)
    return 0 if (all(targets.values()) or not args.check) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:  # a benchmark reports its failure and exits non-zero
        print(f"bench/predict.py failed: {exc!r}", file=sys.stderr)
        sys.exit(2)
