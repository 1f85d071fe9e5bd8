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
