"""firehose_transform: Firehose data transformation running the core validation.

Input:  {"records": [{"recordId": ..., "data": base64(one reading as JSON)}, ...], ...}
Output: {"records": [{"recordId", "result", "data", "metadata"}]} with, per record,
  Ok                the normalised reading (numbers as numbers, timestamp as
                    yyyy-MM-dd'T'HH:mm:ss.SSS'Z' in UTC, which the OpenX JSON SerDe parses) as
                    base64(JSON + "\\n"), and `metadata.partitionKeys` {year, month, day, hour}
                    of the reading's own time, for the prefix
                    `logs/year=!{partitionKeyFromLambda:year}/month=.../hour=.../`
  ProcessingFailed  the original data, unchanged; Firehose writes it under the error prefix.
                    The reason is logged (JSON line with recordId and reason). A re-sent
                    reading whose values differ from its first copy in the batch is one.
  Dropped           a re-sent reading identical to its first copy in the batch.

One record holds one reading (what the kinesis_api_gw integration puts per Kinesis record).
`synthetic` in the output is decided by the record's Kinesis partition key, never by the body:
the ingest API's mapping template prefixes the key with `synthetic/` only for the simulator's
own API key (devices cannot choose the key, and the request model refuses `synthetic: true`
from them), and farmctl does the same for the synthetic readings it puts with the caller's AWS
credentials. A body claiming `synthetic: true` under a device's key is stored as real: a device
can never silence its own alerts.
The "not in the future" check is relative to the record's arrival time when Firehose gives it,
so buffering delays never reject a good reading.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from datetime import UTC, datetime

from smartfarm_cli.core.jsonlog import log
from smartfarm_cli.core.schema import COLUMN_NAMES, FIELD_NAMES, SYNTHETIC_PARTITION_PREFIX
from smartfarm_cli.core.validate import (
    parse_json_lines,
    partition_values,
    resent_reason,
    validate,
)

OK = "Ok"
FAILED = "ProcessingFailed"
DROPPED = "Dropped"


def iso_ms(ts_ms: int) -> str:
    """Epoch ms -> `2026-11-28T15:00:00.123Z` (OpenX SerDe: yyyy-MM-dd'T'HH:mm:ss.SSS'Z')."""
    moment = datetime.fromtimestamp(ts_ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"


def _arrival_ms(record: dict) -> int | None:
    meta = record.get("kinesisRecordMetadata") or {}
    value = meta.get("approximateArrivalTimestamp") or record.get("approximateArrivalTimestamp")
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def is_synthetic(record: dict) -> bool:
    """True when the record's Kinesis partition key marks a synthetic reading."""
    key = (record.get("kinesisRecordMetadata") or {}).get("partitionKey")
    return isinstance(key, str) and key.startswith(SYNTHETIC_PARTITION_PREFIX)


def transform_record(record: dict, now_ms: int | None = None) -> tuple[dict, str | None]:
    """One Firehose record -> (output record, rejection reason or None)."""
    record_id = record.get("recordId")
    original = record.get("data", "")
    try:
        text = base64.b64decode(original, validate=True).decode("utf-8")
    except (binascii.Error, ValueError, TypeError):
        return _failed(record_id, original), "data is not base64-encoded UTF-8"
    items = parse_json_lines(text)
    if len(items) != 1:
        reason = "record is empty" if not items else f"record holds {len(items)} readings, not 1"
        return _failed(record_id, original), reason
    arrival = _arrival_ms(record)
    batch = validate(items, now_ms=arrival if arrival is not None else now_ms)
    if batch.rejected:
        return _failed(record_id, original), batch.rejected[0].reason
    row = batch.accepted.to_pylist()[0]
    ts_ms = int(batch.accepted["timestamp"].cast("int64")[0].as_py())
    reading = {name: row[name] for name in COLUMN_NAMES}
    reading["timestamp"] = iso_ms(ts_ms)
    reading["synthetic"] = is_synthetic(record)
    data = json.dumps(reading, separators=(",", ":"), allow_nan=False) + "\n"
    return {
        "recordId": record_id,
        "result": OK,
        "data": base64.b64encode(data.encode()).decode(),
        "metadata": {"partitionKeys": partition_values(ts_ms)},
    }, None


def _first_copy_wins(out: dict, record: dict, seen: dict) -> tuple[dict, str | None]:
    """One rule for re-sent readings on every path: the first copy of a reading is kept.

    Within one batch, a later identical copy is Dropped; a later copy with other values goes
    to the error prefix with the difference as its reason (`farmctl rejected` lists it).
    Copies in different batches reach the lake; queries count one per key (core.queries).
    """
    reading = json.loads(base64.b64decode(out["data"]))
    key = (reading["greenhouse_id"], reading["device_id"], reading["timestamp"])
    values = tuple(reading[name] for name in FIELD_NAMES[3:])  # metrics and error_code
    if key not in seen:
        seen[key] = values
        return out, None
    if seen[key] == values:
        return {"recordId": out["recordId"], "result": DROPPED, "data": out["data"]}, None
    return _failed(record.get("recordId"), record.get("data", "")), resent_reason(seen[key], values)


def _failed(record_id, original) -> dict:
    return {"recordId": record_id, "result": FAILED, "data": original}


def transform(event: dict, now_ms: int | None = None) -> dict:
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    output, rejected = [], 0
    seen: dict[tuple, tuple] = {}  # (greenhouse, device, timestamp) -> values of the first copy
    for record in event.get("records") or []:
        out, reason = transform_record(record, now_ms)
        if reason is None:
            out, reason = _first_copy_wins(out, record, seen)
        output.append(out)
        if reason:
            rejected += 1
            log("WARNING", "reading_rejected", recordId=out["recordId"], reason=reason)
    log(
        "INFO",
        "batch_transformed",
        records=len(output),
        ok=len(output) - rejected,
        rejected=rejected,
        deliveryStreamArn=event.get("deliveryStreamArn"),
    )
    return {"records": output}


def handler(event, context):
    return transform(event)
