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
import functools
import hashlib
from dataclasses import dataclass, field

from .arrays import arange, shift
from .lazy import pa, pc
from .schema import METRICS, READING_SCHEMA, SYNTHETIC
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


def _order(
    table: pa.Table, rows: pa.Array | None = None, *extra: str
) -> tuple[pa.Array, pa.Array, list[str]]:
    """Rows by (greenhouse, device, timestamp, *extra), stable -> (indices into `table`, each
    ordered row's device code (dense, ascending with the device), device keys by code).

    `rows`: only these rows of `table`. Sorts integers, not strings: each id column is ranked
    once through its dictionary, and nothing but the sort keys is copied.
    """

    def ranked(name: str) -> tuple[pa.Array, list[str]]:
        column = table[name]
        column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        encoded = pc.dictionary_encode(column)
        by_name = pc.sort_indices(encoded.dictionary)
        rank = pc.take(_inverse(by_name), encoded.indices)
        return (rank if rows is None else pc.take(rank, rows)), pc.take(
            encoded.dictionary, by_name
        ).to_pylist()

    greenhouse, greenhouses = ranked("greenhouse_id")
    device, devices = ranked("device_id")
    pair = pc.add(pc.multiply(greenhouse, len(devices)), device)
    picked = [table[n] if rows is None else pc.take(table[n], rows) for n in ("timestamp", *extra)]
    columns = [pair, pc.cast(picked[0], pa.int64()), *picked[1:]]
    order = pc.sort_indices(
        pa.Table.from_arrays(columns, names=[f"k{i}" for i in range(len(columns))]),
        sort_keys=[(f"k{i}", "ascending") for i in range(len(columns))],
    )
    pairs = pc.take(pair, order)
    distinct = pc.drop_null(pc.unique(pairs))  # ascending: the pairs are sorted
    # A row without an id gets no code: it is nobody's neighbour (never part of a jump).
    codes = pc.cast(pc.index_in(pairs, value_set=distinct), pa.int64())
    n = len(devices)
    names = [f"{greenhouses[p // n]}\x00{devices[p % n]}" for p in distinct.to_pylist()]
    return (order if rows is None else pc.take(rows, order)), codes, names


def _inverse(permutation: pa.Array) -> pa.Array:
    """The inverse permutation: out[permutation[i]] = i."""
    inverse = [0] * len(permutation)
    for position, index in enumerate(permutation.to_pylist()):
        inverse[index] = position
    return pa.array(inverse, pa.int64())


def _minutes(stamps) -> pa.Array:
    stamps = pc.cast(stamps, pa.int64())
    stamps = stamps.combine_chunks() if isinstance(stamps, pa.ChunkedArray) else stamps
    return pc.divide(pc.cast(stamps, pa.float64()), 60_000.0)


def stateless(
    table: pa.Table, limits: dict[str, float], rows: pa.Array | None = None
) -> dict[str, pa.Table]:
    """Jumps within one table of healthy readings (or within its `rows`, indices), nothing
    remembered: metric -> reading rows. Copies only the columns it sorts and scans."""
    if table.num_rows == 0 or (rows is not None and len(rows) == 0):
        return {}
    order, device, _ = _order(table, rows)
    minutes = _minutes(pc.take(table["timestamp"], order))
    out = {}
    for metric in METRICS:
        values = pc.take(table[metric], order).combine_chunks()
        jumps, _ = scan(device, minutes, values, limits[metric])
        if jumps:
            out[metric] = table.take(pc.take(order, pa.array(jumps, pa.int64())))
    return out


def source_id(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:16]


@functools.cache
def _window_schema() -> pa.Schema:
    """READING_SCHEMA plus `_origin` (built on first use: module code touches no pyarrow)."""
    return READING_SCHEMA.append(pa.field("_origin", pa.int8()))


@dataclass
class Windows:
    """Stored windows of some devices, in memory: what the `jump` items hold, as columns.

    `rows`: the devices' window readings (READING_SCHEMA, error_code 0) plus `_origin` (0 the
    anchor, 1 a stored reading), each device's rows together and in time order, anchor first.
    `base` and `emitted`: per device key, as in the item body.
    """

    rows: pa.Table = field(default_factory=lambda: _window_schema().empty_table())
    base: dict[str, dict[str, float | None]] = field(default_factory=dict)
    emitted: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)

    def subset(self, keys: list[str]) -> Windows:
        """The windows of `keys` (the devices among them that have one)."""
        wanted = [k for k in keys if k in self.base]
        if len(wanted) == len(self.base):
            return self
        rows = self.rows
        if rows.num_rows:
            mask = pc.is_in(_device_keys(rows), value_set=pa.array(wanted, pa.string()))
            rows = rows.filter(mask)
        return Windows(
            rows,
            {k: self.base[k] for k in wanted},
            {k: self.emitted[k] for k in wanted if k in self.emitted},
        )

    def replaced(self, new: Windows) -> Windows:
        """These windows with the devices of `new` replaced by (or added from) `new`."""
        if not self.base:
            return new
        rows = self.rows
        if new.base and rows.num_rows:
            mask = pc.is_in(_device_keys(rows), value_set=pa.array(list(new.base), pa.string()))
            rows = rows.filter(pc.invert(mask))
        emitted = {k: v for k, v in self.emitted.items() if k not in new.base}
        return Windows(
            pa.concat_tables([rows, new.rows]),
            {**self.base, **new.base},
            {**emitted, **new.emitted},
        )


def _windows_from_bodies(bodies: dict[str, dict]) -> Windows:
    """Stored item bodies (device key -> body) as Windows."""
    columns: dict[str, list] = {name: [] for name in READING_SCHEMA.names}
    origin: list[int] = []
    for device_key, body in bodies.items():
        greenhouse, device = device_key.split("\x00", 1)
        count = len(body["rows"])
        columns["greenhouse_id"] += [greenhouse] * count
        columns["device_id"] += [device] * count
        if count:
            for name, values in zip(
                ("timestamp", *METRICS), zip(*body["rows"], strict=True), strict=True
            ):
                columns[name] += values
        columns["error_code"] += [0] * count
        columns["synthetic"] += [False] * count  # the caller marks what it reports
        origin += [1] * count
        if count and body["anchor"]:
            origin[-count] = 0
    arrays = [pa.array(columns[f.name], f.type) for f in READING_SCHEMA]
    arrays.append(pa.array(origin, pa.int8()))
    return Windows(
        pa.Table.from_arrays(arrays, schema=_window_schema()),
        {k: b["base"] for k, b in bodies.items()},
        {k: b.get("emitted", {}) for k, b in bodies.items()},
    )


def _bodies(windows: Windows) -> dict[str, dict]:
    """Windows as item bodies (device key -> body), the inverse of _windows_from_bodies."""
    rows = windows.rows
    names = _device_keys(rows).to_pylist() if rows.num_rows else []
    stamps = pc.cast(rows["timestamp"], pa.int64()).to_pylist()
    values = [rows[m].to_pylist() for m in METRICS]
    origin = rows["_origin"].to_pylist()
    bodies: dict[str, dict] = {
        k: {"rows": [], "anchor": False, "base": base, "emitted": windows.emitted.get(k, {})}
        for k, base in windows.base.items()
    }
    for name, ts, first, *metrics in zip(names, stamps, origin, *values, strict=True):
        body = bodies[name]
        body["rows"].append([ts, *metrics])
        if first == 0:
            body["anchor"] = True
    return bodies


class Session:
    """Devices' jump state held in memory while many tables are judged, saved once.

    The first `judge` of a device loads its item; later tables of the same device are judged
    against the window in memory, exactly as if each table had been a file judged and saved
    on its own (the same merge, the same window); `flush` writes every changed item once,
    conditionally on the version read. Use it for one writer's run of files (an ingest, a
    backfill) that nobody else writes meanwhile; `judge` (one file) is a Session of one table.
    """

    def __init__(self, store: StateStore, now_ms: int):
        self.store = store
        self.now_ms = now_ms
        self.windows = Windows()
        self.versions: dict[str, int] = {}  # device key -> version read
        self.changed: set[str] = set()
        self._companion: Session | None = None

    def companion(self, wrap) -> Session:
        """The Session over `wrap(store)` (rules.SyntheticState: synthetic readings' own
        windows), held, flushed and settled with this one."""
        if self._companion is None:
            self._companion = Session(wrap(self.store), self.now_ms)
        return self._companion

    def judge(self, table: pa.Table, limits: dict[str, float], source: str) -> dict[str, pa.Table]:
        """Jumps among `table`'s healthy readings against the windows (updated in memory)."""
        if table.num_rows == 0:
            return {}
        keys = sorted(pc.unique(_device_keys(table)).to_pylist())
        self._load([k for k in keys if k not in self.versions])
        rows, new = _judge_once(table, self.windows.subset(keys), limits, source_id(source))
        self.windows = self.windows.replaced(new)
        self.changed.update(new.base)
        return rows

    def _load(self, keys: list[str]) -> None:
        if not keys:
            return
        loaded = self.store.load([_state_key(k) for k in keys])
        bodies = {}
        for key in keys:
            body, version = loaded[_state_key(key)]
            self.versions[key] = version
            if body is not None:
                bodies[key] = body
        if bodies:
            self.windows = self.windows.replaced(_windows_from_bodies(bodies))

    def flush(self) -> list[StateKey]:
        """Save every changed device -> the keys another writer changed since they were read."""
        changed = sorted(self.changed)
        bodies = _bodies(self.windows.subset(changed))
        writes = [
            (_state_key(k), bodies[k], self.versions[k], self.now_ms + STATE_TTL_MS)
            for k in changed
        ]
        conflicts = self.store.save(writes)
        lost = set(_device_names(conflicts))
        for key in changed:
            if key not in lost:
                self.versions[key] += 1
        self.changed = set()
        return conflicts

    def settle(self, limits: dict[str, float], source: str) -> list[tuple[str, pa.Table]]:
        """`flush` (this Session and its companion), then merge the devices another writer
        changed meanwhile.

        Their windows as this session left them are judged, as one more file named `source`,
        against the state the other writer saved (so the stored window holds both writers'
        readings). Returns the jumps found in that merge, as (metric, reading rows), the
        companion's marked synthetic: jumps between this session's readings and the other
        writer's, which neither could see (empty when nobody interfered).
        """
        merged = []
        if self._companion is not None:
            for metric, part in self._companion.settle(limits, source):
                index = part.schema.get_field_index(SYNTHETIC)
                merged.append(
                    (metric, part.set_column(index, SYNTHETIC, pa.repeat(True, len(part))))
                )
        conflicts = self.flush()
        if not conflicts:
            return merged
        names = _device_names(conflicts)
        mine = self.windows.subset(names).rows.drop_columns(["_origin"])
        for name in names:  # forgotten here: judge() below saves the merged window
            self.versions.pop(name, None)
        self.windows = self.windows.subset([k for k in self.windows.base if k not in names])
        return merged + list(judge(mine, limits, self.store, source, self.now_ms).items())


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
    pending = sorted(pc.unique(keys_all).to_pylist())
    found: dict[str, list[pa.Table]] = {}
    for attempt in range(MAX_ATTEMPTS):
        subset = (
            table if attempt == 0 else table.filter(pc.is_in(keys_all, value_set=pa.array(pending)))
        )
        session = Session(store, now_ms)
        rows = session.judge(subset, limits, source)
        conflicts = session.flush()
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


def _judge_once(
    table: pa.Table,
    windows: Windows,
    limits: dict[str, float],
    source: str,
) -> tuple[dict[str, pa.Table], Windows]:
    """One table judged against the devices' windows -> (jump rows, the devices' new windows)."""
    stored = windows.rows
    table = table.select(READING_SCHEMA.names).cast(READING_SCHEMA)
    new_origin = pa.repeat(pa.scalar(2, pa.int8()), table.num_rows)
    merged = pa.concat_tables([stored, table.append_column("_origin", new_origin)])
    merged = merged.combine_chunks()
    # Readings at or before a device's anchor are too late for its window.
    keys = _device_keys(merged)
    stamps = pc.cast(merged["timestamp"], pa.int64())
    late = pa.repeat(False, merged.num_rows)
    anchor_rows = stored.filter(pc.equal(stored["_origin"], 0)) if stored.num_rows else stored
    if anchor_rows.num_rows:
        position = pc.index_in(keys, value_set=_device_keys(anchor_rows))
        bound = pc.take(pc.cast(anchor_rows["timestamp"], pa.int64()), position)
        late = pc.fill_null(
            pc.and_(pc.equal(merged["_origin"], 2), pc.less_equal(stamps, bound)), False
        )
    too_late = merged.filter(late).drop_columns(["_origin"])
    merged = merged.filter(pc.invert(late))
    # A reading already in the window (same device and time) is the stored one: first wins.
    order, device, names = _order(merged, None, "_origin")
    merged = merged.take(order)
    stamps = pc.cast(merged["timestamp"], pa.int64())
    repeat = pc.fill_null(
        pc.and_(pc.equal(device, shift(device, 1)), pc.equal(stamps, shift(stamps, 1))), False
    )
    merged = merged.filter(pc.invert(repeat))
    device = device.filter(pc.invert(repeat))
    minutes = _minutes(merged["timestamp"])
    origin = merged["_origin"].combine_chunks()
    stamps = pc.cast(merged["timestamp"], pa.int64()).combine_chunks()
    code_of = {name: code for code, name in enumerate(names)}
    starts = {code_of[k]: base for k, base in windows.base.items() if k in code_of}
    emitted = {code_of[k]: e for k, e in windows.emitted.items() if k in code_of and e}
    new_emitted: dict[int, dict[str, dict[str, str]]] = {}
    report: dict[str, list[int]] = {}
    changes_by_metric = {}
    # Python sees only the stored rows a jump of this source was reported on, and the jump rows.
    stored_index = _reported_by(source, emitted, device, stamps, origin)
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
                if by_metric.get(metric) == source and (code, ts) in stored_index:
                    chosen.add(stored_index[(code, ts)])
        report[metric] = sorted(chosen)
    merged = merged.drop_columns(["_origin"])
    rows = {m: merged.take(pa.array(ix, pa.int64())) for m, ix in report.items() if ix}
    late_rows = stateless(too_late, limits)
    for metric, part in late_rows.items():
        rows[metric] = pa.concat_tables([rows[metric], part]) if metric in rows else part
    return rows, _new_windows(merged, device, stamps, names, changes_by_metric, new_emitted)


def _reported_by(source, emitted, device, stamps, origin) -> dict[tuple[int, str], int]:
    """(device code, ts) -> merged row, for the stored readings `source` reported a jump on."""
    wanted = {
        (code, ts)
        for code, flags in emitted.items()
        for ts, by_metric in flags.items()
        if source in by_metric.values()
    }
    if not wanted:
        return {}
    stored_at = pc.indices_nonzero(pc.not_equal(origin, 2))
    index = {}
    for i, code, ts in zip(
        stored_at.to_pylist(),
        pc.take(device, stored_at).to_pylist(),
        pc.take(stamps, stored_at).to_pylist(),
        strict=True,
    ):
        if (code, str(ts)) in wanted:
            index[(code, str(ts))] = i
    return index


def _new_windows(merged, device, stamps, names, changes_by_metric, emitted) -> Windows:
    """Each device's last WINDOW readings (plus the anchor before them), bases and marks."""
    counts = pc.value_counts(device)  # rows are sorted by device: one run per device
    codes, sizes = counts.field("values").to_pylist(), counts.field("counts").to_pylist()
    ends, base_of, emitted_of = [0] * len(names), {}, {}
    offset = 0
    for code, count in zip(codes, sizes, strict=True):
        first, last = offset, offset + count - 1
        offset += count
        ends[code] = last
        anchored = count > WINDOW
        begin = last - WINDOW if anchored else first
        base = {}
        for metric, (changes, start) in changes_by_metric.items():
            value = start.get(code)
            if anchored:
                history = changes.get(code, [])
                at = bisect.bisect_right([i for i, _ in history], begin) - 1
                value = history[at][1] if at >= 0 else value
            base[metric] = value if anchored else None
        base_of[names[code]] = base
        flags = emitted.get(code)
        if flags:
            kept = {str(ts) for ts in stamps.slice(begin, last - begin + 1).to_pylist()}
            flags = {ts: f for ts, f in flags.items() if ts in kept}
        emitted_of[names[code]] = flags or {}
    # Rows at most WINDOW from their device's last row; the one exactly WINDOW back: the anchor.
    back = pc.subtract(pc.take(pa.array(ends, pa.int64()), device), arange(len(device)))
    keep = pc.less_equal(back, WINDOW)
    rows = merged.filter(keep)
    origin = pc.cast(pc.not_equal(back.filter(keep), WINDOW), pa.int8())  # 0 anchor, 1 stored
    index = rows.schema.get_field_index("error_code")
    zeros = pa.repeat(pa.scalar(0, pa.int32()), rows.num_rows)
    rows = rows.set_column(index, "error_code", zeros)
    index = rows.schema.get_field_index(SYNTHETIC)  # as stored: the caller marks what it reports
    rows = rows.set_column(index, SYNTHETIC, pa.repeat(False, rows.num_rows))
    rows = rows.append_column("_origin", origin)
    return Windows(rows.cast(_window_schema()), base_of, emitted_of)
