"""Cost of judging `jump` against per-device state (issue 15), against the stateless rules.

    python bench/jump_state.py [runs]

S1: the rules over 1,000,000 readings (20 devices) in one file: `detect` with an SQLite state
    store (load 20 windows, merge, save) vs `detect` alone, same table, interleaved runs.
S2: a live-like delivery: 20 devices x 1 reading, 1,000 files one after another, each judged
    with state (the per-file cost that matters on a farm) vs alone.
Medians of `runs` (default 5) after a warm-up.
"""

from __future__ import annotations

import sqlite3
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from smartfarm_cli.core.generator import generate
from smartfarm_cli.core.rules import detect, load_rules
from smartfarm_cli.core.state import SqliteStateStore

END_MS = int(datetime(2026, 11, 28, tzinfo=UTC).timestamp() * 1000)


def interleaved(a, b, runs: int) -> tuple[float, float]:
    a(), b()
    ta, tb = [], []
    for _ in range(runs):
        for fn, out in ((a, ta), (b, tb)):
            started = time.perf_counter()
            fn()
            out.append(time.perf_counter() - started)
    return statistics.median(ta), statistics.median(tb)


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    rules = load_rules()
    big = generate(END_MS, 50_000, 60, 20, 1, anomaly_rate=0.01, seed=4).table

    def with_state():
        store = SqliteStateStore(sqlite3.connect(":memory:", isolation_level=None))
        detect(big, rules, "big", state=store, now_ms=END_MS)

    stateful, alone = interleaved(with_state, lambda: detect(big, rules, "big"), runs)
    print(
        f"S1 rules over {big.num_rows:,} readings: with state {stateful:.3f} s, "
        f"alone {alone:.3f} s, ratio {stateful / alone:.2f}x"
    )
    small = generate(END_MS, 1_000, 60, 20, 1, anomaly_rate=0.01, seed=5).table
    files = [small.slice(i * 20, 20) for i in range(1_000)]

    def live_state():
        store = SqliteStateStore(sqlite3.connect(":memory:", isolation_level=None))
        for n, part in enumerate(files):
            detect(part, rules, f"f{n}", state=store, now_ms=END_MS)

    def live_alone():
        for n, part in enumerate(files):
            detect(part, rules, f"f{n}")

    stateful, alone = interleaved(live_state, live_alone, max(1, runs // 2))
    print(
        f"S2 1,000 files of 20 readings: with state {stateful / 1000 * 1000:.2f} ms/file, "
        f"alone {alone / 1000 * 1000:.2f} ms/file, ratio {stateful / alone:.2f}x"
    )


if __name__ == "__main__":
    main()
