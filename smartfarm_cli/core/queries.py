"""The Athena (Trino) SQL farmctl runs, written once for both targets.

Each builder returns ``(sql, params)`` with ``?`` placeholders: user input (greenhouse ids,
severities) always travels as a parameter, never inside the SQL text. Time bounds are computed
here from a datetime, so they are literals we produced ourselves. Every query filters on the
partition columns as well as the timestamp, so Athena and DuckDB skip the files outside the window.

Each builder also speaks DuckDB (`dialect="duckdb"`): the few spellings that differ (timestamp
literals, concatenation, the epoch functions) are written here, and a test proves the DuckDB
text is what sqlglot makes of the Athena text. The local target runs that text as it is: these
queries are made from checked parameters (metric and zone names from fixed sets, numbers,
durations, times we format), never from user text, so they skip sqlglot's parse of user SQL
(sqlguard) but not DuckDB's own wall (see LocalTarget.query).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .schema import METRICS

READINGS_TABLE = "readings"
SPIKES_TABLE = "spikes"

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
SEVERITIES = ("critical", "warning")
MAX_DAYS = 36_600  # a century: more than any lake holds, small enough for date arithmetic
ZONE_ENV = "SMARTFARM_TZ"  # the farm's zone, when it is not the machine's
_ZONE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+)*")
MONDAY_S = 4 * 86_400  # 1970-01-05, the first Monday after the epoch (a Thursday)


DIALECTS = ("athena", "duckdb")


class QueryError(ValueError):
    """A user-supplied query argument that cannot be turned into SQL."""


# Synthetic readings (simulator, demo, backfill; the `synthetic` column, NULL in files older
# than it, which hold real readings): `trend` leaves them out by default (an average of real
# and fake readings means nothing), `latest` and `spikes` list them with a `synthetic` column.
SYNTHETIC_MODES = ("exclude", "include", "only")
IS_SYNTHETIC = "coalesce(synthetic, false)"


def _synthetic_filter(mode: str) -> str | None:
    if mode not in SYNTHETIC_MODES:
        raise QueryError(
            f"unknown --synthetic {mode!r}; choose one of {', '.join(SYNTHETIC_MODES)}"
        )
    return {"exclude": f"NOT {IS_SYNTHETIC}", "only": IS_SYNTHETIC}.get(mode)


def parse_duration(text: str) -> timedelta:
    """'15m', '1h', '7d', '2w' -> timedelta."""
    match = _DURATION.match(str(text))
    if not match:
        raise QueryError(f"{text!r} is not a duration; use a number and a unit, e.g. 15m, 1h, 7d")
    if int(match.group(1)) == 0:
        raise QueryError(f"a duration must be more than 0 (got {text!r}), e.g. 15m, 1h, 7d")
    return timedelta(seconds=int(match.group(1)) * _SECONDS[match.group(2)])


def machine_zone() -> str:
    """The IANA name of this machine's zone ($TZ, else /etc/localtime's link), else UTC."""
    name = os.environ.get("TZ", "").lstrip(":")
    if not name:
        try:
            link = os.readlink("/etc/localtime")
        except OSError:
            link = ""
        name = link.split("zoneinfo/", 1)[1] if "zoneinfo/" in link else ""
        if not name and Path("/etc/timezone").is_file():
            name = Path("/etc/timezone").read_text().strip()
    return name if name and _zone_ok(name) else "UTC"


def _zone_ok(name: str) -> bool:
    if not _ZONE_NAME.fullmatch(name) or len(name) > 64:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def resolve_zone(name: str | None = None) -> str:
    """--tz, else $SMARTFARM_TZ (the farm's zone), else the machine's zone.

    The name goes into SQL text, so only IANA names that exist are accepted.
    """
    name = (name or os.environ.get(ZONE_ENV) or "").strip() or machine_zone()
    if not _zone_ok(name):
        raise QueryError(f"unknown time zone {name!r}; use an IANA name such as Asia/Seoul or UTC")
    return name


@dataclass(frozen=True)
class Query:
    sql: str
    params: list
    # The smallest partition key the query can touch ("YYYYMMDDHH" or "YYYYMMDD"). Athena's
    # partition projection derives it from the SQL; the local target uses it to list only the
    # folders at or after it, instead of every file of the lake.
    partitions_from: str | None = None
    # trend only: the window and bucketing, for finish_trend.
    since: datetime | None = None
    until: datetime | None = None
    every: timedelta | None = None
    zone: str = "UTC"
    dialect: str = "athena"  # of `sql`: athena, or duckdb (what the local target runs as is)


def _ts(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _time(moment: datetime, dialect: str) -> str:
    """A timestamp literal (millisecond precision on both engines)."""
    if dialect == "duckdb":
        return f"CAST('{_ts(moment)}' AS TIMESTAMP(3))"
    return f"TIMESTAMP '{_ts(moment)}'"


def _concat(names: tuple[str, ...], dialect: str) -> str:
    return " || ".join(names) if dialect == "duckdb" else f"concat({', '.join(names)})"


def _check_dialect(dialect: str) -> None:
    if dialect not in DIALECTS:
        raise ValueError(f"unknown SQL dialect {dialect!r}")


def _partition_floor(since: datetime, with_hour: bool = True) -> str:
    return since.astimezone(UTC).strftime("%Y%m%d%H" if with_hour else "%Y%m%d")


def _window(since: datetime, with_hour: bool = True, dialect: str = "athena") -> str:
    """Partition predicate plus timestamp predicate for [since, now].

    The partition predicate compares the zero-padded partition strings as one key, which both
    Athena's partition projection and DuckDB's hive pruning evaluate before opening files.
    """
    key = _concat(
        ("year", "month", "day", "hour") if with_hour else ("year", "month", "day"), dialect
    )
    bound = _partition_floor(since, with_hour)
    return f"{key} >= '{bound}' AND \"timestamp\" >= {_time(since, dialect)}"


def _until(now: datetime, dialect: str = "athena") -> str:
    return f' AND "timestamp" <= {_time(now, dialect)}'


def _local(zone: str, dialect: str = "athena") -> str:
    """The reading's wall-clock time in `zone`, as a timestamp without zone.

    Means the same on Trino (a timestamp is cast to `with time zone` in the session zone, UTC
    on Athena) and on DuckDB (the local target's session zone is UTC).
    """
    if zone == "UTC":
        return '"timestamp"'
    with_zone = "TIMESTAMPTZ" if dialect == "duckdb" else "timestamp with time zone"
    return f"CAST(CAST(\"timestamp\" AS {with_zone}) AT TIME ZONE '{zone}' AS timestamp)"


def _bucket(every: timedelta, zone: str = "UTC", dialect: str = "athena") -> str:
    """Bucket start as local wall-clock time: 1m/1h/1d truncate, other sizes floor from a
    local-midnight epoch; whole weeks start on Monday."""
    seconds = int(every.total_seconds())
    local = _local(zone, dialect)
    units = {60: "minute", 3600: "hour", 86400: "day", 604800: "week"}
    if seconds in units:
        return f"date_trunc('{units[seconds]}', {local})"
    if seconds < 60 or seconds % 60:
        raise QueryError("--every must be whole minutes, e.g. 1m, 15m, 1h, 6h, 1d")
    shift = MONDAY_S if seconds % 604800 == 0 else 0
    to_epoch, from_epoch = (
        ("epoch", "to_timestamp") if dialect == "duckdb" else ("to_unixtime", "from_unixtime")
    )
    start = f"floor(({to_epoch}({local}) - {shift}) / {seconds}) * {seconds} + {shift}"
    return f"CAST({from_epoch}({start}) AS timestamp)"


def trend(
    metric: str,
    days: float = 7,
    every: str = "1h",
    greenhouse: str | None = None,
    now: datetime | None = None,
    valid_range: tuple[float, float] | None = None,
    zone: str | None = None,
    copies_by: str | None = None,
    dialect: str = "athena",
    synthetic: str = "exclude",
) -> Query:
    """Average, min, max and count of one metric per time bucket and greenhouse.

    The window is [now - days, now]: a reading stamped in the future (clocks drift, up to 5 min
    is accepted) waits until its time comes. Buckets are aligned on `zone`'s wall clock (a
    farm's day starts at its own midnight); finish_trend turns them into zone-aware times and
    marks buckets the window only partly covers.
    Readings with a sensor error, and values outside `valid_range` (the rules' physically
    possible range), are left out: a 400 °C glitch belongs in `spikes`, not in an average.
    With `copies_by`, a reading stored more than once counts once (see _one_copy). Synthetic
    readings are left out unless `synthetic` is `include` (or `only`).
    """
    if metric not in METRICS:
        raise QueryError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    if not (0 < days <= MAX_DAYS):  # also refuses nan
        raise QueryError(f"--days must be a number of days above 0 and at most {MAX_DAYS:,}")
    _check_dialect(dialect)
    zone = resolve_zone(zone)
    now = now or datetime.now(UTC)
    size = parse_duration(every)
    bucket = _bucket(size, zone, dialect)
    since = now - timedelta(days=days)
    where = [_window(since, dialect=dialect) + _until(now, dialect), "error_code = 0"]
    if (clause := _synthetic_filter(synthetic)) is not None:
        where.append(clause)
    if valid_range:
        where.append(f"{metric} BETWEEN {float(valid_range[0])!r} AND {float(valid_range[1])!r}")
    params: list = []
    if greenhouse:
        where.append("greenhouse_id = ?")
        params.append(greenhouse)
    source, where = _one_copy(where, copies_by)
    sql = (
        f"SELECT {bucket} AS bucket, greenhouse_id, "
        f"round(avg({metric}), 2) AS avg, min({metric}) AS min, max({metric}) AS max, "
        f"count({metric}) AS readings\n"
        f"FROM {source}\nWHERE {' AND '.join(where)}\n"
        f"GROUP BY 1, 2\nORDER BY 1, 2"
    )
    return Query(sql, params, _partition_floor(since), since, now, size, zone, dialect)


# On Athena, copies of one reading delivered in different Firehose objects are told apart by
# the object they are in; Firehose names objects by delivery time, so the first is the oldest.
ATHENA_COPY_ORDER = '"$path"'


def _one_copy(where: list[str], copies_by: str | None) -> tuple[str, list[str]]:
    """(FROM source, outer WHERE): one copy per (greenhouse, device, timestamp) when asked.

    The first copy (by `copies_by`, then by value so the choice is total) is kept, before any
    value filter: a corrected second copy never replaces the first, as on the local stream.
    Only the window predicates (partition + time) go inside, so pruning still applies.
    """
    if not copies_by:
        return READINGS_TABLE, where
    window, rest = where[0], where[1:]
    order = ", ".join([copies_by, *(f"{c} ASC NULLS LAST" for c in (*METRICS, "error_code"))])
    source = (
        f'(SELECT *, row_number() OVER (PARTITION BY greenhouse_id, device_id, "timestamp" '
        f"ORDER BY {order}) AS copy\n  FROM {READINGS_TABLE}\n  WHERE {window})"
    )
    return source, ["copy = 1", *rest]


def finish_trend(columns: list[str], rows: list[tuple], query: Query) -> tuple[list, list]:
    """Trend rows as both targets give them -> buckets as zone-aware datetimes, plus `partial`.

    A bucket is partial when the window [since, now] does not cover all of it: the first one
    (the window starts inside it) and the one still running. Buckets are wall-clock spans, so
    a `1d` bucket on a DST change day is 23 or 25 hours long.
    """
    zone = ZoneInfo(query.zone)
    buckets: dict = {}  # each bucket once, not once per greenhouse

    def finish(bucket) -> tuple[datetime, bool]:
        if isinstance(bucket, str):  # an engine that answers in text
            bucket = datetime.fromisoformat(bucket)
        wall = bucket.astimezone(UTC).replace(tzinfo=None) if bucket.tzinfo else bucket
        start = wall.replace(tzinfo=zone)
        end = (wall + query.every).replace(tzinfo=zone)
        return start, start < query.since or end > query.until

    out = []
    for bucket, *rest in rows:
        if bucket not in buckets:
            buckets[bucket] = finish(bucket)
        start, partial = buckets[bucket]
        out.append((start, *rest, partial))
    return [*columns, "partial"], out


def latest_per_device(
    since: timedelta = timedelta(days=1),
    now: datetime | None = None,
    copies_by: str | None = None,
    dialect: str = "athena",
    synthetic: str = "include",
) -> Query:
    """The newest whole reading of every device seen in the window, marked `synthetic`.

    row_number() picks one row, so every value comes from the same reading (max_by per column
    skips NULLs in DuckDB and would mix a sensor fault's NULLs with older values). Copies of
    the newest reading (same timestamp) are ordered by `copies_by` first (the first copy wins,
    see _one_copy), then by their values, the same on both engines.
    """
    _check_dialect(dialect)
    now = now or datetime.now(UTC)
    columns = ", ".join((*METRICS, "error_code"))
    window = " AND ".join(
        filter(None, [_window(now - since, dialect=dialect), _synthetic_filter(synthetic)])
    )
    order = ", ".join(
        [
            *([copies_by] if copies_by else []),
            *(f"{c} ASC NULLS LAST" for c in (*METRICS, "error_code")),
        ]
    )
    sql = (
        f'SELECT greenhouse_id, device_id, "timestamp", {columns}, synthetic\n'
        f'FROM (SELECT greenhouse_id, device_id, "timestamp", {columns}, '
        f"{IS_SYNTHETIC} AS synthetic, "
        'row_number() OVER (PARTITION BY greenhouse_id, device_id ORDER BY "timestamp" DESC, '
        f"{order}) AS newest\n"
        f"  FROM {READINGS_TABLE}\n  WHERE {window})\n"
        f"WHERE newest = 1\nORDER BY 1, 2"
    )
    return Query(sql, [], _partition_floor(now - since), dialect=dialect)


def spikes(
    since: str = "24h",
    severity: str | None = None,
    greenhouse: str | None = None,
    limit: int = 200,
    now: datetime | None = None,
    detected: bool = False,
    dialect: str = "athena",
    synthetic: str = "include",
) -> Query:
    """Stored spikes in the window, most severe and newest first.

    The window is on the reading's own time: a 400 °C reading stamped two days ago and
    delivered now is not in `24h`. With `detected`, it is on when the rules found the spike
    (`detected_at`, "what fired in the last hour?"); that cannot prune partitions (they are
    by reading time), so it reads every spike partition. A spike found twice (a reading
    delivered again) is listed once: the first detection.
    """
    _check_dialect(dialect)
    now = now or datetime.now(UTC)
    start = now - parse_duration(since)
    if detected:
        window = f"detected_at >= {_time(start, dialect)}"
    else:
        window = _window(start, with_hour=False, dialect=dialect)
    where: list[str] = []
    params: list = []
    if (clause := _synthetic_filter(synthetic)) is not None:
        where.append(clause.replace(IS_SYNTHETIC, "synthetic"))  # already coalesced below
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
    columns = (
        '"timestamp", greenhouse_id, device_id, rule, metric, severity, detail, '
        "temperature, humidity, co2, error_code, source_key, detected_at"
    )
    sql = (
        f"SELECT {columns}, synthetic\n"
        f"FROM (SELECT {columns}, {IS_SYNTHETIC} AS synthetic, "
        "row_number() OVER (PARTITION BY greenhouse_id, device_id, "
        '"timestamp", rule, metric ORDER BY detected_at ASC NULLS LAST, source_key) AS copy\n'
        f"  FROM {SPIKES_TABLE}\n  WHERE {window})\n"
        f"WHERE {' AND '.join(['copy = 1', *where])}\n"
        # The trailing keys make the order total: one reading can break several rules.
        f"ORDER BY CASE severity WHEN 'critical' THEN 0 ELSE 1 END, \"timestamp\" DESC, "
        "greenhouse_id, device_id, rule, metric\n"
        f"LIMIT {int(limit)}"
    )
    floor = None if detected else _partition_floor(start, with_hour=False)
    return Query(sql, params, floor, dialect=dialect)


def spike_count(since: datetime, dialect: str = "athena") -> Query:
    _check_dialect(dialect)
    window = _window(since, with_hour=False, dialect=dialect)
    sql = (
        # coalesce: DuckDB's count_if gives NULL over no rows (Athena's gives 0)
        f"SELECT count(*) AS spikes, coalesce(count_if({IS_SYNTHETIC}), 0) AS synthetic "
        f"FROM {SPIKES_TABLE} WHERE {window}"
    )
    return Query(sql, [], _partition_floor(since, with_hour=False), dialect=dialect)
