"""TensorFlow starts without its C++ start-up notes in the terminal or the server log.

Loading TensorFlow prints `E0000 ... failed call to cuInit ... UNKNOWN ERROR (303)` on a server
without a GPU driver (normal, but it reads like a failure) and `I0000 ... oneDNN custom operations
are on`. Every command goes through manage.py (the web server and both workers too), so a
manage.py process that imports TensorFlow must print none of them; what else it writes to stderr
still gets through, and a TF_CPP_MIN_LOG_LEVEL the administrator sets is obeyed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOISE = ("cuInit", "oneDNN", "E0000", "I0000", "absl::InitializeLog", "cuda drivers")


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    return {**env, "DATA_DIR": str(tmp_path), "PYTHONPATH": str(ROOT), **extra}


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_a_manage_py_command_that_runs_tensorflow_prints_none_of_its_start_up_notes(tmp_path):
    code = "import tensorflow as tf; print('sum', float(tf.reduce_sum(tf.ones(3))))"
    done = _run(_env(tmp_path), sys.executable, "manage.py", "shell", "-c", code)
    assert done.returncode == 0, done.stderr
    assert "sum 3.0" in done.stdout
    assert [line for line in done.stderr.splitlines() if any(noise in line for noise in NOISE)] == []


# A stand-in for TensorFlow's libraries: it writes to file descriptor 2 as their C++ code does.
FAKE_TENSORFLOW = """
import os
os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n")
os.write(2, b"I0000 00:00:1.5 123 port.cc:153] oneDNN custom operations are on.\\n")
os.write(2, b"W0000 00:00:1.5 123 some.cc:1] a warning\\n")
os.write(2, b"E0000 00:00:1.5 123 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)\\n")
os.write(2, b"F0000 00:00:1.5 123 fatal.cc:1] a fatal error\\n")
os.write(2, b"a line of its own\\n")
"""
IMPORT_IT = (
    "from webapp.tensorflow_logs import quiet_tensorflow; quiet_tensorflow(); import tensorflow; print('imported')"
)


def _import_fake(tmp_path: Path, code: str = IMPORT_IT, **extra: str) -> subprocess.CompletedProcess:
    fake = tmp_path / "fake"
    (fake / "tensorflow").mkdir(parents=True, exist_ok=True)
    (fake / "tensorflow" / "__init__.py").write_text(FAKE_TENSORFLOW)
    env = _env(tmp_path, PYTHONPATH=f"{fake}{os.pathsep}{ROOT}", **extra)
    return _run(env, sys.executable, "-c", code)


def test_by_default_only_fatal_lines_and_lines_of_other_origin_get_through(tmp_path):
    done = _import_fake(tmp_path)
    assert done.stdout == "imported\n"
    assert done.stderr.splitlines() == ["F0000 00:00:1.5 123 fatal.cc:1] a fatal error", "a line of its own"]


def test_an_administrators_tf_cpp_min_log_level_is_obeyed(tmp_path):
    errors_too = _import_fake(tmp_path, TF_CPP_MIN_LOG_LEVEL="2").stderr
    assert "cuInit" in errors_too and "oneDNN" not in errors_too and "a warning" not in errors_too
    everything = _import_fake(tmp_path, TF_CPP_MIN_LOG_LEVEL="0").stderr
    assert "absl::InitializeLog" in everything and "oneDNN" in everything and "cuInit" in everything


def test_an_error_while_importing_still_reaches_the_caller(tmp_path):
    fake = tmp_path / "fake" / "tensorflow"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "import os\nos.write(2, b'I0000 noise\\n')\nraise ImportError('libcudnn missing')\n"
    )
    env = _env(tmp_path, PYTHONPATH=f"{fake.parent}{os.pathsep}{ROOT}")
    done = _run(env, sys.executable, "-c", IMPORT_IT)
    assert done.returncode == 1
    assert "ImportError: libcudnn missing" in done.stderr and "noise" not in done.stderr


def test_a_library_that_first_checks_whether_tensorflow_is_installed_changes_nothing(tmp_path):
    check_first = IMPORT_IT.replace(
        "import tensorflow;", "import importlib.util; importlib.util.find_spec('tensorflow'); import tensorflow;"
    )
    done = _import_fake(tmp_path, code=check_first)
    assert done.stdout == "imported\n"
    assert "oneDNN" not in done.stderr and "a line of its own" in done.stderr
