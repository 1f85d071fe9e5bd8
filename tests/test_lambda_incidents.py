"""Incidents on AWS (issue 14): anomaly_detector and silent_check called directly with
real-shaped events, on moto S3 + SSM + DynamoDB, a real local HTTP server standing in for
Discord, and a fake wall clock. Defaults (rules.toml [alerts]): critical repeat 1 h, resolve
10 min; silent after 10 min for devices seen within 7 d."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import boto3
import pytest
from moto import mock_aws
from reliability.lambdas import load
from test_lambda_anomaly_detector import (
    FAST,
    PARAM,
    PATH,
    SPIKE_BUCKET,
    TOKEN,
    Context,
    discord_fake,
    handler_module,
    put_log,
    s3_event,
)

from smartfarm_cli.core import alerts, discord, incidents
from smartfarm_cli.core.state import DynamoEventLog, DynamoStateStore
from smartfarm_cli.core.validate import table_from_rows

TABLE = "smartfarm-device-state"
T0 = int(datetime(2026, 11, 28, 10, 0, tzinfo=UTC).timestamp() * 1000)
MIN = 60_000
silent_check = load("silent_check")
OK = [(200, {"id": "1"}, {})]


class Clock:
    def __init__(self):
        self.ms = T0

    def __call__(self) -> float:
        return self.ms / 1000


@pytest.fixture
def aws(monkeypatch, httpserver, capsys):
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "SPIKE_BUCKET": SPIKE_BUCKET,
        "DISCORD_WEBHOOK_SSM_PARAMETER": PARAM,
        "STATE_TABLE": TABLE,
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("RULES_PATH", "SMARTFARM_RULES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(handler_module, "ALERT_POLICY", FAST)
    monkeypatch.setattr(silent_check, "POLICY", FAST)
    clock = Clock()
    monkeypatch.setattr(handler_module, "NOW", clock)
    monkeypatch.setattr(silent_check, "NOW", clock)
    handler_module._webhook_cache.clear()
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="sensor-log-bucket")
        s3.create_bucket(Bucket=SPIKE_BUCKET)
        boto3.client("ssm").put_parameter(
            Name=PARAM, Value=httpserver.url_for(PATH), Type="SecureString"
        )
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
        yield s3, clock
    out = capsys.readouterr()
    assert TOKEN not in out.out and TOKEN not in out.err  # secrets never in logs


def key(minute: int, tag: str = "") -> str:
    return f"logs/year=2026/month=11/day=28/hour=10/stream-{tag}{minute:04d}.parquet"


def deliver(s3, clock, minute, error_code=0, devices=("d1",), tag=""):
    """One minute's file as Firehose would write it, processed 30 s after its readings."""
    rows = [("gh-1", d, T0 + minute * MIN, 21.0, 60.0, 800.0, error_code) for d in devices]
    put_log(s3, key(minute, tag), table_from_rows(rows))
    clock.ms = T0 + minute * MIN + 30_000
    summary = handler_module.handler(s3_event(key(minute, tag)), Context())
    assert summary["store_failed"] == [] and summary["failed"] == []
    return summary


def schedule_event(minute: int) -> dict:
    """What the EventBridge Scheduler target input gives the function (terraform/silent.tf)."""
    at = datetime.fromtimestamp((T0 + minute * MIN) / 1000, UTC)
    return {"scheduled_time": at.strftime("%Y-%m-%dT%H:%M:%SZ"), "source": "smartfarm.schedule"}


def lines(calls) -> list[str]:
    return [e["description"] for call in calls for e in call["json"]["embeds"]]


def history():
    log = DynamoEventLog(boto3.client("dynamodb"), TABLE)
    return [(r["event"], r["rule"]) for r in log.since(T0, T0 + 10 * 86_400_000)]


def test_lifecycle_open_reminder_resolve_then_silent_and_back(aws, httpserver):
    s3, clock = aws
    calls = discord_fake(httpserver, OK)
    deliver(s3, clock, 0, error_code=1)  # opened
    for minute in (10, 30, 59):
        deliver(s3, clock, minute, error_code=1)  # counted, no message
    assert len(calls) == 1
    deliver(s3, clock, 61, error_code=1)  # an hour after the opening: reminder
    deliver(s3, clock, 62)  # healthy, but not yet 10 min
    assert len(calls) == 2
    deliver(s3, clock, 75)  # 14 min without the anomaly: resolved
    assert lines(calls) == [
        "gh-1/d1 sensor_error (error_code) opened: 1 anomaly, worst 1",
        "gh-1/d1 sensor_error (error_code) still firing x4 since the last message, worst 1 "
        "(open since 2026-11-28 10:00 UTC)",
        "gh-1/d1 sensor_error (error_code) resolved after 1 h 15 min",
    ]
    # Silence: nothing for 5 min is fine; after 10 min one message; the next check is quiet.
    for minute in (80, 90, 95):
        clock.ms = T0 + minute * MIN
        silent_check.handler(schedule_event(minute), Context())
    assert lines(calls)[3:] == ["gh-1/d1 silent since 2026-11-28 11:15 UTC"]
    deliver(s3, clock, 100)  # its next reading resolves it
    assert lines(calls)[4:] == ["gh-1/d1 reporting again after 10 min of silence"]
    assert len(calls) == 5
    assert sorted(history()) == sorted(
        [
            ("opened", "sensor_error"),
            ("still firing", "sensor_error"),
            ("resolved", "sensor_error"),
            ("opened", "silent"),
            ("resolved", "silent"),
        ]
    )
    assert incidents.open_incidents(DynamoStateStore(boto3.client("dynamodb"), TABLE)) == []


def test_last_seen_is_one_conditional_write_per_device_and_file(aws, httpserver, monkeypatch):
    s3, clock = aws
    discord_fake(httpserver, OK)
    puts = []
    real = DynamoStateStore.save

    def counting(self, writes):
        puts.append(sorted(k for k, *_ in writes))
        return real(self, writes)

    monkeypatch.setattr(handler_module.DynamoStateStore, "save", counting)
    rows = [
        ("gh-1", d, T0 + m * 5_000, 21.0, 60.0, 800.0, 0) for d in ("a", "b") for m in range(12)
    ]
    put_log(s3, key(0), table_from_rows(rows))
    clock.ms = T0 + MIN
    handler_module.handler(s3_event(key(0)), Context())
    # 24 readings of 2 devices: the jump windows and the incidents, one write per device each.
    assert puts == [
        [("gh-1", "a", "jump"), ("gh-1", "b", "jump")],
        [("gh-1", "a", "alerts"), ("gh-1", "b", "alerts")],
    ]
    body, version = DynamoStateStore(boto3.client("dynamodb"), TABLE).load(
        [("gh-1", "a", "alerts")]
    )[("gh-1", "a", "alerts")]
    assert version == 1 and body["last_ms"] == T0 + 11 * 5_000 and body["open"] == {}


def test_two_invocations_racing_to_open_the_same_incident_send_one_message(
    aws, httpserver, monkeypatch
):
    s3, clock = aws
    calls = discord_fake(httpserver, OK)
    for minute in (0, 1):
        rows = [("gh-1", "d1", T0 + minute * MIN, 21.0, 60.0, 800.0, 3)]
        put_log(s3, key(minute), table_from_rows(rows))
    clock.ms = T0 + 2 * MIN
    barrier = threading.Barrier(2)
    real = DynamoStateStore.load
    waited = []

    def racing_load(self, keys):
        found = real(self, keys)
        if {k for _, _, k in keys} == {"alerts"} and len(waited) < 2:
            waited.append(1)
            barrier.wait(timeout=10)  # both read "no incident" before either writes
        return found

    monkeypatch.setattr(handler_module.DynamoStateStore, "load", racing_load)
    results = {}

    def invoke(minute):
        results[minute] = handler_module.handler(s3_event(key(minute)), Context())

    threads = [threading.Thread(target=invoke, args=(m,)) for m in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert all(r["store_failed"] == [] for r in results.values())
    assert len(calls) == 1 and lines(calls) == [
        "gh-1/d1 sensor_error (error_code) opened: 1 anomaly, worst 3"
    ]
    assert sorted(r["alerts"][key(m)] for m, r in results.items()) == [
        alerts.DELIVERED,
        alerts.NOTHING_TO_SEND,
    ]
    (row,) = incidents.open_incidents(DynamoStateStore(boto3.client("dynamodb"), TABLE))
    assert row["count"] == 2  # the loser reloaded, found it open, and counted its anomaly
    assert history() == [("opened", "sensor_error")]


def test_crash_between_state_and_send_then_retry_sends_exactly_once(aws, httpserver, monkeypatch):
    s3, clock = aws
    calls = discord_fake(httpserver, OK)
    real = alerts.send_message

    def killed(*args, **kwargs):
        raise RuntimeError("the invocation died here")

    monkeypatch.setattr(alerts, "send_message", killed)
    rows = [("gh-1", "d1", T0, 21.0, 60.0, 800.0, 1)]
    put_log(s3, key(0), table_from_rows(rows))
    with pytest.raises(handler_module.StoreError):  # Lambda will retry this event
        handler_module.handler(s3_event(key(0)), Context())
    assert calls == []
    state = DynamoStateStore(boto3.client("dynamodb"), TABLE)
    assert len(incidents.open_incidents(state)) == 1  # the state was written before the crash
    monkeypatch.setattr(alerts, "send_message", real)
    clock.ms += 2 * MIN  # Lambda's retry, a little later
    for _ in range(2):  # the retry, then a duplicate S3 event
        handler_module.handler(s3_event(key(0)), Context())
    assert lines(calls) == ["gh-1/d1 sensor_error (error_code) opened: 1 anomaly, worst 1"]
    assert history() == [("opened", "sensor_error")]  # the retry rewrote the same log item


def test_silent_check_retried_after_a_crash_sends_its_message_once(aws, httpserver, monkeypatch):
    s3, clock = aws
    calls = discord_fake(httpserver, OK)
    deliver(s3, clock, 0, devices=("d1", "d2"))
    deliver(s3, clock, 15, devices=("d2",))
    real = alerts.send_message
    monkeypatch.setattr(alerts, "send_message", lambda *a, **k: 1 / 0)
    clock.ms = T0 + 20 * MIN
    with pytest.raises(silent_check.StoreError):
        silent_check.handler(schedule_event(20), Context())
    monkeypatch.setattr(alerts, "send_message", real)
    clock.ms = T0 + 21 * MIN  # the retry carries the same scheduled time
    summary = silent_check.handler(schedule_event(20), Context())
    assert summary["alert"] == alerts.DELIVERED
    silent_check.handler(schedule_event(20), Context())  # again: already delivered
    assert lines(calls) == ["gh-1/d1 silent since 2026-11-28 10:00 UTC"]
    clock.ms = T0 + 30 * MIN  # the next scheduled run: d2 is silent now, d1 stays open
    silent_check.handler(schedule_event(30), Context())
    assert lines(calls)[1:] == ["gh-1/d2 silent since 2026-11-28 10:15 UTC"]


def test_a_file_with_many_incidents_is_one_request_within_discord_limits(aws, httpserver):
    s3, clock = aws
    calls = discord_fake(httpserver, OK)
    devices = [f"sensor-{n:03d}-" + "x" * 40 for n in range(40)]
    deliver(s3, clock, 0, error_code=2, devices=devices)
    assert len(calls) == 1
    body = calls[0]["json"]
    assert "40 opened" in body["content"] and "(+30 not shown)" in body["content"]
    assert len(body["content"]) <= discord.CONTENT_MAX
    assert len(body["embeds"]) == discord.EMBEDS_MAX
    total = sum(len(e["title"]) + len(e["description"]) for e in body["embeds"])
    assert total <= discord.EMBEDS_TOTAL_MAX
    assert body["allowed_mentions"] == {"parse": []}
    assert len(history()) == 40


def test_without_webhook_incidents_are_kept_and_nothing_is_sent(aws, httpserver, monkeypatch):
    s3, clock = aws
    monkeypatch.delenv("DISCORD_WEBHOOK_SSM_PARAMETER")
    summary = deliver(s3, clock, 0, error_code=1)
    assert summary["alerts"] == {key(0): "not_configured"}
    assert history() == [("opened", "sensor_error")]
    assert len(httpserver.log) == 0


def test_discord_down_fails_the_invocation_and_the_retry_delivers_once(aws, httpserver):
    s3, clock = aws
    calls = discord_fake(httpserver, [(500, {"message": "down"}, {})] * 3 + OK)
    rows = [("gh-1", "d1", T0, 21.0, 60.0, 800.0, 1)]
    put_log(s3, key(0), table_from_rows(rows))
    clock.ms = T0 + 30_000
    with pytest.raises(handler_module.Undelivered):  # Lambda retries the event
        handler_module.handler(s3_event(key(0)), Context())
    assert len(calls) == 3  # FAST policy: three attempts, all 500
    clock.ms += MIN
    summary = handler_module.handler(s3_event(key(0)), Context())
    assert summary["alerts"] == {key(0): alerts.DELIVERED}
    handler_module.handler(s3_event(key(0)), Context())  # a duplicate: already delivered
    assert lines(calls[3:]) == ["gh-1/d1 sensor_error (error_code) opened: 1 anomaly, worst 1"]
    assert history() == [("opened", "sensor_error")]


def test_silent_check_with_discord_down_fails_so_the_run_is_retried(aws, httpserver):
    s3, clock = aws
    calls = discord_fake(httpserver, [(503, {}, {})] * 3 + OK)
    deliver(s3, clock, 0)
    clock.ms = T0 + 20 * MIN
    with pytest.raises(silent_check.Undelivered):
        silent_check.handler(schedule_event(20), Context())
    summary = silent_check.handler(schedule_event(20), Context())  # Lambda's retry
    assert summary["alert"] == alerts.DELIVERED
    assert lines(calls[3:]) == ["gh-1/d1 silent since 2026-11-28 10:00 UTC"]
