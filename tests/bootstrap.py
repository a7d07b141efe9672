"""Loaded by pytest before Django reads its settings (pyproject: `-p tests.bootstrap`).

Test runs never touch the real data folder: DATA_DIR points at a temporary folder, removed at exit.
"""

import atexit
import os
import shutil
import tempfile

_data_dir = tempfile.mkdtemp(prefix="transferlab-test-")
os.environ["DATA_DIR"] = _data_dir
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # as manage.py: no TensorFlow start-up notes
# Models are served by TensorFlow in tests (and the servers and workers they start): converting
# every model a test installs to LiteRT would add seconds to each. Tests of the LiteRT runtime
# turn it on (the `litert` fixture, or INFERENCE_RUNTIME=litert for a subprocess).
os.environ.setdefault("INFERENCE_RUNTIME", "tensorflow")
atexit.register(shutil.rmtree, _data_dir, ignore_errors=True)
