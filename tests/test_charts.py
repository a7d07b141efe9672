"""Learning-curve SVG, confusion-matrix cells and durations for the training job page (no database)."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET

import pytest

from training.charts import Cell, confusion_rows, curves_svg, format_duration, nice_maximum, x_ticks

pytestmark = pytest.mark.storage_free  # neither database nor queue: the PostgreSQL run leaves it out

SVG = "{http://www.w3.org/2000/svg}"


def epoch_rows(n: int, *, fine_tune_from: int | None = None, validation: bool = True) -> list[dict]:
    """`n` plausible epochs; from overall epoch `fine_tune_from` on, the phase is fine-tune."""
    rows = []
    for i in range(1, n + 1):
        fine = fine_tune_from is not None and i >= fine_tune_from
        row = {
            "phase": "fine-tune" if fine else "transfer",
            "epoch": i - fine_tune_from + 1 if fine else i,
            "loss": 1.5 / i,
            "accuracy": min(0.5 + 0.05 * i, 0.99),
            "seconds": 12.0,
        }
        if validation:
            row.update(val_loss=1.7 / i, val_accuracy=min(0.45 + 0.05 * i, 0.95))
        rows.append(row)
    return rows


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return root


def series(root: ET.Element, css: str) -> ET.Element | None:
    return root.find(f".//{SVG}g[@class='{css}']")


def polyline_points(group: ET.Element) -> list[tuple[float, float]]:
    lines = group.findall(f"{SVG}polyline")
    assert len(lines) == 1
    return [tuple(map(float, pair.split(","))) for pair in lines[0].get("points").split()]


def y_labels(root: ET.Element) -> list[str]:
    return [t.text for t in root.find(f".//{SVG}g[@class='chart-axis chart-y']").iter(f"{SVG}text")]


def x_labels(root: ET.Element) -> list[str]:
    group = root.find(f".//{SVG}g[@class='chart-axis chart-x']")
    return [t.text for t in group.iter(f"{SVG}text") if t.text != "Epoch"]


def all_coordinates_finite(root: ET.Element) -> bool:
    numbers = [
        number
        for element in root.iter()
        for name in ("x", "y", "x1", "x2", "y1", "y2", "cx", "cy", "points")
        for number in re.split(r"[ ,]", element.get(name, ""))
        if number
    ]
    return bool(numbers) and all(math.isfinite(float(n)) for n in numbers)


def ids(svg: str) -> set[str]:
    return set(re.findall(r'\bid="([^"]+)"', svg))


# --- Learning curves ---------------------------------------------------------------------------


def test_curves_draw_one_polyline_per_series_with_a_point_and_marker_per_epoch():
    root = parse(curves_svg(epoch_rows(6), "accuracy", title="Accuracy"))
    for css in ("chart-train", "chart-val"):
        group = series(root, css)
        assert len(polyline_points(group)) == 6
        assert len(group.findall(f".//{SVG}circle")) == 6
    assert len(root.findall(f".//{SVG}polyline")) == 2


def test_training_points_rise_as_accuracy_improves_and_x_runs_left_to_right():
    points = polyline_points(series(parse(curves_svg(epoch_rows(5), "accuracy", title="A")), "chart-train"))
    xs, ys = zip(*points, strict=True)
    assert list(xs) == sorted(xs)
    assert list(ys) == sorted(ys, reverse=True)  # SVG y grows downwards


def test_validation_is_dashed_and_in_its_own_colour():
    root = parse(curves_svg(epoch_rows(3), "loss", title="Loss"))
    train = series(root, "chart-train").find(f"{SVG}polyline")
    val = series(root, "chart-val").find(f"{SVG}polyline")
    assert train.get("stroke") == "#2b59c3"
    assert val.get("stroke") == "#d9730d"
    assert val.get("stroke-dasharray")
    assert train.get("stroke-dasharray") is None


def test_legend_names_training_and_validation():
    root = parse(curves_svg(epoch_rows(3), "loss", title="Loss"))
    legend = root.find(f".//{SVG}g[@class='chart-legend']")
    assert [t.text for t in legend.iter(f"{SVG}text")] == ["Training", "Validation"]


def test_validation_series_is_absent_without_validation_values():
    svg = curves_svg(epoch_rows(4, validation=False), "loss", title="Loss")
    root = parse(svg)
    assert series(root, "chart-val") is None
    assert len(root.findall(f".//{SVG}polyline")) == 1
    assert "No validation data" in svg
    assert "validation" not in root.find(f"{SVG}desc").text


def test_validation_series_is_absent_when_every_value_is_none():
    rows = [{**row, "val_loss": None, "val_accuracy": None} for row in epoch_rows(3)]
    assert series(parse(curves_svg(rows, "accuracy", title="A")), "chart-val") is None


def test_non_finite_and_missing_values_are_skipped_not_crashed_on():
    rows = epoch_rows(6)
    rows[1]["loss"] = math.nan
    rows[2]["loss"] = math.inf
    rows[3]["loss"] = None
    rows[4]["val_loss"] = -math.inf
    del rows[5]["val_loss"]
    root = parse(curves_svg(rows, "loss", title="Loss"))
    assert len(polyline_points(series(root, "chart-train"))) == 3
    assert len(polyline_points(series(root, "chart-val"))) == 4
    assert all_coordinates_finite(root)
    assert y_labels(root)[-1] == "2"  # the axis ignores inf: largest finite loss is 1.7


def test_a_series_with_no_finite_values_draws_no_line():
    rows = [{**row, "loss": math.nan} for row in epoch_rows(3)]
    root = parse(curves_svg(rows, "loss", title="Loss"))
    assert series(root, "chart-train").find(f"{SVG}polyline") is None
    assert root.find(f"{SVG}desc").text == "Epoch 3: training loss not a number, validation loss 0.567."


def test_accuracy_axis_reads_zero_to_a_hundred_percent():
    root = parse(curves_svg(epoch_rows(3), "accuracy", title="Accuracy"))
    assert y_labels(root) == ["0%", "25%", "50%", "75%", "100%"]


def test_accuracy_above_one_is_clamped_into_the_plot():
    rows = epoch_rows(2)
    rows[1]["accuracy"] = 1.3
    root = parse(curves_svg(rows, "accuracy", title="A"))
    top_gridline = root.findall(f".//{SVG}line[@class='chart-grid']")[-1]
    points = polyline_points(series(root, "chart-train"))
    assert points[1][1] == float(top_gridline.get("y1"))  # on the 100% line, not above it


@pytest.mark.parametrize(
    ("largest", "maximum"),
    [(0.8, 1), (1.0, 1), (1.2, 2), (2.2, 2.5), (3.1, 5), (7, 10), (0.04, 0.05), (0.021, 0.025), (130, 200)],
)
def test_nice_maximum_is_one_two_two_and_a_half_or_five_times_a_power_of_ten(largest, maximum):
    assert nice_maximum(largest) == pytest.approx(maximum)


@pytest.mark.parametrize(
    ("largest", "labels"),
    [
        (1.7, ["0", "0.5", "1", "1.5", "2"]),
        (2.3, ["0", "0.5", "1", "1.5", "2", "2.5"]),
        (0.9, ["0", "0.25", "0.5", "0.75", "1"]),
        (4.2, ["0", "1", "2", "3", "4", "5"]),
        (0.03, ["0", "0.01", "0.02", "0.03", "0.04", "0.05"]),
    ],
)
def test_loss_axis_ends_at_a_nice_number_above_the_largest_loss_with_four_or_five_intervals(largest, labels):
    rows = [{"phase": "transfer", "epoch": 1, "loss": largest / 2}, {"phase": "transfer", "epoch": 2, "loss": largest}]
    assert y_labels(parse(curves_svg(rows, "loss", title="Loss"))) == labels


def test_loss_axis_defaults_to_one_when_every_loss_is_zero():
    rows = [{"phase": "transfer", "epoch": 1, "loss": 0.0}]
    assert y_labels(parse(curves_svg(rows, "loss", title="Loss")))[-1] == "1"


def test_x_axis_labels_every_epoch_up_to_ten_then_thins_out():
    assert x_ticks(1) == [1]
    assert x_ticks(10) == list(range(1, 11))
    assert x_ticks(20) == [1, 3, 5, 7, 9, 11, 13, 15, 17, 19]
    assert x_ticks(50) == [1, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50]
    for n in range(1, 500, 7):
        assert len(x_ticks(n)) <= 11


def test_x_axis_labels_in_the_chart_follow_the_epoch_count():
    root = parse(curves_svg(epoch_rows(30), "loss", title="Loss"))
    assert x_labels(root) == ["1", "5", "10", "15", "20", "25", "30"]


def test_planned_epochs_widen_the_x_axis_and_appear_in_the_description():
    root = parse(curves_svg(epoch_rows(3), "accuracy", title="A", total_epochs=10))
    assert x_labels(root)[-1] == "10"
    assert root.find(f"{SVG}desc").text.startswith("Epoch 3 of 10:")


def test_fine_tuning_marker_appears_where_fine_tuning_follows_transfer():
    root = parse(curves_svg(epoch_rows(8, fine_tune_from=6), "accuracy", title="A"))
    markers = root.findall(f".//{SVG}g[@class='chart-phase']")
    assert len(markers) == 1
    assert markers[0].find(f"{SVG}text").text == "fine-tuning"
    line = markers[0].find(f"{SVG}line")
    assert line.get("stroke-dasharray")
    xs = [x for x, _ in polyline_points(series(root, "chart-train"))]
    assert xs[4] < float(line.get("x1")) < xs[5]  # between the last transfer and the first fine-tune epoch


@pytest.mark.parametrize(
    "rows",
    [epoch_rows(5), [{**row, "phase": "fine-tune"} for row in epoch_rows(4)]],
    ids=["transfer only", "fine-tune from the first epoch"],
)
def test_no_fine_tuning_marker_without_a_transfer_then_fine_tune_switch(rows):
    svg = curves_svg(rows, "loss", title="Loss")
    assert "chart-phase" not in svg
    assert "fine-tuning" not in svg


def test_chart_is_accessible_and_responsive():
    root = parse(curves_svg(epoch_rows(10), "accuracy", title="Accuracy"))
    assert root.get("role") == "img"
    assert root.get("class") == "chart"
    assert root.get("viewBox") == "0 0 560 240"
    assert root.get("preserveAspectRatio")
    title, desc = root.find(f"{SVG}title"), root.find(f"{SVG}desc")
    assert title.text == "Accuracy"
    assert root.get("aria-labelledby") == f"{title.get('id')} {desc.get('id')}"
    assert desc.text == "Epoch 10: training accuracy 99%, validation accuracy 95%."


def test_description_gives_loss_with_three_significant_digits():
    desc = parse(curves_svg(epoch_rows(7), "loss", title="Loss")).find(f"{SVG}desc").text
    assert desc == "Epoch 7: training loss 0.214, validation loss 0.243."


def test_custom_size_sets_the_view_box():
    root = parse(curves_svg(epoch_rows(3), "loss", title="Loss", width=400, height=200))
    assert root.get("viewBox") == "0 0 400 200"


def test_two_charts_rendered_one_after_another_have_different_ids():
    rows = epoch_rows(4)
    first, second = curves_svg(rows, "accuracy", title="Same"), curves_svg(rows, "accuracy", title="Same")
    assert ids(first) and ids(second)
    assert not ids(first) & ids(second)
    loss = curves_svg(rows, "loss", title="Loss")
    assert not ids(loss) & (ids(first) | ids(second))


def test_titles_and_quotes_are_escaped():
    title = "<script>alert(\"x\")</script> & 'y'"
    svg = curves_svg(epoch_rows(2), "loss", title=title)
    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg
    assert parse(svg).find(f"{SVG}title").text == title
    assert parse(curves_svg([], "loss", title=title)).find(f"{SVG}title").text == title


def test_no_epochs_gives_a_small_valid_chart_saying_so():
    svg = curves_svg([], "accuracy", title="Accuracy")
    root = parse(svg)
    assert root.find(f"{SVG}title").text == "Accuracy"
    assert root.find(f"{SVG}desc").text == "No epochs yet."
    assert [t.text for t in root.iter(f"{SVG}text")] == ["No epochs yet."]
    assert "polyline" not in svg


def test_a_single_epoch_draws_its_points_in_the_middle():
    root = parse(curves_svg(epoch_rows(1), "loss", title="Loss"))
    for css in ("chart-train", "chart-val"):
        [(x, _)] = polyline_points(series(root, css))
        assert x == 294  # half-way across the plot area (44 .. 544)
        assert len(series(root, css).findall(f".//{SVG}circle")) == 1


@pytest.mark.parametrize("n", [1, 2, 7, 12, 45, 150])
@pytest.mark.parametrize("metric", ["loss", "accuracy"])
def test_output_parses_as_xml_for_many_epoch_counts(n, metric):
    root = parse(curves_svg(epoch_rows(n, fine_tune_from=n // 2 + 1), metric, title=f"{metric} <{n}>"))
    assert all_coordinates_finite(root)
    assert len(polyline_points(series(root, "chart-train"))) == n


def test_unknown_metric_is_refused():
    with pytest.raises(ValueError, match="Unknown metric"):
        curves_svg(epoch_rows(2), "f1", title="F1")


# --- Confusion matrix --------------------------------------------------------------------------


def test_confusion_rows_give_shares_recall_and_the_diagonal():
    rows = confusion_rows([[17, 3], [5, 15]], ["cats", "dogs"])
    assert [r.label for r in rows] == ["cats", "dogs"]
    assert [r.total for r in rows] == [20, 20]
    assert [c.share for c in rows[0].cells] == [0.85, 0.15]
    assert [c.count for c in rows[1].cells] == [5, 15]
    assert rows[0].recall == 0.85
    assert rows[1].recall == 0.75
    assert [[c.correct for c in r.cells] for r in rows] == [[True, False], [False, True]]


def test_an_empty_row_has_zero_shares_no_recall_and_white_ish_cells():
    rows = confusion_rows([[4, 0], [0, 0]], ["cats", "dogs"])
    assert rows[1].total == 0
    assert rows[1].recall is None
    assert [c.share for c in rows[1].cells] == [0, 0]
    assert all(c.background == "hsl(0 0% 98%)" for c in rows[1].cells)
    assert all(c.foreground != "#fff" for c in rows[1].cells)


def test_colours_are_blue_on_the_diagonal_orange_off_it_and_darker_for_larger_shares():
    rows = confusion_rows([[9, 1], [3, 7]], ["cats", "dogs"])

    def hsl(cell: Cell) -> tuple[float, float]:
        hue, _, lightness = re.fullmatch(r"hsl\((\d+) (\d+)% ([\d.]+)%\)", cell.background).groups()
        return float(hue), float(lightness)

    (cat_hue, cat_light), (miss_hue, miss_light) = hsl(rows[0].cells[0]), hsl(rows[0].cells[1])
    assert 200 <= cat_hue <= 240  # blue
    assert miss_hue <= 40  # orange/red
    assert cat_light < hsl(rows[1].cells[1])[1]  # 90% is darker than 70%
    assert miss_light > hsl(rows[1].cells[0])[1]  # 10% is lighter than 30%


def test_text_is_white_on_dark_backgrounds_and_dark_on_light_ones():
    rows = confusion_rows([[20, 0], [1, 99]], ["cats", "dogs"])
    assert rows[0].cells[0].foreground == "#fff"  # 100% correct: darkest blue
    assert rows[1].cells[1].foreground == "#fff"
    assert rows[1].cells[0].foreground != "#fff"  # 1% mistake: pale orange
    assert rows[0].cells[1].foreground != "#fff"  # empty


def test_cell_tooltips_say_what_was_predicted_as_what():
    rows = confusion_rows([[17, 3], [1, 299]], ["cats", "dogs"])
    assert rows[0].cells[1].title == "3 images of “cats” predicted as “dogs” (15%)"
    assert rows[0].cells[0].title == "17 images of “cats” predicted as “cats” (85%)"
    assert rows[1].cells[0].title == "1 image of “dogs” predicted as “cats” (<1%)"
    assert rows[1].cells[1].title == "299 images of “dogs” predicted as “dogs” (>99%)"


def test_tooltips_keep_label_text_as_plain_text_for_the_template_to_escape():
    rows = confusion_rows([[1, 1], [0, 1]], ['<b>"a"</b>', "b"])
    assert rows[0].label == '<b>"a"</b>'
    assert rows[0].cells[1].title == '1 image of “<b>"a"</b>” predicted as “b” (50%)'


@pytest.mark.parametrize(
    ("matrix", "labels"),
    [
        ([[1, 2], [3]], ["a", "b"]),
        ([[1, 2, 3], [4, 5, 6]], ["a", "b"]),
        ([[1, 2], [3, 4]], ["a", "b", "c"]),
        ([[1]], ["a", "b"]),
        ([[1, -1], [0, 1]], ["a", "b"]),
    ],
    ids=["ragged", "not square", "too few rows for the labels", "too small", "negative count"],
)
def test_a_matrix_that_does_not_fit_the_labels_is_refused(matrix, labels):
    with pytest.raises(ValueError):
        confusion_rows(matrix, labels)


def test_no_labels_give_no_rows():
    assert confusion_rows([], []) == []


# --- Durations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "—"),
        (math.nan, "—"),
        (-3, "—"),
        (0, "0 s"),
        (0.2, "<1 s"),
        (45, "45 s"),
        (59.6, "1 min 00 s"),
        (185, "3 min 05 s"),
        (3599, "59 min 59 s"),
        (3720, "1 h 02 min"),
        (90061, "25 h 01 min"),
    ],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text
