"""How many layers each base has without its head, and where fine-tuning starts by default.

Read from `data/base_layers.json` (counted by `data/make_base_layers.py`) so the training form can
say "from layer 100 of 154" without importing TensorFlow in the web process. No Django.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from classifier import zoo

COUNTS_FILE = Path(__file__).with_name("data") / "base_layers.json"
# The guide fine-tunes MobileNetV2 from layer 100 of its 154: the upper third of the network.
# Other families start at the same depth, in proportion.
GUIDE_LAYER = {"MobileNetV2": 100}
FINE_TUNE_SHARE = 100 / 154


@lru_cache(maxsize=1)
def _counts() -> dict[str, int]:
    try:
        return json.loads(COUNTS_FILE.read_text())
    except (OSError, ValueError):
        return {}


def count(model: zoo.ZooModel) -> int | None:
    """Layers of the base without its head (None if this Keras was never counted)."""
    return _counts().get(model.key)


def default_fine_tune_from(model: zoo.ZooModel) -> int | None:
    """The first layer fine-tuning unfreezes by default: the guide's for MobileNetV2, else the same depth."""
    layers = count(model)
    if layers is None:
        return None
    if model.constructor in GUIDE_LAYER:
        return min(GUIDE_LAYER[model.constructor], layers - 1)
    return min(layers - 1, max(1, round(layers * FINE_TUNE_SHARE)))
