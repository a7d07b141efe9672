"""The int8 card's form: what a pretrained model is calibrated on (a dataset, or a zip of pictures)."""

from __future__ import annotations

from django import forms
from django.core.files.uploadedfile import UploadedFile

from classifier import int8
from classifier.models import Int8Calibration

CHOOSE_ONE = "Choose a dataset, or upload a zip of pictures, to calibrate int8 on."


class Int8CalibrationForm(forms.Form):
    """Exactly one source: a dataset this user may see, or a zip of typical pictures."""

    dataset = forms.TypedChoiceField(
        label="Dataset",
        required=False,
        coerce=int,
        empty_value=None,
        help_text="Its pictures, whatever their labels: choose one that looks like what this model will be sent.",
    )
    archive = forms.FileField(
        label="Or a zip of pictures",
        required=False,
        widget=forms.ClearableFileInput(attrs={"accept": ".zip,application/zip"}),
        help_text=f"A few hundred typical photos, in any folders (at least {int8.MIN_IMAGES}). It is read by the "
        "worker and then deleted.",
    )

    def __init__(self, *args, datasets: list[tuple[int, str, int]], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.datasets = {pk: (name, count) for pk, name, count in datasets}
        self.fields["dataset"].choices = [("", "—")] + [
            (pk, f"{name} ({count} image{'s' if count != 1 else ''})") for pk, name, count in datasets
        ]

    def clean_dataset(self) -> int | None:
        pk = self.cleaned_data.get("dataset")
        if pk is not None and self.datasets[pk][1] < int8.MIN_IMAGES:
            name, count = self.datasets[pk]
            raise forms.ValidationError(
                f"“{name}” has {count} image{'s' if count != 1 else ''}; calibration needs at least {int8.MIN_IMAGES}."
            )
        return pk

    def clean_archive(self) -> UploadedFile | None:
        archive = self.cleaned_data.get("archive")
        if archive:
            try:
                int8.check_zip(archive)
            except int8.Int8Refused as refusal:
                raise forms.ValidationError(str(refusal)) from None
        return archive

    def clean(self) -> dict:
        data = super().clean()
        if self.errors:
            return data
        if data.get("dataset") is None and not data.get("archive"):
            raise forms.ValidationError(CHOOSE_ONE)
        if data.get("dataset") is not None and data.get("archive"):
            raise forms.ValidationError("Choose either a dataset or a zip, not both.")
        return data

    def source(self) -> dict:
        """What `int8.request_calibration` takes for the chosen source."""
        pk, archive = self.cleaned_data.get("dataset"), self.cleaned_data.get("archive")
        if pk is not None:
            return {"kind": Int8Calibration.Source.DATASET, "source": f"the dataset “{self.datasets[pk][0]}”",
                    "dataset_id": pk}  # fmt: skip
        return {
            "kind": Int8Calibration.Source.UPLOAD,
            "source": f"the uploaded zip {archive.name[-200:]}",
            "upload": archive,
        }
