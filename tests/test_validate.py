import math
from datetime import UTC, datetime

import pytest

from smartfarm_cli.core.validate import (
    parse_json_lines,
    parse_timestamp_ms,
    partition_prefix,
    validate,
)

NOW_MS = int(datetime(2026, 11, 28, 12, tzinfo=UTC).timestamp() * 1000)


def reading(**overrides):
    base = {
        "greenhouse_id": "gh-1",
        "device_id": "dev_1",
        "timestamp": "2026-11-28T10:00:00Z",
        "temperature": 21.5,
        "humidity": 60,
        "co2": 800,
        "error_code": 0,
    }
    base.update(overrides)
    return base


def test_seed_style_strings_are_normalised():
    batch = validate(
        [reading(temperature="400", humidity="55.5", co2=" 900 ", error_code="1")], NOW_MS
    )
    assert batch.rejected == []
    row = batch.accepted.to_pylist()[0]
    assert (row["temperature"], row["humidity"], row["co2"], row["error_code"]) == (
        400.0,
        55.5,
        900.0,
        1,
    )


@pytest.mark.parametrize(
    ("value", "expected_ms"),
    [
        ("2026-11-28T10:00:00Z", 1795860000000),
        ("2026-11-28T19:00:00+09:00", 1795860000000),
        ("2026-11-28T10:00:00.250Z", 1795860000250),
        (1795860000, 1795860000000),
        (1795860000.5, 1795860000500),
        (1795860000000, 1795860000000),
        ("1795860000000", 1795860000000),
    ],
)
def test_timestamp_forms(value, expected_ms):
    assert parse_timestamp_ms(value) == expected_ms


@pytest.mark.parametrize(
    ("bad", "reason_part"),
    [
        (reading(timestamp="2026-11-28 10:00:00"), "no UTC offset"),
        (reading(timestamp="yesterday"), "not ISO-8601"),
        (reading(timestamp=True), "timestamp must be"),
        (reading(timestamp="1999-12-31T23:59:59Z"), "before 2000"),
        (reading(timestamp="2026-11-28T13:00:00Z"), "in the future"),
        (reading(temperature="hot"), "temperature must be a number"),
        (reading(temperature=math.nan), "finite"),
        (reading(humidity="inf"), "humidity must be a number"),
        (reading(humidity="1e999"), "finite"),
        (reading(co2=[1]), "co2 must be a number"),
        (reading(error_code="1.5"), "whole number"),
        (reading(error_code=False), "boolean"),
        (reading(greenhouse_id="gh 1"), "greenhouse_id must be"),
        (reading(device_id="x" * 65), "device_id must be"),
        (reading(device_id=7), "device_id must be a string"),
        (reading(temperature=None), "temperature is required when error_code is 0"),
        ({"greenhouse_id": "gh-1"}, "missing field(s): device_id"),
        ("not an object", "must be a JSON object"),
    ],
)
def test_bad_readings_rejected_with_reason_and_neighbours_kept(bad, reason_part):
    batch = validate([reading(device_id="before"), bad, reading(device_id="after")], NOW_MS)
    assert [r.index for r in batch.rejected] == [1]
    assert reason_part in batch.rejected[0].reason
    assert batch.accepted["device_id"].to_pylist() == ["before", "after"]


def test_null_metric_allowed_when_sensor_reports_error():
    batch = validate([reading(temperature=None, error_code="3")], NOW_MS)
    assert batch.rejected == []
    assert batch.accepted.to_pylist()[0]["temperature"] is None


def test_extra_fields_are_ignored():
    batch = validate([reading(firmware="1.2")], NOW_MS)
    assert batch.accepted.num_rows == 1 and batch.rejected == []


def test_parse_json_lines_keeps_bad_lines_in_place():
    text = '{"a": 1}\nnot json\n\n[1, 2]\n'
    items = parse_json_lines(text)
    batch = validate(items, NOW_MS)
    assert [r.index for r in batch.rejected] == [0, 1, 2]
    assert "line 2 is not valid JSON" in batch.rejected[1].reason


def test_parse_json_array_and_single_object():
    assert parse_json_lines('[{"a": 1}, {"a": 2}]') == [{"a": 1}, {"a": 2}]
    assert parse_json_lines('{"a": 1}') == [{"a": 1}]


def test_partition_prefix_uses_event_time():
    assert partition_prefix(1795860000000) == "logs/year=2026/month=11/day=28/hour=10/"


def test_readme_field_table_matches_the_schema():
    import re
    from pathlib import Path

    from smartfarm_cli.core.schema import COLUMN_NAMES

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    table = readme.split("### The reading", 1)[1].split("\n\n", 2)[1]
    assert tuple(re.findall(r"^\| `(\w+)` \|", table, re.M)) == COLUMN_NAMES
