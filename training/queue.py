"""The training queue: a Huey of its own, so a long training never holds up imports and downloads.

djhuey serves one queue (`settings.HUEY`, for imports and downloads); training jobs go to this
one, configured by `settings.TRAINING_QUEUE` (SQLite file in DATA_DIR, or Redis under its own
name), and consumed by `manage.py run_training_worker` with TRAINING_CONCURRENCY workers. A
machine with a GPU can run only that consumer.
"""

from __future__ import annotations

from django.conf import settings
from huey.utils import load_class


def _make_training_huey():
    config = dict(settings.TRAINING_QUEUE)
    huey_class = load_class(config.pop("huey_class"))
    name = config.pop("name")
    # Never run inside a web request: tests turn immediate mode on deliberately.
    return huey_class(name, immediate=False, **config)


TRAINING_HUEY = _make_training_huey()
