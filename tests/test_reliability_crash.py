"""R5 crash safety: `kill -9` of a real local pipeline process mid-delivery, restart, count.

Already proven (tests/test_local_target.py): an exception raised between two file writes of one
delivery is redone exactly. Here the process is really killed (SIGKILL, no cleanup, no
`finally`) at random moments, KILLS times on one home, while it ingests and delivers
continuously (tests/reliability/crash_worker.py). Then a fresh process delivers what is left,
and DuckDB counts the lake:

- zero lost: every reading committed to the stream, and every reading acknowledged to the
  caller (its ingest call returned), is in `readings`;
- zero duplicated: no device_id (unique per reading) appears twice in `readings`, no spike twice
  in `spikes`; every file is readable (no torn Parquet).
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from smartfarm_cli.targets.local import LocalTarget

KILLS = 10
WORKER = Path(__file__).parent / "reliability" / "crash_worker.py"


def interrupted(home: Path) -> bool:
    with sqlite3.connect(f"file:{home / 'stream.db'}?mode=ro", uri=True) as db:
        (pending,) = db.execute("SELECT pending_from FROM delivery WHERE name = 'lake'").fetchone()
    return pending is not None


def test_kill_9_mid_delivery_loses_nothing_and_duplicates_nothing(tmp_path):
    home = tmp_path / "home"
    ack = tmp_path / "acked.txt"
    rng = random.Random(20261128)
    interrupted_deliveries = 0
    for run in range(KILLS):
        worker = subprocess.Popen(
            [sys.executable, str(WORKER), str(home), str(run), str(ack)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert worker.stdout.readline().strip() == "ready", worker.stderr.read()
        time.sleep(rng.uniform(0.2, 0.8))
        assert worker.poll() is None, worker.stderr.read()  # still running: killed mid-work
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        assert worker.returncode == -signal.SIGKILL
        worker.stdout.close()
        worker.stderr.close()
        interrupted_deliveries += interrupted(home)

    # the kills really landed mid-delivery (typically 6-8 of 10 leave a pending range)
    assert interrupted_deliveries >= 1

    restarted = LocalTarget(home)
    restarted.deliver(force=True)
    assert restarted.pending() == 0
    streamed = [r[0] for r in restarted.db.execute("SELECT device_id FROM stream").fetchall()]
    acked = ack.read_text().split()
    assert len(streamed) == len(set(streamed))
    assert set(acked) <= set(streamed)

    lake = restarted.query("SELECT device_id, count(*) FROM readings GROUP BY 1").rows
    duplicated = [device for device, n in lake if n > 1]
    assert duplicated == []
    assert {device for device, _ in lake} == set(streamed)  # zero lost, zero invented

    spikes = restarted.query("SELECT device_id, rule, count(*) FROM spikes GROUP BY 1, 2").rows
    assert [s for s in spikes if s[2] > 1] == []
    expected_spikes = {d for d in streamed if int(d.split("-")[1]) % 10 == 0}
    assert {device for device, rule, _ in spikes} == expected_spikes
    assert {rule for _, rule, _ in spikes} == {"impossible"}
    restarted.close()
    print(
        f"\nR5: {KILLS} kills, {interrupted_deliveries} left a delivery half done, "
        f"{len(streamed)} readings streamed, {len(acked)} acknowledged, "
        f"{len(lake)} in the lake, {len(expected_spikes)} spikes"
    )
