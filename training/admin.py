"""The Django admin for datasets: counts, inlines, thumbnails, filters and bulk actions.

Staff manage everything (the issue's rule), so each admin grants its permissions to active staff
users instead of relying on per-model permission rows; non-staff never reach the admin at all.
Files follow the rows: deleting images or datasets here removes their files once it commits.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected as django_delete_selected
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.db.models import Count, QuerySet
from django.db.models.functions import Lower
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html

from training import imports
from training.forms import ImportForm
from training.models import Dataset, DatasetImage, ImageChange, ImportJob, Label, Split, TrainedModel, TrainingJob
from training.names import label_key
from training.splits import Shares

# The whole admin says whose it is (the project has one admin site, and this app is its main user).
admin.site.site_header = "TransferLab administration"
admin.site.site_title = "TransferLab admin"
admin.site.index_title = "Site administration · TransferLab"


class StaffManageMixin:
    """Staff manage every dataset, label, image and import (see the module docstring)."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.is_staff

    def has_view_permission(self, request: HttpRequest, obj=None) -> bool:
        return self.has_module_permission(request)

    def has_add_permission(self, request: HttpRequest, *args) -> bool:
        return self.has_module_permission(request)

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return self.has_module_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return self.has_module_permission(request)


class UniqueNameRaceMixin:
    """Two administrators saving the same new name at once: the slower save breaks a unique
    constraint after validation passed. Say so and keep the admin on the form, never a 500."""

    race_message = "Someone saved the same name at the same moment, so this was not saved. Choose another name."

    def changeform_view(self, request: HttpRequest, object_id=None, form_url="", extra_context=None):
        try:
            with transaction.atomic():
                return super().changeform_view(request, object_id, form_url, extra_context)
        except IntegrityError:
            self.message_user(request, self.race_message, messages.ERROR)
            return redirect(request.get_full_path())


def _thumbnail(image: DatasetImage, side: int = 64) -> str:
    return format_html(
        '<img src="{}" alt="" width="{}" height="{}" style="object-fit: cover; border-radius: 4px;" loading="lazy">',
        reverse("training:image_thumbnail", args=[image.pk]),
        side,
        side,
    )


class LabelInlineFormSet(forms.BaseInlineFormSet):
    """Two new rows "cats" and "Cats " in one save would only meet the database constraint."""

    def clean(self) -> None:
        super().clean()
        seen: set[str] = set()
        for form in self.forms:
            name = form.cleaned_data.get("name") if hasattr(form, "cleaned_data") else None
            if not name or form.cleaned_data.get("DELETE"):
                continue
            if label_key(name) in seen:
                raise forms.ValidationError(f"Two labels are named “{name}”: label names ignore case and spaces.")
            seen.add(label_key(name))


class LabelInline(StaffManageMixin, admin.TabularInline):
    model = Label
    formset = LabelInlineFormSet
    fields = ["name", "description", "image_count"]
    readonly_fields = ["image_count"]
    extra = 0
    show_change_link = True

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).annotate(n_images=Count("images"))

    @admin.display(description="images")
    def image_count(self, label: Label) -> int:
        return getattr(label, "n_images", 0)


def busy_message(dataset: Dataset) -> str | None:
    """Why `dataset` cannot be deleted now, with a link to the job in the way; None when it can.

    An import would write into a folder being removed, and a training job reads the images.
    """
    job = dataset.active_import()
    if job is not None:
        return format_html(
            '“{}” cannot be deleted while an import is running (<a href="{}">{}</a>). '
            "Wait for it to finish or cancel it, then delete the dataset.",
            dataset.name,
            reverse("training:import_detail", args=[dataset.pk, job.pk]),
            job.archive_name,
        )
    training = dataset.active_training()
    if training is not None:
        return format_html(
            '“{}” cannot be deleted while a model is being trained on it (<a href="{}">training job {}</a>). '
            "Wait for it to finish or cancel it, then delete the dataset.",
            dataset.name,
            reverse("training:job_detail", args=[training.pk]),
            training.pk,
        )
    return None


@admin.register(Dataset)
class DatasetAdmin(UniqueNameRaceMixin, StaffManageMixin, admin.ModelAdmin):
    list_display = ["name", "label_count", "image_count", "created_by", "updated_at"]
    search_fields = ["name", "description"]
    list_filter = ["created_by"]
    readonly_fields = ["created_at", "updated_at", "split_seed", "folder_path"]
    fields = [
        "name",
        "description",
        "created_by",
        ("validation_percent", "test_percent"),
        "split_seed",
        ("created_at", "updated_at"),
        "folder_path",
    ]
    inlines = [LabelInline]
    actions = ["delete_selected"]
    change_form_template = "admin/training/dataset/change_form.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("created_by").with_counts()

    @admin.display(description="labels", ordering="label_count")
    def label_count(self, dataset: Dataset) -> int:
        return dataset.label_count

    @admin.display(description="images", ordering="image_count")
    def image_count(self, dataset: Dataset) -> int:
        return dataset.image_count

    @admin.display(description="files")
    def folder_path(self, dataset: Dataset) -> str:
        return str(dataset.folder) if dataset.pk else "—"

    def save_model(self, request: HttpRequest, obj: Dataset, form, change: bool) -> None:
        if not change and obj.created_by_id is None:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)
        if change and {"validation_percent", "test_percent"} & set(form.changed_data):
            # The images keep their splits; the dataset page says so and offers the re-draw.
            obj.keep_splits_drawn_with(
                Shares(validation=form.initial["validation_percent"], test=form.initial["test_percent"])
            )

    def delete_view(self, request: HttpRequest, object_id: str, extra_context=None) -> HttpResponse:
        """A busy dataset is not deleted, and the page says why instead of "no permission"."""
        dataset = self.get_object(request, unquote(object_id))
        reason = busy_message(dataset) if dataset is not None else None
        if reason:
            self.message_user(request, reason, messages.ERROR)
            return redirect("admin:training_dataset_change", dataset.pk)
        return super().delete_view(request, object_id, extra_context)

    @admin.action(permissions=["delete"], description="Delete selected datasets")
    def delete_selected(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        """Django's bulk delete, refused whole (with the reasons) when a selected dataset is busy."""
        reasons = [reason for dataset in queryset if (reason := busy_message(dataset))]
        for reason in reasons:
            self.message_user(request, reason, messages.ERROR)
        if reasons:
            return None
        return django_delete_selected(self, request, queryset)

    def get_urls(self):
        custom = [
            path(
                "<int:pk>/import/",
                self.admin_site.admin_view(self.import_zip_view),
                name="training_dataset_import",
            )
        ]
        return custom + super().get_urls()

    def import_zip_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """Start a zip import from the admin; the progress page is the app's own."""
        dataset = get_object_or_404(Dataset, pk=pk)
        if not self.has_change_permission(request, dataset):
            raise PermissionDenied
        form = ImportForm(*((request.POST, request.FILES) if request.method == "POST" else ()))
        if request.method == "POST" and form.is_valid():
            try:
                job = imports.start_import(dataset, form.cleaned_data["archive"], request.user)
            except imports.ImportRefused as refusal:
                form.add_error("archive", str(refusal))
            else:
                url = reverse("training:import_detail", args=[dataset.pk, job.pk])
                self.message_user(
                    request,
                    format_html('Import of “{}” queued. <a href="{}">Follow its progress</a>.', job.archive_name, url),
                    messages.SUCCESS,
                )
                return redirect("admin:training_importjob_change", job.pk)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Import a zip into {dataset}",
            "opts": self.model._meta,
            "original": dataset,
            "form": form,
            "active_import": dataset.active_import(),
        }
        return TemplateResponse(request, "admin/training/dataset/import_zip.html", context)


class LabelFilter(admin.RelatedFieldListFilter):
    """Labels of the images listed, as "Dataset / label" (many datasets have a "cats"); only the chosen
    dataset's labels, by their own names, once the list is filtered by dataset."""

    def field_choices(self, field, request: HttpRequest, model_admin) -> list[tuple[int, str]]:
        labels = Label.objects.filter(pk__in=model_admin.get_queryset(request).values("label_id"))
        dataset_id = request.GET.get("dataset__id__exact", "")
        if dataset_id.isdigit():
            return [(label.pk, label.name) for label in labels.filter(dataset_id=dataset_id)]
        labels = labels.select_related("dataset").order_by(Lower("dataset__name"), Lower("name"))
        return [(label.pk, f"{label.dataset.name} / {label.name}") for label in labels]


class MoveToLabelForm(forms.Form):
    label = forms.ModelChoiceField(queryset=Label.objects.none(), label="Move to label")

    def __init__(self, *args, dataset: Dataset, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["label"].queryset = dataset.labels.all()


@admin.register(DatasetImage)
class DatasetImageAdmin(StaffManageMixin, admin.ModelAdmin):
    # Narrow columns (a wrapping file name, a 48 px thumbnail, the day added) fit 1280 px beside the filters.
    list_display = ["thumbnail", "original_name", "dataset", "label", "split", "dimensions", "added"]
    list_display_links = ["thumbnail", "original_name"]
    list_filter = ["dataset", ("label", LabelFilter), "split"]
    search_fields = ["original_name", "sha256"]
    list_select_related = ["dataset", "label", "added_by"]
    list_per_page = 50
    actions = ["move_to_label", "set_split_train", "set_split_validation", "set_split_test", "delete_selected"]
    fields = ["preview", "dataset", "label", "split", "original_name", "format", "dimensions", "size_bytes",
              "sha256", "added_by", "created_at"]  # fmt: skip
    readonly_fields = ["preview", "dataset", "original_name", "format", "dimensions", "size_bytes", "sha256",
                       "added_by", "created_at"]  # fmt: skip

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # images arrive through uploads and zip imports, which verify them

    @admin.display(description="image")
    def thumbnail(self, image: DatasetImage) -> str:
        return _thumbnail(image, 48)

    @admin.display(description="added", ordering="created_at")
    def added(self, image: DatasetImage) -> str:
        return date_format(timezone.localtime(image.created_at), "DATE_FORMAT")

    @admin.display(description="preview")
    def preview(self, image: DatasetImage) -> str:
        return format_html(
            '<a href="{}">{}</a>', reverse("training:image_original", args=[image.pk]), _thumbnail(image, 256)
        )

    @admin.display(description="size")
    def dimensions(self, image: DatasetImage) -> str:
        return f"{image.width}\u00a0×\u00a0{image.height}"  # no-break spaces: one line in the list

    def formfield_for_foreignkey(self, db_field, request: HttpRequest, **kwargs):
        """On an image's page, only the labels of its own dataset are offered."""
        if db_field.name == "label" and request.resolver_match and request.resolver_match.kwargs.get("object_id"):
            image = DatasetImage.objects.filter(pk=request.resolver_match.kwargs["object_id"]).first()
            if image is not None:
                kwargs["queryset"] = Label.objects.filter(dataset_id=image.dataset_id)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request: HttpRequest, obj: DatasetImage, form, change: bool) -> None:
        super().save_model(request, obj, form, change)
        obj.dataset.touch()

    @admin.action(description="Move selected images to another label")
    def move_to_label(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        datasets = set(queryset.values_list("dataset_id", flat=True))
        if len(datasets) != 1:
            self.message_user(
                request,
                "Choose images of one dataset at a time: a label belongs to one dataset. Filter by dataset first.",
                messages.ERROR,
            )
            return None
        dataset = Dataset.objects.get(pk=datasets.pop())
        form = MoveToLabelForm(request.POST if "apply" in request.POST else None, dataset=dataset)
        if form.is_valid():
            label = form.cleaned_data["label"]
            with transaction.atomic():
                count = queryset.update(label=label)
                dataset.touch()
            self.message_user(
                request, f"Moved {count} image{'s' if count != 1 else ''} to “{label}”.", messages.SUCCESS
            )
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Move images to another label",
            "opts": self.model._meta,
            "images": queryset.select_related("label")[:100],
            "count": queryset.count(),
            "selected": queryset.values_list("pk", flat=True),
            "form": form,
            "dataset": dataset,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/training/datasetimage/move_to_label.html", context)

    def _set_split(self, request: HttpRequest, queryset: QuerySet, split: Split) -> None:
        with transaction.atomic():
            count = queryset.update(split=split)
            for dataset in Dataset.objects.filter(pk__in=queryset.values("dataset_id")):
                dataset.touch()
        self.message_user(
            request,
            f"{count} image{'s' if count != 1 else ''} now in the {split.label.lower()} split.",
            messages.SUCCESS,
        )

    @admin.action(description="Set split: train")
    def set_split_train(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._set_split(request, queryset, Split.TRAIN)

    @admin.action(description="Set split: validation")
    def set_split_validation(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._set_split(request, queryset, Split.VALIDATION)

    @admin.action(description="Set split: test")
    def set_split_test(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._set_split(request, queryset, Split.TEST)


@admin.register(Label)
class LabelAdmin(UniqueNameRaceMixin, StaffManageMixin, admin.ModelAdmin):
    list_display = ["name", "dataset", "image_count", "description"]
    list_filter = ["dataset"]
    search_fields = ["name", "description", "dataset__name"]
    list_select_related = ["dataset"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).annotate(n_images=Count("images"))

    @admin.display(description="images", ordering="n_images")
    def image_count(self, label: Label) -> int:
        return label.n_images

    def get_readonly_fields(self, request: HttpRequest, obj: Label | None = None) -> list[str]:
        return ["dataset"] if obj is not None else []


@admin.register(ImportJob)
class ImportJobAdmin(StaffManageMixin, admin.ModelAdmin):
    list_display = ["archive_name", "dataset", "status", "progress", "created_by", "created_at", "finished_at"]
    list_filter = ["status", "dataset"]
    search_fields = ["archive_name", "dataset__name", "message"]
    list_select_related = ["dataset", "created_by"]
    readonly_fields = ["dataset", "archive_name", "archive_size", "status", "message", "progress", "report_table",
                       "created_by", "created_at", "started_at", "heartbeat_at", "finished_at", "worker",
                       "detail"]  # fmt: skip
    fields = readonly_fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # imports start from a dataset's "Import zip" page

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # the worker writes these rows; the admin only shows them

    def has_delete_permission(self, request: HttpRequest, obj: ImportJob | None = None) -> bool:
        if obj is not None and obj.is_active:
            return False
        return super().has_delete_permission(request, obj)

    @admin.display(description="progress")
    def progress(self, job: ImportJob) -> str:
        return f"{job.done} / {job.total} ({job.percent}%)"

    @admin.display(description="report")
    def report_table(self, job: ImportJob) -> str:
        from django.template.loader import render_to_string

        if not job.report:
            return "—"
        return render_to_string("training/partials/_import_report.html", {"report": job.report})


@admin.register(TrainingJob)
class TrainingJobAdmin(StaffManageMixin, admin.ModelAdmin):
    """Jobs as the worker recorded them, with the technical detail of failures (users see a sentence)."""

    list_display = ["__str__", "dataset", "base_name", "status", "best_val_accuracy", "created_by", "created_at",
                    "finished_at"]  # fmt: skip
    list_filter = ["status", "base_key", "dataset"]
    search_fields = ["dataset__name", "base_name", "message"]
    list_select_related = ["dataset", "created_by"]
    readonly_fields = ["dataset", "base_key", "base_name", "status", "message", "detail", "phase", "percent",
                       "config", "history", "evaluation", "exports", "notes", "strategy", "timings", "versions",
                       "batch_size_used", "best_val_accuracy", "created_by", "parent", "worker", "cancel_requested",
                       "created_at", "started_at", "heartbeat_at", "model_ready_at", "finished_at"]  # fmt: skip
    fields = readonly_fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # jobs start from a dataset's "Train a model" page, the API or manage.py train

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # the worker writes these rows

    def has_delete_permission(self, request: HttpRequest, obj: TrainingJob | None = None) -> bool:
        if obj is not None and obj.is_active:
            return False  # cancel it first (from its page)
        return super().has_delete_permission(request, obj)


@admin.register(TrainedModel)
class TrainedModelAdmin(StaffManageMixin, admin.ModelAdmin):
    list_display = ["name", "key", "dataset", "base_key", "val_accuracy", "created_at"]
    list_filter = ["base_key", "dataset"]
    search_fields = ["name", "dataset__name"]
    list_select_related = ["dataset"]
    readonly_fields = ["job", "dataset", "base_key", "input_size", "labels", "val_accuracy", "created_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # models come from training jobs


@admin.register(ImageChange)
class ImageChangeAdmin(StaffManageMixin, admin.ModelAdmin):
    """The dataset histories, read-only: changes are made and undone on the datasets' pages (training.curation)."""

    list_display = ["original_name", "action", "dataset", "changed_by", "created_at", "reason", "undone_at"]
    list_filter = ["action", "dataset"]
    search_fields = ["original_name", "sha256", "reason"]
    list_select_related = ["dataset", "changed_by"]
    readonly_fields = ["dataset", "image", "sha256", "original_name", "action", "before", "after", "reason", "batch",
                       "changed_by", "created_at", "undone_at", "undone_by"]  # fmt: skip
    fields = readonly_fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # the history stays whole: an undo is recorded on the change itself
