"""Forms of the review of low-confidence predictions: the list's filters and the reviewer's choices."""

from __future__ import annotations

from django import forms

from classifier.models import Prediction
from training import review
from training.models import Dataset, Label, TrainedModel, max_labels
from training.names import InvalidName, clean_label_name, label_key, labels_full_message

GONE = "One of the chosen pictures is no longer on the list (it was deleted). Reload the page."


class ReviewFilterForm(forms.Form):
    """Which predictions the list shows: one model or all of the dataset's, below which confidence."""

    model = forms.ModelChoiceField(
        queryset=TrainedModel.objects.none(),
        required=False,
        empty_label="All models of this dataset",
        error_messages={"invalid_choice": "Choose one of this dataset's trained models."},
    )
    below = forms.IntegerField(
        label="Confidence below (%)",
        min_value=1,
        max_value=100,
        required=False,
        error_messages={
            "invalid": "The confidence is a whole percentage from 1 to 100.",
            "min_value": "The confidence is a whole percentage from 1 to 100.",
            "max_value": "The confidence is a whole percentage from 1 to 100.",
        },
        help_text="Predictions whose best guess is less sure than this are listed.",
    )
    page = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)

    def __init__(self, *args, dataset: Dataset, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["model"].queryset = dataset.trained_models.order_by("-created_at", "-id")
        self.default_below = round(review.confidence_threshold() * 100)
        self.fields["below"].initial = self.default_below
        self.fields["below"].widget.attrs.update(min=1, max=100)

    def choices(self) -> tuple[TrainedModel | None, int, int]:
        """The chosen model (None: all), the threshold in percent and the page; defaults for what is wrong."""
        data = self.cleaned_data if self.is_bound and self.is_valid() else {}
        return data.get("model"), data.get("below") or self.default_below, data.get("page") or 1


class ReviewActionForm(forms.Form):
    """The predictions a reviewer chose and, to add them, an existing label or the name of a new one."""

    prediction = forms.ModelMultipleChoiceField(
        queryset=Prediction.objects.none(),
        error_messages={
            "required": "Choose at least one picture first.",
            "invalid_choice": GONE,
            "invalid_pk_value": GONE,
        },
    )
    label = forms.ModelChoiceField(
        queryset=Label.objects.none(),
        required=False,
        empty_label="New label…",
        error_messages={"invalid_choice": "Choose one of this dataset's labels, or type the name of a new one."},
    )
    new_label = forms.CharField(label="New label name", max_length=200, required=False)

    def __init__(self, *args, dataset: Dataset, models: dict[str, TrainedModel], adding: bool, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.dataset = dataset
        self.adding = adding
        self.fields["prediction"].queryset = Prediction.objects.filter(model_key__in=list(models)).order_by(
            "-created_at", "-id"
        )
        if adding:
            self.fields["label"].queryset = dataset.labels.all()
        else:  # dismissing: the label fields of the same form are not read
            del self.fields["label"], self.fields["new_label"]

    def clean(self) -> dict:
        data = super().clean()
        if not self.adding or self.has_error("label"):
            return data
        label, typed = data.get("label"), " ".join((data.get("new_label") or "").split())
        if label is not None and typed and label_key(typed) != label_key(label.name):
            self.add_error("new_label", "Choose an existing label or type a new name, not both.")
        elif label is not None:
            data["target"] = label
        elif not typed:
            self.add_error("new_label", "Choose a label, or type the name of a new one.")
        else:
            self._new_label(data, typed)
        return data

    def _new_label(self, data: dict, typed: str) -> None:
        """A typed name: an existing label whatever its case, else a new one if the name is valid and there is room."""
        try:
            name = clean_label_name(typed)
        except InvalidName as error:
            self.add_error("new_label", str(error))
            return
        names = list(self.dataset.labels.values_list("name", flat=True))
        existing = next((n for n in names if label_key(n) == label_key(name)), None)
        if existing is None and len(names) >= max_labels():
            self.add_error("new_label", labels_full_message(len(names)))
            return
        data["target"] = self.dataset.labels.get(name=existing) if existing is not None else name

    def error_text(self) -> str:
        """Every error of the form as one line for the page."""
        return " ".join(str(message) for messages in self.errors.values() for message in messages)
