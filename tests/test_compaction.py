"""Compaction of closed hour partitions, stream retention and the cost of a small send."""

import hashlib
import random
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from smartfarm_cli.core.generator import generate
from smartfarm_cli.targets.local import LocalTarget


def hour_folders(home: Path) -> list[Path]:
    return sorted({p.parent for p in (home / "sensor-log-bucket").rglob("*.parquet")})


def lake(home: Path) -> list[tuple]:
    glob = f"{home}/sensor-log-bucket/logs/*/*/*/*/*.parquet"
    return duckdb.sql(
        f"SELECT greenhouse_id, device_id, epoch_ms(timestamp), temperature, error_code "
        f"FROM read_parquet('{glob}') ORDER BY ALL"
    ).fetchall()


def spike_files(home: Path) -> dict[str, str]:
    return {
        str(p.relative_to(home)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in (home / "spike-log-bucket").rglob("*.parquet")
    }


def readings(start: datetime, steps: int, greenhouses: int = 3, seed: int = 1) -> pa.Table:
    start_ms = int(start.timestamp() * 1000)
    return generate(start_ms, steps, 60, greenhouses, 2, anomaly_rate=0.05, seed=seed).table


def test_closed_hours_end_as_one_file_after_delivery(tmp_path):
    home = tmp_path / "h"
    target = LocalTarget(home, flush_rows=40)
    hour = (datetime.now(UTC) - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    table = readings(hour, 60)  # one closed hour, 360 readings
    for offset in range(0, table.num_rows, 30):  # small sends, a delivery every 40 rows
        target.append(table.slice(offset, 30))
        target.deliver()
    now_rows = readings(datetime.now(UTC) - timedelta(minutes=1), 1)
    target.append(now_rows)
    target.deliver(force=True)
    before = sorted(
        table.to_pylist() + now_rows.to_pylist(), key=lambda r: tuple(map(str, r.values()))
    )
    [closed, current] = hour_folders(home)
    assert next(closed.glob("*.parquet")).name.startswith("compacted-")
    assert len(list(closed.glob("*.parquet"))) == 1
    assert len(list(current.glob("*.parquet"))) == 1  # open hour: left alone
    rows = duckdb.sql(
        f"SELECT * FROM read_parquet('{home}/sensor-log-bucket/logs/*/*/*/*/*.parquet')"
    )
    got = sorted(
        (
            {k: v for k, v in zip(rows.columns, r, strict=True) if k in table.column_names}
            for r in rows.fetchall()
        ),
        key=lambda r: tuple(map(str, r.values())),
    )
    assert [tuple(r.values()) for r in got] == [tuple(r.values()) for r in before]


def test_compaction_leaves_spikes_alone_and_is_idempotent(tmp_path):
    home = tmp_path / "h"
    target = LocalTarget(home, flush_rows=50)
    hour = (datetime.now(UTC) - timedelta(hours=5)).replace(minute=0, second=0, microsecond=0)
    table = readings(hour, 120)  # two closed hours
    for offset in range(0, table.num_rows, 50):
        target.append(table.slice(offset, 50))
        target._deliver(False, compact=False)
    target._deliver(True, compact=False)
    spikes_before, rows_before = spike_files(home), lake(home)
    assert len(spikes_before) > 1 and all(len(list(f.glob("*"))) > 2 for f in hour_folders(home))
    source_keys_before = duckdb.sql(
        f"SELECT DISTINCT source_key FROM '{home}/spike-log-bucket/spikes/*/*/*/*.parquet'"
    ).fetchall()
    assert target.compact() == 2
    assert [len(list(f.glob("*.parquet"))) for f in hour_folders(home)] == [1, 1]
    assert lake(home) == rows_before
    assert spike_files(home) == spikes_before
    # source_key still names the delivery file; its hour partition is where the reading is.
    for (key,) in source_keys_before:
        assert (home / "sensor-log-bucket" / key).parent.is_dir()
    names = [p.name for p in (home / "sensor-log-bucket").rglob("*.parquet")]
    assert target.compact(everything=True) == 0
    assert [p.name for p in (home / "sensor-log-bucket").rglob("*.parquet")] == names
    # A late reading for a compacted hour: one more file, compacted again on delivery.
    late = readings(hour + timedelta(seconds=30), 1, greenhouses=1, seed=9)
    target.append(late)
    target.deliver(force=True)
    assert [len(list(f.glob("*.parquet"))) for f in hour_folders(home)] == [1, 1]
    assert len(lake(home)) == len(rows_before) + late.num_rows


WORKER = textwrap.dedent(
    """
    import sys
    from smartfarm_cli.targets.local import LocalTarget

    target = LocalTarget(sys.argv[1])
    one = target._compact_one

    def announced(prefix):  # tells the test where it is, so the kill lands mid-way
        print("partition", flush=True)
        return one(prefix)

    target._compact_one = announced
    target.compact(everything=True)
    print("done", flush=True)
    """
)


@pytest.fixture(scope="module")
def fragmented_lake(tmp_path_factory) -> tuple[Path, list[tuple]]:
    """30 closed hours, 5 delivery files each (10,800 readings)."""
    home = tmp_path_factory.mktemp("template") / "h"
    target = LocalTarget(home)
    start = (datetime.now(UTC) - timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
    table = readings(start, 30 * 60, greenhouses=3)
    for part in range(5):
        rows = table.filter(
            pa.compute.equal(
                pa.compute.bit_wise_and(
                    pa.compute.cast(
                        pa.compute.divide(pa.compute.cast(table["timestamp"], pa.int64()), 60_000),
                        pa.int64(),
                    ),
                    7,
                ),
                part % 8,
            )
        )
        if part == 4:  # everything not yet written
            written = pa.compute.less(
                pa.compute.bit_wise_and(
                    pa.compute.cast(
                        pa.compute.divide(pa.compute.cast(table["timestamp"], pa.int64()), 60_000),
                        pa.int64(),
                    ),
                    7,
                ),
                4,
            )
            rows = table.filter(pa.compute.invert(written))
        target.write_logs(rows, f"stream-{part:012d}", alerts=False)
    target.close()
    return home, lake(home)


def test_kill_9_mid_compaction_loses_and_doubles_nothing(fragmented_lake, tmp_path):
    template, expected = fragmented_lake
    assert len(expected) == 30 * 60 * 6 and len(set(expected)) == len(expected)
    assert all(len(list(f.glob("*.parquet"))) == 5 for f in hour_folders(template))
    rng = random.Random(12)
    interrupted = 0
    for round_ in range(6):
        home = tmp_path / f"r{round_}"
        shutil.copytree(template, home)
        worker = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(home)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(rng.randint(2, 28)):
            assert worker.stdout.readline().strip() == "partition"
        time.sleep(rng.uniform(0, 0.03))  # somewhere inside one partition's compaction
        worker.kill()
        worker.wait()
        files = [len(list(f.glob("*.parquet"))) for f in hour_folders(home)]
        interrupted += any(n == 1 for n in files) and any(n == 5 for n in files)
        # Right after the kill, before any recovery: every reading exactly once.
        assert lake(home) == expected
        LocalTarget(home).compact(everything=True)
        assert lake(home) == expected
        assert all(len(list(f.glob("*.parquet"))) == 1 for f in hour_folders(home))
        assert not any((home / ".compaction").iterdir())
    assert interrupted == 6  # every kill really landed mid-compaction


def test_delivered_readings_leave_the_stream_and_the_window(tmp_path):
    clock = [datetime.now(UTC).timestamp() - 3 * 86_400]
    target = LocalTarget(tmp_path / "h", retention_s=86_400, clock=lambda: clock[0])

    def count(table):
        return target.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]

    first = readings(datetime.now(UTC) - timedelta(days=2), 10)
    assert target.append(first) == (60, [])
    target.deliver(force=True)
    clock[0] += 3_600
    assert target.append(first) == (0, [])  # still whole in the stream: adds nothing
    target.deliver(force=True)  # an hour on: delivered rows leave the stream, keys stay
    assert (count("stream"), count("seen")) == (0, 60)
    assert target.append(first) == (0, [])  # inside the window: a re-sent reading adds nothing
    undelivered = readings(datetime.now(UTC) - timedelta(hours=1), 5, seed=3)
    target.append(undelivered)
    clock[0] += 86_400 + 7_200  # everything above is now older than the window
    assert target._prune() == 0  # nothing delivered since: nothing may leave
    assert (count("stream"), count("seen")) == (30, 0)
    assert target.append(first) == (60, [])  # outside the window a re-sent reading is new again
    clock[0] += 3_600
    target._deliver(True, compact=False)
    # Delivered now; the re-sent 60 keep their key, the 30 arrived before the window: gone.
    assert (count("stream"), count("seen")) == (0, 60)
    assert len(lake(tmp_path / "h")) == 60 + 30 + 60


def test_incident_history_and_sent_messages_leave_after_30_days(tmp_path):
    from smartfarm_cli.core.state import HISTORY_KEEP_MS

    clock = [datetime.now(UTC).timestamp()]
    target = LocalTarget(tmp_path / "h", clock=lambda: clock[0])
    now_ms = int(clock[0] * 1000)
    old, recent = now_ms - HISTORY_KEEP_MS - 60_000, now_ms - HISTORY_KEEP_MS + 60_000
    with target._transaction() as db:
        db.executemany(
            "INSERT INTO alert_log (at_ms, greenhouse_id, device_id, rule, metric, severity, "
            "event, anomalies, worst, opened_ms, source) "
            "VALUES (?, 'gh-1', 'dev-1', 'impossible', 'temperature', 'critical', 'opened', 1, "
            "400, ?, ?)",
            [(old, old, "old"), (recent, recent, "recent")],
        )
        db.executemany(
            "INSERT INTO alert_outbox (source, created_ms, message, anomalies, status, "
            "updated_ms) VALUES (?, ?, '{}', 1, ?, ?)",
            [
                ("sent-long-ago", old, "delivered", old),
                ("never-sent", old, "undelivered", old),  # still owed: kept
                ("sent-lately", recent, "delivered", recent),
            ],
        )
    target._prune()
    log = target.db.execute("SELECT source FROM alert_log").fetchall()
    outbox = target.db.execute("SELECT source FROM alert_outbox ORDER BY source").fetchall()
    assert log == [("recent",)] and outbox == [("never-sent",), ("sent-lately",)]


def test_pruned_pages_go_back_to_the_file_system(tmp_path):
    """Retention frees pages, and stream.db gives them back (auto_vacuum incremental); a
    stream.db made with auto_vacuum off is rewritten once by the first prune."""
    start = datetime.now(UTC).timestamp() - 3 * 86_400

    def pragma(target, name):
        return target.db.execute(f"PRAGMA {name}").fetchone()[0]

    for legacy in (False, True):
        home = tmp_path / f"legacy{legacy}"
        if legacy:  # as stream.db was made before: WAL first, so auto_vacuum stayed off
            home.mkdir()
            db = sqlite3.connect(home / "stream.db")
            db.execute("PRAGMA journal_mode=WAL")
            db.close()
        clock = [start]
        target = LocalTarget(home, retention_s=3_600, clock=lambda c=clock: c[0])
        assert pragma(target, "auto_vacuum") == (0 if legacy else 2)
        for hour in range(6):  # 6 hours of 2,400 readings, each hour delivered
            target.append(readings(datetime.now(UTC) - timedelta(days=2, hours=8 * hour), 400))
            target._deliver(True, compact=False)
            clock[0] += 3_600
        grown = pragma(target, "page_count")
        clock[0] += 2 * 3_600  # everything is now older than the window
        target._deliver(True, compact=False)
        assert target.db.execute("SELECT count(*) FROM seen").fetchone()[0] == 0
        assert pragma(target, "auto_vacuum") == 2  # INCREMENTAL, also on the legacy file
        assert pragma(target, "freelist_count") == 0
        assert pragma(target, "page_count") < grown / 2
        target.close()


def test_a_send_that_does_not_flush_costs_one_transaction_and_no_query(tmp_path):
    target = LocalTarget(tmp_path / "h", flush_rows=1_000, flush_age_s=3_600)
    rows = readings(datetime.now(UTC) - timedelta(minutes=10), 3)
    target.append(rows.slice(0, 6))
    target.deliver()  # the first call looks at what other processes left
    statements = []
    target.db.set_trace_callback(statements.append)
    target.append(rows.slice(6, 6))
    assert target.deliver().readings == 0
    kinds = [s.split()[0] for s in statements]
    # The append's one transaction; deliver() that does not flush adds no statement.
    assert kinds[0] == "BEGIN" and kinds[-1] == "COMMIT" and kinds.count("BEGIN") == 1
    assert target.pending() == 12


def test_a_process_that_only_delivers_still_sees_other_processes_appends(tmp_path):
    writer = LocalTarget(tmp_path / "h", flush_rows=5)
    deliverer = LocalTarget(tmp_path / "h", flush_rows=5)  # like `farmctl serve`'s deliverer
    assert deliverer.deliver().readings == 0  # its first look: nothing yet
    writer.append(readings(datetime.now(UTC) - timedelta(minutes=5), 2))  # 12 rows, not flushed
    assert deliverer.deliver().readings == 12


def test_a_query_whose_files_a_compaction_replaces_meanwhile_lists_again(tmp_path):
    """Another process compacts between the query's listing and DuckDB opening the files:
    the query runs again on the new listing and gives the same answer, not an error."""
    home = tmp_path / "h"
    writer = LocalTarget(home, flush_rows=50)
    hour = (datetime.now(UTC) - timedelta(hours=5)).replace(minute=0, second=0, microsecond=0)
    table = readings(hour, 60)
    for offset in range(0, table.num_rows, 50):
        writer.append(table.slice(offset, 50))
        writer._deliver(False, compact=False)
    writer._deliver(True, compact=False)
    sql = "SELECT count(*), round(sum(temperature), 2) FROM readings"
    reader = LocalTarget(home)
    expected = reader.query(sql).rows
    listed = reader._create_views
    calls = []

    def list_then_compact(*args, **kwargs):
        files = listed(*args, **kwargs)
        calls.append(len(files))
        if len(calls) == 1:
            assert LocalTarget(home).compact() == 1  # the listed files are gone now
        return files

    reader._create_views = list_then_compact
    assert reader.query(sql).rows == expected
    # Listed again (readings and spike files): the hour's files are one compacted file now.
    assert len(calls) == 2 and calls[1] < calls[0]
    assert [len(list(f.glob("*.parquet"))) for f in hour_folders(home)] == [1]
