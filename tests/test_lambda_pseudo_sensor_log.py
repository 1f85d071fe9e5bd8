"""pseudo_sensor_log: body validation (400s), the 202 + async self-invoke, and timed sending."""

from __future__ import annotations

import base64
import importlib.util
import io
import itertools
import json
import sys
import time
import zipfile
from pathlib import Path

import boto3
import pytest
from moto import mock_aws
from werkzeug import Response

from smartfarm_cli.core.validate import parse_timestamp_ms, validate

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "ingest-KEY-never-in-logs-0123456789"
FUNCTION = "pseudo_sensor_log_lambda"


def load_handler():
    path = ROOT / "lambdas" / "pseudo_sensor_log" / "handler.py"
    spec = importlib.util.spec_from_file_location("pseudo_sensor_log_handler", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


ps = load_handler()


class Context:
    def __init__(self, remaining_ms=900_000):
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self):
        return self.remaining_ms


def api_event(body, method="POST", base64_encoded=False):
    """A REST API (pseudo_api_gw) AWS_PROXY request as Lambda receives it."""
    if base64_encoded:
        body = base64.b64encode(body.encode()).decode()
    return {
        "resource": "/",
        "path": "/",
        "httpMethod": method,
        "headers": {"Content-Type": "application/json", "Host": "abc.execute-api.amazonaws.com"},
        "multiValueHeaders": {},
        "queryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/",
            "httpMethod": method,
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "stage": "prod",
            "identity": {"sourceIp": "203.0.113.9"},
        },
        "body": body,
        "isBase64Encoded": base64_encoded,
    }


@pytest.fixture(autouse=True)
def env(monkeypatch, capsys):
    monkeypatch.setenv("FUNCTION_TIMEOUT_S", "120")
    monkeypatch.setenv("SELF_FUNCTION_NAME", FUNCTION)
    monkeypatch.delenv("INGEST_API_KEY_SSM_PARAMETER", raising=False)
    monkeypatch.delenv("LOG_LEVEL", raising=False)
    yield
    out = capsys.readouterr()
    assert API_KEY not in out.out and API_KEY not in out.err


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("this is not json", "not JSON"),
        ("", "empty body"),
        (None, "empty body"),
        ("[12, 10]", "JSON object"),
        ('"count"', "JSON object"),
        ('{"interval": 10}', "count and interval are required"),
        ('{"count": -1, "interval": 10}', "count must be from 1 to 10000"),
        ('{"count": 0, "interval": 10}', "count must be from 1 to 10000"),
        ('{"count": 10001, "interval": 0}', "count must be from 1 to 10000"),
        ('{"count": 1e308, "interval": 1}', "count must be a whole number"),
        ('{"count": "12", "interval": 10}', "count must be a whole number"),
        ('{"count": 12.5, "interval": 10}', "count must be a whole number"),
        ('{"count": true, "interval": 10}', "count must be a whole number"),
        ('{"count": 12, "interval": "10"}', "interval must be a number"),
        ('{"count": 12, "interval": false}', "interval must be a number"),
        ('{"count": 12, "interval": -0.5}', "interval must be from 0 to 300"),
        ('{"count": 12, "interval": 301}', "interval must be from 0 to 300"),
        ('{"count": 12, "interval": NaN}', "interval must be a number"),
        ('{"count": 12, "interval": 10}', "longer than this function can run"),  # 120 s > 105
        ('{"count": 10000, "interval": 0.2}', "longer than this function can run"),
        ('{"count": 3, "interval": 1, "greenhouses": 0}', "greenhouses must be from 1 to 100"),
        ('{"count": 3, "interval": 1, "devices": 101}', "devices must be from 1 to 100"),
        ('{"count": 3, "interval": 1, "anomaly_rate": 1.5}', "anomaly_rate must be from 0 to 1"),
        ('{"count": 3, "interval": 1, "seed": 1.5}', "seed must be a whole number"),
        ('{"count": 3, "interval": 1, "cnt": 1}', "unknown field(s) cnt"),
        (
            '{"count": 10000, "interval": 0, "greenhouses": 100, "devices": 100}',
            "more than 200,000 per run",
        ),
    ],
)
def test_bad_bodies_get_400_with_a_reason(body, fragment):
    invoked = []
    response = ps.handle_api_request(api_event(body), Context(), invoke=invoked.append)
    assert response["statusCode"] == 400, response
    assert response["headers"]["Content-Type"] == "application/json"
    reason = json.loads(response["body"])["error"]
    assert fragment in reason
    assert invoked == []


def test_budget_comes_from_context_when_env_is_unset(monkeypatch):
    monkeypatch.delenv("FUNCTION_TIMEOUT_S")
    body = '{"count": 12, "interval": 10}'  # 120 s
    ok = ps.handle_api_request(api_event(body), Context(900_000), invoke=lambda p: None)
    assert ok["statusCode"] == 202
    short = ps.handle_api_request(api_event(body), Context(60_000), invoke=lambda p: None)
    assert short["statusCode"] == 400


def test_wrong_method_and_base64_body():
    assert ps.handle_api_request(api_event("{}", method="GET"), Context())["statusCode"] == 405
    body = '{"count": 3, "interval": 1}'
    response = ps.handle_api_request(
        api_event(body, base64_encoded=True), Context(), invoke=lambda p: None
    )
    assert response["statusCode"] == 202


def test_valid_request_invokes_itself_async_and_answers_202(monkeypatch):
    monkeypatch.setenv("FUNCTION_TIMEOUT_S", "900")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    seen = []
    with mock_aws(config={"lambda": {"use_docker": False}}):
        role = boto3.client("iam").create_role(RoleName="r", AssumeRolePolicyDocument="{}")
        code = io.BytesIO()
        with zipfile.ZipFile(code, "w") as archive:
            archive.writestr("handler.py", "def handler(event, context):\n    return 1\n")
        boto3.client("lambda").create_function(
            FunctionName=FUNCTION,
            Runtime="python3.12",
            Role=role["Role"]["Arn"],
            Handler="handler.handler",
            Code={"ZipFile": code.getvalue()},
        )
        monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # restored after the test
        boto3.setup_default_session()
        boto3.DEFAULT_SESSION.events.register(
            "before-call.lambda.Invoke", lambda params, **_: seen.append(params)
        )
        body = json.dumps({"count": 12, "interval": 10, "greenhouses": 2, "anomaly_rate": 0.1})
        response = ps.handler(api_event(body), Context())
    assert response["statusCode"] == 202
    answer = json.loads(response["body"])
    assert answer == {
        "run_id": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
        "count": 12,
        "interval": 10.0,
        "readings": 24,  # 12 sends x 2 greenhouses x 1 device
        "status": "started",
    }
    assert len(seen) == 1
    call = seen[0]
    assert call["url_path"].endswith(f"/functions/{FUNCTION}/invocations")
    assert call["headers"]["X-Amz-Invocation-Type"] == "Event"
    payload = json.loads(call["body"])
    assert payload == {
        "run": {
            "count": 12,
            "interval": 10.0,
            "greenhouses": 2,
            "devices": 1,
            "anomaly_rate": 0.1,
            "seed": 0,
            "run_id": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
        }
    }


def test_failed_self_invoke_is_a_500_with_a_reason():
    def broken(payload):
        raise RuntimeError("AccessDenied")

    response = ps.handle_api_request(
        api_event('{"count": 3, "interval": 1}'), Context(), invoke=broken
    )
    assert response["statusCode"] == 500
    assert "could not start the run" in json.loads(response["body"])["error"]


def ingest_fake(httpserver, responses=None):
    """POST /records answering like Kinesis PutRecords (all OK unless `responses` say else)."""
    calls: list[dict] = []

    def handle(request):
        body = request.get_json()
        calls.append({"t": time.monotonic(), "headers": dict(request.headers), "body": body})
        if responses and len(calls) <= len(responses):
            status, answer = responses[len(calls) - 1]
        else:
            records = [{"SequenceNumber": "1", "ShardId": "s-0"} for _ in body["records"]]
            status, answer = 200, {"FailedRecordCount": 0, "Records": records}
        return Response(json.dumps(answer), status=status, content_type="application/json")

    httpserver.expect_request("/prod/records", method="POST").respond_with_handler(handle)
    return calls


def test_run_posts_count_steps_spaced_by_the_interval(httpserver, monkeypatch, capsys):
    calls = ingest_fake(httpserver)
    monkeypatch.setenv("INGEST_URL", httpserver.url_for("/prod/records"))
    monkeypatch.setenv("INGEST_API_KEY", API_KEY)
    run = {"count": 3, "interval": 0.2, "greenhouses": 1, "devices": 2, "run_id": "r-1"}
    summary = ps.handler({"run": run}, Context())
    assert summary["sent"] == 6 and summary["failed"] == 0 and summary["requests"] == 3

    assert len(calls) == 3  # exactly `count` steps
    for call in calls:
        assert call["headers"]["X-Api-Key"] == API_KEY
        assert call["headers"]["Content-Type"] == "application/json"
        assert len(call["body"]["records"]) == 2  # one step = greenhouses x devices
        batch = validate(call["body"]["records"])
        assert batch.rejected == []
    gaps = [b["t"] - a["t"] for a, b in itertools.pairwise(calls)]
    for gap in gaps:  # measured on the server side
        assert 0.17 <= gap <= 0.6, gaps
    stamps = [parse_timestamp_ms(c["body"]["records"][0]["timestamp"]) for c in calls]
    assert [b - a for a, b in itertools.pairwise(stamps)] == [200, 200]
    finished = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert finished[-1]["event"] == "run_finished" and finished[-1]["sent"] == 6


def test_partial_failures_are_resent_only_for_the_failed_records(httpserver):
    calls = ingest_fake(
        httpserver,
        [
            (
                200,
                {
                    "FailedRecordCount": 1,
                    "Records": [
                        {"SequenceNumber": "1", "ShardId": "s-0"},
                        {
                            "ErrorCode": "ProvisionedThroughputExceededException",
                            "ErrorMessage": "Rate exceeded for shard s-0",
                        },
                        {"SequenceNumber": "2", "ShardId": "s-0"},
                    ],
                },
            ),
            (500, {"message": "Internal server error"}),
        ],
    )
    spec = ps.RunSpec(count=1, interval=0, greenhouses=1, devices=3, run_id="r-2")
    summary = ps.run(spec, httpserver.url_for("/prod/records"), API_KEY, sleep=lambda s: None)
    assert len(calls) == 3
    first = calls[0]["body"]["records"]
    assert calls[1]["body"]["records"] == [first[1]]  # only the failed one
    assert calls[2]["body"]["records"] == [first[1]]  # again after the 500
    assert summary["sent"] == 3 and summary["failed"] == 0 and summary["resent"] == 2


def test_retries_are_bounded_and_a_4xx_gives_up(httpserver):
    calls = ingest_fake(httpserver, [(503, {})] * 10)
    spec = ps.RunSpec(count=1, interval=0, greenhouses=1, devices=2)
    summary = ps.run(spec, httpserver.url_for("/prod/records"), API_KEY, sleep=lambda s: None)
    assert len(calls) == ps.SEND_RETRIES + 1 and summary["failed"] == 2
    httpserver.clear()
    calls = ingest_fake(httpserver, [(403, {"message": "Forbidden"})])
    summary = ps.run(spec, httpserver.url_for("/prod/records"), API_KEY, sleep=lambda s: None)
    assert len(calls) == 1 and summary["failed"] == 2 and summary["sent"] == 0


def test_big_steps_are_split_into_batches_of_500(httpserver):
    calls = ingest_fake(httpserver)
    spec = ps.RunSpec(count=1, interval=0, greenhouses=30, devices=20)
    summary = ps.run(spec, httpserver.url_for("/prod/records"), API_KEY)
    assert [len(c["body"]["records"]) for c in calls] == [500, 100]
    assert summary["sent"] == 600


def test_api_key_from_ssm(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("INGEST_API_KEY_SSM_PARAMETER", "/smartfarm/ingest_api_key")
    monkeypatch.setenv("INGEST_API_KEY", "not-this-one")
    with mock_aws():
        boto3.client("ssm").put_parameter(
            Name="/smartfarm/ingest_api_key", Value=API_KEY, Type="SecureString"
        )
        assert ps.ingest_api_key() == API_KEY


def test_direct_invocation_with_the_body_runs_synchronously(httpserver, monkeypatch):
    calls = ingest_fake(httpserver)
    monkeypatch.setenv("INGEST_URL", httpserver.url_for("/prod/records"))
    monkeypatch.setenv("INGEST_API_KEY", API_KEY)
    summary = ps.handler({"count": 2, "interval": 0, "greenhouses": 1, "devices": 1}, Context())
    assert summary["sent"] == 2 and len(calls) == 2
    with pytest.raises(ps.BadRequest):
        ps.handler({"count": 0, "interval": 0}, Context())
    with pytest.raises(ValueError, match="unknown event"):
        ps.handler({"hello": 1}, Context())
