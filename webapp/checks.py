"""System checks: a setting that cannot work fails at start with a message, not later with a 500."""

from __future__ import annotations

import os

from django.conf import settings
from django.core.checks import Error, register


@register()
def check_data_dir(app_configs, **kwargs) -> list[Error]:
    errors = []
    if not os.access(settings.DATA_DIR, os.W_OK):
        errors.append(
            Error(
                f"DATA_DIR {settings.DATA_DIR} is not writable.",
                hint="Point DATA_DIR at a folder the TransferLab user can write to.",
                id="transferlab.E001",
            )
        )
    limits = {
        "MAX_UPLOAD_MB": settings.MAX_UPLOAD_BYTES,
        "MAX_IMAGE_PIXELS": settings.MAX_IMAGE_PIXELS,
        "MAX_FILES_PER_REQUEST": settings.MAX_FILES_PER_REQUEST,
        "MODEL_CACHE_SIZE": settings.MODEL_CACHE_SIZE,
    }
    for name, value in limits.items():
        if value < 1:
            errors.append(
                Error(f"{name} must be at least 1.", hint="Unset it to use the default.", id="transferlab.E002")
            )
    return errors
