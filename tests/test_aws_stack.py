"""Stack discovery and deploy / destroy, with a fake `terraform` executable on PATH."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from smartfarm_cli import packaging
from smartfarm_cli.cli import app
from smartfarm_cli.errors import FarmctlError
from smartfarm_cli.stack import OUTPUT_KEYS, load_outputs, parse_terraform_outputs
from smartfarm_cli.targets import TargetOptions, resolve_name
from smartfarm_cli.targets.aws import AwsTarget

FAKE_TERRAFORM = """#!/bin/sh
if [ "$1" = version ]; then
  echo "{\\"terraform_version\\": \\"${TF_FAKE_VERSION:-1.11.4}\\"}"; exit 0
fi
echo "$(basename "$PWD")|$*" >> "$TF_ARGV_LOG"
if [ -f farmctl_endpoint_override.tf ]; then
  echo "$(basename "$PWD")|override present" >> "$TF_ARGV_LOG"
fi
case "$1" in
  plan) echo "Plan: 3 to add, 0 to change, 0 to destroy."; exit "${TF_PLAN_EXIT:-2}" ;;
  output) cat "$TF_OUTPUTS_JSON" ;;
  apply) echo "Apply complete! Resources: 3 added, 0 changed, 0 destroyed." ;;
  *) echo "terraform $1 done" ;;
esac
"""


def terraform_json(values: dict, sensitive: tuple[str, ...] = ()) -> str:
    return json.dumps(
        {k: {"sensitive": k in sensitive, "type": "string", "value": v} for k, v in values.items()}
    )


def assert_one_error(result, text: str, code: int = 1) -> None:
    """One `error:` message (rich may wrap it), the right exit code, no traceback."""
    flat = " ".join(result.output.split())
    assert result.exit_code == code, result.output
    assert flat.startswith("error: ") and flat.count("error:") == 1, result.output
    assert text in flat and "Traceback" not in result.output


OUTPUTS = {key: f"value-of-{key}" for key in OUTPUT_KEYS} | {
    "region": "ap-northeast-2",
    "ingest_api_url": "https://a1b2c3d4e5.execute-api.ap-northeast-2.amazonaws.com/v1/records",
    "simulator_api_url": "https://f6g7h8i9j0.execute-api.ap-northeast-2.amazonaws.com/v1/",
}


@pytest.fixture
def fake_tf(tmp_path, monkeypatch):
    """A repo folder with terraform/, a fake terraform on PATH and its argv log."""
    repo = tmp_path / "repo"
    (repo / "terraform").mkdir(parents=True)
    (repo / "terraform" / "main.tf").write_text("# fake\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "terraform"
    script.write_text(FAKE_TERRAFORM)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "argv.log"
    outputs = tmp_path / "outputs.json"
    outputs.write_text(terraform_json(OUTPUTS | {"db_password": "hunter2"}, ("db_password",)))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin")
    monkeypatch.setenv("TF_ARGV_LOG", str(log))
    monkeypatch.setenv("TF_OUTPUTS_JSON", str(outputs))
    monkeypatch.setenv("SMARTFARM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("AWS_REGION", raising=False)
    built = []

    def fake_build(out_dir):
        built.append(Path(out_dir))
        return {"anomaly_detector": Path(out_dir) / "anomaly_detector.zip"}

    monkeypatch.setattr(packaging, "build_lambda_zips", fake_build)
    monkeypatch.setattr(AwsTarget, "caller_identity", lambda self: {"Account": "123456789012"})
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)

    class Fake:
        pass

    fake = Fake()
    fake.repo, fake.stack_dir, fake.home = repo, repo / "terraform", tmp_path / "home"
    fake.built = built
    fake.argv = lambda: log.read_text().splitlines() if log.exists() else []
    fake.argv_log_clear = lambda: log.unlink(missing_ok=True)
    return fake


def test_parse_terraform_outputs_drops_sensitive_values():
    text = terraform_json({"region": "eu-west-1", "secret": "x"}, ("secret",))
    assert parse_terraform_outputs(text) == {"region": "eu-west-1"}
    assert parse_terraform_outputs(json.dumps({"region": "eu-west-1"})) == {"region": "eu-west-1"}


def test_outputs_from_terraform_output_json_then_from_the_cache(fake_tf, monkeypatch):
    outputs = load_outputs(fake_tf.home, fake_tf.stack_dir)
    assert dict(outputs) == OUTPUTS  # the sensitive output is not kept
    assert fake_tf.argv() == ["terraform|output -json"]
    cache = fake_tf.home / "aws-outputs.json"
    assert json.loads(cache.read_text()) == OUTPUTS
    assert "hunter2" not in cache.read_text()
    # Later commands read the cache: no terraform needed any more.
    monkeypatch.setenv("PATH", "/nonexistent")
    target = AwsTarget(TargetOptions(home=fake_tf.home))
    assert target.outputs["stream_name"] == "value-of-stream_name"
    assert target.discord_webhook_parameter() == "value-of-discord_webhook_ssm_parameter"
    assert resolve_name(TargetOptions(home=fake_tf.home)) == "aws"
    with pytest.raises(FarmctlError, match="no 'nonexistent_key'"):
        target.outputs["nonexistent_key"]


def test_no_stack_deployed_is_one_clear_line(fake_tf, monkeypatch):
    (fake_tf.stack_dir.parent / "outputs-empty.json").write_text("{}")
    monkeypatch.setenv("TF_OUTPUTS_JSON", str(fake_tf.stack_dir.parent / "outputs-empty.json"))
    result = CliRunner().invoke(
        app, ["--target", "aws", "--stack-dir", str(fake_tf.stack_dir), "crawl"]
    )
    assert result.exit_code == 1
    assert "no aws stack is deployed" in result.output and "farmctl deploy" in result.output
    # Without terraform and without a cache.
    monkeypatch.chdir(fake_tf.repo)
    monkeypatch.setenv("PATH", "/nonexistent")
    result = CliRunner().invoke(app, ["--target", "aws", "spikes"])
    assert result.exit_code == 1, result.output
    assert_one_error(result, "no deployed aws stack is known")


def test_wrong_region_is_one_clear_line(fake_tf):
    load_outputs(fake_tf.home, fake_tf.stack_dir)
    result = CliRunner().invoke(app, ["--target", "aws", "--region", "us-east-1", "latest"])
    assert result.exit_code == 1
    assert "deployed in ap-northeast-2" in result.output
    assert "--region ap-northeast-2" in result.output


def test_deploy_runs_build_init_plan_apply_and_saves_outputs(fake_tf, monkeypatch):
    var_file = fake_tf.repo / "prod.tfvars"
    var_file.write_text('project = "sf"\n')
    monkeypatch.chdir(fake_tf.repo)
    result = CliRunner().invoke(
        app,
        ["deploy", "--auto-approve", "--local-state", "--var-file", "prod.tfvars"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert fake_tf.built == [Path("terraform").parent / "build" / "lambda"]
    assert fake_tf.argv() == [
        "terraform|init -input=false -no-color",
        "terraform|plan -input=false -no-color -detailed-exitcode -out=farmctl.tfplan "
        f"-var-file={var_file.resolve()}",
        "terraform|apply -input=false -no-color farmctl.tfplan",
        "terraform|output -json",
    ]
    assert "Plan: 3 to add" in result.output and "Apply complete!" in result.output  # streamed
    assert json.loads((fake_tf.home / "aws-outputs.json").read_text()) == OUTPUTS
    assert "hunter2" not in result.output


EPHEMERAL_VARIABLES = """
variable "discord_webhook_url" {
  type      = string
  sensitive = true
  ephemeral = true
}

variable "discord_webhook_version" {
  type    = number
  default = 1
}
"""


def test_a_var_file_setting_an_ephemeral_variable_is_given_to_apply_again(fake_tf, monkeypatch):
    """A saved plan holds no ephemeral value (the webhook URL, issue 16 item 1): Terraform
    needs it again when the plan is applied. TF_VAR_* and terraform.tfvars it reads itself;
    a --var-file farmctl passes again, only when it sets an ephemeral variable."""
    (fake_tf.stack_dir / "variables.tf").write_text(EPHEMERAL_VARIABLES)
    secrets = fake_tf.repo / "alerts.tfvars"
    secrets.write_text(
        'discord_webhook_url = "https://discord.com/api/webhooks/1/t"\n'
        "discord_webhook_version = 2\n"
    )
    plain = fake_tf.repo / "plain.tfvars"
    plain.write_text("discord_webhook_version = 2\n")
    monkeypatch.chdir(fake_tf.repo)
    for var_file, again in ((secrets, f"-var-file={secrets.resolve()} "), (plain, "")):
        if var_file is plain:  # the URL from the environment, as terraform/README.md advises
            monkeypatch.setenv("TF_VAR_discord_webhook_url", "https://discord.com/api/webhooks/1/t")
        fake_tf.argv_log_clear()
        result = CliRunner().invoke(
            app,
            ["deploy", "--auto-approve", "--local-state", "--var-file", var_file.name],
            catch_exceptions=False,
        )
        assert result.exit_code == 0, result.output
        assert fake_tf.argv()[1:3] == [
            "terraform|plan -input=false -no-color -detailed-exitcode -out=farmctl.tfplan "
            f"-var-file={var_file.resolve()}",
            f"terraform|apply -input=false -no-color {again}farmctl.tfplan",
        ]
        assert "api/webhooks" not in result.output


def test_terraform_older_than_1_11_is_refused():
    """Write-only arguments (the webhook's value_wo) need Terraform 1.11."""
    from smartfarm_cli.stack import version_problem

    assert "too old" in version_problem("1.10.5") and ">= 1.11" in version_problem("1.10.5")
    assert version_problem("1.11.0") is None and version_problem("1.14.2") is None


def test_deploy_asks_before_applying(fake_tf, monkeypatch):
    monkeypatch.chdir(fake_tf.repo)
    result = CliRunner().invoke(app, ["deploy", "--local-state"], input="n\n")
    assert result.exit_code == 2
    assert "deploy cancelled" in result.output
    assert [line.split()[0] for line in fake_tf.argv()] == ["terraform|init", "terraform|plan"]
    assert not (fake_tf.home / "aws-outputs.json").exists()
    result = CliRunner().invoke(app, ["deploy", "--local-state"], input="y\n")
    assert result.exit_code == 0, result.output
    assert fake_tf.argv()[-2:] == [
        "terraform|apply -input=false -no-color farmctl.tfplan",
        "terraform|output -json",
    ]


def test_deploy_with_no_changes_skips_apply(fake_tf, monkeypatch):
    monkeypatch.setenv("TF_PLAN_EXIT", "0")
    result = CliRunner().invoke(
        app, ["--stack-dir", str(fake_tf.stack_dir), "deploy", "--local-state"]
    )
    assert result.exit_code == 0, result.output
    assert [line.split()[0] for line in fake_tf.argv()] == [
        "terraform|init",
        "terraform|plan",
        "terraform|output",
    ]


def test_failed_terraform_step_is_one_clear_line(fake_tf, monkeypatch):
    monkeypatch.setenv("TF_PLAN_EXIT", "1")
    result = CliRunner().invoke(
        app, ["--stack-dir", str(fake_tf.stack_dir), "deploy", "--auto-approve", "--local-state"]
    )
    assert result.exit_code == 1
    assert "`terraform plan` failed (exit code 1)" in result.output
    assert "Traceback" not in result.output
    assert not any("apply" in line for line in fake_tf.argv())


def test_deploy_without_terraform_fails_cleanly(fake_tf, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    result = CliRunner().invoke(
        app, ["--stack-dir", str(fake_tf.stack_dir), "deploy", "--auto-approve", "--local-state"]
    )
    assert result.exit_code == 1
    assert "terraform is not installed" in result.output
    assert "developer.hashicorp.com/terraform/install" in result.output
    assert "Traceback" not in result.output
    assert fake_tf.built == []  # nothing built before the check


def test_destroy_asks_then_runs_destroy_and_forgets_the_outputs(fake_tf, monkeypatch):
    load_outputs(fake_tf.home, fake_tf.stack_dir)
    monkeypatch.chdir(fake_tf.repo)
    before = fake_tf.argv()
    result = CliRunner().invoke(app, ["destroy", "--local-state"], input="n\n")
    assert result.exit_code == 2 and "destroy cancelled" in result.output
    assert fake_tf.argv() == before
    result = CliRunner().invoke(app, ["destroy", "--local-state"], input="y\n")
    assert result.exit_code == 0, result.output
    assert fake_tf.argv()[len(before) :] == [
        "terraform|init -input=false -no-color",
        "terraform|destroy -input=false -no-color -auto-approve",
    ]
    assert not (fake_tf.home / "aws-outputs.json").exists()
    # the local choice is saved: the next destroy needs no flag
    result = CliRunner().invoke(app, ["destroy", "--auto-approve"])
    assert result.exit_code == 0, result.output
    assert fake_tf.argv()[-1] == "terraform|destroy -input=false -no-color -auto-approve"


def test_help_imports_no_aws_libraries():
    code = (
        "import sys\n"
        "from smartfarm_cli.cli import app\n"
        "for args in (['--help'], ['deploy', '--help'], ['crawl', '--help']):\n"
        "    try:\n"
        "        app(args)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = [m for m in ('boto3', 'botocore', 'awswrangler', 'pandas') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "HEAVY []" in done.stdout, done.stdout[-500:]
    assert "deploy" in done.stdout and "run-crawler" in done.stdout


# -- preflight and AWS_ENDPOINT_URL ------------------------------------------------------------
STACK_VARIABLES = """
variable "region" {
  type    = string
  default = "ap-northeast-2"
}

variable "pandas_layer_arn" {
  type = string
}

variable "allowed_cidrs" {
  type = list(string)
  validation {
    condition     = length(var.allowed_cidrs) > 0
    error_message = "x"
  }
}
"""


def test_preflight_lists_every_problem_on_its_own_line_before_building(fake_tf, monkeypatch):
    (fake_tf.stack_dir / "variables.tf").write_text(STACK_VARIABLES)
    monkeypatch.setenv("TF_FAKE_VERSION", "1.5.7")

    def no_credentials(self):
        raise RuntimeError("Unable to locate credentials")

    monkeypatch.setattr(AwsTarget, "caller_identity", no_credentials)
    result = CliRunner().invoke(
        app, ["--stack-dir", str(fake_tf.stack_dir), "deploy", "--auto-approve", "--local-state"]
    )
    assert result.exit_code == 2, result.output
    # rich wraps long lines: each problem starts a line of its own, in this order
    starts = [line for line in result.output.splitlines() if line.strip()]
    problems = [
        "error: terraform 1.5.7 is too old",
        "AWS credentials do not resolve (Unable to locate credentials)",
        "variable pandas_layer_arn is not set",
        "variable allowed_cidrs is not set",
    ]
    found = [next(i for i, line in enumerate(starts) if line.startswith(p)) for p in problems]
    assert found == sorted(found)
    assert "Traceback" not in result.output and result.output.count("error:") == 1
    assert fake_tf.built == [] and fake_tf.argv() == []  # nothing built, no terraform run


def test_preflight_accepts_variables_from_tfvars_var_file_or_environment(fake_tf, monkeypatch):
    (fake_tf.stack_dir / "variables.tf").write_text(STACK_VARIABLES)
    (fake_tf.stack_dir / "terraform.tfvars").write_text('pandas_layer_arn = "arn:x"\n')
    monkeypatch.setenv("TF_VAR_allowed_cidrs", '["203.0.113.7/32"]')
    target = AwsTarget(TargetOptions(home=fake_tf.home, stack_dir=str(fake_tf.stack_dir)))
    assert target.preflight() == fake_tf.stack_dir
    monkeypatch.delenv("TF_VAR_allowed_cidrs")
    var_file = fake_tf.repo / "prod.tfvars"
    var_file.write_text('allowed_cidrs = ["203.0.113.7/32"]\n')
    assert target.preflight(var_file) == fake_tf.stack_dir


def test_aws_endpoint_url_reaches_terraform_as_an_override_removed_afterwards(fake_tf, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://localhost:4566")
    result = CliRunner().invoke(
        app, ["--stack-dir", str(fake_tf.stack_dir), "deploy", "--auto-approve", "--local-state"]
    )
    assert result.exit_code == 0, result.output
    assert "endpoint: http://localhost:4566" in result.output
    argv = fake_tf.argv()
    # init, plan and apply each ran with the override in place; it is gone afterwards
    for step in ("init", "plan", "apply"):
        index = next(i for i, line in enumerate(argv) if line.startswith(f"terraform|{step}"))
        assert argv[index + 1] == "terraform|override present"
    assert not (fake_tf.stack_dir / "farmctl_endpoint_override.tf").exists()
    result = CliRunner().invoke(
        app, ["--stack-dir", str(fake_tf.stack_dir), "destroy", "--auto-approve"]
    )
    assert result.exit_code == 0, result.output
    assert fake_tf.argv()[-3:] == [
        "terraform|override present",
        "terraform|destroy -input=false -no-color -auto-approve",
        "terraform|override present",
    ]
    assert not (fake_tf.stack_dir / "farmctl_endpoint_override.tf").exists()


def test_endpoint_override_names_every_service_and_refuses_a_bad_url():
    from smartfarm_cli.errors import UserError
    from smartfarm_cli.stack import ENDPOINT_SERVICES, endpoint_override

    text = endpoint_override("http://127.0.0.1:4566/")
    for service in ENDPOINT_SERVICES:
        assert f'{service} = "http://127.0.0.1:4566"' in " ".join(text.split())
    assert "s3_use_path_style" in text
    with pytest.raises(UserError, match="AWS_ENDPOINT_URL"):
        endpoint_override('http://x" }\nprovider "evil" {')


def test_a_stale_override_never_redirects_a_real_deploy(fake_tf):
    stale = fake_tf.stack_dir / "farmctl_endpoint_override.tf"
    from smartfarm_cli.stack import endpoint_override

    stale.write_text(endpoint_override("http://localhost:4566"))
    result = CliRunner().invoke(
        app, ["--stack-dir", str(fake_tf.stack_dir), "deploy", "--auto-approve", "--local-state"]
    )
    assert result.exit_code == 0, result.output
    assert "terraform|override present" not in fake_tf.argv()
    assert not stale.exists()


def test_destroy_checks_before_asking_and_a_closed_stdin_is_a_no(fake_tf, monkeypatch):
    load_outputs(fake_tf.home, fake_tf.stack_dir)
    monkeypatch.chdir(fake_tf.repo)
    before = fake_tf.argv()
    result = CliRunner().invoke(app, ["destroy", "--local-state"], input="")  # stdin closed
    assert result.exit_code == 2 and "destroy cancelled" in result.stderr
    assert fake_tf.argv() == before
    monkeypatch.setenv("PATH", "/nonexistent")
    result = CliRunner().invoke(app, ["destroy", "--local-state"], input="y\n")
    assert result.exit_code == 1 and "terraform is not installed" in result.stderr
    assert "Destroy every resource" not in result.output  # nothing was asked


def test_a_site_named_value_is_not_taken_for_terraforms_wrapper():
    plans = {"value": "plan-1", "main": "plan-2"}
    wrapped = {
        "region": {"value": "eu-west-1", "type": "string", "sensitive": False},
        "ingest_usage_plans": {"value": plans, "type": ["map", "string"], "sensitive": False},
    }
    flat = {"region": "eu-west-1", "ingest_usage_plans": plans}
    expected = {"region": "eu-west-1", "ingest_usage_plans": plans}
    assert parse_terraform_outputs(json.dumps(wrapped)) == expected
    assert parse_terraform_outputs(json.dumps(flat)) == expected
