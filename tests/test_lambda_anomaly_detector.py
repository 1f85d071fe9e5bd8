"""anomaly_detector handler, called directly with real-shaped S3 events on moto S3 + SSM, and a
real local HTTP server standing in for Discord."""

from __future__ import annotations

import importlib.util
import json
import socket
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote_plus

import boto3
import pyarrow as pa
import pytest
from moto import mock_aws
from werkzeug import Response

from smartfarm_cli.core import alerts, discord, lake
from smartfarm_cli.core.validate import table_from_rows

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "lambda-T0KEN-never-in-logs"
PATH = f"/api/webhooks/777/{TOKEN}"
LOG_BUCKET = "sensor-log-bucket"
SPIKE_BUCKET = "spike-log-bucket"
PARAM = "/smartfarm/discord_webhook"
T0 = int(datetime(2026, 11, 28, 10, 0, tzinfo=UTC).timestamp() * 1000)
MIN = 60_000
FAST = alerts.RetryPolicy(
    max_attempts=3, timeout_s=1.0, backoff_base_s=0.02, backoff_max_s=0.05, max_total_s=5.0
)


def load_handler():
    path = ROOT / "lambdas" / "anomaly_detector" / "handler.py"
    spec = importlib.util.spec_from_file_location("anomaly_detector_handler", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


handler_module = load_handler()


class Context:
    function_name = "anomaly_detector"

    def get_remaining_time_in_millis(self):
        return 60_000


def s3_event(*keys, bucket=LOG_BUCKET):
    """An S3 notification as Lambda receives it: keys form-encoded (space -> +, = -> %3D)."""
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": "2026-11-28T10:05:00.000Z",
                "eventName": "ObjectCreated:Put",
                "userIdentity": {"principalId": "AWS:AROAEXAMPLE:firehose"},
                "requestParameters": {"sourceIPAddress": "10.0.0.1"},
                "responseElements": {"x-amz-request-id": "R1", "x-amz-id-2": "I2"},
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "logs-created",
                    "bucket": {
                        "name": bucket,
                        "ownerIdentity": {"principalId": "A1"},
                        "arn": f"arn:aws:s3:::{bucket}",
                    },
                    "object": {
                        "key": quote_plus(key, safe="/"),
                        "size": 1024,
                        "eTag": "0123456789abcdef0123456789abcdef",
                        "sequencer": f"0055AED6DCD9028{i:03d}",
                    },
                },
            }
            for i, key in enumerate(keys)
        ]
    }


def every_rule_kind():
    """A log file holding one anomaly of each rule kind, plus healthy readings."""
    rows = [
        ("gh-1", "dev-ok", T0, 21.0, 60.0, 800.0, 0),
        ("gh-1", "dev-ok", T0 + MIN, 21.5, 61.0, 810.0, 0),
        ("gh-1", "dev-err", T0, None, None, None, 1),  # sensor_error
        ("gh-1", "dev-hot", T0, 400.0, 60.0, 800.0, 0),  # impossible temperature (the seed's)
        ("gh-2", "dev-wet", T0, 21.0, 99.0, 800.0, 0),  # out_of_band humidity
        ("gh-2", "dev-jmp", T0, 20.0, 60.0, 800.0, 0),
        ("gh-2", "dev-jmp", T0 + MIN, 35.0, 60.0, 800.0, 0),  # jump +15 °C in a minute
        ("gh-2", "dev-jmp", T0 + 2 * MIN, 35.5, 60.0, 800.0, 0),
    ]
    return table_from_rows(rows)


EXPECTED = {
    ("sensor_error", "error_code", "dev-err", "critical"),
    ("impossible", "temperature", "dev-hot", "critical"),
    ("out_of_band", "humidity", "dev-wet", "warning"),
    ("jump", "temperature", "dev-jmp", "warning"),
}


def discord_fake(httpserver, responses):
    calls: list[dict] = []

    def handle(request):
        calls.append({"t": time.monotonic(), "json": request.get_json(silent=True)})
        status, body, headers = responses[min(len(calls), len(responses)) - 1]
        return Response(json.dumps(body), status=status, headers=headers)

    httpserver.expect_request(PATH, method="POST").respond_with_handler(handle)
    return calls


@pytest.fixture
def aws(monkeypatch, httpserver, capsys):
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "SPIKE_BUCKET": SPIKE_BUCKET,
        "DISCORD_WEBHOOK_SSM_PARAMETER": PARAM,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("RULES_PATH", raising=False)
    monkeypatch.delenv("LOG_LEVEL", raising=False)
    monkeypatch.delenv("SMARTFARM_RULES", raising=False)
    monkeypatch.setattr(handler_module, "ALERT_POLICY", FAST)
    handler_module._webhook_cache.clear()
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=LOG_BUCKET)
        s3.create_bucket(Bucket=SPIKE_BUCKET)
        boto3.client("ssm").put_parameter(
            Name=PARAM, Value=httpserver.url_for(PATH), Type="SecureString"
        )
        yield s3
    out = capsys.readouterr()
    assert TOKEN not in out.out and TOKEN not in out.err  # secrets never in logs


def put_log(s3, key, table):
    s3.put_object(Bucket=LOG_BUCKET, Key=key, Body=lake.parquet_bytes(table))


def keys(s3, bucket, prefix):
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for o in listing.get("Contents", []))


def marker(s3, source_key):
    body = s3.get_object(Bucket=SPIKE_BUCKET, Key=lake.alert_key(source_key))["Body"].read()
    assert TOKEN not in body.decode()
    return json.loads(body)


def log_lines(capsys):
    out = capsys.readouterr().out
    assert TOKEN not in out
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


KEY = "logs/year=2026/month=11/day=28/hour=10/sensor-stream-1-2026-11-28-10-04-59-abc.parquet"


def test_every_rule_kind_gives_the_right_spikes_and_one_message(aws, httpserver, capsys):
    calls = discord_fake(httpserver, [(200, {"id": "1"}, {})])
    put_log(aws, KEY, every_rule_kind())
    result = handler_module.handler(s3_event(KEY), Context())
    assert result["ok"] == 1 and result["spikes"] == 4 and result["failed"] == []

    spike_keys = keys(aws, SPIKE_BUCKET, "spikes/")
    assert spike_keys == [f"spikes/year=2026/month=11/day=28/{lake.source_digest(KEY)}.parquet"]
    stored = lake.read_parquet_bytes(
        aws.get_object(Bucket=SPIKE_BUCKET, Key=spike_keys[0])["Body"].read()
    )
    found = {(r["rule"], r["metric"], r["device_id"], r["severity"]) for r in stored.to_pylist()}
    assert found == EXPECTED
    assert set(stored.column("source_key").to_pylist()) == {KEY}

    assert len(calls) == 1
    message = calls[0]["json"]
    assert "4 anomalies" in message["content"] and "2 critical" in message["content"]
    assert discord.limit_violations(message) == []
    assert marker(aws, KEY)["status"] == "delivered"
    events = [line["event"] for line in log_lines(capsys)]
    assert events == ["object_processed", "event_processed"]


def test_duplicate_event_creates_no_second_file_and_no_second_message(aws, httpserver):
    calls = discord_fake(httpserver, [(200, {"id": "1"}, {})])
    put_log(aws, KEY, every_rule_kind())
    handler_module.handler(s3_event(KEY), Context())
    first = keys(aws, SPIKE_BUCKET, "spikes/")
    # at-least-once: the same event again, and an event holding the record twice
    handler_module.handler(s3_event(KEY), Context())
    result = handler_module.handler(s3_event(KEY, KEY), Context())
    assert keys(aws, SPIKE_BUCKET, "spikes/") == first and len(first) == 1
    assert len(calls) == 1
    assert set(result["alerts"].values()) == {alerts.ALREADY_DELIVERED}
    assert marker(aws, KEY)["runs"] == 1


def test_keys_with_spaces_equals_and_plus_signs(aws, httpserver):
    calls = discord_fake(httpserver, [(200, {"id": "1"}, {})])
    key = "logs/year=2026/month=11/day=28/hour=10/my file=a+b (1).parquet"
    put_log(aws, key, every_rule_kind())
    event = s3_event(key)
    encoded = event["Records"][0]["s3"]["object"]["key"]
    assert "+" in encoded and "%3D" in encoded and " " not in encoded  # really URL-encoded
    result = handler_module.handler(event, Context())
    assert result["ok"] == 1 and result["spikes"] == 4
    stored = keys(aws, SPIKE_BUCKET, "spikes/")
    assert stored == [f"spikes/year=2026/month=11/day=28/{lake.source_digest(key)}.parquet"]
    assert marker(aws, key)["source_key"] == key
    assert len(calls) == 1 and "my file=a+b (1).parquet" in calls[0]["json"]["content"]


def test_one_bad_object_does_not_stop_the_others(aws, httpserver, capsys):
    discord_fake(httpserver, [(200, {"id": "1"}, {})])
    junk = "logs/year=2026/month=11/day=28/hour=10/junk.parquet"
    missing = "logs/year=2026/month=11/day=28/hour=10/gone.parquet"
    wrong = "logs/year=2026/month=11/day=28/hour=10/wrong-columns.parquet"
    aws.put_object(Bucket=LOG_BUCKET, Key=junk, Body=b"this is not parquet")
    aws.put_object(Bucket=LOG_BUCKET, Key=wrong, Body=lake.parquet_bytes(pa.table({"x": [1]})))
    put_log(aws, KEY, every_rule_kind())
    result = handler_module.handler(s3_event(junk, missing, wrong, KEY), Context())
    assert result["objects"] == 4 and result["ok"] == 1 and result["spikes"] == 4
    assert {f["key"] for f in result["failed"]} == {junk, missing, wrong}
    assert "lacks column" in next(f["error"] for f in result["failed"] if f["key"] == wrong)
    assert len(keys(aws, SPIKE_BUCKET, "spikes/")) == 1
    errors = [line for line in log_lines(capsys) if line["level"] == "ERROR"]
    assert {line["key"] for line in errors if line["event"] == "object_processed"} == {
        junk,
        missing,
        wrong,
    }


def test_fails_the_invocation_only_when_spikes_cannot_be_stored(aws, httpserver, monkeypatch):
    calls = discord_fake(httpserver, [(200, {"id": "1"}, {})])
    put_log(aws, KEY, every_rule_kind())
    monkeypatch.setenv("SPIKE_BUCKET", "no-such-spike-bucket")
    with pytest.raises(handler_module.StoreError, match="could not store"):
        handler_module.handler(s3_event(KEY), Context())
    assert calls == []  # never alert about spikes that are not stored


def test_thousand_anomalies_cost_at_most_five_requests(aws, httpserver):
    calls = discord_fake(httpserver, [(200, {"id": "1"}, {})])
    rows = []
    for i in range(1000):
        kind = i % 4
        rows.append(
            (
                f"greenhouse-{i % 37:02d}",
                f"device-{i:04d}",
                T0 + i * 1000,
                400.0 if kind == 1 else 21.0,
                99.0 if kind == 2 else 60.0,
                5000.0 if kind == 3 else 800.0,
                3 if kind == 0 else 0,
            )
        )
    put_log(aws, KEY, table_from_rows(rows))
    result = handler_module.handler(s3_event(KEY), Context())
    assert result["spikes"] == 1000
    assert 1 <= len(calls) <= 5
    for call in calls:
        message = call["json"]
        assert len(message["content"]) <= 2000 and len(message["embeds"]) <= 10
        assert message["allowed_mentions"] == {"parse": []}
        total = 0
        for embed in message["embeds"]:
            assert len(embed["title"]) <= 256 and len(embed.get("description", "")) <= 4096
            assert len(embed.get("fields", [])) <= 25
            assert len(embed.get("footer", {}).get("text", "")) <= 2048
            for field in embed.get("fields", []):
                assert len(field["name"]) <= 256 and len(field["value"]) <= 1024
            total += discord.embed_chars(embed)
        assert total <= 6000


def test_rate_limit_is_honoured_through_the_handler(aws, httpserver):
    calls = discord_fake(
        httpserver, [(429, {"retry_after": 0.3, "global": False}, {}), (200, {"id": "1"}, {})]
    )
    put_log(aws, KEY, every_rule_kind())
    result = handler_module.handler(s3_event(KEY), Context())
    assert result["alerts"] == {KEY: "delivered"}
    assert len(calls) == 2 and calls[1]["t"] - calls[0]["t"] >= 0.3


def test_500s_store_spikes_mark_undelivered_and_a_later_duplicate_delivers(aws, httpserver):
    calls = discord_fake(httpserver, [(500, {"message": "Internal Server Error"}, {})])
    put_log(aws, KEY, every_rule_kind())
    result = handler_module.handler(s3_event(KEY), Context())  # does not raise
    assert result["alerts"] == {KEY: "undelivered"}
    assert len(calls) == FAST.max_attempts
    assert len(keys(aws, SPIKE_BUCKET, "spikes/")) == 1
    saved = marker(aws, KEY)
    assert saved["status"] == "undelivered" and "HTTP 500" in saved["reason"]

    httpserver.clear()
    calls = discord_fake(httpserver, [(200, {"id": "1"}, {})])
    again = handler_module.handler(s3_event(KEY), Context())
    assert again["alerts"] == {KEY: "delivered"} and len(calls) == 1
    assert len(keys(aws, SPIKE_BUCKET, "spikes/")) == 1


def test_timeouts_store_spikes_and_mark_undelivered(aws, monkeypatch):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    url = f"http://127.0.0.1:{silent.getsockname()[1]}{PATH}"
    boto3.client("ssm").put_parameter(Name=PARAM, Value=url, Type="SecureString", Overwrite=True)
    put_log(aws, KEY, every_rule_kind())
    try:
        result = handler_module.handler(s3_event(KEY), Context())
    finally:
        silent.close()
    assert result["alerts"] == {KEY: "undelivered"}
    assert len(keys(aws, SPIKE_BUCKET, "spikes/")) == 1
    saved = marker(aws, KEY)
    assert saved["status"] == "undelivered" and "imeout" in saved["reason"]
    assert saved["attempts"] == FAST.max_attempts


def test_missing_ssm_parameter_is_recorded_not_raised(aws, monkeypatch, httpserver):
    calls = discord_fake(httpserver, [(200, {"id": "1"}, {})])
    monkeypatch.setenv("DISCORD_WEBHOOK_SSM_PARAMETER", "/smartfarm/nope")
    put_log(aws, KEY, every_rule_kind())
    result = handler_module.handler(s3_event(KEY), Context())
    assert result["alerts"] == {KEY: "undelivered"} and calls == []
    assert marker(aws, KEY)["reason"] == "webhook URL unavailable: ParameterNotFound"


def test_without_webhook_spikes_are_stored_and_no_alert_is_sent(aws, monkeypatch, httpserver):
    calls = discord_fake(httpserver, [(200, {"id": "1"}, {})])
    monkeypatch.delenv("DISCORD_WEBHOOK_SSM_PARAMETER")
    put_log(aws, KEY, every_rule_kind())
    result = handler_module.handler(s3_event(KEY), Context())
    assert result["alerts"] == {KEY: "not_configured"} and calls == []
    assert len(keys(aws, SPIKE_BUCKET, "spikes/")) == 1


def test_rules_path_override_and_non_log_keys(aws, httpserver, monkeypatch, tmp_path):
    discord_fake(httpserver, [(200, {"id": "1"}, {})])
    rules = tmp_path / "rules.toml"
    rules.write_text("[out_of_band]\nhumidity = [20.0, 99.5]\n")
    monkeypatch.setenv("RULES_PATH", str(rules))
    put_log(aws, KEY, every_rule_kind())
    other = "errors/processing-failed/2026/11/28/x"
    result = handler_module.handler(s3_event(KEY, other), Context())
    assert result["spikes"] == 3  # humidity 99 is inside the widened band
    assert result["objects"] == 2 and result["ok"] == 1 and result["failed"] == []


def test_healthy_file_writes_nothing_and_sends_nothing(aws, httpserver):
    calls = discord_fake(httpserver, [(200, {"id": "1"}, {})])
    rows = [("gh-1", "dev-1", T0 + i * MIN, 21.0, 60.0, 800.0, 0) for i in range(10)]
    put_log(aws, KEY, table_from_rows(rows))
    result = handler_module.handler(s3_event(KEY), Context())
    assert result["spikes"] == 0 and calls == []
    assert keys(aws, SPIKE_BUCKET, "") == []


def test_backfilled_history_gets_spikes_but_no_alert(aws, httpserver):
    calls = discord_fake(httpserver, [(200, {"id": "1"}, {})])
    aws.put_object(
        Bucket=LOG_BUCKET,
        Key=KEY,
        Body=lake.parquet_bytes(every_rule_kind()),
        Metadata={"smartfarm-source": "backfill"},
    )
    result = handler_module.handler(s3_event(KEY), Context())
    assert result["spikes"] == 4 and result["alerts"] == {KEY: "skipped_backfill"}
    assert calls == [] and len(keys(aws, SPIKE_BUCKET, "spikes/")) == 1


def test_missing_marker_read_as_403_counts_as_missing(aws):
    """A role with only a prefix-scoped s3:ListBucket gets 403 for a missing key."""
    from botocore.exceptions import ClientError

    def deny(params, **_):
        if params["url_path"].find("alerts") >= 0:
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "denied"}}, "GetObject")

    s3 = boto3.client("s3")
    s3.meta.events.register("before-call.s3.GetObject", deny)
    store = handler_module.S3Store(s3, SPIKE_BUCKET)
    assert store.get("alerts/nothing-here.json") is None
    store.put("alerts/there.json", b"{}")
    with pytest.raises(ClientError):
        store.get("alerts/there.json")  # really forbidden, not missing: the error stands
    assert store.get("spikes/none.parquet") is None  # plain 404 path


# -- CloudWatch alarms relayed from the alarms topic (issue 16 item 12) --------------------------

ALARM_TOPIC = "arn:aws:sns:ap-northeast-2:123456789012:smartfarm-alarms"


def alarm_event(*messages) -> dict:
    """An SNS -> Lambda event as the alarms topic delivers it (Message is the alarm's JSON)."""
    return {
        "Records": [
            {
                "EventSource": "aws:sns",
                "EventVersion": "1.0",
                "EventSubscriptionArn": f"{ALARM_TOPIC}:0b1f6a2e-1111-2222-3333-444455556666",
                "Sns": {
                    "Type": "Notification",
                    "MessageId": f"95df01b4-ee98-5cb9-9903-4c221d41eb5{i}",
                    "TopicArn": ALARM_TOPIC,
                    "Subject": "ALARM: smartfarm-alarm-anomaly-failures-dlq",
                    "Message": message if isinstance(message, str) else json.dumps(message),
                    "Timestamp": "2026-11-29T10:05:00.000Z",
                    "SignatureVersion": "1",
                    "Signature": "EXAMPLE",
                    "SigningCertUrl": "https://sns.ap-northeast-2.amazonaws.com/cert.pem",
                    "UnsubscribeUrl": "https://sns.ap-northeast-2.amazonaws.com/?Action=Unsubscribe",
                    "MessageAttributes": {},
                },
            }
            for i, message in enumerate(messages)
        ]
    }


DLQ_ALARM = {
    "AlarmName": "smartfarm-alarm-anomaly-failures-dlq",
    "AlarmDescription": "Events are waiting in the dead-letter queue smartfarm-anomaly-failures.",
    "AWSAccountId": "123456789012",
    "AlarmConfigurationUpdatedTimestamp": "2026-11-29T09:00:00.000+0000",
    "NewStateValue": "ALARM",
    "NewStateReason": "Threshold Crossed: 1 datapoint [3.0 (29/11/26 10:00:00)] was greater "
    "than the threshold (0.0).",
    "StateChangeTime": "2026-11-29T10:05:00.000+0000",
    "Region": "Asia Pacific (Seoul)",
    "AlarmArn": "arn:aws:cloudwatch:ap-northeast-2:123456789012:alarm:smartfarm-alarm-x",
    "OldStateValue": "OK",
    "Trigger": {
        "MetricName": "ApproximateNumberOfMessagesVisible",
        "Namespace": "AWS/SQS",
        "Statistic": "MAXIMUM",
        "Dimensions": [{"value": "smartfarm-anomaly-failures", "name": "QueueName"}],
        "Period": 300,
        "EvaluationPeriods": 1,
        "ComparisonOperator": "GreaterThanThreshold",
        "Threshold": 0.0,
    },
}


def test_alarm_notifications_become_one_discord_message_each(aws, httpserver):
    calls = discord_fake(httpserver, [(200, {"id": "1"}, {})])
    back = DLQ_ALARM | {"NewStateValue": "OK", "OldStateValue": "ALARM"}
    result = handler_module.handler(alarm_event(DLQ_ALARM, back), Context())
    assert result == {
        "alarms": 2,
        "delivered": 2,
        "undelivered": 0,
        "not_configured": 0,
        "skipped": 0,
    }
    assert len(calls) == 2
    first, second = (c["json"] for c in calls)
    assert (
        "smartfarm-alarm-anomaly-failures-dlq" in first["content"]
        and "is ALARM" in first["content"]
    )
    assert "is back to OK" in second["content"]
    fields = {f["name"]: f["value"] for f in first["embeds"][0]["fields"]}
    assert fields["State"] == "OK → **ALARM**"
    assert fields["Metric"] == "`AWS/SQS/ApproximateNumberOfMessagesVisible`"
    assert fields["Reason"].startswith("Threshold Crossed")
    for body in (first, second):
        assert discord.limit_violations(body) == []
        assert "123456789012" not in json.dumps(body)  # no account id or ARN in the channel
        assert body["allowed_mentions"] == {"parse": []}
    assert keys(aws, SPIKE_BUCKET, "") == []  # an alarm is not a log file: nothing stored


def test_alarm_relay_failures_are_logged_not_raised(aws, httpserver, monkeypatch, capsys):
    calls = discord_fake(httpserver, [(500, {"message": "Internal Server Error"}, {})])
    result = handler_module.handler(alarm_event(DLQ_ALARM, "not json", {"x": 1}), Context())
    assert result["alarms"] == 1 and result["undelivered"] == 1 and result["skipped"] == 2
    assert len(calls) == FAST.max_attempts
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    relayed = [e for e in events if e.get("event") == "alarm_relayed"]
    assert relayed and relayed[0]["status"] == "undelivered" and "HTTP 500" in relayed[0]["error"]
    monkeypatch.delenv("DISCORD_WEBHOOK_SSM_PARAMETER")
    handler_module._webhook_cache.clear()
    quiet = handler_module.handler(alarm_event(DLQ_ALARM), Context())
    assert quiet["not_configured"] == 1 and len(calls) == FAST.max_attempts


def test_huge_alarm_texts_stay_within_discord_limits():
    huge = DLQ_ALARM | {
        "AlarmName": "a" * 300,
        "AlarmDescription": "d" * 5000,
        "NewStateReason": "r" * 5000,
        "Trigger": {"Namespace": "n" * 300, "MetricName": "m"},
    }
    message = discord.build_alarm_message(huge)
    assert discord.limit_violations(message) == []
    assert discord.build_alarm_message({"AlarmName": "x"})["embeds"][0]["fields"]
