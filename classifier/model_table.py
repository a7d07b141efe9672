"""What the Models page shows: each zoo entry with its status here, measured latency, sorting and filters.

Status words, most useful first: "ready" (warm in this web process), "loading", "downloading"
(an administrator asked and the worker is on it), "installed" (weights present, loads on first
use), "training" (only the file without the head is here: training can use it, Classify cannot)
and "missing" (with the exact file, where to get it and the command that installs it). The
status is about the file with the head, which Classify runs; the Training column shows the other.
Reading the page never imports TensorFlow.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.http import QueryDict

from classifier import inference, installs, runtimes, weights, zoo
from classifier.models import Prediction, WeightsDownload

LATENCY_WINDOW = 50  # the most recent predictions per model the measured latency is the median of

STATUS_LABELS = {
    "ready": ("Ready", "badge-ok"),
    "loading": ("Loading", "badge-info"),
    "downloading": ("Downloading", "badge-info"),
    "installed": ("Installed", "badge-ok"),
    "training": ("Training only", "badge-info"),
    "missing": ("Weights missing", "badge-warn"),
}
STATUS_FILTERS = {
    "": "Any status",
    "installed": "Weights installed",  # either file: every model that Classify or training can use here
    "ready": "Loaded now",
    "missing": "Weights missing",
}
# Sizes are in MiB (2**20 bytes), as Keras publishes them and as files are measured here.
SIZE_FILTERS = {"": "Any size", "20": "Up to 20 MiB", "100": "Up to 100 MiB", "300": "Up to 300 MiB"}


@dataclass(frozen=True)
class Latency:
    """Median engine time per image over the model's most recent predictions on this server."""

    median_ms: float
    runs: int


@dataclass(frozen=True)
class WeightsStatus:
    """One of a model's two files, as the administrator needs to see it."""

    model: zoo.ZooModel
    include_top: bool
    file: zoo.WeightsFile | None
    path: Path | None
    download: WeightsDownload | None

    @property
    def installed(self) -> bool:
        return self.path is not None

    @property
    def size_mib(self) -> float | None:
        try:
            return self.path.stat().st_size / 2**20 if self.path else None
        except OSError:
            return None

    @property
    def import_command(self) -> str:
        return weights.import_command(self.model, self.include_top)

    @property
    def downloading(self) -> bool:
        return self.download is not None and self.download.is_active

    @property
    def failed_download(self) -> WeightsDownload | None:
        """The last download attempt when it failed and the file is still missing."""
        if self.download and self.download.status in WeightsDownload.UNSUCCESSFUL and not self.installed:
            return self.download
        return None


@dataclass(frozen=True)
class ModelRow:
    model: zoo.ZooModel
    status: str
    top: WeightsStatus
    notop: WeightsStatus
    latency: Latency | None

    @property
    def status_label(self) -> str:
        return STATUS_LABELS[self.status][0]

    @property
    def status_badge(self) -> str:
        return STATUS_LABELS[self.status][1]

    @property
    def any_installed(self) -> bool:
        """Classify or training can use it: either of its files is here."""
        return self.top.installed or self.notop.installed

    @property
    def runtime(self) -> runtimes.Runtime | None:
        """What serves Classify's requests for it here (LiteRT or TensorFlow, and why); None if not installed."""
        return runtimes.runtime_for(self.top.path) if self.top.installed else None

    @property
    def missing_files(self) -> list[WeightsStatus]:
        """Its published files that are not here and not on their way: what "How to install" explains."""
        return [w for w in (self.top, self.notop) if w.file and not w.installed and not w.downloading]


class WeightsFolderError(Exception):
    """The weights folder cannot be read; str() says which and why."""


def measured_latency() -> dict[str, Latency]:
    """Per model key, the median of its last LATENCY_WINDOW per-image engine times (one query per model used)."""
    out = {}
    for key in Prediction.objects.order_by().values_list("model_key", flat=True).distinct():
        times = list(
            Prediction.objects.filter(model_key=key)
            .order_by("-created_at", "-id")
            .values_list("inference_ms", flat=True)[:LATENCY_WINDOW]
        )
        if times:
            out[key] = Latency(median_ms=statistics.median(times), runs=len(times))
    return out


def installed_files() -> set[str]:
    """File names present in the weights folder (one directory listing for the whole table)."""
    folder = Path(settings.WEIGHTS_DIR)
    try:
        return weights.installed_filenames(folder)
    except OSError as exc:
        raise WeightsFolderError(
            f"TransferLab cannot read its weights folder {folder} ({exc.strerror or exc}). Check that the folder "
            "exists and that the user running TransferLab may read it."
        ) from None


def _weights_status(model: zoo.ZooModel, include_top: bool, present: set[str], downloads: dict) -> WeightsStatus:
    wf = model.weights_file(include_top)
    path = Path(settings.WEIGHTS_DIR) / wf.filename if wf and wf.filename in present else None
    return WeightsStatus(model, include_top, wf, path, downloads.get((model.key, include_top)))


def build_row(model: zoo.ZooModel, present: set[str], downloads: dict, latencies: dict[str, Latency]) -> ModelRow:
    top = _weights_status(model, True, present, downloads)
    notop = _weights_status(model, False, present, downloads)
    state = inference.engine_state(model.key)
    if state in ("ready", "loading"):
        status = state
    elif top.downloading:
        status = "downloading"
    elif top.installed:
        status = "installed"
    elif notop.installed:
        status = "training"
    else:
        status = "missing"
    return ModelRow(model, status, top, notop, latencies.get(model.key))


def all_rows() -> list[ModelRow]:
    """Every zoo entry as a row, in the registry's order (the guide's six first)."""
    present = installed_files()
    downloads = installs.latest_downloads()
    latencies = measured_latency()
    return [build_row(m, present, downloads, latencies) for m in zoo.all_models()]


def row_for(model: zoo.ZooModel) -> ModelRow:
    present = installed_files()
    return build_row(model, present, installs.latest_downloads(), measured_latency())


# --- Filtering and sorting, from the query string -------------------------------------------
@dataclass(frozen=True)
class Column:
    key: str
    label: str
    value: Callable[[ModelRow], object] | None  # None: not sortable
    numeric: bool = False
    descending_first: bool = False  # a first click sorts best-first (accuracy) rather than smallest-first


COLUMNS = (
    Column("name", "Model", lambda r: r.model.name.lower()),
    Column("family", "Family", lambda r: (r.model.family.lower(), r.model.name.lower())),
    Column("input", "Input", lambda r: r.model.input_size, numeric=True),
    Column("size", "Size (MiB)", lambda r: r.model.size_mb, numeric=True),
    Column("params", "Params (M)", lambda r: r.model.parameters_m, numeric=True),
    Column("speed", "Speed", lambda r: r.model.macs_m),
    # The accuracy word sits under the top-1 number it comes from: one column, sorted by the number.
    Column("top1", "Top-1", lambda r: r.model.top1, numeric=True, descending_first=True),
    Column("top5", "Top-5", lambda r: r.model.top5, numeric=True, descending_first=True),
    Column("latency", "Measured", lambda r: r.latency.median_ms if r.latency else None, numeric=True),
    Column("status", "Status", lambda r: list(STATUS_LABELS).index(r.status)),
    Column("training", "Training", lambda r: (not r.notop.installed, r.notop.file is None)),
)
COLUMNS_BY_KEY = {c.key: c for c in COLUMNS}


@dataclass(frozen=True)
class TableQuery:
    """The table's filters and sort as read from a query string; unknown values are ignored."""

    q: str = ""
    family: str = ""
    speed: str = ""
    accuracy: str = ""
    status: str = ""
    size: str = ""
    recommended: bool = False
    sort: str = ""  # a column key, "-" first for descending; "" is the registry's order

    @classmethod
    def from_querydict(cls, params: QueryDict) -> TableQuery:
        sort = params.get("sort", "")
        if sort.lstrip("-") not in COLUMNS_BY_KEY:
            sort = ""
        choice = _choice(params)
        return cls(
            q=params.get("q", "").strip()[:100],
            family=choice("family", zoo.families()),
            speed=choice("speed", zoo.SPEEDS),
            accuracy=choice("accuracy", zoo.ACCURACIES),
            status=choice("status", STATUS_FILTERS),
            size=choice("size", SIZE_FILTERS),
            recommended=params.get("recommended") in ("1", "on", "true"),
            sort=sort,
        )

    @property
    def filtered(self) -> bool:
        return any((self.q, self.family, self.speed, self.accuracy, self.status, self.size, self.recommended))

    def params(self, **changes) -> str:
        """This query as a query string, with some values changed (for sort links)."""
        values = {
            "q": self.q,
            "family": self.family,
            "speed": self.speed,
            "accuracy": self.accuracy,
            "status": self.status,
            "size": self.size,
            "recommended": "1" if self.recommended else "",
            "sort": self.sort,
        }
        values.update(changes)
        out = QueryDict(mutable=True)
        for key, value in values.items():
            if value:
                out[key] = value
        return out.urlencode()

    def sort_link(self, column: str) -> str:
        """Where a click on a column header leads: its sort, or the reverse when it is already sorted by it."""
        spec = COLUMNS_BY_KEY[column]
        if self.sort == column:
            target = f"-{column}"
        elif self.sort == f"-{column}":
            target = column
        else:
            target = f"-{column}" if spec.descending_first else column
        return self.params(sort=target)

    def aria_sort(self, column: str) -> str:
        if self.sort == column:
            return "ascending"
        if self.sort == f"-{column}":
            return "descending"
        return "none"


def _choice(params: QueryDict):
    def read(name: str, allowed) -> str:
        value = params.get(name, "")
        return value if value in allowed else ""

    return read


def apply(rows: list[ModelRow], query: TableQuery) -> list[ModelRow]:
    """The rows a query shows, in its order; rows without a value for the sort column go last."""
    out = [row for row in rows if _matches(row, query)]
    if query.sort:
        column = COLUMNS_BY_KEY[query.sort.lstrip("-")]
        reverse = query.sort.startswith("-")
        known = [r for r in out if column.value(r) is not None]
        unknown = [r for r in out if column.value(r) is None]
        known.sort(key=column.value, reverse=reverse)  # stable: ties keep the registry's order
        out = known + unknown
    return out


def _matches(row: ModelRow, query: TableQuery) -> bool:
    model = row.model
    if query.q:
        needle = query.q.lower()
        haystack = " ".join((model.key, model.name, model.family, model.use, *model.aliases)).lower()
        if not all(word in haystack for word in needle.split()):
            return False
    if query.family and model.family != query.family:
        return False
    if query.speed and model.speed != query.speed:
        return False
    if query.accuracy and model.accuracy != query.accuracy:
        return False
    if query.recommended and not model.recommended:
        return False
    if query.size and (model.size_mb is None or model.size_mb > float(query.size)):
        return False
    if query.status == "installed":
        return row.any_installed
    if query.status:
        return row.status == query.status
    return True
