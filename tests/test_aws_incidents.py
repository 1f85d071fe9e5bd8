"""`farmctl alerts`, `status` and `check` on the aws target (issue 14), on moto DynamoDB: the
items are written by the same core code (and the same Lambda) that writes them in the stack."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber
from reliability.lambdas import load
from test_aws_target import make_target, stack  # noqa: F401 (the moto stack fixture)

from smartfarm_cli.core import incidents, queries
from smartfarm_cli.core.rules import detect, load_rules
from smartfarm_cli.core.state import DynamoEventLog, DynamoStateStore
from smartfarm_cli.core.validate import table_from_rows

TABLE = "sf-device-state"
RULES = load_rules()
POLICY = incidents.policy_from(RULES.alerts)
MIN = 60_000
silent_check = load("silent_check")


@pytest.fixture
def state(stack):  # noqa: F811
    client = stack.session.client("dynamodb")
    client.create_table(
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
    stack.outputs["state_table"] = TABLE
    stack.outputs["silent_check_function_name"] = "sf-silent_check"
    (stack.home / "aws-outputs.json").write_text(json.dumps(stack.outputs))
    return client


def observe(client, device, minute, error_code, t0):
    rows = [("gh-1", device, t0 + minute * MIN, 21.0, 60.0, 800.0, error_code)]
    table = table_from_rows(rows)
    source = f"logs/{device}-{minute}.parquet"
    events = incidents.observe(
        detect(table, RULES, source),
        table,
        POLICY,
        DynamoStateStore(client, TABLE),
        source,
        t0 + minute * MIN + 30_000,
        incidents.centre_of(RULES),
        replay=True,
    )
    DynamoEventLog(client, TABLE).append(incidents.log_records(events, source), source)


def test_alerts_show_open_incidents_and_history_like_local(stack, state):  # noqa: F811
    t0 = int(datetime.now(UTC).timestamp() * 1000) // MIN * MIN - 120 * MIN
    observe(state, "d1", 0, 1, t0)  # opened, then resolved 20 min later
    observe(state, "d1", 20, 0, t0)
    observe(state, "d2", 30, 3, t0)  # still open
    target = make_target(stack)
    result = target.alerts("24h", None)
    assert result.columns == incidents.ALERT_COLUMNS
    got = [(r[0], r[2], r[3], r[8]) for r in result.rows]
    assert got == [
        ("open", "d2", "sensor_error", 1),
        ("opened", "d2", "sensor_error", 1),
        ("resolved", "d1", "sensor_error", 1),
        ("opened", "d1", "sensor_error", 1),
    ]
    assert result.rows[0][6] == datetime.fromtimestamp(
        (t0 + 30 * MIN + 30_000) / 1000, UTC
    ).replace(tzinfo=None)
    assert [r[0] for r in target.alerts("24h", "resolved").rows] == ["resolved"]
    assert [r[2] for r in target.alerts("24h", "open").rows] == ["d2"]
    assert [r[0] for r in target.alerts("95m", None).rows] == ["open", "opened"]  # window
    assert target._open_incident_count() == 1
    with pytest.raises(queries.QueryError, match="choose open or resolved"):
        target.alerts("24h", "closed")


def test_alerts_on_a_stack_without_the_table_say_to_redeploy(stack):  # noqa: F811
    from smartfarm_cli.errors import UserError

    target = make_target(stack)
    assert target._open_incident_count() is None
    with pytest.raises(UserError, match="farmctl deploy"):
        target.alerts("24h", None)


def test_check_runs_the_silent_check_lambda_and_prints_its_events(stack, state, monkeypatch):  # noqa: F811
    """moto cannot run Lambda code: the function's answer is what its handler returns when
    called directly against the same table (no webhook configured)."""
    t0 = int(datetime.now(UTC).timestamp() * 1000) // MIN * MIN - 60 * MIN
    observe(state, "d1", 0, 0, t0)
    monkeypatch.setenv("STATE_TABLE", TABLE)
    monkeypatch.setenv("SPIKE_BUCKET", "sf-spikes")
    monkeypatch.delenv("DISCORD_WEBHOOK_SSM_PARAMETER", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", stack.outputs["region"])
    answer = silent_check.handler({"source": "farmctl check"}, None)
    assert answer["alert"] == "not_configured" and len(answer["events"]) == 1
    target = make_target(stack)
    client = target.client("lambda")
    payload = json.dumps(answer).encode()
    with Stubber(client) as stub:
        stub.add_response(
            "invoke",
            {"StatusCode": 200, "Payload": StreamingBody(io.BytesIO(payload), len(payload))},
            {
                "FunctionName": "sf-silent_check",
                "InvocationType": "RequestResponse",
                "Payload": json.dumps({"source": "farmctl check"}).encode(),
            },
        )
        events = target.check()
    assert [incidents.describe(e) for e in events] == [
        "gh-1/d1 silent since "
        + datetime.fromtimestamp((t0 + 30_000) / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
    ]
    assert target._open_incident_count() == 1


def test_farmctl_alerts_on_aws_prints_json_rows(stack, state):  # noqa: F811
    from typer.testing import CliRunner

    from smartfarm_cli.cli import app

    t0 = int(datetime.now(UTC).timestamp() * 1000) // MIN * MIN - 30 * MIN
    observe(state, "d7", 0, 1, t0)
    result = CliRunner().invoke(app, ["--target", "aws", "alerts", "--state", "open", "-o", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["state"], r["device_id"], r["rule"], r["anomalies"]) for r in rows] == [
        ("open", "d7", "sensor_error", 1)
    ]
    bad = CliRunner().invoke(app, ["--target", "aws", "alerts", "--state", "closed"])
    assert bad.exit_code == 2 and "choose open or resolved" in bad.output
