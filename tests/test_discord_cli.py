"""`farmctl discord test` through typer's CliRunner on the sub-app, against a local server."""

from __future__ import annotations

import json
import socket

import boto3
import pytest
from moto import mock_aws
from typer.testing import CliRunner
from werkzeug import Response

from smartfarm_cli import discord_cli
from smartfarm_cli.alerting import WEBHOOK_ENV

TOKEN = "cli-T0KEN-must-stay-hidden"
PATH = f"/api/webhooks/5150/{TOKEN}"
runner = CliRunner()


@pytest.fixture(autouse=True)
def fast_and_clean(monkeypatch):
    monkeypatch.setattr(
        discord_cli,
        "TEST_POLICY",
        {"max_attempts": 2, "timeout_s": 0.3, "backoff_base_s": 0.01, "max_total_s": 2.0},
    )
    yield
    discord_cli.set_ssm_parameter_source(None)


def discord_fake(httpserver, status=200, body=None):
    calls = []

    def handle(request):
        calls.append({"json": request.get_json(silent=True), "query": request.query_string})
        return Response(json.dumps(body or {"id": "1"}), status=status)

    httpserver.expect_request(PATH, method="POST").respond_with_handler(handle)
    return calls


def invoke(*args, env=None):
    result = runner.invoke(discord_cli.discord_app, list(args), env=env)
    assert TOKEN not in result.output
    assert "Traceback" not in result.output
    return result


def test_sends_a_labelled_test_message_with_the_flag(httpserver):
    calls = discord_fake(httpserver)
    result = invoke("test", "--webhook", httpserver.url_for(PATH))
    assert result.exit_code == 0, result.output
    assert len(calls) == 1 and calls[0]["query"] == b"wait=true"
    assert "TEST" in calls[0]["json"]["content"]
    assert calls[0]["json"]["allowed_mentions"] == {"parse": []}
    assert "/api/webhooks/5150/****" in result.output and "(from --webhook)" in result.output
    assert "Delivered (HTTP 200" in result.output


def test_uses_the_environment_variable(httpserver):
    calls = discord_fake(httpserver)
    result = invoke("test", env={WEBHOOK_ENV: httpserver.url_for(PATH)})
    assert result.exit_code == 0 and len(calls) == 1
    assert f"(from {WEBHOOK_ENV})" in result.output


def test_rejected_webhook_exits_1_with_one_clear_line(httpserver):
    discord_fake(httpserver, status=404, body={"message": "Unknown Webhook", "code": 10015})
    result = invoke("test", "--webhook", httpserver.url_for(PATH))
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "HTTP 404: Unknown Webhook" in errors[0] and "check the webhook URL" in errors[0]


def test_unreachable_host_exits_1():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    result = invoke("test", "--webhook", f"http://127.0.0.1:{port}{PATH}")
    assert result.exit_code == 1
    assert "not delivered" in result.output and "network" in result.output


def test_no_webhook_exits_2_and_says_how_to_set_one():
    result = invoke("test", env={WEBHOOK_ENV: ""})
    assert result.exit_code == 2
    assert "--webhook" in result.output and WEBHOOK_ENV in result.output


def test_malformed_webhook_exits_2():
    result = invoke("test", "--webhook", "ftp://example.com/x")
    assert result.exit_code == 2 and "only https:// is allowed" in result.output


def test_aws_ssm_parameter_from_the_stack_outputs(httpserver, monkeypatch):
    calls = discord_fake(httpserver)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        boto3.client("ssm").put_parameter(
            Name="/smartfarm/discord_webhook", Value=httpserver.url_for(PATH), Type="SecureString"
        )
        asked = []

        def from_outputs():
            asked.append(True)
            return "/smartfarm/discord_webhook", boto3.client("ssm", region_name="us-east-1")

        discord_cli.set_ssm_parameter_source(from_outputs)
        result = invoke("test")
        assert result.exit_code == 0, result.output
        assert "(from SSM parameter /smartfarm/discord_webhook)" in result.output
        assert len(calls) == 1 and asked == [True]

        # the flag wins and no AWS call is made
        asked.clear()
        assert invoke("test", "--webhook", httpserver.url_for(PATH)).exit_code == 0
        assert asked == []

        missing = invoke("test", "--ssm-parameter", "/smartfarm/nope")
        assert missing.exit_code == 2 and "ParameterNotFound" in missing.output
