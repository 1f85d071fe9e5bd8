"""Harness for the emulated apply: a moto server, an offline Terraform CLI config, overrides.

Used by tests/test_terraform_apply.py. Nothing here changes the stack: the stack folder is
copied, and only `*_override.tf` files (which Terraform merges over the stack) are added to the
copy. Where moto itself is wrong, the fix is a patch of moto inside the server process started
here (see MOTO_PATCHES), each naming the moto behaviour it works around.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCK_FILE = ".terraform.lock.hcl"
ACCOUNT_ID = "123456789012"  # moto's default account
REGION = "ap-northeast-2"
PANDAS_LAYER_NAME = "AWSSDKPandas-Python312"

# Where a filesystem mirror of registry.terraform.io providers may live. SMARTFARM_TF_MIRROR
# wins; the others are Terraform's implied local mirror folders plus this image's /opt/tf-plugins.
MIRROR_CANDIDATES = (
    os.environ.get("SMARTFARM_TF_MIRROR", ""),
    "/opt/tf-plugins",
    "~/.terraform.d/plugins",
    "~/.local/share/terraform/plugins",
    "/usr/local/share/terraform/plugins",
    "/usr/share/terraform/plugins",
)


def find_mirror() -> tuple[Path, str, tuple[str, ...]] | None:
    """(mirror root, newest aws provider version, every version) of a filesystem mirror
    holding hashicorp/aws."""
    for candidate in MIRROR_CANDIDATES:
        if not candidate:
            continue
        root = Path(candidate).expanduser()
        binaries = (root / "registry.terraform.io/hashicorp/aws").glob(
            "*/*/terraform-provider-aws*"
        )
        versions = tuple(sorted({path.parent.parent.name for path in binaries}))
        if versions:
            return root, versions[-1], versions
    return None


def skip_reason() -> str | None:
    """Why the emulated apply cannot run on this machine (None: it can)."""
    if shutil.which("terraform") is None:
        return "no terraform binary on PATH (install Terraform >= 1.11 to run the emulated apply)"
    found = find_mirror()
    if found is None:
        return (
            "no offline mirror of the hashicorp/aws provider found (set SMARTFARM_TF_MIRROR to "
            "a folder holding registry.terraform.io/hashicorp/aws/<version>/<platform>/)"
        )
    locked = locked_version()
    if locked is not None and locked not in found[2]:
        return (
            f"the offline mirror holds hashicorp/aws {', '.join(found[2])} but "
            f"terraform/{LOCK_FILE} pins {locked} (mirror that version, or point "
            "SMARTFARM_TF_MIRROR at a mirror that has it)"
        )
    return None


def write_cli_config(path: Path, mirror: Path) -> Path:
    """A CLI config that installs registry providers from the mirror and never from the network."""
    path.write_text(
        textwrap.dedent(
            f"""\
            provider_installation {{
              filesystem_mirror {{
                path    = "{mirror}"
                include = ["registry.terraform.io/*/*"]
              }}
              direct {{
                exclude = ["registry.terraform.io/*/*"]
              }}
            }}
            """
        ),
        encoding="utf-8",
    )
    return path


def locked_version() -> str | None:
    """The hashicorp/aws version terraform/.terraform.lock.hcl pins (None without a lock)."""
    try:
        text = (REPO / "terraform" / LOCK_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    found = re.search(
        r'provider "registry\.terraform\.io/hashicorp/aws" \{\s*version\s*=\s*"([^"]+)"', text
    )
    return found.group(1) if found else None


def copy_stack(dest: Path) -> Path:
    """Copy terraform/ with its provider lock file (without local state, .terraform, a saved
    state backend or override files) to dest/terraform."""
    target = dest / "terraform"
    shutil.copytree(
        REPO / "terraform",
        target,
        ignore=shutil.ignore_patterns(
            ".terraform", "*.tfstate*", "*_override.tf", "*.tfplan", "*.tfbackend", "*.tfvars"
        ),
    )
    return target


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Patches applied inside the moto server process (moto 5.2.x), each for a moto fault, not a
# stack fault:
# - S3 PutBucketLogging: moto's log-delivery permission check reads every target-bucket policy
#   statement's Principal as a dict (`stmt.get("Principal", {}).get("Service")`) and answers
#   HTTP 500 when a statement has `"Principal": "*"` (our DenyInsecureTransport statement, which
#   real S3 accepts); the provider then retries for minutes. The patch skips such statements,
#   which is what the check means (a "*" statement is not the logging-service grant).
# - S3 bucket-policy evaluation (IAMPolicyStatement.is_action_permitted): S3 passes no request
#   context (no aws:SecureTransport), moto's condition check lets a Bool condition on a missing
#   key pass, and a statement whose condition fails is answered DENIED whatever its Effect. So
#   our TLS-only statement (Deny when SecureTransport is false) denies every request, HTTPS or
#   not (PutObject / HeadObject answer 403). IAM's rule: a condition on a key missing from the
#   request context is false, and a statement whose condition is false does not apply; the
#   patch answers NEUTRAL for such statements.
# - API Gateway GetRestApi: AWS answers a REST API's resource policy with its quotes escaped
#   (`{\"Version\":...}`) and the provider reads it that way (it wraps the text in quotes and
#   decodes it); moto answers the policy as it was stored, so every read of
#   aws_api_gateway_rest_api_policy fails ("invalid character 'S' after top-level value"). The
#   patch answers as AWS does.
def patch_moto(setattr=setattr) -> None:
    """Apply the moto patches above (in the server process, or in-process with a pytest
    monkeypatch's setattr so they end with the test)."""
    import json

    from moto.apigateway import models as apigw_models
    from moto.iam import access_control
    from moto.s3 import models as s3_models

    def _log_permissions_enabled_policy(target_bucket, target_prefix):
        policy = target_bucket.policy
        if not policy:
            return False
        allowed = {
            f"arn:{target_bucket.partition}:s3:::{target_bucket.name}/{target_prefix or ''}*",
            f"arn:{target_bucket.partition}:s3:::{target_bucket.name}/*",
            f"arn:{target_bucket.partition}:s3:::{target_bucket.name}",
        }
        for stmt in json.loads(policy.decode())["Statement"]:
            principal = stmt.get("Principal")
            if not isinstance(principal, dict):
                continue
            if principal.get("Service") != s3_models.LOGGING_SERVICE_PRINCIPAL:
                continue
            if stmt.get("Effect") != "Allow" or "s3:PutObject" not in stmt.get("Action", []):
                continue
            if stmt.get("Resource") in allowed:
                return True
        return False

    setattr(
        s3_models.FakeBucket,
        "_log_permissions_enabled_policy",
        staticmethod(_log_permissions_enabled_policy),
    )

    original = access_control.IAMPolicyStatement.is_action_permitted

    def is_action_permitted(self, action, resource="*", principal=None, incoming=None):
        conditions = self._statement.get("Condition") or {}
        keys = {key for pairs in conditions.values() for key in pairs}
        if any(key not in (incoming or {}) for key in keys) or not self._check_conditions(incoming):
            return access_control.PermissionResult.NEUTRAL
        return original(self, action, resource, principal, incoming)

    setattr(access_control.IAMPolicyStatement, "is_action_permitted", is_action_permitted)

    rest_api_to_dict = apigw_models.RestAPI.to_dict

    def escaped_policy_to_dict(self):
        answer = rest_api_to_dict(self)
        if answer.get("policy"):
            answer["policy"] = answer["policy"].replace("\\", "\\\\").replace('"', '\\"')
        return answer

    setattr(apigw_models.RestAPI, "to_dict", escaped_policy_to_dict)


MOTO_SERVER = textwrap.dedent(
    f"""\
    import sys

    sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
    import tf_emulator

    tf_emulator.patch_moto()

    from moto.server import main

    main(sys.argv[1:])
    """
)


class MotoServer:
    """A moto server in its own process on 127.0.0.1:<free port>."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        script = workdir / "moto_server.py"
        script.write_text(MOTO_SERVER, encoding="utf-8")
        self.log = open(workdir / "moto_server.log", "w", encoding="utf-8")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, str(script), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "false"},
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"moto server did not start on {self.url}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def aws_env(endpoint: str) -> dict[str, str]:
    """Fake credentials and the emulator endpoint (boto3 and farmctl honour AWS_ENDPOINT_URL)."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",  # moto accepts any key
        "AWS_SESSION_TOKEN": "testing",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def publish_pandas_layer(endpoint: str) -> str:
    """The stack takes the AWS SDK for pandas layer as an input; publish one of that name."""
    import io
    import zipfile

    import boto3

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("python/awswrangler/__init__.py", "")
    client = boto3.client(
        "lambda",
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    layer = client.publish_layer_version(
        LayerName=PANDAS_LAYER_NAME,
        Content={"ZipFile": buf.getvalue()},
        CompatibleRuntimes=["python3.12"],
        CompatibleArchitectures=["x86_64"],
    )
    return layer["LayerVersionArn"]
