from django.apps import AppConfig


class TrainingConfig(AppConfig):
    """Datasets (and, later, training): models, zip import/export, pages and admin."""

    name = "training"
    verbose_name = "Datasets and training"

    def ready(self) -> None:
        from training import checks  # noqa: F401  (registers the checks)
