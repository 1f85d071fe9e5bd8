"""Kinesis PutRecords from the CLI: batching, partial-failure re-sends, and reading back.

One record is one reading as compact JSON (what `POST /records` on kinesis_api_gw puts), keyed
`greenhouse_id:device_id` like the API's mapping template, so a device's readings share a shard.
A call may succeed while some entries fail (`FailedRecordCount`); only those entries are sent
again, with capped exponential backoff (full jitter) and a bounded number of tries.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..core.putrecords import MAX_RECORDS, RetryableError, batches, error_codes, send_batch

MAX_TRIES = 6  # per batch, first try included
BACKOFF_BASE_S = 0.1
BACKOFF_CAP_S = 5.0
# Whole-call failures worth another try (botocore already retried them a few times).
RETRYABLE_CALL_ERRORS = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "LimitExceededException",
    "InternalFailure",
    "ServiceUnavailable",
    "KMSThrottlingException",
}
__all__ = ["MAX_RECORDS", "MAX_TRIES", "KinesisSender", "Unsent", "decode", "entry"]


def entry(reading: dict) -> dict:
    """A normalised reading -> a PutRecords entry (a synthetic one under the marked key)."""
    from ..core.schema import SYNTHETIC_PARTITION_PREFIX

    data = json.dumps(reading, separators=(",", ":"), ensure_ascii=False).encode()
    key = f"{reading['greenhouse_id']}:{reading['device_id']}"
    if reading.get("synthetic") is True:
        key = SYNTHETIC_PARTITION_PREFIX + key
    return {"Data": data, "PartitionKey": key}


def entry_size(item: dict) -> int:
    return len(item["Data"]) + len(item["PartitionKey"].encode())


@dataclass
class Unsent(Exception):
    """Entries Kinesis still refused after the last try (plus any not yet attempted)."""

    entries: list[dict]
    sent: int
    tries: int
    codes: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        codes = ", ".join(f"{code} x{n}" for code, n in sorted(self.codes.items()))
        return f"{len(self.entries)} readings unsent after {self.tries} tries ({codes})"


@dataclass
class KinesisSender:
    client: object
    stream_name: str
    sleep: Callable[[float], None]
    max_tries: int = MAX_TRIES
    rng: random.Random = field(default_factory=random.Random)
    sent: int = 0

    def send(self, entries: Iterable[dict]) -> int:
        """Send every entry or raise Unsent with the ones that could not be sent."""
        entries = list(entries)
        pending_batches = list(batches(entries, entry_size))
        for number, batch in enumerate(pending_batches):
            outcome = send_batch(batch, self._put, self.sleep, self.max_tries, self._backoff)
            self.sent += outcome.sent
            if outcome.unsent:
                later = [item for rest in pending_batches[number + 1 :] for item in rest]
                raise Unsent(outcome.unsent + later, self.sent, self.max_tries, outcome.codes)
        return len(entries)

    def _backoff(self, attempt: int) -> float:
        """Capped exponential backoff with full jitter."""
        return self.rng.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt))

    def _put(self, pending: list[dict]) -> list:
        from botocore.exceptions import ClientError

        try:
            response = self.client.put_records(StreamName=self.stream_name, Records=pending)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in RETRYABLE_CALL_ERRORS:
                raise RetryableError(code) from None
            raise  # AccessDenied, ResourceNotFound...: mapped to one clear line upstream
        return error_codes(response, len(pending))


def decode(data: bytes):
    """One Kinesis record's data -> the reading it holds (or an Unparsable with the reason)."""
    from ..core.validate import Unparsable

    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        text = data.decode("utf-8", errors="replace")[:2000]
        return Unparsable(f"stream record is not JSON: {exc}", text)
