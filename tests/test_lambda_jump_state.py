"""anomaly_detector with STATE_TABLE: `jump` across S3 objects through the real handler, on moto
S3 + DynamoDB (issue 15, bug 2). Temperature limit 3 °C/min."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import boto3
import pytest
from reliability.lambdas import load, moto_buckets
from test_lambda_anomaly_detector import Context, s3_event

from smartfarm_cli.core import lake
from smartfarm_cli.core.validate import table_from_rows

LOG_BUCKET, SPIKE_BUCKET, TABLE = "sensor-log-bucket", "spike-log-bucket", "smartfarm-state"
T0 = int(datetime(2026, 11, 28, 10, 0, tzinfo=UTC).timestamp() * 1000)
MIN = 60_000
handler = load("anomaly_detector")


@pytest.fixture
def aws(monkeypatch):
    monkeypatch.setenv("SPIKE_BUCKET", SPIKE_BUCKET)
    monkeypatch.setenv("STATE_TABLE", TABLE)
    monkeypatch.delenv("DISCORD_WEBHOOK_SSM_PARAMETER", raising=False)
    with moto_buckets(LOG_BUCKET, SPIKE_BUCKET) as s3:
        boto3.client("dynamodb").create_table(
            TableName=TABLE,
            KeySchema=[
                {"AttributeName": "device", "KeyType": "HASH"},
                {"AttributeName": "kind", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "device", "AttributeType": "S"},
                {"AttributeName": "kind", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        yield s3


def put(s3, key, readings):
    rows = [("gh-1", "d1", T0 + m * MIN, t, 60.0, 800.0, 0) for m, t in readings]
    s3.put_object(Bucket=LOG_BUCKET, Key=key, Body=lake.parquet_bytes(table_from_rows(rows)))


def spike_rows(s3):
    found = []
    listing = s3.list_objects_v2(Bucket=SPIKE_BUCKET, Prefix="spikes/")
    for obj in listing.get("Contents", []):
        body = s3.get_object(Bucket=SPIKE_BUCKET, Key=obj["Key"])["Body"].read()
        table = lake.read_parquet_bytes(body)
        for row in table.to_pylist():
            minute = round((row["timestamp"].replace(tzinfo=UTC).timestamp() * 1000 - T0) / MIN)
            found.append((row["rule"], minute, row["temperature"], row["source_key"]))
    return sorted(found)


def key(n):
    return f"logs/year=2026/month=11/day=28/hour=10/stream-{n}.parquet"


def test_jump_across_objects_late_return_replay_and_duplicate_event(aws):
    put(aws, key(1), [(0, 20.0)])
    put(aws, key(2), [(1, 30.0)])  # +10 °C in a minute, in the next object
    put(aws, key(3), [(3, 20.0), (2, 30.0)])  # out of order; 20 is the return to the base
    put(aws, key(4), [(0, 20.0), (1, 30.0)])  # the same readings re-delivered (at least once)
    for n in (1, 2, 3, 4):
        summary = handler.handler(s3_event(key(n)), Context())
        assert summary["store_failed"] == []
    assert spike_rows(aws) == [("jump", 1, 30.0, key(2))]
    # A duplicate event for object 2 rewrites the same spike object with the same row.
    handler.handler(s3_event(key(2)), Context())
    assert spike_rows(aws) == [("jump", 1, 30.0, key(2))]
    item = boto3.client("dynamodb").get_item(
        TableName=TABLE, Key={"device": {"S": "gh-1/d1"}, "kind": {"S": "jump"}}
    )["Item"]
    assert int(item["version"]["N"]) == 5  # one conditional write per processed object


def test_two_invocations_racing_on_one_device(aws, monkeypatch):
    """Two objects of one device judged at the same moment by two invocations."""
    put(aws, key(1), [(0, 20.0), (2, 20.0)])
    put(aws, key(2), [(1, 30.0), (3, 30.5)])
    barrier = threading.Barrier(2)
    real = handler.DynamoStateStore.load
    calls = []

    def racing_load(self, keys):
        found = real(self, keys)
        if {kind for _, _, kind in keys} != {"jump"}:
            return found  # the incidents' load (issue 14) after the jumps are judged
        calls.append(1)
        if len(calls) <= 2:
            barrier.wait(timeout=10)  # both have read before either writes
        return found

    monkeypatch.setattr(handler.DynamoStateStore, "load", racing_load)
    results = {}

    def invoke(n):
        results[n] = handler.handler(s3_event(key(n)), Context())

    threads = [threading.Thread(target=invoke, args=(n,)) for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert all(r["store_failed"] == [] for r in results.values())
    # In time order 20, 30, 20, 30.5: jumps at minute 1 and 3; minute 2 is the return.
    assert [(r, m, t) for r, m, t, _ in spike_rows(aws)] == [
        ("jump", 1, 30.0),
        ("jump", 3, 30.5),
    ]
    assert len(calls) == 3  # the loser of the conditional write read the state again


def test_state_table_unreachable_fails_the_invocation_for_a_retry(aws, monkeypatch):
    monkeypatch.setenv("STATE_TABLE", "no-such-table")
    put(aws, key(1), [(0, 20.0)])
    with pytest.raises(handler.StoreError):
        handler.handler(s3_event(key(1)), Context())


def test_same_files_give_the_same_spikes_locally_and_through_the_lambda(aws, tmp_path):
    """One crafted delivery sequence, judged by the local target and by the Lambda on moto."""
    from smartfarm_cli.targets.local import LocalTarget

    base = datetime.now(UTC).replace(second=0, microsecond=0, tzinfo=UTC)
    start = int(base.timestamp() * 1000) - 60 * MIN
    files = [
        [("d1", 0, 20.0, 0), ("d2", 0, 20.0, 0)],
        [("d1", 1, 30.0, 0), ("d2", 1, 400.0, 0), ("d2", 2, 21.0, 0)],  # jump; impossible
        [("d1", 3, 20.0, 0), ("d1", 2, 30.0, 0), ("d2", 3, None, 4)],  # late return; error
        [("d1", 0, 20.0, 0), ("d1", 1, 30.0, 0)],  # re-sent
        [("d1", 4, 41.0, 0), ("d2", 4, 28.0, 0)],  # out of band + jump; d2 jump over 2 min
    ]

    def table(rows):
        return table_from_rows(
            [("gh-1", d, start + m * MIN, t, 60.0, 800.0, code) for d, m, t, code in rows]
        )

    local = LocalTarget(tmp_path / "home")
    for rows in files:
        items = table(rows).to_pylist()
        for item in items:
            item["timestamp"] = item["timestamp"].replace(tzinfo=UTC).isoformat()
        result = local.ingest(items)
        assert result.rejected == []
    local_spikes = {
        (s["device_id"], s["rule"], s["metric"], s["temperature"])
        for s in local.spikes("3h").records()
    }
    local.close()
    for n, rows in enumerate(files):
        aws.put_object(Bucket=LOG_BUCKET, Key=key(n), Body=lake.parquet_bytes(table(rows)))
        assert handler.handler(s3_event(key(n)), Context())["store_failed"] == []
    lambda_spikes = set()
    for obj in aws.list_objects_v2(Bucket=SPIKE_BUCKET, Prefix="spikes/")["Contents"]:
        body = aws.get_object(Bucket=SPIKE_BUCKET, Key=obj["Key"])["Body"].read()
        for s in lake.read_parquet_bytes(body).to_pylist():
            lambda_spikes.add((s["device_id"], s["rule"], s["metric"], s["temperature"]))
    # By hand: d1 20 -> 30 jump (minute 1), 20 at minute 3 is the return, 41 at minute 4 is out
    # of band (> 40) and a jump (+21 in a minute); d2: 400 impossible, error_code 4, and
    # 21 -> 28 over 2 minutes (3.5 °C/min) a jump.
    assert (
        local_spikes
        == lambda_spikes
        == {
            ("d1", "jump", "temperature", 30.0),
            ("d1", "out_of_band", "temperature", 41.0),
            ("d1", "jump", "temperature", 41.0),
            ("d2", "impossible", "temperature", 400.0),
            ("d2", "sensor_error", "error_code", None),
            ("d2", "jump", "temperature", 28.0),
        }
    )
