"""What a benchmark records about the machine it ran on, and how busy that machine was."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> float:
    """The 1-minute load average (how many cores' worth of work wanted to run)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def busy_processes(exclude: set[int] | None = None, threshold: float = 0.5) -> list[str]:
    """Other Python processes using more than `threshold` of a core right now (sampled over 1 s)."""
    import time

    exclude = (exclude or set()) | {os.getpid()}

    def cpu_times() -> dict[int, tuple[float, str]]:
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in exclude:
                continue
            try:
                stat = (entry / "stat").read_text()
                name = stat[stat.index("(") + 1 : stat.rindex(")")]
                fields = stat[stat.rindex(")") + 2 :].split()
                found[int(entry.name)] = ((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), name)
            except (OSError, ValueError, IndexError):
                continue
        return found

    before = cpu_times()
    time.sleep(1.0)
    after = cpu_times()
    busy = []
    for pid, (seconds, name) in after.items():
        if pid in before and seconds - before[pid][0] > threshold and "python" in name:
            busy.append(f"{pid} {name} ({seconds - before[pid][0]:.0%} of a core)")
    return busy


def machine_info() -> dict[str, str | int]:
    """CPU, core count and library versions (TensorFlow and Keras only when already imported)."""
    import sys

    info: dict[str, str | int] = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count() or 0,
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
    }
    tf = sys.modules.get("tensorflow")
    keras = sys.modules.get("keras")
    if tf is not None:
        info["tensorflow"] = tf.__version__
    if keras is not None:
        info["keras"] = keras.__version__
    memory = Path("/proc/meminfo")
    if memory.exists():
        total_kb = int(memory.read_text().split()[1])
        info["memory_gb"] = f"{total_kb / 1024 / 1024:.0f}"
    return info


def vm_hwm_mb() -> float:
    """Peak resident memory of this process since it started its program (VmHWM, Linux).

    Use it in a child process rather than ru_maxrss: Linux keeps ru_maxrss across fork and exec, so
    a child started from a large parent reports at least the parent's peak (measured here: a
    100-image child and a 400-image child both "peaked" at the parent's 1,796 MB).
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise OSError("no VmHWM in /proc/self/status")


class OtherCpu:
    """How much of the machine other processes used while we measured (Linux /proc/stat).

    Busy CPU time of the whole machine (steal included: another VM took the core) minus this
    process's own and its waited-for children's, as a share of the cores' capacity over the
    interval. Our own load average cannot tell this: a benchmark keeps both cores busy itself.
    """

    def __init__(self) -> None:
        self.start()

    @staticmethod
    def _busy_s() -> float:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own_s() -> float:
        import resource

        usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
        return sum(u.ru_utime + u.ru_stime for u in usage)

    def start(self) -> None:
        import time

        self._wall, self._busy, self._own = time.monotonic(), self._busy_s(), self._own_s()

    def share(self) -> float:
        """Other processes' CPU since start(), in percent of all cores (0 = we had the machine)."""
        import time

        wall = time.monotonic() - self._wall
        other = (self._busy_s() - self._busy) - (self._own_s() - self._own)
        return max(0.0, 100.0 * other / max(wall * (os.cpu_count() or 1), 1e-9))
