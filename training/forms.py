"""Forms of the datasets pages. Every limit is checked here with a sentence for the user."""

from __future__ import annotations

import secrets
from collections.abc import Callable

from django import forms
from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction

from training import archives, imports
from training.models import Dataset, Label, Split, max_labels
from training.names import InvalidName, clean_label_name, label_key, labels_full_message
from webapp.sizes import human_size


def save_unless_taken(form: forms.BaseForm, save: Callable[[], object]) -> bool:
    """Run `save` and say whether it saved; when another request took the same unique name first, it did
    not, and `form` now carries the error.

    Validation looks for a clash before saving, but two quick submits can both pass it: the slower
    one's write then breaks a unique constraint. Validating again now sees the other request's row
    and gives the very sentence a plain clash gives. An IntegrityError validation cannot explain
    is not a lost race and is raised as it is.
    """
    try:
        with transaction.atomic():
            save()
    except IntegrityError:
        form.full_clean()
        if form.errors:
            return False
        raise
    return True


class DatasetForm(forms.ModelForm):
    """Create or rename a dataset and choose the shares of its splits."""

    class Meta:
        model = Dataset
        fields = ["name", "description", "validation_percent", "test_percent"]
        widgets = {"description": forms.Textarea(attrs={"rows": 3})}

    def clean_name(self) -> str:
        name = " ".join(self.cleaned_data["name"].split())
        if not name:
            raise forms.ValidationError("Give the dataset a name.")
        return name


class DatasetEditForm(DatasetForm):
    """Edit a dataset; new shares re-draw the splits unless the user keeps the images where they are."""

    redraw = forms.BooleanField(
        label="Re-draw the splits now with these shares",
        required=False,
        initial=True,
        help_text="Otherwise every image keeps its split (new images follow the new shares), and the dataset "
        "page offers the re-draw.",
    )


class LabelForm(forms.Form):
    name = forms.CharField(max_length=200, help_text="Becomes a folder name in exports and the class name of models.")
    description = forms.CharField(max_length=500, required=False)

    def __init__(self, *args, dataset: Dataset, instance: Label | None = None, **kwargs) -> None:
        if instance is not None:
            kwargs.setdefault("initial", {"name": instance.name, "description": instance.description})
        super().__init__(*args, **kwargs)
        self.dataset = dataset
        self.instance = instance

    def clean_name(self) -> str:
        try:
            name = clean_label_name(self.cleaned_data["name"])
        except InvalidName as error:
            raise forms.ValidationError(str(error)) from None
        others = self.dataset.labels.all()
        if self.instance is not None:
            others = others.exclude(pk=self.instance.pk)
        names = list(others.values_list("name", flat=True))
        clash = next((n for n in names if label_key(n) == label_key(name)), None)
        if clash is not None:
            raise forms.ValidationError(
                f"This dataset already has a label “{clash}” (names ignore case and surrounding spaces)."
            )
        if self.instance is None and len(names) >= max_labels():
            raise forms.ValidationError(labels_full_message(len(names)))
        return name


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleImageField(forms.FileField):
    """Several files in one field (Django's documented pattern); each is checked by the upload code.

    Empty files are let through: one would otherwise refuse the whole upload with a sentence naming
    no file, where the upload report rejects just that file, by name, and keeps the others.
    """

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("widget", MultipleFileInput(attrs={"accept": "image/*", "multiple": True}))
        kwargs.setdefault("allow_empty_file", True)
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None) -> list[UploadedFile]:
        single = super().clean
        if isinstance(data, (list, tuple)) and data:
            return [single(d, initial) for d in data]
        return [single(data, initial)]  # nothing sent: raises the "required" message


class UploadForm(forms.Form):
    """Images into an existing label, or into a new one named here."""

    label = forms.ModelChoiceField(queryset=Label.objects.none(), required=False, empty_label="— new label —")
    new_label = forms.CharField(label="New label name", max_length=200, required=False)
    images = MultipleImageField(
        error_messages={"required": "Choose one or more images to upload."},
        help_text="JPEG, PNG, GIF, WebP, BMP or TIFF.",
    )

    def __init__(self, *args, dataset: Dataset, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.dataset = dataset
        self.fields["label"].queryset = dataset.labels.all()
        self.fields["images"].help_text = (
            f"JPEG, PNG, GIF, WebP, BMP or TIFF; up to {settings.MAX_FILES_PER_REQUEST} files of "
            f"{human_size(settings.MAX_UPLOAD_BYTES)} each. For more, import a zip."
        )

    def keep_chosen_files(self) -> None:
        """A refused upload keeps the files the user chose: htmx swaps the form but not this input."""
        self.fields["images"].widget.attrs["hx-preserve"] = "true"

    def clean_images(self) -> list[UploadedFile]:
        files = self.cleaned_data["images"]
        if len(files) > settings.MAX_FILES_PER_REQUEST:
            raise forms.ValidationError(
                f"You chose {len(files)} files; at most {settings.MAX_FILES_PER_REQUEST} go in one upload. "
                "Upload them in smaller groups, or import a zip."
            )
        return files

    def clean(self) -> dict:
        data = super().clean()
        label, new_label = data.get("label"), (data.get("new_label") or "").strip()
        if label is None and not new_label:
            self.add_error("new_label", "Choose a label, or type the name of a new one.")
        elif label is None:
            try:
                data["target"] = clean_label_name(new_label)
            except InvalidName as error:
                self.add_error("new_label", str(error))
            else:
                self._check_room(data["target"])
        else:
            data["target"] = label
        return data

    def _check_room(self, name: str) -> None:
        """A new label needs room under the dataset's label cap; an existing one (any case) does not."""
        names = list(self.dataset.labels.values_list("name", flat=True))
        if len(names) >= max_labels() and label_key(name) not in {label_key(n) for n in names}:
            self.add_error("new_label", labels_full_message(len(names)))


class ImportForm(forms.Form):
    """A zip in the folder-per-class layout. Its directory is checked here, before any job starts."""

    archive = forms.FileField(
        label="Zip file",
        error_messages={"required": "Choose a zip file to import."},
        widget=forms.ClearableFileInput(attrs={"accept": ".zip,application/zip"}),
    )

    def clean_archive(self) -> UploadedFile:
        archive = self.cleaned_data["archive"]
        limit = settings.IMPORT_MAX_ZIP_BYTES
        if archive.size > limit:
            raise forms.ValidationError(
                f"The zip is {human_size(archive.size)}; the limit is {human_size(limit)}. {archives.SPLIT_OR_ASK}"
            )
        try:
            with archives.open_zip(archive) as zf:
                archives.inspect(zf, imports.zip_limits())
        except archives.ArchiveError as error:
            raise forms.ValidationError(str(error)) from None
        finally:
            archive.seek(0)
        return archive


class RedrawForm(forms.Form):
    seed = forms.IntegerField(
        min_value=0,
        max_value=2**31 - 1,
        required=False,
        help_text="Leave empty for a new random seed; the same seed always gives the same splits.",
    )

    def clean_seed(self) -> int:
        seed = self.cleaned_data.get("seed")
        return secrets.randbelow(1_000_000) if seed is None else seed


class ImageForm(forms.Form):
    """Per-image actions on the dataset page: move to another label, change its split."""

    label = forms.ModelChoiceField(queryset=Label.objects.none(), empty_label=None)
    split = forms.ChoiceField(choices=Split.choices)

    def __init__(self, *args, dataset: Dataset, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["label"].queryset = dataset.labels.all()


class GridFilterForm(forms.Form):
    """Filters of the thumbnail grid; bad values are ignored rather than refused."""

    label = forms.ModelChoiceField(queryset=Label.objects.none(), required=False, empty_label="All labels")
    split = forms.ChoiceField(choices=[("", "All splits"), *Split.choices], required=False)
    training = forms.ChoiceField(
        choices=[("", "All images"), ("excluded", "Excluded only"), ("included", "Included only")], required=False
    )

    def __init__(self, *args, dataset: Dataset, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["label"].queryset = dataset.labels.all()
