"""What farmctl prints, as a user sees it: at 80 and 200 columns, piped, and as -o json / csv.

Tables show the columns that matter first, never cut a number, a time or an id short of its
ellipsis, say so when empty; device input is plain text; machine output is always valid.
"""

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from smartfarm_cli import terminal
from smartfarm_cli.cli import app

NOW = datetime.now(UTC).replace(second=0, microsecond=0)


def reading(minutes_ago: int, **values) -> dict:
    base = {
        "greenhouse_id": "gh-north",
        "device_id": "probe-07",
        "timestamp": (NOW - timedelta(minutes=minutes_ago)).isoformat(),
        "temperature": 21.5,
        "humidity": 55.25,
        "co2": 656.4,
        "error_code": 0,
    }
    return {**base, **values}


@pytest.fixture
def home(tmp_path):
    lines = [
        reading(30),
        reading(20, temperature=400, co2=12345.678),  # impossible temperature and CO2
        reading(10, device_id="probe-08", temperature=None, humidity=None, co2=None, error_code=4),
        reading(5, greenhouse_id="gh-south", co2=1999.9),
    ]
    data = "\n".join(json.dumps(line) for line in lines) + "\n"
    result = CliRunner().invoke(app, ["--home", str(tmp_path / "h"), "ingest", "-"], input=data)
    assert result.exit_code == 0, result.output
    return tmp_path / "h"


@pytest.fixture(params=[80, 200])
def width(request, monkeypatch):
    monkeypatch.setattr(terminal.console.real, "width", request.param)
    return request.param


def farmctl(home, *args, input=None):
    result = CliRunner().invoke(app, ["--home", str(home), *args], input=input)
    assert result.exit_code == 0, result.output
    return result


def body_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_spikes_fit_the_terminal_and_cut_nothing(home, width):
    out = farmctl(home, "spikes").stdout
    assert all(len(line) <= width for line in out.splitlines())
    for whole in ("400.00 °C", "12345.68 ppm", "error 4", "gh-north", "probe-08", "critical"):
        assert whole in out
    stamp = (NOW - timedelta(minutes=20)).strftime("%Y-%m-%d %H:%M:%S")
    assert stamp in out
    assert "source" not in out  # keys only with --wide
    wide = farmctl(home, "spikes", "--wide").stdout
    assert "outside" in wide and "logs/year=" in wide


def test_latest_shows_whole_numbers(home, width):
    out = farmctl(home, "latest").stdout
    assert all(len(line) <= width for line in out.splitlines())
    for whole in ("12345.68", "1999.90", "55.25", "400.00", "gh-south", "probe-07"):
        assert whole in out


def test_query_headers_are_names_and_numbers_whole(home, width):
    out = farmctl(home, "query", 'SELECT count(*), min("timestamp"), max(co2) FROM readings').stdout
    header = body_lines(out)[0].split()
    assert header == ["count", "min_timestamp", "max_co2"]
    assert "12345.68" in out
    as_json = json.loads(
        farmctl(home, "query", "SELECT count(*), max(co2) FROM readings", "-o", "json").stdout
    )
    assert as_json == [{"count": 4, "max_co2": 12345.678}]


def test_empty_results_say_so_and_stay_valid_machine_output(home):
    table = farmctl(home, "spikes", "--since", "1m")
    assert table.stdout == "" and "no spikes in the last 1m" in table.stderr
    assert json.loads(farmctl(home, "spikes", "--since", "1m", "-o", "json").stdout) == []
    assert json.loads(farmctl(home, "trend", "co2", "--days", "0.0001", "-o", "json").stdout) == []
    header = farmctl(home, "spikes", "--since", "1m", "-o", "csv").stdout
    assert header.splitlines() == [header.splitlines()[0]] and header.startswith("timestamp,")


def test_trend_shows_a_summary_per_greenhouse_not_every_bucket(home, width):
    out = farmctl(home, "trend", "co2", "--days", "1", "--every", "1m").stdout
    rows = [line for line in body_lines(out) if line.lstrip().startswith("gh-")]
    summary = [line for line in rows if "gh-north" in line or "gh-south" in line]
    assert len(summary) >= 2  # one row per greenhouse (chart legend lines may add more)
    full = farmctl(home, "trend", "co2", "--days", "1", "--every", "1m", "--table").stdout
    assert full.count("gh-north") >= 2  # every bucket of gh-north


def test_trend_chart_uses_a_marker_per_greenhouse_and_readable_time_labels(tmp_path):
    home = tmp_path / "h"
    farmctl(home, "backfill", "--days", "1", "-g", "3", "-d", "1", "--every", "10m")
    out = farmctl(home, "trend", "temperature", "--days", "1", "--synthetic", "include").stdout
    assert "• gh-1" in out and "x gh-2" in out and "+ gh-3" in out
    labels = (NOW - timedelta(hours=12)).strftime("%m-%d")
    assert labels in out or NOW.strftime("%m-%d") in out


def test_device_input_is_plain_text(tmp_path, width):
    evil = [
        '{"greenhouse_id": "[/bold]", "device_id": "d", "timestamp": 1}',
        '{"greenhouse_id": "[link=https://evil.example]click", "device_id": "x"}',
        '{"greenhouse_id": "gh\\u001b[31mred\\u0007", "device_id": "x"}',
    ]
    result = farmctl(tmp_path / "h", "ingest", "-", "--wide", input="\n".join(evil))
    assert "\x1b]8;" not in result.output  # no OSC-8 hyperlink
    assert "\x1b[31m" not in result.output and "\x07" not in result.output
    rejected = farmctl(tmp_path / "h", "rejected", "--wide")
    assert "\x1b" not in rejected.stdout
    if width == 200:  # at 80 the raw input is folded over several lines
        assert "[/bold]" in rejected.stdout and "[link=https://evil.example]" in rejected.stdout
    machine = json.loads(farmctl(tmp_path / "h", "rejected", "-o", "json").stdout)
    assert {r["raw"] for r in machine} == set(evil)  # json keeps the input exactly


def test_ingest_rejections_show_the_line_and_keep_the_whole_input(tmp_path):
    long_line = json.dumps({"greenhouse_id": "g", "note": "x" * 300})
    data = json.dumps(reading(1)) + "\n\n" + long_line + "\n"
    result = CliRunner().invoke(
        app, ["--home", str(tmp_path / "h"), "ingest", "-", "-o", "json"], input=data
    )
    rows = json.loads(result.stdout)
    assert rows[0]["input"] == long_line
    as_csv = list(
        csv.DictReader(
            io.StringIO(
                CliRunner()
                .invoke(
                    app, ["--home", str(tmp_path / "h2"), "ingest", "-", "-o", "csv"], input=data
                )
                .stdout
            )
        )
    )
    assert as_csv[0]["input"] == long_line


def test_status_json_is_one_object_with_typed_values(home):
    info = json.loads(farmctl(home, "status", "-o", "json").stdout)
    assert info["target"] == "local" and info["lake_readings"] == 4
    assert info["interrupted_delivery"] is False and isinstance(info["delivery_lag_s"], float)
    assert info["newest_lake_reading"].endswith("Z")
    table = farmctl(home, "status").stdout
    assert "lake readings" in table and "interrupted delivery" in table


def test_status_table_shows_a_long_home_whole_at_80_columns(tmp_path, monkeypatch):
    monkeypatch.setattr(terminal.console.real, "width", 80)
    home = tmp_path / ("farm-" * 12) / "home"
    farmctl(home, "backfill", "--days", "0.05", "-g", "1", "-d", "1")
    table = farmctl(home, "status").stdout
    assert "…" not in table and max(len(line) for line in table.splitlines()) <= 80
    assert str(home.resolve()) in "".join(line.strip() for line in table.splitlines())
    assert "synthetic spikes today" in table
    info = json.loads(farmctl(home, "status", "-o", "json").stdout)
    assert info["spikes_today_utc"] == info["synthetic_spikes_today"] == 0  # none: 0, not null


def test_spikes_table_marks_synthetic_devices_with_a_footnote(tmp_path, home, width):
    generated = tmp_path / "generated"
    farmctl(generated, "backfill", "--days", "0.5", "-g", "2", "-d", "1", "--anomaly-rate", "0.05")
    table = farmctl(generated, "spikes", "--since", "2d").stdout
    rows = [line for line in body_lines(table) if " gh-" in line]
    assert rows and all("dev-1*" in line for line in rows)
    assert all(len(line) <= width for line in table.splitlines())
    assert "* synthetic readings (simulate, demo, backfill)" in table
    as_json = json.loads(farmctl(generated, "spikes", "--since", "2d", "-o", "json").stdout)
    assert {row["device_id"] for row in as_json} == {"dev-1"}  # machine output: the real id
    devices_own = farmctl(home, "spikes", "--since", "2d").stdout  # ingested: not synthetic
    assert "probe-07" in devices_own and "*" not in devices_own


def test_alerts_fit_the_terminal_and_say_when_there_are_none(home, tmp_path, width):
    table = farmctl(home, "alerts").stdout
    assert "…" not in table and all(len(line) <= width for line in table.splitlines())
    for whole in ("gh-north", "probe-07", "impossible", "temperature", "opened (UTC)"):
        assert whole in table
    assert "400" in farmctl(home, "alerts", "--wide").stdout  # the worst value, with --wide
    empty = tmp_path / "empty"
    farmctl(empty, "backfill", "--days", "0.05", "-g", "1", "-d", "1")  # history: no alerts
    none = farmctl(empty, "alerts", "--since", "1h")
    assert none.stdout == ""
    assert "no open incidents and no incident history in the last 1h" in none.stderr
    assert "no open incidents" in farmctl(empty, "alerts", "--state", "open").stderr


def test_trend_window_reads_as_words(home):
    trend = farmctl(home, "trend", "humidity", "--days", "1", "--greenhouse", "gh-south")
    assert "last day" in trend.stdout and "last 1 days" not in trend.stdout + trend.stderr


def test_a_long_summary_line_is_not_hard_wrapped_when_piped(tmp_path):
    home = tmp_path / ("a-long-home-folder-name-" * 4)
    result = farmctl(home, "backfill", "--days", "0.1", "-g", "1", "-d", "1")
    assert len(result.stdout.strip().splitlines()) == 1
