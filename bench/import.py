"""Dataset import benchmark: a zip of generated 256x256 JPEGs into a new dataset, end to end.

    .venv/bin/python bench/import.py [--images 1000] [--labels 10] [--json PATH] [--check]

Runs in a throw-away DATA_DIR with its own SQLite database. The zip (one folder per label,
deflated as the usual zip tools do) is built first and not timed. Timed: the web side keeping
the upload (`imports.start_import`) and the Huey task it enqueues once the job row commits,
run in-process through Huey's immediate mode: the same code path as the worker. That covers
the directory checks, streaming each member, SHA-256, decoding, the original and thumbnail
files, the rows, the split assignment and the report.

Prints a table; `--json PATH` writes {"images", "seconds", "img_per_s", "peak_rss_mb", ...};
`--check` exits 1 below the target of issue 3 (100 images/s). Exits 2 on error.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.lib.figures import peak_rss_mb, print_table, rss_mb, write_json  # noqa: E402

TARGET_IMG_PER_S = 100


def photo_like_jpeg(rng: np.random.Generator, side: int = 256) -> bytes:
    """A smooth random picture (upscaled noise) that compresses like a photo, not like static."""
    small = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((side, side), Image.Resampling.BICUBIC)
    detail = rng.integers(-12, 13, size=(side, side, 3))
    array = np.clip(np.asarray(image, dtype=np.int16) + detail, 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="JPEG", quality=88)
    return out.getvalue()


def build_zip(path: Path, images: int, labels: int, seed: int = 0) -> tuple[int, int]:
    """Write the zip member by member (memory stays flat); returns (zip bytes, image bytes)."""
    rng = np.random.default_rng(seed)
    image_bytes = 0
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i in range(images):
            data = photo_like_jpeg(rng)
            image_bytes += len(data)
            zf.writestr(f"bench/label_{i % labels:02d}/img_{i:06d}.jpg", data)
    return path.stat().st_size, image_bytes


def setup_django(data_dir: Path) -> None:
    os.environ["DATA_DIR"] = str(data_dir)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def run(images: int, labels: int, data_dir: Path) -> dict:
    zip_path = data_dir / "bench-input.zip"
    zip_size, image_bytes = build_zip(zip_path, images, labels)
    setup_django(data_dir)

    from django.contrib.auth import get_user_model
    from django.core.files import File
    from huey.contrib.djhuey import HUEY

    from training import imports
    from training.models import Dataset, ImportJob

    HUEY.immediate = True  # the task runs in this process as soon as the job row commits
    user = get_user_model().objects.create_user("bench", password="bench-password")
    dataset = Dataset.objects.create(name="Import benchmark", created_by=user)
    rss_before = rss_mb()

    start = time.perf_counter()
    with open(zip_path, "rb") as handle:
        job = imports.start_import(dataset, File(handle, name="bench.zip"), user)
    seconds = time.perf_counter() - start

    job = ImportJob.objects.get(pk=job.pk)
    stored = dataset.images.count()
    files = sum(1 for _ in (dataset.folder / "images").rglob("*.jpg"))
    thumbs = sum(1 for _ in (dataset.folder / "thumbs").rglob("*.jpg"))
    if job.status != ImportJob.Status.SUCCEEDED or stored != images or files != images or thumbs != images:
        raise RuntimeError(
            f"import incomplete: status={job.status} message={job.message!r} "
            f"rows={stored} files={files} thumbs={thumbs}"
        )
    return {
        "images": images,
        "labels": labels,
        "seconds": round(seconds, 3),
        "img_per_s": round(images / seconds, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_before_import_mb": round(rss_before, 1),
        "zip_mb": round(zip_size / 1_048_576, 2),
        "mean_image_kb": round(image_bytes / images / 1024, 1),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


def show(figures: dict) -> None:
    rows = [
        ("images imported", f"{figures['images']:,} in {figures['labels']} labels"),
        ("zip size", f"{figures['zip_mb']} MB ({figures['mean_image_kb']} KB per JPEG)"),
        ("end to end", f"{figures['seconds']:.2f} s"),
        ("throughput", f"{figures['img_per_s']:.0f} images/s (target >= {TARGET_IMG_PER_S})"),
        ("RSS before import", f"{figures['rss_before_import_mb']:.0f} MB"),
        ("peak RSS", f"{figures['peak_rss_mb']:.0f} MB"),
    ]
    print_table(f"Dataset import ({figures['cpus']} CPUs, Python {figures['python']})", rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000, help="JPEGs in the zip (default 1000)")
    parser.add_argument("--labels", type=int, default=10, help="label folders (default 10)")
    parser.add_argument("--json", type=Path, help="write the figures to this JSON file")
    parser.add_argument("--check", action="store_true", help=f"exit 1 below {TARGET_IMG_PER_S} images/s")
    args = parser.parse_args()
    if args.images < 1 or args.labels < 1:
        parser.error("--images and --labels must be at least 1")

    data_dir = Path(tempfile.mkdtemp(prefix="transferlab-bench-import-"))
    try:
        figures = run(args.images, args.labels, data_dir)
    except Exception as error:
        print(f"bench/import.py failed: {error}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    show(figures)
    if args.json:
        write_json(args.json, figures)
    if args.check and figures["img_per_s"] < TARGET_IMG_PER_S:
        print(f"below target: {figures['img_per_s']} < {TARGET_IMG_PER_S} images/s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
