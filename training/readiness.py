"""What a user should fix before training on a dataset. Plain Python: counts in, sentences out."""

from __future__ import annotations

from collections.abc import Mapping

from training.splits import VALIDATION

# Below this many images a label teaches a model little and validates nothing reliably.
MIN_IMAGES_PER_LABEL = 10
# Largest label / smallest label above this ratio: the model learns to favour the large one.
UNBALANCED_RATIO = 3.0


def warnings(counts: Mapping[str, Mapping[str, int]], *, validation_percent: int) -> list[str]:
    """Warnings for a dataset given images per label and split ({label: {split: n}})."""
    totals = {label: sum(by_split.values()) for label, by_split in counts.items()}
    if not totals or not any(totals.values()):
        return ["The dataset has no images yet: add at least two labels with images before training."]
    found = []
    if len(totals) == 1:
        found.append("The dataset has one label: a classifier needs at least two labels to choose between.")
    for label, total in sorted(totals.items()):
        if total == 0:
            found.append(f"Label “{label}” has no images: add some or delete the label.")
        elif total < MIN_IMAGES_PER_LABEL or (validation_percent and counts[label].get(VALIDATION, 0) == 0):
            found.append(
                f"Label “{label}” has {total} image{'s' if total != 1 else ''}: too few for a validation split. "
                f"Add images until it has at least {MIN_IMAGES_PER_LABEL}."
            )
    filled = {label: n for label, n in totals.items() if n > 0}
    if len(filled) >= 2:
        big = max(filled, key=lambda k: (filled[k], k))
        small = min(filled, key=lambda k: (filled[k], k))
        if filled[big] / filled[small] > UNBALANCED_RATIO:
            found.append(
                f"The labels are unbalanced: “{big}” has {filled[big]} images, “{small}” only {filled[small]} "
                f"({filled[big] / filled[small]:.0f}×). The model will favour the larger label: add images to "
                "the smaller ones, or remove some from the larger."
            )
    return found
