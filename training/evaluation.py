"""How good a trained model is on images it never trained on: accuracy, per-label scores, confusion.

Plain NumPy, no Django, no Keras: it takes the model's probabilities and the true labels, so the
same code scores the validation split, the test split and (later) any other set of images.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Misclassified images kept per split for the gallery, most confident mistakes first.
MAX_MISTAKES = 200


def evaluate(probabilities: np.ndarray, truth: Sequence[int], labels: Sequence[str], image_ids: Sequence[int]) -> dict:
    """Scores of one split, as a JSON-ready dict.

    Keys: images, accuracy, labels (per label: name, support, precision, recall, f1; None when
    undefined, e.g. precision of a label never predicted), confusion (rows true, columns
    predicted), mistakes ([{image_id, true, predicted, confidence}], most confident first),
    macro_f1.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    truth_array = np.asarray(truth, dtype=np.int64)
    n = len(labels)
    if probabilities.ndim != 2 or probabilities.shape != (len(truth_array), n):
        raise ValueError(f"expected probabilities of shape ({len(truth_array)}, {n}), got {probabilities.shape}")
    if len(image_ids) != len(truth_array):
        raise ValueError("one image id per true label is needed")
    predicted = probabilities.argmax(axis=1) if len(truth_array) else np.zeros(0, dtype=np.int64)
    confusion = np.zeros((n, n), dtype=np.int64)
    np.add.at(confusion, (truth_array, predicted), 1)
    per_label = [_label_scores(confusion, i, name) for i, name in enumerate(labels)]
    f1s = [row["f1"] for row in per_label if row["f1"] is not None]
    wrong = np.flatnonzero(predicted != truth_array)
    confidence = probabilities[wrong, predicted[wrong]] if len(wrong) else np.zeros(0)
    order = np.argsort(-confidence, kind="stable")[:MAX_MISTAKES]
    mistakes = [
        {
            "image_id": int(image_ids[wrong[i]]),
            "true": int(truth_array[wrong[i]]),
            "predicted": int(predicted[wrong[i]]),
            "confidence": round(float(confidence[i]), 4),
        }
        for i in order
    ]
    images = len(truth_array)
    return {
        "images": images,
        "accuracy": round(float((predicted == truth_array).mean()), 4) if images else None,
        "macro_f1": round(float(np.mean(f1s)), 4) if f1s else None,
        "labels": per_label,
        "confusion": confusion.tolist(),
        "mistakes": mistakes,
        "mistake_count": len(wrong),
    }


def _label_scores(confusion: np.ndarray, i: int, name: str) -> dict:
    support = int(confusion[i].sum())
    predicted = int(confusion[:, i].sum())
    hits = int(confusion[i, i])
    precision = hits / predicted if predicted else None
    recall = hits / support if support else None
    if precision is None or recall is None:
        f1 = None
    else:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "name": name,
        "support": support,
        "precision": _round(precision),
        "recall": _round(recall),
        "f1": _round(f1),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)
