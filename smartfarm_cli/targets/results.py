"""Result types shared by the targets, so the CLI renders both the same way."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from ..core.validate import Rejected


@dataclass
class IngestResult:
    accepted: int
    rejected: list[Rejected]
    duplicates: int = 0  # valid readings already stored (same greenhouse, device, timestamp)
    differed: int = 0  # of those, copies whose values differ (kept in the rejected store)
    unlisted_rejected: int = 0  # rejections beyond those listed (all are in the rejected store)

    @property
    def rejected_count(self) -> int:
        return len(self.rejected) + self.unlisted_rejected


@dataclass
class DeliveryReport:
    files: list[str] = field(default_factory=list)
    readings: int = 0
    spikes: int = 0
    spike_files: list[str] = field(default_factory=list)
    already_stored: int = 0  # backfill: generated readings the lake already held
    compacted: int = 0  # hour partitions compacted to one file afterwards

    def add(self, other: DeliveryReport) -> None:
        self.files += other.files
        self.readings += other.readings
        self.already_stored += other.already_stored
        self.spikes += other.spikes
        self.spike_files += other.spike_files
        self.compacted += other.compacted


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[tuple]
    note: str = ""  # e.g. "scanned 1.2 MB, $0.00001" on Athena

    def records(self) -> list[dict]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


@dataclass
class SimulateReport:
    sends: int
    readings: int
    accepted: int
    rejected: int
    injected: dict[str, int]
    delivery: DeliveryReport | None = None
    run_id: str | None = None  # aws: the pseudo_sensor_log run started server-side

    def summary(self) -> str:
        if self.run_id:  # aws: the readings are sent later, server-side
            return (
                f"started pseudo_sensor_log run {self.run_id}: {self.readings} readings in "
                f"{self.sends} sends will be sent by the Lambda (check with `farmctl status`)"
            )
        injected = ", ".join(f"{k} {v}" for k, v in self.injected.items() if v) or "none"
        text = (
            f"sent {self.readings} readings in {self.sends} sends: "
            f"{self.accepted} accepted, {self.rejected} rejected; injected anomalies: {injected}"
        )
        if self.delivery is not None:
            text += (
                f"\nthis process delivered {self.delivery.readings} readings to the lake "
                f"in {len(self.delivery.files)} files ({self.delivery.spikes} spikes), "
                "another sender's waiting readings included"
            )
        return text


# `farmctl keys list` columns, on both targets (never a key's value).
KEY_COLUMNS = ["site", "key_id", "label", "enabled", "created", "last_used"]


@dataclass(frozen=True)
class NewKey:
    """A device API key just made: its value exists here once and is never stored by farmctl."""

    site: str
    key_id: str
    created: datetime
    value: str = field(repr=False)

    def __str__(self) -> str:  # never the value, even in a traceback or a log line
        return f"key {self.key_id} of site {self.site}"
