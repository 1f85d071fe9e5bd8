"""firehose_transform: Firehose data-transformation records in, normalised records out."""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOW_MS = int(datetime(2026, 11, 28, 15, 30, tzinfo=UTC).timestamp() * 1000)
OPENX_TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def load_handler():
    path = ROOT / "lambdas" / "firehose_transform" / "handler.py"
    spec = importlib.util.spec_from_file_location("firehose_transform_handler", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


fh = load_handler()


@pytest.fixture(autouse=True)
def _default_log_level(monkeypatch):
    monkeypatch.delenv("LOG_LEVEL", raising=False)


def record(i, payload, arrival_ms=NOW_MS):
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return {
        "recordId": f"49546986683135544286507457936321625675700192471156785154{i:04d}",
        "approximateArrivalTimestamp": arrival_ms,
        "data": base64.b64encode(data).decode(),
        "kinesisRecordMetadata": {
            "sequenceNumber": f"4954698668313554428650745793632162567570019247115678{i:04d}",
            "subsequenceNumber": 0,
            "partitionKey": "gh-1",
            "shardId": "shardId-000000000000",
            "approximateArrivalTimestamp": arrival_ms,
        },
    }


def event(*records):
    return {
        "invocationId": "invoked-123",
        "deliveryStreamArn": "arn:aws:firehose:us-east-1:123456789012:deliverystream/smartfarm",
        "sourceKinesisStreamArn": "arn:aws:kinesis:us-east-1:123456789012:stream/smartfarm",
        "region": "us-east-1",
        "records": list(records),
    }


GOOD = {
    "greenhouse_id": "gh-1",
    "device_id": "dev-1",
    "timestamp": "2026-11-29T00:15:30.5+09:00",  # Seoul time -> 2026-11-28 15:15:30.500 UTC
    "temperature": "400",  # the seed's string numbers
    "humidity": 55,
    "co2": "812.5",
    "error_code": "1",
}


def decode(out):
    return json.loads(base64.b64decode(out["data"]))


def test_normalises_timestamps_numbers_and_partition_keys(capsys):
    fifteen = int(datetime(2026, 11, 28, 15, tzinfo=UTC).timestamp())
    epoch_s = dict(GOOD, timestamp=fifteen, temperature=21.25, error_code=0)
    epoch_ms = dict(GOOD, timestamp=fifteen * 1000 + 123, error_code=3, temperature=None)
    result = fh.handler(event(record(0, GOOD), record(1, epoch_s), record(2, epoch_ms)), None)
    outs = result["records"]
    assert [o["result"] for o in outs] == ["Ok", "Ok", "Ok"]
    assert [o["recordId"] for o in outs] == [
        r["recordId"]
        for r in event(record(0, GOOD), record(1, epoch_s), record(2, epoch_ms))["records"]
    ]

    first = decode(outs[0])
    assert first == {
        "greenhouse_id": "gh-1",
        "device_id": "dev-1",
        "timestamp": "2026-11-28T15:15:30.500Z",
        "temperature": 400.0,
        "humidity": 55.0,
        "co2": 812.5,
        "error_code": 1,
        "synthetic": False,
    }
    assert base64.b64decode(outs[0]["data"]).endswith(b"\n")
    assert outs[0]["metadata"] == {
        "partitionKeys": {"year": "2026", "month": "11", "day": "28", "hour": "15"}
    }
    assert decode(outs[1])["timestamp"] == "2026-11-28T15:00:00.000Z"
    assert decode(outs[2])["timestamp"] == "2026-11-28T15:00:00.123Z"
    assert decode(outs[2])["temperature"] is None
    for out in outs:
        reading = decode(out)
        assert OPENX_TS.match(reading["timestamp"])
        for metric in ("humidity", "co2"):
            assert isinstance(reading[metric], float)
        assert isinstance(reading["error_code"], int)
    assert '"ok": 3' in capsys.readouterr().out


def test_partition_follows_event_time_across_midnight():
    late = dict(GOOD, timestamp="2026-11-27T23:59:59.999Z")
    out = fh.handler(event(record(0, late)), None)["records"][0]
    assert out["metadata"]["partitionKeys"] == {
        "year": "2026",
        "month": "11",
        "day": "27",
        "hour": "23",
    }


def test_rejects_are_processing_failed_with_original_data_and_logged(capsys):
    bad = [
        b"this is not json",
        json.dumps({k: v for k, v in GOOD.items() if k != "device_id"}).encode(),
        json.dumps(dict(GOOD, humidity="NaN")).encode(),
        json.dumps(dict(GOOD, timestamp="2026-11-28 15:00:00")).encode(),  # no offset
        json.dumps(dict(GOOD, greenhouse_id="gh 1; drop")).encode(),
        json.dumps(dict(GOOD, timestamp="2030-01-01T00:00:00Z")).encode(),  # future
        json.dumps(dict(GOOD, error_code=True)).encode(),
        json.dumps([GOOD, GOOD]).encode(),
        b"",
    ]
    records = [record(i, payload) for i, payload in enumerate(bad)]
    records.append({"recordId": "not-base64", "data": "%%%"})
    records.append(record(99, GOOD))
    outs = fh.handler(event(*records), None)["records"]
    assert [o["result"] for o in outs] == ["ProcessingFailed"] * (len(bad) + 1) + ["Ok"]
    for out, original in zip(outs, records, strict=True):
        assert out["recordId"] == original["recordId"]
        if out["result"] == "ProcessingFailed":
            assert out["data"] == original["data"] and "metadata" not in out
    logs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    reasons = [line["reason"] for line in logs if line["event"] == "reading_rejected"]
    assert len(reasons) == len(bad) + 1
    joined = " | ".join(reasons)
    for fragment in (
        "missing field",
        "humidity must be a number",
        "no UTC offset",
        "greenhouse_id",
        "future",
        "boolean",
        "2 readings",
        "base64",
    ):
        assert fragment in joined, fragment
    summary = next(line for line in logs if line["event"] == "batch_transformed")
    assert summary["ok"] == 1 and summary["rejected"] == len(bad) + 1


def test_future_check_uses_the_arrival_time():
    # A reading 1 minute before its arrival is fine even if Firehose buffered it for hours.
    arrival = NOW_MS - 3 * 3_600_000
    reading = dict(GOOD, timestamp=arrival - 60_000)
    out = fh.transform(event(record(0, reading, arrival_ms=arrival)), now_ms=NOW_MS)
    assert out["records"][0]["result"] == "Ok"
    too_new = dict(GOOD, timestamp=arrival + 3_600_000)
    out = fh.transform(event(record(0, too_new, arrival_ms=arrival)), now_ms=NOW_MS)
    assert out["records"][0]["result"] == "ProcessingFailed"


def test_empty_event():
    assert fh.handler(event(), None) == {"records": []}


def test_log_level_filters_lines(monkeypatch, capsys):
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    fh.handler(event(record(0, GOOD), record(1, b"nope")), None)
    events = [json.loads(line)["event"] for line in capsys.readouterr().out.splitlines()]
    assert events == ["reading_rejected"]
