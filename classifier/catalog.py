"""One catalog of the models users pick: the ImageNet zoo and the models teams trained.

Forms, the Classify page, the API and the engine all ask this module, never the zoo or the
training app directly. Sources feed it: the zoo is registered here; the training app registers
its trained models when it is ready (`training.apps`), so `classifier` never imports `training`.

Keys never collide: zoo entries keep their keys ("mobilenetv2", "mobilenet-0.25-128") and trained
models live in their own key space ("trained-12"), so a trained model a user named "ResNet50"
never shadows the zoo's ResNet50.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Protocol

from django.conf import settings

from classifier import weights, zoo
from classifier.engine import ModelSpec

PRETRAINED = "pretrained"
TRAINED = "trained"
IMAGENET_INDEX = Path(__file__).with_name("data") / "imagenet_class_index.json"


class UnknownModel(KeyError):
    """A name no source knows (or a model this user may not use); str() is for the user."""

    def __str__(self) -> str:
        return str(self.args[0])


class ModelUnavailable(Exception):
    """A known model that cannot run here (its files are missing); str() is for the user."""


@dataclass(frozen=True)
class ModelChoice:
    """A model as users pick it, whatever its source: what pages show and how the engine builds it."""

    key: str
    name: str
    group: str  # heading in the model picker: "Recommended", "Trained models", a zoo family
    kind: str  # PRETRAINED or TRAINED
    input_size: int
    labels: Sequence[str]
    build: Callable[[], object]  # a keras.Model with softmax outputs (slow: loads weights)
    preprocess: Callable[[Any], Any]  # uint8 batch -> model input batch
    available: bool  # its files are installed: it can run now
    unavailable_reason: str = ""
    recommended: bool = False
    details: dict[str, Any] = field(default_factory=dict)  # extra facts the API lists (family, top-1, ...)
    weights_path: Path | None = None  # the file it is built from: its LiteRT conversion is keyed by it

    def spec(self) -> ModelSpec:
        """What the engine needs to load and serve it; raises ModelUnavailable with the reason."""
        if not self.available:
            raise ModelUnavailable(self.unavailable_reason)
        return ModelSpec(
            key=self.key,
            input_size=self.input_size,
            labels=self.labels,
            build=self.build,
            preprocess=self.preprocess,
            weights_path=self.weights_path,
        )

    def label_text(self, label: str) -> str:
        return display_label(self.key, label)


class Source(Protocol):
    """Something that knows models: the zoo, trained models."""

    def choices(self, user) -> Iterable[ModelChoice]:
        """Every model of this source that `user` may use (None: any user), installed or not."""

    def find(self, name: str, user) -> ModelChoice | None:
        """The model this name means for `user` (None: any user), or None when it means nothing here."""


_sources: list[Source] = []


def register(source: Source) -> None:
    """Add a source of models (once: registering the same source twice does nothing)."""
    if source not in _sources:
        _sources.append(source)


def find(name: str, user=None) -> ModelChoice:
    """The model for a key or name a user typed or picked; raises UnknownModel with a message."""
    name = (name or "").strip()
    for source in _sources:
        choice = source.find(name, user)
        if choice is not None:
            return choice
    raise UnknownModel(f"Unknown model {name!r}. {_what_can_run(user)}")


def _what_can_run(user) -> str:
    """The keys this user could send instead: the models that can run here and that they may use."""
    keys = [choice.key for choice in available(user)]
    if not keys:
        return "No model can run here yet: an administrator installs weights on the Models page."
    return f"Models you can use here: {', '.join(keys)}."


def resolve(key: str) -> ModelSpec:
    """How the engine builds the model `key` (access was checked when the request picked it)."""
    try:
        return find(key).spec()
    except UnknownModel as exc:
        raise ModelUnavailable(str(exc)) from None


def all_choices(user=None) -> list[ModelChoice]:
    """Every model `user` may use, installed or not, in picker order."""
    return sorted((choice for source in _sources for choice in source.choices(user)), key=_picker_order)


def available(user=None) -> list[ModelChoice]:
    """The models `user` can run now, in picker order: recommended, trained, then zoo families."""
    return [choice for choice in all_choices(user) if choice.available]


def _picker_order(choice: ModelChoice) -> tuple:
    if choice.recommended:
        return (0, "", 0)
    if choice.kind == TRAINED:
        return (1, "", -int(choice.key.rsplit("-", 1)[-1]))  # newest trained model first
    return (2, choice.group, 0)


def default_key(user=None) -> str | None:
    """The model a request uses when it names none: DEFAULT_MODEL if it can run, else the first that can."""
    keys = [choice.key for choice in available(user)]
    if settings.DEFAULT_MODEL in keys:
        return settings.DEFAULT_MODEL
    return keys[0] if keys else None


def is_trained_key(key: str) -> bool:
    return key.startswith(f"{TRAINED}-")


def display_label(model_key: str, label: str) -> str:
    """Keras's ImageNet class names use underscores ("fire_engine"); people read spaces.

    Labels of trained models are the dataset's own label names: shown exactly as typed.
    """
    return str(label) if is_trained_key(model_key) else str(label).replace("_", " ")


# --- The zoo as a source ----------------------------------------------------------------------
@lru_cache(maxsize=1)
def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ImageNet class names in Keras's order, shipped with the project (works offline)."""
    index = json.loads(IMAGENET_INDEX.read_text())
    return tuple(index[str(i)][1] for i in range(len(index)))


def zoo_choice(model: zoo.ZooModel, present: set[str] | None = None) -> ModelChoice:
    """A zoo entry as a choice; `present` is one listing of the weights folder (else it is checked)."""
    if present is None:
        path = weights.installed_path(model, settings.WEIGHTS_DIR)
    else:
        path = Path(settings.WEIGHTS_DIR) / model.top.filename if model.top.filename in present else None
    return ModelChoice(
        key=model.key,
        name=model.name,
        group="Recommended" if model.recommended else model.family,
        kind=PRETRAINED,
        input_size=model.input_size,
        labels=imagenet_labels(),
        build=partial(model.build, path),
        preprocess=model.preprocess,
        available=path is not None,
        unavailable_reason="" if path is not None else weights.missing_message(model),
        recommended=model.recommended,
        weights_path=path,
        details={
            "family": model.family,
            "top1": model.top1,
            "top5": model.top5,
            "parameters_m": model.parameters_m,
            "size_mb": model.size_mb,
        },
    )


class ZooSource:
    """The pretrained ImageNet models whose weights files the administrator installed."""

    def choices(self, user) -> list[ModelChoice]:
        try:
            present = weights.installed_filenames(settings.WEIGHTS_DIR)
        except OSError:
            present = set()  # an unreadable folder: no model can load; the Models page says why
        return [zoo_choice(model, present) for model in zoo.all_models()]

    def find(self, name: str, user) -> ModelChoice | None:
        try:
            return zoo_choice(zoo.get(name))
        except zoo.UnknownModel:
            return None


register(ZooSource())
