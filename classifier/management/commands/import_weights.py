"""Install pretrained weights files copied onto this server (the offline way to add a model).

    python manage.py import_weights mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5
    python manage.py import_weights ~/Downloads/*.h5
    python manage.py import_weights weights.h5 --model mobilenet-0.25-160 --no-top

Each file is recognised from its published name, else from its content (layers and shapes), or
from --model; checked (readable HDF5, published hash when Keras has one, loads into the
architecture) and installed under its published name in DATA_DIR/weights. Exit status 1 when
any file was refused.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from classifier import installs, weights, zoo


class Command(BaseCommand):
    help = "Check and install Keras application weights files (.h5) into the weights folder."

    def add_arguments(self, parser) -> None:
        parser.add_argument("files", nargs="+", metavar="FILE", help="weights files to install")
        parser.add_argument(
            "--model", help="registry key of the model the files are for (default: recognised from name and content)"
        )
        parser.add_argument(
            "--top",
            dest="include_top",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="the file has the ImageNet head (--top) or not (--no-top); default: recognised",
        )

    def handle(self, *args, files: list[str], model: str | None, include_top: bool | None, **options) -> None:
        entry = None
        if model:
            try:
                entry = zoo.get(model)
            except zoo.UnknownModel as exc:
                raise CommandError(str(exc)) from None
        failed = 0
        for name in files:
            path = Path(name).expanduser()
            missing = _not_a_file(path)
            if missing:
                failed += 1
                self.stderr.write(self.style.ERROR(missing))
                continue
            try:
                installed = installs.import_path(path, model=entry, include_top=include_top)
            except weights.WeightsError as exc:
                failed += 1
                self.stderr.write(self.style.ERROR(f"Refused {path}: {exc}"))
                continue
            self.stdout.write(self.style.SUCCESS(installed.describe()))
        total = len(files)
        if failed:
            raise CommandError(
                f"{failed} of {total} file{'s' if total > 1 else ''} refused; nothing was changed for those."
            )
        self.stdout.write(
            f"Weights folder: {settings.WEIGHTS_DIR}. A web server or worker that already had one of these models "
            "loaded keeps its old copy until it restarts."
        )


def _not_a_file(path: Path) -> str:
    """Why a path given on the command line is no file to import, or "" when it is one."""
    if path.is_dir():
        return f"{path} is a folder: name the weights files in it (for example {path}/*.h5)."
    if not path.is_file():
        return f"No file at {path}."
    return ""
