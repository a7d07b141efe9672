from django.apps import AppConfig


class TrainingConfig(AppConfig):
    """Datasets and training: models, zip import/export, training jobs, pages and admin."""

    name = "training"
    verbose_name = "Datasets and training"

    def ready(self) -> None:
        from classifier import catalog, runtimes
        from training import checks  # noqa: F401  (registers the checks)
        from training.trained_models import CALIBRATION, SOURCE, validation_images

        catalog.register(SOURCE)  # trained models join the zoo in every model picker
        runtimes.add_check_images(validation_images)  # their LiteRT conversion is checked on real images
        runtimes.add_calibration_images(CALIBRATION)  # int8 calibrates on training splits and datasets
