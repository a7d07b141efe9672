"""What every benchmark shares: percentiles, resident memory, the printed table, the JSON file."""

from __future__ import annotations

import json
import resource
from pathlib import Path

import numpy as np


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q))


def rss_mb() -> float:
    """Current resident memory of this process, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss is in kB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def print_table(title: str, rows: list[tuple[str, str]]) -> None:
    width = max(len(name) for name, _ in rows)
    print(f"\n{title}\n{'-' * (width + 22)}")
    for name, value in rows:
        print(f"{name:<{width}}  {value:>18}")
    print()


def write_json(path: Path, figures: dict) -> None:
    """One flat JSON object per run (figure names listed in docs/PERFORMANCE.md), so runs can be compared."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    print(f"figures written to {path}")
