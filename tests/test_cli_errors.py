"""Every mistake ends in one line on stderr: exit 2 for the user's, 1 for the system's.

The cases are the ones a new user met (issue 11): each printed a traceback before.
"""

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from smartfarm_cli.cli import app


def farmctl(*args, input=None):
    return CliRunner().invoke(app, list(args), input=input)


def assert_one_line(result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture
def unwritable_dir(tmp_path) -> Path:
    """A folder this process cannot create files in (root ignores permission bits)."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir(mode=0o555)
        return folder
    for candidate in (Path("/sys/kernel"), Path("/proc/1")):
        try:
            (candidate / ".farmctl-probe").touch()
        except OSError:
            return candidate
    pytest.skip("no folder here refuses writes to root")


def test_aws_discord_test_without_a_stack():
    assert_one_line(farmctl("--target", "aws", "discord", "test"), 1, "no deployed aws stack")


@pytest.mark.parametrize("command", [["status"], ["trend", "temperature"], ["query", "SELECT 1"]])
def test_home_under_proc_is_refused(command):
    assert_one_line(farmctl("--home", "/proc/x", *command), 2, "/proc/x")


@pytest.mark.parametrize(
    "command",
    [["status"], ["ingest", "-"], ["simulate", "--count", "1", "--interval", "0"], ["demo"]],
)
def test_home_that_is_a_file(tmp_path, command):
    home = tmp_path / "a-file"
    home.write_text("not a folder")
    assert_one_line(farmctl("--home", str(home), *command, input=""), 2, "is a file")
    assert home.read_text() == "not a folder"


@pytest.mark.parametrize(
    "command", [["ingest", "-"], ["simulate", "--count", "1", "--interval", "0"], ["demo"]]
)
def test_unwritable_home(unwritable_dir, command):
    home = unwritable_dir / "home" if os.geteuid() != 0 else unwritable_dir
    result = farmctl("--home", str(home), *command, input="")
    assert_one_line(result, 2, "cannot use", "--home")


@pytest.mark.parametrize("days", ["1e7", "nan", "inf", "-inf", "0", "-1"])
def test_trend_days_out_of_range(tmp_path, days):
    (tmp_path / "home").mkdir()
    result = farmctl("--home", str(tmp_path / "home"), "trend", "temperature", "--days", days)
    assert_one_line(result, 2, "--days must be")


@pytest.mark.parametrize("sql", ["", " "])
def test_empty_query(tmp_path, sql):
    (tmp_path / "home").mkdir()
    assert_one_line(farmctl("--home", str(tmp_path / "home"), "query", sql), 2, "empty")


@pytest.mark.parametrize(
    "command",
    [
        ["status"],
        ["trend", "temperature"],
        ["spikes"],
        ["latest"],
        ["rejected"],
        ["query", "SELECT 1"],
    ],
)
def test_reading_commands_do_not_create_a_mistyped_home(tmp_path, command):
    result = farmctl("--home", str(tmp_path / "typo"), *command)
    assert_one_line(result, 2, "no farm data in", "farmctl demo")
    assert not (tmp_path / "typo").exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["trend"], "Missing argument"),
        (["simulate", "--count", "0"], "--count"),
        (["nosuch"], "No such command"),
        (["spikes", "--severity"], "requires an argument"),
    ],
)
def test_usage_errors_use_the_same_one_line_form(args, fragment):
    assert_one_line(farmctl(*args), 2, fragment, "--help")


@pytest.mark.parametrize(
    "command", [["watch"], ["simulate"], ["backfill", "--days", "1"], ["flush"]]
)
def test_aws_without_a_stack_fails_before_drawing_anything(command):
    result = farmctl("--target", "aws", *command)
    assert_one_line(result, 1, "no deployed aws stack")
    assert result.stdout == ""


def test_a_long_error_stays_one_line_when_piped(tmp_path):
    home = tmp_path / ("deep-" * 30)
    home.write_text("")
    result = farmctl("--home", str(home), "status")
    assert_one_line(result, 2, str(home))


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("[jump]\ntemperatur = 3.0\n", "unknown key 'temperatur' in [jump]"),
        ("[jump]\ntemperature = 'fast'\n", "[jump] temperature = 'fast'"),
        ("[impossible]\nco2 = [5]\n", "[impossible] co2 = [5]: must be [low, high]"),
        ("[nope]\nx = 1\n", "unknown rules section [nope]"),
    ],
)
def test_rules_file_errors_name_the_key(tmp_path, body, says):
    rules = tmp_path / "rules.toml"
    rules.write_text(body)
    (tmp_path / "home").mkdir()
    result = farmctl("--home", str(tmp_path / "home"), "--rules", str(rules), "status")
    assert_one_line(result, 2, says)


def test_zero_duration_is_not_called_not_a_duration(tmp_path):
    (tmp_path / "home").mkdir()
    result = farmctl("--home", str(tmp_path / "home"), "spikes", "--since", "0m")
    assert_one_line(result, 2, "must be more than 0")


def test_unknown_greenhouse_is_named(tmp_path):
    home = tmp_path / "home"
    assert (
        farmctl("--home", str(home), "simulate", "--count", "1", "--interval", "0").exit_code == 0
    )
    for command in (["trend", "temperature"], ["spikes"]):
        result = farmctl("--home", str(home), *command, "--greenhouse", "gh-nosuch")
        assert_one_line(result, 2, "unknown greenhouse 'gh-nosuch'")


def test_version():
    from importlib.metadata import version

    result = farmctl("--version")
    assert result.exit_code == 0 and result.stdout == f"farmctl {version('smartfarm-cli')}\n"


def test_simulate_says_where_readings_went_and_why_no_anomaly(tmp_path):
    home = tmp_path / "home"
    result = farmctl(
        "--home", str(home), "simulate", "--count", "1", "--interval", "0", "-g", "2",
        "--anomaly-rate", "1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "no anomalies with --count 1" in result.stderr
    assert f"farmctl --home {home} spikes" in result.stderr


def test_empty_ingest_warns(tmp_path):
    result = farmctl("--home", str(tmp_path / "home"), "ingest", "-", input="")
    assert result.exit_code == 0
    assert "warning: stdin held no readings" in result.stderr


def test_simulate_and_the_lambda_share_one_set_of_bounds(tmp_path):
    from smartfarm_cli.core import simulation

    body = {"count": 10_000, "interval": 0, "greenhouses": 100, "devices": 100}
    with pytest.raises(simulation.BadRequest) as refused:
        simulation.parse_body(body, budget_s=float("inf"))
    args = ["simulate", "-n", "10000", "-i", "0", "-g", "100", "-d", "100"]
    result = farmctl("--home", str(tmp_path / "home"), *args)
    assert_one_line(result, 2, str(refused.value))
    assert not (tmp_path / "home" / "stream.db").exists()
