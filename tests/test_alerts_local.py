"""alerting.py: webhook resolution and the local target's alert hook (real HTTP server)."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime

import boto3
import pytest
from moto import mock_aws
from werkzeug import Response

from smartfarm_cli import alerting
from smartfarm_cli.core import alerts, lake
from smartfarm_cli.targets.local import LocalTarget

TOKEN = "local-hook-T0KEN-secret"
PATH = f"/api/webhooks/31337/{TOKEN}"
NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
FAST = alerts.RetryPolicy(
    max_attempts=2, timeout_s=0.3, backoff_base_s=0.01, backoff_max_s=0.02, max_total_s=2.0
)


def discord_fake(httpserver, responses):
    calls: list[dict] = []

    def handle(request):
        calls.append({"t": time.monotonic(), "json": request.get_json(silent=True)})
        status, body = responses[min(len(calls), len(responses)) - 1]
        return Response(json.dumps(body), status=status, content_type="application/json")

    httpserver.expect_request(PATH, method="POST").respond_with_handler(handle)
    return calls


def readings_with_anomalies():
    ts = NOW.isoformat().replace("+00:00", "Z")
    base = {"greenhouse_id": "gh-1", "timestamp": ts, "humidity": 60, "co2": 800}
    return [
        {**base, "device_id": "dev-1", "temperature": "400", "error_code": "0"},  # seed example
        {**base, "device_id": "dev-2", "temperature": "21", "error_code": "1"},
        {**base, "device_id": "dev-3", "temperature": 21.5, "error_code": 0},
    ]


def redo(target, source):
    """Process one delivered log file again, as a redone delivery does."""
    table = lake.read_parquet_bytes(target.logs.get(source))
    spikes, _ = lake.spike_objects(table, source, target.rules)
    target.store_spikes(source, spikes)


def test_no_webhook_means_no_hook(tmp_path):
    target = LocalTarget(tmp_path / "home")
    assert alerting.local_alert_hook(target, env={}) is None


def test_malformed_webhook_is_a_user_error(tmp_path):
    target = LocalTarget(tmp_path / "home")
    with pytest.raises(alerting.WebhookError, match="only https:// is allowed") as info:
        alerting.local_alert_hook(target, env={alerting.WEBHOOK_ENV: "discord.com/api/x"})
    assert info.value.exit_code == 2


def test_local_target_alerts_once_per_delivered_file(tmp_path, httpserver, monkeypatch, caplog):
    calls = discord_fake(httpserver, [(200, {"id": "1"})])
    monkeypatch.setenv(alerting.WEBHOOK_ENV, httpserver.url_for(PATH))
    target = LocalTarget(tmp_path / "home")
    hook = alerting.local_alert_hook(target, policy=FAST)
    target.alert_hook = hook
    caplog.set_level(logging.INFO, logger="smartfarm.alerts")
    result = target.ingest(readings_with_anomalies())
    assert result.accepted == 3
    assert len(calls) == 1
    body = calls[0]["json"]
    # One message for the file: its two anomalies opened two incidents.
    assert "2 opened" in body["content"] and body["allowed_mentions"] == {"parse": []}
    assert [o.status for o in hook.outcomes] == ["delivered"]
    source = hook.outcomes[0].source_key
    marker = json.loads(target.spike_store.get(lake.alert_key(source)))
    assert marker["status"] == "delivered"

    # the same file processed again (a redone delivery): spikes overwritten, no second message
    redo(target, source)
    assert len(calls) == 1
    assert [o.status for o in hook.outcomes] == ["delivered"]  # nothing new to announce
    # and a queued message whose marker says delivered is not sent again
    target.db.execute("UPDATE alert_outbox SET status = 'pending'")
    target.send_alerts()
    assert len(calls) == 1 and hook.outcomes[-1].status == alerts.ALREADY_DELIVERED
    assert len(target.spike_store.keys("spikes")) == 1
    assert TOKEN not in ours(caplog)
    target.close()


def ours(caplog) -> str:
    """Our log lines (the fake Discord server's own access log shows the path, of course)."""
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("smartfarm"))


def test_local_undelivered_is_logged_recorded_and_retried(tmp_path, httpserver, caplog):
    calls = discord_fake(httpserver, [(503, {"message": "unavailable"})])
    target = LocalTarget(tmp_path / "home")
    hook = alerting.local_alert_hook(
        target, webhook=httpserver.url_for(PATH), policy=FAST, sleep=lambda s: None
    )
    target.alert_hook = hook
    with caplog.at_level(logging.WARNING, logger="smartfarm.alerts"):
        target.ingest(readings_with_anomalies())
    assert len(calls) == FAST.max_attempts
    assert hook.outcomes[0].status == alerts.UNDELIVERED
    assert "not delivered" in ours(caplog) and TOKEN not in ours(caplog)
    assert len(target.spike_store.keys("spikes")) == 1  # spikes stored regardless

    httpserver.clear()
    calls = discord_fake(httpserver, [(200, {"id": "1"})])
    source = hook.outcomes[0].source_key
    redo(target, source)  # within a minute of the failure: not retried yet (no storm)
    assert len(calls) == 0
    target.send_alerts(retry_after_s=0)  # what the next delivery does a minute later
    assert len(calls) == 1 and hook.outcomes[-1].status == alerts.DELIVERED
    target.close()


def test_resolution_order_flag_env_ssm(monkeypatch):
    env = {alerting.WEBHOOK_ENV: "https://discord.com/api/webhooks/2/from-env"}
    flag = alerting.resolve_webhook("https://discord.com/api/webhooks/1/from-flag", env=env)
    assert flag.origin == "--webhook" and flag.url.endswith("from-flag")
    from_env = alerting.resolve_webhook(None, ssm_parameter="/x", env=env)
    assert from_env.origin == alerting.WEBHOOK_ENV
    assert alerting.resolve_webhook(None, env={}) is None
    assert "from-env" not in repr(from_env) and "from-env" not in str(from_env)
    assert from_env.masked == "https://discord.com/api/webhooks/2/****"

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        boto3.client("ssm").put_parameter(
            Name="/smartfarm/discord_webhook",
            Value="https://discord.com/api/webhooks/3/from-ssm",
            Type="SecureString",
        )
        found = alerting.resolve_webhook(None, ssm_parameter="/smartfarm/discord_webhook", env={})
        assert found.url.endswith("from-ssm")
        assert found.origin == "SSM parameter /smartfarm/discord_webhook"
        with pytest.raises(alerting.WebhookError, match="ParameterNotFound") as info:
            alerting.resolve_webhook(None, ssm_parameter="/smartfarm/missing", env={})
        assert "/smartfarm/missing" in str(info.value)


def test_importing_alerting_stays_light():
    import subprocess
    import sys

    code = (
        "import sys, smartfarm_cli.alerting, smartfarm_cli.discord_cli; "
        "heavy = [m for m in ('requests', 'boto3', 'botocore', 'awswrangler', 'pandas', 'duckdb', "
        "'pyarrow', 'smartfarm_cli.core.alerts') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
