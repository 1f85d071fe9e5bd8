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

from .arrays import any_true, arange, device_codes
from .lazy import pa, pc
from .schema import METRICS, READING_SCHEMA, SYNTHETIC
from .state import StateConflict, StateKey, StateStore

KIND = "jump"
WINDOW = 60  # readings kept per device: how late a reading may be and still meet its neighbours
STATE_TTL_MS = 30 * 86_400_000  # a device silent for 30 days starts afresh
MAX_ATTEMPTS = 8  # conditional-write retries when another writer updated the same device


def _column(table: pa.Table, name: str) -> pa.Array:
    column = table[name]
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _by_device_time(device: pa.Array, stamps: pa.Array) -> pa.Array:
    """Indices ordering rows by (device, time), stable (rows without a device last).

    A stable sort by the device alone (small integers: a counting sort) gives that order
    whenever each device's rows already come in time order, the usual case (a table in time
    order after its devices' windows); that is checked, and otherwise the rows are sorted by
    both keys.
    """
    if not device.null_count and not stamps.null_count:
        order = pc.sort_indices(device)
        sorted_device, sorted_stamps = pc.take(device, order), pc.take(stamps, order)
        backwards = pc.and_(pc.equal(*_pairs(sorted_device)), pc.less(*_pairs(sorted_stamps)))
        if not backwards.true_count:
            return order
    return pc.sort_indices(
        pa.table({"device": device, "ts": stamps}),
        sort_keys=[("device", "ascending"), ("ts", "ascending")],
    )


def _pairs(array: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(array[1:], array[:-1]): each row beside the one before it, without copying."""
    n = len(array)
    return array.slice(1), array.slice(0, max(n - 1, 0))


def _steps(device: pa.Array, minutes: pa.Array) -> tuple[pa.Array, pa.Array]:
    """For rows sorted by (device, time), from the second row on: whether the row follows a
    reading of its own device, and the minutes since that reading (at least 1). Shared by
    every metric."""
    same = pc.equal(*_pairs(device))
    same = pc.fill_null(same, False) if same.null_count else same
    gap = pc.max_element_wise(pc.subtract(*_pairs(minutes)), 1.0)
    return same, gap


def scan(
    device: pa.Array,
    steps: tuple[pa.Array, pa.Array],
    values: pa.Array,
    limit: float,
    start_base: dict[int, float | None] | None = None,
) -> tuple[list[int], dict[int, list[tuple[int, float | None]]]]:
    """Jumps in one metric over rows sorted by (device, time) (`steps`: `_steps` of them).

    Returns the jump positions and, per device code, the positions where its open base changed
    with the base after that row (for saving the state at any point of the sequence).
    """
    start_base = start_base or {}
    same, gap = steps
    rate = pc.divide(pc.abs(pc.subtract(*_pairs(values))), gap)
    fast = pc.and_(same, pc.greater(rate, limit))  # a null (no value) is no jump
    if not fast.true_count:
        return [], {}
    candidates = pc.add(pc.indices_nonzero(fast), 1)  # `fast` starts at the second row
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


def _minutes(stamps) -> pa.Array:
    """int64 epoch ms (or timestamps) -> float minutes."""
    stamps = stamps if stamps.type == pa.int64() else pc.cast(stamps, pa.int64())
    stamps = stamps.combine_chunks() if isinstance(stamps, pa.ChunkedArray) else stamps
    return pc.divide(pc.cast(stamps, pa.float64()), 60_000.0)


def stateless(
    table: pa.Table, limits: dict[str, float], rows: pa.Array | None = None
) -> dict[str, pa.Table]:
    """Jumps within one table of healthy readings (or within its `rows`, indices), nothing
    remembered: metric -> reading rows. Copies only the columns it sorts and scans."""
    if table.num_rows == 0 or (rows is not None and len(rows) == 0):
        return {}
    device, _ = device_codes(table, rows)
    stamps = pc.cast(_column(table, "timestamp"), pa.int64())
    stamps = stamps if rows is None else pc.take(stamps, rows)
    order = _by_device_time(device, stamps)
    device = pc.take(device, order)
    steps = _steps(device, _minutes(pc.take(stamps, order)))
    index = order if rows is None else pc.take(rows, order)
    out = {}
    for metric in METRICS:
        values = pc.take(table[metric], index)  # the rows taken, not the whole column, joined
        values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
        jumps, _ = scan(device, steps, values, limits[metric])
        if jumps:
            out[metric] = table.take(pc.take(index, pa.array(jumps, pa.int64())))
    return out


def source_id(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:16]


@functools.cache
def _window_schema() -> pa.Schema:
    """The columns a window row keeps (built on first use: module code touches no pyarrow)."""
    metrics = [pa.field(m, READING_SCHEMA.field(m).type) for m in METRICS]
    return pa.schema(
        [
            pa.field("_code", pa.int64()),
            pa.field("timestamp", pa.int64()),
            *metrics,
            pa.field("_origin", pa.int8()),
        ]
    )


@dataclass
class Windows:
    """Stored windows of some devices, in memory: what the `jump` items hold, as columns.

    `rows`: the devices' window readings as `_code` (the device, a Session's code), timestamp
    (epoch ms), the metrics and `_origin` (0 the anchor, 1 a stored reading); each device's
    rows together and in time order, anchor first. `base` and `emitted`: per device code, as in
    the item body.
    """

    rows: pa.Table = field(default_factory=lambda: _window_schema().empty_table())
    base: dict[int, dict[str, float | None]] = field(default_factory=dict)
    emitted: dict[int, dict[str, dict[str, str]]] = field(default_factory=dict)

    def subset(self, codes: list[int]) -> Windows:
        """The windows of the devices `codes` (those among them that have one)."""
        wanted = [c for c in codes if c in self.base]
        if len(wanted) == len(self.base):
            return self
        rows = self.rows
        if rows.num_rows:
            rows = rows.filter(pc.is_in(rows["_code"], value_set=pa.array(wanted, pa.int64())))
        return Windows(
            rows,
            {c: self.base[c] for c in wanted},
            {c: self.emitted[c] for c in wanted if c in self.emitted},
        )

    def replaced(self, new: Windows) -> Windows:
        """These windows with the devices of `new` replaced by (or added from) `new`."""
        if not self.base:
            return new
        rows = self.rows
        if new.base and rows.num_rows:
            mask = pc.is_in(rows["_code"], value_set=pa.array(list(new.base), pa.int64()))
            rows = rows.filter(pc.invert(mask))
        emitted = {k: v for k, v in self.emitted.items() if k not in new.base}
        return Windows(
            pa.concat_tables([rows, new.rows]).combine_chunks(),
            {**self.base, **new.base},
            {**emitted, **new.emitted},
        )


def _windows_from_bodies(bodies: dict[int, dict]) -> Windows:
    """Stored item bodies (device code -> body) as Windows."""
    columns: dict[str, list] = {name: [] for name in _window_schema().names}
    for code, body in bodies.items():
        count = len(body["rows"])
        columns["_code"] += [code] * count
        if count:
            for name, values in zip(
                ("timestamp", *METRICS), zip(*body["rows"], strict=True), strict=True
            ):
                columns[name] += values
        origin = [1] * count
        if count and body["anchor"]:
            origin[0] = 0
        columns["_origin"] += origin
    schema = _window_schema()
    return Windows(
        pa.Table.from_arrays([pa.array(columns[f.name], f.type) for f in schema], schema=schema),
        {c: b["base"] for c, b in bodies.items()},
        {c: b.get("emitted", {}) for c, b in bodies.items()},
    )


def _bodies(windows: Windows, names: list[str]) -> dict[str, dict]:
    """Windows as item bodies (device key -> body), the inverse of _windows_from_bodies;
    `names`: the device key of each code."""
    rows = windows.rows
    codes = rows["_code"].to_pylist()
    stamps = rows["timestamp"].to_pylist()
    values = [rows[m].to_pylist() for m in METRICS]
    origin = rows["_origin"].to_pylist()
    bodies: dict[int, dict] = {
        c: {"rows": [], "anchor": False, "base": base, "emitted": windows.emitted.get(c, {})}
        for c, base in windows.base.items()
    }
    readings = list(map(list, zip(stamps, *values, strict=True)))
    # Each device's rows come together: one slice per device (per run, to be safe).
    ends = pc.indices_nonzero(pc.not_equal(*_pairs(rows["_code"].combine_chunks())))
    start = 0
    for end in [*(i + 1 for i in ends.to_pylist()), len(codes)] if codes else []:
        body = bodies[codes[start]]
        body["rows"] += readings[start:end]
        body["anchor"] = body["anchor"] or 0 in origin[start:end]
        start = end
    return {names[c]: body for c, body in bodies.items()}


def _readings(rows: pa.Table, names: list[str], codes: pa.Array) -> pa.Table:
    """Window rows as readings (READING_SCHEMA): `codes` give each row's index into `names`
    (device keys). As stored: error_code 0, not synthetic (the caller marks what it reports)."""
    split = [name.split("\x00", 1) for name in names]
    greenhouses = pa.array([g for g, _ in split], pa.string())
    devices = pa.array([d for _, d in split], pa.string())
    n = rows.num_rows
    columns = {
        "greenhouse_id": pc.take(greenhouses, codes),
        "device_id": pc.take(devices, codes),
        "timestamp": pc.cast(rows["timestamp"], READING_SCHEMA.field("timestamp").type),
        **{m: rows[m] for m in METRICS},
        "error_code": pa.repeat(pa.scalar(0, pa.int32()), n),
        SYNTHETIC: pa.repeat(False, n),
    }
    return pa.Table.from_arrays(
        [columns[name] for name in READING_SCHEMA.names], schema=READING_SCHEMA
    )


class Session:
    """Devices' jump state held in memory while many tables are judged, saved once.

    The first `judge` of a device loads its item; later tables of the same device are judged
    against the window in memory, exactly as if each table had been a file judged and saved
    on its own (the same merge, the same window); `flush` writes every changed item once,
    conditionally on the version read. Use it for one writer's run of files (an ingest, a
    backfill) that nobody else writes meanwhile; `judge` (one file) is a Session of one table.
    Devices are numbered in the order they are first seen (`names`): the windows are columns
    keyed by those numbers, so no per-reading string is built or compared.
    """

    def __init__(self, store: StateStore, now_ms: int):
        self.store = store
        self.now_ms = now_ms
        self.windows = Windows()
        self.versions: dict[str, int] = {}  # device key -> version read
        self.changed: set[str] = set()
        self.names: list[str] = []  # device code -> device key
        self.codes: dict[str, int] = {}  # device key -> device code
        self._companion: Session | None = None

    def companion(self, wrap) -> Session:
        """The Session over `wrap(store)` (rules.SyntheticState: synthetic readings' own
        windows), held, flushed and settled with this one."""
        if self._companion is None:
            self._companion = Session(wrap(self.store), self.now_ms)
        return self._companion

    def _code(self, key: str) -> int:
        code = self.codes.get(key)
        if code is None:
            code = self.codes[key] = len(self.names)
            self.names.append(key)
        return code

    def judge(
        self,
        table: pa.Table,
        limits: dict[str, float],
        source: str,
        rows: pa.Array | None = None,
    ) -> dict[str, pa.Table]:
        """Jumps among `table`'s healthy readings (or its `rows`, indices) against the windows
        (updated in memory) -> metric -> reading rows (READING_SCHEMA)."""
        if table.num_rows == 0 or (rows is not None and len(rows) == 0):
            return {}
        local, ids = device_codes(table, rows)
        keys = [f"{g}\x00{d}" for g, d in ids]
        if local.null_count:  # a reading without an id has no window and no neighbour
            valid = pc.is_valid(local)
            rows = pc.indices_nonzero(valid) if rows is None else rows.filter(valid)
            local = local.filter(valid)
            if len(rows) == 0:
                return {}
        codes = [self._code(k) for k in keys]
        self._load([k for k in keys if k not in self.versions])
        found, new = _judge_once(
            table, rows, local, codes, self.windows, limits, source_id(source), self.names
        )
        self.windows = self.windows.replaced(new)
        self.changed.update(keys)
        return found

    def _load(self, keys: list[str]) -> None:
        if not keys:
            return
        loaded = self.store.load([_state_key(k) for k in keys])
        bodies = {}
        for key in keys:
            body, version = loaded[_state_key(key)]
            self.versions[key] = version
            if body is not None:
                bodies[self._code(key)] = body
        if bodies:
            self.windows = self.windows.replaced(_windows_from_bodies(bodies))

    def flush(self) -> list[StateKey]:
        """Save every changed device -> the keys another writer changed since they were read."""
        changed = sorted(self.changed)
        bodies = _bodies(self.windows.subset([self.codes[k] for k in changed]), self.names)
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
        lost = [self.codes[k] for k in _device_names(conflicts)]
        mine = self.windows.subset(lost).rows
        mine = _readings(mine, self.names, mine["_code"])
        for name in _device_names(conflicts):  # forgotten here: judge() below saves the merged
            self.versions.pop(name, None)
        self.windows = self.windows.subset([c for c in self.windows.base if c not in lost])
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
    found: dict[str, list[pa.Table]] = {}
    subset, pending = table, None
    for _attempt in range(MAX_ATTEMPTS):
        session = Session(store, now_ms)
        rows = session.judge(subset, limits, source)
        conflicts = session.flush()
        lost = pa.array(_device_names(conflicts), pa.string())
        for metric, part in rows.items():
            if conflicts:
                part = part.filter(pc.invert(pc.is_in(_device_keys(part), value_set=lost)))
            if part.num_rows:
                found.setdefault(metric, []).append(part)
        if not conflicts:
            return {m: pa.concat_tables(parts) for m, parts in found.items()}
        pending = conflicts
        subset = table.filter(pc.is_in(_device_keys(table), value_set=lost))
    raise StateConflict(f"jump state kept changing under us for {len(pending)} device(s)")


def _state_key(device_key: str) -> StateKey:
    greenhouse, device = device_key.split("\x00", 1)
    return (greenhouse, device, KIND)


def _device_names(keys) -> list[str]:
    return [f"{g}\x00{d}" for g, d, _ in keys]


def _judge_once(
    table: pa.Table,
    rows: pa.Array | None,
    local: pa.Array,
    codes: list[int],
    windows: Windows,
    limits: dict[str, float],
    source: str,
    names: list[str],
) -> tuple[dict[str, pa.Table], Windows]:
    """One table judged against the devices' windows -> (jump rows, the devices' new windows).

    `rows`: the rows of `table` to judge (None: all); `local`: each such row's device as an
    index into `codes` (the Session's device codes, in (greenhouse, device) order); `names`:
    the Session's device keys. Only the columns the rule reads are merged and sorted; the
    order (`order`: each merged row's position among the stored rows, then the new ones)
    tells where a row came from, and reading rows are taken for the jumps alone.
    """
    table = table.select(READING_SCHEMA.names)
    table = table if table.schema == READING_SCHEMA else table.cast(READING_SCHEMA)
    stamps = pc.cast(_column(table, "timestamp"), pa.int64())
    new = {
        "_code": local,
        "timestamp": stamps if rows is None else pc.take(stamps, rows),
        **{
            m: _column(table, m) if rows is None else pc.take(_column(table, m), rows)
            for m in METRICS
        },
        "_ref": arange(table.num_rows) if rows is None else pc.cast(rows, pa.int64()),
    }
    code_set = pa.array(codes, pa.int64())
    stored = windows.rows
    if stored.num_rows:  # the windows of this table's devices, each device by its local code
        mine = pc.index_in(_column(stored, "_code"), value_set=code_set)
        if mine.null_count:
            stored, mine = stored.filter(pc.is_valid(mine)), mine.drop_null()
    # Readings at or before a device's anchor are too late for its window.
    too_late = None
    if stored.num_rows:
        anchors = pc.indices_nonzero(pc.equal(stored["_origin"], 0))
        if len(anchors):
            bound: list[int | None] = [None] * len(codes)
            for code, ts in zip(
                pc.take(mine, anchors).to_pylist(),
                pc.take(stored["timestamp"], anchors).to_pylist(),
                strict=True,
            ):
                bound[code] = ts
            late = pc.fill_null(
                pc.less_equal(new["timestamp"], pc.take(pa.array(bound, pa.int64()), local)),
                False,
            )
            if any_true(late):
                too_late = pc.filter(new["_ref"], late)
                new = {name: pc.filter(column, pc.invert(late)) for name, column in new.items()}
    merged = pa.Table.from_arrays(
        [
            pa.concat_arrays([mine.cast(pa.int32()), new["_code"].cast(pa.int32())])
            if stored.num_rows
            else new["_code"].cast(pa.int32()),
            *(
                pa.concat_arrays([_column(stored, name), new[name]])
                if stored.num_rows
                else new[name]
                for name in ("timestamp", *METRICS)
            ),
        ],
        names=["_code", "timestamp", *METRICS],
    )
    # A reading already in the window (same device and time) is the stored one: first wins
    # (the stored rows come first, and the order keeps rows of equal keys in place).
    order = _by_device_time(_column(merged, "_code"), _column(merged, "timestamp"))
    merged = merged.take(order)
    device, stamps = _column(merged, "_code"), _column(merged, "timestamp")
    repeat = pc.and_(pc.equal(*_pairs(device)), pc.equal(*_pairs(stamps)))  # from row 1 on
    if any_true(repeat):
        keep = pa.concat_arrays([pa.array([True]), pc.invert(repeat)])
        merged, order = merged.filter(keep), pc.filter(order, keep)
        device, stamps = _column(merged, "_code"), _column(merged, "timestamp")
    from_table = Origins(order, stored, new["_ref"])
    steps = _steps(device, _minutes(stamps))
    starts = {i: windows.base[c] for i, c in enumerate(codes) if c in windows.base}
    emitted = {i: windows.emitted[c] for i, c in enumerate(codes) if windows.emitted.get(c)}
    new_emitted: dict[int, dict[str, dict[str, str]]] = {}
    report: dict[str, list[int]] = {}
    changes_by_metric = {}
    # Python sees only the stored rows a jump of this source was reported on, and the jump rows.
    stored_index = _reported_by(source, emitted, device, stamps, from_table)
    for metric in METRICS:
        values = _column(merged, metric)
        start = {code: (base or {}).get(metric) for code, base in starts.items()}
        jumps, changes = scan(device, steps, values, limits[metric], start)
        changes_by_metric[metric] = (changes, start)
        chosen = set()
        at = pa.array(jumps, pa.int64())
        for index, code, ts, fresh in zip(
            jumps,
            pc.take(device, at).to_pylist(),
            pc.take(stamps, at).to_pylist(),
            from_table.fresh(jumps),
            strict=True,
        ):
            ts = str(ts)
            owner = emitted.get(code, {}).get(ts, {}).get(metric)
            if fresh or owner is None or owner == source:
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
    found = {m: from_table.rows(ix, table, names) for m, ix in report.items() if ix}
    if too_late is not None:
        for metric, part in stateless(table, limits, too_late).items():
            found[metric] = pa.concat_tables([found[metric], part]) if metric in found else part
    windows = _new_windows(merged, codes, starts, changes_by_metric, new_emitted)
    return found, windows


@dataclass
class Origins:
    """Where the rows of a sorted merge came from: merged row i is row `order[i]` of the
    stored rows (`stored`) followed by the new ones (`refs`: their rows in the judged table)."""

    order: pa.Array
    stored: pa.Table
    refs: pa.Array

    def _sources(self, positions: list[int]) -> list[int]:
        return pc.take(self.order, pa.array(positions, pa.int64())).to_pylist()

    def fresh(self, positions: list[int]) -> list[bool]:
        """Whether each of these merged rows is a new reading (not a stored one)."""
        count = self.stored.num_rows
        return [i >= count for i in self._sources(positions)]

    def stored_positions(self) -> pa.Array:
        """The merged rows that are stored readings."""
        return pc.indices_nonzero(pc.less(self.order, self.stored.num_rows))

    def rows(self, positions: list[int], table: pa.Table, names: list[str]) -> pa.Table:
        """The reading rows at `positions` of the merge, in that order: from `table` for a
        new reading, rebuilt from the window for a stored one."""
        count = self.stored.num_rows
        sources = self._sources(positions)
        new_at = pa.array([i - count for i in sources if i >= count], pa.int64())
        new = table.take(pc.take(self.refs, new_at))
        if new.num_rows == len(sources):
            return new
        old = self.stored.take(pa.array([i for i in sources if i < count], pa.int64()))
        both = pa.concat_tables([new, _readings(old, names, old["_code"])])
        order, seen = [], [0, 0]
        for i in sources:  # back into merge order: the new ones first in `both`, then the stored
            fresh = i >= count
            order.append(seen[1] if fresh else new.num_rows + seen[0])
            seen[fresh] += 1
        return both.take(pa.array(order, pa.int64()))


def _reported_by(source, emitted, device, stamps, origins) -> dict[tuple[int, str], int]:
    """(device code, ts) -> merged row, for the stored readings `source` reported a jump on."""
    wanted = {
        (code, ts)
        for code, flags in emitted.items()
        for ts, by_metric in flags.items()
        if source in by_metric.values()
    }
    if not wanted:
        return {}
    stored_at = origins.stored_positions()
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


def _new_windows(
    merged: pa.Table, codes: list[int], starts: dict, changes_by_metric, emitted
) -> Windows:
    """Each device's last WINDOW readings (plus the anchor before them), bases and marks.

    `starts`: each device's base before this table (by local code), as stored."""
    device = _column(merged, "_code")
    stamps = _column(merged, "timestamp")
    # Rows are sorted by device, and every device of `codes` has a run: device i's run ends
    # where the next one's starts.
    ends = [*pc.indices_nonzero(pc.not_equal(*_pairs(device))).to_pylist(), len(device) - 1]
    assert len(ends) == len(codes), "a device of this table has no merged row"
    base_of, emitted_of = {}, {}
    changed = {local for changes, _ in changes_by_metric.values() for local in changes}
    first = 0
    for local, last in enumerate(ends):
        anchored = last - first + 1 > WINDOW
        begin = last - WINDOW if anchored else first
        first = last + 1
        if not anchored:
            base = dict.fromkeys(changes_by_metric)
        elif local not in changed:  # the base it started with (the stored dict when whole)
            base = starts.get(local) or {}
            if tuple(base) != METRICS:
                base = {metric: base.get(metric) for metric in METRICS}
        else:
            base = {}
            for metric, (changes, start) in changes_by_metric.items():
                value = start.get(local)
                history = changes.get(local)
                if history:
                    at = bisect.bisect_right([i for i, _ in history], begin) - 1
                    value = history[at][1] if at >= 0 else value
                base[metric] = value
        code = codes[local]
        base_of[code] = base
        flags = emitted.get(local)
        if flags:
            kept = {str(ts) for ts in stamps.slice(begin, last - begin + 1).to_pylist()}
            flags = {ts: f for ts, f in flags.items() if ts in kept}
        emitted_of[code] = flags or {}
    # Rows at most WINDOW from their device's last row; the one exactly WINDOW back: the anchor.
    back = pc.subtract(pc.take(pa.array(ends, pa.int64()), device), arange(len(device)))
    keep = pc.less_equal(back, WINDOW)
    if keep.true_count == len(keep):
        rows = merged
    else:
        rows, back, device = merged.filter(keep), back.filter(keep), device.filter(keep)
    origin = pc.cast(pc.not_equal(back, WINDOW), pa.int8())  # 0 anchor, 1 stored
    columns = [pc.take(pa.array(codes, pa.int64()), device), _column(rows, "timestamp")]
    columns += [*(_column(rows, m) for m in METRICS), origin]
    table = pa.Table.from_arrays(columns, schema=_window_schema())
    return Windows(table, base_of, emitted_of)
