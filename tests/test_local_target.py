import subprocess
import sys
import textwrap
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from smartfarm_cli.core.queries import QueryError
from smartfarm_cli.targets.local import LocalTarget


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def reading(ts, temperature=21.0, greenhouse="gh-1", device="d1", error_code=0):
    return {
        "greenhouse_id": greenhouse,
        "device_id": device,
        "timestamp": ts,
        "temperature": temperature,
        "humidity": 60,
        "co2": 800,
        "error_code": error_code,
    }


def lake_rows(target):
    return pq.read_table(target.logs.path("logs")).to_pylist() if target.logs.keys("logs") else []


def test_ingest_keeps_good_neighbours_and_stores_rejections(target):
    now = datetime.now(UTC)
    items = [
        reading(iso(now)),
        {"greenhouse_id": "gh-1"},
        reading(iso(now), temperature="warm"),
        reading(iso(now), device="d2"),
    ]
    result = target.ingest(items)
    assert result.accepted == 2
    assert [r.index for r in result.rejected] == [1, 2]
    target.deliver(force=True)
    assert sorted(r["device_id"] for r in lake_rows(target)) == ["d1", "d2"]
    listed = target.rejected().records()
    assert [r["reason"] for r in listed] == [
        "temperature must be a number, got 'warm'",
        "missing field(s): device_id, timestamp, temperature, humidity, co2, error_code",
    ]
    assert '"warm"' in listed[0]["raw"]


def test_reading_from_six_days_ago_lands_in_its_own_partition(target):
    old = datetime.now(UTC) - timedelta(days=6)
    target.ingest([reading(iso(old)), reading(iso(datetime.now(UTC)))], deliver=False)
    report = target.deliver(force=True)
    expected = f"logs/year={old:%Y}/month={old:%m}/day={old:%d}/hour={old:%H}/"
    assert any(key.startswith(expected) for key in report.files)
    [old_file] = [k for k in report.files if k.startswith(expected)]
    assert pq.read_table(target.logs.path(old_file)).num_rows == 1


def test_delivery_waits_for_size_or_age(tmp_path):
    target = LocalTarget(tmp_path / "h", flush_rows=3, flush_age_s=0.5)
    now = iso(datetime.now(UTC))
    target.ingest([reading(now), reading(now, device="d2")], deliver=False)
    assert target.deliver().files == [] and target.pending() == 2
    target.ingest([reading(now, device="d3")], deliver=False)
    assert target.deliver().readings == 3  # size threshold reached
    target.ingest([reading(now, device="d4")], deliver=False)
    assert target.deliver().readings == 0
    time.sleep(0.6)
    assert target.deliver().readings == 1  # age threshold reached
    assert target.pending() == 0 and len(lake_rows(target)) == 4


def test_repeated_delivery_never_duplicates(target):
    now = iso(datetime.now(UTC))
    target.ingest([reading(now, device=f"d{i}") for i in range(5)])
    target.deliver(force=True)
    target.deliver(force=True)
    assert len(lake_rows(target)) == 5


def test_crash_between_file_write_and_checkpoint_loses_and_duplicates_nothing(tmp_path):
    home = tmp_path / "h"
    now = datetime.now(UTC)
    crashing = LocalTarget(home)
    # Two hours in one batch -> two files; crash after the first file is durable.
    crashing.ingest(
        [reading(iso(now - timedelta(hours=1)), device=f"a{i}") for i in range(3)]
        + [reading(iso(now), device=f"b{i}") for i in range(4)],
        deliver=False,
    )
    original = crashing.store_spikes
    calls = []

    def crash_after_first(key, spikes, alerts=True, durable=True, readings=None):
        calls.append(key)
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated crash")
        return original(key, spikes, alerts, durable, readings)

    crashing.store_spikes = crash_after_first
    with pytest.raises(KeyboardInterrupt):
        crashing.deliver(force=True)
    crashing.close()

    restarted = LocalTarget(home)
    assert restarted.status()["interrupted_delivery"] is True
    # New readings arrived in the meantime; the redo must still cover exactly the old range.
    restarted.ingest([reading(iso(now), device="late")], deliver=False)
    restarted.deliver(force=True)
    rows = lake_rows(restarted)
    assert sorted(r["device_id"] for r in rows) == [
        "a0",
        "a1",
        "a2",
        "b0",
        "b1",
        "b2",
        "b3",
        "late",
    ]
    assert restarted.pending() == 0


def test_spikes_are_stored_and_alert_hook_called_once_per_file(target):
    seen = []
    target.alert_hook = lambda key, message, count: (
        seen.append((key, count, message)) or type("Outcome", (), {"status": "delivered"})
    )
    now = iso(datetime.now(UTC))
    target.ingest(
        [
            reading(now, temperature="400"),
            reading(now, device="d2", error_code="1"),
            reading(now, device="d3"),
        ]
    )
    target.deliver(force=True)
    result = target.spikes("1h").records()
    assert sorted((r["device_id"], r["rule"], r["severity"]) for r in result) == [
        ("d1", "impossible", "critical"),
        ("d2", "sensor_error", "critical"),
    ]
    assert len(seen) == 1 and seen[0][1] == 2  # one message for the file, two anomalies
    assert result[0]["source_key"] == seen[0][0]
    assert [e["title"] for e in seen[0][2]["embeds"]] == [
        "🔴 opened: impossible (temperature)",
        "🔴 opened: sensor_error (error_code)",
    ]


def test_trend_equals_hand_computation(target):
    now = (datetime.now(UTC) - timedelta(hours=1)).replace(minute=30, second=0, microsecond=0)
    expected_rows, items = [], []
    for hours_ago in range(0, 30):
        for minute in (0, 10, 20):
            ts = now - timedelta(hours=hours_ago, minutes=minute)
            for gh in ("gh-1", "gh-2"):
                temp = round(15 + hours_ago * 0.37 + minute * 0.05 + (gh == "gh-2") * 3, 2)
                items.append(reading(iso(ts), temperature=temp, greenhouse=gh))
                expected_rows.append((ts, gh, temp))
    # Excluded from the trend: sensor errors and physically impossible values.
    items.append(reading(iso(now), temperature=22, error_code=2))
    items.append(reading(iso(now), temperature=400))
    target.ingest(items)
    target.deliver(force=True)
    since = datetime.now(UTC) - timedelta(days=1)  # the window trend() will use
    result = target.trend("temperature", days=1, every="1h")
    values = defaultdict(list)
    for ts, gh, temp in expected_rows:
        if ts >= since:
            values[(ts.replace(minute=0).astimezone(UTC), gh)].append(temp)
    got = {
        (r["bucket"], r["greenhouse_id"]): (r["avg"], r["min"], r["max"], r["readings"])
        for r in result.records()
    }
    expected = {k: (round(sum(v) / len(v), 2), min(v), max(v), len(v)) for k, v in values.items()}
    assert got == expected
    only = target.trend("temperature", days=1, every="1h", greenhouse="gh-2").records()
    assert {r["greenhouse_id"] for r in only} == {"gh-2"}


def test_trend_every_15_minutes_buckets(target):
    base = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    base = base.replace(minute=0)
    target.ingest(
        [reading(iso(base + timedelta(minutes=m)), temperature=m) for m in (1, 14, 16, 44)]
    )
    target.deliver(force=True)
    rows = target.trend("temperature", days=1, every="15m").records()
    assert [(r["bucket"].minute, r["avg"]) for r in rows] == [(0, 7.5), (15, 16.0), (30, 44.0)]


def test_queries_on_an_empty_lake_return_no_rows(target):
    assert target.trend("co2", days=7).rows == []
    assert target.spikes("7d").rows == []
    assert target.query("SELECT count(*) FROM readings").rows == [(0,)]


@pytest.mark.parametrize("sql", ["SELEC 1", "SELECT nope FROM readings", "SELECT 1; SELECT 2"])
def test_bad_sql_is_a_clear_query_error(target, sql):
    with pytest.raises(QueryError):
        target.query(sql)


def test_athena_functions_translate(target):
    target.ingest(
        [
            reading("2026-11-28T10:15:00Z", temperature=20),
            reading("2026-11-28T10:45:00Z", temperature=24),
        ]
    )
    target.deliver(force=True)
    rows = target.query(
        "SELECT date_format(date_trunc('hour', \"timestamp\"), '%Y-%m-%d %H:%i'), "
        'max_by(temperature, "timestamp"), count_if(temperature > 21), '
        "approx_percentile(temperature, 0.5) FROM readings GROUP BY 1"
    ).rows
    assert rows[0][:3] == ("2026-11-28 10:00", 24.0, 1)


def test_backfill_is_vectorised_history_and_rerun_adds_nothing(target):
    end = datetime(2026, 11, 28, 12, 7, tzinfo=UTC)
    progress = []
    report, bad = target.backfill(
        2,
        greenhouses=3,
        devices=2,
        interval_s=300,
        end=end,
        progress=lambda done, total: progress.append((done, total)),
    )
    assert bad == 0 and report.readings == 2 * 288 * 6 and report.already_stored == 0
    assert progress[-1] == (576, 576)
    assert target.query("SELECT count(*) FROM readings").rows == [(3456,)]
    files = sorted(target.logs.keys("logs"))
    again, _ = target.backfill(2, greenhouses=3, devices=2, interval_s=300, end=end)
    assert (again.readings, again.files, again.already_stored) == (0, [], 3456)
    assert sorted(target.logs.keys("logs")) == files
    assert target.query('SELECT count(*), count(DISTINCT "timestamp") FROM readings').rows == [
        (3456, 576)
    ]


def test_a_second_backfill_never_removes_readings(target):
    """The walkthrough's case: 2 days x 5 greenhouses, then 1 day x 1 greenhouse, seed 5."""
    end = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    first, _ = target.backfill(2, greenhouses=5, devices=1, interval_s=60, end=end)
    assert first.readings == 14_400
    spikes_before = target.query("SELECT count(*) FROM spikes").rows[0][0]
    later = datetime(2026, 11, 28, 12, 42, tzinfo=UTC)  # overlaps, and 42 new minutes
    second, _ = target.backfill(1, greenhouses=1, devices=1, interval_s=60, seed=5, end=later)
    # gh-1/dev-1 already has every minute up to 12:00: only the 42 minutes after it are new.
    assert (second.readings, second.already_stored) == (42, 1440 - 42)
    rows = target.query(
        'SELECT count(*), count(DISTINCT (greenhouse_id, device_id, "timestamp")) FROM readings'
    ).rows
    assert rows == [(14_442, 14_442)]
    # every spike still points at a file that exists and holds the reading it describes
    assert target.query("SELECT count(*) FROM spikes").rows[0][0] >= spikes_before
    orphans = target.query(
        "SELECT count(*) FROM spikes s LEFT JOIN readings r ON s.greenhouse_id = r.greenhouse_id "
        'AND s.device_id = r.device_id AND s."timestamp" = r."timestamp" '
        "WHERE r.device_id IS NULL"
    ).rows
    assert orphans == [(0,)]


def test_backfill_keeps_readings_delivered_from_the_stream(target):
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    reading = {
        "greenhouse_id": "gh-1",
        "device_id": "dev-1",
        "timestamp": (now - timedelta(minutes=30)).isoformat(),
        "temperature": 99.5,  # not what the generator would say
        "humidity": 50,
        "co2": 700,
        "error_code": 0,
    }
    target.ingest([reading])
    report, _ = target.backfill(0.1, greenhouses=1, devices=1, interval_s=60, end=now)
    assert report.already_stored == 1
    rows = target.query(
        "SELECT temperature FROM readings WHERE greenhouse_id = 'gh-1' AND device_id = 'dev-1' "
        f"AND \"timestamp\" = TIMESTAMP '{(now - timedelta(minutes=30)):%Y-%m-%d %H:%M:%S}'"
    ).rows
    assert rows == [(99.5,)]


WRITER = textwrap.dedent("""
    import sys, time
    from datetime import UTC, datetime
    from smartfarm_cli.targets.local import LocalTarget
    t = LocalTarget(sys.argv[1])
    for batch in range(int(sys.argv[2])):
        now = datetime.now(UTC).isoformat()
        t.ingest([{"greenhouse_id": "gh-1", "device_id": f"d{i}", "timestamp": now,
                   "temperature": 20, "humidity": 50, "co2": 700, "error_code": 0}
                  for i in range(10)])
        time.sleep(0.01)
""")


def test_writer_and_reader_processes_share_one_stream(tmp_path):
    home = tmp_path / "shared"
    assert LocalTarget(home).pending() == 0  # creates the stream: the reader starts empty
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(home), "100"], stderr=subprocess.PIPE, text=True
    )
    reader = LocalTarget(home)
    seen = 0
    deadline = datetime.now() + timedelta(seconds=60)
    for batch in reader.follow(poll_s=0.01, backlog=0):
        seen += batch.num_rows
        if seen >= 1000 or datetime.now() > deadline:
            break
    _, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err
    assert "locked" not in err
    assert seen == 1000


def test_simulate_judges_every_reading_and_stamps_each_send(target, monkeypatch):
    """The value rules run once over all generated readings; a refused one is kept with its
    reason and its send goes out without it; every send carries its own, later stamp."""
    from smartfarm_cli.core import generator

    real = generator.generate

    def with_a_bad_id(*args, **kw):
        generated = real(*args, **kw)
        ids = generated.table["greenhouse_id"].to_pylist()
        ids[4] = "gh 2!"  # the third send's first reading (2 per send)
        column = pa.array(ids, pa.string())
        return generator.Generated(
            generated.table.set_column(0, "greenhouse_id", column), generated.injected
        )

    monkeypatch.setattr(generator, "generate", with_a_bad_id)
    before_ms = int(time.time() * 1000)
    report = target.simulate(count=5, interval_s=0, greenhouses=2, seed=1)
    assert (report.readings, report.accepted, report.rejected) == (10, 9, 1)
    assert [r["source"] for r in target.rejected().records()] == ["simulate"]
    assert "greenhouse_id must be" in target.rejected().records()[0]["reason"]
    rows = target.db.execute("SELECT greenhouse_id, ts_ms FROM stream ORDER BY seq").fetchall()
    stamps = [ts for _, ts in rows]
    assert len(rows) == 9 and stamps[0] >= before_ms
    # Sends of 2, 2, 1, 2, 2 readings, each send one stamp, strictly later than the last.
    sends = sorted(set(stamps))
    assert [stamps.count(s) for s in sends] == [2, 2, 1, 2, 2]
    assert rows[4][0] == "gh-2"  # the refused reading's neighbour went out in its send
