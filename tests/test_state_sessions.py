"""Device state held in memory for a run of files (issue 12): the same spikes, windows,
incidents and events as saving the state after every file, and writers that interfere.

`jumps.Session` / `incidents.Session` load a device once, judge many tables against the copy in
memory and save once; `judge` / `observe` load and save per file. Each test runs both on the
same files and compares what comes out (spikes, events, the stored items).
"""

from __future__ import annotations

import random
import sqlite3
from datetime import UTC, datetime

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from smartfarm_cli.core import incidents, jumps
from smartfarm_cli.core.ingest import ndjson_chunk
from smartfarm_cli.core.rules import detect, load_rules
from smartfarm_cli.core.state import SqliteStateStore
from smartfarm_cli.core.validate import table_from_rows
from smartfarm_cli.targets.local import LocalTarget

RULES = load_rules()
POLICY = incidents.policy_from(RULES.alerts)
CENTRE = incidents.centre_of(RULES)
T0 = int(datetime(2026, 11, 28, 10, tzinfo=UTC).timestamp() * 1000)
MIN = 60_000
NOW_MS = T0 + 86_400_000


def store():
    return SqliteStateStore(
        sqlite3.connect(":memory:", isolation_level=None), clock=lambda: T0 / 1000
    )


def spike_rows(spikes):
    columns = ["device_id", "timestamp", "rule", "metric", "temperature", "source_key"]
    return sorted(zip(*(spikes[c].to_pylist() for c in columns), strict=True))


def items(state, kind):
    return {key: body for key, body, _version in state.scan(kind)}


def files_of(readings, cuts):
    """Split (device, minute, temperature, error_code) rows into files at the given sizes."""
    out, start, i = [], 0, 0
    while start < len(readings):
        size = cuts[i % len(cuts)]
        part = readings[start : start + size]
        out.append(
            table_from_rows(
                [("gh-1", d, T0 + m * MIN, temp, 60.0, 800.0, err) for d, m, temp, err in part]
            )
        )
        start, i = start + size, i + 1
    return out


reading = st.tuples(
    st.sampled_from(["d1", "d2"]),
    st.integers(0, 150),  # minutes: more than a WINDOW per device, so anchors and late ones
    st.sampled_from([20.0, 21.0, 25.0, 30.0, 31.0, 400.0]),
    st.sampled_from([0, 0, 0, 0, 1]),
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(reading, min_size=1, max_size=200),
    st.lists(st.integers(1, 40), min_size=1, max_size=10),
)
def test_a_session_judges_every_file_as_judge_and_saves_the_same_windows(readings, cuts):
    """Any order (late, re-sent, too-late readings), any split: spikes and items are equal."""
    files = files_of(readings, cuts)
    per_file, session_store = store(), store()
    session = jumps.Session(session_store, NOW_MS)
    for i, table in enumerate(files + files[:2]):  # the first two files come again at the end
        expected = detect(table, RULES, f"f{i % len(files)}", state=per_file, now_ms=NOW_MS)
        got = detect(table, RULES, f"f{i % len(files)}", state=session, now_ms=NOW_MS)
        assert spike_rows(got) == spike_rows(expected)
    assert session.flush() == []
    assert items(session_store, "jump") == items(per_file, "jump")


def test_a_session_saves_each_device_once():
    state = store()
    session = jumps.Session(state, NOW_MS)
    for minute in range(0, 200, 10):  # 20 files of 10 readings of two devices
        rows = [("gh-1", d, T0 + (minute + i) * MIN, 21.0, 60.0, 800.0, 0) for i in range(10)
                for d in ("d1", "d2")]  # fmt: skip
        detect(table_from_rows(rows), RULES, f"f{minute}", state=session, now_ms=NOW_MS)
    assert items(state, "jump") == {}  # nothing written before the flush
    assert session.flush() == []
    versions = [version for _key, _body, version in state.scan("jump")]
    assert versions == [1, 1]


def test_settle_merges_a_device_another_writer_saved_meanwhile():
    """d1: the session holds 20 @ 0..4; another writer saves 30 @ 5 meanwhile; the session
    then has 20 @ 6. Settling judges the session's window against the other writer's: 20 -> 30
    was that writer's jump, 30 -> 20 the return; the stored window holds all seven readings."""
    state = store()
    session = jumps.Session(state, NOW_MS)
    first = table_from_rows([("gh-1", "d1", T0 + m * MIN, 20.0, 60.0, 800.0, 0) for m in range(5)])
    detect(first, RULES, "mine-1", state=session, now_ms=NOW_MS)
    other = table_from_rows([("gh-1", "d1", T0 + 5 * MIN, 30.0, 60.0, 800.0, 0)])
    assert spike_rows(detect(other, RULES, "theirs", state=state, now_ms=NOW_MS)) == []
    late = table_from_rows([("gh-1", "d1", T0 + 6 * MIN, 20.0, 60.0, 800.0, 0)])
    assert spike_rows(detect(late, RULES, "mine-2", state=session, now_ms=NOW_MS)) == []
    merged = session.settle(RULES.jump_per_minute, "mine-merged")
    # In time order 20 (x5), 30, 20: the jump is 30 @ 5 (its file saw no predecessor).
    assert [(m, t["temperature"].to_pylist()) for m, t in merged] == [("temperature", [30.0])]
    ((body, version),) = state.load([("gh-1", "d1", "jump")]).values()
    assert [r[1] for r in body["rows"]] == [20.0] * 5 + [30.0, 20.0]
    assert version == 2


def anomalies(device, minute, error_code=0, temperature=21.0):
    table = table_from_rows(
        [("gh-1", device, T0 + minute * MIN, temperature, 60.0, 800.0, error_code)]
    )
    return table, detect(table, RULES, f"f-{device}-{minute}")


def test_an_incident_session_gives_the_events_and_items_of_observe_per_file():
    rng = random.Random(7)
    files = []
    for minute in range(0, 400, 3):  # stuck, healthy, out of band, a silent stretch, back
        device = rng.choice(["d1", "d2", "d3"])
        error = 1 if 30 <= minute < 200 and device == "d1" else 0
        temperature = 45.0 if 250 <= minute < 300 else 21.0
        files.append((device, minute, error, temperature))
    per_file, session_store = store(), store()
    session = incidents.Session(session_store, POLICY, CENTRE)
    expected = []
    for device, minute, error, temperature in files:
        table, spikes = anomalies(device, minute, error, temperature)
        source, now = f"f-{device}-{minute}", T0 + minute * MIN + 30_000
        events = incidents.observe(spikes, table, POLICY, per_file, source, now, CENTRE)
        expected.append((source, now, spikes.num_rows, events))
        session.observe(spikes, table, source, now)
    got = session.flush()
    assert got == expected
    assert sum(len(e) for *_, e in got) >= 6  # opened, reminders, resolved really happened
    assert items(session_store, "alerts") == items(per_file, "alerts")


def test_an_incident_session_reapplies_its_files_to_a_device_changed_meanwhile():
    """Another writer opens d1's incident while the session holds d1: the session's files are
    applied again on top of it, as if observed after that writer (the incident is not opened
    twice); the outcome equals observe() per file in that order."""
    session_store, reference = store(), store()
    session = incidents.Session(session_store, POLICY, CENTRE)
    mine = [anomalies("d1", m, error_code=1) for m in (1, 2)]
    for m, (table, spikes) in zip((1, 2), mine, strict=True):
        session.observe(spikes, table, f"mine-{m}", T0 + m * MIN)
    table, spikes = anomalies("d1", 0, error_code=1)
    for state in (session_store, reference):
        opened = incidents.observe(spikes, table, POLICY, state, "theirs", T0, CENTRE)
        assert [e.kind for e in opened] == ["opened"]
    expected = [
        incidents.observe(s, t, POLICY, reference, f"mine-{m}", T0 + m * MIN, CENTRE)
        for m, (t, s) in zip((1, 2), mine, strict=True)
    ]
    got = session.flush()
    assert [events for *_, events in got] == expected == [[], []]
    assert items(session_store, "alerts") == items(reference, "alerts")
    ((body, version),) = session_store.load([("gh-1", "d1", "alerts")]).values()
    assert body["open"]["sensor_error/error_code"]["total"] == 3 and version == 2


# -- the local target: an ingest's chunks in one run vs. one run per chunk -----------------------


def ndjson(rows):
    lines = [
        f'{{"greenhouse_id":"gh-{g}","device_id":"dev-{d}","timestamp":{ts},'
        f'"temperature":{t},"humidity":60.0,"co2":800.0,"error_code":{e}}}'
        for g, d, ts, t, e in rows
    ]
    return ("\n".join(lines) + "\n").encode()


def stored_spikes(target):
    import pyarrow.parquet as pq

    files = sorted((target.home / "spike-log-bucket").rglob("*.parquet"))
    table = pa.concat_tables([pq.read_table(f) for f in files])
    columns = ["greenhouse_id", "device_id", "timestamp", "rule", "metric"]
    return sorted(zip(*(table[c].to_pylist() for c in columns), strict=True))


def logged_events(target):
    rows = target.db.execute(
        "SELECT greenhouse_id, device_id, rule, metric, event, anomalies, worst, at_ms "
        "FROM alert_log"
    ).fetchall()
    return sorted(rows)


def test_an_ingest_in_chunks_finds_what_one_file_per_hour_finds(tmp_path):
    """2 greenhouses x 2 devices, 6 h of minutes with jumps, returns, a stuck sensor and an
    out-of-band spell, read in chunks of 250 lines (an hour is 240): one run over the chunks
    (state in memory, saved once; a chunk's newest hour waits for the next chunk) writes one
    file per hour and gives the spikes, incident events and stored items of ingesting each hour
    as a file of its own (state saved after each)."""
    rng = random.Random(3)
    rows = []
    for minute in range(360):
        for g in (1, 2):
            for d in (1, 2):
                t = 21.0 + rng.choice([0.0, 0.0, 0.0, 0.5, 10.0])
                e = 1 if (g, d) == (1, 1) and 100 <= minute < 160 else 0
                t = 45.0 if (g, d) == (2, 2) and 200 <= minute < 230 else t
                rows.append((g, d, T0 + minute * MIN, t, e))
    clock = [(T0 + 7 * 3_600_000) / 1000]
    chunked = LocalTarget(tmp_path / "chunked", clock=lambda: clock[0])
    chunks = [ndjson_chunk(ndjson(rows[i : i + 250]), i) for i in range(0, len(rows), 250)]
    result = chunked.ingest_batches(iter(chunks))
    assert (result.accepted, result.duplicates) == (len(rows), 0)
    per_hour = LocalTarget(tmp_path / "per-hour", clock=lambda: clock[0])
    for i in range(0, len(rows), 240):
        per_hour.ingest_batches(iter([ndjson_chunk(ndjson(rows[i : i + 240]), i)]))
    files = sorted((tmp_path / "chunked" / "sensor-log-bucket").rglob("*.parquet"))
    assert len(files) == 6 and all(f.name.startswith("ingest-") for f in files)  # not compacted
    assert stored_spikes(chunked) == stored_spikes(per_hour)
    kinds = {rule for _g, _d, _t, rule, _m in stored_spikes(chunked)}
    assert kinds == {"jump", "sensor_error", "out_of_band"}
    assert len({(g, d) for g, d, *_ in stored_spikes(chunked)}) == 4
    assert logged_events(chunked) == logged_events(per_hour)
    assert {e[4] for e in logged_events(chunked)} == {"opened", "resolved"}
    for kind in ("jump", "alerts"):
        mine, theirs = items(chunked.state, kind), items(per_hour.state, kind)
        for body in (*mine.values(), *theirs.values()):
            if kind == "alerts":  # digests of the files, whose names are random: the rest agrees
                body["sources"] = len(body.pop("sources"))
                body["events"] = sorted(map(str, body["events"].values()))
            else:  # jump marks name the files that reported them: which readings agrees
                body["emitted"] = {ts: sorted(m) for ts, m in body["emitted"].items()}
        assert mine == theirs


def test_an_ingest_holding_back_an_hour_still_drops_duplicates_across_chunks(tmp_path):
    """A reading repeated in the next chunk while its hour is held back is still one reading,
    and re-ingesting the whole input adds nothing."""
    rows = [(1, 1, T0 + m * MIN, 21.0, 0) for m in range(90)]
    first, second = ndjson(rows[:70]), ndjson(rows[65:])  # minutes 65-69 in both chunks
    target = LocalTarget(tmp_path / "home", clock=lambda: (T0 + 3 * 3_600_000) / 1000)
    chunks = [ndjson_chunk(first, 0), ndjson_chunk(second, 70)]
    result = target.ingest_batches(iter(chunks))
    assert (result.accepted, result.duplicates, result.differed) == (90, 5, 0)
    again = target.ingest_batches(iter([ndjson_chunk(first, 0), ndjson_chunk(second, 70)]))
    assert (again.accepted, again.duplicates) == (0, 95)
    (count,) = target.query("SELECT count(*) FROM readings").rows[0]
    assert count == 90


def test_backfilled_spikes_are_one_object_per_day_naming_their_hour_files(tmp_path):
    """A backfill judges a day at a time in one run: the spikes are those of the generated
    table judged whole (in-order readings: any split gives the same jumps), kept in one object
    per day, every row naming the hour file that holds its reading; a re-run adds nothing."""
    import pyarrow.parquet as pq

    from smartfarm_cli.core import generator

    end = datetime(2026, 11, 28, 0, 0, tzinfo=UTC)
    target = LocalTarget(tmp_path / "home")
    kwargs = dict(greenhouses=3, devices=2, interval_s=60, anomaly_rate=0.01, seed=4, end=end)
    report, _ = target.backfill(2, **kwargs)
    objects = sorted((tmp_path / "home" / "spike-log-bucket").rglob("*.parquet"))
    assert len(objects) == 2 and report.spike_files == [
        str(p.relative_to(tmp_path / "home" / "spike-log-bucket")) for p in objects
    ]
    stored = pa.concat_tables([pq.read_table(p) for p in objects])
    days = list(generator.history(int(end.timestamp() * 1000), 2, 60, 3, 2, 0.01, 4))
    expected = detect(pa.concat_tables([table for table, *_ in days]), RULES, "x")
    assert spike_rows(
        stored.drop_columns(["source_key"]).append_column(
            "source_key", pa.repeat(pa.scalar("x"), stored.num_rows)
        )
    ) == spike_rows(expected)
    assert {r for r in stored["rule"].to_pylist()} == {"jump", "sensor_error", "impossible",
                                                       "out_of_band"}  # fmt: skip
    for key, ts in zip(
        stored["source_key"].to_pylist(), stored["timestamp"].to_pylist(), strict=True
    ):
        assert f"hour={ts:%H}/" in key and (tmp_path / "home" / "sensor-log-bucket" / key).exists()
    again, _ = target.backfill(2, **kwargs)
    assert again.spikes == 0 and again.already_stored == report.readings
    assert sorted((tmp_path / "home" / "spike-log-bucket").rglob("*.parquet")) == objects


def test_jump_order_is_by_greenhouse_then_device_and_rows_without_ids_have_no_neighbour():
    """The rule sorts ranked id codes, not strings: gh-1/gh-10/gh-2 and d-1/d-10 keep their own
    sequences, and a row missing an id (an odd Parquet file) is never judged against another."""
    rows = []
    for g, d in (("gh-10", "d-1"), ("gh-1", "d-10"), ("gh-2", "d-1"), ("gh-1", "d-1")):
        rows += [(g, d, T0, 20.0), (g, d, T0 + MIN, 20.5), (g, d, T0 + 2 * MIN, 30.0)]
    rows += [(None, None, T0, 20.0), (None, None, T0 + MIN, 40.0), ("gh-1", None, T0, 20.0),
             ("gh-1", None, T0 + MIN, 40.0)]  # fmt: skip
    table = pa.table(
        {
            "greenhouse_id": [r[0] for r in rows],
            "device_id": [r[1] for r in rows],
            "timestamp": pa.array([r[2] for r in rows], pa.timestamp("ms")),
            "temperature": [r[3] for r in rows],
            "humidity": [60.0] * len(rows),
            "co2": [800.0] * len(rows),
            "error_code": pa.array([0] * len(rows), pa.int32()),
        }
    )
    spikes = detect(table, RULES, "odd")
    jumps_found = [
        (g, d, t) for g, d, t in zip(
            spikes["greenhouse_id"].to_pylist(), spikes["device_id"].to_pylist(),
            spikes["temperature"].to_pylist(), strict=True,
        )
    ]  # fmt: skip
    assert sorted(jumps_found) == [
        ("gh-1", "d-1", 30.0), ("gh-1", "d-10", 30.0), ("gh-10", "d-1", 30.0),
        ("gh-2", "d-1", 30.0),
    ]  # fmt: skip


def marks(spikes):
    columns = (spikes["timestamp"].to_pylist(), spikes["synthetic"].to_pylist())
    return sorted(zip(*columns, strict=True))


def test_a_session_keeps_synthetic_readings_in_their_own_windows_like_judge():
    """A simulated gh-1/d1 beside the real one: each kind is judged against its own window
    (`jump` and `jump#synthetic` items) in a run exactly as file by file."""
    rng = random.Random(11)
    files = []
    for start in range(0, 120, 10):
        rows = [("gh-1", "d1", T0 + m * MIN, rng.choice([20.0, 20.5, 30.0]), 60.0, 800.0, 0)
                for m in range(start, start + 10)]  # fmt: skip
        table = table_from_rows(rows)
        flags = pa.array([rng.random() < 0.5 for _ in rows])
        files.append(
            table.set_column(table.schema.get_field_index("synthetic"), "synthetic", flags)
        )
    per_file, session_store = store(), store()
    session = jumps.Session(session_store, NOW_MS)
    found = []
    for i, table in enumerate(files):
        expected = detect(table, RULES, f"f{i}", state=per_file, now_ms=NOW_MS)
        got = detect(table, RULES, f"f{i}", state=session, now_ms=NOW_MS)
        assert spike_rows(got) == spike_rows(expected) and marks(got) == marks(expected)
        found += marks(got)
    assert {flag for _, flag in found} == {True, False}
    assert session.settle(RULES.jump_per_minute, "run-merged") == []
    for kind in ("jump", "jump#synthetic"):
        assert items(session_store, kind) == items(per_file, kind) != {}
