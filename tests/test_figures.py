"""Issue 15: figures checked against values worked out by hand.

Every expected value below was computed by hand from the crafted input, not by the code.
"""

import json
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from smartfarm_cli.cli import app
from smartfarm_cli.core.validate import parse_json_lines, parse_timestamp_ms, validate

runner = CliRunner()
NOW_MS = int(datetime(2026, 11, 28, 12, tzinfo=UTC).timestamp() * 1000)


def farmctl(home, *args, input=None):
    result = runner.invoke(app, ["--home", str(home), *args], input=input, env={"COLUMNS": "200"})
    assert "Traceback" not in result.output, result.output
    return result


def reading(**overrides):
    base = {
        "greenhouse_id": "gh-1",
        "device_id": "d1",
        "timestamp": "2026-11-28T10:00:00Z",
        "temperature": 21.5,
        "humidity": 60,
        "co2": 800,
        "error_code": 0,
    }
    base.update(overrides)
    return base


# -- bug 4: milliseconds exact -----------------------------------------------------------------

# 2004-05-25T06:08:35Z = 12,563 days after 1970-01-01 (34 years incl. 8 leap days + 145 days)
# = 1,085,443,200 s, plus 06:08:35 = 22,115 s -> 1,085,465,315 s; .531 s -> 1,085,465,315,531 ms.
EXACT_MS = 1_085_465_315_531


@pytest.mark.parametrize(
    "value",
    [
        "2004-05-25T06:08:35.531Z",
        "2004-05-25T15:08:35.531+09:00",
        "2004-05-25T06:08:35.531999Z",  # sub-millisecond digits are cut, never rounded up
        1085465315.531,
        "1085465315.531",
        1085465315531,
        "1085465315531",
        1085465315531.9,
    ],
)
def test_timestamps_keep_every_millisecond(value):
    assert parse_timestamp_ms(value) == EXACT_MS


def test_milliseconds_survive_validation_and_json_parsing():
    items = parse_json_lines(b'{"timestamp": 1085465315.531}\n{"timestamp": 1085465315.999}\n')
    stamps = [parse_timestamp_ms(i["timestamp"]) for i in items]
    assert stamps == [EXACT_MS, 1_085_465_315_999]
    batch = validate([reading(timestamp=1085465315.531)], NOW_MS)
    assert batch.accepted.column("timestamp").cast("int64").to_pylist() == [EXACT_MS]


def test_negative_fractions_floor_like_iso():
    # 1999-12-31T23:59:59.999Z is -1 ms before 2000 only in ms; floor keeps ISO and epoch equal.
    assert parse_timestamp_ms("1970-01-01T00:00:00.0015Z") == 1
    assert parse_timestamp_ms(-0.0015) == parse_timestamp_ms("1969-12-31T23:59:59.9985Z") == -2


# -- bug 10: numeric strings say what JSON numbers or plain decimals can say -------------------


@pytest.mark.parametrize(
    "text",
    [
        "1_000",
        "\uff14\uff10\uff10",
        "\u0664\u0660\u0660",
        "\u00a0400",
        "400\u2003",
        "0x10",
        "1e",
        ".",
        "+-1",
        "1 0",
    ],
)
def test_numeric_strings_beyond_plain_decimal_are_rejected(text):
    batch = validate([reading(co2=text)], NOW_MS)
    assert batch.accepted.num_rows == 0
    assert batch.rejected[0].reason.startswith("co2 must be a number")


@pytest.mark.parametrize(
    ("text", "value"),
    [(" 400 ", 400.0), ("+4e2", 400.0), ("-.5", -0.5), ("400.", 400.0), ("1E3", 1000.0)],
)
def test_plain_decimal_strings_are_accepted(text, value):
    batch = validate([reading(co2=text)], NOW_MS)
    assert batch.rejected == []
    assert batch.accepted["co2"].to_pylist() == [value]


def test_epoch_strings_follow_the_same_rule():
    batch = validate([reading(timestamp="1_085_465_315"), reading(timestamp="١٠٨٥٤٦٥٣١٥")], NOW_MS)
    assert [r.index for r in batch.rejected] == [0, 1]
    assert all("not ISO-8601" in r.reason for r in batch.rejected)


# -- bug 5: rejection positions are input line numbers ----------------------------------------


def test_ingest_names_the_real_line_after_blank_lines(tmp_path):
    good = json.dumps(reading(timestamp=datetime.now(UTC).isoformat()))
    lines = [
        good,
        "",
        "",
        good.replace('"d1"', '"d2"'),
        "   ",
        "{broken",
        "",
        good.replace("21.5", '"x"'),
    ]
    # Lines (1-based): 1 good, 2-3 blank, 4 good, 5 blank, 6 not JSON, 7 blank, 8 bad temperature.
    result = farmctl(tmp_path, "ingest", "-", "-o", "json", input="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["line"], r["reason"][:24]) for r in rows] == [
        (6, "line 6 is not valid JSON"),
        (8, "temperature must be a nu"),
    ]


def test_json_array_positions_stay_item_numbers(tmp_path):
    good = reading(timestamp=datetime.now(UTC).isoformat())
    text = json.dumps([good, {**good, "co2": "lots"}], indent=2)
    result = farmctl(tmp_path, "ingest", "-", "-o", "json", input=text)
    rows = json.loads(result.stdout)
    assert [(r["line"], r["reason"]) for r in rows] == [(2, "co2 must be a number, got 'lots'")]


# -- bug 1: latest returns whole readings -------------------------------------------------------


def test_latest_is_a_reading_that_existed(tmp_path):
    from smartfarm_cli.core import queries
    from smartfarm_cli.targets.local import LocalTarget

    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    healthy = reading(timestamp=t0.isoformat(), temperature=21, humidity=55, co2=410)
    fault = reading(
        timestamp=(t0 + timedelta(minutes=1)).isoformat(),
        temperature=None,
        humidity=None,
        co2=None,
        error_code=4,
    )
    other = reading(device_id="d2", timestamp=t0.isoformat(), temperature=19)
    target = LocalTarget(tmp_path)
    target.ingest([healthy, fault, other])
    rows = target.latest().records()
    stamp = (t0 + timedelta(minutes=1)).replace(tzinfo=None)
    assert [tuple(r.values()) for r in rows] == [
        ("gh-1", "d1", stamp, None, None, None, 4),
        ("gh-1", "d2", t0.replace(tzinfo=None), 19.0, 60.0, 800.0, 0),
    ]
    # One form both engines read the same way: a window function, no per-column max_by.
    sql = queries.latest_per_device().sql
    assert "max_by" not in sql and "row_number() OVER" in sql
