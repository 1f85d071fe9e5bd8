"""R3 duplicates: the same S3 event again and again, the same local file delivered again.

Already proven (not repeated): one duplicate event / an event holding its record twice makes no
second spike FILE and no second message (tests/test_lambda_anomaly_detector.py); a redone local
delivery writes no second reading (tests/test_local_target.py).

Filled here, counting ROWS (spike store, DuckDB `spikes`, `readings`) and REQUESTS (on a real
local HTTP server standing in for Discord):
- any interleaving of repeated S3 events over several objects (hypothesis);
- a local delivery redone several times (pending range rewound, as after a crash) and the
  anomaly step re-run on the same delivered file.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability.lambdas import load, moto_buckets
from werkzeug import Response

from smartfarm_cli import alerting
from smartfarm_cli.core import alerts, lake
from smartfarm_cli.core.validate import table_from_rows
from smartfarm_cli.targets.local import LocalTarget

TOKEN = "r3-T0KEN-dup-secret"
PATH = f"/api/webhooks/3333/{TOKEN}"
EVENT_EXAMPLES = 25
REDO_TIMES = 3
FAST = alerts.RetryPolicy(max_attempts=2, timeout_s=1.0, backoff_base_s=0.01, max_total_s=3.0)
ad = load("anomaly_detector")
T0 = int(datetime(2026, 11, 28, 10, 0, tzinfo=UTC).timestamp() * 1000)


def discord_fake(httpserver):
    calls: list[dict] = []

    def handle(request):
        calls.append(request.get_json(silent=True))
        return Response(json.dumps({"id": str(len(calls))}), status=200)

    httpserver.expect_request(PATH, method="POST").respond_with_handler(handle)
    return calls


@pytest.fixture(scope="module")
def s3():
    with moto_buckets("sensor-log-bucket", "spike-log-bucket") as client:
        yield client


# Three log objects: two with anomalies (3 and 2 spikes, the second spanning two days), one
# healthy. Spike counts per object are what one processing stores.
OBJECTS = {
    "a": ([("gh-1", f"hot-{i}", T0, 400.0, 60.0, 800.0, 0) for i in range(3)], 3),
    "b": (
        [
            ("gh-2", "err", T0, None, None, None, 1),
            ("gh-2", "wet", T0 + 86_400_000, 21.0, 99.0, 800.0, 0),
            ("gh-2", "ok", T0, 21.0, 60.0, 800.0, 0),
        ],
        2,
    ),
    "c": ([("gh-3", "ok", T0 + i * 60_000, 21.0, 60.0, 800.0, 0) for i in range(5)], 0),
}


def spike_rows_of(s3, key: str) -> int:
    digest = lake.source_digest(key)
    total = 0
    for obj in s3.list_objects_v2(Bucket="spike-log-bucket", Prefix="spikes/").get("Contents", []):
        if obj["Key"].endswith(f"/{digest}.parquet"):
            body = s3.get_object(Bucket="spike-log-bucket", Key=obj["Key"])["Body"].read()
            total += lake.read_parquet_bytes(body).num_rows
    return total


@settings(max_examples=EVENT_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    events=st.lists(
        st.lists(st.sampled_from(sorted(OBJECTS)), min_size=1, max_size=4), min_size=2, max_size=6
    )
)
def test_repeated_s3_events_store_each_spike_once_and_send_each_message_once(
    s3, httpserver, events
):
    httpserver.clear()
    calls = discord_fake(httpserver)
    run = uuid.uuid4().hex[:8]
    keys = {
        name: f"logs/year=2026/month=11/day=28/hour=10/{run}-{name}.parquet" for name in OBJECTS
    }
    for name, (rows, _) in OBJECTS.items():
        s3.put_object(
            Bucket="sensor-log-bucket",
            Key=keys[name],
            Body=lake.parquet_bytes(table_from_rows(rows)),
        )
    deps = ad.Deps(
        s3=s3,
        spike_store=ad.S3Store(s3, "spike-log-bucket"),
        rules=ad._rules(),
        webhook_url=lambda: httpserver.url_for(PATH),
        policy=FAST,
    )
    for names in events:
        records = [
            {
                "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": "sensor-log-bucket"}, "object": {"key": keys[n]}},
            }
            for n in names
        ]
        ad.process_event({"Records": records}, deps)
    seen = {name for names in events for name in names}
    for name, (_, spikes) in OBJECTS.items():
        assert spike_rows_of(s3, keys[name]) == (spikes if name in seen else 0)
    announced = sorted(n for n in seen if OBJECTS[n][1])
    assert len(calls) == len(announced)  # one message per object with spikes, ever
    for name in announced:
        assert sum(keys[name] in c["content"] for c in calls) == 1


def reading(device: str, moment: datetime, temperature=21.0, error_code=0) -> dict:
    return {
        "greenhouse_id": "gh-1",
        "device_id": device,
        "timestamp": moment.isoformat().replace("+00:00", "Z"),
        "temperature": temperature,
        "humidity": 60,
        "co2": 800,
        "error_code": error_code,
    }


def counts(target: LocalTarget) -> tuple[int, int, int]:
    readings = target.query("SELECT count(*), count(DISTINCT device_id) FROM readings").rows[0]
    spikes = target.query("SELECT count(*) FROM spikes").rows[0][0]
    return readings[0], readings[1], spikes


def test_local_delivery_redone_and_anomaly_step_rerun_duplicate_nothing(tmp_path, httpserver):
    calls = discord_fake(httpserver)
    target = LocalTarget(tmp_path / "home")
    hook = alerting.local_alert_hook(target, webhook=httpserver.url_for(PATH), policy=FAST)
    target.alert_hook = hook
    now = datetime.now(UTC)
    earlier = now - timedelta(hours=2)  # two hour files in one delivery
    items = [reading(f"d{i}", earlier) for i in range(4)] + [
        reading(f"e{i}", now) for i in range(4)
    ]
    items[1]["temperature"] = "400"  # the seed's impossible value
    items[5]["error_code"] = "1"
    items[6]["humidity"] = 99  # out of band
    target.ingest(items)
    expected = (8, 8, 3)
    assert counts(target) == expected and len(calls) == 2  # one message per delivered file
    (delivered,) = target.db.execute("SELECT delivered_seq FROM delivery").fetchone()

    for _ in range(REDO_TIMES):  # the same range delivered again, as a crash-redo does
        target.db.execute(
            "UPDATE delivery SET delivered_seq = 0, pending_from = 1, pending_to = ?",
            (delivered,),
        )
        target.deliver(force=True)
        assert counts(target) == expected
    for key in target.logs.keys("logs"):  # the anomaly step re-run on each delivered file
        table = lake.read_parquet_bytes(target.logs.get(key))
        spikes, _ = lake.spike_objects(table, key, target.rules)
        target.store_spikes(key, spikes)
    assert counts(target) == expected
    assert len(calls) == 2
    assert [o.status for o in hook.outcomes].count(alerts.DELIVERED) == 2
    assert len(target.spike_store.keys("spikes")) == 2
    target.close()


def test_the_same_input_file_ingested_twice_is_not_stored_twice(tmp_path, httpserver):
    calls = discord_fake(httpserver)
    target = LocalTarget(tmp_path / "home")
    target.alert_hook = alerting.local_alert_hook(
        target, webhook=httpserver.url_for(PATH), policy=FAST
    )
    now = datetime.now(UTC)
    items = [reading(f"d{i}", now, temperature=400 if i == 0 else 21.0) for i in range(5)]
    target.ingest(items)
    time.sleep(0.01)
    target.ingest(items)
    assert counts(target) == (5, 5, 1) and len(calls) == 1
    target.close()
