"""Baselines the benchmarks compare against. They do the same work the plain way.

`rules_row_by_row` applies exactly the rules of core/rules.py with a per-row Python loop (the
way a first Lambda would be written); the benchmark checks that it finds the same spikes, so
the speed ratio compares equal work.
"""

from __future__ import annotations

from smartfarm_cli.core.rules import Rules
from smartfarm_cli.core.schema import METRICS


def rules_row_by_row(rows: list[dict], rules: Rules) -> list[tuple]:
    """(greenhouse, device, timestamp, rule, metric) for every anomaly, one row at a time."""
    spikes = []
    baseline: list[dict] = []  # healthy, non-critical readings for the jump rule
    for row in rows:
        key = (row["greenhouse_id"], row["device_id"], row["timestamp"])
        if row["error_code"] != 0:
            spikes.append((*key, "sensor_error", "error_code"))
            continue
        critical = False
        for metric in METRICS:
            value = row[metric]
            low, high = rules.impossible[metric]
            if value < low or value > high:
                spikes.append((*key, "impossible", metric))
                critical = True
                continue
            low, high = rules.band[metric]
            if value < low or value > high:
                spikes.append((*key, "out_of_band", metric))
        if not critical:
            baseline.append(row)
    baseline.sort(key=lambda r: (r["greenhouse_id"], r["device_id"], r["timestamp"]))
    for metric in METRICS:
        limit = rules.jump_per_minute[metric]
        base = None  # the level before the open jump, per device
        for i, row in enumerate(baseline):
            if i == 0 or _device(baseline[i - 1]) != _device(row):
                base = None
                continue
            prev = baseline[i - 1]
            gap = max((row["timestamp"] - prev["timestamp"]).total_seconds() / 60, 1.0)
            if abs(row[metric] - prev[metric]) / gap <= limit:
                continue
            if base is not None and abs(row[metric] - base) <= limit:
                base = None  # back to the level before the jump
                continue
            spikes.append(
                (row["greenhouse_id"], row["device_id"], row["timestamp"], "jump", metric)
            )
            base = prev[metric]
    return spikes


def _device(row: dict) -> tuple[str, str]:
    return row["greenhouse_id"], row["device_id"]
