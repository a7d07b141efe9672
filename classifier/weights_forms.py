"""Forms of the Models page: the administrator's weights upload and download request."""

from __future__ import annotations

from django import forms

from classifier import zoo

HEAD_CHOICES = [
    ("", "Recognise from the file"),
    ("top", "With the ImageNet head (for Classify)"),
    ("notop", "Without the head (for training)"),
]


def model_choices() -> list:
    """Every zoo entry, grouped by family, after an option that lets the file say which it is."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for model in zoo.all_models():
        group = "Recommended" if model.recommended else model.family
        groups.setdefault(group, []).append((model.key, f"{model.name} ({model.key})"))
    return [("", "Recognise from its name and content"), *groups.items()]


def _head(value: str) -> bool | None:
    return {"top": True, "notop": False}.get(value)


class WeightsUploadForm(forms.Form):
    """A published Keras weights file (.h5) and, when its name does not say, which model it is for."""

    file = forms.FileField(
        label="Weights file",
        help_text="A published Keras application weights file (.h5), as downloaded from its Keras URL. "
        "Files of several hundred MB are easier to copy to the server and install with import_weights.",
        error_messages={"required": "Choose a weights file (.h5) to install."},
    )
    model = forms.ChoiceField(label="Model", required=False, choices=model_choices)
    head = forms.ChoiceField(label="Head", required=False, choices=HEAD_CHOICES)

    def clean_model(self) -> zoo.ZooModel | None:
        key = self.cleaned_data.get("model")
        return zoo.get(key) if key else None

    def clean_head(self) -> bool | None:
        return _head(self.cleaned_data.get("head", ""))


class DownloadForm(forms.Form):
    """Which of a model's two files to fetch: with the head (default) or without."""

    head = forms.ChoiceField(choices=[("top", "With head"), ("notop", "Without head")], required=False)

    def clean_head(self) -> bool:
        return self.cleaned_data.get("head") != "notop"
