"""A printed table with several columns (figures.print_table has two: name and value)."""

from __future__ import annotations


def print_grid(title: str, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """Left-aligned first column, right-aligned value column, the rest left-aligned."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        cells = []
        for i, cell in enumerate(row):
            cells.append(f"{cell!s:>{widths[i]}}" if i == 1 else f"{cell!s:<{widths[i]}}")
        return "  ".join(cells).rstrip()

    print(f"\n{title}\n{'-' * (sum(widths) + 2 * (len(widths) - 1))}")
    print(line(header))
    for row in rows:
        print(line(row))
    print()
