"""Server-rendered pictures for the training job page: learning curves (SVG) and a confusion matrix.

Plain Python, no Django and no numpy, so it is cheap to call from a partial that HTMX re-renders
about once a second while a job runs. Functions return markup as `str`; every piece of text put into
markup goes through `html.escape`, and the caller marks the result safe.

The SVG carries CSS classes (`chart`, `chart-grid`, `chart-axis`, `chart-train`, `chart-val`,
`chart-phase`, `chart-legend`, `chart-empty`) for styling, and also presentation attributes, so it
looks right without any stylesheet. Text and gridlines use `currentColor` and follow the page.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from html import escape

LOSS = "loss"
ACCURACY = "accuracy"
METRICS = (LOSS, ACCURACY)
FINE_TUNE = "fine-tune"
PHASE_LABEL = "fine-tuning"

TRAIN_COLOUR = "#2b59c3"
VAL_COLOUR = "#d9730d"
PHASE_COLOUR = "#6b7280"
VAL_DASH = "6 3"
PHASE_DASH = "4 3"
SERIES = {False: ("Training", "chart-train", TRAIN_COLOUR), True: ("Validation", "chart-val", VAL_COLOUR)}

MARGIN_LEFT = 44
MARGIN_RIGHT = 16
MARGIN_TOP = 32
MARGIN_BOTTOM = 34
FONT_SIZE = 11
LEGEND_Y = 10  # the legend's row in the top margin; the fine-tuning label sits below it
CHAR_WIDTH = 6.2  # rough width of one character at FONT_SIZE, to keep labels from overlapping
MAX_X_LABELS = 10
NICE_FACTORS = (1, 2, 2.5, 5)
# Gridline step for each nice maximum factor: 4 or 5 intervals between 0 and the maximum.
GRID_STEPS = {1: 0.25, 2: 0.5, 2.5: 0.5, 5: 1}
ACCURACY_TICKS = (0.0, 0.25, 0.5, 0.75, 1.0)

# A process-wide counter keeps element ids unique when several charts share one page; the title
# hash keeps them apart even if parts of a page come from different worker processes.
_CHART_IDS = itertools.count(1)

# Confusion matrix colours (CSS hsl): blue for correct predictions, orange for mistakes.
CORRECT_HUE, CORRECT_SATURATION = 217, 60
MISTAKE_HUE, MISTAKE_SATURATION = 20, 80
EMPTY_BACKGROUND = "hsl(0 0% 98%)"
LIGHTEST, DARKEST = 94.0, 38.0  # lightness (%) for the smallest and the largest share
MIN_INTENSITY = 0.12  # any non-empty cell is visibly tinted, even a 1-in-300 mistake
LIGHT_TEXT, DARK_TEXT = "#fff", "#1f2328"


# --- Learning curves ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Frame:
    """Where the plot area sits and how data maps onto it."""

    width: int
    height: int
    epochs: int  # length of the x axis (at least 1)
    y_max: float

    @property
    def left(self) -> float:
        return MARGIN_LEFT

    @property
    def right(self) -> float:
        return self.width - MARGIN_RIGHT

    @property
    def top(self) -> float:
        return MARGIN_TOP

    @property
    def bottom(self) -> float:
        return self.height - MARGIN_BOTTOM

    def x(self, epoch: float) -> float:
        """Epoch 1 at the left edge, the last epoch at the right edge; a lone epoch in the middle."""
        if self.epochs <= 1:
            return (self.left + self.right) / 2
        return self.left + (epoch - 1) / (self.epochs - 1) * (self.right - self.left)

    def y(self, value: float) -> float:
        """0 at the bottom, y_max at the top; values outside are clamped onto the plot area."""
        share = min(max(value / self.y_max, 0.0), 1.0)
        return self.bottom - share * (self.bottom - self.top)


def curves_svg(
    epochs: list[dict],
    metric: str,
    *,
    title: str,
    width: int = 560,
    height: int = 240,
    total_epochs: int | None = None,
) -> str:
    """Training and validation curves of one metric across all epochs, as accessible inline SVG.

    `total_epochs` (optional) is the planned number of epochs: the x axis then spans the whole run
    while it is still going, so it does not re-scale every second, and the description says
    "Epoch 7 of 10".
    """
    if metric not in METRICS:
        raise ValueError(f"Unknown metric {metric!r}: expected one of {', '.join(METRICS)}.")
    ids = _chart_ids(title, metric)
    if not epochs:
        return _svg(ids, title, "No epochs yet.", width, height, _empty_body(width, height))
    training = [_finite(row.get(metric)) for row in epochs]
    validation = [_finite(row.get("val_" + metric)) for row in epochs]
    frame = _Frame(width, height, max(len(epochs), total_epochs or 0), _y_max(metric, training + validation))
    has_validation = any(v is not None for v in validation)
    body = [
        _y_axis(frame, metric),
        _x_axis(frame),
        _phase_marker(frame, epochs),
        _series(frame, epochs, training, metric, validation=False),
        _series(frame, epochs, validation, metric, validation=True) if has_validation else "",
        _legend(frame, has_validation),
    ]
    desc = _describe(epochs, metric, frame.epochs if total_epochs else None)
    return _svg(ids, title, desc, width, height, "".join(body))


def _chart_ids(title: str, metric: str) -> str:
    digest = hashlib.sha1(f"{title}\0{metric}".encode(), usedforsecurity=False).hexdigest()[:6]
    return f"chart-{digest}-{next(_CHART_IDS)}"


def _finite(value: object) -> float | None:
    """The value as a float, or None for missing, non-numeric, NaN and infinite values (gaps)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _svg(prefix: str, title: str, desc: str, width: int, height: int, body: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" preserveAspectRatio="xMidYMid meet" role="img" '
        f'aria-labelledby="{prefix}-title {prefix}-desc" font-family="system-ui, sans-serif" '
        f'font-size="{FONT_SIZE}" fill="currentColor">'
        f'<title id="{prefix}-title">{escape(title)}</title>'
        f'<desc id="{prefix}-desc">{escape(desc)}</desc>'
        f"{body}</svg>"
    )


def _empty_body(width: int, height: int) -> str:
    return (
        f'<text class="chart-empty" x="{_n(width / 2)}" y="{_n(height / 2)}" text-anchor="middle" '
        f'dominant-baseline="middle" fill="currentColor" fill-opacity="0.7">No epochs yet.</text>'
    )


# Scales and ticks


def nice_maximum(value: float) -> float:
    """The smallest of 1, 2, 2.5 or 5 times a power of ten that is at least `value` (1 for nothing)."""
    if not math.isfinite(value) or value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    for factor in (*NICE_FACTORS, 10):
        candidate = factor * power
        if candidate >= value * (1 - 1e-12):
            return candidate
    return 10 * power  # pragma: no cover - the loop always returns


def y_ticks(metric: str, y_max: float) -> list[float]:
    """Gridline values from 0 to the top of the axis, 4 or 5 intervals."""
    if metric == ACCURACY:
        return list(ACCURACY_TICKS)
    power = 10.0 ** math.floor(math.log10(y_max))
    factor = round(y_max / power, 6)
    if factor not in GRID_STEPS:  # 10 after rounding: the next power of ten
        power, factor = power * 10, 1
    step = GRID_STEPS[factor] * power
    count = round(y_max / step)
    return [i * step for i in range(count + 1)]


def x_ticks(epochs: int) -> list[int]:
    """Epoch numbers to label: all of them up to 10, then every 2nd, 5th, 10th, 20th, 50th ..."""
    step = next(s for s in _nice_steps() if math.ceil(epochs / s) <= MAX_X_LABELS)
    if step <= 2:
        return list(range(1, epochs + 1, step))
    return [1, *range(step, epochs + 1, step)]


def _nice_steps() -> Iterator[int]:
    for power in itertools.count():
        for factor in (1, 2, 5):
            yield factor * 10**power


def _y_max(metric: str, values: Sequence[float | None]) -> float:
    if metric == ACCURACY:
        return 1.0
    return nice_maximum(max((v for v in values if v is not None), default=0.0))


def _tick_label(metric: str, value: float) -> str:
    return f"{value * 100:.0f}%" if metric == ACCURACY else f"{value:g}"


def _y_axis(frame: _Frame, metric: str) -> str:
    parts = []
    for value in y_ticks(metric, frame.y_max):
        y = _n(frame.y(value))
        parts.append(
            f'<line class="chart-grid" x1="{_n(frame.left)}" x2="{_n(frame.right)}" y1="{y}" y2="{y}" '
            f'stroke="currentColor" stroke-opacity="0.15"/>'
            f'<text x="{_n(frame.left - 6)}" y="{y}" text-anchor="end" dominant-baseline="middle">'
            f"{escape(_tick_label(metric, value))}</text>"
        )
    return f'<g class="chart-axis chart-y">{"".join(parts)}</g>'


def _x_axis(frame: _Frame) -> str:
    bottom = _n(frame.bottom)
    parts = [
        f'<line x1="{_n(frame.left)}" x2="{_n(frame.right)}" y1="{bottom}" y2="{bottom}" '
        f'stroke="currentColor" stroke-opacity="0.5"/>'
    ]
    for epoch in x_ticks(frame.epochs):
        x = _n(frame.x(epoch))
        parts.append(
            f'<line x1="{x}" x2="{x}" y1="{bottom}" y2="{_n(frame.bottom + 4)}" stroke="currentColor" '
            f'stroke-opacity="0.5"/><text x="{x}" y="{_n(frame.bottom + 15)}" text-anchor="middle">{epoch}</text>'
        )
    parts.append(
        f'<text x="{_n((frame.left + frame.right) / 2)}" y="{frame.height - 4}" text-anchor="middle" '
        f'fill-opacity="0.8">Epoch</text>'
    )
    return f'<g class="chart-axis chart-x">{"".join(parts)}</g>'


# Series, phase marker, legend


def _series(frame: _Frame, epochs: list[dict], values: list[float | None], metric: str, *, validation: bool) -> str:
    """One polyline through the finite values (gaps are skipped) and a small circle on each."""
    name, css, colour = SERIES[validation]
    dash = f' stroke-dasharray="{VAL_DASH}"' if validation else ""
    radius = 2.5 if frame.epochs <= 40 else 1.5
    points, markers = [], []
    for index, value in enumerate(values):
        if value is None:
            continue
        x, y = _n(frame.x(index + 1)), _n(frame.y(value))
        points.append(f"{x},{y}")
        tip = f"{_epoch_name(epochs, index)}: {name.lower()} {metric} {_value_text(metric, value)}"
        markers.append(f'<circle cx="{x}" cy="{y}" r="{radius}"><title>{escape(tip)}</title></circle>')
    line = (
        f'<polyline points="{" ".join(points)}" fill="none" stroke="{colour}" stroke-width="2" '
        f'stroke-linejoin="round" stroke-linecap="round"{dash}/>'
        if points
        else ""
    )
    return f'<g class="{css}" data-series="{name.lower()}">{line}<g fill="{colour}">{"".join(markers)}</g></g>'


def _fine_tune_start(epochs: list[dict]) -> int | None:
    """Index of the first fine-tune epoch, when fine-tuning follows at least one earlier epoch."""
    for index, row in enumerate(epochs):
        if row.get("phase") == FINE_TUNE:
            return index or None
    return None


def _phase_marker(frame: _Frame, epochs: list[dict]) -> str:
    """A dashed vertical line half-way between the last transfer epoch and the first fine-tune one.

    Its label sits in the top margin below the legend's row, so the two never collide.
    """
    start = _fine_tune_start(epochs)
    if start is None:
        return ""
    x = frame.x(start + 0.5)  # overall epoch numbers are 1-based: between epoch `start` and `start + 1`
    fits_right = x + 4 + len(PHASE_LABEL) * CHAR_WIDTH <= frame.width - 2
    anchor, text_x = ("start", x + 4) if fits_right else ("end", x - 4)
    return (
        f'<g class="chart-phase"><line x1="{_n(x)}" x2="{_n(x)}" y1="{_n(frame.top - 14)}" y2="{_n(frame.bottom)}" '
        f'stroke="{PHASE_COLOUR}" stroke-width="1.5" stroke-dasharray="{PHASE_DASH}"/>'
        f'<text x="{_n(text_x)}" y="{_n(frame.top - 5)}" text-anchor="{anchor}" fill-opacity="0.8">{PHASE_LABEL}</text>'
        "</g>"
    )


def _legend_entries(has_validation: bool) -> list[tuple[str, str, str]]:
    entries = [("Training", TRAIN_COLOUR, "")]
    entries.append(("Validation", VAL_COLOUR, VAL_DASH) if has_validation else ("No validation data", "", ""))
    return entries


def _legend_width(has_validation: bool) -> float:
    return sum(_entry_width(name, colour) for name, colour, _ in _legend_entries(has_validation))


def _entry_width(name: str, colour: str) -> float:
    return (24 if colour else 0) + len(name) * CHAR_WIDTH + 14


def _legend(frame: _Frame, has_validation: bool) -> str:
    """Right-aligned in the top margin, so it never covers the curves."""
    x = frame.right - _legend_width(has_validation) + 14
    y = LEGEND_Y
    parts = []
    for name, colour, dash in _legend_entries(has_validation):
        if colour:
            dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
            parts.append(
                f'<line x1="{_n(x)}" x2="{_n(x + 18)}" y1="{_n(y)}" y2="{_n(y)}" stroke="{colour}" '
                f'stroke-width="2"{dash_attr}/><circle cx="{_n(x + 9)}" cy="{_n(y)}" r="2.5" fill="{colour}"/>'
            )
            text_x = x + 24
        else:
            text_x = x
        opacity = "" if colour else ' fill-opacity="0.6"'
        parts.append(f'<text x="{_n(text_x)}" y="{_n(y)}" dominant-baseline="middle"{opacity}>{escape(name)}</text>')
        x += _entry_width(name, colour)
    return f'<g class="chart-legend">{"".join(parts)}</g>'


# Words


def _describe(epochs: list[dict], metric: str, total: int | None) -> str:
    """The latest values in words, for screen readers: "Epoch 7 of 10: training accuracy 91%, …"."""
    latest = epochs[-1]
    where = f"Epoch {len(epochs)} of {total}" if total else f"Epoch {len(epochs)}"
    parts = []
    for name, key in (("training", metric), ("validation", "val_" + metric)):
        raw = latest.get(key)
        value = _finite(raw)
        if value is not None:
            parts.append(f"{name} {metric} {_value_text(metric, value)}")
        elif isinstance(raw, int | float) and not isinstance(raw, bool):
            parts.append(f"{name} {metric} not a number")
    return f"{where}: {', '.join(parts)}." if parts else f"{where}: no {metric} yet."


def _epoch_name(epochs: list[dict], index: int) -> str:
    row = epochs[index]
    phase, within = row.get("phase"), row.get("epoch")
    if phase and within is not None:
        return f"Epoch {index + 1} ({phase} {within})"
    return f"Epoch {index + 1}"


def _value_text(metric: str, value: float) -> str:
    if metric == ACCURACY:
        return f"{value * 100:.0f}%"
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def _n(value: float) -> str:
    """A coordinate with at most one decimal, without a trailing ".0"."""
    return f"{round(value, 1):g}"


# --- Confusion matrix --------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One square of the confusion matrix, ready for a table cell (text is plain: the template escapes)."""

    count: int
    share: float  # count / row total (0 when the row is empty)
    correct: bool  # on the diagonal
    background: str  # CSS colour
    foreground: str  # text colour that contrasts with the background
    title: str  # tooltip text


@dataclass(frozen=True)
class MatrixRow:
    """One true label: its images, where they were predicted, and how many were found (recall)."""

    label: str
    total: int
    cells: list[Cell]
    recall: float | None


def confusion_rows(matrix: list[list[int]], labels: list[str]) -> list[MatrixRow]:
    """Rows are true labels, columns predicted ones; colours say at a glance where mistakes are."""
    _check_matrix(matrix, labels)
    rows = []
    for i, (true_label, counts) in enumerate(zip(labels, matrix, strict=True)):
        total = sum(counts)
        cells = [_cell(count, total, i == j, true_label, labels[j]) for j, count in enumerate(counts)]
        rows.append(MatrixRow(true_label, total, cells, counts[i] / total if total else None))
    return rows


def _check_matrix(matrix: list[list[int]], labels: list[str]) -> None:
    size = len(labels)
    if len(matrix) != size:
        raise ValueError(f"The confusion matrix has {len(matrix)} rows for {size} labels.")
    for row in matrix:
        if len(row) != size:
            raise ValueError(f"The confusion matrix is not square: a row has {len(row)} columns for {size} labels.")
        if any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in row):
            raise ValueError("Confusion matrix counts must be whole numbers, zero or more.")


def _cell(count: int, total: int, correct: bool, true_label: str, predicted: str) -> Cell:
    share = count / total if total else 0.0
    background, lightness = _background(count, share, correct)
    images = "image" if count == 1 else "images"
    title = f"{count} {images} of “{true_label}” predicted as “{predicted}” ({_percent(share)})"
    return Cell(count, share, correct, background, _foreground(background, lightness, correct), title)


def _background(count: int, share: float, correct: bool) -> tuple[str, float | None]:
    """Lighter for small shares, darker for large ones; blue on the diagonal, orange off it."""
    if count == 0:
        return EMPTY_BACKGROUND, None
    intensity = MIN_INTENSITY + (1 - MIN_INTENSITY) * share
    lightness = round(LIGHTEST - (LIGHTEST - DARKEST) * intensity, 1)
    hue, saturation = (CORRECT_HUE, CORRECT_SATURATION) if correct else (MISTAKE_HUE, MISTAKE_SATURATION)
    return f"hsl({hue} {saturation}% {lightness:g}%)", lightness


def _foreground(background: str, lightness: float | None, correct: bool) -> str:
    """White or dark text, whichever has the higher WCAG contrast ratio with the background."""
    if lightness is None:
        return DARK_TEXT
    hue, saturation = (CORRECT_HUE, CORRECT_SATURATION) if correct else (MISTAKE_HUE, MISTAKE_SATURATION)
    back = _luminance(_hsl_to_rgb(hue, saturation / 100, lightness / 100))
    white = _contrast(back, _luminance((1.0, 1.0, 1.0)))
    dark = _contrast(back, _luminance(_hex_to_rgb(DARK_TEXT)))
    return LIGHT_TEXT if white >= dark else DARK_TEXT


def _hsl_to_rgb(hue: float, saturation: float, lightness: float) -> tuple[float, float, float]:
    chroma = (1 - abs(2 * lightness - 1)) * saturation

    def channel(n: int) -> float:
        k = (n + hue / 30) % 12
        return lightness - chroma / 2 * max(-1.0, min(k - 3, 9 - k, 1.0))

    return channel(0), channel(8), channel(4)


def _hex_to_rgb(colour: str) -> tuple[float, float, float]:
    digits = colour.lstrip("#")
    red, green, blue = (int(digits[i : i + 2], 16) / 255 for i in (0, 2, 4))
    return red, green, blue


def _luminance(rgb: tuple[float, float, float]) -> float:
    def linear(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _contrast(a: float, b: float) -> float:
    light, dark = max(a, b), min(a, b)
    return (light + 0.05) / (dark + 0.05)


def _percent(share: float) -> str:
    """Whole percent, but never "0%" for a few images or "100%" for not quite all of them."""
    if 0 < share < 0.005:
        return "<1%"
    if 0.995 <= share < 1:
        return ">99%"
    return f"{share * 100:.0f}%"


# --- Formatting --------------------------------------------------------------------------------


def format_duration(seconds: float | None) -> str:
    """A short human duration for epoch and job times: "45 s", "3 min 05 s", "1 h 02 min"."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "—"
    if 0 < seconds < 0.5:
        return "<1 s"
    total = round(seconds)
    if total < 60:
        return f"{total} s"
    if total < 3600:
        minutes, secs = divmod(total, 60)
        return f"{minutes} min {secs:02d} s"
    hours, rest = divmod(total, 3600)
    return f"{hours} h {rest // 60:02d} min"
