"""Anomaly rules over a whole table of readings, vectorised with pyarrow compute.

One spike row per (reading, rule, metric). A reading with a sensor error is reported only as
`sensor_error` (its values cannot be trusted); a value outside the sensor's physical range is
`impossible` and not also `out_of_band`; critical readings are left out of the `jump` baseline,
so the healthy reading after a 400 °C glitch is not flagged.
"""

from __future__ import annotations

import os
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .arrays import any_true
from .lazy import pa, pc
from .schema import METRIC_UNITS, METRICS, SYNTHETIC
from .state import StateStore

if TYPE_CHECKING:
    from .jumps import Session

DEFAULT_RULES_PATH = Path(__file__).with_name("rules.toml")
RULES_ENV = "SMARTFARM_RULES"
SEVERITY_ORDER = {"critical": 0, "warning": 1}


class RulesError(ValueError):
    """The rules file is unreadable or holds a value that makes no sense."""


@dataclass(frozen=True)
class Rules:
    severity: dict[str, str]
    impossible: dict[str, tuple[float, float]]
    band: dict[str, tuple[float, float]]
    jump_per_minute: dict[str, float]
    alerts: dict  # the [alerts] section: incident thresholds (core.incidents.policy_from)


def _merge(base: dict, override: dict) -> dict:
    merged = {k: dict(v) for k, v in base.items()}
    for section, values in override.items():
        if section not in merged or not isinstance(values, dict):
            raise RulesError(
                f"unknown rules section [{section}]; expected one of {', '.join(base)}"
            )
        unknown = sorted(set(values) - set(base[section]))
        if unknown:
            raise RulesError(
                f"unknown key {unknown[0]!r} in [{section}]; expected one of "
                f"{', '.join(base[section])}"
            )
        merged[section].update(values)
    return merged


def load_rules(path: str | os.PathLike | None = None) -> Rules:
    """Defaults from the packaged rules.toml, overridden by `path` or $SMARTFARM_RULES."""
    with open(DEFAULT_RULES_PATH, "rb") as handle:
        data = tomllib.load(handle)
    path = path or os.environ.get(RULES_ENV)
    if path:
        try:
            with open(path, "rb") as handle:
                data = _merge(data, tomllib.load(handle))
        except OSError as exc:
            raise RulesError(f"cannot read rules file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise RulesError(f"rules file {path} is not valid TOML: {exc}") from None
    rules = Rules(
        severity={name: _value(data, name, "severity", str) for name in data if name != "alerts"},
        impossible={m: _value(data, "impossible", m, _bounds) for m in METRICS},
        band={m: _value(data, "out_of_band", m, _bounds) for m in METRICS},
        jump_per_minute={m: _value(data, "jump", m, _rate) for m in METRICS},
        alerts=dict(data["alerts"]),
    )
    _check_alerts(rules.alerts)
    for name, severity in rules.severity.items():
        if severity not in SEVERITY_ORDER:
            raise RulesError(f"[{name}] severity must be critical or warning, got {severity!r}")
    return rules


def _value(data: dict, section: str, key: str, parse):
    """data[section][key] through `parse`; a missing or bad value names its key."""
    try:
        return parse(data[section][key])
    except KeyError:
        raise RulesError(f"rules file lacks [{section}] {key}") from None
    except (TypeError, ValueError) as exc:
        raise RulesError(f"rules file: [{section}] {key} = {data[section][key]!r}: {exc}") from None


def _rate(value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError("must be a number above 0, e.g. 3.0")
    return float(value)


def _check_alerts(section: dict) -> None:
    from .incidents import policy_from
    from .queries import QueryError

    try:
        policy = policy_from(section)
    except (QueryError, KeyError) as exc:
        raise RulesError(f"[alerts] has a missing or malformed duration: {exc}") from None
    if policy.silent_severity not in SEVERITY_ORDER:
        raise RulesError("[alerts] silent_severity must be critical or warning")


def _bounds(value) -> tuple[float, float]:
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError("must be [low, high], e.g. [5.0, 40.0]")
    if any(isinstance(v, bool) or not isinstance(v, int | float) for v in value):
        raise ValueError("bounds must be numbers, e.g. [5.0, 40.0]")
    low, high = (float(v) for v in value)
    if low >= high:
        raise ValueError(f"bounds {value} must be [low, high] with low < high")
    return low, high


def _outside(values, bounds: tuple[float, float]):
    outside = pc.or_(pc.less(values, bounds[0]), pc.greater(values, bounds[1]))
    return pc.fill_null(outside, False) if values.null_count else outside


def _text(*parts) -> pa.Array:
    """Concatenate string scalars and arrays element-wise; numbers are cast to text."""
    parts = [p if isinstance(p, str) else pc.cast(p, pa.string()) for p in parts]
    return pc.binary_join_element_wise(*parts, "")


class SyntheticState:
    """A state store seen through the `<kind>#synthetic` items of each device.

    Synthetic readings (simulator, demo, backfill) are judged for jumps against their own
    window, never against a real device's: a simulated `gh-1/dev-1` beside a real one of the
    same name neither makes false jumps for it nor hides real ones.
    """

    SUFFIX = "#synthetic"

    def __init__(self, store: StateStore):
        self._store = store

    def _key(self, key):
        return (key[0], key[1], key[2] + self.SUFFIX)

    def _back(self, key):
        return (key[0], key[1], key[2][: -len(self.SUFFIX)])

    def load(self, keys):
        loaded = self._store.load([self._key(k) for k in keys])
        return {k: loaded[self._key(k)] for k in keys}

    def save(self, writes):
        conflicts = self._store.save([(self._key(k), *rest) for k, *rest in writes])
        return [self._back(k) for k in conflicts]

    def scan(self, kind: str):
        return [(self._back(k), *rest) for k, *rest in self._store.scan(kind + self.SUFFIX)]


def _jumps(table: pa.Table, healthy, rules: Rules, state, source: str, now_ms: int):
    """[(metric, rows)] of jumps among the `healthy` rows of `table`: real and synthetic readings
    each judged in their own sequence (synthetic ones against the `#synthetic` items)."""
    from . import jumps  # here, not at the top: loading rules for a query needs no pyarrow

    limits = rules.jump_per_minute
    synthetic = table[SYNTHETIC]  # conformed: no nulls
    count = sum(chunk.true_count for chunk in synthetic.chunks)
    found_all = []
    for flag, sequence in ((False, table.num_rows - count), (True, count)):
        if not sequence:  # no reading of this kind: nothing to mask
            continue
        if sequence == table.num_rows:  # every reading is of this kind
            mask = healthy
        else:
            mask = pc.and_(healthy, synthetic) if flag else pc.and_not(healthy, synthetic)
        if not any_true(mask):
            continue
        if state is None:  # judged in place: the rows are not copied
            found = jumps.stateless(table, limits, pc.indices_nonzero(mask))
        elif isinstance(state, jumps.Session):  # judged in place too
            session = state.companion(SyntheticState) if flag else state
            rows = pc.indices_nonzero(mask)
            rows = None if len(rows) == table.num_rows else rows
            found = session.judge(table, limits, source, rows)
        else:
            store = SyntheticState(state) if flag else state
            found = jumps.judge(table.filter(mask), limits, store, source, now_ms)
        for metric, part in found.items():
            # Rows may come back from the stored window (a re-judged source): mark them again.
            index = part.schema.get_field_index(SYNTHETIC)
            found_all.append(
                (metric, part.set_column(index, SYNTHETIC, pa.repeat(flag, part.num_rows)))
            )
    return found_all


def detect(
    table: pa.Table,
    rules: Rules,
    source_key: str = "",
    state: StateStore | Session | None = None,
    source: str | None = None,
    now_ms: int | None = None,
) -> pa.Table:
    """All anomalies in `table` as a spike table (SPIKE_SCHEMA), most severe first.

    With a `state` store, `jump` is judged against each device's remembered readings (so a
    jump across two files is found) and the store is updated; `source` names the delivery
    (default `source_key`): judging the same source again reports the same jumps. Without one,
    jumps are judged within `table` alone. With a `jumps.Session` (many tables judged by one
    writer, e.g. an ingest's chunks), the windows stay in memory and the caller saves them once
    (`Session.flush`). Every spike carries `detected_at` = `now_ms`.
    """
    from .schema import READING_SCHEMA, SPIKE_SCHEMA
    from .validate import conform

    if table.schema != READING_SCHEMA or table[SYNTHETIC].null_count:
        table = conform(table)  # (a table already conformed is taken as it is)
    # A row without a timestamp cannot come from our writers and cannot be placed in a spike
    # partition; judging the rest beats failing the whole file.
    if table["timestamp"].null_count:
        table = table.filter(pc.is_valid(table["timestamp"]))
    if table.num_rows == 0:
        return SPIKE_SCHEMA.empty_table()
    pieces: list[tuple[pa.Table, str, str, pa.Array]] = []

    def add(mask, rule: str, metric: str, *text) -> None:
        """The rows of `mask` as spikes of `rule` (most masks hold none: nothing is copied)."""
        if any_true(mask):
            rows = table.filter(mask)
            parts = [p if isinstance(p, str) else rows[metric] for p in text]
            pieces.append((rows, rule, metric, _text(*parts)))

    faulty = pc.fill_null(pc.not_equal(table["error_code"], 0), False)
    add(faulty, "sensor_error", "error_code", "sensor reported error_code ", None)
    healthy = pc.invert(faulty)
    critical = faulty
    for metric in METRICS:
        unit = METRIC_UNITS[metric]
        low, high = rules.impossible[metric]
        impossible = pc.and_(healthy, _outside(table[metric], (low, high)))
        critical = pc.or_(critical, impossible)
        where = f" {unit} is outside the sensor range {low:g}..{high:g}"
        add(impossible, "impossible", metric, f"{metric} ", None, where)

        low, high = rules.band[metric]
        band = pc.and_not(pc.and_(healthy, _outside(table[metric], (low, high))), impossible)
        where = f" {unit} is outside the crop band {low:g}..{high:g}"
        add(band, "out_of_band", metric, f"{metric} ", None, where)

    healthy = pc.invert(critical)
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    jump_rows = _jumps(table, healthy, rules, state, source or source_key, now_ms)
    pieces += _jump_pieces(jump_rows, rules)
    return _spike_table(pieces, rules, source_key, now_ms)


def jump_spikes(
    jump_rows: list[tuple[str, pa.Table]], rules: Rules, source_key: str, now_ms: int
) -> pa.Table:
    """Spike rows (SPIKE_SCHEMA) for jumps found outside `detect` ((metric, reading rows))."""
    return _spike_table(_jump_pieces(jump_rows, rules), rules, source_key, now_ms)


def _jump_pieces(jump_rows: list[tuple[str, pa.Table]], rules: Rules) -> list:
    pieces = []
    for metric, rows in jump_rows:
        limit = rules.jump_per_minute[metric]
        detail = _text(
            f"{metric} changed faster than {limit:g} {METRIC_UNITS[metric]}/min, to ", rows[metric]
        )
        pieces.append((rows, "jump", metric, detail))
    return pieces


def _spike_table(pieces: list, rules: Rules, source_key: str, now_ms: int) -> pa.Table:
    """One spike table from (reading rows, rule, metric, detail) pieces, most severe first.

    The pieces are joined once and their rule, metric and severity spread over the rows by
    each row's piece, so the cost does not grow with the number of rules that fired.
    """
    from .schema import READING_SCHEMA, SPIKE_SCHEMA

    pieces = [piece for piece in pieces if piece[0].num_rows]
    if not pieces:
        return SPIKE_SCHEMA.empty_table()
    rows = pa.concat_tables(
        [p if p.schema == READING_SCHEMA else p.cast(READING_SCHEMA) for p, *_ in pieces]
    )
    n = rows.num_rows
    which = pa.concat_arrays(
        [pa.repeat(pa.scalar(i, pa.int32()), piece[0].num_rows) for i, piece in enumerate(pieces)]
    )

    def spread(values: list) -> pa.Array:
        return pc.take(pa.array(values, pa.string()), which)

    severity = [rules.severity[rule] for _, rule, _, _ in pieces]
    details = [pc.cast(detail, pa.string()) for *_, detail in pieces]
    extra = {
        "rule": spread([rule for _, rule, _, _ in pieces]),
        "metric": spread([metric for _, _, metric, _ in pieces]),
        "severity": spread(severity),
        "detail": pa.chunked_array(
            [c for d in details for c in (d.chunks if isinstance(d, pa.ChunkedArray) else [d])],
            pa.string(),
        ),
        "source_key": pa.repeat(pa.scalar(source_key, pa.string()), n),
        "detected_at": pa.repeat(pa.scalar(now_ms, SPIKE_SCHEMA.field("detected_at").type), n),
    }
    for name, values in extra.items():
        rows = rows.append_column(name, values)
    rank = pc.take(pa.array([SEVERITY_ORDER[s] for s in severity], pa.int8()), which)
    order = pc.sort_indices(
        pa.table({"rank": rank, "timestamp": rows["timestamp"]}),
        sort_keys=[("rank", "ascending"), ("timestamp", "ascending")],
    )
    rows = rows.take(order)
    return rows if rows.schema == SPIKE_SCHEMA else rows.cast(SPIKE_SCHEMA)
