"""Which device a training job runs on: a GPU when the machine has one TensorFlow can use, else the CPU.

No Django. Nothing is configured per machine: Keras places a job's work on the first GPU by itself
when TensorFlow sees one (the GPU build of the same pinned version, docs/DEPLOYMENT.md), so a
training worker started on a GPU machine trains there without code changes. The job records what
this module says, so a user can tell a slow job on a CPU from a fast one on a GPU.

On a GPU, the frozen base's features are computed by TensorFlow on the GPU rather than by LiteRT
(a CPU runtime here), and TensorFlow is told to take GPU memory as it needs it instead of all of it
at start, so several jobs (TRAINING_CONCURRENCY) can share one card.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

GPU = "GPU"
CPU = "CPU"


@dataclass(frozen=True)
class Device:
    """What computes a job: kind (GPU or CPU) and a name a person recognises."""

    kind: str
    name: str

    @property
    def description(self) -> str:
        """'GPU 0: NVIDIA A10' or 'CPU: AMD EPYC 7B13, 2 cores': what the job page shows."""
        return self.name

    @property
    def is_gpu(self) -> bool:
        return self.kind == GPU


def training_device() -> Device:
    """The device this process trains on: TensorFlow's first visible GPU, else the CPU."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices(GPU)
    if not gpus:
        return Device(CPU, f"CPU: {cpu_name()}, {cpu_cores()} cores")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except (RuntimeError, ValueError):  # TensorFlow already initialised the GPU: it keeps its setting
            pass
    try:
        details = tf.config.experimental.get_device_details(gpus[0])
    except Exception:  # details are a nicety; a GPU without them is still the GPU
        details = {}
    name = details.get("device_name") or gpus[0].name.rsplit("/", 1)[-1].replace("physical_device:", "")
    more = f" (of {len(gpus)} GPUs)" if len(gpus) > 1 else ""
    return Device(GPU, f"GPU 0: {name}{more}")


def cpu_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The processor's model name, or 'unknown processor' where the system does not say."""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name") and ":" in line:
                return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return "unknown processor"


def cpu_cores() -> int:
    """Cores this process may use (a container's or taskset's share, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
