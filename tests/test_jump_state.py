"""`jump` across deliveries: per-device state, hand-computed expectations (issue 15, bugs 2-3).

Limits (rules.toml): temperature 3 °C/min. Readings one minute apart unless stated.
"""

import sqlite3
import threading
from datetime import UTC, datetime, timedelta

import boto3
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from moto import mock_aws

from smartfarm_cli.core import jumps
from smartfarm_cli.core.rules import detect, load_rules
from smartfarm_cli.core.state import DynamoStateStore, SqliteStateStore
from smartfarm_cli.core.validate import table_from_rows

T0 = datetime(2026, 11, 28, 10, tzinfo=UTC)
RULES = load_rules()
NOW_MS = int((T0 + timedelta(days=1)).timestamp() * 1000)


def rows(values, start_min=0, device="d1", step_min=1.0):
    out = []
    for i, temp in enumerate(values):
        ts = int((T0 + timedelta(minutes=start_min + i * step_min)).timestamp() * 1000)
        out.append(("gh-1", device, ts, temp, 60.0, 800.0, 0))
    return table_from_rows(out)


def at(minute_values, device="d1"):
    """{minute: temperature} -> table."""
    out = []
    for minute, temp in sorted(minute_values.items()):
        ts = int((T0 + timedelta(minutes=minute)).timestamp() * 1000)
        out.append(("gh-1", device, ts, temp, 60.0, 800.0, 0))
    return table_from_rows(out)


def jumps_of(spikes):
    jump = spikes.filter(pc.equal(spikes["rule"], "jump"))
    minutes = [
        round((t.replace(tzinfo=UTC) - T0).total_seconds() / 60)
        for t in jump["timestamp"].to_pylist()
    ]
    return sorted(
        zip(jump["device_id"].to_pylist(), minutes, jump["temperature"].to_pylist(), strict=True)
    )


def sqlite_store():
    return SqliteStateStore(sqlite3.connect(":memory:", isolation_level=None))


def judge(table, store, source):
    return detect(table, RULES, source, state=store, now_ms=NOW_MS)


# -- bug 3: a return to the level before a jump is not a jump, also later ------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([20, 30, 30, 20], [(1, 30)]),  # the case: 1 jump, not 2
        ([20, 30, 30, 30, 30, 21], [(1, 30)]),  # |21 - 20| = 1 <= 3: still the return
        ([20, 30, 30, 25], [(1, 30), (3, 25)]),  # |25 - 20| = 5 > 3: a new jump
        ([20, 30, 40, 30], [(1, 30), (2, 40)]),  # 40 - 30 jump (base 30); back to 30: return
        ([20, 30, 20, 30], [(1, 30), (3, 30)]),  # return closes the base; the next rise jumps
        ([20, 20.2, 32, 20.4, 20.3], [(2, 32)]),
    ],
)
def test_return_to_the_level_before_a_jump(values, expected):
    spikes = detect(rows(values), RULES)
    assert [(m, t) for _, m, t in jumps_of(spikes)] == expected


# -- bug 2: state across deliveries --------------------------------------------------------------


def test_jump_across_two_files_is_found_once():
    store = sqlite_store()
    assert jumps_of(judge(rows([20]), store, "file-1")) == []
    # 20 @ 0 min then 30 @ 1 min: 10 °C/min > 3
    assert jumps_of(judge(rows([30], start_min=1), store, "file-2")) == [("d1", 1, 30.0)]
    # The return in a third file: not a second jump, the base crossed the file boundary too.
    assert jumps_of(judge(rows([30, 20], start_min=2), store, "file-3")) == []


def test_late_reading_between_two_earlier_ones():
    store = sqlite_store()
    assert jumps_of(judge(at({0: 20, 2: 20}), store, "a")) == []  # 0 °C over 2 min
    # 30 @ 1 min arrives late: 20 -> 30 is a jump, 30 -> 20 the return: 1 jump, as in order.
    assert jumps_of(judge(at({1: 30}), store, "b")) == [("d1", 1, 30.0)]
    assert jumps_of(detect(at({0: 20, 1: 30, 2: 20}), RULES)) == [("d1", 1, 30.0)]


def test_late_reading_makes_a_stored_reading_a_jump():
    store = sqlite_store()
    # 20 @ 0 and 26 @ 2: 3 °C/min, not a jump.
    assert jumps_of(judge(at({0: 20, 2: 26}), store, "a")) == []
    # 26 @ 1 arrives: 20 -> 26 in 1 min is the jump; 26 -> 26 nothing. In order: the same.
    assert jumps_of(judge(at({1: 26}), store, "b")) == [("d1", 1, 26.0)]
    assert jumps_of(detect(at({0: 20, 1: 26, 2: 26}), RULES)) == [("d1", 1, 26.0)]
    # 32 @ 3 arrives: 26 -> 32 in 1 min is a jump (base 26).
    assert jumps_of(judge(at({3: 32}), store, "c")) == [("d1", 3, 32.0)]


def test_replayed_readings_add_no_spike_and_same_source_repeats_its_own():
    store = sqlite_store()
    first = jumps_of(judge(at({0: 20, 1: 30, 2: 31}), store, "a"))
    assert first == [("d1", 1, 30.0)]
    # The same readings in another file (a re-sent batch): nothing new.
    assert jumps_of(judge(at({0: 20, 1: 30, 2: 31}), store, "b")) == []
    # The same file processed again (a duplicate S3 event, a redone delivery): the same spikes.
    assert jumps_of(judge(at({0: 20, 1: 30, 2: 31}), store, "a")) == first


def test_devices_are_independent_and_files_can_mix_them():
    store = sqlite_store()
    judge(pa_concat(at({0: 20}, "d1"), at({0: 50}, "d2")), store, "a")
    spikes = judge(pa_concat(at({1: 20.5}, "d1"), at({1: 40}, "d2")), store, "b")
    assert jumps_of(spikes) == [("d2", 1, 40.0)]


def pa_concat(*tables):
    import pyarrow as pa

    return pa.concat_tables(tables)


def test_window_eviction_keeps_judging_and_too_late_readings_stay_apart():
    store = sqlite_store()
    n = jumps.WINDOW + 20
    values = [20.0] * n
    values[n - 5] = 30.0  # one jump, 5 readings before the end
    for start in range(0, n, 7):  # files of 7 readings
        chunk = values[start : start + 7]
        judge(rows(chunk, start_min=start), store, f"f{start}")
    ((body, version),) = store.load([("gh-1", "d1", "jump")]).values()
    assert body["anchor"] is True and len(body["rows"]) == jumps.WINDOW + 1
    assert version == len(range(0, n, 7))
    # A reading far older than the window is too late to meet its neighbours: it is judged only
    # with the other too-late readings of its file (here 20 -> 40 one minute apart: one jump).
    late = judge(at({-10: 20, -9: 40}), store, "late")
    assert jumps_of(late) == [("d1", -9, 40.0)]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.sampled_from([20.0, 21.0, 25.0, 30.0, 31.0]), min_size=1, max_size=40),
    st.lists(st.integers(1, 9), min_size=1, max_size=40),
)
def test_in_order_files_give_exactly_the_spikes_of_one_file(values, cuts):
    whole = jumps_of(detect(rows(values), RULES))
    store, found, start, i = sqlite_store(), [], 0, 0
    while start < len(values):
        size = cuts[i % len(cuts)]
        found += jumps_of(judge(rows(values[start : start + size], start), store, f"f{i}"))
        start, i = start + size, i + 1
    assert sorted(found) == whole


# -- the DynamoDB store: moto, conditional writes, racing writers --------------------------------


@pytest.fixture
def dynamo():
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(
            TableName="state",
            KeySchema=[
                {"AttributeName": "device", "KeyType": "HASH"},
                {"AttributeName": "kind", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "device", "AttributeType": "S"},
                {"AttributeName": "kind", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        yield client


def test_dynamo_store_round_trip_and_conditional_writes(dynamo):
    store = DynamoStateStore(dynamo, "state", clock=lambda: NOW_MS / 1000)
    key = ("gh-1", "d1", "jump")
    assert store.load([key]) == {key: (None, 0)}
    assert store.save([(key, {"a": 1}, 0, NOW_MS + 1000)]) == []
    assert store.load([key]) == {key: ({"a": 1}, 1)}
    # A writer that read version 0 (absent) or a stale version loses.
    assert store.save([(key, {"a": 2}, 0, NOW_MS + 1000)]) == [key]
    assert store.save([(key, {"a": 2}, 5, NOW_MS + 1000)]) == [key]
    assert store.save([(key, {"a": 2}, 1, NOW_MS + 1000)]) == []
    assert store.load([key]) == {key: ({"a": 2}, 2)}
    item = dynamo.get_item(
        TableName="state", Key={"device": {"S": "gh-1/d1"}, "kind": {"S": "jump"}}
    )
    assert item["Item"]["expires_at"] == {"N": str((NOW_MS + 1000) // 1000)}
    # More than one BatchGetItem page (100 keys).
    many = [("gh-2", f"d{i}", "jump") for i in range(150)]
    assert store.save([(k, {"i": i}, 0, NOW_MS + 1000) for i, k in enumerate(many)]) == []
    loaded = store.load(many)
    assert [loaded[k][0]["i"] for k in many] == list(range(150))


def test_dynamo_store_reads_an_expired_item_as_absent(dynamo):
    store = DynamoStateStore(dynamo, "state", clock=lambda: NOW_MS / 1000)
    key = ("gh-1", "d1", "jump")
    store.save([(key, {"a": 1}, 0, NOW_MS - 1000)])
    assert store.load([key]) == {key: (None, 1)}
    assert store.save([(key, {"a": 3}, 1, NOW_MS + 1000)]) == []


class RacingStore:
    """Lets two writers both read a device's state before either writes it."""

    def __init__(self, inner, barrier):
        self.inner, self.barrier, self.loads = inner, barrier, 0

    def load(self, keys):
        found = self.inner.load(keys)
        self.loads += 1
        if self.loads == 1:
            self.barrier.wait(timeout=10)
        return found

    def save(self, writes):
        return self.inner.save(writes)


@pytest.mark.parametrize("store_kind", ["dynamo", "sqlite"])
def test_two_writers_racing_on_one_device_find_the_jump_once(dynamo, tmp_path, store_kind):
    barrier = threading.Barrier(2)
    if store_kind == "dynamo":
        make = lambda: DynamoStateStore(dynamo, "state")  # noqa: E731
    else:
        path = tmp_path / "state.db"
        make = lambda: SqliteStateStore(  # noqa: E731
            sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        )
    stores = [RacingStore(make(), barrier), RacingStore(make(), barrier)]
    files = [at({0: 20, 2: 20}), at({1: 30, 3: 30.5})]
    results = [None, None]

    def run(i):
        results[i] = jumps_of(judge(files[i], stores[i], f"file-{i}"))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    # In time order: 20, 30, 20, 30.5 -> jumps at 1 (30) and 3 (30.5); 2 is the return.
    assert sorted(results[0] + results[1]) == [("d1", 1, 30.0), ("d1", 3, 30.5)]
    assert sum(s.loads for s in stores) == 3  # both read, one lost the write and read again
    ((body, version),) = make().load([("gh-1", "d1", "jump")]).values()
    assert version == 2 and [r[0] for r in body["rows"]] == sorted(
        int((T0 + timedelta(minutes=m)).timestamp() * 1000) for m in range(4)
    )


# -- through the local target: two ingests are two deliveries -------------------------------------


def test_local_ingest_finds_a_jump_across_deliveries_and_a_late_return(target):
    t0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=30)

    def reading(minute, temp):
        return {
            "greenhouse_id": "gh-1",
            "device_id": "d1",
            "timestamp": (t0 + timedelta(minutes=minute)).isoformat(),
            "temperature": temp,
            "humidity": 60,
            "co2": 800,
            "error_code": 0,
        }

    target.ingest([reading(0, 20)])
    target.ingest([reading(1, 30)])  # 10 °C in a minute, in the next delivery
    target.ingest([reading(3, 20), reading(2, 30)])  # out of order; 20 is the return
    target.ingest([reading(1, 30), reading(0, 20)])  # re-sent: already stored, nothing new
    spikes = target.spikes("1h").records()
    assert [(s["rule"], s["temperature"]) for s in spikes] == [("jump", 30.0)]
    assert spikes[0]["timestamp"] == (t0 + timedelta(minutes=1)).replace(tzinfo=None)


def test_vectorised_rule_equals_the_row_by_row_baseline():
    """bench/baselines.py states the rule as a plain loop; both must find the same spikes."""
    import sys
    from pathlib import Path

    from smartfarm_cli.core.generator import generate

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from baselines import rules_row_by_row

    table = generate(NOW_MS, 3_000, 60, 4, 2, anomaly_rate=0.05, seed=7).table
    spikes = detect(table, RULES)
    ours = sorted(
        zip(
            *(
                spikes[c].to_pylist()
                for c in ("greenhouse_id", "device_id", "timestamp", "rule", "metric")
            ),
            strict=True,
        )
    )
    assert sum(1 for s in ours if s[3] == "jump") > 10
    assert sorted(rules_row_by_row(table.to_pylist(), RULES)) == ours


def test_dynamo_store_scan_lists_live_items_of_one_kind(dynamo):
    store = DynamoStateStore(dynamo, "state", clock=lambda: NOW_MS / 1000)
    writes = [(("gh-1", f"d{i}", "alerts"), {"i": i}, 0, NOW_MS + 1000) for i in range(3)]
    writes.append((("gh-1", "d0", "jump"), {"other": True}, 0, NOW_MS + 1000))
    writes.append((("gh-1", "d9", "alerts"), {"expired": True}, 0, NOW_MS - 1000))
    assert store.save(writes) == []
    assert store.scan("alerts") == [(("gh-1", f"d{i}", "alerts"), {"i": i}, 1) for i in range(3)]


def test_incident_race_through_dynamodb_opens_once(dynamo):
    from smartfarm_cli.core import incidents

    policy = incidents.policy_from(RULES.alerts)
    barrier = threading.Barrier(2)
    stores = [RacingStore(DynamoStateStore(dynamo, "state"), barrier) for _ in range(2)]
    results = [None, None]

    def run(i):
        table = at({i: 20.0})
        spikes = detect(table.set_column(6, "error_code", pa_int32([5])), RULES, f"f{i}")
        results[i] = incidents.observe(spikes, table, policy, stores[i], f"f{i}", NOW_MS)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(e.kind for r in results for e in r) == ["opened"]


def pa_int32(values):
    import pyarrow as pa

    return pa.array(values, pa.int32())


# -- the cheap paths of the rule (issue 12): the same answers as the general ones ---------------


def test_device_codes_ascend_with_the_ids_over_chunks_rows_and_missing_ids():
    import pyarrow as pa

    from smartfarm_cli.core.arrays import device_codes

    table = pa.table(
        {
            "greenhouse_id": pa.chunked_array([["gh-2", "gh-1"], ["gh-1", "gh-2", "gh-1"]]),
            "device_id": pa.chunked_array([["b", "a"], ["a", "a", None]]),
        }
    )
    codes, ids = device_codes(table)
    assert ids == [("gh-1", "a"), ("gh-2", "a"), ("gh-2", "b")]
    assert codes.to_pylist() == [2, 0, 0, 1, None]
    codes, ids = device_codes(table, pa.array([4, 0, 3]))
    assert (codes.to_pylist(), ids) == ([None, 1, 0], [("gh-2", "a"), ("gh-2", "b")])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 6)), min_size=1, max_size=60))
def test_device_time_order_equals_a_stable_sort_by_both_keys(pairs):
    """In time order per device (one sort by the device) or not (both keys): the same order."""
    import pyarrow as pa

    device = pa.array([d for d, _ in pairs], pa.int32())
    stamps = pa.array([t for _, t in pairs], pa.int64())
    stable = sorted(range(len(pairs)), key=lambda i: pairs[i])
    assert jumps._by_device_time(device, stamps).to_pylist() == stable
    ordered = sorted(range(len(pairs)), key=lambda i: pairs[i][1])  # time order per device
    device, stamps = device.take(ordered), stamps.take(ordered)
    stable = sorted(range(len(pairs)), key=lambda i: pairs[ordered[i]])
    assert jumps._by_device_time(device, stamps).to_pylist() == stable


def test_readings_without_an_id_are_judged_apart_and_the_rest_as_usual():
    """A row without a device id (not from our writers) has no window: it is nobody's
    neighbour; the device beside it is judged and saved as always (this used to crash)."""
    import pyarrow as pa

    table = rows([20, 30, 30])
    stray = rows([20, 90])
    stray = stray.set_column(1, "device_id", pa.array([None, None], pa.string()))
    store = sqlite_store()
    assert jumps_of(judge(pa.concat_tables([table, stray]), store, "f1")) == [("d1", 1, 30.0)]
    assert [key for key, _body, _version in store.scan("jump")] == [("gh-1", "d1", "jump")]
    assert jumps_of(judge(rows([40], start_min=3), store, "f2")) == [("d1", 3, 40.0)]


def test_arange_slices_one_cached_range_and_builds_longer_ones(monkeypatch):
    from smartfarm_cli.core import arrays

    monkeypatch.setattr(arrays, "_RANGE", [])
    monkeypatch.setattr(arrays, "_RANGE_CACHED", 8)
    assert arrays.arange(0).to_pylist() == []
    assert arrays.arange(3).to_pylist() == [0, 1, 2]
    assert arrays.arange(5).to_pylist() == [0, 1, 2, 3, 4]
    assert len(arrays._RANGE[0]) == 6  # doubled, not grown by one
    assert arrays.arange(12).to_pylist() == list(range(12))  # past the cache: built alone
    assert len(arrays._RANGE[0]) == 6


def test_arange_keeps_its_length_when_another_thread_replaces_the_cache(monkeypatch):
    from smartfarm_cli.core import arrays

    class Racy(list):
        """A cache that another thread refills with a short range right after each store."""

        def __setitem__(self, index, value):
            super().__setitem__(index, value)
            super().__setitem__(slice(None), [arrays._build_range(1)])

    monkeypatch.setattr(arrays, "_RANGE", Racy([arrays._build_range(2)]))
    assert arrays.arange(6).to_pylist() == list(range(6))
