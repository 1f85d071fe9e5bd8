"""The ingest contract: one OpenAPI document, checked against terraform/schemas and the server.

- its request schemas ARE the API Gateway models (terraform/schemas/*.json, from core.schema);
- it is a valid OpenAPI 3.1 document and the server serves exactly the repository's copy;
- for hypothesis-drawn bodies (good readings, broken ones, arbitrary JSON), the server answers 200
  exactly when the API Gateway model (draft-04, the terraform file) accepts the body, 400
  otherwise, and every answer matches the document's response schema for its status.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import jsonschema
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from reliability.strategies import bad_readings, good_readings, json_values
from serve_support import ServeProcess

ROOT = Path(__file__).resolve().parents[1]
DOC_PATH = ROOT / "smartfarm_cli" / "serve" / "openapi.json"
TF_SCHEMAS = ROOT / "terraform" / "schemas"


def _doc() -> dict:
    return json.loads(DOC_PATH.read_text())


def _tf(name: str) -> dict:
    return json.loads((TF_SCHEMAS / name).read_text())


def _resolve(node, doc):
    if isinstance(node, dict):
        if "$ref" in node:
            target = doc
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            return _resolve(target, doc)
        return {k: _resolve(v, doc) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, doc) for v in node]
    return node


def test_request_schemas_are_the_api_gateway_models():
    doc = _doc()
    for path, model in (("/record", "reading.json"), ("/records", "reading_batch.json")):
        body = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        expected = _tf(model)
        expected.pop("$schema")
        resolved = _resolve(body, doc)
        if path == "/records":  # the terraform file inlines the item schema with its title
            resolved["properties"]["records"]["items"]["title"] = "Reading"
        assert resolved == expected


def test_document_is_valid_openapi_31():
    from openapi_spec_validator import validate

    validate(_doc())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("contract") / "home"
    with ServeProcess(home, "--rate-limit", "100000", "--burst-limit", "100000") as proc:
        yield proc


def test_server_serves_the_repository_document(server):
    assert httpx.get(server.url + "/openapi.json").json() == _doc()


def _check_answer(path: str, answer: httpx.Response) -> None:
    doc = _doc()
    responses = doc["paths"][path]["post"]["responses"]
    assert str(answer.status_code) in responses, answer.status_code
    schema = _resolve(
        responses[str(answer.status_code)]["content"]["application/json"]["schema"], doc
    )
    jsonschema.Draft202012Validator(schema).validate(answer.json())


bodies = st.one_of(
    good_readings(),
    bad_readings(),
    json_values,
    st.lists(st.one_of(good_readings(), bad_readings()), min_size=0, max_size=6).map(
        lambda rs: {"records": rs}
    ),
    st.lists(good_readings(), min_size=1, max_size=4).map(lambda rs: {"records": rs, "x": 1}),
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=bodies, path=st.sampled_from(["/record", "/records"]))
def test_server_accepts_exactly_what_the_api_gateway_model_accepts(server, body, path):
    model = _tf("reading.json" if path == "/record" else "reading_batch.json")
    gateway_accepts = jsonschema.Draft4Validator(model).is_valid(body)
    event(f"{path} model accepts: {gateway_accepts}")
    answer = httpx.post(
        server.url + path, content=json.dumps(body).encode(), headers=server.headers, timeout=30
    )
    assert answer.status_code == (200 if gateway_accepts else 400), answer.text
    _check_answer(path, answer)
    if gateway_accepts:
        sent = 1 if path == "/record" else len(body["records"])
        if path == "/records":
            assert len(answer.json()["Records"]) == sent
        assert 0 <= int(answer.headers["x-smartfarm-rejected"]) <= sent


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({}, b"{}", 403),
        ({"content-type": "text/csv"}, b"a,b", 415),
        ({}, b"{" * 10, 400),
    ],
)
def test_error_answers_match_the_document(server, headers, body, status):
    sent = {"x-api-key": server.key, **headers} if status != 403 else headers
    answer = httpx.post(server.url + "/records", content=body, headers=sent)
    assert answer.status_code == status
    _check_answer("/records", answer)


def test_answers_have_the_shapes_the_deployed_mapping_templates_give(server, monkeypatch):
    """Kinesis' own answers (moto), rendered through terraform/templates/*_response.vtl as API
    Gateway would, have exactly the keys and types of farmctl serve's answers."""
    from apigw_vtl import render, template
    from moto import mock_aws
    from serve_support import reading

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }.items():
        monkeypatch.setenv(name, value)
    readings = [reading("gh-vtl", f"d{i}") for i in range(3)]
    with mock_aws():
        import boto3

        kinesis = boto3.client("kinesis", region_name="eu-west-1")
        kinesis.create_stream(StreamName="s", ShardCount=1)
        many = kinesis.put_records(
            StreamName="s",
            Records=[{"Data": json.dumps(r).encode(), "PartitionKey": "k"} for r in readings],
        )
        one = kinesis.put_record(StreamName="s", Data=b"{}", PartitionKey="k")
    for path, vtl, answer in (
        ("/records", "put_records_response.vtl", many),
        ("/record", "put_record_response.vtl", one),
    ):
        kinesis_json = json.dumps({k: v for k, v in answer.items() if k != "ResponseMetadata"})
        gateway = json.loads(render(template(vtl), kinesis_json)[0])
        body = {"records": readings} if path == "/records" else readings[0]
        ours = httpx.post(server.url + path, json=body, headers=server.headers).json()
        assert _shape(ours) == _shape(gateway), (ours, gateway)


def _shape(value):
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    return type(value).__name__


def test_a_busy_stream_is_refused_as_error_response_vtl_refuses_kinesis_throttling():
    from apigw_vtl import render, template

    from smartfarm_cli.serve import contract

    kinesis_error = {"__type": "ProvisionedThroughputExceededException", "message": "Rate exceeded"}
    text, override = render(template("error_response.vtl"), json.dumps(kinesis_error))
    ours = contract.stream_error(
        429, "ProvisionedThroughputExceededException", "the stream is busy", 1
    )
    assert override.get("status") == ours.status == 429
    assert _shape(ours.body) == _shape(json.loads(text))
    assert ours.body["message"] == json.loads(text)["message"]
