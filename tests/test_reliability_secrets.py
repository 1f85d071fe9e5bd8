"""R7 secrets: every command with a webhook URL and API keys configured; none of them leaks.

Secrets, each recognisable: the Discord webhook token (env var locally, SSM SecureString on aws
and for the Lambda), the ingest and simulator API keys (API Gateway keys in moto, an SSM
parameter for the pseudo_sensor_log Lambda, an env var for tests), the AWS secret access key
and session token, and a sensitive Terraform output (deploy / destroy with a fake terraform).

Looked for in: stdout and stderr of every command (success AND failure paths: Discord answering
500, a refused webhook port), every log record at INFO and above from any logger plus DEBUG from
`smartfarm*` loggers (the fake Discord server's own `werkzeug` access log is left out: it is the
server's log, not ours), the JSON logs of the three Lambda handlers, and every file written to
the home folder (stream, lake, spike store, alert markers, rejected store, unsent files).

Third-party DEBUG logs (urllib3 prints request paths, botocore prints decrypted SSM answers)
are not enabled by farmctl and are outside this check (README "Reliability").
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import time
from pathlib import Path

import boto3
import pytest
from moto import mock_aws
from reliability.lambdas import load
from test_aws_stack import fake_tf  # noqa: F401  (fixture: fake terraform on PATH)
from test_aws_target import inject_athena_result, stack  # noqa: F401  (fixture: moto stack)
from typer.testing import CliRunner
from werkzeug import Response

from smartfarm_cli import discord_cli
from smartfarm_cli.cli import app
from smartfarm_cli.core import alerts
from smartfarm_cli.stack import save_outputs

TOKEN = "R7wh00kT0KEN-4f1c9e2b7a"
HOOK_PATH = f"/api/webhooks/707070/{TOKEN}"
AWS_SECRET = "R7awsSECRETkey-0b1c2d3e4f5a6b7c8d9e"
AWS_SESSION = "R7awsSESSIONtoken-99aa88bb77cc"
INGEST_KEY = "R7ingestAPIkey-5e6f7a8b9c0d"
SECRETS = (TOKEN, AWS_SECRET, AWS_SESSION, INGEST_KEY)
FAST = alerts.RetryPolicy(max_attempts=2, timeout_s=0.5, backoff_base_s=0.01, max_total_s=2.0)
runner = CliRunner()
CHECKED: list[str] = []  # every command run, for the README count


def discord_fake(server, status=200):
    calls = []

    def handle(request):
        calls.append(request.get_json(silent=True))
        body = {"id": "1"} if status < 300 else {"message": "boom", "code": 0}
        return Response(json.dumps(body), status=status, content_type="application/json")

    server.expect_request(HOOK_PATH, method="POST").respond_with_handler(handle)
    return calls


@pytest.fixture
def secret_env(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", AWS_SESSION)
    monkeypatch.setenv("INGEST_API_KEY", INGEST_KEY)
    monkeypatch.setattr(alerts, "DEFAULT_POLICY", FAST)
    monkeypatch.setattr(discord_cli, "TEST_POLICY", FAST.__dict__ | {})
    return tmp_path


@pytest.fixture
def logs(caplog):
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="smartfarm")
    return caplog


def our_logs(caplog) -> str:
    return "\n".join(
        f"{r.name} {r.getMessage()} {r.exc_text or ''}"
        for r in caplog.records
        if not r.name.startswith("werkzeug")
    )


def assert_no_secret(text: str, where: str, extra: tuple[str, ...] = ()) -> None:
    for secret in SECRETS + extra:
        assert secret not in text, f"{secret!r} leaked in {where}:\n{text[-3000:]}"


def farmctl(*args, input=None, extra=()):
    result = runner.invoke(app, list(args), input=input)
    CHECKED.append(" ".join(a for a in args if not a.startswith("/")))
    assert_no_secret(result.output + repr(result.exception), f"farmctl {' '.join(args)}", extra)
    assert "Traceback" not in result.output
    return result


def files_hold_no_secret(home: Path, extra=()) -> int:
    checked = 0
    for path in home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for secret in SECRETS + extra:
                assert secret.encode() not in data, f"{secret} in {path}"
            checked += 1
    return checked


def reading_lines(tag: str = "") -> str:
    """Readings with an anomaly on device `hot<tag>`: a new tag opens a new incident (and so
    sends a new alert); the same tag again only counts into the open one."""
    from datetime import UTC, datetime

    now = datetime.now(UTC).isoformat()
    base = {"greenhouse_id": "gh-1", "timestamp": now, "humidity": 60, "co2": 800}
    rows = [
        {**base, "device_id": f"hot{tag}", "temperature": "400", "error_code": "0"},
        {**base, "device_id": "ok", "temperature": 21, "error_code": 0},
        {**base, "device_id": "bad", "temperature": f"leak {TOKEN[:3]}", "error_code": 0},
    ]
    return "".join(json.dumps(r) + "\n" for r in rows) + "{not json\n"


def test_every_local_command_with_a_webhook_and_keys_configured(
    secret_env, logs, httpserver, monkeypatch
):
    home = secret_env / "home"
    monkeypatch.setenv("SMARTFARM_HOME", str(home))
    monkeypatch.setenv("SMARTFARM_DISCORD_WEBHOOK", httpserver.url_for(HOOK_PATH))
    calls = discord_fake(httpserver)
    source = secret_env / "readings.ndjson"
    source.write_text(reading_lines())
    steps = [
        ["simulate", "--count", "3", "--interval", "0", "-g", "2", "--anomaly-rate", "0.5",
         "--seed", "1"],
        ["send-fake-logs", "--count", "2", "--interval", "0"],
        ["ingest", str(source)],
        ["ingest", "--strict", "-"],
        ["backfill", "--days", "0.05", "-g", "1", "-d", "1"],
        ["flush"],
        ["trend", "temperature", "--days", "1"],
        ["query", "SELECT count(*) FROM readings"],
        ["query", "SELECT nonsense FROM nowhere"],
        ["spikes", "-o", "json"],
        ["latest", "-o", "csv"],
        ["watch", "--duration", "0.5", "--refresh", "0.1"],
        ["status"],
        ["rejected"],
        ["alerts"],
        ["check"],
        ["discord", "test"],
        ["crawl"],
        ["destroy"],
    ]  # fmt: skip
    for args in steps:
        farmctl(*args, input=reading_lines() if args[-1] == "-" else "n\n")
    assert calls, "alerts and the test message really went to the webhook"

    # failure paths: Discord answering 500, then nobody listening on the webhook's port
    httpserver.clear()
    discord_fake(httpserver, status=500)
    source.write_text(reading_lines("2"))  # a new device's anomaly: a new incident to announce
    farmctl("ingest", str(source))
    farmctl("discord", "test")
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    monkeypatch.setenv("SMARTFARM_DISCORD_WEBHOOK", f"http://127.0.0.1:{port}{HOOK_PATH}")
    source.write_text(reading_lines("3"))
    farmctl("ingest", str(source))
    failed = farmctl("discord", "test")
    assert failed.exit_code == 1 and "not delivered" in failed.output
    masked = farmctl("discord", "test", "--webhook", f"notaurl/{TOKEN}")
    assert masked.exit_code == 2

    assert "not delivered" in our_logs(logs)  # the warning path really ran
    assert_no_secret(our_logs(logs), "logs")
    assert files_hold_no_secret(home) > 10


def test_demo_with_a_webhook_configured(secret_env, logs, httpserver, monkeypatch):
    monkeypatch.setenv("SMARTFARM_DISCORD_WEBHOOK", httpserver.url_for(HOOK_PATH))
    calls = discord_fake(httpserver)
    home = secret_env / "demo"
    # the demo's readings are synthetic: ask for their alerts, so the webhook is really used
    result = farmctl("--home", str(home), "--alert-synthetic", "demo")
    assert result.exit_code == 0, result.output
    assert calls
    assert_no_secret(our_logs(logs), "logs")
    files_hold_no_secret(home)


def test_deploy_and_destroy_never_show_sensitive_outputs(fake_tf, secret_env, logs):  # noqa: F811
    for args in (
        ["deploy", "--auto-approve", "--local-state"],
        ["status"],
        ["destroy", "--auto-approve"],
    ):
        result = farmctl("--stack-dir", str(fake_tf.stack_dir), *args, extra=("hunter2",))
        assert result.exit_code in (0, 1), result.output
    assert_no_secret(our_logs(logs), "logs", ("hunter2",))
    files_hold_no_secret(fake_tf.home, ("hunter2",))


def test_every_aws_command_with_keys_and_webhook_in_ssm(
    stack,  # noqa: F811
    secret_env,
    logs,
    httpserver,
    monkeypatch,
):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", AWS_SESSION)
    sim_key = "sim-key-0123456789abcdefghij"  # the stack fixture's API key values
    ingest_key = "ingest-key-0123456789abcdefgh"
    extra = (sim_key, ingest_key)
    ssm = stack.session.client("ssm")
    for region in (stack.outputs["region"], "us-east-1"):  # us-east-1: see the region bug below
        boto3.client("ssm", region_name=region).put_parameter(
            Name=stack.outputs["discord_webhook_ssm_parameter"],
            Value=httpserver.url_for(HOOK_PATH),
            Type="SecureString",
        )
    ssm.put_parameter(
        Name=stack.outputs["ingest_api_key_ssm_parameter"], Value=INGEST_KEY, Type="SecureString"
    )
    monkeypatch.setenv("SMARTFARM_EMULATOR_URL", httpserver.url_for("/"))  # stands in for API GW
    stack.outputs["simulator_api_url"] = httpserver.url_for("/v1/")
    save_outputs(stack.home, stack.outputs)
    httpserver.expect_request("/v1/", method="POST").respond_with_json(
        {"run_id": "run-7", "status": "started"}, status=202
    )
    calls = discord_fake(httpserver)
    source = secret_env / "readings.ndjson"
    source.write_text(reading_lines())
    steps = [
        ["simulate", "--count", "2", "--interval", "1"],
        ["simulate", "--direct", "--count", "2", "--interval", "0"],
        ["ingest", str(source)],
        ["rejected"],
        ["status"],
        ["trend", "temperature"],
        ["spikes"],
        ["latest"],
        ["query", "SELECT 1"],
        ["crawl"],
        ["watch", "--duration", "0.5", "--refresh", "0.1"],
        ["discord", "test"],
    ]
    for args in steps:
        if args[0] in ("trend", "spikes", "latest", "query", "status"):
            inject_athena_result(["n"], [(1,)])
        farmctl(*args, extra=extra)
    assert calls, "the webhook from SSM was used"
    assert "Delivered" in farmctl("discord", "test", extra=extra).output
    httpserver.clear()
    httpserver.expect_request("/v1/").respond_with_json({"message": "Forbidden"}, status=403)
    farmctl("simulate", extra=extra)
    assert_no_secret(our_logs(logs), "logs", extra)
    files_hold_no_secret(stack.home, extra)


def test_discord_test_on_aws_reads_the_webhook_in_the_stacks_region(
    stack,  # noqa: F811
    httpserver,
):
    calls = discord_fake(httpserver)
    stack.session.client("ssm").put_parameter(  # only where the stack lives (ap-northeast-2)
        Name=stack.outputs["discord_webhook_ssm_parameter"],
        Value=httpserver.url_for(HOOK_PATH),
        Type="SecureString",
    )
    result = runner.invoke(app, ["discord", "test"])  # AWS_DEFAULT_REGION is us-east-1
    assert result.exit_code == 0 and len(calls) == 1, result.output


# -- Lambda handlers ---------------------------------------------------------------------------

ad = load("anomaly_detector")
ps = load("pseudo_sensor_log")
fh = load("firehose_transform")


@pytest.fixture
def lambda_aws(secret_env, monkeypatch, httpserver):
    for name, value in {
        "AWS_DEFAULT_REGION": "us-east-1",
        "SPIKE_BUCKET": "spike-log-bucket",
        "DISCORD_WEBHOOK_SSM_PARAMETER": "/r7/webhook",
        "INGEST_API_KEY_SSM_PARAMETER": "/r7/ingest-key",
        "INGEST_URL": httpserver.url_for("/prod/records"),
        "FUNCTION_TIMEOUT_S": "120",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(ad, "ALERT_POLICY", FAST)
    ad._webhook_cache.clear()
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="sensor-log-bucket")
        s3.create_bucket(Bucket="spike-log-bucket")
        ssm = boto3.client("ssm")
        ssm.put_parameter(Name="/r7/ingest-key", Value=INGEST_KEY, Type="SecureString")
        yield s3, ssm
    ad._webhook_cache.clear()


def test_lambda_handlers_never_log_the_webhook_or_the_api_key(lambda_aws, httpserver, capsys, logs):
    from smartfarm_cli.core import lake
    from smartfarm_cli.core.validate import table_from_rows

    s3, ssm = lambda_aws
    t0 = int(time.time() * 1000)
    rows = [("gh-1", "hot", t0, 400.0, 60.0, 800.0, 0), ("gh-1", "err", t0, None, None, None, 1)]
    outcomes = []
    for number, (status, url) in enumerate(
        [
            (200, httpserver.url_for(HOOK_PATH)),
            (500, httpserver.url_for(HOOK_PATH)),
            (None, f"http://127.0.0.1:1{HOOK_PATH}"),  # refused
        ]
    ):
        httpserver.clear()
        if status:
            discord_fake(httpserver, status)
        ssm.put_parameter(Name="/r7/webhook", Value=url, Type="SecureString", Overwrite=True)
        ad._webhook_cache.clear()
        key = f"logs/year=2026/month=11/day=28/hour=10/r7-{number}.parquet"
        s3.put_object(
            Bucket="sensor-log-bucket", Key=key, Body=lake.parquet_bytes(table_from_rows(rows))
        )
        event = {
            "Records": [
                {
                    "eventName": "ObjectCreated:Put",
                    "s3": {"bucket": {"name": "sensor-log-bucket"}, "object": {"key": key}},
                }
            ]
        }
        outcomes.append(ad.handler(event, None)["alerts"][key])
    assert outcomes[0] == "delivered" and set(outcomes[1:]) == {"undelivered"}
    markers = s3.list_objects_v2(Bucket="spike-log-bucket", Prefix="alerts/")["Contents"]
    for obj in markers:
        body = s3.get_object(Bucket="spike-log-bucket", Key=obj["Key"])["Body"].read().decode()
        assert_no_secret(body, f"marker {obj['Key']}")

    # pseudo_sensor_log: API request, then a run whose sends fail (403, 500, partial, refused)
    httpserver.clear()
    answers = iter([(403, {"message": "Forbidden"}), (500, {"message": "x"})])

    def ingest_api(request):
        assert request.headers["x-api-key"] == INGEST_KEY  # the key is used ...
        status, body = next(answers, (200, {"FailedRecordCount": 1, "Records": [{}] * 5}))
        return Response(json.dumps(body), status=status)

    httpserver.expect_request("/prod/records").respond_with_handler(ingest_api)
    api = ps.handle_api_request(
        {"httpMethod": "POST", "body": json.dumps({"count": 2, "interval": 0}),
         "requestContext": {"requestId": "r7"}},
        None,
        invoke=lambda payload: None,
    )  # fmt: skip
    assert api["statusCode"] == 202
    ps.handler({"run": {"count": 3, "interval": 0, "run_id": "r7"}}, None)
    monkeypatch_url = f"http://127.0.0.1:1/prod/records?key={INGEST_KEY[:4]}"
    ps.run(ps.RunSpec(count=1, interval=0), monkeypatch_url, INGEST_KEY, sleep=lambda s: None)

    record = {
        "recordId": "1",
        "data": base64.b64encode(b'{"greenhouse_id": "gh-1"}').decode(),
    }
    fh.handler({"records": [record]}, None)
    out = capsys.readouterr()
    assert out.out.count('"event"') >= 8  # the handlers really logged
    assert_no_secret(out.out + out.err, "Lambda stdout/stderr")
    assert_no_secret(our_logs(logs), "logs")


def test_zz_report(capsys):
    with capsys.disabled():
        print(f"\nR7: {len(CHECKED)} farmctl invocations checked")


def test_malformed_webhook_in_ssm_is_undelivered_not_a_failed_invocation(lambda_aws, capsys):
    from smartfarm_cli.core import lake
    from smartfarm_cli.core.validate import table_from_rows

    s3, ssm = lambda_aws
    ssm.put_parameter(Name="/r7/webhook", Value=f"not-a-url/{TOKEN}", Type="SecureString")
    key = "logs/year=2026/month=11/day=28/hour=10/r7-malformed.parquet"
    rows = [("gh-1", "hot", int(time.time() * 1000), 400.0, 60.0, 800.0, 0)]
    s3.put_object(
        Bucket="sensor-log-bucket", Key=key, Body=lake.parquet_bytes(table_from_rows(rows))
    )
    event = {
        "Records": [
            {
                "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": "sensor-log-bucket"}, "object": {"key": key}},
            }
        ]
    }
    try:
        summary = ad.handler(event, None)
    finally:
        assert_no_secret(capsys.readouterr().out, "Lambda stdout")
    assert summary["alerts"] == {key: "undelivered"}
