"""Where the Terraform state of the aws stack lives, and the S3 bucket that holds it (issue 16).

The state holds what Terraform manages in plain text: the simulator's API key values and the
optional shared device key among them (not the Discord webhook URL: it is ephemeral and
write-only, terraform/alerts.tf). So `farmctl deploy` keeps it in S3 (terraform/versions.tf
declares a partial `backend "s3"` with `encrypt` and `use_lockfile`), in a bucket it creates
when missing: versioned, SSE-KMS under a key of its own (or one you name), public access
blocked, owner enforced, TLS-only. The bucket, key, region and KMS key reach `terraform init` as
`-backend-config` values and are saved in the stack folder as `farmctl.s3.tfbackend`, so later
deploys and destroys (and `terraform init -backend-config=farmctl.s3.tfbackend` by hand) find
the same state.

A local state is used only when asked for (`--local-state`): farmctl then writes
`farmctl_backend_override.tf` (a `backend "local"` override, kept while the choice stands) and
Terraform's files stay 0600 (stack.run_terraform). A local state found when S3 is chosen is
moved with `terraform init -migrate-state`, checked in S3, then removed.

The parsing and planning here are standard library only; boto3 is imported by `bootstrap`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import FarmctlError, UserError

BACKEND_FILE = "farmctl.s3.tfbackend"
LOCAL_OVERRIDE = "farmctl_backend_override.tf"
LOCAL_STATE = "terraform.tfstate"
DEFAULT_PREFIX = "smartfarm"
STATE_NAME = "terraform.tfstate"
DEFAULT_REGION = "ap-northeast-2"  # the stack's own default (variables.tf `region`)
MANAGED_TAG = ("smartfarm:managed-by", "farmctl-state-bucket")
_LOCAL_MARK = "# Written by farmctl for --local-state"
WHY = "it holds API key values in plain text"

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PREFIX = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d")
_KMS_KEY = re.compile(
    r"(arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(key|alias)/[A-Za-z0-9/_-]+)"
    r"|(alias/[A-Za-z0-9/_-]+)|([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
)

Echo = Callable[[str], None]


@dataclass(frozen=True)
class StateRequest:
    """What the command line asked for (deploy / destroy options)."""

    bucket: str | None = None
    prefix: str | None = None
    kms_key: str | None = None
    local: bool = False


@dataclass(frozen=True)
class S3State:
    """The S3 backend settings farmctl passes with -backend-config (and saves)."""

    bucket: str
    key: str
    region: str
    kms_key_id: str = ""

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def settings(self) -> dict[str, str]:
        values = {"bucket": self.bucket, "key": self.key, "region": self.region}
        if self.kms_key_id:
            values["kms_key_id"] = self.kms_key_id
        return values

    def to_tfbackend(self) -> str:
        lines = [
            "# Written by farmctl deploy: where the Terraform state of this stack lives.",
            "# `terraform init -backend-config=farmctl.s3.tfbackend` uses it by hand.",
        ]
        lines += [f'{name:<10} = "{value}"' for name, value in self.settings().items()]
        return "\n".join(lines) + "\n"

    def backend_args(self, endpoint: str | None = None) -> list[str]:
        """-backend-config arguments for `terraform init` (an emulator's endpoint included)."""
        args = [f"-backend-config={name}={value}" for name, value in self.settings().items()]
        if endpoint:
            # moto / LocalStack: path-style S3 on the emulator, no real STS or metadata lookups.
            url = endpoint.strip().rstrip("/")
            args += [
                f'-backend-config=endpoints={{s3="{url}",sts="{url}",iam="{url}"}}',
                "-backend-config=use_path_style=true",
                "-backend-config=skip_credentials_validation=true",
                "-backend-config=skip_requesting_account_id=true",
                "-backend-config=skip_metadata_api_check=true",
                "-backend-config=skip_region_validation=true",
            ]
        return args


@dataclass(frozen=True)
class StatePlan:
    """Where the state will live for this command and what must happen first."""

    kind: str  # "s3" or "local"
    s3: S3State | None = None
    bootstrap: bool = False  # create / check the bucket (deploy with --state-bucket)
    migrate: bool = False  # a local state exists and moves to S3
    save: bool = False  # write farmctl.s3.tfbackend / the local override
    kms_key: str | None = None  # --state-kms-key as given

    def describe(self, stack_dir: Path) -> str:
        if self.kind == "local":
            return f"local file {Path(stack_dir) / LOCAL_STATE} (0600; --local-state)"
        assert self.s3 is not None
        return f"{self.s3.url} in {self.s3.region} (SSE-KMS, S3 lock file)"


def check_bucket_name(name: str) -> str:
    if not _BUCKET.fullmatch(name) or ".." in name or re.fullmatch(r"[\d.]+", name):
        raise UserError(
            f"--state-bucket {name!r} is not a valid S3 bucket name: use 3-63 lower-case "
            "letters, digits, dots and hyphens, e.g. smartfarm-tfstate-<account id>"
        )
    return name


def check_prefix(prefix: str) -> str:
    if not _PREFIX.fullmatch(prefix) or ".." in prefix.split("/"):
        raise UserError(
            f"--state-prefix {prefix!r} is not a usable key prefix: use letters, digits, "
            "'_', '.', '-' and '/' between parts, e.g. smartfarm/prod"
        )
    return prefix


def check_kms_key(key: str) -> str:
    if not _KMS_KEY.fullmatch(key):
        raise UserError(
            f"--state-kms-key {key!r} is not a KMS key: pass a key ARN, key id or alias/<name>"
        )
    return key


def state_key(prefix: str | None) -> str:
    return f"{check_prefix(prefix or DEFAULT_PREFIX)}/{STATE_NAME}"


def read_saved(stack_dir: Path) -> S3State | None:
    """The saved S3 settings (farmctl.s3.tfbackend), or None."""
    path = Path(stack_dir) / BACKEND_FILE
    if not path.is_file():
        return None
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        found = re.fullmatch(r'\s*([a-z_]+)\s*=\s*"([^"\\]*)"\s*', line)
        if found:
            values[found.group(1)] = found.group(2)
    try:
        saved = S3State(
            bucket=check_bucket_name(values["bucket"]),
            key=values["key"],
            region=values["region"],
            kms_key_id=values.get("kms_key_id", ""),
        )
    except (KeyError, UserError):
        raise UserError(
            f"{path} does not name a bucket, key and region: fix it, or delete it and pass "
            "--state-bucket NAME"
        ) from None
    if not _REGION.fullmatch(saved.region) or not _PREFIX.fullmatch(saved.key):
        raise UserError(f"{path} holds an invalid region or key: fix it or delete it")
    return saved


def save(stack_dir: Path, s3: S3State) -> Path:
    path = Path(stack_dir) / BACKEND_FILE
    path.write_text(s3.to_tfbackend(), encoding="utf-8")
    return path


def local_chosen(stack_dir: Path) -> bool:
    path = Path(stack_dir) / LOCAL_OVERRIDE
    try:
        return path.read_text(encoding="utf-8").startswith(_LOCAL_MARK)
    except FileNotFoundError:
        return False


def write_local_override(stack_dir: Path) -> Path:
    path = Path(stack_dir) / LOCAL_OVERRIDE
    path.write_text(
        f"{_LOCAL_MARK}: the state stays in terraform.tfstate here ({WHY}).\n"
        "# Kept while that choice stands; `farmctl deploy --state-bucket NAME` moves the state\n"
        "# to S3 and removes this file.\n"
        "terraform {\n"
        '  backend "local" {}\n'
        "}\n",
        encoding="utf-8",
    )
    return path


def remove_local_override(stack_dir: Path) -> None:
    if local_chosen(stack_dir):
        (Path(stack_dir) / LOCAL_OVERRIDE).unlink()


def local_state(stack_dir: Path) -> Path | None:
    """The local state file when one exists and is not empty (Terraform may leave `{}`)."""
    path = Path(stack_dir) / LOCAL_STATE
    try:
        return path if path.stat().st_size > 0 else None
    except FileNotFoundError:
        return None


def refusal(stack_dir: Path) -> str:
    existing = local_state(stack_dir)
    move = (
        f"; a local state exists ({existing}): --state-bucket moves it to S3"
        if existing is not None
        else ""
    )
    return (
        f"refusing to keep the Terraform state in a local file ({WHY}): pass "
        "--state-bucket NAME (farmctl creates an encrypted, versioned S3 bucket; e.g. "
        "smartfarm-tfstate-<account id>), or --local-state to accept a 0600 file in "
        f"{stack_dir}{move}"
    )


def plan(
    stack_dir: Path, request: StateRequest, region: str | None, purpose: str = "deploy"
) -> StatePlan:
    """Decide where the state lives for `purpose` (deploy or destroy); one line when unclear.

    Order: --local-state; --state-bucket (created if missing on deploy); the saved
    farmctl.s3.tfbackend; the saved local choice; else refuse (deploy) or ask (destroy).
    """
    stack_dir = Path(stack_dir)
    saved = read_saved(stack_dir)
    if request.kms_key is not None:
        check_kms_key(request.kms_key)
    if request.local and request.bucket:
        raise UserError("--local-state and --state-bucket exclude each other: pass one of them")
    if request.local:
        if saved is not None:
            raise UserError(
                f"the state of {stack_dir} lives in {saved.url} ({BACKEND_FILE}); farmctl "
                "does not move it back to a local file: drop --local-state"
            )
        return StatePlan("local", save=not local_chosen(stack_dir))
    if request.bucket:
        bucket = check_bucket_name(request.bucket)
        key = state_key(request.prefix)
        if saved is not None and (saved.bucket, saved.key) != (bucket, key):
            raise UserError(
                f"the state of {stack_dir} already lives in {saved.url} ({BACKEND_FILE}); "
                "farmctl does not move it between buckets: drop --state-bucket/--state-prefix "
                "to use it, or move the object yourself and edit that file"
            )
        s3 = S3State(
            bucket,
            key,
            saved.region if saved else (region or DEFAULT_REGION),
            saved.kms_key_id if saved else "",
        )
        return StatePlan(
            "s3",
            s3=s3,
            bootstrap=purpose == "deploy",
            migrate=local_state(stack_dir) is not None,
            save=saved is None,
            kms_key=request.kms_key,
        )
    if request.prefix is not None or request.kms_key is not None:
        raise UserError("--state-prefix and --state-kms-key go with --state-bucket NAME")
    if saved is not None:
        return StatePlan("s3", s3=saved, migrate=local_state(stack_dir) is not None)
    if local_chosen(stack_dir):
        return StatePlan("local")
    if purpose == "destroy":
        raise UserError(
            f"farmctl does not know where the state of {stack_dir} lives (no {BACKEND_FILE}): "
            "pass --state-bucket NAME (and --state-prefix) as given to deploy, or --local-state"
        )
    raise UserError(refusal(stack_dir))


# -- migration of a local state -----------------------------------------------------------------


def state_content(text: str) -> str:
    """The resources and outputs of a Terraform state document, canonical JSON.

    Terraform gives a state a new lineage when `init -migrate-state` copies it into an empty
    backend, so a copy is recognised by what it holds, not by lineage or serial.
    """
    try:
        doc = json.loads(text)
        held = {"resources": doc["resources"], "outputs": doc.get("outputs") or {}}
    except (ValueError, KeyError, TypeError):
        raise FarmctlError("a Terraform state file is not valid JSON with resources") from None
    return json.dumps(held, sort_keys=True)


def remove_migrated_local_state(stack_dir: Path, remote_text: str) -> list[Path]:
    """After `init -migrate-state`: remove the local state (and backup) once S3 holds the same
    resources."""
    path = Path(stack_dir) / LOCAL_STATE
    if state_content(remote_text) != state_content(path.read_text(encoding="utf-8")):
        raise FarmctlError(
            f"the state in S3 does not hold the resources of the local one: {path} is kept; "
            "compare both (`terraform state list`) before removing it"
        )
    removed = []
    for name in (LOCAL_STATE, LOCAL_STATE + ".backup"):
        candidate = Path(stack_dir) / name
        if candidate.is_file():
            candidate.unlink()
            removed.append(candidate)
    return removed


# -- the bucket (boto3) ---------------------------------------------------------------------------


def tls_only_policy(bucket: str, partition: str = "aws") -> str:
    arn = f"arn:{partition}:s3:::{bucket}"
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "DenyInsecureTransport",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:*",
                    "Resource": [arn, f"{arn}/*"],
                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                }
            ],
        }
    )


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    error = response.get("Error") or {}
    return str(error.get("Code") or response.get("ResponseMetadata", {}).get("HTTPStatusCode"))


def _alias_name(bucket: str) -> str:
    return "alias/farmctl/tfstate-" + bucket.replace(".", "-")


def _kms_key_arn(kms, key: str) -> str:
    try:
        meta = kms.describe_key(KeyId=key)["KeyMetadata"]
    except Exception as exc:  # botocore ClientError: NotFound, AccessDenied
        raise UserError(
            f"--state-kms-key {key}: the key cannot be read ({_code(exc)}): pass a key of "
            "this account and region that you may use"
        ) from None
    if meta.get("KeyState") != "Enabled" or meta.get("KeySpec", "SYMMETRIC_DEFAULT") != (
        "SYMMETRIC_DEFAULT"
    ):
        raise UserError(f"--state-kms-key {key} is not an enabled symmetric key: pass another key")
    return meta["Arn"]


def _state_key(kms, bucket: str, requested: str | None, echo: Echo) -> str:
    """The KMS key ARN for the state: the one asked for, else farmctl's own for this bucket."""
    if requested:
        return _kms_key_arn(kms, requested)
    alias = _alias_name(bucket)
    try:
        return kms.describe_key(KeyId=alias)["KeyMetadata"]["Arn"]
    except kms.exceptions.NotFoundException:
        pass
    meta = kms.create_key(
        Description=f"Terraform state of smartfarm in s3://{bucket} (created by farmctl)",
        KeyUsage="ENCRYPT_DECRYPT",
        KeySpec="SYMMETRIC_DEFAULT",
        Tags=[{"TagKey": MANAGED_TAG[0], "TagValue": MANAGED_TAG[1]}],
    )["KeyMetadata"]
    kms.enable_key_rotation(KeyId=meta["KeyId"])
    kms.create_alias(AliasName=alias, TargetKeyId=meta["KeyId"])
    echo(f"  created KMS key {meta['Arn']} ({alias}, yearly rotation)")
    return meta["Arn"]


def _configure(s3, bucket: str, account: str, key_arn: str, partition: str) -> None:
    owner = {"ExpectedBucketOwner": account}
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
        **owner,
    )
    s3.put_bucket_ownership_controls(
        Bucket=bucket,
        OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
        **owner,
    )
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [
                {
                    "ApplyServerSideEncryptionByDefault": {
                        "SSEAlgorithm": "aws:kms",
                        "KMSMasterKeyID": key_arn,
                    },
                    "BucketKeyEnabled": True,
                }
            ]
        },
        **owner,
    )
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}, **owner)
    s3.put_bucket_policy(Bucket=bucket, Policy=tls_only_policy(bucket, partition), **owner)


def _problems(s3, bucket: str, account: str) -> tuple[list[str], str]:
    """What an existing bucket lacks for holding the state, and its default KMS key."""
    owner = {"ExpectedBucketOwner": account}
    problems, key = [], ""
    if s3.get_bucket_versioning(Bucket=bucket, **owner).get("Status") != "Enabled":
        problems.append("versioning is not enabled")
    try:
        rules = s3.get_bucket_encryption(Bucket=bucket, **owner)[
            "ServerSideEncryptionConfiguration"
        ]["Rules"]
    except Exception:  # ServerSideEncryptionConfigurationNotFoundError
        rules = []
    default = rules[0]["ApplyServerSideEncryptionByDefault"] if rules else {}
    if not str(default.get("SSEAlgorithm", "")).startswith("aws:kms"):
        problems.append("default encryption is not SSE-KMS")
    key = default.get("KMSMasterKeyID", "")
    try:
        block = s3.get_public_access_block(Bucket=bucket, **owner)["PublicAccessBlockConfiguration"]
    except Exception:  # NoSuchPublicAccessBlockConfiguration
        block = {}
    if not all(
        block.get(flag)
        for flag in ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy",
                     "RestrictPublicBuckets")
    ):  # fmt: skip
        problems.append("public access is not fully blocked")
    return problems, key


def bootstrap(
    session, state: StatePlan, account: str, echo: Echo, partition: str = "aws"
) -> S3State:
    """Create the state bucket when missing (or check an existing one); the settings to use.

    A bucket farmctl created (tagged `smartfarm:managed-by`) is brought to the settings again, so
    a run stopped half-way finishes on the next one. A bucket of yours that farmctl did not
    create is checked, never changed: versioning, SSE-KMS and a full public access block are
    required. A bucket of another account is refused (ExpectedBucketOwner on every call).
    """
    assert state.s3 is not None
    s3_state = state.s3
    bucket = s3_state.bucket
    s3 = session.client("s3", region_name=s3_state.region)
    owner = {"ExpectedBucketOwner": account}
    exists = True
    try:
        head = s3.head_bucket(Bucket=bucket, **owner)
    except Exception as exc:  # botocore ClientError
        code = _code(exc)
        if code in ("404", "NoSuchBucket", "NotFound"):
            exists = False
        elif code in ("403", "AccessDenied", "Forbidden"):
            raise UserError(
                f"state bucket {bucket} exists but belongs to another account (or you may not "
                "read it): choose another --state-bucket name"
            ) from None
        elif code in ("301", "PermanentRedirect"):
            raise UserError(
                f"state bucket {bucket} is in another region than {s3_state.region}: pass "
                "--region with the bucket's region"
            ) from None
        else:
            raise
    else:
        found_region = head.get("BucketRegion")
        if found_region and found_region != s3_state.region:
            raise UserError(
                f"state bucket {bucket} is in {found_region}, not {s3_state.region}: pass "
                f"--region {found_region}"
            )
    kms = session.client("kms", region_name=s3_state.region)
    if not exists:
        key_arn = _state_key(kms, bucket, state.kms_key, echo)
        create = {"Bucket": bucket, "ObjectOwnership": "BucketOwnerEnforced"}
        if s3_state.region != "us-east-1":
            create["CreateBucketConfiguration"] = {"LocationConstraint": s3_state.region}
        s3.create_bucket(**create)
        s3.put_bucket_tagging(
            Bucket=bucket,
            Tagging={"TagSet": [{"Key": MANAGED_TAG[0], "Value": MANAGED_TAG[1]}]},
            **owner,
        )
        _configure(s3, bucket, account, key_arn, partition)
        echo(
            f"  created state bucket {bucket}: versioned, SSE-KMS, public access blocked, "
            "owner enforced, TLS only"
        )
        return S3State(bucket, s3_state.key, s3_state.region, key_arn)
    try:
        tags = s3.get_bucket_tagging(Bucket=bucket, **owner)["TagSet"]
    except Exception:  # NoSuchTagSet
        tags = []
    if {"Key": MANAGED_TAG[0], "Value": MANAGED_TAG[1]} in tags:
        key_arn = _state_key(kms, bucket, state.kms_key or s3_state.kms_key_id or None, echo)
        _configure(s3, bucket, account, key_arn, partition)
        echo(f"  state bucket {bucket} (farmctl's): settings checked")
        return S3State(bucket, s3_state.key, s3_state.region, key_arn)
    problems, default_key = _problems(s3, bucket, account)
    if problems:
        raise UserError(
            f"state bucket {bucket} is not fit for the Terraform state ({', '.join(problems)}): "
            "fix that bucket or pass a new --state-bucket name (farmctl creates and configures "
            "a missing one)"
        )
    wanted = state.kms_key or s3_state.kms_key_id or default_key
    if not wanted:
        raise UserError(
            f"state bucket {bucket} encrypts with the AWS managed key: pass --state-kms-key "
            "with a key of yours"
        )
    key_arn = _kms_key_arn(kms, wanted)
    echo(f"  state bucket {bucket} (yours): versioned, SSE-KMS, public access blocked")
    return S3State(bucket, s3_state.key, s3_state.region, key_arn)


def remote_state_text(session, s3_state: S3State) -> str | None:
    """The state document in S3, or None when there is none yet."""
    s3 = session.client("s3", region_name=s3_state.region)
    try:
        body = s3.get_object(Bucket=s3_state.bucket, Key=s3_state.key)["Body"]
    except Exception as exc:  # NoSuchKey
        if _code(exc) in ("NoSuchKey", "404"):
            return None
        raise
    return body.read().decode("utf-8")


def check_migration(stack_dir: Path, remote: str | None, s3_state: S3State) -> None:
    """Refuse to copy a local state over a different state already in S3 (the same content,
    left by a migration stopped before the local file was removed, may be copied again)."""
    if remote is None:
        return
    path = Path(stack_dir) / LOCAL_STATE
    if state_content(remote) != state_content(path.read_text(encoding="utf-8")):
        raise UserError(
            f"both {path} and {s3_state.url} hold a Terraform state, and they differ: "
            "farmctl overwrites neither; pick another --state-prefix, or remove the one you "
            "do not need"
        )


def endpoint_of(env: Mapping[str, str]) -> str | None:
    from .stack import ENDPOINT_ENV

    return (env.get(ENDPOINT_ENV) or "").strip() or None
