"""The Athena (Trino) SQL farmctl runs, written once for both targets.

Each builder returns ``(sql, params)`` with ``?`` placeholders: user input (greenhouse ids,
severities) always travels as a parameter, never inside the SQL text. Time bounds are computed
here from a datetime, so they are literals we produced ourselves. Every query filters on the
partition columns as well as the timestamp, so Athena and DuckDB skip the files outside the window.

The local target transpiles these strings to DuckDB with sqlglot; the tested subset of functions
is date_trunc, from_unixtime, to_unixtime, floor, avg/min/max/count, max_by and concat.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from .schema import METRICS

READINGS_TABLE = "readings"
SPIKES_TABLE = "spikes"

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
SEVERITIES = ("critical", "warning")
MAX_DAYS = 36_600  # a century: more than any lake holds, small enough for date arithmetic


class QueryError(ValueError):
    """A user-supplied query argument that cannot be turned into SQL."""


def parse_duration(text: str) -> timedelta:
    """'15m', '1h', '7d', '2w' -> timedelta."""
    match = _DURATION.match(str(text))
    if not match:
        raise QueryError(f"{text!r} is not a duration; use a number and a unit, e.g. 15m, 1h, 7d")
    if int(match.group(1)) == 0:
        raise QueryError(f"a duration must be more than 0 (got {text!r}), e.g. 15m, 1h, 7d")
    return timedelta(seconds=int(match.group(1)) * _SECONDS[match.group(2)])


@dataclass(frozen=True)
class Query:
    sql: str
    params: list
    # The smallest partition key the query can touch ("YYYYMMDDHH" or "YYYYMMDD"). Athena's
    # partition projection derives it from the SQL; the local target uses it to list only the
    # folders at or after it, instead of every file of the lake.
    partitions_from: str | None = None


def _ts(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _partition_floor(since: datetime, with_hour: bool = True) -> str:
    return since.astimezone(UTC).strftime("%Y%m%d%H" if with_hour else "%Y%m%d")


def _window(since: datetime, with_hour: bool = True) -> str:
    """Partition predicate plus timestamp predicate for [since, now].

    The partition predicate compares the zero-padded partition strings as one key, which both
    Athena's partition projection and DuckDB's hive pruning evaluate before opening files.
    """
    key = "concat(year, month, day, hour)" if with_hour else "concat(year, month, day)"
    bound = _partition_floor(since, with_hour)
    return f"{key} >= '{bound}' AND \"timestamp\" >= TIMESTAMP '{_ts(since)}'"


def _until(now: datetime) -> str:
    return f" AND \"timestamp\" <= TIMESTAMP '{_ts(now)}'"


def _bucket(every: timedelta) -> str:
    seconds = int(every.total_seconds())
    units = {60: "minute", 3600: "hour", 86400: "day"}
    if seconds in units:
        return f"date_trunc('{units[seconds]}', \"timestamp\")"
    if seconds < 60 or seconds % 60:
        raise QueryError("--every must be whole minutes, e.g. 1m, 15m, 1h, 6h, 1d")
    return f'from_unixtime(floor(to_unixtime("timestamp") / {seconds}) * {seconds})'


def trend(
    metric: str,
    days: float = 7,
    every: str = "1h",
    greenhouse: str | None = None,
    now: datetime | None = None,
    valid_range: tuple[float, float] | None = None,
) -> Query:
    """Average, min, max and count of one metric per time bucket and greenhouse.

    Readings with a sensor error, and values outside `valid_range` (the rules' physically
    possible range), are left out: a 400 °C glitch belongs in `spikes`, not in an average.
    """
    if metric not in METRICS:
        raise QueryError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    if not (0 < days <= MAX_DAYS):  # also refuses nan
        raise QueryError(f"--days must be a number of days above 0 and at most {MAX_DAYS:,}")
    now = now or datetime.now(UTC)
    bucket = _bucket(parse_duration(every))
    since = now - timedelta(days=days)
    where = [_window(since), "error_code = 0"]
    if valid_range:
        where.append(f"{metric} BETWEEN {float(valid_range[0])!r} AND {float(valid_range[1])!r}")
    params: list = []
    if greenhouse:
        where.append("greenhouse_id = ?")
        params.append(greenhouse)
    sql = (
        f"SELECT {bucket} AS bucket, greenhouse_id, "
        f"round(avg({metric}), 2) AS avg, min({metric}) AS min, max({metric}) AS max, "
        f"count({metric}) AS readings\n"
        f"FROM {READINGS_TABLE}\nWHERE {' AND '.join(where)}\n"
        f"GROUP BY 1, 2\nORDER BY 1, 2"
    )
    return Query(sql, params, _partition_floor(since))


def latest_per_device(since: timedelta = timedelta(days=1), now: datetime | None = None) -> Query:
    """The newest whole reading of every device seen in the window.

    row_number() picks one row, so every value comes from the same reading (max_by per column
    skips NULLs in DuckDB and would mix a sensor fault's NULLs with older values). Ties on the
    timestamp (a re-sent reading) are broken by the values themselves, the same on both engines.
    """
    now = now or datetime.now(UTC)
    columns = ", ".join((*METRICS, "error_code"))
    sql = (
        f'SELECT greenhouse_id, device_id, "timestamp", {columns}\n'
        f'FROM (SELECT greenhouse_id, device_id, "timestamp", {columns}, '
        'row_number() OVER (PARTITION BY greenhouse_id, device_id ORDER BY "timestamp" DESC, '
        f"{', '.join(f'{c} ASC NULLS LAST' for c in (*METRICS, 'error_code'))}) AS newest\n"
        f"  FROM {READINGS_TABLE}\n  WHERE {_window(now - since)})\n"
        f"WHERE newest = 1\nORDER BY 1, 2"
    )
    return Query(sql, [], _partition_floor(now - since))


def spikes(
    since: str = "24h",
    severity: str | None = None,
    greenhouse: str | None = None,
    limit: int = 200,
    now: datetime | None = None,
) -> Query:
    """Stored spikes in the window, most severe and newest first."""
    start = (now or datetime.now(UTC)) - parse_duration(since)
    where = [_window(start, with_hour=False)]
    params: list = []
    if severity:
        if severity not in SEVERITIES:
            raise QueryError(
                f"unknown severity {severity!r}; choose one of {', '.join(SEVERITIES)}"
            )
        where.append("severity = ?")
        params.append(severity)
    if greenhouse:
        where.append("greenhouse_id = ?")
        params.append(greenhouse)
    if limit < 1:
        raise QueryError("--limit must be at least 1")
    sql = (
        'SELECT "timestamp", greenhouse_id, device_id, rule, metric, severity, detail, '
        "temperature, humidity, co2, error_code, source_key\n"
        f"FROM {SPIKES_TABLE}\nWHERE {' AND '.join(where)}\n"
        # The trailing keys make the order total: one reading can break several rules.
        f"ORDER BY CASE severity WHEN 'critical' THEN 0 ELSE 1 END, \"timestamp\" DESC, "
        "greenhouse_id, device_id, rule, metric\n"
        f"LIMIT {int(limit)}"
    )
    return Query(sql, params, _partition_floor(start, with_hour=False))


def spike_count(since: datetime) -> Query:
    sql = f"SELECT count(*) AS spikes FROM {SPIKES_TABLE} WHERE {_window(since, with_hour=False)}"
    return Query(sql, [], _partition_floor(since, with_hour=False))
