"""Validation and normalisation of incoming readings.

Two stages, so that every value rule is written once:

1. ``coerce`` turns one raw JSON object into typed Python values (numeric strings, epoch
   seconds / milliseconds and ISO-8601 timestamps are accepted) or gives the reason it cannot.
2. ``check_table`` applies the value rules (id charset, finite numbers, sane timestamps, metrics
   present unless the sensor reported an error) to a whole Arrow table at once. Ingest and
   backfill both end here, so a generated history obeys the same rules as a device's reading.
"""

from __future__ import annotations

import functools
import json
import math
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_FLOOR, Decimal, InvalidOperation

from .lazy import pa, pc
from .schema import COLUMN_NAMES, FIELD_NAMES, METRICS, SYNTHETIC

# Readings older than this are refused as a clock error rather than stored in 1970.
EARLIEST_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
# Device clocks drift; anything further ahead than this is refused.
MAX_FUTURE_MS = 5 * 60 * 1000
# Epoch numbers at or above this are milliseconds (1e11 s is the year 5138).
EPOCH_MS_THRESHOLD = 100_000_000_000
MAX_STRING = 64
LATEST_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the end of ISO-8601 years
# What a JSON number or a plain decimal string can say: sign, ASCII digits, point, exponent,
# surrounding ASCII spaces. Python's float() also takes "1_000", fullwidth or Arabic-Indic
# digits, or "\xa0400".
PLAIN_NUMBER = re.compile(r" *[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)? *")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Rejected:
    """One refused input item: its position in the input, why, and what it was."""

    index: int
    reason: str
    raw: str


class CoercionError(ValueError):
    pass


@dataclass(frozen=True)
class Unparsable:
    """A line of input that was not JSON; it stays in place so positions keep their meaning."""

    reason: str
    raw: str


def _number(name: str, value) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise CoercionError(f"{name} must be a number, got a boolean")
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # an integer with hundreds of digits
            raise CoercionError(f"{name} must be finite, got {_show(value)}") from None
    elif isinstance(value, str):
        if len(value) > MAX_STRING or not PLAIN_NUMBER.fullmatch(value):
            raise CoercionError(f"{name} must be a number, got {_show(value)}")
        number = float(value)
    else:
        raise CoercionError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(number):
        raise CoercionError(f"{name} must be finite, got {_show(value)}")
    return number


def _error_code(value) -> int:
    number = _number("error_code", value)
    if number is None:
        raise CoercionError("error_code is required (0 when the sensor is healthy)")
    if not number.is_integer() or abs(number) > 2**31 - 1:
        raise CoercionError(f"error_code must be a whole number, got {_show(value)}")
    return int(number)


def parse_timestamp_ms(value) -> int:
    """Epoch seconds, epoch milliseconds or ISO-8601 with an offset -> epoch milliseconds.

    Exact: integer arithmetic on the parsed parts (a float's shortest decimal form for JSON
    numbers), so `.531` stays 531 ms. Digits below the millisecond are cut (floor), the same
    way for ISO and epoch forms.
    """
    if isinstance(value, bool) or value is None:
        raise CoercionError("timestamp must be ISO-8601 with an offset or epoch s/ms")
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            raise CoercionError("timestamp is too long to be a timestamp")
        if not PLAIN_NUMBER.fullmatch(value):
            return _iso_ms(value)
        number = Decimal(value.strip())
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float) and math.isfinite(value):
        number = Decimal(repr(value))  # the shortest text that reads back as this float
    else:
        raise CoercionError(f"timestamp must be ISO-8601 or epoch s/ms, got {_show(value)}")
    try:
        scaled = number if abs(number) >= EPOCH_MS_THRESHOLD else number.scaleb(3)
        out_of_range = abs(scaled) > LATEST_MS
    except InvalidOperation:
        out_of_range = True
    if out_of_range:
        raise CoercionError(f"timestamp {_show(value)} is out of range; check the device clock")
    return int(scaled.to_integral_value(rounding=ROUND_FLOOR))


def _iso_ms(value: str) -> int:
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise CoercionError(
            f"timestamp {_show(value)} is not ISO-8601 (e.g. 2026-11-28T15:00:00Z) "
            "or epoch seconds/milliseconds"
        ) from None
    if parsed.tzinfo is None:
        raise CoercionError(f"timestamp {_show(value)} has no UTC offset; add Z or +09:00")
    try:
        delta = parsed - _EPOCH
    except OverflowError:  # year 1 with a positive offset
        raise CoercionError(
            f"timestamp {_show(value)} is out of range; check the device clock"
        ) from None
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _synthetic(value) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise CoercionError(f"synthetic must be true or false, got {_show(value)}")
    return value


def coerce(item) -> tuple:
    """One raw reading -> a tuple in schema order (timestamp as epoch ms).

    Unknown extra fields are ignored, as the Glue/OpenX path on AWS ignores them. `synthetic`
    is optional (absent or null: false); whether a sender may set it is the caller's policy
    (the ingest APIs refuse `true` from devices, see core.schema).
    """
    if isinstance(item, Unparsable):
        raise CoercionError(item.reason)
    if not isinstance(item, dict):
        raise CoercionError(f"a reading must be a JSON object, got {type(item).__name__}")
    missing = [name for name in FIELD_NAMES if name not in item]
    if missing:
        raise CoercionError(f"missing field(s): {', '.join(missing)}")
    ids = []
    for name in ("greenhouse_id", "device_id"):
        value = item[name]
        if not isinstance(value, str):
            raise CoercionError(f"{name} must be a string, got {type(value).__name__}")
        if not _is_utf8(value):
            raise CoercionError(f"{name} is not valid Unicode text (lone surrogate)")
        ids.append(value)
    return (
        *ids,
        parse_timestamp_ms(item["timestamp"]),
        *(_number(metric, item[metric]) for metric in METRICS),
        _error_code(item["error_code"]),
        _synthetic(item.get(SYNTHETIC)),
    )


def with_synthetic(table: pa.Table, value: bool = False) -> pa.Table:
    """`table` with a `synthetic` column: added as `value` when absent, nulls read as false.

    Log files written before the column existed lack it; their readings are real.
    """
    if SYNTHETIC not in table.column_names:
        return table.append_column(SYNTHETIC, pa.repeat(pa.scalar(value), table.num_rows))
    column = table[SYNTHETIC]
    if column.null_count == 0:
        return table
    index = table.schema.get_field_index(SYNTHETIC)
    return table.set_column(index, SYNTHETIC, pc.fill_null(column, False))


def conform(table: pa.Table) -> pa.Table:
    """A table read from a log file -> exactly READING_SCHEMA (extra columns dropped).

    A file without the `synthetic` column (older than it) holds real readings: false.
    Raises ValueError naming the missing or mistyped column, so one odd file is reported
    instead of crashing whoever reads it.
    """
    from .schema import READING_SCHEMA  # built on first use (core.lazy)

    missing = [name for name in FIELD_NAMES if name not in table.column_names]
    if missing:
        raise ValueError(f"log file lacks column(s) {', '.join(missing)}")
    try:
        table = table.select([n for n in COLUMN_NAMES if n in table.column_names])
        return with_synthetic(table).cast(READING_SCHEMA, safe=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ValueError(f"log file columns do not match the reading schema: {exc}") from None


def table_from_rows(rows: list[tuple]) -> pa.Table:
    """Tuples in schema order -> a reading table (tuples without `synthetic`: false)."""
    from .schema import READING_SCHEMA

    if rows and len(rows[0]) == len(FIELD_NAMES):
        rows = [(*row, False) for row in rows]
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in COLUMN_NAMES]
    columns[-1] = [bool(v) for v in columns[-1]]  # SQLite gives 0 / 1
    arrays = [
        pa.array(col, type=field.type) for col, field in zip(columns, READING_SCHEMA, strict=True)
    ]
    return pa.Table.from_arrays(arrays, schema=READING_SCHEMA)


def ids_ok(ids) -> pa.Array:
    """ID_PATTERN (1-64 of A-Z a-z 0-9 _ -) per string, without a regex.

    match_substring_regex compiles its pattern on every call (~80 us), which dominated the
    validation of a 10-reading send; this is the same set in four plain kernels, run once per
    distinct id (a batch repeats its few devices: 1.05 -> 0.3 ms for a day of 20 greenhouses)
    and spread back to the rows.
    """
    ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    encoded = pc.dictionary_encode(ids)
    distinct = encoded.dictionary
    letters = pc.replace_substring(pc.replace_substring(distinct, "-", "a"), "_", "a")
    ok = pc.and_(pc.ascii_is_alnum(letters), pc.less_equal(pc.binary_length(distinct), 64))
    return pc.take(ok, encoded.indices)  # a null id has a null index: null, as before


def _reasons(table: pa.Table, now_ms: int) -> pa.Array:
    """Per row: the first broken value rule, or null. Vectorised over the whole table."""
    checks: list[tuple[pa.Array, str]] = []
    for name in ("greenhouse_id", "device_id"):
        ok = ids_ok(table[name])
        checks.append(
            (pc.invert(pc.fill_null(ok, False)), f"{name} must be 1-64 of A-Z a-z 0-9 _ -")
        )
    ts = pc.cast(table["timestamp"], pa.int64())
    checks.append(
        (pc.less(ts, EARLIEST_MS), "timestamp is before 2000-01-01; check the device clock")
    )
    checks.append(
        (
            pc.greater(ts, now_ms + MAX_FUTURE_MS),
            "timestamp is in the future; check the device clock",
        )
    )
    healthy = pc.equal(table["error_code"], 0)
    for metric in METRICS:
        checks.append(
            (
                pc.and_(healthy, pc.is_null(table[metric])),
                f"{metric} is required when error_code is 0",
            )
        )
    reason = pa.nulls(len(table), pa.string())
    any_failed = functools.reduce(pc.or_kleene, [failed for failed, _ in checks])
    if not pc.any(any_failed).as_py():  # nulls count as passed, as in the fill_null below
        return reason  # the usual case: no if_else per rule
    for failed, text in reversed(checks):  # first rule wins: apply in reverse
        reason = pc.if_else(pc.fill_null(failed, False), text, reason)
    return reason


def check_table(table: pa.Table, now_ms: int | None = None) -> tuple[pa.Table, pa.Table, pa.Array]:
    """Split a typed reading table into (good rows, bad rows, reasons of the bad rows)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    reason = _reasons(table, now_ms)
    if reason.null_count == len(reason):  # the usual case: every row passed, none is copied
        return table, table.slice(0, 0), reason.slice(0, 0)
    bad = pc.is_valid(reason)
    return table.filter(pc.invert(bad)), table.filter(bad), reason.filter(bad)


@dataclass
class Batch:
    """The outcome of validating a batch: the accepted table and every rejection."""

    accepted: pa.Table
    rejected: list[Rejected]


def _raw(item) -> str:
    if isinstance(item, Unparsable):
        return item.raw
    try:
        text = json.dumps(item, ensure_ascii=False, default=str)
        if not _is_utf8(text):  # lone surrogates: keep them as \ud800 escapes
            text = json.dumps(item, default=str)
    except (TypeError, ValueError, RecursionError):
        text = repr(item)
    return text if len(text) <= 2000 else text[:2000] + "…"


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def validate(items: Iterable, now_ms: int | None = None) -> Batch:
    """Validate raw readings item by item; one bad item never drops its neighbours."""
    rows: list[tuple] = []
    positions: list[int] = []
    items = list(items)
    rejected: list[Rejected] = []
    for index, item in enumerate(items):
        try:
            rows.append(coerce(item))
            positions.append(index)
        except CoercionError as exc:
            rejected.append(Rejected(index, str(exc), _raw(item)))
    table = table_from_rows(rows)
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    reason = _reasons(table, now_ms)
    for row, text in enumerate(reason.to_pylist()):
        if text is not None:
            index = positions[row]
            rejected.append(Rejected(index, text, _raw(items[index])))
    rejected.sort(key=lambda r: r.index)
    return Batch(table.filter(pc.is_null(reason)), rejected)


class ParsedInput(list):
    """Items parsed from one input, and where each came from (for messages to the user).

    Line-by-line input (NDJSON) skips blank lines, so item i sits on line `lines[i]`; for one
    JSON document (an array) `lines` is None and the position is the 1-based item number.
    """

    def __init__(self, items=(), lines: list[int] | None = None):
        super().__init__(items)
        self.lines = lines

    def position(self, index: int) -> int:
        """The 1-based line or item number of the item at `index`."""
        return self.lines[index] if self.lines is not None else index + 1


def resent_reason(stored: tuple, resent: tuple) -> str:
    """Why a re-sent reading was not stored: the values (metrics, error_code) that differ."""
    names = (*METRICS, "error_code")
    changes = [
        f"{name} {_show(old)} -> {_show(new)}"
        for name, old, new in zip(names, stored, resent, strict=True)
        if old != new
    ]
    return (
        "re-sent reading differs from the stored copy, which was kept (same greenhouse, "
        f"device and timestamp): {', '.join(changes)}"
    )


def parse_json_lines(data: str | bytes) -> ParsedInput:
    """NDJSON, one JSON array or one object -> items.

    Whole-text JSON is tried first; otherwise every line is parsed on its own, and a line that
    is not UTF-8 or not JSON becomes an Unparsable item in its place (its neighbours are kept).
    """
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            return _by_line(data)
    stripped = data.strip()
    if not stripped:
        return ParsedInput()
    if stripped[0] in "[{":
        try:
            parsed = json.loads(stripped)
            return ParsedInput(parsed if isinstance(parsed, list) else [parsed])
        except (ValueError, RecursionError):
            pass  # not one JSON document: read it line by line
    return _by_line(data)


def _by_line(data: str | bytes) -> ParsedInput:
    lines = _lines(data)
    return ParsedInput([_parse_line(n, line) for n, line in lines], [n for n, _ in lines])


def _lines(data):
    return [(n, line) for n, line in enumerate(data.splitlines(), start=1) if line.strip()]


def _parse_line(number: int, line: str | bytes):
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raw = line[:2000].decode("utf-8", "backslashreplace")
            return Unparsable(f"line {number} is not UTF-8 text (byte {exc.start})", raw)
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        return Unparsable(f"line {number} is not valid JSON: {exc.msg}", line[:2000])
    except (ValueError, RecursionError) as exc:  # huge integers, absurd nesting
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:100]
        return Unparsable(f"line {number} is not usable JSON: {reason}", line[:2000])


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def partition_values(ts_ms: int) -> dict[str, str]:
    """Event-time partition values (zero-padded strings) for one epoch-ms timestamp."""
    t = time.gmtime(ts_ms // 1000)
    return {
        "year": f"{t.tm_year:04d}",
        "month": f"{t.tm_mon:02d}",
        "day": f"{t.tm_mday:02d}",
        "hour": f"{t.tm_hour:02d}",
    }


def partition_prefix(ts_ms: int, root: str = "logs", keys=("year", "month", "day", "hour")) -> str:
    """`logs/year=YYYY/month=MM/day=DD/hour=HH/` for one timestamp (event time, UTC)."""
    values = partition_values(ts_ms)
    return root + "/" + "".join(f"{k}={values[k]}/" for k in keys)
