"""PutRecords-style sending: batches within Kinesis' limits, and re-sending only what failed.

Used by the CLI (boto3 Kinesis PutRecords) and the pseudo_sensor_log Lambda (HTTP POST to
kinesis_api_gw, which answers with the same `FailedRecordCount` / `Records` shape). A call may
succeed while some entries fail; only those entries are sent again, with backoff, a bounded
number of tries in all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

MAX_RECORDS = 500  # per PutRecords call
MAX_BATCH_BYTES = 5 * 1024 * 1024  # per call, data + partition keys


class RetryableError(Exception):
    """The whole call failed in a way worth another try (throttling, 5xx, no connection)."""

    def __init__(self, code: str):
        super().__init__(code)
        self.code = code


class PermanentError(Exception):
    """The whole call was refused for good (e.g. 403): no further tries."""

    def __init__(self, code: str):
        super().__init__(code)
        self.code = code


# put(pending entries) -> one error code per entry (None = stored); raises the errors above.
Put = Callable[[list], list]


def batches(
    items: Iterable,
    size: Callable[[object], int] = lambda _: 0,
    max_records: int = MAX_RECORDS,
    max_bytes: int = MAX_BATCH_BYTES,
) -> Iterator[list]:
    """Consecutive slices of <= `max_records` items and <= `max_bytes` by `size`."""
    batch: list = []
    total = 0
    for item in items:
        item_size = size(item)
        if batch and (len(batch) == max_records or total + item_size > max_bytes):
            yield batch
            batch, total = [], 0
        batch.append(item)
        total += item_size
    if batch:
        yield batch


@dataclass
class Outcome:
    """One batch after its last try: what got through, what did not and why."""

    sent: int = 0
    unsent: list = field(default_factory=list)
    codes: dict[str, int] = field(default_factory=dict)  # error code -> entries, last try
    calls: int = 0
    resent: int = 0


def send_batch(
    batch: list,
    put: Put,
    sleep: Callable[[float], None],
    max_tries: int,
    backoff: Callable[[int], float],
) -> Outcome:
    """Send one batch; re-send only the failed entries, sleeping `backoff(attempt)` between."""
    outcome, pending = Outcome(), batch
    for attempt in range(max_tries):
        if attempt:
            outcome.resent += len(pending)
            sleep(backoff(attempt))
        outcome.calls += 1
        try:
            errors = put(pending)
        except RetryableError as exc:
            outcome.codes = {exc.code: len(pending)}
            continue
        except PermanentError as exc:
            outcome.codes = {exc.code: len(pending)}
            break
        failed = [(item, code) for item, code in zip(pending, errors, strict=True) if code]
        outcome.sent += len(pending) - len(failed)
        pending = [item for item, _ in failed]
        outcome.codes = dict(Counter(code for _, code in failed))
        if not pending:
            break
    outcome.unsent = pending
    return outcome


def error_codes(answer: dict, sent: int) -> list:
    """Per-entry error codes from a PutRecords answer (`FailedRecordCount`, `Records`)."""
    if not answer.get("FailedRecordCount"):
        return [None] * sent
    records = answer.get("Records")
    if not isinstance(records, list) or len(records) != sent:
        return ["Unknown"] * sent  # cannot tell which: re-send all (at least once)
    return [r.get("ErrorCode") if isinstance(r, dict) else "Unknown" for r in records]
