"""The interface both targets satisfy: what the CLI may call, whichever target it drives.

`LocalTarget` and `AwsTarget` implement it structurally (no base class); a test checks that
every method here exists on both with the same parameters, so a command written against
`Target` runs on either.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import BinaryIO, Protocol

import pyarrow as pa

from ..core.queries import Query
from ..core.rules import Rules
from .results import DeliveryReport, IngestResult, NewKey, QueryResult, SimulateReport

Progress = Callable[[int, int], None]


class Target(Protocol):
    name: str
    rules: Rules

    def prepare(self, writes: bool) -> None:
        """Fail early, in one line, when the target cannot serve a command (no home, no stack)."""

    def ingest(self, items: Iterable, source: str = "ingest", deliver: bool = True) -> IngestResult:
        """Validate raw readings; store the good ones, keep the bad ones with their reason."""

    def ingest_stream(self, stream: BinaryIO, source: str = "ingest") -> IngestResult:
        """NDJSON / a JSON array of any size from a byte stream, in bounded chunks."""

    def simulate(
        self,
        count: int,
        interval_s: float,
        greenhouses: int = 1,
        devices: int = 1,
        anomaly_rate: float = 0.0,
        seed: int | None = None,
        direct: bool = False,
        progress: Progress | None = None,
        sleep: Callable[[float], None] = ...,
    ) -> SimulateReport:
        """`count` sends, `interval_s` apart, one generated reading per greenhouse x device."""

    def backfill(
        self,
        days: float,
        greenhouses: int = 3,
        devices: int = 2,
        interval_s: float = 60.0,
        anomaly_rate: float = 0.0,
        seed: int = 0,
        end: datetime | None = None,
        progress: Progress | None = None,
    ) -> tuple[DeliveryReport, int]:
        """Generated history straight into the lake; -> (report, readings that failed checks)."""

    def deliver(self, force: bool = False) -> DeliveryReport:
        """Move waiting stream readings to the lake (local); nothing to do on aws (Firehose)."""

    def query(
        self, sql: str, params: list | None = None, partitions_from: str | None = None
    ) -> QueryResult:
        """One read-only SELECT (sqlguard) over readings and spikes."""

    def run(self, query: Query) -> QueryResult:
        """A query built by core.queries (`query.dialect`: the local target runs its DuckDB
        text as built, behind DuckDB's wall; Athena text goes through the `query` gate)."""

    def trend(
        self,
        metric: str,
        days: float,
        every: str = "1h",
        greenhouse: str | None = None,
        zone: str | None = None,
        synthetic: str = "exclude",
    ) -> QueryResult:
        """Buckets aligned on `zone`'s wall clock (core.queries.resolve_zone), `partial` marked.

        `synthetic`: exclude (default), include or only synthetic readings (core.queries)."""

    def spikes(
        self,
        since: str = "24h",
        severity: str | None = None,
        greenhouse: str | None = None,
        limit: int = 200,
        detected: bool = False,
        synthetic: str = "include",
    ) -> QueryResult:
        """`since` on the reading's time, or on detection time with `detected`."""

    def latest(self, synthetic: str = "include") -> QueryResult: ...

    def follow(self, poll_s: float = 0.2, backlog: int = 500) -> Iterator[pa.Table]:
        """Batches of readings as they arrive, forever (for `watch`)."""

    def status(self) -> dict:
        """One flat object with snake_case keys and typed values."""

    def rejected(self, limit: int = 50) -> QueryResult: ...

    def alerts(self, since: str = "24h", state: str | None = None) -> QueryResult:
        """Open incidents and incident history (core.incidents.ALERT_COLUMNS)."""

    def check(self, now_ms: int | None = None, retry_after_s: float = 60.0) -> list:
        """Look for silent devices now and announce them -> the incident events it produced."""

    # Device API keys, per site (issue 16): `farmctl keys`. Values are never listed or stored.
    def list_keys(self) -> QueryResult:
        """results.KEY_COLUMNS: site, key id, label, enabled, created, last used (or None)."""

    def create_key(self, site: str, label: str = "") -> NewKey:
        """A new enabled key for `site`; its value is in the result and nowhere else."""

    def revoke_key(self, key_id: str, delete: bool = False) -> None:
        """Disable a key (devices sending it get 403), or delete it for good."""
