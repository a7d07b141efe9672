"""Suspected label errors: images whose label a model that never saw them disagrees with, confidently.

Plain NumPy, no Django, no Keras. The rule is confident learning (Northcutt, Jiang and Chuang,
"Confident Learning: Estimating Uncertainty in Dataset Labels", JAIR 70, 2021):

1. Out-of-sample probabilities: the images are dealt into FOLDS stratified folds (seeded); for each
   fold a softmax head (multinomial logistic regression with L2, full-batch accelerated gradient
   descent) trains on the other folds' cached base features and predicts the held-out fold. Every
   image is scored by a head that never saw it, in seconds, because the base's features are cached.
2. Per-label thresholds: t_j is the mean probability of label j over the images labelled j (how
   sure the model is about its own label's images; a hard label gets a low bar).
3. The confident joint C[i, j]: images labelled i whose most probable label among those with
   p_j >= t_j is j. Calibrated so each row sums to the images labelled i, its off-diagonal cells
   estimate how many images labelled i are really j ("prune by noise rate", the paper's best
   variant in our measurements too: it finds more of the planted errors than the raw off-diagonal
   at the same precision); that many images labelled i, those with the largest p_j - p_i, are
   suspects with j suggested, unless the model's top answer is their own label anyway.
4. Ranked by the normalised margin p_suggested - p_given: the strongest disagreements first.

Why not the `cleanlab` package, which implements the method: its releases up to 2.7 are under the
AGPL-3.0, which does not suit a product companies run and extend in-house; since 2.8 it is
Apache-2.0, but it brings scikit-learn and pandas into an offline install for what is, given the
out-of-sample probabilities we compute ourselves anyway, a few lines of NumPy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

FOLDS = 5
SEED = 0
# Features are reduced to at most this many principal components before the heads train: on
# 2,000 generated images of 1,280 features with 10% of labels flipped, as many planted errors were
# found as with every feature, about 3x faster (each step reads a matrix that fits in the cache).
MAX_COMPONENTS = 256
L2 = 1e-3  # weight decay of the heads: keeps probabilities honest on small folds
STEPS = 150  # gradient steps per fold head (accelerated): more found no more label errors in our measurements


class SuspectError(ValueError):
    """The images cannot be scored (too few, one label); str() says why."""


@dataclass(frozen=True)
class Suspect:
    """One image whose label the out-of-sample model doubts. `index` is its row in the input."""

    index: int
    given: int
    suggested: int
    score: float  # p_suggested - p_given, in [-1, 1]: larger is a stronger disagreement
    given_probability: float
    suggested_probability: float


@dataclass(frozen=True)
class Scores:
    probabilities: np.ndarray  # (n, classes) out-of-sample
    thresholds: np.ndarray  # (classes,) t_j; NaN for a label with no image
    suspects: list[Suspect]  # strongest first


def find_suspects(
    features: np.ndarray, labels: np.ndarray, classes: int, *, folds: int = FOLDS, seed: int = SEED
) -> Scores:
    """Score every image (row of `features`, labelled `labels[i]` in 0..classes-1) and list the suspects."""
    labels = np.asarray(labels, dtype=np.int64)
    # One BLAS thread: the matrices are small, and threads that wait for cores the training worker
    # holds made scoring several times slower in our measurements (docs/PERFORMANCE.md).
    with threadpool_limits(limits=1, user_api="blas"):
        probabilities = out_of_sample_probabilities(features, labels, classes, folds=folds, seed=seed)
    thresholds = per_label_thresholds(probabilities, labels, classes)
    return Scores(probabilities, thresholds, rank_suspects(probabilities, labels, thresholds))


def out_of_sample_probabilities(
    features: np.ndarray, labels: np.ndarray, classes: int, *, folds: int = FOLDS, seed: int = SEED
) -> np.ndarray:
    """Each image's probabilities from a softmax head trained on the folds it is not in."""
    x = np.asarray(features, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    if x.ndim != 2 or len(x) != len(labels):
        raise SuspectError("There must be one feature row per label.")
    if len(labels) and (labels.min() < 0 or labels.max() >= classes):
        raise SuspectError("A label index is out of range.")
    counts = np.bincount(labels, minlength=classes)
    if (counts >= 2).sum() < 2:
        raise SuspectError("Label errors can only be looked for among at least 2 labels of 2 images or more.")
    folds = min(folds, int(counts.max()))
    x = _reduce(x)
    assignment = stratified_folds(labels, folds, seed)
    probabilities = np.zeros((len(labels), classes), dtype=np.float32)
    for fold in range(folds):
        held_out = assignment == fold
        weights, bias = fit_softmax(x[~held_out], labels[~held_out], classes)
        probabilities[held_out] = softmax(x[held_out] @ weights + bias)
    return probabilities


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold number of each image: each label's images shuffled (seeded) and dealt out in turn."""
    rng = np.random.default_rng(seed)
    assignment = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        rng.shuffle(members)
        # Each label starts where the previous one stopped, so small labels do not all land in fold 0.
        assignment[members] = (np.arange(len(members)) + offset) % folds
        offset += len(members)
    return assignment


def fit_softmax(
    x: np.ndarray, labels: np.ndarray, classes: int, *, l2: float = L2, steps: int = STEPS
) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression by Nesterov's accelerated gradient; returns (weights, bias).

    The step is 1/L with L an upper bound of the loss's curvature (half the largest eigenvalue
    of the features' second moment, Böhning's bound, plus the L2 term), so no line search is
    needed and every step costs two small matrix products.
    """
    n, d = x.shape
    targets = np.zeros((n, classes), dtype=np.float32)
    targets[np.arange(n), labels] = 1.0
    ones = np.ones((n, 1), dtype=np.float32)
    xb = np.hstack([x, ones])  # the bias is the last row of the weights, not decayed
    curvature = 0.5 * _largest_eigenvalue(xb) / n + l2
    step = 1.0 / curvature
    decay = np.full((d + 1, 1), l2, dtype=np.float32)
    decay[-1] = 0.0
    w = np.zeros((d + 1, classes), dtype=np.float32)
    previous = w
    momentum = 1.0
    for _ in range(steps):
        next_momentum = (1.0 + np.sqrt(1.0 + 4.0 * momentum * momentum)) / 2.0
        look = w + ((momentum - 1.0) / next_momentum) * (w - previous)
        gradient = xb.T @ (softmax(xb @ look) - targets) / n + decay * look
        previous, w = w, (look - step * gradient).astype(np.float32)
        momentum = next_momentum
    return w[:-1], w[-1]


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=1, keepdims=True)
    return shifted


def per_label_thresholds(probabilities: np.ndarray, labels: np.ndarray, classes: int) -> np.ndarray:
    """t_j: the mean out-of-sample probability of label j over the images labelled j (NaN without any)."""
    thresholds = np.full(classes, np.nan, dtype=np.float64)
    for j in range(classes):
        members = labels == j
        if members.any():
            thresholds[j] = float(probabilities[members, j].mean())
    return thresholds


def rank_suspects(probabilities: np.ndarray, labels: np.ndarray, thresholds: np.ndarray) -> list[Suspect]:
    """The images the calibrated confident joint says are mislabelled, strongest disagreement first.

    The paper's "prune by noise rate": the confident joint, calibrated so each row sums to the
    number of images with that label, estimates how many images labelled i belong to j; that many
    images labelled i, those with the largest p_j - p_i, are suspects with j suggested. (Counting
    only the images above the thresholds finds fewer: a mislabelled image pulls its own
    probabilities down.) An image whose top answer is its own label is never a suspect.
    """
    n, classes = probabilities.shape if probabilities.ndim == 2 else (0, 0)
    if not n:
        return []
    joint = confident_joint(probabilities, labels, thresholds)
    per_label = np.bincount(labels, minlength=classes).astype(np.float64)
    calibrated = joint / np.maximum(joint.sum(axis=1, keepdims=True), 1) * per_label[:, None]
    suggested = np.full(n, -1, dtype=np.int64)
    for given in range(classes):
        members = np.flatnonzero(labels == given)
        for other in range(classes):
            count = round(float(calibrated[given, other])) if other != given else 0
            if count <= 0:
                continue
            margin = probabilities[members, other] - probabilities[members, given]
            chosen = members[np.argsort(-margin, kind="stable")[:count]]
            # Chosen for several labels: the one the model believes most.
            better = (suggested[chosen] < 0) | (
                probabilities[chosen, other] > probabilities[chosen, np.maximum(suggested[chosen], 0)]
            )
            suggested[chosen[better]] = other
    # An image alone in its label cannot be judged: no other image shows the head what the label looks like.
    judged = (suggested >= 0) & (per_label[labels] >= 2) & (probabilities.argmax(axis=1) != labels)
    found = np.flatnonzero(judged)
    given_p = probabilities[found, labels[found]]
    suggested_p = probabilities[found, suggested[found]]
    margin = suggested_p - given_p
    order = np.lexsort((found, -margin))  # ties: the earlier row first, so the list is stable
    return [
        Suspect(
            index=int(found[k]),
            given=int(labels[found[k]]),
            suggested=int(suggested[found[k]]),
            score=round(float(margin[k]), 6),
            given_probability=round(float(given_p[k]), 6),
            suggested_probability=round(float(suggested_p[k]), 6),
        )
        for k in order
    ]


def confident_joint(probabilities: np.ndarray, labels: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """C[i, j]: images labelled i counted for j, the most probable label among those above their threshold.

    A label with no image has no threshold and is never counted (nothing shows what it looks like).
    """
    classes = probabilities.shape[1]
    above = probabilities >= np.nan_to_num(thresholds, nan=np.inf)[None, :]
    counted = np.where(above, probabilities, -1.0).argmax(axis=1)
    confident = above.any(axis=1)
    joint = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(joint, (labels[confident], counted[confident]), 1)
    return joint


def _reduce(x: np.ndarray) -> np.ndarray:
    """Centred features on their leading principal components, scaled to unit mean square.

    Unsupervised (labels are not used), so it may see every image without leaking a held-out label.
    """
    x = x - x.mean(axis=0, keepdims=True)
    if x.shape[1] > MAX_COMPONENTS and x.shape[0] > MAX_COMPONENTS:
        # The top components from the (d x d) second moment: cheaper than an SVD of the rows.
        _, vectors = np.linalg.eigh(x.T @ x)
        x = x @ vectors[:, ::-1][:, :MAX_COMPONENTS]
    scale = float(np.sqrt((x * x).sum(axis=1).mean())) or 1.0
    return (x / scale).astype(np.float32)


def _largest_eigenvalue(x: np.ndarray, iterations: int = 30) -> float:
    """Largest eigenvalue of x.T @ x by power iteration (an upper estimate is all the step needs)."""
    rng = np.random.default_rng(0)
    v = rng.standard_normal(x.shape[1]).astype(np.float32)
    value = 0.0
    for _ in range(iterations):
        w = x.T @ (x @ v)
        value = float(np.linalg.norm(w))
        if value == 0.0:
            return 1.0
        v = w / value
    return value * 1.05  # power iteration approaches from below
