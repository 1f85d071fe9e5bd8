"""The HTTP contract of kinesis_api_gw (terraform/ingest.tf), without any web framework.

What API Gateway and Kinesis do to a request, in their order, so `farmctl serve` accepts and
refuses exactly what the deployed API would:

1. the `x-api-key` header (403 `{"message": "Forbidden"}` without a valid key);
2. the usage plan's throttle (429 `{"message": "Too Many Requests"}`);
3. the payload limit (413) and the media type (`passthrough_behavior = NEVER`: only
   `application/json` has a template; no Content-Type counts as JSON, anything else is 415);
4. the request model (terraform/schemas/reading.json or reading_batch.json, generated from
   core.schema): 400 `{"message": "Invalid request body"}` (ingest_bad_body), plus a `reason`
   here (the deployed API keeps that in its access log);
5. Kinesis' own limits (1 MiB per record, 5 MiB per PutRecords call): 400 with the
   error_response.vtl shape;
6. PutRecord / PutRecords answers in the shapes of put_record_response.vtl and
   put_records_response.vtl; a stream too busy to take the write is a 429 in the
   error_response.vtl shape, as Kinesis throttling is there.

Value rules (timestamps, numeric strings, ranges) are not part of the request model: on AWS the
Firehose transform applies them after the stream has taken the record. Here the core's
validation runs before the append and a refused reading goes to the rejected store, so the
device gets the same 200 as from AWS and `farmctl rejected` shows the reason.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass

from ..core.putrecords import MAX_BATCH_BYTES, MAX_RECORDS

MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway REST payload limit
MAX_HEADER_BYTES = 10 * 1024  # API Gateway: request line + headers
MAX_RECORD_BYTES = 1024 * 1024  # Kinesis: one record's data + partition key
SHARD_ID = "shardId-000000000000"  # one stream, one shard: the SQLite stream.db

ROUTES = {"/record": "PutRecord", "/records": "PutRecords"}


class ContractError(Exception):
    """A request the deployed API would refuse: its status, JSON body and extra headers."""

    def __init__(self, status: int, body: dict, headers: dict | None = None):
        super().__init__(body.get("message", ""))
        self.status = status
        self.body = body
        self.headers = headers or {}


def forbidden() -> ContractError:
    return ContractError(403, {"message": "Forbidden"})


def missing_route() -> ContractError:
    # What API Gateway answers for a path or method it does not have.
    return ContractError(403, {"message": "Missing Authentication Token"})


def too_many_requests(retry_after_s: float) -> ContractError:
    seconds = max(1, int(retry_after_s + 0.999))
    return ContractError(429, {"message": "Too Many Requests"}, {"Retry-After": str(seconds)})


def too_large(limit: int = MAX_BODY_BYTES) -> ContractError:
    return ContractError(
        413, {"message": f"Request Too Large: the body may be at most {limit:,} bytes"}
    )


def unsupported_media_type() -> ContractError:
    return ContractError(415, {"message": "Unsupported Media Type: send application/json"})


def bad_body(reason: str) -> ContractError:
    return ContractError(400, {"message": "Invalid request body", "reason": reason})


def stream_error(status: int, kind: str, message: str, retry_after_s: int | None = None):
    """error_response.vtl: a generic message and the request id; the stream's own error
    (`kind`, `message`) goes to the server's log under that id, never to the client (on AWS
    it can name the account, roles and key ARNs)."""
    import logging
    import uuid

    request_id = str(uuid.uuid4())
    logging.getLogger("smartfarm.serve").warning(
        "request %s refused by the stream: %s: %s", request_id, kind, message
    )
    headers = {"Retry-After": str(retry_after_s)} if retry_after_s else None
    text = "the stream is busy: retry later" if status == 429 else "the stream rejected the request"
    return ContractError(status, {"message": text, "requestId": request_id}, headers)


def check_media_type(content_type: str | None) -> None:
    if content_type is None:
        return  # API Gateway treats a request without Content-Type as application/json
    media = content_type.split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise unsupported_media_type()


@dataclass(frozen=True)
class _Models:
    reading: object
    batch: object


_models: _Models | None = None


def models() -> _Models:
    """The request models of ingest.tf, compiled once (fastjsonschema, draft-04)."""
    global _models
    if _models is None:
        import fastjsonschema

        from ..core import schema

        _models = _Models(
            fastjsonschema.compile(schema.reading_json_schema()),
            fastjsonschema.compile(schema.batch_json_schema(MAX_RECORDS)),
        )
    return _models


def parse(route: str, body: bytes) -> list:
    """A request body -> the readings it carries, or ContractError as the deployed API answers."""
    import fastjsonschema

    if len(body) > MAX_BODY_BYTES:
        raise too_large()
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise bad_body("the body is not JSON") from None
    model = models().batch if route == "/records" else models().reading
    try:
        model(data)
    except fastjsonschema.JsonSchemaException as exc:
        raise bad_body(exc.message.replace("data.", "", 1).replace("data ", "body ", 1)) from None
    readings = data["records"] if route == "/records" else [data]
    _check_kinesis_limits(readings, len(body))
    return readings


def _check_kinesis_limits(readings: list, body_bytes: int) -> None:
    """Kinesis refuses a record over 1 MiB and a PutRecords call over 5 MiB (whole call, 400)."""
    if body_bytes <= MAX_RECORD_BYTES:
        return  # no record (and no call) can be larger than the body it came in
    total = 0
    for reading in readings:
        size = len(json.dumps(reading, separators=(",", ":")).encode())
        size += len(f"{reading['greenhouse_id']}:{reading['device_id']}".encode())
        if size > MAX_RECORD_BYTES:
            raise stream_error(
                400, "ValidationException", f"a record is {size:,} bytes; at most 1 MiB each"
            )
        total += size
    if total > MAX_BATCH_BYTES:
        raise stream_error(
            400,
            "InvalidArgumentException",
            f"the records total {total:,} bytes; at most 5 MiB per request",
        )


class SequenceNumbers:
    """Opaque, increasing sequence numbers, as Kinesis gives them (digits in a string)."""

    def __init__(self):
        self._counter = itertools.count()
        self._prefix = f"{int(time.time() * 1000):013d}"

    def take(self, n: int) -> list[str]:
        return [f"4{self._prefix}{next(self._counter):016d}" for _ in range(n)]


def answer(route: str, sequence_numbers: list[str]) -> dict:
    """put_record_response.vtl / put_records_response.vtl for readings the stream took."""
    if route == "/record":
        return {"FailedRecordCount": 0, "SequenceNumber": sequence_numbers[0], "ShardId": SHARD_ID}
    return {
        "FailedRecordCount": 0,
        "Records": [{"SequenceNumber": s, "ShardId": SHARD_ID} for s in sequence_numbers],
    }
