"""R2 Discord faults: 429 with retry_after, 500, answers slower than the timeout, refused ports.

Already proven elsewhere (not repeated here): each fault alone against core.alerts with both
transports (tests/test_alerts_delivery.py), through the Lambda handler (429, 500, timeout:
tests/test_lambda_anomaly_detector.py) and the local hook (503: tests/test_alerts_local.py).

Filled here:
- every fault in ONE message's life, on a real socket, through the whole local pipeline
  (requests) and through the Lambda handler (urllib): spikes stored first, the alert delivered
  after recovery, exactly one 2xx, time measured against an upper bound;
- a refused connection, then the webhook comes back on the same port: undelivered first,
  delivered when the file is processed again;
- the Lambda's own deadline bounds the retries of its real policy (10 s timeout) to what is
  left of the invocation;
- a property (hypothesis, simulated clock) that for ANY sequence of faults the default
  policies never spend more than max_total_s and never exceed max_attempts.
"""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws
from pytest_httpserver import HTTPServer
from reliability.lambdas import load
from werkzeug import Response

from smartfarm_cli import alerting
from smartfarm_cli.core import alerts, lake
from smartfarm_cli.core.validate import table_from_rows
from smartfarm_cli.targets.local import LocalTarget

TOKEN = "r2-T0KEN-fault-injection-secret"
PATH = f"/api/webhooks/2222/{TOKEN}"
PROPERTY_EXAMPLES = 400
POLICY = alerts.RetryPolicy(
    max_attempts=5, timeout_s=0.3, backoff_base_s=0.05, backoff_max_s=0.2, max_total_s=3.0
)
ad = load("anomaly_detector")


def discord_fake(httpserver, steps):
    """Answer with `steps` in order (the last repeats). A step is (status, body) or ("slow", s)."""
    calls: list[dict] = []

    def handle(request):
        calls.append({"t": time.monotonic(), "json": request.get_json(silent=True)})
        step = steps[min(len(calls), len(steps)) - 1]
        if step[0] == "slow":
            time.sleep(step[1])
            step = (200, {"id": "late"})  # the client gave up long before this answer
        calls[-1]["status"] = step[0]
        return Response(json.dumps(step[1]), status=step[0], content_type="application/json")

    httpserver.expect_request(PATH, method="POST").respond_with_handler(handle)
    return calls


EVERY_FAULT = [
    (429, {"message": "You are being rate limited.", "retry_after": 0.2, "global": False}),
    (500, {"message": "Internal Server Error"}),
    ("slow", 0.6),  # slower than the 0.3 s timeout
    (200, {"id": "1"}),
]


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def anomalies(n=3) -> list[dict]:
    base = {"greenhouse_id": "gh-1", "timestamp": now_iso(), "humidity": 60, "co2": 800}
    return [
        {**base, "device_id": f"hot-{i}", "temperature": "400", "error_code": "0"} for i in range(n)
    ]


def spike_rows(target: LocalTarget) -> int:
    return target.query("SELECT count(*) FROM spikes").rows[0][0]


def test_every_fault_then_recovery_through_the_local_pipeline(tmp_path, httpserver):
    calls = discord_fake(httpserver, EVERY_FAULT)
    target = LocalTarget(tmp_path / "home")
    hook = alerting.local_alert_hook(target, webhook=httpserver.url_for(PATH), policy=POLICY)
    target.alert_hook = hook
    started = time.monotonic()
    result = target.ingest(anomalies())
    elapsed = time.monotonic() - started
    assert result.accepted == 3 and spike_rows(target) == 3  # stored, whatever Discord did
    [outcome] = hook.outcomes
    assert outcome.status == alerts.DELIVERED and outcome.attempts == 4
    assert [c["status"] for c in calls] == [429, 500, 200, 200]  # the 3rd answered too late
    assert calls[1]["t"] - calls[0]["t"] >= 0.2  # retry_after honoured
    assert elapsed < POLICY.max_total_s + 0.5, elapsed  # bounded
    marker = json.loads(target.spike_store.get(lake.alert_key(outcome.source_key)))
    assert marker["status"] == "delivered" and marker["attempts"] == 4
    target.close()


T0 = int(datetime.now(UTC).replace(minute=0, second=0, microsecond=0).timestamp() * 1000)
KEY = "logs/year=2026/month=11/day=28/hour=10/r2-faults.parquet"


@pytest.fixture
def aws(monkeypatch, httpserver):
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "SPIKE_BUCKET": "spike-log-bucket",
        "DISCORD_WEBHOOK_SSM_PARAMETER": "/r2/webhook",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(ad, "ALERT_POLICY", POLICY)
    ad._webhook_cache.clear()
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="sensor-log-bucket")
        s3.create_bucket(Bucket="spike-log-bucket")
        rows = [("gh-1", f"hot-{i}", T0, 400.0, 60.0, 800.0, 0) for i in range(3)]
        s3.put_object(
            Bucket="sensor-log-bucket", Key=KEY, Body=lake.parquet_bytes(table_from_rows(rows))
        )
        yield s3
    ad._webhook_cache.clear()


def set_webhook(url: str) -> None:
    boto3.client("ssm").put_parameter(
        Name="/r2/webhook", Value=url, Type="SecureString", Overwrite=True
    )
    ad._webhook_cache.clear()


def event(key=KEY):
    return {
        "Records": [
            {
                "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": "sensor-log-bucket"}, "object": {"key": key}},
            }
        ]
    }


class Context:
    def __init__(self, remaining_ms=60_000):
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self):
        return self.remaining_ms


def stored_spikes(s3) -> int:
    total = 0
    for obj in s3.list_objects_v2(Bucket="spike-log-bucket", Prefix="spikes/").get("Contents", []):
        body = s3.get_object(Bucket="spike-log-bucket", Key=obj["Key"])["Body"].read()
        total += lake.read_parquet_bytes(body).num_rows
    return total


def marker(s3) -> dict:
    body = s3.get_object(Bucket="spike-log-bucket", Key=lake.alert_key(KEY))["Body"].read()
    assert TOKEN not in body.decode()
    return json.loads(body)


def test_every_fault_then_recovery_through_the_lambda_handler(aws, httpserver, capsys):
    calls = discord_fake(httpserver, EVERY_FAULT)
    set_webhook(httpserver.url_for(PATH))
    started = time.monotonic()
    summary = ad.handler(event(), Context())
    elapsed = time.monotonic() - started
    assert summary["alerts"] == {KEY: "delivered"} and stored_spikes(aws) == 3
    assert [c["status"] for c in calls] == [429, 500, 200, 200]
    assert marker(aws)["attempts"] == 4
    assert elapsed < POLICY.max_total_s + 0.5, elapsed
    assert TOKEN not in capsys.readouterr().out


def closed_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def test_refused_then_the_webhook_comes_back_on_the_same_port(aws, capsys):
    port = closed_port()
    set_webhook(f"http://127.0.0.1:{port}{PATH}")
    started = time.monotonic()
    first = ad.handler(event(), Context())
    elapsed = time.monotonic() - started
    assert first["alerts"] == {KEY: "undelivered"} and stored_spikes(aws) == 3
    saved = marker(aws)
    assert saved["attempts"] == POLICY.max_attempts and "Connection" in saved["reason"]
    # backoff 0.05 + 0.1 + 0.2 + 0.2 between five refused attempts
    assert 0.5 <= elapsed < POLICY.max_total_s, elapsed

    server = HTTPServer(host="127.0.0.1", port=port)
    server.start()
    try:
        calls = discord_fake(server, [(200, {"id": "1"})])
        again = ad.handler(event(), Context())  # S3 redelivers, or an operator re-drives it
        assert again["alerts"] == {KEY: "delivered"} and len(calls) == 1
        third = ad.handler(event(), Context())
        assert third["alerts"] == {KEY: "already_delivered"} and len(calls) == 1
    finally:
        server.clear()
        server.stop()
    assert stored_spikes(aws) == 3
    assert TOKEN not in capsys.readouterr().out


def test_lambda_deadline_bounds_the_real_policy(aws, monkeypatch):
    """ALERT_POLICY as deployed (10 s timeout, 60 s budget) against a webhook that never
    answers: with 11.5 s left in the invocation, the handler keeps its 10 s margin and is done
    in about 1.5 s, marker written."""
    monkeypatch.setattr(
        ad, "ALERT_POLICY", alerts.RetryPolicy(max_attempts=5, timeout_s=10.0, max_total_s=60.0)
    )
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    set_webhook(f"http://127.0.0.1:{silent.getsockname()[1]}{PATH}")
    started = time.monotonic()
    try:
        summary = ad.handler(event(), Context(remaining_ms=11_500))
    finally:
        silent.close()
    elapsed = time.monotonic() - started
    assert summary["alerts"] == {KEY: "undelivered"} and stored_spikes(aws) == 3
    assert 1.0 <= elapsed < 3.0, elapsed
    assert "imeout" in marker(aws)["reason"]


# -- property: any fault sequence, simulated clock ------------------------------------------

FAULT = st.one_of(
    st.tuples(st.just("timeout")),
    st.tuples(st.just("refused")),
    st.tuples(st.sampled_from([500, 502, 503, 504, 408])),
    st.tuples(st.just(429), st.floats(0, 120)),  # retry_after in seconds (body)
    st.tuples(st.just("slow"), st.floats(0, 30)),  # an answer after this many seconds
    st.tuples(st.just(200)),
)


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        assert seconds >= 0
        self.now += seconds


@settings(max_examples=PROPERTY_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    faults=st.lists(FAULT, min_size=1, max_size=12),
    policy=st.sampled_from([alerts.DEFAULT_POLICY, ad.ALERT_POLICY, POLICY]),
)
def test_any_fault_sequence_is_bounded_in_attempts_and_time(faults, policy):
    clock = FakeClock()
    posts: list[tuple] = []

    def post(url, body, timeout):
        assert 0 < timeout <= policy.timeout_s
        fault = faults[min(len(posts), len(faults) - 1)]
        posts.append(fault)
        clock.now += 0.001  # a round trip
        if fault[0] == "timeout" or (fault[0] == "slow" and fault[1] > timeout):
            clock.now += timeout
            raise TimeoutError("timed out")
        if fault[0] == "refused":
            raise ConnectionRefusedError(111, "Connection refused")
        if fault[0] == "slow":
            clock.now += fault[1]
            return 200, {}, b'{"id": "1"}'
        if fault[0] == 429:
            return 429, {}, json.dumps({"retry_after": fault[1]}).encode()
        if fault[0] == 200:
            return 200, {}, b'{"id": "1"}'
        return fault[0], {}, b'{"message": "oops"}'

    result = alerts.send_message(
        post, "https://discord.com/api/webhooks/1/t", {}, policy, clock.sleep, clock
    )
    spent = clock.now - 1000.0
    assert result.attempts == len(posts) <= policy.max_attempts
    assert spent <= policy.max_total_s + 0.1, (spent, posts)
    if result.delivered:
        assert posts[-1][0] in (200, "slow")
    else:
        assert result.reason.strip() and TOKEN not in result.reason
        success = next((n for n, f in enumerate(faults) if f[0] == 200), None)
        # a clean 200 within the attempts that were made would have been delivered
        assert success is None or success >= result.attempts
