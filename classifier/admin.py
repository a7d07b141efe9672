"""Admin for the inference app: predictions with thumbnails, API tokens (hash only), downloads, int8."""

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from classifier.models import ApiToken, Int8Calibration, Prediction, WeightsDownload


@admin.register(Prediction)
class PredictionAdmin(admin.ModelAdmin):
    list_display = ("thumbnail_preview", "original_name", "model_name", "best_guess", "user", "created_at")
    list_filter = ("model_key", "created_at")
    search_fields = ("original_name", "user__username", "model_key")
    date_hierarchy = "created_at"
    list_select_related = ("user",)
    readonly_fields = (
        "thumbnail_preview",
        "user",
        "model_key",
        "model_name",
        "original_name",
        "image_format",
        "width",
        "height",
        "top",
        "inference_ms",
        "batch_size",
        "created_at",
    )
    exclude = ("image", "thumbnail")

    def has_add_permission(self, request) -> bool:
        return False  # predictions come from classifying, not from forms

    @admin.display(description="Image")
    def thumbnail_preview(self, obj: Prediction) -> str:
        url = reverse("classifier:prediction_thumbnail", args=[obj.pk])
        return format_html('<img src="{}" alt="" style="height:48px;width:48px;object-fit:cover">', url)

    @admin.display(description="Best guess")
    def best_guess(self, obj: Prediction) -> str:
        best = obj.best
        return f"{best['label']} ({best['probability']:.0%})" if best else "—"


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "user", "prefix", "created_at", "last_used_at")
    search_fields = ("name", "user__username", "prefix")
    readonly_fields = ("user", "name", "prefix", "created_at", "last_used_at")
    exclude = ("key_hash",)

    def has_add_permission(self, request) -> bool:
        return False  # tokens are created by their owner on the API tokens page, shown once


@admin.register(WeightsDownload)
class WeightsDownloadAdmin(admin.ModelAdmin):
    """Read-only record of administrators' download requests; the Models page starts them."""

    list_display = ("model_key", "include_top", "status", "requested_by", "created_at", "finished_at")
    list_filter = ("status", "include_top")
    search_fields = ("model_key", "message")
    readonly_fields = ("model_key", "include_top", "status", "message", "detail", "requested_by", "worker",
                       "created_at", "started_at", "heartbeat_at", "finished_at")  # fmt: skip
    fields = readonly_fields

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Int8Calibration)
class Int8CalibrationAdmin(admin.ModelAdmin):
    """Read-only record of int8 conversions; a model's page starts them and switches them on or off."""

    list_display = ("model_key", "source", "status", "agreement", "enabled", "requested_by", "created_at")
    list_filter = ("status", "enabled", "source_kind")
    search_fields = ("model_key", "source", "message")
    readonly_fields = ("model_key", "weights_hash", "source_kind", "source", "dataset_id", "status", "phase", "images",
                       "calibration_images", "checked_images", "agreeing_images", "held_out", "reference",
                       "integer_only", "enabled", "switched_at", "message", "detail", "requested_by", "worker",
                       "created_at", "started_at", "heartbeat_at", "finished_at")  # fmt: skip
    fields = readonly_fields

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="Top-1 agreement with float32")
    def agreement(self, obj: Int8Calibration) -> str:
        if obj.top1_agreement is None:
            return "—"
        return f"{obj.agreeing_images} of {obj.checked_images} ({obj.agreement_text})"
