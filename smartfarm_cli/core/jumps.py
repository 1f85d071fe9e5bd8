"""The `jump` rule: too fast a change between consecutive readings of one device.

The rule, per device and metric, over the device's healthy readings in time order:

- a change faster than the limit per minute (gaps under a minute count as a minute) is a jump,
  and the level before it becomes the device's open *base*;
- a reading within one minute's limit of the open base is a return: never a jump, and it closes
  the base (so `20, 30, 30, 20` one minute apart is one jump, not two);
- critical readings (sensor errors, impossible values) are not part of the sequence.

Rules run per delivered file, and consecutive readings of a device usually land in different
files, so `judge` keeps per-device state in a `StateStore` (core.state): the device's last
`WINDOW` judged readings, the reading before them (the anchor), the open base per metric, and
which of those readings were reported as jumps and by which file. A new file is merged into that
window in time order, so late and out-of-order readings are judged against their real
neighbours; a reading already in the window (a replayed file, a re-sent reading) adds nothing;
re-processing the same file reports the same jumps again (so its spike object is rewritten the
same). Readings older than the anchor are too late for the window and are judged among
themselves only. See docs/state.md.

Everything per row is vectorised with pyarrow compute; Python loops run over the (rare) fast
changes and over devices, never over readings.
"""

from __future__ import annotations

import bisect
import hashlib

from .arrays import shift
from .lazy import pa, pc
from .schema import METRICS, READING_SCHEMA
from .state import StateConflict, StateKey, StateStore

KIND = "jump"
WINDOW = 60  # readings kept per device: how late a reading may be and still meet its neighbours
STATE_TTL_MS = 30 * 86_400_000  # a device silent for 30 days starts afresh
MAX_ATTEMPTS = 8  # conditional-write retries when another writer updated the same device


def scan(
    device: pa.Array,
    minutes: pa.Array,
    values: pa.Array,
    limit: float,
    start_base: dict[int, float | None] | None = None,
) -> tuple[list[int], dict[int, list[tuple[int, float | None]]]]:
    """Jumps in one metric over rows sorted by (device, time).

    Returns the jump positions and, per device code, the positions where its open base changed
    with the base after that row (for saving the state at any point of the sequence).
    """
    start_base = start_base or {}
    same = pc.fill_null(pc.equal(device, shift(device, 1)), False)
    gap = pc.max_element_wise(pc.subtract(minutes, shift(minutes, 1)), 1.0)
    rate = pc.divide(pc.abs(pc.subtract(values, shift(values, 1))), gap)
    fast = pc.fill_null(pc.and_(same, pc.greater(rate, limit)), False)
    candidates = pc.indices_nonzero(fast)
    if len(candidates) == 0:
        return [], {}
    now = pc.take(values, candidates).to_pylist()
    before = pc.take(values, pc.subtract(candidates, 1)).to_pylist()
    owners = pc.take(device, candidates).to_pylist()
    jumps: list[int] = []
    changes: dict[int, list[tuple[int, float | None]]] = {}
    current, base = None, None
    for index, value, previous, owner in zip(
        candidates.to_pylist(), now, before, owners, strict=True
    ):
        if owner != current:
            current, base = owner, start_base.get(owner)
        if base is not None and abs(value - base) <= limit:
            base = None  # back to the level before the jump
        else:
            jumps.append(index)
            base = previous
        changes.setdefault(owner, []).append((index, base))
    return jumps, changes


def _device_keys(table: pa.Table) -> pa.Array:
    keys = pc.binary_join_element_wise(table["greenhouse_id"], table["device_id"], "\x00")
    return keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys


def _sorted(table: pa.Table, *extra: tuple[str, str]) -> pa.Table:
    keys = [("greenhouse_id", "ascending"), ("device_id", "ascending")]
    return table.sort_by([*keys, ("timestamp", "ascending"), *extra])


def _codes(table: pa.Table) -> tuple[pa.Array, list[str]]:
    encoded = pc.dictionary_encode(_device_keys(table))
    return pc.cast(encoded.indices, pa.int64()), encoded.dictionary.to_pylist()


def _minutes(table: pa.Table) -> pa.Array:
    stamps = pc.cast(table["timestamp"].combine_chunks(), pa.int64())
    return pc.divide(pc.cast(stamps, pa.float64()), 60_000.0)


def stateless(table: pa.Table, limits: dict[str, float]) -> dict[str, pa.Table]:
    """Jumps within one table of healthy readings, nothing remembered: metric -> reading rows."""
    if table.num_rows == 0:
        return {}
    table = _sorted(table)
    device, _ = _codes(table)
    minutes = _minutes(table)
    out = {}
    for metric in METRICS:
        jumps, _ = scan(device, minutes, table[metric].combine_chunks(), limits[metric])
        if jumps:
            out[metric] = table.take(pa.array(jumps, pa.int64()))
    return out


def source_id(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def judge(
    table: pa.Table,
    limits: dict[str, float],
    store: StateStore,
    source: str,
    now_ms: int,
) -> dict[str, pa.Table]:
    """Jumps among `table`'s healthy readings, judged against each device's stored window.

    Saves every device's new window with a conditional write; a device another writer updated
    meanwhile is reloaded and judged again. Returns metric -> reading rows to report for
    `source` (the same rows each time the same source is judged).
    """
    if table.num_rows == 0:
        return {}
    keys_all = _device_keys(table)
    pending = sorted(set(keys_all.to_pylist()))
    found: dict[str, list[pa.Table]] = {}
    for attempt in range(MAX_ATTEMPTS):
        subset = (
            table if attempt == 0 else table.filter(pc.is_in(keys_all, value_set=pa.array(pending)))
        )
        state_keys = {k: _state_key(k) for k in pending}
        loaded = store.load(list(state_keys.values()))
        rows, bodies = _judge_once(subset, loaded, state_keys, limits, source_id(source))
        writes = [
            (state_keys[k], body, loaded[state_keys[k]][1], now_ms + STATE_TTL_MS)
            for k, body in bodies.items()
        ]
        conflicts = store.save(writes)
        for metric, part in rows.items():
            if conflicts:
                keep = pc.invert(
                    pc.is_in(_device_keys(part), value_set=pa.array(_device_names(conflicts)))
                )
                part = part.filter(keep)
            if part.num_rows:
                found.setdefault(metric, []).append(part)
        if not conflicts:
            return {m: pa.concat_tables(parts) for m, parts in found.items()}
        pending = sorted(_device_names(conflicts))
    raise StateConflict(f"jump state kept changing under us for {len(pending)} device(s)")


def _state_key(device_key: str) -> StateKey:
    greenhouse, device = device_key.split("\x00", 1)
    return (greenhouse, device, KIND)


def _device_names(keys) -> list[str]:
    return [f"{g}\x00{d}" for g, d, _ in keys]


def _window_table(bodies: dict[str, dict]) -> tuple[pa.Table, pa.Array]:
    """Stored windows as reading rows, plus an origin column (0 anchor, 1 stored)."""
    columns: dict[str, list] = {name: [] for name in READING_SCHEMA.names}
    origin: list[int] = []
    for device_key, body in bodies.items():
        greenhouse, device = device_key.split("\x00", 1)
        for position, (ts, *values) in enumerate(body["rows"]):
            columns["greenhouse_id"].append(greenhouse)
            columns["device_id"].append(device)
            columns["timestamp"].append(ts)
            for metric, value in zip(METRICS, values, strict=True):
                columns[metric].append(value)
            columns["error_code"].append(0)
            columns["synthetic"].append(False)  # the caller marks what it reports
            origin.append(0 if position == 0 and body["anchor"] else 1)
    arrays = [pa.array(columns[f.name], f.type) for f in READING_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=READING_SCHEMA), pa.array(origin, pa.int8())


def _judge_once(
    table: pa.Table,
    loaded: dict[StateKey, tuple[dict | None, int]],
    state_keys: dict[str, StateKey],
    limits: dict[str, float],
    source: str,
) -> tuple[dict[str, pa.Table], dict[str, dict]]:
    bodies = {k: loaded[s][0] for k, s in state_keys.items() if loaded[s][0] is not None}
    stored, stored_origin = _window_table(bodies)
    table = table.select(READING_SCHEMA.names).cast(READING_SCHEMA)
    new_origin = pa.repeat(pa.scalar(2, pa.int8()), table.num_rows)
    merged = pa.concat_tables([stored, table]).combine_chunks()
    merged = merged.append_column(
        "_origin", pa.concat_arrays([stored_origin, new_origin.cast(pa.int8())])
    )
    # Readings at or before a device's anchor are too late for its window.
    anchors = {k: b["rows"][0][0] for k, b in bodies.items() if b["anchor"]}
    keys = _device_keys(merged)
    stamps = pc.cast(merged["timestamp"], pa.int64())
    late = pa.repeat(False, merged.num_rows)
    if anchors:
        position = pc.index_in(keys, value_set=pa.array(list(anchors)))
        bound = pc.take(pa.array(list(anchors.values()), pa.int64()), position)
        late = pc.fill_null(
            pc.and_(pc.equal(merged["_origin"], 2), pc.less_equal(stamps, bound)), False
        )
    too_late = merged.filter(late).drop_columns(["_origin"])
    merged = merged.filter(pc.invert(late))
    # A reading already in the window (same device and time) is the stored one: first wins.
    merged = _sorted(merged, ("_origin", "ascending"))
    device, names = _codes(merged)
    stamps = pc.cast(merged["timestamp"], pa.int64())
    repeat = pc.fill_null(
        pc.and_(pc.equal(device, shift(device, 1)), pc.equal(stamps, shift(stamps, 1))), False
    )
    merged = merged.filter(pc.invert(repeat))
    device = device.filter(pc.invert(repeat))
    minutes = _minutes(merged)
    origin = merged["_origin"].combine_chunks()
    stamps = pc.cast(merged["timestamp"], pa.int64()).combine_chunks()
    code_of = {name: code for code, name in enumerate(names)}
    starts = {code_of[k]: b["base"] for k, b in bodies.items() if k in code_of}
    emitted = {code_of[k]: b.get("emitted", {}) for k, b in bodies.items() if k in code_of}
    new_emitted: dict[int, dict[str, dict[str, str]]] = {}
    report: dict[str, list[int]] = {}
    changes_by_metric = {}
    # Python sees only the stored rows (at most WINDOW + 1 per device) and the jump rows.
    stored_at = pc.indices_nonzero(pc.not_equal(origin, 2))
    stored_index = {
        (code, str(ts)): i
        for i, code, ts in zip(
            stored_at.to_pylist(),
            pc.take(device, stored_at).to_pylist(),
            pc.take(stamps, stored_at).to_pylist(),
            strict=True,
        )
    }
    for metric in METRICS:
        values = merged[metric].combine_chunks()
        start = {code: (base or {}).get(metric) for code, base in starts.items()}
        jumps, changes = scan(device, minutes, values, limits[metric], start)
        changes_by_metric[metric] = (changes, start)
        chosen = set()
        at = pa.array(jumps, pa.int64())
        for index, code, ts, kind in zip(
            jumps,
            pc.take(device, at).to_pylist(),
            pc.take(stamps, at).to_pylist(),
            pc.take(origin, at).to_pylist(),
            strict=True,
        ):
            ts = str(ts)
            owner = emitted.get(code, {}).get(ts, {}).get(metric)
            if kind == 2 or owner is None or owner == source:
                chosen.add(index)
                owner = source if owner is None else owner
            new_emitted.setdefault(code, {}).setdefault(ts, {})[metric] = owner
        # A jump this source reported earlier is reported again (same spike object on replay),
        # and every earlier report stays recorded: spikes are never withdrawn.
        for code, flags in emitted.items():
            for ts, by_metric in flags.items():
                if metric in by_metric:
                    new_emitted.setdefault(code, {}).setdefault(ts, {})[metric] = by_metric[metric]
        for code, flags in emitted.items():
            for ts, by_metric in flags.items():
                if by_metric.get(metric) == source and (code, ts) in stored_index:
                    chosen.add(stored_index[(code, ts)])
        report[metric] = sorted(chosen)
    merged = merged.drop_columns(["_origin"])
    rows = {m: merged.take(pa.array(ix, pa.int64())) for m, ix in report.items() if ix}
    late_rows = stateless(too_late, limits)
    for metric, part in late_rows.items():
        rows[metric] = pa.concat_tables([rows[metric], part]) if metric in rows else part
    return rows, _new_bodies(merged, device, names, changes_by_metric, new_emitted)


def _new_bodies(merged, device, names, changes_by_metric, emitted) -> dict[str, dict]:
    """Each device's last WINDOW readings (plus the anchor before them) and bases."""
    bodies = {}
    ends = {}
    offset = 0
    for run in pc.value_counts(device):  # rows are sorted by device: one run per device
        code, count = run["values"].as_py(), run["counts"].as_py()
        ends[code] = (offset, offset + count - 1)
        offset += count
    for code, (first, last) in ends.items():
        count = last - first + 1
        anchored = count > WINDOW
        begin = last - WINDOW if anchored else first
        part = merged.slice(begin, last - begin + 1)
        rows = [
            [ts, *values]
            for ts, *values in zip(
                pc.cast(part["timestamp"], pa.int64()).to_pylist(),
                *(part[m].to_pylist() for m in METRICS),
                strict=True,
            )
        ]
        base = {}
        for metric, (changes, start) in changes_by_metric.items():
            value = start.get(code)
            if anchored:
                history = changes.get(code, [])
                at = bisect.bisect_right([i for i, _ in history], begin) - 1
                value = history[at][1] if at >= 0 else value
            base[metric] = value if anchored else None
        kept = {str(r[0]) for r in rows}
        flags = {ts: f for ts, f in emitted.get(code, {}).items() if ts in kept}
        bodies[names[code]] = {"rows": rows, "anchor": anchored, "base": base, "emitted": flags}
    return bodies
