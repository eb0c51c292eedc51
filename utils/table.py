"""Results as a printed table and a CSV file."""
from __future__ import annotations

import csv
import io
import math
import os
from typing import Any, Sequence

from utils.io import atomic_write_text, readable_text


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return readable_text(str(value))   # file names that are not UTF-8: backslash-escaped bytes


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    cells = [[_cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [line, "| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |", line]
    out += ["| " + " | ".join(v.ljust(w) for v, w in zip(r, widths)) + " |" for r in cells]
    out.append(line)
    return "\n".join(out)


def write_csv(path: str | os.PathLike, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c, "")) if isinstance(row.get(c), (float, str)) else row.get(c, "")
                         for c in columns])
    atomic_write_text(path, buffer.getvalue())


def with_mean_row(rows: list[dict[str, Any]], name_column: str, value_columns: Sequence[str]) -> list[dict[str, Any]]:
    """Append the mean over rows of each value column (NaN cells are ignored)."""
    if len(rows) < 2:
        return rows
    mean_row: dict[str, Any] = {name_column: "mean"}
    for column in value_columns:
        values = [r[column] for r in rows if isinstance(r.get(column), float) and not math.isnan(r[column])]
        mean_row[column] = sum(values) / len(values) if values else float("nan")
    return rows + [mean_row]


def print_and_save(rows: Sequence[dict[str, Any]], columns: Sequence[str], path: str | os.PathLike) -> None:
    """A benchmark's final step: the table on stdout, the same rows as CSV at `path`, and where."""
    write_csv(path, rows, columns)
    print(format_table(rows, columns))
    print(f"saved {path}")
