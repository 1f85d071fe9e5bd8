"""The aws stack's outputs are not taken on trust (issue 16 item 2): the cache file's owner and
mode, the API URLs in it, the API's owner, and a default home outside the working folder."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from moto import mock_aws
from typer.testing import CliRunner

from smartfarm_cli import stack
from smartfarm_cli.cli import app
from smartfarm_cli.errors import FarmctlError
from smartfarm_cli.stack import OUTPUT_KEYS, check_api_urls, check_cache_file, save_outputs
from smartfarm_cli.targets import TargetOptions, resolve_name
from smartfarm_cli.targets.aws import AwsTarget
from smartfarm_cli.targets.local import default_home

REGION = "ap-northeast-2"
GOOD = {
    "region": REGION,
    "ingest_api_url": f"https://a1b2c3d4e5.execute-api.{REGION}.amazonaws.com/v1/records",
    "ingest_record_url": f"https://a1b2c3d4e5.execute-api.{REGION}.amazonaws.com/v1/record",
    "simulator_api_url": f"https://f6g7h8i9j0.execute-api.{REGION}.amazonaws.com/v1/",
}
SIMULATOR_KEY = "sim-KEY-must-stay-home-0123456789"


def one_line_error(result, code: int, text: str) -> None:
    flat = " ".join(result.output.split())
    assert result.exit_code == code, result.output
    assert flat.lower().startswith("error: ") and flat.lower().count("error:") == 1, result.output
    assert text in flat and "Traceback" not in result.output, result.output


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "SMARTFARM_HOME": str(tmp_path / "home"),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_REGION", raising=False)
    return tmp_path / "home"


# -- the cache file ------------------------------------------------------------------------------


def test_save_outputs_writes_0600_whatever_the_umask(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "aws-outputs.json").write_text("{}")
    (home / "aws-outputs.json").chmod(0o666)
    old = os.umask(0o000)
    try:
        path = save_outputs(home, GOOD)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == GOOD
    check_cache_file(path)  # what farmctl writes, farmctl accepts


def test_save_outputs_does_not_write_through_a_planted_temp_link(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    (home / "aws-outputs.json.tmp").symlink_to(victim)
    save_outputs(home, GOOD)
    assert victim.read_text() == "untouched"


@pytest.mark.parametrize(
    ("mode", "why"),
    [
        (0o664, "writable by group (mode 0664)"),
        (0o646, "writable by others (mode 0646)"),
        (0o666, "writable by group and others (mode 0666)"),
    ],
)
def test_group_or_world_writable_cache_is_refused_with_one_line(aws_env, mode, why):
    path = save_outputs(aws_env, GOOD)
    path.chmod(mode)
    for args in (["status"], ["--target", "aws", "status"], ["simulate"]):
        result = CliRunner().invoke(app, args)
        one_line_error(result, 1, "refusing the stack outputs cache")
        flat = " ".join(result.output.split())
        assert f"it is {why}" in flat and "farmctl deploy" in flat
    with pytest.raises(FarmctlError, match="writable"):
        resolve_name(TargetOptions())


def test_cache_owned_by_another_user_is_refused(aws_env, monkeypatch):
    path = save_outputs(aws_env, GOOD)
    if os.getuid() == 0:
        os.chown(path, 4242, 4242)  # really another owner
    else:
        monkeypatch.setattr(os, "getuid", lambda: os.stat(path).st_uid + 1)
    result = CliRunner().invoke(app, ["status"])
    one_line_error(result, 1, "it is owned by another user (uid")


def test_symlinked_cache_is_refused(aws_env, tmp_path):
    elsewhere = save_outputs(tmp_path / "elsewhere", GOOD)
    aws_env.mkdir()
    (aws_env / "aws-outputs.json").symlink_to(elsewhere)
    result = CliRunner().invoke(app, ["status"])
    one_line_error(result, 1, "it is a symlink")


def test_discord_test_on_a_refused_cache_is_one_line_too(aws_env):
    save_outputs(aws_env, GOOD).chmod(0o666)
    result = CliRunner().invoke(app, ["discord", "test"])
    one_line_error(result, 1, "refusing the stack outputs cache")


# -- the API URLs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://f6g7h8i9j0.execute-api.ap-northeast-2.amazonaws.com/v1/",  # clear text
        "https://evil.example/v1/",
        "https://f6g7h8i9j0.execute-api.ap-northeast-2.amazonaws.com.evil.example/v1/",
        "https://f6g7h8i9j0.execute-api.ap-northeast-2.amazonaws.com:8443/v1/",
        "https://user@f6g7h8i9j0.execute-api.ap-northeast-2.amazonaws.com/v1/",
        "https://short.execute-api.ap-northeast-2.amazonaws.com/v1/",
        "https://f6g7h8i9j0.execute-api.ap-northeast-2.amazonaws.com/v1/?x=1",
        "http://127.0.0.1:9/v1/",  # loopback without the emulator opt-in
        "file:///etc/hostname",
        "",
    ],
)
def test_only_execute_api_urls_are_accepted(url):
    with pytest.raises(
        FarmctlError, match=r"simulator_api_url is not an https://<id>\.execute-api"
    ):
        check_api_urls(GOOD | {"simulator_api_url": url}, "test")


def test_api_url_in_another_region_is_refused():
    other = "https://f6g7h8i9j0.execute-api.us-east-1.amazonaws.com/v1/"
    with pytest.raises(FarmctlError, match="is in region us-east-1, the stack in ap-northeast-2"):
        check_api_urls(GOOD | {"simulator_api_url": other}, "test")


def test_good_urls_pass_including_china_partition():
    check_api_urls(GOOD, "test")
    cn = {
        "region": "cn-north-1",
        "simulator_api_url": "https://f6g7h8i9j0.execute-api.cn-north-1.amazonaws.com.cn/v1/",
    }
    check_api_urls(cn, "test")
    assert stack.api_id(GOOD["simulator_api_url"]) == "f6g7h8i9j0"
    assert stack.api_id("http://127.0.0.1:4566/restapis/x/v1/") is None


@pytest.mark.parametrize("variable", ["SMARTFARM_EMULATOR_URL", "AWS_ENDPOINT_URL"])
def test_emulator_opt_in_accepts_its_own_loopback_origin_only(variable):
    env = {variable: "http://127.0.0.1:4566"}
    on_emulator = "http://127.0.0.1:4566/restapis/f6g7h8i9j0/v1/_user_request_/"
    check_api_urls(GOOD | {"simulator_api_url": on_emulator}, "test", env)
    check_api_urls(GOOD, "test", env)  # terraform's computed URLs still pass
    for url in ("http://127.0.0.1:4567/v1/", "http://localhost:4566/v1/", "https://evil.example/"):
        with pytest.raises(FarmctlError, match="SMARTFARM_EMULATOR_URL"):
            check_api_urls(GOOD | {"simulator_api_url": url}, "test", env)


def test_a_non_loopback_endpoint_is_no_opt_in():
    env = {"AWS_ENDPOINT_URL": "http://10.1.2.3:4566"}
    with pytest.raises(FarmctlError):
        check_api_urls(GOOD | {"simulator_api_url": "http://10.1.2.3:4566/v1/"}, "test", env)
    assert stack.emulator_origin(env) is None
    assert stack.emulator_origin({"SMARTFARM_EMULATOR_URL": "http://[::1]:80"}) == (
        "http",
        "::1",
        80,
    )


def test_simulate_never_sends_the_key_to_a_planted_url(aws_env, httpserver):
    """The reproduced attack: a cache pointing the simulator at a plain-http server."""
    httpserver.expect_request("/v1/").respond_with_json({"run_id": "x"}, status=202)
    with mock_aws():
        import boto3

        apigw = boto3.client("apigateway", region_name=REGION)
        key_id = apigw.create_api_key(name="sim", value=SIMULATOR_KEY, enabled=True)["id"]
        outputs = GOOD | {
            "simulator_api_url": httpserver.url_for("/v1/"),
            "simulator_api_key_id": key_id,
        }
        save_outputs(aws_env, outputs)
        result = CliRunner().invoke(app, ["simulate"])
    one_line_error(result, 1, "simulator_api_url is not an https://<id>.execute-api")
    assert httpserver.log == [] and SIMULATOR_KEY not in result.output


def test_simulate_refuses_an_api_that_is_not_in_this_account(aws_env):
    """Right shape, right region, but someone else's API: the key is not fetched nor sent."""
    with mock_aws():
        import boto3

        apigw = boto3.client("apigateway", region_name=REGION)
        key_id = apigw.create_api_key(name="sim", value=SIMULATOR_KEY, enabled=True)["id"]
        fetched = []
        original = AwsTarget._api_key
        AwsTarget._api_key = lambda self, output: fetched.append(output) or original(self, output)
        try:
            save_outputs(aws_env, GOOD | {"simulator_api_key_id": key_id})
            result = CliRunner().invoke(app, ["simulate"])
        finally:
            AwsTarget._api_key = original
        one_line_error(result, 1, "names REST API f6g7h8i9j0, which does not exist in this account")
        assert fetched == []

        own = apigw.create_rest_api(name="pseudo_api_gw")["id"]
        url = f"https://{own}.execute-api.{REGION}.amazonaws.com/v1/"
        save_outputs(aws_env, GOOD | {"simulator_api_url": url, "simulator_api_key_id": key_id})
        target = AwsTarget(TargetOptions(name="aws"))
        assert target._own_api_url("simulator_api_url") == url


def test_terraform_outputs_with_a_bad_url_are_refused_and_not_cached(
    aws_env, tmp_path, monkeypatch
):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "terraform"
    bad = GOOD | {"simulator_api_url": "http://evil.example/"}
    fake.write_text(
        "#!/bin/sh\ncat <<'EOF'\n"
        + json.dumps({k: {"value": v, "sensitive": False} for k, v in bad.items()})
        + "\nEOF\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin")
    (tmp_path / "terraform").mkdir()
    (tmp_path / "terraform" / "main.tf").write_text("# fake\n")
    result = CliRunner().invoke(app, ["--target", "aws", "--stack-dir", "terraform", "status"])
    one_line_error(result, 1, "refusing the stack outputs (terraform output in terraform)")
    assert not (aws_env / "aws-outputs.json").exists()


# -- the default home --------------------------------------------------------------------------


def test_default_home_is_the_user_data_folder_not_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_home() == tmp_path / "data" / "smartfarm"
    monkeypatch.setenv("SMARTFARM_HOME", str(tmp_path / "explicit"))
    assert default_home() == tmp_path / "explicit"


def test_a_planted_working_folder_cache_no_longer_picks_the_target(tmp_path, monkeypatch):
    """`farmctl` in an untrusted folder: its ./.smartfarm is not read unless asked for."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    planted = tmp_path / ".smartfarm"
    save_outputs(planted, {key: "x" for key in OUTPUT_KEYS} | GOOD)
    assert resolve_name(TargetOptions()) == "local"
    (tmp_path / "data" / "smartfarm").mkdir(parents=True)  # the user's own (empty) farm
    result = CliRunner().invoke(app, ["status", "-o", "json"])
    assert result.exit_code == 0, result.output
    assert "no longer read by default" in result.output and "--home .smartfarm" in result.output
    status = json.loads(result.stdout)  # the note goes to stderr
    assert status["target"] == "local"
    assert Path(status["home"]) == tmp_path / "data" / "smartfarm"
    # Asked for explicitly, it is used (and checked) as before.
    assert resolve_name(TargetOptions(home=planted)) == "aws"
    monkeypatch.setenv("SMARTFARM_HOME", str(planted))
    assert resolve_name(TargetOptions()) == "aws"


# -- local Terraform state and plan files (issue 16 item 1, the local part) ---------------------


def test_terraform_runs_leave_state_and_plan_files_private(tmp_path, monkeypatch):
    """Local state holds API key values: 0600, whatever the umask."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "terraform"
    fake.write_text(
        "#!/bin/sh\n"
        'echo \'{"secret": "hunter2"}\' > terraform.tfstate\n'
        "echo plan > farmctl.tfplan\n"
        "echo fine\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin")
    stack_dir = tmp_path / "terraform"
    stack_dir.mkdir()
    old_backup = stack_dir / "terraform.tfstate.backup"
    old_backup.write_text("{}")
    old_backup.chmod(0o644)  # left readable by a run before this fix
    old = os.umask(0o022)
    try:
        lines: list[str] = []
        assert stack.run_terraform(["apply"], stack_dir, lines.append) == 0
    finally:
        os.umask(old)
    assert lines == ["fine"]
    for name in ("terraform.tfstate", "farmctl.tfplan", "terraform.tfstate.backup"):
        assert stat.S_IMODE((stack_dir / name).stat().st_mode) == 0o600, name
    assert os.umask(old) == old  # farmctl's own umask is untouched
