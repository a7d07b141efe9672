"""Keep TensorFlow's C++ start-up notes out of terminals and server logs.

Loading TensorFlow writes lines such as `E0000 ... failed call to cuInit: ... UNKNOWN ERROR (303)`
(no GPU driver: normal on a CPU server, but it reads like a failure) and `I0000 ... oneDNN custom
operations are on` straight to file descriptor 2. TF_CPP_MIN_LOG_LEVEL hides what TensorFlow logs
once its logging is set up, but not the lines its libraries print while they load ("All log
messages before absl::InitializeLog() is called are written to STDERR").

So `quiet_tensorflow()` sets TF_CPP_MIN_LOG_LEVEL to 3 unless the administrator set it, and runs the
first `import tensorflow` with descriptor 2 sent to a temporary file; afterwards the lines of the
hidden levels are dropped and everything else is written to stderr as it was. Only logging
changes: numerics, devices and GPUs are untouched. While TensorFlow loads (a few seconds, once per
process), what other threads write to stderr is held back and then written too.
"""

from __future__ import annotations

import importlib.abc
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib.machinery import ModuleSpec
from types import ModuleType

PACKAGE = "tensorflow"
LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
DEFAULT_LEVEL = "3"  # INFO, WARNING and ERROR hidden; FATAL still shown
SEVERITIES = "IWEF"  # TF_CPP_MIN_LOG_LEVEL=n hides the first n of them
ABSL_LINE = re.compile(r"^([IWEF])\d{4} ")  # "I0000 00:00:1795659873.57 10292 port.cc:153] ..."
ABSL_BANNER = "All log messages before absl::InitializeLog() is called are written to STDERR"


def quiet_tensorflow() -> None:
    """Call before anything imports TensorFlow (manage.py, wsgi.py, settings, bench scripts); idempotent."""
    os.environ.setdefault(LEVEL_VARIABLE, DEFAULT_LEVEL)
    if PACKAGE in sys.modules or any(isinstance(f, _QuietImport) for f in sys.meta_path):
        return
    hidden = hidden_severities(os.environ[LEVEL_VARIABLE])
    if hidden:
        sys.meta_path.insert(0, _QuietImport(PACKAGE, hidden))


def hidden_severities(level: str) -> str:
    """'3' -> 'IWE': the severities TF_CPP_MIN_LOG_LEVEL hides (anything unreadable hides nothing)."""
    try:
        return SEVERITIES[: max(0, min(3, int(level)))]
    except ValueError:
        return ""


def keep_line(line: str, hidden: str) -> bool:
    """Whether a line written while TensorFlow loaded gets through."""
    if ABSL_BANNER in line:
        return False
    match = ABSL_LINE.match(line)
    return match is None or match.group(1) not in hidden


class _QuietImport(importlib.abc.MetaPathFinder):
    """Finds the TensorFlow package through the other finders and has it loaded quietly.

    Asked again only while the package is not imported yet (a failed import, or a library that
    only checks whether it is installed): each time, the spec it hands out loads quietly.
    """

    def __init__(self, module: str, hidden: str) -> None:
        self.module = module
        self.hidden = hidden

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != self.module:
            return None  # its submodules load while the package does, inside the filter
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None) if finder is not self else None
            spec = find(fullname, path, target) if find else None
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _QuietLoader(spec.loader, self.hidden)
                return spec
        return None


class _QuietLoader(importlib.abc.Loader):
    """The package's own loader, run with descriptor 2 filtered."""

    def __init__(self, loader: importlib.abc.Loader, hidden: str) -> None:
        self.loader = loader
        self.hidden = hidden

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = module.__spec__.loader = self.loader  # the package sees its own loader
        with filtered_stderr(self.hidden):
            self.loader.exec_module(module)

    def __getattr__(self, name: str):
        return getattr(self.loader, name)


@contextmanager
def filtered_stderr(hidden: str) -> Iterator[None]:
    """Send descriptor 2 to a file meanwhile, then write out the lines `keep_line` lets through."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no stderr to filter (closed, or not a file)
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode(errors="replace")
            kept = "".join(line for line in text.splitlines(keepends=True) if keep_line(line, hidden))
            data = kept.encode()
            while data:
                data = data[os.write(2, data) :]
