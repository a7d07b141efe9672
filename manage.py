#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys


def main():
    """Run administrative tasks."""
    # Files TransferLab writes (database, sessions, uploads, DATA_DIR itself) are for the service
    # account alone; set before the settings create DATA_DIR. Inherited by the web server and the
    # workers that `serve` starts.
    os.umask(0o077)
    # Before anything loads TensorFlow: no C++ start-up notes (cuInit, oneDNN) in any command's output.
    from webapp.tensorflow_logs import quiet_tensorflow

    quiet_tensorflow()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    try:
        from django.core.management import execute_from_command_line
    except ImportError as exc:
        raise ImportError(
            "Couldn't import Django. Are you sure it's installed and "
            "available on your PYTHONPATH environment variable? Did you "
            "forget to activate a virtual environment?"
        ) from exc
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
