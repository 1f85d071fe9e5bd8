"""Incidents on the local target (issue 14, local half): real files, real SQLite, a real local
HTTP server standing in for Discord, and a fake clock."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner
from werkzeug import Response

from smartfarm_cli import alerting
from smartfarm_cli.cli import app
from smartfarm_cli.core import alerts
from smartfarm_cli.core.validate import table_from_rows
from smartfarm_cli.targets.local import LocalTarget

TOKEN = "incidents-T0KEN-secret"
PATH = f"/api/webhooks/4242/{TOKEN}"
T0 = int(datetime(2026, 11, 28, 0, 0, tzinfo=UTC).timestamp() * 1000)
MIN = 60_000
FAST = alerts.RetryPolicy(
    max_attempts=2, timeout_s=0.5, backoff_base_s=0.01, backoff_max_s=0.02, max_total_s=2.0
)


def discord_fake(httpserver):
    calls: list[dict] = []

    def handle(request):
        calls.append(request.get_json(silent=True))
        return Response(json.dumps({"id": str(len(calls))}), status=200)

    httpserver.expect_request(PATH, method="POST").respond_with_handler(handle)
    return calls


@pytest.fixture
def farm(tmp_path, httpserver):
    calls = discord_fake(httpserver)
    target = LocalTarget(tmp_path / "home")
    target.alert_hook = alerting.local_alert_hook(
        target, webhook=httpserver.url_for(PATH), policy=FAST
    )
    clock = [T0 / 1000]
    target.clock = lambda: clock[0]
    yield target, calls, clock
    target.close()


def deliver_minute(target, clock, minute, device="d1", error_code=0, temperature=21.0):
    """One reading as one delivered file, processed 30 s after its minute."""
    clock[0] = (T0 + minute * MIN + 30_000) / 1000
    table = table_from_rows(
        [("gh-1", device, T0 + minute * MIN, temperature, 60.0, 800.0, error_code)]
    )
    target.write_logs(table, f"stream-{device}-{minute:06d}")


def test_stuck_sensor_sends_opened_reminders_and_resolved_only(farm):
    target, calls, clock = farm
    for minute in range(180):  # 3 h stuck at error_code 1, one file a minute
        deliver_minute(target, clock, minute, error_code=1)
    for minute in range(180, 200):
        deliver_minute(target, clock, minute)
    # By hand: opened at minute 0, reminders at minutes 60 and 120 (an hour since the last
    # message), resolved at minute 189 (10 min of readings after the last anomaly, minute 179).
    texts = [c["embeds"][0]["description"] for c in calls]
    assert len(calls) == 4, texts
    assert texts[0] == "gh-1/d1 sensor_error (error_code) opened: 1 anomaly, worst 1"
    assert texts[1].startswith("gh-1/d1 sensor_error (error_code) still firing x60 since")
    assert texts[3] == "gh-1/d1 sensor_error (error_code) resolved after 3 h 9 min"
    history = target.alerts("7d").records()
    assert [r["state"] for r in history] == ["resolved", "still firing", "still firing", "opened"]
    assert target.alerts("7d", "open").rows == []


def test_silent_device_one_message_when_silent_one_when_back(farm):
    target, calls, clock = farm
    deliver_minute(target, clock, 0)
    clock[0] = (T0 + 5 * MIN) / 1000
    assert target.check() == []  # quiet for 4.5 min: not silent yet
    clock[0] = (T0 + 61 * MIN) / 1000
    assert [e.rule for e in target.check()] == ["silent"]
    assert target.check() == []  # still silent: no second message
    assert [r["rule"] for r in target.alerts(state="open").records()] == ["silent"]
    deliver_minute(target, clock, 65)
    assert len(calls) == 2
    assert calls[0]["embeds"][0]["description"] == "gh-1/d1 silent since 2026-11-28 00:00 UTC"
    assert calls[1]["embeds"][0]["description"] == (
        "gh-1/d1 reporting again after 4 min of silence"
    )


def test_a_kill_between_storing_and_sending_loses_and_doubles_nothing(farm, tmp_path):
    target, calls, clock = farm
    hook = target.alert_hook

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed before the message went out")

    target.alert_hook = killed
    with pytest.raises(KeyboardInterrupt):
        deliver_minute(target, clock, 0, error_code=2)
    assert calls == []
    target.close()
    restarted = LocalTarget(target.home)  # a new process on the same home
    restarted.alert_hook = hook
    restarted.clock = target.clock
    assert len(restarted.spikes("7d").rows) == 1  # the spike was stored before the kill
    deliver_minute(restarted, clock, 1, error_code=2)  # the next delivery sends the queue
    restarted.check()
    assert len(calls) == 1 and "opened" in calls[0]["content"]
    restarted.check(retry_after_s=0)
    assert len(calls) == 1  # sent once, never again
    restarted.close()


def test_cli_alerts_check_and_status(tmp_path, httpserver, monkeypatch):
    discord_fake(httpserver)
    monkeypatch.setenv(alerting.WEBHOOK_ENV, httpserver.url_for(PATH))
    home = tmp_path / "farm"
    now = datetime.now(UTC).replace(microsecond=0).isoformat()
    reading = {
        "greenhouse_id": "gh-1",
        "device_id": "d1",
        "timestamp": now,
        "temperature": 21,
        "humidity": 60,
        "co2": 800,
        "error_code": 4,
    }
    runner = CliRunner()
    assert (
        runner.invoke(
            app, ["--home", str(home), "ingest", "-"], input=json.dumps(reading)
        ).exit_code
        == 0
    )
    out = runner.invoke(app, ["--home", str(home), "alerts", "-o", "json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)
    assert [(r["state"], r["rule"], r["severity"]) for r in rows] == [
        ("open", "sensor_error", "critical"),
        ("opened", "sensor_error", "critical"),
    ]
    status = json.loads(runner.invoke(app, ["--home", str(home), "status", "-o", "json"]).stdout)
    assert status["open_incidents"] == 1
    checked = runner.invoke(app, ["--home", str(home), "check"])
    assert checked.exit_code == 0 and "0 device(s) newly silent" in checked.output
    bad = runner.invoke(app, ["--home", str(home), "alerts", "--state", "closed"])
    assert bad.exit_code == 2 and "unknown state 'closed'" in bad.output
    assert TOKEN not in out.output + checked.output
