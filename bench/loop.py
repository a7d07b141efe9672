"""Improve-loop benchmark: do suspected label errors find planted ones, and does accepting them help?

    .venv/bin/python bench/loop.py [--json PATH] [--photos DIR] [--weights FILE] [--flip 0.1] [--rounds 3]

The product's own path, in this process, in a fresh DATA_DIR: a dataset with 20% validation and
20% test images is created and filled through the zip import (`manage.py import_dataset`), the
base's weights through `manage.py import_weights`. Then, per round (a different seed each):

1. the bench flips `--flip` of the training and validation images' labels to another label at
   random (the test images keep their true labels: they measure);
2. a job trains with the form's defaults (`TrainConfig()`), in this process as the training worker
   runs it; `accuracy_before` is its accuracy on the test images;
3. the worker's check runs (`training.analysis.run`: suspects and near-duplicates from the job's
   cached features); `label_error_precision` and `label_error_recall` are the share of the first
   N entries of the list that were flipped, and the share of the N flipped found there, with N the
   number flipped (precision over the entries listed when the list is shorter than N);
   `suspect_scoring_s` is the scoring of the job's images as the worker timed it;
4. the first N suggestions are accepted as a person accepts them (`analysis.accept`: moved,
   recorded) and a job trains again with the same settings: `accuracy_after`.

The test split is small on the real set (40 photos: one photo is 2.5 points), so the accuracies
are also given on every image the jobs did not train on, validation and test, against the true
labels (`heldout_accuracy_before`, `_after`, `_clean`).

Figures are the rounds' means (each round's are kept too, suffixed _1, _2, ...). Also:
`accuracy_clean`, a job on the true labels (what a perfect clean-up would reach);
`suspect_scoring_2000_s`, scoring exactly 2,000 images of 1,280 cached features (MobileNetV2's
pooled output size; generated features with 10 labels and 10% flipped; the median of 3 runs),
with one BLAS thread as the product runs it, and `suspect_scoring_2000_threads_s` with every core;
and the calibration of near-duplicates: the picture similarity of each photo's copies (JPEG
quality 85, resized 80%, cropped 2% centred and at a corner) and of the most alike different
photos, on the photo set and on generated photo-like pictures, and with the real base the same
for features (why features alone cannot decide).

The photos default to ../shared/photos/signdigits5 (200 real hand-sign photos, 5 labels) and the
weights to ../shared/weights/mobilenet_2_5_224_tf_no_top.h5 (MobileNet 0.25 @224) when they are
there; otherwise generated photo-like pictures (5 tinted labels of 60) and MobileNetV2 0.35 @96
with generated weights, and the table says so.

Prints a table; `--json PATH` writes one flat JSON object. Exits 2 on error.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from webapp.tensorflow_logs import quiet_tensorflow  # noqa: E402

quiet_tensorflow()

from bench.lib.figures import write_json  # noqa: E402
from bench.lib.machine import busy_processes, load_average, machine_info  # noqa: E402
from bench.lib.tables import print_grid  # noqa: E402

SHARED = ROOT.parent / "shared"
DEFAULT_PHOTOS = SHARED / "photos" / "signdigits5"
DEFAULT_WEIGHTS = SHARED / "weights" / "mobilenet_2_5_224_tf_no_top.h5"
REAL_BASE = "mobilenet-0.25-224"
GENERATED_BASE = "mobilenetv2-0.35-96"
# Five colours a base with generated weights can tell apart (it recognises no objects).
GENERATED_LABELS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 200), "yellow": (210, 200, 40),
                    "grey": (128, 128, 128)}  # fmt: skip
GENERATED_PER_LABEL = 60
SCORING_IMAGES, SCORING_FEATURES, SCORING_LABELS = 2000, 1280, 10
TARGET_SCORING_2000_S = 10.0


# --- Data -------------------------------------------------------------------------------------------------
def scene(rng: np.random.Generator, colour: tuple[int, int, int], side: int = 160):
    """A photo-like picture: a smooth random scene over a dominant colour, with fine grain."""
    from PIL import Image

    small = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    picture = np.asarray(Image.fromarray(small).resize((side, side), Image.Resampling.BICUBIC), dtype=np.float32)
    picture = np.array(colour, np.float32) + 0.4 * (picture - 128) + rng.integers(-10, 11, size=(side, side, 3))
    return Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8))


def photo_zip(photos: Path | None, target: Path) -> Path:
    """A folder-per-label zip of the photo set, or of generated pictures."""
    with zipfile.ZipFile(target, "w") as archive:
        if photos is not None:
            for path in sorted(p for p in photos.rglob("*") if p.is_file() and p.parent != photos):
                archive.write(path, f"{path.parent.name}/{path.name}")
        else:
            rng = np.random.default_rng(0)
            for label, tint in GENERATED_LABELS.items():
                for i in range(GENERATED_PER_LABEL):
                    out = io.BytesIO()
                    scene(rng, tint).save(out, format="JPEG", quality=90)
                    archive.writestr(f"{label}/{label}_{i:03d}.jpg", out.getvalue())
    return target


# --- The product, in this process ----------------------------------------------------------------------------
def start_django(data_dir: Path) -> None:
    os.environ["DATA_DIR"] = str(data_dir)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def install_base(weights: Path | None, tmp: Path) -> str:
    from django.core.management import call_command

    if weights is None:
        from classifier import zoo
        from tests.helpers import make_zoo_weights

        weights = make_zoo_weights(GENERATED_BASE, tmp / "generated-weights", include_top=False)
        call_command("import_weights", str(weights), verbosity=0, stdout=io.StringIO())
        return zoo.get(GENERATED_BASE).key
    call_command("import_weights", str(weights), verbosity=0, stdout=io.StringIO())
    return REAL_BASE


def make_dataset(archive: Path, user):
    from django.core.management import call_command

    from training.models import Dataset

    dataset = Dataset.objects.create(name="Loop", created_by=user, validation_percent=20, test_percent=20)
    call_command("import_dataset", str(archive), "--name", "Loop", stdout=io.StringIO())
    return dataset


def flip_labels(dataset, truth: dict[int, int], share: float, seed: int) -> set[int]:
    """Put `share` of the training and validation images (seeded) in another label; returns their ids."""
    from training.models import DatasetImage

    rng = np.random.default_rng(seed)
    labels = sorted(dataset.labels.values_list("pk", flat=True))
    candidates = sorted(dataset.images.exclude(split="test").values_list("pk", flat=True))
    chosen = rng.choice(len(candidates), round(len(candidates) * share), replace=False)
    flipped = set()
    for index in chosen:
        image_id = candidates[index]
        other = [label for label in labels if label != truth[image_id]]
        DatasetImage.objects.filter(pk=image_id).update(label_id=int(rng.choice(other)))
        flipped.add(image_id)
    return flipped


def restore_labels(dataset, truth: dict[int, int]) -> None:
    """Every image back in its true label; no decision of an earlier round kept."""
    from training.models import DatasetImage, SuspectDecision

    SuspectDecision.objects.filter(dataset=dataset).delete()
    for image_id, label_id in truth.items():
        DatasetImage.objects.filter(pk=image_id).exclude(label_id=label_id).update(label_id=label_id)


def train(dataset, base_key: str, user, parent=None):
    """One job with the form's defaults, run here as the training worker runs it."""
    from training import jobs, trainer

    config = trainer.TrainConfig() if parent is None else trainer.TrainConfig.from_dict(parent.config)
    job = jobs.start_training(dataset, base_key, config, user, parent=parent, enqueue=False)
    done = jobs.run_training_job(job.pk)
    if done is None or done.status != "succeeded":
        raise RuntimeError(f"job {job.pk} did not succeed: {done.message if done else 'gone'}")
    return done


def held_out_accuracy(job, truth: dict[int, int]) -> float:
    """Accuracy on every image the job did not train on (validation and test), against the true labels."""
    from training import outcomes

    labels = [label_id for label_id, _ in job.snapshot["labels"]]
    right = total = 0
    for outcome in outcomes.load_outcomes(job.folder).values():
        for image_id, answer in zip(outcome.image_ids.tolist(), outcome.predicted.tolist(), strict=True):
            right += labels[answer] == truth[image_id]
            total += 1
    return right / max(1, total)


def measure_round(dataset, base_key: str, user, truth: dict[int, int], share: float, seed: int) -> dict:
    from training import analysis

    restore_labels(dataset, truth)
    flipped = flip_labels(dataset, truth, share, seed)
    before = train(dataset, base_key, user)
    started = time.perf_counter()
    analysis.run(before.pk)
    analysis_s = time.perf_counter() - started
    result = analysis.read(before)
    if result is None or not result.done:
        raise RuntimeError(f"the check of job {before.pk} did not finish: {result.message if result else 'no file'}")
    n = len(flipped)
    first = result.suspects[:n]
    hits = [entry for entry in first if entry["image"] in flipped]
    for entry in first:
        analysis.accept(before, entry, user)
    after = train(dataset, base_key, user, parent=before)
    return {
        "flipped": n,
        "listed": len(result.suspects),
        "label_error_precision": len(hits) / max(1, len(first)),
        "label_error_recall": len(hits) / max(1, n),
        "suggestion_right": sum(1 for e in hits if e["suggested"] == truth[e["image"]]) / max(1, len(hits)),
        "accuracy_before": before.evaluation["test"]["accuracy"],
        "accuracy_after": after.evaluation["test"]["accuracy"],
        "heldout_accuracy_before": held_out_accuracy(before, truth),
        "heldout_accuracy_after": held_out_accuracy(after, truth),
        "suspect_scoring_s": result.facts["suspects_s"],
        "analysis_s": analysis_s,
        "images_scored": result.facts["images_scored"],
        "pairs_found": len(result.duplicates),
    }


# --- Scoring 2,000 images ------------------------------------------------------------------------------------
def measure_scoring_2000() -> dict:
    from threadpoolctl import threadpool_limits

    from training import suspects

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, size=(SCORING_LABELS, SCORING_FEATURES))
    labels = rng.integers(0, SCORING_LABELS, SCORING_IMAGES)
    features = np.maximum(0, centres[labels] * 0.3 + rng.normal(0, 1, (SCORING_IMAGES, SCORING_FEATURES)))
    features = features.astype(np.float16)  # as the job keeps them
    noisy = labels.copy()
    flipped = rng.choice(SCORING_IMAGES, SCORING_IMAGES // 10, replace=False)
    noisy[flipped] = (noisy[flipped] + rng.integers(1, SCORING_LABELS, len(flipped))) % SCORING_LABELS

    def as_the_product() -> None:
        suspects.find_suspects(features, noisy, SCORING_LABELS)

    def every_core() -> None:  # find_suspects' steps, with BLAS free to use every core
        with threadpool_limits(limits=os.cpu_count() or 1, user_api="blas"):
            probabilities = suspects.out_of_sample_probabilities(features, noisy, SCORING_LABELS)
        thresholds = suspects.per_label_thresholds(probabilities, noisy, SCORING_LABELS)
        suspects.rank_suspects(probabilities, noisy, thresholds)

    def median_of_3(run) -> float:
        times = []
        for _ in range(3):
            started = time.perf_counter()
            run()
            times.append(time.perf_counter() - started)
        return sorted(times)[1]

    return {
        "suspect_scoring_2000_s": median_of_3(as_the_product),
        "suspect_scoring_2000_threads_s": median_of_3(every_core),
    }


# --- Near-duplicates: calibration --------------------------------------------------------------------------
def copies(picture):
    from PIL import Image

    def reopened(image, fmt, **options):
        out = io.BytesIO()
        image.save(out, format=fmt, **options)
        return Image.open(io.BytesIO(out.getvalue())).convert("RGB")

    w, h = picture.size
    return {
        "jpeg85": reopened(reopened(picture, "PNG"), "JPEG", quality=85),
        "resized80": picture.resize((round(w * 0.8), round(h * 0.8)), Image.Resampling.BILINEAR),
        "cropped2": picture.crop((round(w * 0.02), round(h * 0.02), w - round(w * 0.02), h - round(h * 0.02))),
        "cropped2_corner": picture.crop((round(w * 0.02), round(h * 0.02), w, h)),
    }


def thumbnail(picture):
    """As the dataset keeps it: a JPEG of at most 256 pixels a side."""
    from PIL import Image

    from classifier import imaging

    return Image.open(io.BytesIO(imaging.thumbnail_jpeg(picture))).convert("RGB")


def picture_margins(pictures: list, prefix: str) -> dict:
    from training import duplicates

    signatures = [duplicates.picture_signatures(thumbnail(p)) for p in pictures]
    distinct = max(
        duplicates.picture_similarity(signatures[i], signatures[j])
        for i in range(len(signatures))
        for j in range(i + 1, len(signatures))
        if signatures[i] is not None and signatures[j] is not None
    )
    figures = {f"{prefix}_distinct_max": distinct}
    for i, picture in enumerate(pictures):
        for kind, copy in copies(picture).items():
            value = duplicates.picture_similarity(signatures[i], duplicates.picture_signatures(thumbnail(copy)))
            key = f"{prefix}_copy_{kind}_min"
            figures[key] = min(figures.get(key, 1.0), value)
    figures[f"{prefix}_copy_min"] = min(v for k, v in figures.items() if k.endswith("_min") and "_copy_" in k)
    figures[f"{prefix}_margin"] = figures[f"{prefix}_copy_min"] - distinct
    return figures


def feature_margins(paths: list[Path], weights: Path, tmp: Path) -> dict:
    """Cosine of the real base's features: a photo and its copies against the most alike other photo."""
    from PIL import Image

    from classifier import zoo
    from training import trainer

    entry = zoo.get(REAL_BASE)
    base = trainer.Base(entry.key, entry.name, entry.input_size,
                        lambda: entry.build(weights, include_top=False), entry.preprocess)  # fmt: skip
    every = list(paths)
    for i, path in enumerate(paths):
        for kind, copy in copies(Image.open(path).convert("RGB")).items():
            target = tmp / f"copy-{i}-{kind}.png"
            copy.save(target)
            every.append(target)
    features = trainer.base_features(base, [trainer.Example(p, 0, i) for i, p in enumerate(every)])
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    n = len(paths)
    originals = features[:n]
    similarity = originals @ originals.T
    np.fill_diagonal(similarity, -1)
    copied = features[n:].reshape(n, 4, -1)
    return {
        "features_distinct_max": float(similarity.max()),
        "features_copy_min": float(np.einsum("nd,nkd->nk", originals, copied).min()),
    }


# --- Report ---------------------------------------------------------------------------------------------------
def report(f: dict) -> list[tuple[str, ...]]:
    ok = f["suspect_scoring_2000_s"] < TARGET_SCORING_2000_S
    rows = [
        ("data", f["data"][:70], "", ""),
        ("rounds (flip seeds)", str(f["rounds"]), "", ""),
        ("images scored per job (training + validation)", f"{f['images_scored']:.0f}", "", ""),
        ("labels flipped per round (N)", f"{f['flipped']:.0f}", "", ""),
        ("label_error_precision at N", f"{f['label_error_precision']:.2f}", "", ""),
        ("label_error_recall at N", f"{f['label_error_recall']:.2f}", "", ""),
        ("  suspects listed / suggestion right when found",
         f"{f['listed']:.1f} / {f['suggestion_right']:.2f}", "", ""),
        ("accuracy_before (test images, true labels)", f"{f['accuracy_before']:.1%}", "", ""),
        ("accuracy_after (top N accepted, trained again)", f"{f['accuracy_after']:.1%}", "", ""),
        ("accuracy_clean (trained on the true labels)", f"{f['accuracy_clean']:.1%}", "", ""),
        ("  test images", f"{f['test_images']}", "", ""),
        ("validation + test images, true labels: before / after / clean",
         f"{f['heldout_accuracy_before']:.1%} / {f['heldout_accuracy_after']:.1%} / {f['heldout_accuracy_clean']:.1%}",
         "", ""),
        ("suspect_scoring_s (the job's images, worker)", f"{f['suspect_scoring_s']:.3f} s", "", ""),
        ("  whole check (suspects + near-duplicates)", f"{f['analysis_s']:.2f} s", "", ""),
        ("suspect_scoring_2000_s (2,000 x 1,280, 1 thread)", f"{f['suspect_scoring_2000_s']:.2f} s",
         f"< {TARGET_SCORING_2000_S:g} s", "met" if ok else "MISSED"),
        ("  the same with every core", f"{f['suspect_scoring_2000_threads_s']:.2f} s", "", ""),
        ("near-duplicates, photos: copies >= / distinct <=",
         f"{f['photos_copy_min']:.4f} / {f['photos_distinct_max']:.4f}", "", ""),
        ("near-duplicates, generated: copies >= / distinct <=",
         f"{f['generated_copy_min']:.4f} / {f['generated_distinct_max']:.4f}", "", ""),
    ]  # fmt: skip
    if "features_copy_min" in f:
        rows.append(("features (real base): copies >= / distinct <=",
                     f"{f['features_copy_min']:.4f} / {f['features_distinct_max']:.4f}", "", ""))  # fmt: skip
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=Path, help="folder-per-label photo set (default: the real sign digits)")
    parser.add_argument("--weights", type=Path, help="MobileNet 0.25 @224 no-head weights file, with --photos")
    parser.add_argument("--generated", action="store_true", help="generated pictures and weights, even with real ones")
    parser.add_argument("--flip", type=float, default=0.10, help="share of training and validation labels flipped")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each with its own flip seed")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()
    photos = args.photos or (DEFAULT_PHOTOS if DEFAULT_PHOTOS.is_dir() and not args.generated else None)
    weights = args.weights or (DEFAULT_WEIGHTS if DEFAULT_WEIGHTS.is_file() and not args.generated else None)
    if photos is not None and weights is None:
        parser.error("real photos need the real MobileNet 0.25 @224 weights (--weights)")

    started = time.perf_counter()
    figures: dict = {"load_avg_start": load_average(), "busy_processes_start": "; ".join(busy_processes())}
    with tempfile.TemporaryDirectory(prefix="transferlab-bench-loop-") as tmp_name:
        tmp = Path(tmp_name)
        start_django(tmp / "data")
        import keras  # noqa: F401  (machine_info reports the versions of what is loaded)
        import tensorflow  # noqa: F401
        from django.contrib.auth import get_user_model

        figures.update(machine_info())
        user = get_user_model().objects.create_user("bench", is_staff=True)
        base_key = install_base(weights, tmp)
        dataset = make_dataset(photo_zip(photos, tmp / "photos.zip"), user)
        figures["data"] = (
            f"{dataset.images.count()} real photos ({photos.name}), {base_key}, real weights"
            if photos is not None
            else f"GENERATED pictures ({dataset.images.count()}), {base_key} with generated weights"
        )
        print(f"{figures['data']}; measuring (several minutes)...", file=sys.stderr)
        truth = dict(dataset.images.values_list("pk", "label_id"))
        rounds = []
        for seed in range(args.rounds):
            rounds.append(measure_round(dataset, base_key, user, truth, args.flip, seed))
            print(f"round {seed + 1}: {rounds[-1]}", file=sys.stderr)
        restore_labels(dataset, truth)
        clean = train(dataset, base_key, user)
        figures["accuracy_clean"] = clean.evaluation["test"]["accuracy"]
        figures["heldout_accuracy_clean"] = held_out_accuracy(clean, truth)
        figures["test_images"] = dataset.images.filter(split="test").count()
        figures["rounds"] = args.rounds
        figures["flip_share"] = args.flip
        for key in rounds[0]:
            values = [r[key] for r in rounds]
            figures[key] = float(np.mean(values))
            for i, value in enumerate(values, 1):
                figures[f"{key}_{i}"] = value
        figures.update(measure_scoring_2000())
        if photos is not None:
            from PIL import Image

            paths = sorted(p for p in photos.rglob("*") if p.is_file() and p.parent != photos)
            figures.update(picture_margins([Image.open(p).convert("RGB") for p in paths], "photos"))
            figures.update(feature_margins(paths, weights, tmp))
        rng = np.random.default_rng(1)
        generated = [scene(rng, tint) for tint in GENERATED_LABELS.values() for _ in range(40)]
        figures.update(picture_margins(generated, "generated"))
        if photos is None:
            figures.update({k.replace("generated", "photos"): v for k, v in figures.items() if "generated_" in k})
    figures["bench_s"] = time.perf_counter() - started
    figures["load_avg_end"] = load_average()
    figures["machine"] = (
        f"{figures['cpu']}, {figures['cpu_count']} cores, {figures.get('memory_gb', '?')} GB, "
        f"Python {figures['python']}, TensorFlow {figures.get('tensorflow')}, Keras {figures.get('keras')}"
    )
    print_grid(
        f"Improve loop ({figures['bench_s']:.0f} s, load {figures['load_avg_start']:.1f} at start)",
        ("figure", "value", "target", "ok?"),
        report(figures),
    )
    if args.json:
        write_json(args.json, {k: (round(v, 4) if isinstance(v, float) else v) for k, v in figures.items()})
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SystemExit:
        raise
    except Exception as exc:  # a benchmark reports its failure and exits non-zero
        print(f"bench/loop.py failed: {exc!r}", file=sys.stderr)
        sys.exit(2)
