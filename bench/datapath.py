"""Data-path benchmarks (issue 12): file ingest, small sends, files per hour, home size.

Imported by run.py, which registers them as P8, P10, P11 and P17.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from run import CACHE, END, paired

ROOT = Path(__file__).resolve().parent.parent
FARMCTL = Path(sys.executable).parent / "farmctl"

PYARROW_INGEST = """
import sys
import pyarrow as pa, pyarrow.compute as pc, pyarrow.json as pj, pyarrow.parquet as pq
table = pj.read_json(sys.argv[1])
ts = pc.cast(table["timestamp"], pa.timestamp("ms"))
for key, fmt in (("year", "%Y"), ("month", "%m"), ("day", "%d"), ("hour", "%H")):
    table = table.append_column(key, pc.strftime(ts, fmt))
pq.write_to_dataset(table, sys.argv[2], partition_cols=["year", "month", "day", "hour"])
"""


def ndjson_file(lines: int) -> Path:
    """`lines` readings, 50 greenhouses x 4 devices a minute, ending at END (cached)."""
    import duckdb

    path = CACHE / f"readings-{lines // 1000}k.ndjson"
    if path.exists():
        return path
    steps = -(-lines // 200)
    start = END - timedelta(minutes=steps)
    tmp = path.with_suffix(".tmp")
    duckdb.sql(
        f"""
        COPY (
            SELECT
                'gh-' || lpad(CAST(g AS VARCHAR), 3, '0') AS greenhouse_id,
                'dev-' || CAST(d AS VARCHAR) AS device_id,
                strftime(TIMESTAMP '{start:%Y-%m-%d %H:%M:%S}' + to_minutes(CAST(s AS BIGINT)),
                         '%Y-%m-%dT%H:%M:%SZ') AS timestamp,
                round(22 + 4 * sin(s / 229.0) + (g % 7) * 0.3, 2) AS temperature,
                round(60 + 10 * cos(s / 229.0) + d, 1) AS humidity,
                CAST(700 + (s * 7 + g * 13 + d) % 300 AS INTEGER) AS co2,
                0 AS error_code
            FROM range({steps}) r(s), range(50) gg(g), range(4) dd(d)
            ORDER BY s, g, d
            LIMIT {lines}
        ) TO '{tmp}' (FORMAT JSON)
        """
    )
    tmp.rename(path)
    return path


# A small launcher, so the measured process is forked from a ~10 MB interpreter: a child's
# ru_maxrss also counts the pages it was forked with, and the bench process is large.
LAUNCHER = """
import resource, subprocess, sys, time
started = time.perf_counter()
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
wall = time.perf_counter() - started
if done.returncode:
    sys.exit(done.stderr.decode()[-500:])
print(wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
"""


def _run_measured(command: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one process."""
    out = subprocess.run(
        [sys.executable, "-c", LAUNCHER, *command], capture_output=True, text=True, check=True
    )
    wall, rss = out.stdout.split()
    return float(wall), float(rss)


def p8_ingest(runs: int) -> dict:
    """farmctl ingest of 1M NDJSON lines vs pyarrow read_json + write_to_dataset (processes)."""
    path = ndjson_file(1_000_000)
    scratch = Path(tempfile.mkdtemp(prefix="bench-p8-"))
    peaks: dict[str, list[float]] = {"ours": [], "base": []}

    def ours():
        shutil.rmtree(scratch / "home", ignore_errors=True)
        wall, rss = _run_measured(
            [str(FARMCTL), "--home", str(scratch / "home"), "ingest", str(path)]
        )
        peaks["ours"].append(rss)
        return wall

    def base():
        shutil.rmtree(scratch / "raw", ignore_errors=True)
        wall, rss = _run_measured(
            [sys.executable, "-c", PYARROW_INGEST, str(path), str(scratch / "raw")]
        )
        peaks["base"].append(rss)
        return wall

    ours_s, base_s, ratio = paired(ours, base, max(3, runs // 2))
    files = sum(1 for _ in (scratch / "home" / "sensor-log-bucket").rglob("*.parquet"))
    hours = sum(1 for _ in (scratch / "raw").rglob("*.parquet"))
    big = ndjson_file(3_000_000)
    shutil.rmtree(scratch / "home", ignore_errors=True)
    big_s, big_rss = _run_measured(
        [str(FARMCTL), "--home", str(scratch / "home"), "ingest", str(big)]
    )
    shutil.rmtree(scratch)
    rate = 1_000_000 / ours_s
    rss = max(peaks["ours"])
    return {
        "measure": "`farmctl ingest` of a 1,000,000-line NDJSON file (50 greenhouses x 4 "
        "devices, 1 min), whole process: validate, lake, rules + spikes, compaction",
        "value": f"{ours_s:.2f} s ({rate:,.0f} readings/s), peak RSS {rss:.0f} MB, "
        f"{files} files; 3M lines: {big_s:.1f} s, peak RSS {big_rss:.0f} MB",
        "baseline": f"pyarrow `read_json` + hive `write_to_dataset` by hour, whole process: "
        f"{base_s:.2f} s, peak RSS {max(peaks['base']):.0f} MB, {hours} files",
        "ratio": round(ratio, 2),
        "goal": "<= 1.5x, >= 200k readings/s, peak RSS <= 400 MB (1M and 3M lines)",
        "met": ratio <= 1.5 and rate >= 200_000 and rss <= 400 and big_rss <= 400,
    }


SQLITE_SENDS = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA journal_mode=WAL"); db.execute("PRAGMA synchronous=NORMAL")
db.execute("CREATE TABLE s (seq INTEGER PRIMARY KEY AUTOINCREMENT, received_ms INTEGER, "
           "greenhouse_id TEXT, device_id TEXT, ts_ms INTEGER, temperature REAL, humidity REAL, "
           "co2 REAL, error_code INTEGER)")
db.execute("CREATE UNIQUE INDEX k ON s (greenhouse_id, device_id, ts_ms)")
now = int(time.time() * 1000)
for send in range(2000):
    db.execute("BEGIN IMMEDIATE")
    db.executemany("INSERT OR IGNORE INTO s (received_ms, greenhouse_id, device_id, ts_ms, "
                   "temperature, humidity, co2, error_code) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   [(now, f"gh-{g}", "d1", now + send, 21.5, 60.0, 800.0, 0) for g in range(10)])
    db.execute("COMMIT")
"""


def p10_small_sends(runs: int) -> dict:
    """`farmctl simulate --count 2000 --interval 0 -g 10` as a whole process."""
    scratch = Path(tempfile.mkdtemp(prefix="bench-p10-"))

    def ours():
        shutil.rmtree(scratch / "home", ignore_errors=True)
        subprocess.run(
            [
                str(FARMCTL),
                "--home",
                str(scratch / "home"),
                "simulate",
                "--count",
                "2000",
                "--interval",
                "0",
                "-g",
                "10",
            ],
            check=True,
            capture_output=True,
        )

    def bare_sqlite():
        db = scratch / "bare.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        subprocess.run([sys.executable, "-c", SQLITE_SENDS, str(db)], check=True)

    ours_s, base_s, ratio = paired(ours, bare_sqlite, runs)
    from smartfarm_cli.targets.local import LocalTarget

    loops = []
    for run in range(3):  # the send loop alone, in this process (no interpreter start-up)
        target = LocalTarget(scratch / f"loop{run}")
        started = time.perf_counter()
        target.simulate(2000, 0, greenhouses=10)
        loops.append(time.perf_counter() - started)
        target.close()
    loop_s = statistics.median(loops)
    shutil.rmtree(scratch)
    rate = 20_000 / ours_s
    return {
        "measure": "`farmctl simulate --count 2000 --interval 0 -g 10` (20,000 readings in "
        "2,000 sends), whole process: generate and validate, one stream transaction per send, "
        "deliver",
        "value": f"{ours_s:.2f} s ({rate:,.0f} readings/s); the send loop alone {loop_s:.2f} s "
        f"({20_000 / loop_s:,.0f} readings/s, {loop_s / 2000 * 1000:.2f} ms/send)",
        "baseline": f"bare sqlite3 process, 2,000 transactions of 10 inserts into the same "
        f"indexed table: {base_s:.2f} s",
        "ratio": round(ratio, 2),
        "goal": ">= 20k readings/s",
        "met": rate >= 20_000,
    }


class FakeClock:
    def __init__(self, start: float):
        self.now = start

    def __call__(self) -> float:
        return self.now


def _live_run(
    home: Path,
    start: datetime,
    hours: float,
    step_s: int,
    greenhouses: int,
    devices: int,
    compact: bool,
    flush_age_s: float = 10.0,
) -> tuple[int, float]:
    """Readings arriving live (stamped on a fake clock) -> (readings, end time)."""
    from smartfarm_cli.core.generator import generate
    from smartfarm_cli.targets.local import LocalTarget

    clock = FakeClock(start.timestamp())
    target = LocalTarget(home, clock=clock, flush_age_s=flush_age_s)
    steps = int(hours * 3600 / step_s)
    table = generate(
        int(start.timestamp() * 1000),
        steps,
        step_s,
        greenhouses,
        devices,
        anomaly_rate=0.001,
        seed=5,
    ).table
    per_send = greenhouses * devices
    for step in range(steps):
        clock.now = start.timestamp() + step * step_s
        target.ingest_table(table.slice(step * per_send, per_send), deliver=False)
        target._deliver(False, compact=compact)
    clock.now += 3600
    target._deliver(True, compact=compact)
    target.close()
    return table.num_rows, clock.now


def p11_files_per_hour(runs: int) -> dict:
    """Files per closed hour partition after a live run (fake clock: 3 hours of sends)."""
    del runs  # a count, not a timing
    start = (datetime.now(UTC) - timedelta(hours=6)).replace(minute=0, second=0, microsecond=0)
    counts = {}
    for compact in (True, False):
        home = Path(tempfile.mkdtemp(prefix="bench-p11-"))
        _live_run(home, start, 3, 10, 10, 2, compact)
        folders = {p.parent for p in (home / "sensor-log-bucket").rglob("*.parquet")}
        counts[compact] = [len(list(f.glob("*.parquet"))) for f in sorted(folders)]
        shutil.rmtree(home)
    most = max(counts[True])
    return {
        "measure": "files per closed hour partition after a live run (3 h of sends every 10 s "
        "from 20 devices, delivered by size / 10 s age; fake clock)",
        "value": f"{most} file(s) in each of {len(counts[True])} hours",
        "baseline": "the same run without compaction: "
        f"{statistics.median(counts[False]):.0f} files per hour",
        "ratio": round(most / statistics.median(counts[False]), 4),
        "goal": "1",
        "met": most == 1,
    }


def _bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def p17_home_bytes(runs: int) -> dict:
    """Home bytes per reading after a week of 1-minute readings arriving live (fake clock)."""
    del runs  # a size, not a timing
    start = (datetime.now(UTC) - timedelta(days=8)).replace(minute=0, second=0, microsecond=0)
    home = Path(tempfile.mkdtemp(prefix="bench-p17-"))
    readings, _ = _live_run(home, start, 7 * 24, 60, 20, 2, True, flush_age_s=300)
    lake_b = _bytes(home / "sensor-log-bucket")
    spikes_b = _bytes(home / "spike-log-bucket")
    stream_b = sum(p.stat().st_size for p in home.glob("stream.db*"))
    home_b = _bytes(home)
    shutil.rmtree(home)
    per, lake_per = home_b / readings, lake_b / readings
    return {
        "measure": f"home bytes per reading after a week of 1-minute readings ({readings:,} "
        "from 40 devices, arriving live on a fake clock, delivered every 5 min, 24 h "
        "stream retention)",
        "value": f"{per:.1f} B/reading (stream.db {stream_b / readings:.1f}, lake "
        f"{lake_per:.1f}, spikes {spikes_b / readings:.2f})",
        "baseline": f"the lake alone: {lake_per:.1f} B/reading",
        "ratio": round(per / lake_per, 2),
        "goal": "<= 2x",
        "met": per / lake_per <= 2,
    }


BARE_DUCKDB = """
import json, sys
import duckdb
glob, sql, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
con.execute(
    f"CREATE VIEW readings AS SELECT * FROM read_parquet('{glob}', hive_partitioning = true, "
    "hive_types = {'year': 'VARCHAR', 'month': 'VARCHAR', 'day': 'VARCHAR', 'hour': 'VARCHAR'})"
)
cursor = con.execute(sql, params)
names = [d[0] for d in cursor.description]
json.dump([dict(zip(names, row)) for row in cursor.fetchall()], sys.stdout, default=str)
"""


def p9_query_commands(runs: int) -> dict:
    """Whole `farmctl` query processes vs the same SQL in a bare duckdb process."""
    import sqlglot

    from smartfarm_cli.core import queries
    from smartfarm_cli.targets.local import LocalTarget

    scratch = Path(tempfile.mkdtemp(prefix="bench-p9-"))
    big, small = scratch / "big", scratch / "small"
    LocalTarget(big).backfill(7, greenhouses=100, devices=1, interval_s=60, anomaly_rate=0.001)
    LocalTarget(small).backfill(1, greenhouses=3, devices=2, interval_s=60, anomaly_rate=0.001)
    valid = LocalTarget(big).rules.impossible["temperature"]

    def bare(home: Path, query) -> list[str]:
        sql = sqlglot.transpile(query.sql, read="athena", write="duckdb")[0]
        glob = f"{home}/sensor-log-bucket/logs/*/*/*/*/*.parquet"
        return [sys.executable, "-c", BARE_DUCKDB, glob, sql, json.dumps(query.params)]

    def run(command):
        return lambda: subprocess.run(command, check=True, stdout=subprocess.DEVNULL)

    # The lakes are backfilled, so synthetic: trend must ask for them (issue 16.3).
    trend = [str(FARMCTL), "--home", str(big), "trend", "temperature", "--days", "7"]
    trend += ["--synthetic", "include", "-o", "json"]
    trend_q = queries.trend("temperature", 7, "1h", valid_range=valid, synthetic="include")
    trend_s, trend_base, trend_ratio = paired(
        run(trend), run(bare(big, trend_q)), max(3, runs // 2)
    )
    latest = [str(FARMCTL), "--home", str(small), "latest", "-o", "json"]
    latest_q = queries.latest_per_device()
    latest_s, latest_base, _ = paired(run(latest), run(bare(small, latest_q)), runs)
    shutil.rmtree(scratch)
    return {
        "measure": "`farmctl trend temperature --days 7 -o json` on a 7-day, 100-greenhouse, "
        "1-minute lake (1M readings); `farmctl latest -o json` on a 1-day, 6-device lake; "
        "whole processes",
        "value": f"trend {trend_s:.2f} s; latest {latest_s:.2f} s",
        "baseline": f"the same SQL in a bare python + duckdb process over the hive glob: "
        f"trend {trend_base:.2f} s, latest {latest_base:.2f} s",
        "ratio": round(trend_ratio, 2),
        "goal": "trend <= 1.5x; latest <= 0.4 s",
        "met": trend_ratio <= 1.5 and latest_s <= 0.4,
    }
