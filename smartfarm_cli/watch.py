"""The live board behind `farmctl watch`: latest reading per device, anomalies highlighted."""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
from rich.table import Table

from .core.rules import Rules, detect
from .core.schema import METRIC_UNITS, METRICS
from .render import SYNTHETIC_FOOTNOTE, house_table

STYLE = {"critical": "bold red", "warning": "yellow"}
SHORT_NAMES = {"temperature": "temp", "humidity": "humid"}  # headers that fit 80 columns


class LatestBoard:
    """Keeps the newest reading per (greenhouse, device) and the rules' verdict on it."""

    def __init__(self, rules: Rules):
        self.rules = rules
        self.latest: dict[tuple[str, str], dict] = {}
        self.readings_seen = 0

    def update(self, batch: pa.Table) -> None:
        spikes = detect(batch, self.rules)
        flagged: dict[tuple, tuple[str, str]] = {}
        for row in spikes.select(
            ["greenhouse_id", "device_id", "timestamp", "rule", "severity"]
        ).to_pylist():
            key = (row["greenhouse_id"], row["device_id"], row["timestamp"])
            if key not in flagged or row["severity"] == "critical":
                flagged[key] = (row["rule"], row["severity"])
        for row in batch.to_pylist():
            device = (row["greenhouse_id"], row["device_id"])
            current = self.latest.get(device)
            if current is None or row["timestamp"] >= current["timestamp"]:
                rule, severity = flagged.get((*device, row["timestamp"]), (None, None))
                self.latest[device] = {**row, "rule": rule, "severity": severity}
        self.readings_seen += batch.num_rows

    def render(self) -> Table:
        table = house_table(
            f"latest reading per device ({len(self.latest)} devices, "
            f"{self.readings_seen} readings seen)"
        )
        table.add_column("greenhouse")
        table.add_column("device")
        table.add_column("time UTC", no_wrap=True)
        for metric in METRICS:
            short = SHORT_NAMES.get(metric, metric)
            table.add_column(f"{short} {METRIC_UNITS[metric]}", justify="right", no_wrap=True)
        table.add_column("error", justify="right", no_wrap=True)
        table.add_column("anomaly")
        for (greenhouse, device), row in sorted(self.latest.items()):
            stamp: datetime = row["timestamp"]
            values = [f"{row[m]:.1f}" if row[m] is not None else "-" for m in METRICS]
            if row.get("synthetic"):
                device = f"{device}*"  # one column more would not fit at 80 columns
                table.caption = SYNTHETIC_FOOTNOTE
            table.add_row(
                greenhouse,
                device,
                stamp.strftime("%H:%M:%S"),
                *values,
                str(row["error_code"]),
                row["rule"] or "",
                style=STYLE.get(row["severity"]),
            )
        return table
