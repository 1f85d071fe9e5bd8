"""Turning query results into tables, JSON, CSV and terminal charts (shared by both targets)."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum

from rich.console import Console
from rich.table import Table

SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow"}


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


def _plain(value):
    if isinstance(value, datetime):  # naive datetimes from the lake are UTC
        text = value.isoformat(timespec="milliseconds")
        return text + "Z" if value.tzinfo is None else text
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def print_result(
    console: Console,
    columns: list[str],
    rows: list[tuple],
    output: OutputFormat,
    title: str | None = None,
) -> None:
    """Print rows in the chosen format; `severity` cells are coloured in tables."""
    if output is OutputFormat.json:
        records = [{c: _plain(v) for c, v in zip(columns, row, strict=True)} for row in rows]
        console.print_json(json.dumps(records, ensure_ascii=False))
        return
    if output is OutputFormat.csv:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[_plain(v) for v in row] for row in rows])
        console.out(buffer.getvalue(), end="", highlight=False)
        return
    table = Table(title=title, header_style="bold cyan")
    for column in columns:
        table.add_column(column, overflow="fold", no_wrap=column != "detail")
    severity_at = columns.index("severity") if "severity" in columns else None
    for row in rows:
        style = SEVERITY_STYLE.get(row[severity_at]) if severity_at is not None else None
        table.add_row(*(_cell(v) for v in row), style=style)
    console.print(table)


def trend_chart(
    rows: list[tuple],
    metric: str,
    unit: str,
    width: int = 100,
    height: int = 20,
    max_series: int = 8,
):
    """A line chart (rich Text) of the `avg` column per greenhouse.

    Rows are (bucket, greenhouse, avg, ...) as the trend query returns them.
    """
    from rich.text import Text

    return Text.from_ansi(_plot(rows, metric, unit, width, height, max_series))


def _plot(rows, metric, unit, width, height, max_series) -> str:
    import plotext as plt

    series: dict[str, tuple[list[str], list[float]]] = {}
    for bucket, greenhouse, avg, *_ in rows:
        if avg is None:
            continue
        xs, ys = series.setdefault(greenhouse, ([], []))
        xs.append(bucket.strftime("%d/%m/%Y %H:%M:%S"))
        ys.append(float(avg))
    plt.clear_figure()
    plt.plotsize(width, height)
    plt.date_form("d/m/Y H:M:S", "m-d H:M")
    plt.theme("clear")
    for greenhouse in sorted(series)[:max_series]:
        xs, ys = series[greenhouse]
        plt.plot(xs, ys, label=greenhouse, marker="braille")
    shown = min(len(series), max_series)
    more = f" (first {shown} of {len(series)} greenhouses)" if len(series) > shown else ""
    plt.title(f"{metric} ({unit}), average per bucket{more}")
    return plt.build()
