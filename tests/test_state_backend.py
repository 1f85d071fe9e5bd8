"""Issue 16 item 1: where `farmctl deploy` keeps the Terraform state, and the state bucket.

The refusal and the CLI run with the fake terraform of test_aws_stack.py; the bucket bootstrap
runs against moto in-process; the migration of a local state runs the real terraform binary
(when on PATH) against a moto server, on a one-resource configuration that needs no provider.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import boto3
import pytest
import tf_emulator as emu
from moto import mock_aws
from test_aws_stack import assert_one_error, fake_tf  # noqa: F401
from typer.testing import CliRunner

from smartfarm_cli import state_backend
from smartfarm_cli.cli import app
from smartfarm_cli.errors import FarmctlError, UserError
from smartfarm_cli.state_backend import S3State, StatePlan, StateRequest

ACCOUNT = "123456789012"
REGION = "ap-northeast-2"
BUCKET = "farm-tfstate-123456789012"


@pytest.fixture
def aws(monkeypatch, tmp_path):
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
    }.items():
        monkeypatch.setenv(name, value)
    # moto denies every object request under a TLS-only bucket policy; the harness's patch
    # (tests/tf_emulator.py, it names the moto fault) applies here too, for this test only.
    emu.patch_moto(monkeypatch.setattr)
    with mock_aws():
        yield boto3.Session(region_name=REGION)


def bootstrap(session, bucket=BUCKET, kms_key=None, lines=None):
    where = StatePlan(
        "s3",
        s3=S3State(bucket, "smartfarm/terraform.tfstate", REGION),
        bootstrap=True,
        kms_key=kms_key,
    )
    return state_backend.bootstrap(
        session, where, ACCOUNT, (lines if lines is not None else []).append
    )


# -- the refusal and the choice ----------------------------------------------------------------


def test_deploy_without_a_state_choice_is_refused_before_anything_runs(fake_tf):  # noqa: F811
    result = CliRunner().invoke(
        app, ["--stack-dir", str(fake_tf.stack_dir), "deploy", "--auto-approve"]
    )
    assert_one_error(result, "refusing to keep the Terraform state in a local file", code=2)
    flat = " ".join(result.output.split())
    assert "it holds API key values in plain text" in flat
    assert "--state-bucket NAME" in flat and "--local-state" in flat
    assert fake_tf.built == [] and fake_tf.argv() == []  # nothing built, terraform never ran
    assert not (fake_tf.stack_dir / state_backend.LOCAL_OVERRIDE).exists()
    # A local state left by an older deploy: the line says how it moves to S3.
    (fake_tf.stack_dir / "terraform.tfstate").write_text('{"lineage": "l", "serial": 1}')
    result = CliRunner().invoke(
        app, ["--stack-dir", str(fake_tf.stack_dir), "deploy", "--auto-approve"]
    )
    assert_one_error(result, "a local state exists", code=2)
    assert "--state-bucket moves it to S3" in " ".join(result.output.split())


def test_local_state_when_asked_is_saved_and_kept_0600(fake_tf):  # noqa: F811
    args = ["--stack-dir", str(fake_tf.stack_dir), "deploy", "--auto-approve"]
    result = CliRunner().invoke(app, [*args, "--local-state"])
    assert result.exit_code == 0, result.output
    assert "terraform state: local file" in result.output
    override = (fake_tf.stack_dir / state_backend.LOCAL_OVERRIDE).read_text()
    assert 'backend "local" {}' in override
    # the choice stands for later deploys; files terraform leaves are tightened to 0600
    state = fake_tf.stack_dir / "terraform.tfstate"
    state.write_text('{"lineage": "l", "serial": 1}')
    state.chmod(0o644)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert oct(state.stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["--local-state", "--state-bucket", BUCKET], "exclude each other"),
        (["--state-bucket", "Bad_Name"], "is not a valid S3 bucket name"),
        (["--state-bucket", "192.168.1.1"], "is not a valid S3 bucket name"),
        (["--state-bucket", BUCKET, "--state-prefix", "../x"], "is not a usable key prefix"),
        (["--state-bucket", BUCKET, "--state-kms-key", "nope"], "is not a KMS key"),
        (["--state-prefix", "prod"], "go with --state-bucket NAME"),
    ],
)
def test_bad_state_options_are_one_line_each(fake_tf, args, text):  # noqa: F811
    result = CliRunner().invoke(
        app, ["--stack-dir", str(fake_tf.stack_dir), "deploy", "--auto-approve", *args]
    )
    assert_one_error(result, text, code=2)
    assert fake_tf.argv() == []


def test_saved_s3_state_cannot_silently_go_local_or_move(tmp_path):
    saved = S3State(BUCKET, "smartfarm/terraform.tfstate", REGION, "arn:aws:kms:x")
    state_backend.save(tmp_path, saved)
    assert state_backend.read_saved(tmp_path) == saved
    with pytest.raises(UserError, match="does not move it back to a local file"):
        state_backend.plan(tmp_path, StateRequest(local=True), REGION)
    with pytest.raises(UserError, match="does not move it between buckets"):
        state_backend.plan(tmp_path, StateRequest(bucket="other-bucket-name"), REGION)
    where = state_backend.plan(tmp_path, StateRequest(), "eu-west-1", "destroy")
    assert where.s3 == saved and not where.bootstrap and not where.save
    # destroy without any saved choice asks where the state is
    with pytest.raises(UserError, match="does not know where the state"):
        state_backend.plan(tmp_path / "elsewhere", StateRequest(), REGION, "destroy")


def test_backend_args_for_terraform_and_an_emulator():
    s3 = S3State(BUCKET, "smartfarm/terraform.tfstate", REGION, "arn:aws:kms:k")
    assert s3.backend_args() == [
        f"-backend-config=bucket={BUCKET}",
        "-backend-config=key=smartfarm/terraform.tfstate",
        f"-backend-config=region={REGION}",
        "-backend-config=kms_key_id=arn:aws:kms:k",
    ]
    emulated = s3.backend_args("http://127.0.0.1:5000/")
    assert '-backend-config=endpoints={s3="http://127.0.0.1:5000",sts="http://127.0.0.1:5000",' \
        'iam="http://127.0.0.1:5000"}' in emulated  # fmt: skip
    assert "-backend-config=use_path_style=true" in emulated
    # the saved file is what `terraform init -backend-config=FILE` reads by hand
    text = s3.to_tfbackend()
    assert f'bucket     = "{BUCKET}"' in text and 'kms_key_id = "arn:aws:kms:k"' in text


# -- the bucket --------------------------------------------------------------------------------


def test_bootstrap_creates_a_private_versioned_kms_tls_only_bucket(aws):
    lines = []
    settings = bootstrap(aws, lines=lines)
    s3, kms = aws.client("s3"), aws.client("kms")
    assert settings.bucket == BUCKET and settings.region == REGION
    key = kms.describe_key(KeyId=settings.kms_key_id)["KeyMetadata"]
    assert key["Arn"] == settings.kms_key_id and key["KeyState"] == "Enabled"
    assert kms.get_key_rotation_status(KeyId=key["KeyId"])["KeyRotationEnabled"] is True
    alias = kms.describe_key(KeyId=f"alias/farmctl/tfstate-{BUCKET}")["KeyMetadata"]
    assert alias["Arn"] == settings.kms_key_id
    assert s3.get_bucket_location(Bucket=BUCKET)["LocationConstraint"] == REGION
    assert s3.get_bucket_versioning(Bucket=BUCKET)["Status"] == "Enabled"
    (rule,) = s3.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms",
        "KMSMasterKeyID": settings.kms_key_id,
    }
    assert rule["BucketKeyEnabled"] is True
    block = s3.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"]
    assert block == dict.fromkeys(
        ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"), True
    )
    ownership = s3.get_bucket_ownership_controls(Bucket=BUCKET)["OwnershipControls"]["Rules"]
    assert ownership == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    (deny,) = json.loads(s3.get_bucket_policy(Bucket=BUCKET)["Policy"])["Statement"]
    assert deny["Effect"] == "Deny" and deny["Action"] == "s3:*"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert set(deny["Resource"]) == {f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"}
    assert any("created state bucket" in line for line in lines)
    # a second run reuses the bucket and its key (no second key)
    again = bootstrap(aws)
    assert again.kms_key_id == settings.kms_key_id
    assert len(kms.list_keys()["Keys"]) == 1


def test_bootstrap_uses_a_given_kms_key(aws):
    key = aws.client("kms").create_key(Description="mine")["KeyMetadata"]
    settings = bootstrap(aws, kms_key=key["KeyId"])
    assert settings.kms_key_id == key["Arn"]
    assert len(aws.client("kms").list_keys()["Keys"]) == 1
    with pytest.raises(UserError, match="the key cannot be read"):
        bootstrap(aws, bucket="another-state-bucket", kms_key="alias/missing")


def test_an_existing_bucket_of_yours_is_checked_never_changed(aws):
    s3 = aws.client("s3")
    s3.create_bucket(
        Bucket="plain-bucket", CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    with pytest.raises(UserError) as raised:
        bootstrap(aws, bucket="plain-bucket")
    text = str(raised.value)
    assert "not fit for the Terraform state" in text
    assert "versioning is not enabled" in text and "public access is not fully blocked" in text
    assert s3.get_bucket_versioning(Bucket="plain-bucket").get("Status") is None  # unchanged
    # once the owner sets it up, its own KMS key is used
    key = aws.client("kms").create_key()["KeyMetadata"]
    s3.put_bucket_versioning(Bucket="plain-bucket", VersioningConfiguration={"Status": "Enabled"})
    s3.put_bucket_encryption(
        Bucket="plain-bucket",
        ServerSideEncryptionConfiguration={
            "Rules": [
                {
                    "ApplyServerSideEncryptionByDefault": {
                        "SSEAlgorithm": "aws:kms",
                        "KMSMasterKeyID": key["Arn"],
                    }
                }
            ]
        },
    )
    s3.put_public_access_block(
        Bucket="plain-bucket",
        PublicAccessBlockConfiguration=dict.fromkeys(
            ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"),
            True,
        ),
    )
    assert bootstrap(aws, bucket="plain-bucket").kms_key_id == key["Arn"]


def test_deploy_with_state_bucket_creates_it_and_passes_the_backend_config(
    fake_tf,  # noqa: F811
    aws,
):
    args = ["--stack-dir", str(fake_tf.stack_dir), "deploy", "--auto-approve"]
    result = CliRunner().invoke(
        app, [*args, "--state-bucket", BUCKET, "--state-prefix", "farm/prod"]
    )
    assert result.exit_code == 0, result.output
    key_arn = aws.client("kms").describe_key(KeyId=f"alias/farmctl/tfstate-{BUCKET}")[
        "KeyMetadata"
    ]["Arn"]
    init = next(line for line in fake_tf.argv() if line.startswith("terraform|init"))
    assert init == (
        "terraform|init -input=false -no-color "
        f"-backend-config=bucket={BUCKET} -backend-config=key=farm/prod/terraform.tfstate "
        f"-backend-config=region={REGION} -backend-config=kms_key_id={key_arn}"
    )
    flat = " ".join(result.output.split())
    assert f"terraform state: s3://{BUCKET}/farm/prod/terraform.tfstate in {REGION}" in flat
    assert "created state bucket" in flat
    saved = state_backend.read_saved(fake_tf.stack_dir)
    assert saved == S3State(BUCKET, "farm/prod/terraform.tfstate", REGION, key_arn)
    # the next deploy and the destroy reuse the saved settings, no flag needed
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(
        app, ["--stack-dir", str(fake_tf.stack_dir), "destroy", "--auto-approve"]
    )
    assert result.exit_code == 0, result.output
    assert fake_tf.argv()[-2:] == [
        init,
        "terraform|destroy -input=false -no-color -auto-approve",
    ]
    assert "state kept in s3://" in result.output


def test_deploy_moves_a_local_state_only_when_s3_holds_the_same_stack(
    fake_tf,  # noqa: F811
    aws,
):
    local = fake_tf.stack_dir / "terraform.tfstate"
    held = {"resources": [{"type": "aws_kinesis_stream", "name": "readings"}], "outputs": {}}
    local.write_text(json.dumps({"lineage": "lin-1", "serial": 4, **held}))
    (fake_tf.stack_dir / "terraform.tfstate.backup").write_text("{}")
    s3 = aws.client("s3")
    bootstrap(aws)
    # another stack's state already sits at that key: neither is overwritten
    key = "smartfarm/terraform.tfstate"
    other = {"lineage": "lin-2", "serial": 9, "resources": []}
    s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(other))
    args = ["--stack-dir", str(fake_tf.stack_dir), "deploy", "--auto-approve"]
    result = CliRunner().invoke(app, [*args, "--state-bucket", BUCKET])
    flat = " ".join(result.stderr.split())
    assert result.exit_code == 2 and flat.startswith("error: ") and flat.count("error:") == 1
    assert "and they differ: farmctl overwrites neither" in flat
    assert not any(line.startswith("terraform|init") for line in fake_tf.argv())
    # the fake terraform does not copy; put what `init -migrate-state` would have written
    # (terraform gives the copy a new lineage)
    s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps({"lineage": "new", "serial": 1, **held}))
    result = CliRunner().invoke(app, [*args, "--state-bucket", BUCKET])
    assert result.exit_code == 0, result.output
    init = next(line for line in fake_tf.argv() if line.startswith("terraform|init"))
    assert init.endswith("-migrate-state -force-copy")
    assert not local.exists() and not (fake_tf.stack_dir / "terraform.tfstate.backup").exists()
    assert f"moved the local state to s3://{BUCKET}/{key}" in " ".join(result.output.split())


def test_a_migrated_state_is_removed_only_when_s3_holds_it(tmp_path):
    resources = [{"type": "terraform_data", "name": "x", "instances": [{"attributes": {}}]}]
    local = {"lineage": "a", "serial": 3, "resources": resources, "outputs": {}}
    (tmp_path / "terraform.tfstate").write_text(json.dumps(local))
    with pytest.raises(FarmctlError, match="is kept"):
        state_backend.remove_migrated_local_state(tmp_path, json.dumps({**local, "resources": []}))
    assert (tmp_path / "terraform.tfstate").exists()
    removed = state_backend.remove_migrated_local_state(
        tmp_path, json.dumps({**local, "lineage": "b", "serial": 1})
    )
    assert removed == [tmp_path / "terraform.tfstate"]


# -- the real terraform: a local state moves into the emulated S3 -------------------------------

TINY_STACK = """
terraform {
  backend "s3" {
    encrypt      = true
    use_lockfile = true
  }
}

variable "secret" {
  type      = string
  sensitive = true
}

resource "terraform_data" "secret" {
  input = var.secret
}
"""


@pytest.mark.skipif(shutil.which("terraform") is None, reason="no terraform binary on PATH")
def test_real_terraform_migrates_a_local_state_into_the_encrypted_bucket(tmp_path, monkeypatch):
    server = emu.MotoServer(tmp_path)
    try:
        stack_dir = tmp_path / "terraform"
        stack_dir.mkdir()
        (stack_dir / "main.tf").write_text(TINY_STACK)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TF_"))},
            **emu.aws_env(server.url),
            "TF_CLI_CONFIG_FILE": str(emu.write_cli_config(tmp_path / "cli.tfrc", tmp_path)),
            "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
            "TF_VAR_secret": "not-a-real-secret-but-kept-out-of-files",
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        from smartfarm_cli import stack
        from smartfarm_cli.targets import TargetOptions
        from smartfarm_cli.targets.aws import AwsTarget

        target = AwsTarget(TargetOptions(home=tmp_path / "home", stack_dir=stack_dir))
        lines: list[str] = []
        local = state_backend.plan(stack_dir, StateRequest(local=True), REGION)
        target._init(stack_dir, local, lines.append, env)
        stack.run_terraform(["apply", "-auto-approve", "-input=false"], stack_dir, None, env)
        state_file = stack_dir / "terraform.tfstate"
        assert oct(state_file.stat().st_mode & 0o777) == "0o600"
        assert "kept-out-of-files" in state_file.read_text()  # why a local state is refused

        where = state_backend.plan(stack_dir, StateRequest(bucket=BUCKET), REGION)
        assert where.migrate and where.bootstrap
        where = target._prepare_state(where, lines.append)
        target._init(stack_dir, where, lines.append, env)
        assert not state_file.exists() and not (stack_dir / state_backend.LOCAL_OVERRIDE).exists()
        s3 = boto3.client(
            "s3",
            region_name=REGION,
            endpoint_url=server.url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        head = s3.head_object(Bucket=BUCKET, Key="smartfarm/terraform.tfstate")
        assert head["ServerSideEncryption"] == "aws:kms"
        assert head["SSEKMSKeyId"] == where.s3.kms_key_id
        # terraform now reads the stack from S3: nothing to change
        done = subprocess.run(
            ["terraform", "plan", "-detailed-exitcode", "-input=false", "-no-color"],
            cwd=stack_dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert not state_file.exists()
    finally:
        server.stop()


def test_leaving_the_local_choice_for_s3_reinitialises_with_migration(
    fake_tf,  # noqa: F811
    aws,
):
    args = ["--stack-dir", str(fake_tf.stack_dir), "deploy", "--auto-approve"]
    assert CliRunner().invoke(app, [*args, "--local-state"]).exit_code == 0
    assert state_backend.local_chosen(fake_tf.stack_dir)
    result = CliRunner().invoke(app, [*args, "--state-bucket", BUCKET])
    assert result.exit_code == 0, result.output
    init = [line for line in fake_tf.argv() if line.startswith("terraform|init")][-1]
    assert f"-backend-config=bucket={BUCKET}" in init
    assert init.endswith("-migrate-state -force-copy")  # the backend changes from local
    assert not (fake_tf.stack_dir / state_backend.LOCAL_OVERRIDE).exists()
    assert state_backend.read_saved(fake_tf.stack_dir).bucket == BUCKET


def test_a_lock_file_without_this_platform_says_how_to_add_it(fake_tf, monkeypatch):  # noqa: F811
    script = fake_tf.repo.parent / "bin" / "terraform"
    script.write_text(
        script.read_text().replace(
            'case "$1" in',
            'if [ "$1" = init ]; then echo "Error: Failed to install provider: the local package'
            " for registry.terraform.io/hashicorp/aws 5.100.0 doesn't match any of the checksums"
            ' previously recorded in the dependency lock file"; exit 1; fi\ncase "$1" in',
        )
    )
    result = CliRunner().invoke(
        app, ["--stack-dir", str(fake_tf.stack_dir), "deploy", "--auto-approve", "--local-state"]
    )
    flat = " ".join(result.stderr.split())
    assert result.exit_code == 1 and flat.startswith("error: `terraform init` failed")
    assert "providers lock -platform=<os>_<arch>" in flat


def test_aws_refusing_the_bucket_is_one_line(fake_tf, aws, monkeypatch):  # noqa: F811
    from botocore.exceptions import ClientError

    def denied(*args, **kwargs):
        error = {"Error": {"Code": "AccessDenied", "Message": "not allowed"}}
        raise ClientError(error, "CreateBucket")

    monkeypatch.setattr(state_backend, "bootstrap", denied)
    result = CliRunner().invoke(
        app,
        [
            "--stack-dir",
            str(fake_tf.stack_dir),
            "deploy",
            "--auto-approve",
            "--state-bucket",
            BUCKET,
        ],
    )
    flat = " ".join(result.stderr.split())
    assert result.exit_code == 1 and flat.startswith("error: AWS denied CreateBucket")
    assert flat.count("error:") == 1 and "Traceback" not in result.output
    assert fake_tf.built == [] and fake_tf.argv() == []
