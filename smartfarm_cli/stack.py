"""The deployed aws stack: Terraform runner and discovery of the stack's outputs.

Outputs come from `terraform output -json` in the stack folder (`terraform/` or `--stack-dir`)
and are cached after each deploy at `<home>/aws-outputs.json`; the target resolver picks `aws`
when that file exists. Outputs never hold secrets (API key values, the Discord URL and the
Grafana password live in API Gateway / SSM), so the cache is safe to keep on disk.

The outputs decide where farmctl sends the simulator's API key and which buckets and stream it
uses, so they are not taken on trust (issue 16):

- the cache is written 0600 and read only when it is a regular file owned by the current user
  and writable by nobody else (`check_cache_file`; POSIX);
- every API URL in them (`API_URL_KEYS`) must be `https://<api id>.execute-api.<region>.
  amazonaws.com[.cn]/...` in the stack's own region (`check_api_urls`), whether it came from
  the cache or from `terraform output`. The one exception is an explicit emulator: a loopback
  origin named by `$SMARTFARM_EMULATOR_URL`, else by `$AWS_ENDPOINT_URL` when that is a
  loopback URL (moto, LocalStack): API URLs on exactly that origin are accepted too.

Only the standard library here: `farmctl --help` imports nothing heavy.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from .errors import FarmctlError, UserError

CACHE_NAME = "aws-outputs.json"
API_URL_KEYS = ("ingest_api_url", "ingest_record_url", "simulator_api_url")
EMULATOR_ENV = "SMARTFARM_EMULATOR_URL"
ENDPOINT_ENVS = (EMULATOR_ENV, "AWS_ENDPOINT_URL_API_GATEWAY", "AWS_ENDPOINT_URL")
_API_URL = re.compile(
    r"https://(?P<api>[a-z0-9]{10})\.execute-api\.(?P<region>[a-z]{2}(?:-[a-z]+)+-\d)"
    r"\.amazonaws\.com(?:\.cn)?(?P<path>/[^?#\s]*)?"
)
DEFAULT_STACK_DIR = Path("terraform")
PLAN_FILE = "farmctl.tfplan"

# The contract with terraform/outputs.tf (every key the CLI may read).
OUTPUT_KEYS = (
    "region",
    "ingest_api_url",
    "ingest_api_key_id",
    "simulator_api_url",
    "simulator_api_key_id",
    "stream_name",
    "stream_arn",
    "firehose_name",
    "log_bucket",
    "spike_bucket",
    "athena_results_bucket",
    "glue_database",
    "readings_table",
    "spikes_table",
    "athena_workgroup",
    "crawler_name",
    "anomaly_function_name",
    "simulator_function_name",
    "transform_function_name",
    "alerts_dlq_url",
    "grafana_url",
    "discord_webhook_ssm_parameter",
    "ingest_api_key_ssm_parameter",
    "grafana_admin_password_ssm_parameter",
)

INSTALL_HINT = (
    "terraform is not installed or not on PATH: install Terraform >= 1.11 "
    "(https://developer.hashicorp.com/terraform/install, e.g. `brew install terraform` or the "
    "HashiCorp apt/yum repository), then run the command again"
)

Echo = Callable[[str], None]


# `AWS_ENDPOINT_URL` (what LocalStack and moto users set; boto3 honours it by itself) is passed
# to Terraform's aws provider as an override file in the stack folder, written for each
# terraform command and removed after it. One endpoint per service the stack uses.
ENDPOINT_ENV = "AWS_ENDPOINT_URL"
ENDPOINT_OVERRIDE = "farmctl_endpoint_override.tf"
ENDPOINT_SERVICES = (
    "apigateway",
    "athena",
    "cloudwatch",
    "dynamodb",
    "ec2",
    "firehose",
    "glue",
    "iam",
    "kinesis",
    "kms",
    "lambda",
    "logs",
    "route53",
    "s3",
    "sqs",
    "ssm",
    "sts",
)
_OVERRIDE_MARK = "# Written by farmctl for AWS_ENDPOINT_URL"


def endpoint_override(url: str) -> str:
    """HCL overriding the aws provider so every service the stack uses talks to `url`."""
    url = url.strip().rstrip("/")
    if not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+(/[\w.\-/]*)?", url):
        raise UserError(
            f"{ENDPOINT_ENV}={url!r} is not an http(s) URL: set it like http://localhost:4566 "
            "or unset it to deploy to AWS"
        )
    endpoints = "\n".join(f'    {name:<10} = "{url}"' for name in ENDPOINT_SERVICES)
    return (
        f"{_OVERRIDE_MARK} (an emulator such as LocalStack or moto); removed after each\n"
        "# terraform command. Path-style S3 because an emulator has no per-bucket host names.\n"
        'provider "aws" {\n'
        "  s3_use_path_style           = true\n"
        "  skip_metadata_api_check     = true\n"
        "  skip_region_validation      = true\n"
        "  endpoints {\n"
        f"{endpoints}\n"
        "  }\n"
        "}\n"
    )


@contextmanager
def endpoint_override_file(stack_dir: Path, env: Mapping[str, str]) -> Iterator[Path | None]:
    """While terraform runs: the endpoint override when `AWS_ENDPOINT_URL` is set in `env`."""
    path = Path(stack_dir) / ENDPOINT_OVERRIDE
    url = (env.get(ENDPOINT_ENV) or "").strip()
    if not url:
        _remove_override(path)  # a stale one (a killed run) must not redirect a real deploy
        yield None
        return
    path.write_text(endpoint_override(url), encoding="utf-8")
    try:
        yield path
    finally:
        _remove_override(path)


def _remove_override(path: Path) -> None:
    try:
        if path.read_text(encoding="utf-8").startswith(_OVERRIDE_MARK):
            path.unlink()
    except FileNotFoundError:
        pass


def cache_path(home: Path) -> Path:
    return Path(home) / CACHE_NAME


def check_cache_file(path: Path) -> Path:
    """Refuse (one line) a cache that is a link, not a regular file, another user's, or writable
    by group / others: whoever can write it decides where farmctl sends data and keys."""
    if os.name != "posix":
        return path
    try:
        info = path.lstat()
    except OSError as exc:
        raise FarmctlError(f"cannot read the stack outputs cache {path}: {exc.strerror}") from None
    problem = ""
    if stat.S_ISLNK(info.st_mode):
        problem = "it is a symlink"
    elif not stat.S_ISREG(info.st_mode):
        problem = "it is not a regular file"
    elif info.st_uid != os.getuid():
        problem = f"it is owned by another user (uid {info.st_uid}, you are {os.getuid()})"
    elif info.st_mode & 0o022:
        mode = stat.S_IMODE(info.st_mode)
        whom = [w for w, bit in (("group", 0o020), ("others", 0o002)) if mode & bit]
        problem = f"it is writable by {' and '.join(whom)} (mode {mode:04o})"
    if problem:
        raise FarmctlError(
            f"refusing the stack outputs cache {path}: {problem}; delete it and run "
            "`farmctl deploy` (or `farmctl --stack-dir terraform status`) to write your own"
        )
    return path


def emulator_origin(env: Mapping[str, str] | None = None) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an explicitly configured loopback emulator, or None."""
    from .core.webhook import is_loopback_host

    env = os.environ if env is None else env
    for name in ENDPOINT_ENVS:
        value = (env.get(name) or "").strip()
        if value:
            return _loopback_origin(value, is_loopback_host)
    return None


def _loopback_origin(url: str, is_loopback_host) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(url)
        host, port = (parts.hostname or "").lower(), parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not is_loopback_host(host):
        return None
    return parts.scheme, host, port or (443 if parts.scheme == "https" else 80)


def api_id(url: str) -> str | None:
    """The REST API id of an execute-api URL, or None for any other URL."""
    found = _API_URL.fullmatch(url or "")
    return found.group("api") if found else None


def check_api_urls(values: Mapping, source: str, env: Mapping[str, str] | None = None) -> None:
    """Every API URL must be the stack region's execute-api host (or the explicit emulator)."""
    region = values.get("region")
    emulator = emulator_origin(env)
    for key in API_URL_KEYS:
        url = values.get(key)
        if url is None:
            continue
        found = _API_URL.fullmatch(url) if isinstance(url, str) else None
        if found and (region is None or found.group("region") == region):
            continue
        if emulator and isinstance(url, str):
            from .core.webhook import is_loopback_host

            if _loopback_origin(url, is_loopback_host) == emulator:
                continue
        if found:
            why = f"is in region {found.group('region')}, the stack in {region}"
        else:
            why = "is not an https://<id>.execute-api.<region>.amazonaws.com/ URL"
        raise FarmctlError(
            f"refusing the stack outputs ({source}): {key} {why}; farmctl sends API keys "
            "there. Run `farmctl deploy` again, or for a local emulator set "
            f"{EMULATOR_ENV} to its loopback URL"
        )


class StackOutputs(Mapping):
    """Terraform outputs as {key: value}; a missing key ends in one line saying what to do."""

    def __init__(self, values: dict, source: str):
        self._values = dict(values)
        self.source = source

    def __getitem__(self, key: str):
        try:
            return self._values[key]
        except KeyError:
            raise FarmctlError(
                f"the stack outputs ({self.source}) have no {key!r}: the stack is older than "
                "this farmctl; run `farmctl deploy` to update it"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def optional(self, key: str):
        return self._values.get(key)


def parse_terraform_outputs(text: str) -> dict:
    """`terraform output -json` text -> {name: value}; sensitive outputs are left out."""
    try:
        raw = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise FarmctlError(f"`terraform output -json` did not print JSON ({exc.msg})") from None
    if not isinstance(raw, dict):
        raise FarmctlError("`terraform output -json` did not print a JSON object")
    # Terraform wraps every output as {"value", "type", "sensitive"}; our own cache is flat.
    # Told apart for the whole document, so a flat map output holding a key named `value`
    # (a site called "value") is not mistaken for a wrapper.
    wrapped = raw and all(
        isinstance(entry, dict) and {"value", "type"} <= entry.keys() for entry in raw.values()
    )
    if not wrapped:
        return dict(raw)
    return {name: entry["value"] for name, entry in raw.items() if not entry.get("sensitive")}


def find_terraform() -> str:
    path = shutil.which("terraform")
    if path is None:
        raise FarmctlError(INSTALL_HINT)
    return path


def terraform_env(profile: str | None = None, region: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["TF_IN_AUTOMATION"] = "1"  # shorter output, no "run terraform apply" hints
    if profile:
        env["AWS_PROFILE"] = profile
    if region:
        env["AWS_REGION"] = region
    return env


# 1.10: S3-native state locking (use_lockfile), ephemeral variables; 1.11: write-only arguments
# (the Discord webhook reaches SSM through value_wo and stays out of the state).
MIN_TERRAFORM = (1, 11)


def terraform_version(env: Mapping[str, str] | None = None) -> str:
    """`terraform version -json` -> "1.11.4"; one clear line when it cannot be read."""
    try:
        done = subprocess.run(
            [find_terraform(), "version", "-json"],
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
        version = json.loads(done.stdout)["terraform_version"]
    except (OSError, subprocess.TimeoutExpired, ValueError, KeyError, TypeError):
        raise FarmctlError(
            "cannot read the terraform version (`terraform version -json`): reinstall "
            "Terraform >= 1.11"
        ) from None
    return str(version)


def version_problem(version: str) -> str | None:
    """A line saying why this Terraform version is too old, or None."""
    numbers = tuple(int(n) for n in re.findall(r"\d+", version)[:2])
    if numbers < MIN_TERRAFORM:
        return (
            f"terraform {version} is too old: the stack needs Terraform >= "
            f"{'.'.join(map(str, MIN_TERRAFORM))} (https://developer.hashicorp.com/terraform/install)"
        )
    return None


_VARIABLE = re.compile(r'^variable\s+"([A-Za-z0-9_-]+)"\s*\{(.*?)^\}', re.S | re.M)
_ASSIGNED = re.compile(r'^\s*"?([A-Za-z0-9_-]+)"?\s*[=:]', re.M)


def required_variables(stack_dir: Path) -> list[str]:
    """Variables of the stack without a default (Terraform would prompt for them)."""
    names = []
    for path in sorted(Path(stack_dir).glob("*.tf")):
        for name, body in _VARIABLE.findall(path.read_text(encoding="utf-8")):
            if not re.search(r"^\s*default\s*=", body, re.M):
                names.append(name)
    return names


def ephemeral_variables(stack_dir: Path) -> list[str]:
    """Variables declared `ephemeral = true`: kept in neither the state nor a saved plan, so
    they must be given again when the plan is applied."""
    names = []
    for path in sorted(Path(stack_dir).glob("*.tf")):
        for name, body in _VARIABLE.findall(path.read_text(encoding="utf-8")):
            if re.search(r"^\s*ephemeral\s*=\s*true\s*$", body, re.M):
                names.append(name)
    return names


def apply_var_args(stack_dir: Path, var_file: Path | None, var_args: list[str]) -> list[str]:
    """The -var-file arguments `terraform apply PLAN` needs again: those of the plan when the
    file sets an ephemeral variable (a saved plan does not hold it; values from
    TF_VAR_<name> and terraform.tfvars are read again by Terraform itself), else none (Terraform
    1.11 warns about every other variable of a var-file given with a saved plan)."""
    if var_file is None or not Path(var_file).is_file():
        return []
    assigned = set(_ASSIGNED.findall(Path(var_file).read_text(encoding="utf-8", errors="replace")))
    return list(var_args) if assigned & set(ephemeral_variables(stack_dir)) else []


def missing_variables(stack_dir: Path, var_file: Path | None, env: Mapping[str, str]) -> list[str]:
    """Required variables set nowhere Terraform looks: -var-file, terraform.tfvars,
    *.auto.tfvars(.json) in the stack folder, or TF_VAR_<name>."""
    files = [Path(stack_dir) / "terraform.tfvars", Path(stack_dir) / "terraform.tfvars.json"]
    files += sorted(Path(stack_dir).glob("*.auto.tfvars"))
    files += sorted(Path(stack_dir).glob("*.auto.tfvars.json"))
    if var_file is not None:
        files.append(Path(var_file))
    assigned = set()
    for path in files:
        if path.is_file():
            assigned.update(_ASSIGNED.findall(path.read_text(encoding="utf-8", errors="replace")))
    return [
        name
        for name in required_variables(stack_dir)
        if name not in assigned and f"TF_VAR_{name}" not in env
    ]


def check_stack_dir(stack_dir: Path) -> Path:
    if not stack_dir.is_dir() or not any(stack_dir.glob("*.tf")):
        raise UserError(
            f"{stack_dir} is not a Terraform folder (no *.tf files): run farmctl from the "
            "repository root or pass --stack-dir"
        )
    return stack_dir


# Local files in which Terraform keeps variable values and resource attributes, secrets included
# (API key values; the webhook URL is ephemeral and write-only, so in neither): readable by their
# owner only. farmctl keeps the state in S3
# unless --local-state asks for a local file (state_backend); plan files are always local.
PRIVATE_STATE_GLOBS = ("terraform.tfstate", "terraform.tfstate.backup", "*.tfplan", "*.tfstate")


def protect_state_files(stack_dir: Path) -> list[Path]:
    """chmod 0600 every local state / plan file in the stack folder; the files it changed."""
    changed = []
    for pattern in PRIVATE_STATE_GLOBS:
        for path in sorted(Path(stack_dir).glob(pattern)):
            try:
                info = path.lstat()
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) & 0o077:
                path.chmod(0o600)
                changed.append(path)
    return changed


# Terraform failures with a known fix: (text in its output, what to do).
FAILURE_HINTS = (
    (
        "doesn't match any of the checksums previously recorded in the dependency lock file",
        "the committed .terraform.lock.hcl has no checksum of the aws provider for this "
        "platform: run `terraform -chdir=terraform providers lock -platform=<os>_<arch>` "
        "(terraform/README.md, Provider lock) and deploy again",
    ),
)


def run_terraform(
    args: list[str],
    stack_dir: Path,
    echo: Echo | None = None,
    env: dict[str, str] | None = None,
    ok_codes: tuple[int, ...] = (0,),
) -> int:
    """Run `terraform <args>` in the stack folder, streaming each output line to `echo`.

    Terraform runs with umask 077, so the state, its backup and plan files it creates are
    0600; files left readable by an older run are tightened before and after.
    """
    command = [find_terraform(), *args]
    protect_state_files(stack_dir)
    try:
        proc = subprocess.Popen(
            command,
            cwd=stack_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            umask=0o077,
        )
    except OSError as exc:
        raise FarmctlError(f"cannot run terraform: {exc.strerror or exc}") from None
    hint = ""
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if echo:
                echo(line.rstrip("\n"))
            hint = hint or next((h for mark, h in FAILURE_HINTS if mark in line), "")
        code = proc.wait()
    except KeyboardInterrupt:
        # Terraform got the same SIGINT and stops gracefully (state stays consistent): wait.
        proc.wait()
        raise
    finally:
        protect_state_files(stack_dir)
    if code not in ok_codes:
        raise FarmctlError(
            f"`terraform {args[0]}` failed (exit code {code}); "
            + (hint or "see its output above, fix the cause and run the command again")
        )
    return code


def terraform_outputs(stack_dir: Path, env: dict[str, str] | None = None) -> dict:
    """Outputs of the stack in `stack_dir` via `terraform output -json` (no streaming)."""
    try:
        done = subprocess.run(
            [find_terraform(), "output", "-json"],
            cwd=stack_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FarmctlError(f"`terraform output -json` did not run: {exc}") from None
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()
        detail = last[-1] if last else f"exit code {done.returncode}"
        raise FarmctlError(
            f"`terraform output -json` failed in {stack_dir}: {detail} "
            "(run `terraform init` there, or `farmctl deploy`)"
        )
    return parse_terraform_outputs(done.stdout)


def save_outputs(home: Path, outputs: dict) -> Path:
    """Write the cache atomically, readable and writable by its owner only (0600)."""
    path = cache_path(home)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.unlink(missing_ok=True)  # never write through a planted link or a foreign file
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(outputs, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def forget_outputs(home: Path) -> bool:
    path = cache_path(home)
    if path.exists():
        path.unlink()
        return True
    return False


def load_outputs(home: Path, stack_dir: Path | None, env: dict[str, str] | None = None):
    """The deployed stack's outputs.

    An explicit `--stack-dir` asks Terraform (and refreshes the cache); otherwise the cache
    written by the last deploy; otherwise `terraform output -json` in ./terraform when both the
    folder and the terraform binary exist. No outputs at all means no stack is deployed.
    """
    cache = cache_path(home)
    if stack_dir is None and (cache.exists() or cache.is_symlink()):
        check_cache_file(cache)
        try:
            values = parse_terraform_outputs(cache.read_text(encoding="utf-8"))
        except (OSError, FarmctlError) as exc:
            raise FarmctlError(
                f"cannot read the stack outputs cache {cache} ({exc}): delete it and run "
                "`farmctl deploy` (or pass --stack-dir)"
            ) from None
        check_api_urls(values, str(cache))
        return StackOutputs(values, str(cache))
    folder = stack_dir or DEFAULT_STACK_DIR
    if stack_dir is None and (not folder.is_dir() or shutil.which("terraform") is None):
        raise FarmctlError(
            f"no deployed aws stack is known ({cache} does not exist): run `farmctl deploy`, "
            "pass --stack-dir to a deployed Terraform folder, or use --target local"
        )
    check_stack_dir(folder)
    values = terraform_outputs(folder, env)
    if not values:
        raise FarmctlError(
            f"no aws stack is deployed from {folder} (terraform has no outputs): run "
            "`farmctl deploy` first, or use --target local"
        )
    check_api_urls(values, f"terraform output in {folder}")
    save_outputs(home, values)
    return StackOutputs(values, f"terraform output in {folder}")
