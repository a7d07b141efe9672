"""System checks for the dataset settings: a limit that cannot work fails at start, with a message."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, register


@register()
def check_import_limits(app_configs, **kwargs) -> list[Error]:
    limits = {
        "IMPORT_MAX_ZIP_MB": settings.IMPORT_MAX_ZIP_BYTES,
        "IMPORT_MAX_TOTAL_MB": settings.IMPORT_MAX_TOTAL_BYTES,
        "IMPORT_MAX_MEMBERS": settings.IMPORT_MAX_MEMBERS,
        "IMPORT_MAX_RATIO": settings.IMPORT_MAX_RATIO,
    }
    return [
        Error(f"{name} must be at least 1.", hint="Unset it to use the default.", id="training.E001")
        for name, value in limits.items()
        if value < 1
    ]
