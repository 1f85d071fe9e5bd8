"""The dashboard's data: the CLI's own queries, shaped for the page.

latest  `farmctl latest` (LocalTarget.latest: core.queries.latest_per_device over the lake),
        overlaid with the stream tail the server's LiveBoard follows (the `farmctl watch` board),
        so a reading shows before its delivery; the newer of the two wins per device.
trend   `farmctl trend METRIC --days D --every E` (LocalTarget.trend), per greenhouse.
spikes  `farmctl spikes --since S` (LocalTarget.spikes).
"""

from __future__ import annotations

from ..core.queries import QueryError

# Bucket per window, so a chart has a few hundred points at most.
DEFAULT_EVERY = ((1, "5m"), (2, "15m"), (7, "1h"), (31, "6h"))
MAX_DAYS = 366


def _every_for(days: float) -> str:
    for limit, every in DEFAULT_EVERY:
        if days <= limit:
            return every
    return "1d"


def latest_rows(target, live: list[dict]) -> list[dict]:
    rows = {
        (r["greenhouse_id"], r["device_id"]): dict(r, live=False) for r in target.latest().records()
    }
    for row in live:
        device = (row["greenhouse_id"], row["device_id"])
        if device not in rows or row["timestamp"] >= rows[device]["timestamp"]:
            rows[device] = dict(row, live=True)
    return [rows[k] for k in sorted(rows)]


def trend_rows(target, metric: str, days: str, every: str | None, greenhouse: str | None) -> dict:
    try:
        window = float(days)
    except ValueError:
        raise QueryError(f"days must be a number, got {days[:20]!r}") from None
    if not 0 < window <= MAX_DAYS:
        raise QueryError(f"days must be from 0 to {MAX_DAYS}")
    every = every or _every_for(window)
    result = target.trend(metric, window, every, greenhouse or None, synthetic="include")
    return {"metric": metric, "days": window, "every": every, "rows": result.records()}


def spike_rows(target, since: str, severity: str | None, limit: str) -> dict:
    if not limit.isdigit() or not 1 <= int(limit) <= 1000:
        raise QueryError("limit must be a whole number from 1 to 1000")
    result = target.spikes(since, severity or None, None, int(limit))
    rows = result.records()
    for row in rows:
        row.pop("source_key", None)  # a path inside the home: not the page's business
    return {"since": since, "rows": rows}
