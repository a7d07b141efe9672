"""Forms of the Classify page and the API: every input goes through one of these."""

from __future__ import annotations

from django import forms
from django.conf import settings

from classifier import catalog

MAX_TOP_K = 20


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """A file field that accepts several files; per-file problems are reported per file later."""

    widget = MultipleFileInput

    def clean(self, data, initial=None):
        files = data if isinstance(data, list | tuple) else [data] if data else []
        files = [f for f in files if f]
        if not files:
            raise forms.ValidationError("Choose at least one image to classify.", code="required")
        if len(files) > settings.MAX_FILES_PER_REQUEST:
            raise forms.ValidationError(
                f"You sent {len(files)} files; send at most {settings.MAX_FILES_PER_REQUEST} at a time.",
                code="too_many",
            )
        return files


def model_choices(user=None) -> list[tuple[str, list[tuple[str, str]]]]:
    """Models the user can run now, grouped for the picker: recommended, trained, then by family."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for choice in catalog.available(user):
        groups.setdefault(choice.group, []).append((choice.key, choice.name))
    return list(groups.items())


class ModelNameField(forms.CharField):
    """A model by key or name ("MobileNetV2", "mobilenet-0.25-128", "trained-12"), cleaned to its choice.

    The form sets `user` so that trained models are found only for people who may use them.
    """

    user = None

    def clean(self, value):
        value = super().clean(value)
        if not value:
            value = catalog.default_key(self.user) or settings.DEFAULT_MODEL
        try:
            choice = catalog.find(value, self.user)
        except catalog.UnknownModel as exc:
            raise forms.ValidationError(str(exc), code="unknown_model") from None
        if not choice.available:
            message = (
                f"{choice.name} cannot run yet: its weights are not installed on this server. "
                "An administrator can install them from the Models page."
                if choice.kind == catalog.PRETRAINED
                else f"{choice.name} cannot run: {choice.unavailable_reason}"
            )
            raise forms.ValidationError(message, code="unavailable")
        return choice


class ClassifyForm(forms.Form):
    """The Classify page: images and a model picked from the ones this user can run."""

    model = ModelNameField(required=False, widget=forms.Select)
    images = MultipleFileField(label="Images")

    def __init__(self, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["model"].user = user
        self.fields["model"].widget.choices = model_choices(user)
        keys = {key for _, group in self.fields["model"].widget.choices for key, _ in group}
        asked = (self.initial or {}).get("model")
        self.fields["model"].initial = asked if asked in keys else catalog.default_key(user)
        self.initial.pop("model", None)
        # The drop zone counts the chosen files against the limit before anything is sent (static/js/app.js).
        self.fields["images"].widget.attrs.update(
            {"accept": "image/*", "multiple": True, "data-max-files": settings.MAX_FILES_PER_REQUEST}
        )


class ApiPredictForm(forms.Form):
    """`POST /api/v1/predict`: images (or image), optional model and top_k."""

    model = ModelNameField(required=False)
    images = MultipleFileField()
    top_k = forms.IntegerField(required=False, min_value=1, max_value=MAX_TOP_K)

    def __init__(self, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["model"].user = user

    def clean_top_k(self) -> int:
        return self.cleaned_data.get("top_k") or 5


class TokenForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        strip=True,
        help_text="What the token is for, so you recognise it later (e.g. 'nightly sorting script').",
    )
