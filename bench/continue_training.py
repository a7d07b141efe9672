"""Continue training against starting over, after a label was added: time to a saved model, accuracy.

    .venv/bin/python bench/continue_training.py --photos DIR --weights FILE [--json PATH]
    .venv/bin/python bench/continue_training.py [--base KEY] [--per-label N] [--json PATH]

With `--photos DIR --weights FILE` (a folder-per-label photo set and the base's no-head weights
file, MobileNet 0.25 @224 by default, as bench/train.py takes them): the first five label folders.
Without `--photos`: five colour-tinted generated labels of `--per-label` pictures (224x224 JPEGs);
without `--weights`: the base built with weights=None and given varied weights (seed 0), its
converted LiteRT file keyed on a fixed name. Either way split 60/20/20 per label (seed 0); image
ids are those of the whole five-label tree, as a dataset's ids stay when a label is added.

Two scenarios, each as `trainer.run` calls made the way the training worker makes them (LiteRT
allowed for the features; the first job converts the base, the others find it converted), with
the earlier job's features kept beside its model as a job keeps them (features.npz):
- earlier: the first four labels, the form's defaults (`TrainConfig()`); `finetuned_*`: with
  `fine_tune_epochs=5` from the base's default layer;
- start_over: all five labels, the same settings, from a blank head;
- continue: all five labels from the earlier model (`training.continuing`), with what the Continue
  form proposes: half the epochs, no more fine-tuning (a fine-tuned base keeps its layers);
- continue_fine_tuning (`finetuned_*` only): the same, fine-tuning again for half the epochs.

Figures per scenario: `*_earlier_s`, `*_start_over_s`, `*_continue_s` (the trainer's total_s:
build, warm start, features, epochs, evaluation, save), `*_continue_over_start_over`, the parts
(`*_warm_start_s`: reading and checking the earlier model; `*_features_s`, `*_transfer_s`
(features included), `*_fine_tune_s`), `*_reused_features` (training images whose features came
from the earlier job), epochs run, the first epoch's validation loss and the test accuracy of the
five-label models. Prints a table; `--json PATH` writes one flat object.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from webapp.tensorflow_logs import quiet_tensorflow  # noqa: E402

quiet_tensorflow()

from bench.lib.figures import write_json  # noqa: E402
from bench.lib.machine import machine_info  # noqa: E402
from bench.lib.tables import print_grid  # noqa: E402

BASE_KEY = "mobilenet-0.25-224"
LABELS = 5
PER_LABEL = 40  # generated pictures per label
PARTS = ("warm_start_s", "features_s", "transfer_s", "fine_tune_s")  # of the trainer's timings


def split_folder(source: Path, dest: Path, seed: int = 0) -> Path:
    """dest/{train,validation,test}/<label>/ from the first LABELS label folders, 60/20/20 per label."""
    rng = np.random.default_rng(seed)
    for folder in sorted(p for p in source.iterdir() if p.is_dir())[:LABELS]:
        files = sorted(p for p in folder.iterdir() if p.is_file())
        order = rng.permutation(len(files))
        n_train, n_val = round(len(files) * 0.6), round(len(files) * 0.2)
        for rank, i in enumerate(order):
            split = "train" if rank < n_train else "validation" if rank < n_train + n_val else "test"
            target = dest / split / folder.name
            target.mkdir(parents=True, exist_ok=True)
            (target / files[i].name).write_bytes(files[i].read_bytes())
    return dest


def generated_folder(dest: Path, per_label: int) -> Path:
    """LABELS folders of `per_label` smooth pictures, each label tinted its own way (then split as photos)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    tints = rng.uniform(0.3, 1.0, size=(LABELS, 3))
    for label in range(LABELS):
        folder = dest / f"label{label}"
        folder.mkdir(parents=True)
        for i in range(per_label):
            noise = rng.uniform(0, 255, size=(8, 8, 3))
            picture = Image.fromarray((noise * tints[label]).astype(np.uint8)).resize((224, 224), Image.BILINEAR)
            out = io.BytesIO()
            picture.save(out, format="JPEG", quality=90)
            (folder / f"{i}.jpg").write_bytes(out.getvalue())
    return dest


def tree_data(root: Path, labels: int):
    """The trainer's data for the first `labels` labels of a split tree (labels sorted).

    Image ids are those of the whole tree, as a dataset's image ids stay when a label is added.
    """
    from training.trainer import Example, TrainData

    names = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    parts: dict[str, list] = {}
    image_id = 0
    for split in ("train", "validation", "test"):
        parts[split] = []
        for index, name in enumerate(names):
            for path in sorted((root / split / name).iterdir()):
                if index < labels:
                    parts[split].append(Example(path, index, image_id))
                image_id += 1
    return TrainData(names[:labels], parts["train"], parts["validation"], parts["test"])


def base_and_lite(key: str, weights: Path | None, lite_folder: Path):
    from classifier import zoo
    from tests.helpers import reinitialise
    from training.lite_features import LiteFeatures
    from training.trainer import Base

    entry = zoo.get(key)
    if weights is None:

        def build():
            model = entry.build(None, include_top=False)
            reinitialise(model, 0)
            return model

        # No file: a fixed name stands for its hash (seed 0 always gives the same weights), as bench/train.py.
        return (Base(entry.key, entry.name, entry.input_size, build, entry.preprocess, "generated weights"),
                LiteFeatures(lite_folder, f"generated-{key}-seed-0"))  # fmt: skip
    base = Base(entry.key, entry.name, entry.input_size, lambda: entry.build(weights, include_top=False),
                entry.preprocess, weights.name)  # fmt: skip
    return base, LiteFeatures(lite_folder, hashlib.sha256(weights.read_bytes()).hexdigest())


def scenario(name: str, fine_tune: bool, root: Path, key: str, weights: Path | None, tmp: Path) -> dict:
    from classifier import zoo
    from training import base_layers, continuing, outcomes, trainer
    from training.trainer import TrainConfig

    first_layer = base_layers.default_fine_tune_from(zoo.get(key)) if fine_tune else None
    earlier_config = TrainConfig(fine_tune_epochs=5, fine_tune_from=first_layer) if fine_tune else TrainConfig()
    continue_config = TrainConfig(epochs=-(-earlier_config.epochs // 2))  # what the Continue form proposes
    base, lite = base_and_lite(key, weights, tmp / "lite")
    four, five = tree_data(root, LABELS - 1), tree_data(root, LABELS)

    def run(config, data, folder, start=None):
        started = time.perf_counter()
        result = trainer.run(config, base, data, tmp / f"{name}-{folder}", lite=lite, start=start)
        return result, time.perf_counter() - started

    earlier, _ = run(earlier_config, four, "earlier")
    outcomes.save_features(earlier.model_path.parent, _ids(four), earlier.features)  # as a job keeps them
    start = continuing.WarmStart(earlier.model_path, tuple(four.labels), first_layer, "the earlier job")
    over, _ = run(earlier_config, five, "start-over")
    cont, _ = run(continue_config, five, "continue", start)
    again = None
    if fine_tune:  # the base keeps the earlier job's fine-tuned layers; fine-tune them again for half as long
        again, _ = run(replace(continue_config, fine_tune_epochs=-(-earlier_config.fine_tune_epochs // 2),
                               fine_tune_from=first_layer), five, "continue-fine-tuning", start)  # fmt: skip

    def epochs(result, phase):
        return sum(1 for e in result.history if e.phase == phase)

    test_accuracy = {key: result.evaluation["test"]["accuracy"] for key, result in (("start_over", over),
                                                                                    ("continue", cont))}  # fmt: skip
    return {
        f"{name}_earlier_s": earlier.timings["total_s"],
        f"{name}_start_over_s": over.timings["total_s"],
        f"{name}_continue_s": cont.timings["total_s"],
        f"{name}_continue_over_start_over": cont.timings["total_s"] / over.timings["total_s"],
        f"{name}_warm_start_s": cont.timings.get("warm_start_s", 0.0),
        f"{name}_start_over_epochs": f"{epochs(over, trainer.PHASE_TRANSFER)}+{epochs(over, trainer.PHASE_FINE_TUNE)}",
        f"{name}_continue_epochs": f"{epochs(cont, trainer.PHASE_TRANSFER)}+{epochs(cont, trainer.PHASE_FINE_TUNE)}",
        f"{name}_start_over_test_accuracy": test_accuracy["start_over"],
        f"{name}_continue_test_accuracy": test_accuracy["continue"],
        f"{name}_start_over_first_val_loss": over.history[0].val_loss,
        f"{name}_continue_first_val_loss": cont.history[0].val_loss,
        f"{name}_features": cont.strategy.get("features", ""),
        f"{name}_reused_features": cont.strategy.get("reused_features", 0),
        **{f"{name}_{run_name}_{part}": result.timings.get(part, 0.0) for run_name, result in
           (("start_over", over), ("continue", cont)) for part in PARTS},
        **({f"{name}_continue_fine_tuning_s": again.timings["total_s"],
            f"{name}_continue_fine_tuning_over_start_over": again.timings["total_s"] / over.timings["total_s"],
            f"{name}_continue_fine_tuning_epochs": f"{epochs(again, trainer.PHASE_TRANSFER)}+"
                                                   f"{epochs(again, trainer.PHASE_FINE_TUNE)}",
            f"{name}_continue_fine_tuning_features_s": again.timings.get("features_s", 0.0),
            f"{name}_continue_fine_tuning_test_accuracy": again.evaluation["test"]["accuracy"]} if again else {}),
    }  # fmt: skip


def _ids(data) -> dict[str, list[int]]:
    return {split: [e.image_id for e in getattr(data, split)] for split in ("train", "validation", "test")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, help="a folder-per-label photo set (the first five labels are used)")
    parser.add_argument("--weights", type=Path, help="the base's no-head weights file (default: generated weights)")
    parser.add_argument("--base", default=BASE_KEY, help=f"zoo key of the base (default {BASE_KEY})")
    parser.add_argument("--per-label", type=int, default=PER_LABEL, help="generated pictures per label")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()
    started = time.perf_counter()
    figures: dict = {**machine_info(), "base": args.base, "weights": "file" if args.weights else "generated",
                     "data": "photos" if args.photos else f"generated, {args.per_label} per label"}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-continue-") as tmp_name:
        tmp = Path(tmp_name)
        source = args.photos or generated_folder(tmp / "generated", args.per_label)
        root = split_folder(source, tmp / "split")
        for name, fine_tune in (("transfer", False), ("finetuned", True)):
            figures.update(scenario(name, fine_tune, root, args.base, args.weights, tmp))
    figures["bench_s"] = time.perf_counter() - started
    rows = [(key, f"{value:.3f}" if isinstance(value, float) else str(value)) for key, value in figures.items()
            if key.startswith(("transfer_", "finetuned_"))]  # fmt: skip
    print_grid(f"Continue training vs starting over, {args.base}, {figures['data']} ({figures['bench_s']:.0f} s)",
               ("figure", "value"), rows)  # fmt: skip
    if args.json:
        write_json(args.json, {k: (round(v, 4) if isinstance(v, float) else v) for k, v in figures.items()})
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SystemExit:
        raise
    except Exception as exc:  # a benchmark reports its failure and exits non-zero
        print(f"bench/continue_training.py failed: {exc!r}", file=sys.stderr)
        sys.exit(2)
