from django.apps import AppConfig


class WebappConfig(AppConfig):
    """The project itself: system checks on settings and the `serve` and `ensure_admin` commands."""

    name = "webapp"
    verbose_name = "TransferLab"

    def ready(self) -> None:
        from webapp import checks  # noqa: F401  (registers the checks)
