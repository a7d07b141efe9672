"""Count the layers of every zoo architecture without its head: `base_layers.json`.

The training form shows where fine-tuning starts ("from layer 100 of 154") without importing
TensorFlow in the web process, so the counts are measured once here and shipped as data. Run
again after a Keras upgrade (a test checks a few entries against the installed Keras):

    .venv/bin/python training/data/make_base_layers.py
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

OUT = Path(__file__).with_name("base_layers.json")


def main() -> None:
    import keras

    from classifier import zoo

    counts: dict[str, int] = {}
    seen: dict[tuple, int] = {}
    for model in zoo.all_models():
        arch = model.architecture
        if arch not in seen:
            base = model.build(weights=None, include_top=False, input_size=max(model.min_input_size, 96))
            seen[arch] = len(base.layers)
            del base
            keras.backend.clear_session()
            print(f"{model.constructor} {dict(model.options)}: {seen[arch]} layers", flush=True)
        counts[model.key] = seen[arch]
    OUT.write_text(json.dumps(counts, indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT} ({len(counts)} entries)")


if __name__ == "__main__":
    main()
