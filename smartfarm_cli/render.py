"""Turning results into tables, JSON, CSV and terminal charts (shared by both targets).

JSON and CSV are written with the standard library straight to stdout, one row at a time:
always valid (an empty result is `[]` or a header line), never shaped by the terminal. Tables
are for people at 80 columns: the columns that matter first, long ones only with `--wide`,
numbers never cut, and every cell plain text (device input is not markup, control characters
are dropped).
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow"}
# C0 and C1 control characters and DEL: a cell must not move the cursor or start an escape.
_CONTROL = dict.fromkeys([*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)])
_TEXT_MAX = 24  # table width of an id or other short text column before an ellipsis


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


@dataclass(frozen=True)
class Col:
    """How one result column shows in a table: its header, and whether it needs --wide."""

    name: str
    header: str | None = None
    wide: bool = False  # long values (keys, raw input): only with --wide, always in json/csv
    wrap: bool = False  # prose (reasons, details): wraps instead of being cut
    whole: bool = False  # never cut (numbers and times never are)

    @property
    def title(self) -> str:
        return self.header or self.name


def plain(value):
    """A JSON/CSV-ready value: datetimes as ISO-8601 UTC with milliseconds and a Z."""
    if isinstance(value, datetime):  # naive datetimes from the lake are UTC
        text = value.isoformat(timespec="milliseconds")
        return text + "Z" if value.tzinfo is None else text.replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


def clean(text: str) -> str:
    """Drop control characters (terminal escapes, newlines) from text shown in a table."""
    return text.translate(_CONTROL)


def cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return clean(str(value))


_PLAIN_TYPES = frozenset({str, int, float, bool, type(None)})


def plain_rows(rows: Sequence[Sequence]) -> Iterable[Sequence]:
    """`rows` with every value made plain, converted a column at a time.

    A column of numbers and text passes as it is; one holding datetimes converts each distinct
    value once (a trend repeats each bucket for every greenhouse). Same values as `plain`
    per cell, several times faster on a large result.
    """
    if not rows:
        return rows
    columns = [
        values if _PLAIN_TYPES.issuperset(map(type, values)) else _plain_column(values)
        for values in zip(*rows, strict=True)
    ]
    return list(zip(*columns, strict=True))


def _plain_column(values: Sequence) -> list:
    done: dict = {}
    out = []
    for value in values:
        if type(value) in _PLAIN_TYPES:
            out.append(value)
            continue
        try:
            key = (type(value), value)
            if key not in done:
                done[key] = plain(value)
            out.append(done[key])
        except TypeError:  # unhashable (a list or map from a user's query)
            out.append(plain(value))
    return out


_encode = json.JSONEncoder(ensure_ascii=False, default=str).encode


def write_json(columns: Sequence[str], rows: Sequence[Sequence]) -> None:
    """A JSON array of objects, one per line, streamed."""
    out = sys.stdout
    separator = "[\n"
    for row in plain_rows(rows):
        out.write(separator)
        out.write(_encode(dict(zip(columns, row, strict=True))))
        separator = ",\n"
    out.write("[]\n" if separator == "[\n" else "\n]\n")


def write_json_object(record: dict) -> None:
    sys.stdout.write(_encode({k: plain(v) for k, v in record.items()}))
    sys.stdout.write("\n")


def write_csv(columns: Sequence[str], rows: Sequence[Sequence]) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(plain_rows(rows))


def print_result(
    console: Console,
    columns: Sequence[str],
    rows: Sequence[Sequence],
    output: OutputFormat,
    title: str | None = None,
    view: Sequence[Col] | None = None,
    wide: bool = False,
    empty: str | None = None,
    caption: str | None = None,
) -> None:
    """Print rows as a table, JSON or CSV.

    `view` picks and names the table's columns (default: every column as it is); `wide` adds
    the ones marked wide; `caption` goes under the table. An empty table prints `empty` on
    stderr instead of a bare frame; empty JSON and CSV stay valid (`[]`, the header).
    """
    if output is OutputFormat.json:
        write_json(columns, rows)
        return
    if output is OutputFormat.csv:
        write_csv(columns, rows)
        return
    if not rows:
        from rich.console import Console

        Console(stderr=True).print(empty or "no rows", highlight=False)
        return
    shown = [
        c
        for c in (view or [Col(c) for c in columns])
        if (wide or not c.wide) and (view is None or c.name in columns)
    ]
    table, needed = build_table(columns, rows, shown, title)
    table.caption = caption
    # Wider than the terminal even at its narrowest: draw it at that width and let the
    # terminal wrap the lines, rather than cut cells.
    width = console.width
    try:
        console.width = max(width, needed)
        console.print(table, soft_wrap=False)
    finally:
        console.width = width


def house_table(title: str | None):
    """The rich Table every farmctl table starts from: a header rule, no side borders and
    single spaces between columns, so 80 columns hold whole cells."""
    from rich import box
    from rich.table import Table

    return Table(
        title=title,
        header_style="bold cyan",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )


def build_table(columns: Sequence[str], rows: Sequence[Sequence], shown: Sequence[Col], title):
    """A rich Table of the `shown` columns, and the narrowest width that cuts no cell."""
    from rich.text import Text

    index = {name: i for i, name in enumerate(columns)}
    cells = [[cell(row[index[c.name]]) for c in shown] for row in rows]
    table = house_table(title)
    needed = 2 * len(shown)  # the padding around and between columns
    for position, col in enumerate(shown):
        values = [row[index[col.name]] for row in rows]
        numeric = all(isinstance(v, int | float | Decimal) or v is None for v in values)
        widest = max(len(col.title), *(len(line[position]) for line in cells))
        if numeric or col.whole or isinstance(values[0], datetime):
            table.add_column(
                col.title, justify="right" if numeric else "left", no_wrap=True, min_width=widest
            )
            needed += widest
        elif col.wrap:
            table.add_column(col.title, overflow="fold", min_width=min(widest, 20))
            needed += min(widest, 20)
        else:
            shortest = min(widest, 8)  # ids may end in an ellipsis, not shorter than this
            # Not no_wrap: rich then takes a too-wide table's excess from these columns (an id
            # has no space to wrap at, so it ends in the ellipsis); with no_wrap it cut every
            # column evenly, numbers and times too.
            table.add_column(
                col.title,
                overflow="ellipsis",
                max_width=max(_TEXT_MAX, len(col.title)),
                min_width=shortest,
            )
            needed += shortest
    severity_at = index.get("severity")
    for row, line in zip(rows, cells, strict=True):
        style = SEVERITY_STYLE.get(row[severity_at]) if severity_at is not None else None
        table.add_row(*(Text(value) for value in line), style=style)
    return table, needed


# One object (status, stack, crawler) as item / value rows: names whole, values (paths, notes)
# wrapped rather than cut.
RECORD_VIEW = [Col("item", whole=True), Col("value", wrap=True)]

# Table columns at 80 characters: what matters first; long ones only with --wide.
SPIKES_VIEW = [
    Col("timestamp", "time (UTC)"),
    Col("greenhouse_id", "greenhouse"),
    Col("device_id", "device"),
    Col("severity"),
    Col("rule"),
    Col("reading", whole=True),
    Col("metric", wide=True),
    Col("detail", wide=True, wrap=True),
    *(Col(c, wide=True) for c in ("temperature", "humidity", "co2", "error_code")),
    Col("source_key", "source", wide=True, wrap=True),
    Col("synthetic", wide=True),
]
LATEST_VIEW = [
    Col("greenhouse_id", "greenhouse"),
    Col("device_id", "device"),
    Col("timestamp", "time"),
    Col("temperature", "°C"),
    Col("humidity", "%RH"),
    Col("co2", "CO2 ppm"),
    Col("error_code", "error"),
    Col("synthetic", "synth"),
]
ALERTS_VIEW = [  # 80 columns; the rows still take their severity's colour
    Col("state"),
    Col("greenhouse_id", "greenhouse"),
    Col("device_id", "device"),
    Col("rule"),
    Col("metric"),
    Col("opened", "opened (UTC)"),
    Col("severity", wide=True),
    Col("at", "event at (UTC)", wide=True, whole=True),  # null on open rows: not told by value
    Col("anomalies", wide=True),
    Col("worst", wide=True),
]
REJECTED_VIEW = [
    Col("id"),
    Col("received", "received (UTC)"),
    Col("source"),
    Col("reason", wrap=True),
    Col("raw", "input", wide=True, wrap=True),
]
INGEST_VIEW = [Col("line"), Col("reason", wrap=True), Col("input", wide=True, wrap=True)]
TREND_SUMMARY_VIEW = [
    Col("greenhouse_id", "greenhouse"),
    Col("first_bucket", "from", wide=True),
    Col("last_bucket", "to", wide=True),
    Col("mean"),
    Col("min"),
    Col("max"),
    Col("last"),
    Col("readings"),
]


SYNTHETIC_FOOTNOTE = "* synthetic readings (simulate, demo, backfill)"


def mark_synthetic(columns: Sequence[str], rows: Sequence[Sequence]):
    """Rows with a `*` after the device of each synthetic one (a table column more would not
    fit 80 columns), and the footnote to print under them (None when no row is marked)."""
    if "synthetic" not in columns:
        return rows, None
    flag, device = columns.index("synthetic"), columns.index("device_id")
    marked = [
        (*row[:device], f"{row[device]}*", *row[device + 1 :]) if row[flag] else row for row in rows
    ]
    return marked, SYNTHETIC_FOOTNOTE if any(row[flag] for row in rows) else None


def with_spike_reading(columns: Sequence[str], rows: Sequence[Sequence]):
    """Spike rows with a leading `reading` column: what the rule judged, with its unit
    (`400.00 °C`, `12.50 %RH`, `error 4`)."""
    from .core.schema import METRIC_UNITS

    out = []
    for row in rows:
        record = dict(zip(columns, row, strict=True))
        metric = record["metric"]
        if metric in METRIC_UNITS and record.get(metric) is not None:
            reading = f"{record[metric]:.2f} {METRIC_UNITS[metric]}"
        else:
            reading = f"error {record['error_code']}"
        out.append((reading, *row))
    return ["reading", *columns], out


def trend_chart(
    rows: list[tuple],
    metric: str,
    unit: str,
    width: int = 100,
    height: int = 20,
    max_series: int = 8,
):
    """A line chart (rich Text) of the `avg` column per greenhouse, or None under 2 buckets.

    Rows are (bucket, greenhouse, avg, ...) as the trend query returns them. Time is drawn as
    numbers with our own tick labels (plotext's date parsing mislabels short spans).
    """
    from rich.text import Text

    buckets = sorted({row[0] for row in rows if row[2] is not None})
    if len(buckets) < 2:
        return None
    return Text.from_ansi(_plot(rows, buckets, metric, unit, width, height, max_series))


_MARKERS = ("•", "x", "+", "o", "*", "#", "@", "%")
_COLOURS = ("red", "blue", "green", "magenta", "cyan", "orange", "yellow", "gray")


def _plot(rows, buckets, metric, unit, width, height, max_series) -> str:
    import plotext as plt

    series: dict[str, tuple[list[float], list[float]]] = {}
    for bucket, greenhouse, avg, *_ in rows:
        if avg is not None:
            xs, ys = series.setdefault(greenhouse, ([], []))
            xs.append(bucket.timestamp())
            ys.append(float(avg))
    plt.clear_figure()
    plt.plotsize(width, height)
    plt.theme("clear")
    for n, greenhouse in enumerate(sorted(series)[:max_series]):
        xs, ys = series[greenhouse]
        plt.plot(xs, ys, label=greenhouse, marker=_MARKERS[n], color=_COLOURS[n])
    first, last = buckets[0].timestamp(), buckets[-1].timestamp()
    ticks = [first + (last - first) * i / 4 for i in range(5)]
    style = "%m-%d" if last - first >= 3 * 86400 else "%m-%d %H:%M"
    plt.xticks(ticks, [datetime.fromtimestamp(t).strftime(style) for t in ticks])
    shown = min(len(series), max_series)
    more = f" (first {shown} of {len(series)} greenhouses)" if len(series) > shown else ""
    plt.title(f"{metric} ({unit}), average per bucket{more}")
    return plt.build()


def trend_summary(rows: list[tuple]) -> tuple[list[str], list[tuple]]:
    """One row per greenhouse from the trend rows (bucket, greenhouse, avg, min, max, n).

    `mean` is the bucket averages weighted by their reading counts (the window's mean up to
    the 0.01 rounding of each bucket), `last` the newest bucket's average.
    """
    per: dict[str, list[tuple]] = {}
    for row in rows:
        per.setdefault(row[1], []).append(row)
    out = []
    for greenhouse, series in sorted(per.items()):
        counted = [r for r in series if r[5]]
        total = sum(r[5] for r in counted)
        mean = round(sum(float(r[2]) * r[5] for r in counted) / total, 2) if total else None
        newest = max(series, key=lambda r: r[0])
        out.append(
            (
                greenhouse,
                min(r[0] for r in series),
                newest[0],
                mean,
                min((r[3] for r in counted), default=None),
                max((r[4] for r in counted), default=None),
                newest[2],
                total,
            )
        )
    columns = ["greenhouse_id", "first_bucket", "last_bucket", "mean", "min", "max", "last"]
    return [*columns, "readings"], out
