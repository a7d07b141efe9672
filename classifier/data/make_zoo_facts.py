"""Regenerate zoo_facts.json: what each registry entry's network looks like, counted on Keras itself.

For every entry of classifier/zoo.py: parameters (with its head), multiply-accumulates per image
at its input size, and the layout (layers with weights, parameters, shape digest) of its with-head
and without-head weights files. `classifier.weights` recognises files by these layouts, and the
Models page ranks speed by the multiply-accumulates. Builds every architecture with weights=None
(no download). Run from the project root after adding an entry or upgrading Keras:

    .venv/bin/python classifier/data/make_zoo_facts.py

tests/test_zoo.py checks the shipped file against the installed Keras.
"""

import gc
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from classifier import zoo  # noqa: E402
from classifier.layouts import count_macs, model_layout  # noqa: E402


def facts_for(model: zoo.ZooModel, notop_cache: dict) -> dict:
    import keras

    top = model.build(weights=None, include_top=True)
    facts = {
        "parameters": int(top.count_params()),
        "macs": count_macs(top),
        "top": model_layout(top).summary(),
    }
    del top
    if model.architecture not in notop_cache:
        notop = model.build(weights=None, include_top=False, input_size=max(model.min_input_size, 96))
        notop_cache[model.architecture] = model_layout(notop).summary()
        del notop
    facts["notop"] = notop_cache[model.architecture]
    keras.backend.clear_session()
    gc.collect()
    return facts


def build() -> dict[str, dict]:
    out, notop_cache = {}, {}
    for model in zoo.all_models():
        started = time.perf_counter()
        out[model.key] = facts_for(model, notop_cache)
        print(f"{model.key:32} {time.perf_counter() - started:6.1f} s", flush=True)
    return dict(sorted(out.items()))


if __name__ == "__main__":
    facts = build()
    zoo.FACTS_FILE.write_text(json.dumps(facts, indent=1, sort_keys=True) + "\n")
    print(f"wrote {zoo.FACTS_FILE}")
