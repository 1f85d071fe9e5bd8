"""The whole stack, applied for real to an emulated account (a moto server) and destroyed again.

terraform init + validate run on an unchanged copy of terraform/, with its committed provider
lock file (the offline mirror holds the locked version). Then `farmctl deploy --state-bucket`
and `farmctl destroy` run as a user runs them, pointed at the emulator with AWS_ENDPOINT_URL:
deploy creates the state bucket in the emulated S3 and Terraform keeps its state there (the S3
backend with endpoints on the emulator, path-style). In between, boto3 checks what was built
and farmctl status / simulate / discord test run against it.

Skipped with one reason where no terraform binary or provider mirror exists (tf_emulator.py).
What moto does not do (run Lambdas, move data between services) is covered elsewhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import boto3
import pytest
import tf_emulator as emu
from apigw_vtl import render
from iam_trust import allows_assume

from smartfarm_cli import stack
from smartfarm_cli.core.validate import validate

pytestmark = pytest.mark.skipif(emu.skip_reason() is not None, reason=str(emu.skip_reason()))

PROJECT = "smartfarm"
# The first deploy writes FIRST_WEBHOOK; a second deploy rotates to WEBHOOK (issue 16 item 1:
# the URL is ephemeral and write-only, so a new one is written when discord_webhook_version moves).
FIRST_WEBHOOK = "https://discord.com/api/webhooks/987654321/first-token_not-a-secret"
WEBHOOK = "https://discord.com/api/webhooks/123456789/emulated-token_not-a-secret"
WEBHOOK_SECRETS = (
    FIRST_WEBHOOK,
    WEBHOOK,
    "first-token_not-a-secret",
    "emulated-token_not-a-secret",
)
STATE_BUCKET = "farm-tfstate-123456789012"
STATE_PREFIX = "smartfarm/emulated"
STATE_KEY = f"{STATE_PREFIX}/terraform.tfstate"
FARMCTL = [sys.executable, "-m", "smartfarm_cli.cli"]


def run(cmd: list[str], cwd: Path, env: dict, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def farmctl(
    emulated: dict, *args: str, timeout: float = 240, env: dict | None = None
) -> subprocess.CompletedProcess:
    cmd = [*FARMCTL, "--stack-dir", str(emulated["stack_dir"]), *args]
    return run(cmd, emulated["root"], {**emulated["env"], **(env or {})}, timeout)


class Emulated(dict):
    def client(self, service: str):
        return boto3.client(
            service,
            region_name=emu.REGION,
            endpoint_url=self["url"],
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    root = tmp_path_factory.mktemp("emulated")
    server = emu.MotoServer(root)
    try:
        mirror = emu.find_mirror()[0]
        stack_dir = emu.copy_stack(root)  # with the committed .terraform.lock.hcl
        lock = (stack_dir / emu.LOCK_FILE).read_bytes()
        cli_config = emu.write_cli_config(root / "terraform.tfrc", mirror)
        layer_arn = emu.publish_pandas_layer(server.url)
        (stack_dir / "terraform.tfvars").write_text(
            f'pandas_layer_arn    = "{layer_arn}"\n'
            'allowed_cidrs       = ["203.0.113.7/32"]\n'
            # moto writes real server access logs into the sink bucket, as S3 does; without
            # this (the stack's safe default) destroy stops at the non-empty buckets.
            "force_destroy_buckets = true\n"
            # issue 16 item 4: two sites, the old shared key kept (its migration path), and the
            # ingest API limited to the farm's addresses (IPv4 and IPv6)
            'ingest_sites = ["north", "south"]\n'
            "shared_ingest_api_key = true\n"
            'ingest_allowed_source_cidrs = ["203.0.113.0/24", "2001:db8:1234::/48"]\n'
        )
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TF_"))},
            **emu.aws_env(server.url),
            "TF_CLI_CONFIG_FILE": str(cli_config),
            "SMARTFARM_HOME": str(root / "home"),
            # no profile, SSO or credential_process of the developer's ~/.aws reaches the test
            "AWS_CONFIG_FILE": str(root / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(root / "no-aws-credentials"),
            "PYTHONPATH": str(emu.REPO),
            # the secret comes from the environment, as terraform/README.md advises: no file
            # in the stack folder may hold it (the state test checks)
            "TF_VAR_discord_webhook_url": FIRST_WEBHOOK,
        }
        info = Emulated(
            root=root, stack_dir=stack_dir, env=env, url=server.url, steps={}, lock=lock
        )

        # init + validate straight from the mirror (no network: direct installs are excluded),
        # the provider chosen by the lock file; the state backend is set up by farmctl deploy
        for step in (
            ["init", "-backend=false", "-input=false", "-no-color"],
            ["validate", "-no-color"],
        ):
            done = run(["terraform", *step], stack_dir, env, timeout=180)
            info["steps"][step[0]] = done
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

        started = time.monotonic()
        deployed = farmctl(
            info,
            "deploy",
            "--auto-approve",
            "--state-bucket",
            STATE_BUCKET,
            "--state-prefix",
            STATE_PREFIX,
            timeout=400,
        )
        info["deploy"] = deployed
        info["deploy_s"] = time.monotonic() - started
        assert deployed.returncode == 0, deployed.stdout[-5000:] + deployed.stderr[-3000:]
        info["outputs"] = json.loads((root / "home" / stack.CACHE_NAME).read_text())
        parameter = info["outputs"]["discord_webhook_ssm_parameter"]
        ssm = info.client("ssm")
        info["first_value"] = ssm.get_parameter(Name=parameter, WithDecryption=True)
        # Rotation: the new URL in a var-file outside the stack folder, with the version raised;
        # farmctl gives that file to `terraform apply` of the saved plan again (the plan holds
        # no ephemeral value).
        rotate = root / "rotate.tfvars"
        rotate.write_text(f'discord_webhook_url = "{WEBHOOK}"\ndiscord_webhook_version = 2\n')
        rotated = farmctl(info, "deploy", "--auto-approve", "--var-file", str(rotate), timeout=400)
        info["rotate"] = rotated
        assert rotated.returncode == 0, rotated.stdout[-5000:] + rotated.stderr[-3000:]
        rotate.unlink()
        yield info

        started = time.monotonic()
        destroyed = farmctl(info, "destroy", "--auto-approve", timeout=400)  # saved backend
        assert destroyed.returncode == 0, destroyed.stdout[-5000:] + destroyed.stderr[-3000:]
        assert "Destroy complete" in destroyed.stdout
        assert not (root / "home" / stack.CACHE_NAME).exists()
        assert not (stack_dir / stack.ENDPOINT_OVERRIDE).exists()
        # nothing of the stack is left in the emulated account
        assert not [
            b["Name"]
            for b in info.client("s3").list_buckets()["Buckets"]
            if b["Name"].startswith(PROJECT)
        ]
        assert info.client("kinesis").list_streams()["StreamNames"] == []
        assert not info.client("lambda").list_functions()["Functions"]
        parameters = info.client("ssm").describe_parameters()["Parameters"]
        assert not [p["Name"] for p in parameters if p["Name"].startswith(f"/{PROJECT}/")]
        groups = info.client("logs").describe_log_groups()["logGroups"]
        assert not [g for g in groups if g["logGroupName"].startswith("API-Gateway-Execution")]
        alarms = info.client("cloudwatch").describe_alarms(AlarmNamePrefix=PROJECT)
        assert alarms["MetricAlarms"] == []
        # the state bucket and the (now empty) state outlive the stack; nothing local
        state = json.loads(
            info.client("s3").get_object(Bucket=STATE_BUCKET, Key=STATE_KEY)["Body"].read()
        )
        assert state["resources"] == []
        assert not list(stack_dir.glob("*.tfstate*"))
        assert time.monotonic() - started < 180
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------
# init / validate / plan-time failures
# ---------------------------------------------------------------------------------------------
def test_init_and_validate_offline_from_the_mirror(emulated):
    init = emulated["steps"]["init"].stdout
    assert "Terraform has been successfully initialized" in init
    # the committed lock file decides the provider version, and init leaves it unchanged
    assert "Reusing previous version of hashicorp/aws from the dependency lock file" in init
    assert f"Installed hashicorp/aws v{emu.locked_version()}" in init
    assert "hashicorp/random" not in init  # the stack needs no provider but hashicorp/aws
    assert "Success! The configuration is valid." in emulated["steps"]["validate"].stdout
    deploy = emulated["deploy"].stdout
    assert f"endpoint: {emulated['url']} (AWS_ENDPOINT_URL)" in deploy
    assert "Reusing previous version of hashicorp/aws from the dependency lock file" in deploy
    assert (emulated["stack_dir"] / emu.LOCK_FILE).read_bytes() == emulated["lock"]
    assert "Apply complete!" in deploy
    assert emulated["deploy_s"] < 240


def test_the_state_lands_in_the_encrypted_bucket_and_never_on_disk(emulated):
    """Issue 16 item 1: farmctl deploy created the state bucket and Terraform wrote there."""
    deploy = " ".join(emulated["deploy"].stdout.split())
    assert f"terraform state: s3://{STATE_BUCKET}/{STATE_KEY}" in deploy
    assert "created state bucket" in deploy
    assert 'Successfully configured the backend "s3"!' in deploy
    s3 = emulated.client("s3")
    key_arn = emulated.client("kms").describe_key(KeyId=f"alias/farmctl/tfstate-{STATE_BUCKET}")[
        "KeyMetadata"
    ]["Arn"]
    head = s3.head_object(Bucket=STATE_BUCKET, Key=STATE_KEY)
    assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"] == key_arn
    assert s3.get_bucket_versioning(Bucket=STATE_BUCKET)["Status"] == "Enabled"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=STATE_BUCKET)["Contents"]]
    assert keys == [STATE_KEY]  # the S3 lock file (<key>.tflock) was released after apply
    # nothing of the state on disk: no terraform.tfstate, and .terraform holds only settings
    stack_dir = emulated["stack_dir"]
    assert not list(stack_dir.glob("*.tfstate*")) and not list(stack_dir.glob("*.tfplan"))
    backend = json.loads((stack_dir / ".terraform" / "terraform.tfstate").read_text())
    assert backend["backend"]["type"] == "s3" and "resources" not in backend
    assert backend["backend"]["config"]["kms_key_id"] == key_arn
    assert backend["backend"]["config"]["use_lockfile"] is True
    saved = (stack_dir / "farmctl.s3.tfbackend").read_text()
    assert f'bucket     = "{STATE_BUCKET}"' in saved and key_arn in saved
    for path in [*stack_dir.iterdir(), *(stack_dir / ".terraform").iterdir()]:
        if path.is_file():
            assert WEBHOOK not in path.read_text(errors="replace"), path
    # What the state still holds in plain text (README "Security"): the API key values; not the
    # Grafana password (a placeholder) and not the webhook URL, in no version of the state object
    # (both deploys, the rotation included): it is ephemeral and written through value_wo.
    state = s3.get_object(Bucket=STATE_BUCKET, Key=STATE_KEY)["Body"].read().decode()
    ingest = emulated.client("apigateway").get_api_key(
        apiKey=emulated["outputs"]["ingest_api_key_id"], includeValue=True
    )
    assert ingest["value"] in state
    versions = s3.list_object_versions(Bucket=STATE_BUCKET, Prefix=STATE_KEY)["Versions"]
    # the first deploy and the rotation (and the lock objects' versions, checked too)
    assert len([v for v in versions if v["Key"] == STATE_KEY]) >= 2
    for version in versions:
        text = s3.get_object(
            Bucket=STATE_BUCKET, Key=version["Key"], VersionId=version["VersionId"]
        )["Body"].read()
        for secret in WEBHOOK_SECRETS:
            assert secret.encode() not in text, (version["VersionId"], secret)
    (webhook,) = [
        r
        for r in json.loads(state)["resources"]
        if r["type"] == "aws_ssm_parameter" and r["name"] == "discord_webhook"
    ]
    attributes = webhook["instances"][0]["attributes"]
    assert attributes["has_value_wo"] is True and attributes["value_wo_version"] == 2
    assert not attributes["value"] and attributes.get("value_wo") is None
    grafana = emulated.client("ssm").get_parameter(
        Name=emulated["outputs"]["grafana_admin_password_ssm_parameter"], WithDecryption=True
    )
    assert grafana["Parameter"]["Value"].startswith("unset:")


def plan(emulated: dict, *args: str) -> subprocess.CompletedProcess:
    env = emulated["env"]
    with stack.endpoint_override_file(emulated["stack_dir"], env):
        return run(
            ["terraform", "plan", "-input=false", "-no-color", "-lock=false", *args],
            emulated["stack_dir"],
            env,
        )


def test_plan_without_built_zips_says_what_to_run(emulated, tmp_path):
    done = plan(emulated, f"-var=lambda_build_dir={tmp_path}")
    text = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 1
    assert "The Lambda zips are not built" in text and "farmctl deploy" in text
    assert "filebase64sha256" not in text and "no file exists" not in text


def test_a_saved_plan_holds_no_webhook_and_needs_it_again_to_apply(emulated, tmp_path):
    """Issue 16 item 1: a plan that rewrites the webhook (version raised) keeps the URL in
    neither the plan file nor its JSON; applying it without the URL stops before any change."""
    url = "https://discord.com/api/webhooks/555/saved-plan-token_not-a-secret"
    planfile = tmp_path / "rotate.tfplan"
    env = {**emulated["env"], "TF_VAR_discord_webhook_url": url}
    with stack.endpoint_override_file(emulated["stack_dir"], env):
        done = run(
            [
                "terraform",
                "plan",
                "-input=false",
                "-no-color",
                "-lock=false",
                "-var=discord_webhook_version=3",
                f"-out={planfile}",
            ],
            emulated["stack_dir"],
            env,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        shown = run(["terraform", "show", "-json", str(planfile)], emulated["stack_dir"], env)
        without = {k: v for k, v in env.items() if k != "TF_VAR_discord_webhook_url"}
        missing = run(
            ["terraform", "apply", "-input=false", "-no-color", "-lock=false", str(planfile)],
            emulated["stack_dir"],
            without,
        )
    assert "aws_ssm_parameter.discord_webhook[0] will be updated in-place" in done.stdout
    with zipfile.ZipFile(planfile) as archive:
        members = b"".join(archive.read(name) for name in archive.namelist())
    for text in (members, planfile.read_bytes(), shown.stdout.encode(), done.stdout.encode()):
        assert b"saved-plan-token" not in text and url.encode() not in text
    (change,) = [
        c["change"]
        for c in json.loads(shown.stdout)["resource_changes"]
        if c["address"] == "aws_ssm_parameter.discord_webhook[0]"
    ]
    assert change["actions"] == ["update"] and change["after"]["value_wo_version"] == 3
    # the apply of a saved plan needs the ephemeral value again (farmctl keeps TF_VAR_* and
    # gives a var-file setting it to apply again); without it Terraform stops before any change
    assert missing.returncode == 1
    assert "must also be set during the apply phase" in " ".join(missing.stderr.split())


def test_ipv6_cidrs_are_refused_when_variables_are_checked(emulated):
    done = plan(emulated, '-var=allowed_cidrs=["2001:db8::/32"]')
    text = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 1
    assert "IPv4 CIDR" in text and "Invalid value for variable" in text


# ---------------------------------------------------------------------------------------------
# What was built, as the emulated account reports it
# ---------------------------------------------------------------------------------------------
def test_a_pandas_layer_from_another_account_stops_the_plan(emulated):
    """Issue 16 item 5 on the whole stack: code from a foreign account never reaches a Lambda."""
    foreign = f"arn:aws:lambda:{emu.REGION}:999999999999:layer:AWSSDKPandas-Python312:1"
    done = plan(emulated, f"-var=pandas_layer_arn={foreign}")
    text = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 1
    assert "Resource precondition failed" in text and "belongs to account 999999999999" in text


def test_alarms_topic_and_execution_log_groups(emulated):
    """Issue 16 items 9 and 12: what the account holds after the deploy."""
    key_arn = emulated.client("kms").describe_key(KeyId=f"alias/{PROJECT}")["KeyMetadata"]["Arn"]
    sns = emulated.client("sns")
    (topic,) = [
        t["TopicArn"]
        for t in sns.list_topics()["Topics"]
        if t["TopicArn"].endswith(f":{PROJECT}-alarms")
    ]
    attributes = sns.get_topic_attributes(TopicArn=topic)["Attributes"]
    assert attributes["KmsMasterKeyId"] == key_arn
    (statement,) = json.loads(attributes["Policy"])["Statement"]
    assert statement["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert statement["Condition"]["StringEquals"]["aws:SourceAccount"] == emu.ACCOUNT_ID
    assert statement["Condition"]["ArnLike"]["aws:SourceArn"].endswith(f":alarm:{PROJECT}-alarm-*")
    alarms = emulated.client("cloudwatch").describe_alarms(AlarmNamePrefix=f"{PROJECT}-alarm-")
    found = {a["AlarmName"]: a for a in alarms["MetricAlarms"]}
    assert len(found) == 13, sorted(found)  # 3 DLQs, 4 Lambdas, 4 Firehose, 2 APIs
    assert {a["Namespace"] for a in found.values()} == {
        "AWS/SQS",
        "AWS/Lambda",
        "AWS/Firehose",
        "AWS/ApiGateway",
    }
    # Issue 16 item 3: the simulator's own ingest key, in a usage plan apart from the devices'.
    apigw = emulated.client("apigateway")
    function = emulated.client("lambda").get_function_configuration(
        FunctionName=f"{PROJECT}-pseudo_sensor_log_lambda"
    )
    parameter = function["Environment"]["Variables"]["INGEST_API_KEY_SSM_PARAMETER"]
    assert parameter == f"/{PROJECT}/simulator/ingest-api-key"
    value = emulated.client("ssm").get_parameter(Name=parameter, WithDecryption=True)
    plans = {p["name"]: p["id"] for p in apigw.get_usage_plans()["items"]}
    keys = {
        name: {k["value"] for k in apigw.get_usage_plan_keys(usagePlanId=plans[name])["items"]}
        for name in (f"{PROJECT}-ingest-site-north", f"{PROJECT}-ingest-simulator")
    }
    simulator_key = value["Parameter"]["Value"]
    assert keys[f"{PROJECT}-ingest-simulator"] == {simulator_key}
    assert simulator_key not in keys[f"{PROJECT}-ingest-site-north"]
    (relay,) = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    assert relay["Protocol"] == "lambda" and relay["Endpoint"].endswith(
        ":smartfarm-anomaly_detector"
    )
    for alarm in found.values():
        assert alarm["AlarmActions"] == [topic] and alarm["OKActions"] == [topic]
        assert alarm["TreatMissingData"] == "notBreaching"
    functions = {
        a["Dimensions"][0]["Value"] for a in found.values() if a["Namespace"] == "AWS/Lambda"
    }
    deployed = {f["FunctionName"] for f in emulated.client("lambda").list_functions()["Functions"]}
    assert functions == deployed
    apis = {
        emulated["outputs"]["ingest_api_url"].split("//")[1].split(".")[0],
        emulated["outputs"]["simulator_api_url"].split("//")[1].split(".")[0],
    }
    groups = emulated.client("logs").describe_log_groups(
        logGroupNamePrefix="API-Gateway-Execution-Logs_"
    )["logGroups"]
    assert {g["logGroupName"].split("_", 1)[1].split("/")[0] for g in groups} == apis
    for group in groups:
        assert group["kmsKeyId"] == key_arn and group["retentionInDays"] > 0


def test_ingest_api_integration_role_and_trust_policy(emulated):
    apigw = emulated.client("apigateway")
    (api,) = [a for a in apigw.get_rest_apis()["items"] if a["name"].endswith("kinesis_api_gw")]
    resources = {r["path"]: r for r in apigw.get_resources(restApiId=api["id"])["items"]}
    assert {"/record", "/records"} <= set(resources)
    integration = apigw.get_integration(
        restApiId=api["id"], resourceId=resources["/records"]["id"], httpMethod="POST"
    )
    assert integration["uri"].endswith(":kinesis:action/PutRecords")
    assert integration["passthroughBehavior"] == "NEVER"
    role_name = integration["credentials"].rsplit("/", 1)[1]
    iam = emulated.client("iam")
    trust = iam.get_role(RoleName=role_name)["Role"]["AssumeRolePolicyDocument"]
    # API Gateway sends no aws:SourceAccount when it assumes the integration role.
    assert allows_assume(trust, "apigateway.amazonaws.com")
    policy = iam.get_role_policy(RoleName=role_name, PolicyName="put-readings")["PolicyDocument"]
    puts = [s for s in policy["Statement"] if "kinesis:PutRecords" in s["Action"]]
    assert puts and puts[0]["Resource"] == emulated["outputs"]["stream_arn"]
    # The deployed request template turns a batch into a PutRecords request for the stream.
    template = integration["requestTemplates"]["application/json"]
    body = json.dumps({"records": [{"greenhouse_id": "gh-1\n", "device_id": "d1"}]})
    request = json.loads(render(template, body)[0])
    assert request["StreamName"] == emulated["outputs"]["stream_name"]
    assert request["Records"][0]["PartitionKey"] == "gh-1\n:d1"
    # ... and marks readings sent with the simulator's own ingest key synthetic (issue 16.3)
    (simulator_key,) = emulated.client("apigateway").get_api_keys(
        nameQuery=f"{PROJECT}-ingest-simulator"
    )["items"]
    marked = json.loads(render(template, body, api_key_id=simulator_key["id"])[0])
    assert marked["Records"][0]["PartitionKey"] == "synthetic/gh-1\n:d1"
    # The logging role takes the same trust policy.
    cloudwatch_trust = iam.get_role(RoleName=f"{PROJECT}-apigw-cloudwatch")["Role"]
    assert allows_assume(cloudwatch_trust["AssumeRolePolicyDocument"], "apigateway.amazonaws.com")


def test_firehose_source_conversion_partitioning_and_processor(emulated):
    out = emulated["outputs"]
    firehose = emulated.client("firehose")
    desc = firehose.describe_delivery_stream(DeliveryStreamName=out["firehose_name"])
    desc = desc["DeliveryStreamDescription"]
    assert desc["DeliveryStreamType"] == "KinesisStreamAsSource"
    source = desc["Source"]["KinesisStreamSourceDescription"]
    assert source["KinesisStreamARN"] == out["stream_arn"]
    (dest,) = desc["Destinations"]
    s3 = dest["ExtendedS3DestinationDescription"]
    assert s3["BucketARN"].endswith(":::" + out["log_bucket"])
    assert s3["Prefix"].startswith("logs/year=!{partitionKeyFromLambda:year}/month=")
    assert s3["DynamicPartitioningConfiguration"]["Enabled"] is True
    conversion = s3["DataFormatConversionConfiguration"]
    assert conversion["Enabled"] is True
    assert conversion["SchemaConfiguration"]["DatabaseName"] == out["glue_database"]
    assert conversion["SchemaConfiguration"]["TableName"] == out["readings_table"]
    assert "ParquetSerDe" in conversion["OutputFormatConfiguration"]["Serializer"]
    processors = s3["ProcessingConfiguration"]["Processors"]
    (lam,) = [p for p in processors if p["Type"] == "Lambda"]
    arn = {p["ParameterName"]: p["ParameterValue"] for p in lam["Parameters"]}["LambdaArn"]
    assert out["transform_function_name"] in arn


def test_glue_tables_are_projected(emulated):
    out = emulated["outputs"]
    glue = emulated.client("glue")
    for table in (out["readings_table"], out["spikes_table"]):
        params = glue.get_table(DatabaseName=out["glue_database"], Name=table)["Table"][
            "Parameters"
        ]
        assert params["projection.enabled"] == "true"
        assert params["projection.year.type"] == "integer"
        assert params["projection.year.range"] == "2020,2040"
        assert params["projection.month.digits"] == "2"
        assert params["projection.day.range"] == "1,31"
        assert params["projection.day.digits"] == "2"
        assert params["storage.location.template"].startswith(f"s3://{emulated_bucket(out, table)}")


def emulated_bucket(out: dict, table: str) -> str:
    return out["log_bucket"] if table == out["readings_table"] else out["spike_bucket"]


def test_s3_notification_invokes_the_anomaly_detector(emulated):
    out = emulated["outputs"]
    config = emulated.client("s3").get_bucket_notification_configuration(Bucket=out["log_bucket"])
    (hook,) = config["LambdaFunctionConfigurations"]
    assert hook["LambdaFunctionArn"].endswith(":function:" + out["anomaly_function_name"])
    assert "s3:ObjectCreated:*" in hook["Events"]
    rules = {r["Name"].lower(): r["Value"] for r in hook["Filter"]["Key"]["FilterRules"]}
    assert rules["prefix"] == "logs/" and rules["suffix"] == ".parquet"
    policy = json.loads(
        emulated.client("lambda").get_policy(FunctionName=out["anomaly_function_name"])["Policy"]
    )
    (grant,) = [s for s in policy["Statement"] if s["Principal"] == {"Service": "s3.amazonaws.com"}]
    assert grant["Action"] == "lambda:InvokeFunction"
    condition = json.dumps(grant["Condition"])
    assert f"arn:aws:s3:::{out['log_bucket']}" in condition
    assert emu.ACCOUNT_ID in condition
    # Synthetic readings page no one unless the stack asks (issue 16.3, alert_on_synthetic).
    env = emulated.client("lambda").get_function_configuration(
        FunctionName=out["anomaly_function_name"]
    )["Environment"]["Variables"]
    assert env["ALERT_ON_SYNTHETIC"] == "false"


def test_silent_check_function_and_its_schedule_are_created(emulated):
    """Issue 14: the module's function (DLQ, env), the schedule and the state table output."""
    out = emulated["outputs"]
    fn = emulated.client("lambda").get_function(FunctionName=out["silent_check_function_name"])
    config = fn["Configuration"]
    assert config["Environment"]["Variables"]["STATE_TABLE"] == out["state_table"]
    # (moto's GetFunction leaves DeadLetterConfig out; the queue itself is checked)
    dlq = emulated.client("sqs").get_queue_url(
        QueueName=out["silent_check_function_name"] + "-failures"
    )
    assert dlq["QueueUrl"].endswith("-failures")
    assert config["TracingConfig"]["Mode"] == "Active"
    table = emulated.client("dynamodb").describe_table(TableName=out["state_table"])["Table"]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    (schedule,) = emulated.client("scheduler").list_schedules()["Schedules"]
    detail = emulated.client("scheduler").get_schedule(Name=schedule["Name"])
    assert detail["ScheduleExpression"] == "rate(5 minutes)"
    assert detail["Target"]["Arn"] == config["FunctionArn"]
    assert "<aws.scheduler.scheduled-time>" in detail["Target"]["Input"]


def test_ssm_parameters_hold_the_secrets_and_no_output_does(emulated):
    out = emulated["outputs"]
    ssm = emulated.client("ssm")
    secrets = {}
    for key in (
        "discord_webhook_ssm_parameter",
        "ingest_api_key_ssm_parameter",
        "grafana_admin_password_ssm_parameter",
    ):
        param = ssm.get_parameter(Name=out[key], WithDecryption=True)["Parameter"]
        assert param["Type"] == "SecureString"
        secrets[key] = param["Value"]
    # Written by the first deploy, rewritten by the rotation (discord_webhook_version 1 -> 2).
    assert emulated["first_value"]["Parameter"]["Value"] == FIRST_WEBHOOK
    assert emulated["first_value"]["Parameter"]["Type"] == "SecureString"
    assert secrets["discord_webhook_ssm_parameter"] == WEBHOOK
    rotation = " ".join(emulated["rotate"].stdout.split())
    assert "aws_ssm_parameter.discord_webhook[0] will be updated in-place" in rotation
    for secret in WEBHOOK_SECRETS:
        assert secret not in emulated["rotate"].stdout + emulated["rotate"].stderr
        assert secret not in emulated["deploy"].stdout + emulated["deploy"].stderr
    key = emulated.client("apigateway").get_api_key(
        apiKey=out["ingest_api_key_id"], includeValue=True
    )
    assert secrets["ingest_api_key_ssm_parameter"] == key["value"]
    # Terraform stores only a placeholder; the instance writes the password at first boot.
    assert secrets["grafana_admin_password_ssm_parameter"].startswith("unset:")
    dumped = json.dumps(out)
    for value in (*WEBHOOK_SECRETS, key["value"], "emulated-token"):
        assert value not in dumped
    state = run(["terraform", "show", "-json"], emulated["stack_dir"], emulated["env"]).stdout
    outputs = json.loads(state)["values"]["outputs"]
    assert not [name for name, o in outputs.items() if o.get("sensitive")]


# ---------------------------------------------------------------------------------------------
# farmctl --target aws against the emulated account
# ---------------------------------------------------------------------------------------------
def test_site_plans_source_policy_and_farmctl_keys_on_the_stack(emulated):
    """Issue 16 item 4 on the applied stack: a usage plan per site, the resource policy, and
    `farmctl keys` creating, listing and revoking keys on those plans (values never listed)."""
    apigw = emulated.client("apigateway")
    out = emulated["outputs"]
    plans = {p["name"]: p for p in apigw.get_usage_plans()["items"]}
    sites = out["ingest_usage_plans"]
    assert set(sites) == {"north", "south"}
    for site, plan_id in sites.items():
        plan = plans[f"{PROJECT}-ingest-site-{site}"]
        assert plan["id"] == plan_id and plan["quota"]["limit"] == 500000
    # the shared key (asked for in the tfvars) sits on the first site's plan only
    shared = {k["id"] for k in apigw.get_usage_plan_keys(usagePlanId=sites["north"])["items"]}
    assert shared == {out["ingest_api_key_id"]}
    assert apigw.get_usage_plan_keys(usagePlanId=sites["south"])["items"] == []
    # the resource policy: invoke allowed, denied outside the farm's addresses
    (api,) = [a for a in apigw.get_rest_apis()["items"] if a["name"] == f"{PROJECT}-kinesis_api_gw"]
    raw = apigw.get_rest_api(restApiId=api["id"])["policy"]
    try:
        policy = json.loads(raw)
    except json.JSONDecodeError:  # API Gateway answers with the policy's quotes escaped
        policy = json.loads(raw.replace('\\"', '"'))
    statements = {s["Sid"]: s for s in policy["Statement"]}
    deny = statements["DenyOutsideTheFarm"]
    assert deny["Effect"] == "Deny" and deny["Action"] == "execute-api:Invoke"
    assert sorted(deny["Condition"]["NotIpAddress"]["aws:SourceIp"]) == [
        "2001:db8:1234::/48",
        "203.0.113.0/24",
    ]
    assert statements["InvokeWithAnApiKey"]["Effect"] == "Allow"
    assert "pseudo_sensor_log_lambda's sends" in " ".join(emulated["deploy"].stdout.split())
    # farmctl keys against the stack, as a user runs it
    made = farmctl(emulated, "--target", "aws", "keys", "create", "south", "--label", "barn")
    assert made.returncode == 0, made.stderr
    value = made.stdout.strip()
    on_south = apigw.get_usage_plan_keys(usagePlanId=sites["south"])["items"]
    assert [k["value"] for k in on_south] == [value]
    listed = farmctl(emulated, "--target", "aws", "keys", "list", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["key_id"]: r for r in json.loads(listed.stdout)}
    assert rows[on_south[0]["id"]]["site"] == "south" and rows[on_south[0]["id"]]["enabled"]
    assert value not in listed.stdout + listed.stderr
    shared_value = apigw.get_api_key(apiKey=out["ingest_api_key_id"], includeValue=True)["value"]
    assert shared_value not in listed.stdout + listed.stderr
    revoked = farmctl(emulated, "--target", "aws", "keys", "revoke", "south", "--yes", "--delete")
    assert revoked.returncode == 0, revoked.stderr
    assert apigw.get_usage_plan_keys(usagePlanId=sites["south"])["items"] == []


def test_sites_and_source_cidrs_are_checked_at_plan_time(emulated):
    for args, needle in (
        ('-var=ingest_sites=["North"]', "Each site in ingest_sites"),
        ('-var=ingest_sites=["a", "a"]', "must not name a site twice"),
        ('-var=ingest_allowed_source_cidrs=["0.0.0.0/0"]', "must not hold a /0 block"),
        ('-var=ingest_allowed_source_cidrs=["farm.example.com"]', "IPv4 or IPv6 CIDR"),
    ):
        done = plan(emulated, args)
        text = " ".join((done.stdout + done.stderr).split())
        assert done.returncode == 1, args
        assert needle in text and "Invalid value for variable" in text, (args, text[-600:])


def test_farmctl_status(emulated):
    # moto's Athena runs no SQL and writes no result file; its documented way is to queue the
    # result of the next query (status counts today's spikes and the synthetic ones: 0, 0).
    names = ("spikes", "synthetic")
    queued = {
        "account_id": emu.ACCOUNT_ID,
        "region": emu.REGION,
        "results": [
            {
                "rows": [
                    {"Data": [{"VarCharValue": name} for name in names]},
                    {"Data": [{"VarCharValue": "0"} for _ in names]},
                ],
                "column_info": [
                    {"Name": name, "Label": name, "Type": "bigint", "Nullable": "UNKNOWN"}
                    for name in names
                ],
            }
        ],
    }
    request = urllib.request.Request(
        f"{emulated['url']}/moto-api/static/athena/query-results",
        data=json.dumps(queued).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    urllib.request.urlopen(request, timeout=10).close()
    done = farmctl(emulated, "--target", "aws", "status", "--output", "json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert emulated["outputs"]["stream_name"] in done.stdout
    assert "no log objects yet" in done.stdout
    info = json.loads(done.stdout)
    assert (info["spikes_today_utc"], info["synthetic_spikes_today"]) == (0, 0)


def test_farmctl_simulate_direct_lands_valid_records_in_kinesis(emulated):
    done = farmctl(
        emulated,
        "--target",
        "aws",
        "simulate",
        "--direct",
        "--count",
        "3",
        "-g",
        "2",
        "--interval",
        "0",
        "--seed",
        "7",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    kinesis = emulated.client("kinesis")
    stream = emulated["outputs"]["stream_name"]
    records = []
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        records += kinesis.get_records(ShardIterator=iterator, Limit=1000)["Records"]
    readings = [json.loads(r["Data"]) for r in records]
    assert len(readings) == 6  # 3 steps x 2 greenhouses x 1 device
    assert len({r["greenhouse_id"] for r in readings}) == 2
    batch = validate(readings)
    assert batch.rejected == [] and batch.accepted.num_rows == 6
    keys = {r["PartitionKey"] for r in records}
    # simulated readings: marked synthetic, in the body and in the partition key (issue 16.3)
    assert keys == {f"synthetic/{r['greenhouse_id']}:{r['device_id']}" for r in readings}
    assert {r["synthetic"] for r in readings} == {True}


def test_farmctl_discord_test_reads_the_webhook_from_ssm(emulated, httpserver):
    calls = []

    def handle(request):
        from werkzeug import Response

        calls.append(request.get_json())
        return Response(status=204)

    httpserver.expect_request("/api/webhooks/1/local", method="POST").respond_with_handler(handle)
    parameter = emulated["outputs"]["discord_webhook_ssm_parameter"]
    ssm = emulated.client("ssm")
    # The stack only accepts https://discord.com/... URLs; point the stored one at a local server.
    ssm.put_parameter(
        Name=parameter,
        Value=httpserver.url_for("/api/webhooks/1/local"),
        Type="SecureString",
        Overwrite=True,
    )
    try:
        # A local webhook server needs the documented loopback opt-in (core.webhook).
        loopback = {"SMARTFARM_WEBHOOK_ALLOW_LOOPBACK": "1"}
        done = farmctl(emulated, "--target", "aws", "discord", "test", env=loopback)
    finally:
        ssm.put_parameter(Name=parameter, Value=WEBHOOK, Type="SecureString", Overwrite=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(calls) == 1
    assert "SSM parameter" in done.stdout and parameter in " ".join(done.stdout.split())
    assert "api/webhooks/1/local" not in done.stdout  # the URL is a secret: never printed
