"""Kinesis PutRecords from the CLI: batching, partial-failure re-sends, and reading back.

One record is one reading as compact JSON (what `POST /records` on kinesis_api_gw puts), keyed
`greenhouse_id:device_id` like the API's mapping template, so a device's readings share a shard.
A call may succeed while some entries fail (`FailedRecordCount`); only those entries are sent
again, with capped exponential backoff (full jitter) and a bounded number of tries.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

MAX_RECORDS = 500  # per PutRecords call
MAX_BATCH_BYTES = 5 * 1024 * 1024  # per call, data + partition keys
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


def entry(reading: dict) -> dict:
    """A normalised reading -> a PutRecords entry."""
    data = json.dumps(reading, separators=(",", ":"), ensure_ascii=False).encode()
    return {"Data": data, "PartitionKey": f"{reading['greenhouse_id']}:{reading['device_id']}"}


def entry_size(item: dict) -> int:
    return len(item["Data"]) + len(item["PartitionKey"].encode())


def batches(entries: list[dict]) -> Iterator[list[dict]]:
    """Consecutive slices of <= 500 entries and <= 5 MiB each."""
    batch: list[dict] = []
    size = 0
    for item in entries:
        item_size = entry_size(item)
        if batch and (len(batch) == MAX_RECORDS or size + item_size > MAX_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += item_size
    if batch:
        yield batch


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
    calls: int = 0
    resent: int = 0

    def send(self, entries: Iterable[dict]) -> int:
        """Send every entry or raise Unsent with the ones that could not be sent."""
        entries = list(entries)
        pending_batches = list(batches(entries))
        for number, batch in enumerate(pending_batches):
            try:
                self._send_batch(batch)
            except Unsent as unsent:
                for later in pending_batches[number + 1 :]:
                    unsent.entries.extend(later)
                unsent.sent = self.sent
                raise
        return len(entries)

    def _send_batch(self, batch: list[dict]) -> None:
        from botocore.exceptions import ClientError

        pending = batch
        codes: dict[str, int] = {}
        for attempt in range(self.max_tries):
            if attempt:
                self.resent += len(pending)
                self.sleep(self.rng.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt)))
            self.calls += 1
            try:
                response = self.client.put_records(StreamName=self.stream_name, Records=pending)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code not in RETRYABLE_CALL_ERRORS:
                    raise
                codes = {code: len(pending)}
                continue
            results = response["Records"]
            failed = [
                (item, result)
                for item, result in zip(pending, results, strict=True)
                if result.get("ErrorCode")
            ]
            self.sent += len(pending) - len(failed)
            if not failed:
                return
            codes = {}
            for _, result in failed:
                codes[result["ErrorCode"]] = codes.get(result["ErrorCode"], 0) + 1
            pending = [item for item, _ in failed]
        raise Unsent(list(pending), self.sent, self.max_tries, codes)


def decode(data: bytes):
    """One Kinesis record's data -> the reading it holds (or an Unparsable with the reason)."""
    from ..core.validate import Unparsable

    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        text = data.decode("utf-8", errors="replace")[:2000]
        return Unparsable(f"stream record is not JSON: {exc}", text)
