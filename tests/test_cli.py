import csv
import io
import json
import re
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from smartfarm_cli.cli import app
from smartfarm_cli.core.generator import ANOMALY_KINDS
from smartfarm_cli.targets.local import LocalTarget

runner = CliRunner()


def farmctl(home, *args, input=None):
    result = runner.invoke(app, ["--home", str(home), *args], input=input, env={"COLUMNS": "160"})
    assert "Traceback" not in result.output, result.output
    return result


def test_help_loads_no_heavy_library():
    code = (
        "import sys\n"
        "from smartfarm_cli.cli import app\n"
        "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = {'boto3', 'botocore', 'awswrangler', 'pandas', 'duckdb', 'pyarrow', 'sqlglot'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert "simulate" in out.stdout and "send-fake-logs" in out.stdout


@pytest.mark.parametrize(
    "command",
    [
        ["latest", "-o", "json"],
        # the backfilled lake is synthetic, which trend leaves out unless asked
        ["trend", "temperature", "--days", "1", "--synthetic", "include", "-o", "json"],
        ["spikes", "--since", "7d", "-o", "json"],
        ["status", "-o", "json"],
    ],
)
def test_query_commands_import_only_what_they_use(tmp_path, command):
    """A query command needs DuckDB: not pyarrow (nor numpy), not sqlglot, which only
    checks user SQL (`farmctl query`), and not rich when it prints JSON; each costs a
    noticeable share of its start-up."""
    LocalTarget(tmp_path / "h").backfill(1, greenhouses=2, devices=1, anomaly_rate=0.01)
    code = (
        "import json, sys\n"
        "from smartfarm_cli.cli import app\n"
        "try:\n    app(sys.argv[1:])\n"
        "except SystemExit as exit:\n    code = exit.code\n"
        "heavy = {'pyarrow', 'numpy', 'sqlglot', 'pandas', 'boto3', 'awswrangler', 'rich'}\n"
        "print(json.dumps([code, sorted(m for m in sys.modules if m.split('.')[0] in heavy)]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, "--home", str(tmp_path / "h"), *command],
        capture_output=True,
        text=True,
        check=True,
    )
    *printed, last = out.stdout.strip().splitlines()
    code, loaded = json.loads(last)
    assert code == 0, out.stderr
    assert json.loads("\n".join(printed))  # a real answer came back
    assert loaded == []


def test_demo_shows_real_trend_and_every_injected_kind(tmp_path):
    home = tmp_path / "demo"
    result = farmctl(home, "demo")
    assert result.exit_code == 0, result.output
    assert "temperature, last 7 days" in result.output
    assert "temperature (°C) per greenhouse, last 7 days" in result.output
    target = LocalTarget(home)
    spikes = target.spikes("10m", limit=10_000).records()
    assert {s["rule"] for s in spikes} >= set(ANOMALY_KINDS)
    # Every spike is explained by the values of its own reading.
    for s in spikes:
        if s["rule"] == "sensor_error":
            assert s["error_code"] != 0
        elif s["rule"] == "impossible":
            assert s["temperature"] == 400.0
        elif s["rule"] == "out_of_band":
            assert s["humidity"] == 99.0 or s["temperature"] > 40
    daily = target.trend("temperature", 7, "1d", synthetic="include").records()
    assert len({r["greenhouse_id"] for r in daily}) == 4
    assert all(10 < r["avg"] < 35 for r in daily)


def test_ingest_reports_counts_and_reasons_from_stdin(tmp_path):
    now = datetime.now(UTC).isoformat()
    good = {
        "greenhouse_id": "gh-1",
        "device_id": "d1",
        "timestamp": now,
        "temperature": "400",
        "humidity": "50",
        "co2": "700",
        "error_code": "0",
    }
    text = json.dumps(good) + "\n{broken\n" + json.dumps({**good, "co2": "lots"}) + "\n"
    result = farmctl(tmp_path, "ingest", "-", input=text)
    assert result.exit_code == 0
    assert "accepted 1, rejected 2" in result.output
    assert "line 2 is not valid JSON" in result.output
    assert "co2 must be a number" in result.output
    strict = farmctl(tmp_path, "ingest", "--strict", "-", input=text)
    assert strict.exit_code == 1
    assert "accepted 0, rejected 2, 1 already stored" in strict.output  # same reading again
    spikes = farmctl(tmp_path, "spikes", "-o", "json")
    assert [s["rule"] for s in json.loads(spikes.stdout)] == ["impossible"]
    rejected = farmctl(tmp_path, "rejected", "-o", "csv")
    assert len(list(csv.DictReader(io.StringIO(rejected.stdout)))) == 4


def test_simulate_and_alias_and_status(tmp_path):
    result = farmctl(
        tmp_path, "simulate", "--count", "3", "--interval", "0", "-g", "2", "-d", "2", "--seed", "1"
    )
    assert result.exit_code == 0, result.output
    assert "sent 12 readings in 3 sends: 12 accepted, 0 rejected" in result.output
    alias = farmctl(tmp_path, "send-fake-logs", "--count", "2", "--interval", "0")
    assert "sent 2 readings in 2 sends" in alias.output
    values = json.loads(farmctl(tmp_path, "status", "-o", "json").stdout)
    assert values["stream_readings"] == 14
    assert values["lake_readings"] == 14
    assert values["pending_delivery"] == 0
    assert values["interrupted_delivery"] is False
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", values["newest_lake_reading"])
    assert values["newest_lake_reading"] == values["newest_streamed_reading"]


def test_trend_table_json_and_csv_agree(tmp_path):
    farmctl(tmp_path, "backfill", "--days", "1", "-g", "2", "-d", "1", "--every", "10m")
    every = ("--days", "1", "--every", "6h", "--synthetic", "include")  # backfill is synthetic
    table = farmctl(tmp_path, "trend", "humidity", *every)
    assert table.exit_code == 0 and "humidity (%RH)" in table.output
    as_json = json.loads(farmctl(tmp_path, "trend", "humidity", *every, "-o", "json").stdout)
    as_csv = list(
        csv.DictReader(
            io.StringIO(farmctl(tmp_path, "trend", "humidity", *every, "-o", "csv").stdout)
        )
    )
    assert len(as_json) == len(as_csv) >= 8
    assert [r["greenhouse_id"] for r in as_json] == [r["greenhouse_id"] for r in as_csv]
    assert float(as_csv[0]["avg"]) == as_json[0]["avg"]


def test_watch_shows_latest_reading_per_device(tmp_path):
    farmctl(tmp_path, "simulate", "--count", "2", "--interval", "0", "-g", "2", "--seed", "3")
    result = farmctl(tmp_path, "watch", "--duration", "0.5")
    assert result.exit_code == 0
    assert "2 devices" in result.output and "gh-2" in result.output
    # simulate's readings are synthetic, and the board says so
    assert result.output.count("dev-1*") >= 2
    assert "* synthetic readings (simulate, demo, backfill)" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["trend", "pressure"], "unknown metric 'pressure'"),
        (["trend", "co2", "--every", "90s"], "whole minutes"),
        (["spikes", "--since", "5x"], "is not a duration"),
        (["spikes", "--severity", "meh"], "unknown severity"),
        (["ingest", "nowhere.ndjson"], "no such file: nowhere.ndjson"),
        (["query", "SELEC 1"], "cannot parse the SQL"),
        (["--target", "mars", "status"], "unknown target 'mars'"),
        (["demo", "--help"], None),
    ],
)
def test_user_mistakes_end_in_one_line_with_exit_2(tmp_path, args, message):
    result = farmctl(tmp_path, *args)
    if message is None:
        assert result.exit_code == 0
        return
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_bad_rules_file_is_a_user_error(tmp_path):
    bad = tmp_path / "rules.toml"
    bad.write_text("[jump]\ntemperature = 'fast'\n")
    result = runner.invoke(app, ["--home", str(tmp_path), "--rules", str(bad), "status"])
    assert result.exit_code == 2
    assert "rules file: [jump] temperature = 'fast'" in result.output


def test_console_script_quick_exit_keeps_output_and_exit_codes(tmp_path):
    """`run` ends a read with os._exit: every row still reaches a file, errors keep their
    code, and a reader that goes away (`| head -1`) ends the command quietly (141)."""
    home = tmp_path / "h"
    LocalTarget(home).backfill(2, greenhouses=30, devices=1)
    script = [sys.executable, "-m", "smartfarm_cli.cli", "--home", str(home)]
    trend = [*script, "trend", "temperature", "--days", "3", "--synthetic", "include"]
    with open(tmp_path / "out.csv", "w") as out:
        done = subprocess.run([*trend, "-o", "csv"], stdout=out, stderr=subprocess.PIPE)
    assert done.returncode == 0, done.stderr
    lines = (tmp_path / "out.csv").read_text().splitlines()
    expected = LocalTarget(home).trend("temperature", 3, synthetic="include").rows
    assert len(lines) == 1 + len(expected) > 1_000
    missing = subprocess.run([*script[:-1], str(tmp_path / "none"), "latest"], capture_output=True)
    assert missing.returncode == 2 and b"no farm data" in missing.stderr
    head = subprocess.Popen([*trend, "-o", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head.stdout.readline()
    head.stdout.close()
    assert head.wait(timeout=60) == 141
    assert head.stderr.read() == b""
