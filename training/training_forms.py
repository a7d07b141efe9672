"""The form that starts a training job: the web page, the JSON API and `manage.py train` share it.

Every option has a default that works and help text a non-specialist can act on. Invalid
combinations are refused with a sentence that says what to change; the dataset's own problems
(too few labels, no validation images, an import running) are `jobs.refusals`.
"""

from __future__ import annotations

import math

from django import forms

from classifier import zoo
from training import jobs, trainer
from training.models import TrainingJob

DEFAULTS = trainer.TrainConfig()
AUGMENT_CHOICES = [
    ("flip", "Horizontal flip"),
    ("rotate", "Rotation (up to ±36°)"),
    ("zoom", "Zoom (up to ±10%)"),
]


class TrainingForm(forms.Form):
    """A base, and how to train on it; `config()` turns it into the trainer's configuration."""

    base = forms.CharField(
        label="Base model",
        widget=forms.Select,
        help_text="The pretrained network whose features the new model builds on. Listed when its weights file "
        "(without head, or the full model) is installed. Smaller is faster; larger is often more accurate.",
    )
    epochs = forms.IntegerField(
        label="Epochs",
        min_value=1,
        max_value=500,
        initial=DEFAULTS.epochs,
        help_text="Passes over the training images with the base frozen (transfer learning). 10 is a good start.",
    )
    learning_rate = forms.FloatField(
        label="Learning rate",
        min_value=1e-6,
        max_value=1.0,
        initial=DEFAULTS.learning_rate,
        help_text="Step size of the new head's training (Adam). 0.001 suits most datasets.",
    )
    fine_tune_epochs = forms.IntegerField(
        label="Fine-tuning epochs",
        min_value=0,
        max_value=500,
        initial=DEFAULTS.fine_tune_epochs,
        required=False,
        help_text="After transfer learning, also adjust the base's upper layers for this many epochs. 0: no "
        "fine-tuning. Slower, often a few points more accurate on images unlike ImageNet's.",
    )
    fine_tune_from = forms.IntegerField(
        label="Fine-tune from layer",
        min_value=0,
        required=False,
        help_text="The first layer of the base that learns during fine-tuning; lower layers stay as they are. "
        "Empty: the base's default (shown next to each base).",
    )
    fine_tune_learning_rate = forms.FloatField(
        label="Fine-tuning learning rate",
        min_value=1e-7,
        max_value=1.0,
        initial=DEFAULTS.fine_tune_learning_rate,
        help_text="Keep it low (0.0001): large steps would undo what the base learnt on ImageNet.",
    )
    batch_size = forms.IntegerField(
        label="Batch size",
        min_value=1,
        max_value=trainer.MAX_BATCH_SIZE,
        initial=DEFAULTS.batch_size,
        help_text="Images per training step. Lowered automatically if the job would not fit in the memory the "
        "server allows for training.",
    )
    augment = forms.MultipleChoiceField(
        label="Augmentation",
        choices=AUGMENT_CHOICES,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Show the model altered copies of the training images so it learns what does not matter. "
        f"While the base is frozen, {DEFAULTS.augment_views} views of each image are computed once.",
    )
    early_stopping = forms.BooleanField(
        label="Early stopping",
        required=False,
        initial=DEFAULTS.early_stopping,
        help_text=f"Stop a phase when the validation loss has not improved for {DEFAULTS.patience} epochs, and keep "
        "the best epoch's weights.",
    )
    class_weights = forms.BooleanField(
        label="Balance labels",
        required=False,
        initial=DEFAULTS.class_weights,
        help_text="Make every label count the same in training, however many images it has (class weights).",
    )
    seed = forms.IntegerField(
        label="Seed",
        min_value=0,
        max_value=2**31 - 1,
        required=False,
        initial=DEFAULTS.seed,
        help_text="The same seed, settings and data give the same model.",
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.options = {option.model.key: option for option in jobs.base_options()}
        self.fields["base"].widget.choices = [(key, _option_label(option)) for key, option in self.options.items()]
        if self.options and not self.is_bound:
            self.fields["base"].initial = "mobilenetv2" if "mobilenetv2" in self.options else next(iter(self.options))

    def clean_base(self) -> str:
        """Any zoo key or name ("MobileNetV2"); one that cannot be trained on is refused with the reason."""
        name = self.cleaned_data["base"]
        try:
            key = zoo.get(name).key
        except zoo.UnknownModel as exc:
            raise forms.ValidationError(str(exc)) from None
        refusal = jobs.base_refusal(key)
        if refusal:
            raise forms.ValidationError(refusal)
        return key

    def clean(self) -> dict:
        data = super().clean()
        option = self.options.get(data.get("base") or "")
        fine_tune_epochs = data.get("fine_tune_epochs") or 0
        data["fine_tune_epochs"] = fine_tune_epochs
        if option is None or self.errors:
            return data
        if fine_tune_epochs and data.get("fine_tune_from") is None:
            if option.default_fine_tune_from is None:
                self.add_error("fine_tune_from", "Say from which layer of the base fine-tuning starts.")
            data["fine_tune_from"] = option.default_fine_tune_from
        start = data.get("fine_tune_from")
        if fine_tune_epochs and option.layers is not None and start is not None and start >= option.layers:
            self.add_error(
                "fine_tune_from",
                f"{option.model.name} has {option.layers} layers without its head: start fine-tuning at a layer "
                f"from 0 to {option.layers - 1} (default {option.default_fine_tune_from}).",
            )
        if data.get("fine_tune_from") is not None and not fine_tune_epochs:
            data["fine_tune_from"] = None  # no fine-tuning: the layer does not matter
        return data

    def config(self) -> trainer.TrainConfig:
        """The trainer's configuration from the cleaned fields (call after is_valid())."""
        data = self.cleaned_data
        return trainer.TrainConfig(
            epochs=data["epochs"],
            fine_tune_epochs=data["fine_tune_epochs"],
            fine_tune_from=data.get("fine_tune_from") if data["fine_tune_epochs"] else None,
            learning_rate=data["learning_rate"],
            fine_tune_learning_rate=data["fine_tune_learning_rate"],
            batch_size=data["batch_size"],
            augment=tuple(data.get("augment") or ()),
            early_stopping=bool(data.get("early_stopping")),
            class_weights=bool(data.get("class_weights")),
            seed=data.get("seed") or 0,
        )

    def base_hints(self) -> list[dict]:
        """What the page shows next to each base: layers, default fine-tuning layer, which file is used."""
        return [
            {
                "key": key,
                "name": option.model.name,
                "layers": option.layers,
                "default_from": option.default_fine_tune_from,
                "with_head_only": option.with_head_only,
                "input_size": option.model.input_size,
            }
            for key, option in self.options.items()
        ]


class ContinueForm(TrainingForm):
    """The training form for continuing from an earlier job: its base is fixed, its settings prefilled.

    The head starts trained, so half the earlier job's epochs are proposed. A fine-tuned earlier
    model keeps its fine-tuned layers, so no more fine-tuning is proposed (its layer is filled in:
    an epoch count turns it on): fine-tuning is where a job's time goes (docs/PERFORMANCE.md,
    "Continuing a job"). Everything else starts as the earlier job had it.
    """

    def __init__(self, *args, earlier: TrainingJob, **kwargs) -> None:
        kwargs.setdefault("initial", continue_initial(earlier.config))
        super().__init__(*args, **kwargs)
        self.earlier = earlier
        self.fields["base"].disabled = True  # the posted value, if any, is ignored
        self.fields["base"].initial = earlier.base_key


def continue_initial(config: dict) -> dict:
    """The form's starting values for continuing a job that ran with `config`."""
    earlier = trainer.TrainConfig.from_dict(config)
    kept = ("learning_rate", "fine_tune_learning_rate", "batch_size", "early_stopping", "class_weights", "seed")
    initial = {name: getattr(earlier, name) for name in kept}
    initial["epochs"] = max(1, math.ceil(earlier.epochs / 2))
    initial["augment"] = list(earlier.augment)
    initial["fine_tune_epochs"] = 0
    if earlier.fine_tunes:
        initial["fine_tune_from"] = earlier.fine_tune_from
    return initial


def _option_label(option: jobs.BaseOption) -> str:
    label = f"{option.model.name} ({option.model.input_size} px"
    if option.layers is not None:
        label += f", {option.layers} layers"
    label += ")"
    if option.with_head_only:
        label += " · cut from the full model"
    return label
