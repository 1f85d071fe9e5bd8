"""The same readings to `farmctl serve` and to the aws pipeline end in the same rows.

aws:    the CLI's Kinesis sender (targets.aws_kinesis.KinesisSender, PutRecords batches) into a
        moto Kinesis stream, each record exactly as kinesis_api_gw's template puts it (the
        reading's JSON); read back and run through the firehose_transform Lambda, as Firehose
        would; the rows it passes as Ok are what lands in S3.
serve:  the pseudo_sensor_log Lambda's HTTP sender (written for kinesis_api_gw's POST /records)
        pointed at a real `farmctl serve`; stopped with SIGTERM; the rows are read from the lake.
"""

from __future__ import annotations

import base64
import json
import time

from reliability.lambdas import load
from serve_support import ServeProcess, lake_rows

from smartfarm_cli.core import generator
from smartfarm_cli.core.putrecords import batches
from smartfarm_cli.core.validate import parse_timestamp_ms
from smartfarm_cli.targets.aws_kinesis import KinesisSender, entry
from smartfarm_cli.targets.local import LocalTarget

REGION = "eu-west-1"


def _readings() -> list[dict]:
    now_ms = int(time.time() * 1000)
    # stand-ins for devices: real readings (devices may not send synthetic: true)
    made = generator.generate(now_ms - 3_600_000, 120, 30.0, 3, 2, 0.05, seed=7, synthetic=False)
    raw = generator.to_json_records(made.table)
    for i, reading in enumerate(raw):
        if i % 7 == 0:  # the seed's numeric strings, and epoch forms
            reading["temperature"] = (
                None if reading["temperature"] is None else str(reading["temperature"])
            )
            reading["error_code"] = str(reading["error_code"])
        if i % 11 == 0:
            reading["timestamp"] = parse_timestamp_ms(reading["timestamp"]) // 1000 * 1000
    # Shape-valid, value-invalid: both pipelines take them into the stream and refuse them later.
    raw[5]["timestamp"] = "2026-11-28T10:00:00"  # no offset
    raw[9]["timestamp"] = 631_152_000  # 1990
    raw[13]["co2"] = "lots"
    return raw


def _row(reading: dict) -> tuple:
    return (
        reading["greenhouse_id"],
        reading["device_id"],
        parse_timestamp_ms(reading["timestamp"]),
        reading["temperature"],
        reading["humidity"],
        reading["co2"],
        reading["error_code"],
    )


def _through_aws(raw: list[dict], monkeypatch, tmp_path) -> tuple[set, int]:
    from moto import mock_aws

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
    }.items():
        monkeypatch.setenv(name, value)
    transform = load("firehose_transform")
    with mock_aws():
        import boto3

        kinesis = boto3.client("kinesis", region_name=REGION)
        kinesis.create_stream(StreamName="readings", ShardCount=2)
        sender = KinesisSender(kinesis, "readings", sleep=lambda s: None)
        assert sender.send([entry(r) for r in raw]) == len(raw)
        records = []
        for shard in kinesis.list_shards(StreamName="readings")["Shards"]:
            iterator = kinesis.get_shard_iterator(
                StreamName="readings", ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
            while iterator:
                page = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
                records += page["Records"]
                iterator = page.get("NextShardIterator") if page["Records"] else None
    assert len(records) == len(raw)
    event = {
        "records": [
            {"recordId": str(i), "data": base64.b64encode(r["Data"]).decode()}
            for i, r in enumerate(records)
        ]
    }
    out = transform.transform(event)["records"]
    ok = [json.loads(base64.b64decode(r["data"])) for r in out if r["result"] == "Ok"]
    return {_row(r) for r in ok}, sum(r["result"] != "Ok" for r in out)


def _through_serve(raw: list[dict], tmp_path) -> tuple[set, int]:
    sensor = load("pseudo_sensor_log")
    home = tmp_path / "serve-home"
    proc = ServeProcess(home, "--rate-limit", "1000", "--burst-limit", "1000").start()
    try:
        stats = sensor.SendStats()
        for batch in batches(raw):
            sensor.send_batch(
                batch, proc.url + "/records", proc.key, sensor.urllib_post, time.sleep, stats
            )
        assert stats.sent == len(raw) and stats.failed == 0
    finally:
        proc.stop()
    rows = {
        (g, d, int(ts.timestamp() * 1000) if ts.tzinfo else _naive_ms(ts), t, h, c, e)
        for g, d, ts, t, h, c, e in lake_rows(home)
    }
    target = LocalTarget(home)
    refused = target.status()["rejected_readings"]
    target.close()
    return rows, refused


def _naive_ms(stamp) -> int:
    from datetime import UTC

    return int(stamp.replace(tzinfo=UTC).timestamp() * 1000)


def test_serve_and_the_aws_pipeline_store_the_same_rows(monkeypatch, tmp_path):
    raw = _readings()
    aws_rows, aws_failed = _through_aws(raw, monkeypatch, tmp_path)
    serve_rows, serve_refused = _through_serve(raw, tmp_path)
    assert aws_failed == serve_refused == 3
    assert len(aws_rows) == len(raw) - 3
    assert serve_rows == aws_rows
    assert any(r[6] != 0 for r in serve_rows), "the anomalies made it through both"
