"""Defects only a real apply (or a real request) shows, each checked by behaviour where it can be.

Issue 10, items 1-10: the API Gateway trust policy, Grafana's admin password, S3 logging order,
the Grafana AMI, missing Lambda zips, IPv6 CIDRs, redeploy triggers, VTL escaping, Kinesis
throttling and the dashboard's partition predicates. Items 5 and 6 are checked against a real
`terraform plan` in test_terraform_apply.py.
"""

from __future__ import annotations

import base64
import configparser
import json
import re
import subprocess
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
import sqlglot
from apigw_vtl import render, template
from iam_trust import allows_assume
from sqlglot import exp
from test_terraform import TF, one, ref, res, tf

DASHBOARD = TF / "grafana/dashboards/smartfarm.json"
USER_DATA = TF / "grafana/user_data.sh.tftpl"


# ---------------------------------------------------------------------------------------------
# 1. API Gateway assumes the integration and logging roles without aws:SourceAccount
# ---------------------------------------------------------------------------------------------
def policy_json(document: dict) -> dict:
    """An aws_iam_policy_document data block as the IAM JSON it renders."""
    statements = []
    for stmt in document["statement"]:
        out = {"Effect": stmt.get("effect", "Allow"), "Action": stmt["actions"]}
        principals = stmt.get("principals", [])
        if principals:
            out["Principal"] = {p["type"]: p["identifiers"] for p in principals}
        conditions: dict = {}
        for cond in stmt.get("condition", []):
            conditions.setdefault(cond["test"], {})[cond["variable"]] = cond["values"]
        if conditions:
            out["Condition"] = conditions
        statements.append(out)
    return {"Version": "2012-10-17", "Statement": statements}


def test_api_gateway_can_assume_its_integration_and_logging_roles():
    # What API Gateway sends when it assumes an AWS integration's credentials role: its service
    # principal, no aws:SourceAccount and no aws:SourceArn.
    trust = policy_json(tf()["data"]["aws_iam_policy_document"]["apigateway_assume"])
    assert allows_assume(trust, "apigateway.amazonaws.com")
    assert not allows_assume(trust, "lambda.amazonaws.com")
    for role in ("ingest", "apigw_cloudwatch"):
        assert res("aws_iam_role", role)["assume_role_policy"] == ref(
            "data.aws_iam_policy_document.apigateway_assume.json"
        )


def test_trust_evaluator_denies_a_missing_source_account():
    # The evaluator itself: a SourceAccount condition denies a caller that does not send it.
    trust = {
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "sts:AssumeRole",
                "Principal": {"Service": "apigateway.amazonaws.com"},
                "Condition": {"StringEquals": {"aws:SourceAccount": "123456789012"}},
            }
        ]
    }
    assert not allows_assume(trust, "apigateway.amazonaws.com")
    assert allows_assume(trust, "apigateway.amazonaws.com", {"aws:SourceAccount": "123456789012"})


# ---------------------------------------------------------------------------------------------
# 2. Grafana's admin password reaches grafana.ini (the RPM's unit does not expand __FILE)
# ---------------------------------------------------------------------------------------------
# The [security] section of the grafana.ini the Grafana RPM installs (defaults commented out).
RPM_GRAFANA_INI = """\
[security]
# disable creation of admin user on first start of grafana
;disable_initial_admin_creation = false

# default admin user, created on startup
;admin_user = admin

# default admin password, can be changed before first start of grafana,  or in profile settings
;admin_password = admin

# default admin email, created on startup
;admin_email = admin@localhost

[users]
# disable user signup / registration
;allow_sign_up = true
"""


def grafana_ini_block() -> str:
    script = USER_DATA.read_text()
    m = re.search(r"# BEGIN grafana\.ini\n(.*?)# END grafana\.ini", script, re.S)
    assert m, "user_data has no grafana.ini block"
    # templatefile() turns $${ into ${ (the block has no other template placeholder).
    block = m.group(1).replace("$${", "${")
    assert "${" not in block.replace("${GRAFANA_INI", "")
    return block


def test_user_data_sets_the_admin_password_in_grafana_ini(tmp_path):
    ini = tmp_path / "grafana.ini"
    ini.write_text(RPM_GRAFANA_INI)
    subprocess.run(
        ["bash", "-euo", "pipefail", "-c", grafana_ini_block()],
        env={"GRAFANA_INI": str(ini), "PATH": "/usr/bin:/bin"},
        check=True,
        timeout=30,
    )
    parser = configparser.ConfigParser(interpolation=None, comment_prefixes=(";", "#"))
    parser.read_string(ini.read_text())
    assert parser["security"]["admin_user"] == "admin"
    # Grafana expands $__file{...} itself when it reads grafana.ini.
    assert parser["security"]["admin_password"] == "$__file{/etc/grafana/admin_password}"
    assert "allow_sign_up" not in parser["users"]  # nothing else touched


def test_user_data_generates_the_password_and_uses_no_file_env_variable(tmp_path):
    script = USER_DATA.read_text()
    # only Grafana's Docker entrypoint expands GF_*__FILE variables
    assert "GF_SECURITY_ADMIN_PASSWORD__FILE=" not in script
    # The password part against a fake `aws` CLI: the placeholder is replaced once, by a
    # generated password written to SSM with the project key; a second boot reuses it.
    m = re.search(r"(current=\$\(aws ssm get-parameter.*?unset current\n)", script, re.S)
    assert m
    part = (
        m.group(1)
        .replace("${region}", "ap-northeast-2")
        .replace("${admin_password_param}", "/smartfarm/grafana/admin-password")
        .replace("${password_placeholder}", "unset: placeholder")
        .replace("${kms_key_arn}", "arn:aws:kms:ap-northeast-2:123456789012:key/k")
        .replace("/etc/grafana/admin_password", str(tmp_path / "admin_password"))
    )
    store = tmp_path / "ssm_value"
    store.write_text("unset: placeholder")
    fake = tmp_path / "bin" / "aws"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/bash\n"
        f'echo "$*" >> {tmp_path}/calls\n'
        f'if [ "$2" = get-parameter ]; then cat {store}; echo; exit 0; fi\n'
        'while [ $# -gt 0 ]; do if [ "$1" = --value ]; then '
        f'printf %s "$2" > {store}; fi; shift; done\n'
    )
    fake.chmod(0o755)
    env = {"PATH": f"{fake.parent}:/usr/bin:/bin"}
    subprocess.run(["bash", "-euo", "pipefail", "-c", part], env=env, check=True, timeout=30)
    password = (tmp_path / "admin_password").read_text()
    assert re.fullmatch(r"[A-Za-z0-9]{32}", password)
    assert store.read_text() == password
    calls = (tmp_path / "calls").read_text()
    assert "--type SecureString" in calls
    assert "--key-id arn:aws:kms:ap-northeast-2:123456789012:key/k" in calls
    assert password not in calls.split("--value")[0]
    # Second boot (a replaced instance): the stored password is reused, nothing is written.
    subprocess.run(["bash", "-euo", "pipefail", "-c", part], env=env, check=True, timeout=30)
    assert (tmp_path / "admin_password").read_text() == password
    assert (tmp_path / "calls").read_text().count("put-parameter") == 1


# ---------------------------------------------------------------------------------------------
# 3, 4, 7. Ordering, AMI drift, redeploy triggers
# ---------------------------------------------------------------------------------------------
def test_bucket_logging_waits_for_the_sink_policy():
    logging = res("aws_s3_bucket_logging", "data")
    assert "${aws_s3_bucket_policy.all}" in logging["depends_on"]


def test_a_new_al2023_release_does_not_replace_grafana():
    lifecycle = one(res("aws_instance", "grafana"), "lifecycle")
    assert lifecycle["ignore_changes"] in (["${ami}"], ["ami"])


def test_every_api_shape_change_redeploys_the_ingest_stage():
    triggers = res("aws_api_gateway_deployment", "ingest")["triggers"]["redeployment"]
    for part in (
        "aws_api_gateway_request_validator.ingest_body",
        "aws_api_gateway_method_response.ingest_ok",
        "aws_api_gateway_method_response.ingest_error",
        "aws_api_gateway_method_response.ingest_throttled",
        "aws_api_gateway_integration_response.ingest_ok",
        "aws_api_gateway_integration_response.ingest_error",
        "aws_api_gateway_gateway_response.ingest_bad_body",
        "aws_api_gateway_method.ingest",
        "aws_api_gateway_integration.ingest",
        "aws_api_gateway_model.reading.schema",
        "aws_api_gateway_model.reading_batch.schema",
    ):
        assert part in triggers, f"changing {part} alone would not redeploy the stage"


# ---------------------------------------------------------------------------------------------
# 8. VTL: interpolated values are escaped; the bad-body answer is JSON
# ---------------------------------------------------------------------------------------------
NASTY_IDS = ["gh-1\n", 'gh"2', "gh\\3", "gh'4", "gh\t5"]


def test_put_records_template_builds_json_for_any_id():
    records = [
        {"greenhouse_id": gh, "device_id": f"dev-{i}\n", "temperature": "21.5"}
        for i, gh in enumerate(NASTY_IDS)
    ]
    body = json.dumps({"records": records})
    text, _ = render(template("put_records.vtl", stream_name="smartfarm-stream"), body)
    request = json.loads(text)  # a raw newline or quote in an id would fail here
    assert request["StreamName"] == "smartfarm-stream"
    assert [r["PartitionKey"] for r in request["Records"]] == [
        f"{gh}:dev-{i}\n" for i, gh in enumerate(NASTY_IDS)
    ]
    assert [json.loads(base64.b64decode(r["Data"])) for r in request["Records"]] == records


def test_put_record_template_builds_json_for_any_id():
    reading = {"greenhouse_id": "gh-1\n", "device_id": 'dev"1', "co2": "400"}
    text, _ = render(template("put_record.vtl", stream_name="s"), json.dumps(reading))
    request = json.loads(text)
    assert request["PartitionKey"] == 'gh-1\n:dev"1'
    assert json.loads(base64.b64decode(request["Data"])) == reading


def test_bad_body_gateway_response_is_json_whatever_the_validation_error_says():
    # Gateway response templates are plain substitution: $context.error.messageString arrives
    # quoted and escaped by API Gateway, validationErrorString raw (it quotes the bad value).
    response = res("aws_api_gateway_gateway_response", "ingest_bad_body")
    body = response["response_templates"]["application/json"]
    rendered = body.replace("$context.error.messageString", json.dumps("Invalid request body"))
    rendered = rendered.replace(
        "$context.error.validationErrorString",
        '[ECMA 262 regex "^[A-Za-z0-9_-]+$" does not match input string "gh\\"1"]',
    )
    assert json.loads(rendered)["message"] == "Invalid request body"


# ---------------------------------------------------------------------------------------------
# 9. Kinesis throttling reaches the client as 429
# ---------------------------------------------------------------------------------------------
def kinesis_error(kind: str) -> str:
    return json.dumps({"__type": kind, "message": "Rate exceeded for shard shardId-000000000000"})


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        ("ProvisionedThroughputExceededException", 429),
        ("KMSThrottlingException", 429),
        ("LimitExceededException", 429),
        ("ValidationException", None),
        ("ResourceNotFoundException", None),
    ],
)
def test_error_response_turns_kinesis_throttling_into_429(kind, status):
    text, override = render(template("error_response.vtl"), kinesis_error(kind))
    assert override.get("status") == status
    assert json.loads(text) == {
        "message": "the stream is busy: retry later"
        if status
        else "the stream rejected the request",
        "requestId": "test-request",
    }


def test_throttled_status_is_declared_and_retried_by_the_simulator():
    # The 4xx integration response (selection pattern on Kinesis' 400) runs error_response.vtl,
    # which overrides the status; 429 is a declared method response.
    error = res("aws_api_gateway_integration_response", "ingest_error")
    assert "error_response.vtl" in error["response_templates"]["application/json"]
    assert res("aws_api_gateway_method_response", "ingest_throttled")["status_code"] == "429"

    from test_lambda_pseudo_sensor_log import load_handler

    handler = load_handler()
    calls = []

    def post(url, payload, headers, timeout):
        calls.append(len(payload["records"]))
        if len(calls) == 1:
            return 429, b'{"message": "the stream rejected the request"}'
        return 200, json.dumps(
            {"FailedRecordCount": 0, "Records": [{"SequenceNumber": "1"}] * calls[-1]}
        ).encode()

    stats = handler.SendStats()
    records = [{"greenhouse_id": "gh-1", "device_id": "d1"}] * 3
    handler.send_batch(records, "http://x/records", "k", post, lambda s: None, stats)
    assert calls == [3, 3] and stats.sent == 3 and stats.failed == 0


# ---------------------------------------------------------------------------------------------
# 10. Dashboard partition predicates: plain per-column comparisons, right across boundaries
# ---------------------------------------------------------------------------------------------
PARTS = ("year", "month", "day")
COMPARISONS = (exp.EQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Between)


def dashboard_queries() -> list[str]:
    found: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("rawSQL", "definition") and isinstance(value, str):
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(json.loads(DASHBOARD.read_text()))
    return list(dict.fromkeys(found))


def partition_conjuncts(sql: str, start: datetime, end: datetime, now: datetime) -> list:
    sql = sql.replace("${greenhouse:sqlstring}", "'gh-1'").replace("$__interval", "5m")
    sql = re.sub(r"\$__timeFilter\([^)]*\)", "TRUE", sql)
    sql = re.sub(r"\$__timeGroup\(([^,]*),[^)]*\)", r"\1", sql)
    sql = sql.replace("$__timeFrom()", f"TIMESTAMP '{start:%Y-%m-%d %H:%M:%S}'")
    sql = sql.replace("$__timeTo()", f"TIMESTAMP '{end:%Y-%m-%d %H:%M:%S}'")
    sql = sql.replace("current_timestamp", f"TIMESTAMP '{now:%Y-%m-%d %H:%M:%S}'")
    where = sqlglot.parse_one(sql, read="athena").find(exp.Where)
    conjuncts = list(where.this.flatten()) if isinstance(where.this, exp.And) else [where.this]
    return [c for c in conjuncts if {col.name for col in c.find_all(exp.Column)} <= set(PARTS)]


def test_dashboard_filters_partitions_with_plain_column_predicates():
    queries = [q for q in dashboard_queries() if "year" in q]
    assert len(queries) >= 6
    for sql in queries:
        assert not re.search(r"concat\s*\(\s*year", sql, re.I), sql
        week = (datetime(2026, 1, 1), datetime(2026, 1, 8), datetime(2026, 1, 8))
        conjuncts = partition_conjuncts(sql, *week)
        assert conjuncts, f"no partition predicate in {sql}"
        for conjunct in conjuncts:
            for column in conjunct.find_all(exp.Column):
                # compared as it is: a function of a partition column (concat) hides it from
                # partition projection's pruning
                assert isinstance(column.parent, COMPARISONS), f"{column.parent.sql()} in {sql}"


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (datetime(2026, 1, 1, 10), datetime(2026, 1, 8, 9)),
        (datetime(2026, 1, 28, 23), datetime(2026, 2, 3, 1)),  # month boundary
        (datetime(2025, 12, 30), datetime(2026, 1, 2)),  # year boundary
        (datetime(2025, 11, 15), datetime(2026, 2, 10)),  # several months, two years
        (datetime(2026, 2, 5, 1), datetime(2026, 2, 5, 2)),  # within a day
    ],
)
def test_dashboard_partition_predicates_select_exactly_the_days_in_range(start, end):
    days = [date(2025, 10, 1) + timedelta(d) for d in range(200)]
    con = duckdb.connect()
    con.execute("CREATE TABLE parts (year VARCHAR, month VARCHAR, day VARCHAR)")
    con.executemany(
        "INSERT INTO parts VALUES (?, ?, ?)",
        [(f"{d:%Y}", f"{d:%m}", f"{d:%d}") for d in days],
    )
    for sql in (q for q in dashboard_queries() if "$__timeFrom()" in q):
        conjuncts = partition_conjuncts(sql, start, end, end)
        predicate = " AND ".join(f"({c.sql(dialect='duckdb')})" for c in conjuncts)
        got = con.execute(f"SELECT year, month, day FROM parts WHERE {predicate}").fetchall()
        want = [(f"{d:%Y}", f"{d:%m}", f"{d:%d}") for d in days if start.date() <= d <= end.date()]
        assert sorted(got) == want, predicate
    # The greenhouse picker: the last 7 days up to now.
    (picker,) = [q for q in dashboard_queries() if "current_timestamp" in q and "DISTINCT" in q]
    conjuncts = partition_conjuncts(picker, start, end, end)
    predicate = " AND ".join(f"({c.sql(dialect='duckdb')})" for c in conjuncts)
    got = con.execute(f"SELECT year, month, day FROM parts WHERE {predicate}").fetchall()
    since = (end - timedelta(days=7)).date()
    assert sorted(got) == [(f"{d:%Y}", f"{d:%m}", f"{d:%d}") for d in days if since <= d]


def test_fixture_paths_exist():
    assert DASHBOARD.is_file() and USER_DATA.is_file() and Path(TF / "templates").is_dir()
