"""The live board behind `farmctl watch`: latest reading per device, anomalies highlighted."""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
from rich.table import Table

from .core.rules import Rules, detect
from .core.schema import METRICS

STYLE = {"critical": "bold red", "warning": "yellow"}


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
        table = Table(
            title=f"latest reading per device ({len(self.latest)} devices, "
            f"{self.readings_seen} readings seen)",
            header_style="bold cyan",
        )
        for column in ("greenhouse", "device", "time (UTC)", *METRICS, "error", "anomaly"):
            table.add_column(column)
        for (greenhouse, device), row in sorted(self.latest.items()):
            stamp: datetime = row["timestamp"]
            values = [f"{row[m]:.1f}" if row[m] is not None else "-" for m in METRICS]
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
