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


def naive_webhook_sender(url: str, spikes: list[dict]) -> int:
    """The seed's alerting: one Discord POST per anomaly -> how many were answered 2xx."""
    import requests

    ok = 0
    with requests.Session() as session:
        for spike in spikes:
            text = (
                f"{spike['greenhouse_id']}/{spike['device_id']} {spike['rule']} "
                f"{spike['metric']}: {spike['detail']}"
            )
            ok += session.post(url, json={"content": text}, timeout=10).ok
    return ok


def naive_kinesis_sender(kinesis, stream: str, count: int) -> None:
    """The seed's pseudo sender: one PutRecord call per reading."""
    import json

    for i in range(count):
        data = {"greenhouse_id": f"gh-{i % 10}", "device_id": f"d{i % 7}", "temperature": 20.0}
        kinesis.put_record(
            StreamName=stream, Data=json.dumps(data).encode(), PartitionKey=data["device_id"]
        )
