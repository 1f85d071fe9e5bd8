"""Cost of reading the lake by column name (issue 16.3: files older than `synthetic` lack it).

A log file written before the `synthetic` column existed lacks it. DuckDB reads such a mix
only by name (`union_by_name = true`, every file's footer read up front); by default it takes
the first file's columns and stops at a later file that lacks one. The local `readings` view
therefore checks the first file's footer and reads by name only when it lacks a column (or
when DuckDB stops at a later one, then the query is re-run by name; targets/local.py).
This measures, on the same files and the same 7-day hourly trend SQL, interleaved (A B, B A,
...) after a warm-up:

- `by_name`: always reading by name (the simple fix, what the `spikes` view does);
- `checked`: what the readings view does on a lake whose files all have the column (one footer
  read, then the plain read);
- `plain`: the plain read the view used before (the baseline).

    python bench/synthetic_views.py [pairs]

It builds a 7-day, 20-greenhouse, 1-minute lake (201,600 readings, one compacted file per hour)
in a temporary folder and prints the medians and the medians of the per-pair ratios.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from smartfarm_cli.core import lake, queries  # noqa: E402
from smartfarm_cli.core.schema import COLUMN_NAMES  # noqa: E402
from smartfarm_cli.sqlguard import to_dialect  # noqa: E402
from smartfarm_cli.targets.local import LocalTarget, _has_columns, _partition_files  # noqa: E402


def main(pairs: int) -> None:
    import duckdb

    with tempfile.TemporaryDirectory() as tmp:
        target = LocalTarget(Path(tmp) / "home")
        target.backfill(days=7, greenhouses=20, devices=1, interval_s=60, seed=1)
        query = queries.trend(
            "temperature",
            7,
            "1h",
            valid_range=target.rules.impossible["temperature"],
            synthetic="include",
        )
        files = _partition_files(
            target.logs.path(lake.LOG_ROOT), ("year", "month", "day", "hour"), query.partitions_from
        )
        source = "[" + ", ".join(f"'{f}'" for f in files) + "]"
        hive = "{'year': 'VARCHAR', 'month': 'VARCHAR', 'day': 'VARCHAR', 'hour': 'VARCHAR'}"
        sql = to_dialect(query.sql, "duckdb")
        views = {
            "by_name": f"read_parquet({source}, hive_partitioning = true, hive_types = {hive}, "
            "union_by_name = true)",
            "checked": f"read_parquet({source}, hive_partitioning = true, hive_types = {hive})",
            "plain": f"read_parquet({source}, hive_partitioning = true, hive_types = {hive})",
        }

        def run(kind: str) -> float:
            con = duckdb.connect()
            con.execute("SET TimeZone = 'UTC'")
            started = time.perf_counter()
            if kind == "checked":
                assert _has_columns(con, files[0], list(COLUMN_NAMES))
            con.execute(f"CREATE VIEW readings AS SELECT * FROM {views[kind]}")
            rows = con.execute(sql).fetchall()
            took = time.perf_counter() - started
            con.close()
            assert rows
            return took

        kinds = ("by_name", "checked", "plain")
        for kind in kinds:  # warm-up (file cache)
            run(kind)
        times: dict[str, list[float]] = {kind: [] for kind in kinds}
        for i in range(pairs):
            for kind in kinds if i % 2 == 0 else tuple(reversed(kinds)):
                times[kind].append(run(kind))
        med = {kind: statistics.median(t) for kind, t in times.items()}
        ratio = {
            kind: statistics.median(a / b for a, b in zip(times[kind], times["plain"], strict=True))
            for kind in ("by_name", "checked")
        }
        print(
            f"{len(files)} files, {pairs} rounds: by_name {med['by_name']:.4f} s "
            f"({ratio['by_name']:.2f}x), checked {med['checked']:.4f} s ({ratio['checked']:.2f}x), "
            f"plain {med['plain']:.4f} s (medians; ratios are medians of per-round ratios)"
        )
        target.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 9)
