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
        ("gh-1", "d1", stamp, None, None, None, 4, False),
        ("gh-1", "d2", t0.replace(tzinfo=None), 19.0, 60.0, 800.0, 0, False),
    ]
    # One form both engines read the same way: a window function, no per-column max_by.
    sql = queries.latest_per_device().sql
    assert "max_by" not in sql and "row_number() OVER" in sql


# -- choices 6 and 7: trend buckets in the farm's zone, window [since, now], partial marked -------


def trend_rows(target, metric="temperature", days=1.0, every="1h", zone="UTC", now=None):
    from smartfarm_cli.core import queries

    query = queries.trend(metric, days, every, now=now, zone=zone)
    result = target.run(query)
    columns, rows = queries.finish_trend(result.columns, result.rows, query)
    return [dict(zip(columns, row, strict=True)) for row in rows]


def at_utc(text, temperature=20.0, device="d1"):
    return reading(timestamp=text, temperature=temperature, device_id=device)


def shown(rows):
    return [(r["bucket"].isoformat(), r["readings"], r["avg"], r["partial"]) for r in rows]


def test_daily_buckets_start_at_the_farms_midnight(target):
    # 14:30Z is 23:30 in Seoul (UTC+9) on the 28th; 15:30Z is 00:30 on the 29th.
    target.ingest([at_utc("2026-11-28T14:30:00Z", 10), at_utc("2026-11-28T15:30:00Z", 20)])
    now = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    assert shown(trend_rows(target, days=3, every="1d", zone="Asia/Seoul", now=now)) == [
        ("2026-11-28T00:00:00+09:00", 1, 10.0, False),
        ("2026-11-29T00:00:00+09:00", 1, 20.0, True),  # the Seoul day is still running at now
    ]
    assert shown(trend_rows(target, days=3, every="1d", zone="UTC", now=now)) == [
        ("2026-11-28T00:00:00+00:00", 2, 15.0, False),
    ]


def test_buckets_across_a_dst_change(target):
    # Berlin leaves summer time on 2026-10-25: 03:00 CEST (UTC+2) becomes 02:00 CET (UTC+1).
    target.ingest(
        [
            at_utc("2026-10-24T22:00:00Z", 10),  # 00:00 CEST on the 25th
            at_utc("2026-10-25T04:30:00Z", 12),  # 05:30 CET: 00-06 wall clock is 7 real hours
            at_utc("2026-10-25T05:00:00Z", 14),  # 06:00 CET: the next 6 h bucket
            at_utc("2026-10-25T22:30:00Z", 16),  # 23:30 CET, still the 25th (a 25-hour day)
            at_utc("2026-10-25T23:00:00Z", 18),  # 00:00 CET on the 26th
        ]
    )
    now = datetime(2026, 10, 27, 0, 0, tzinfo=UTC)
    daily = trend_rows(target, days=3, every="1d", zone="Europe/Berlin", now=now)
    assert shown(daily) == [
        ("2026-10-25T00:00:00+02:00", 4, 13.0, False),  # (10 + 12 + 14 + 16) / 4
        ("2026-10-26T00:00:00+01:00", 1, 18.0, False),
    ]
    six = trend_rows(target, days=3, every="6h", zone="Europe/Berlin", now=now)
    assert shown(six) == [
        ("2026-10-25T00:00:00+02:00", 2, 11.0, False),
        ("2026-10-25T06:00:00+01:00", 1, 14.0, False),
        ("2026-10-25T18:00:00+01:00", 1, 16.0, False),
        ("2026-10-26T00:00:00+01:00", 1, 18.0, False),
    ]


def test_weekly_buckets_start_on_monday(target):
    # 2026-11-22 is a Sunday, 2026-11-23 a Monday. 15:30Z on the 22nd is Monday 00:30 in Seoul.
    target.ingest(
        [
            at_utc("2026-11-22T12:00:00Z", 10),
            at_utc("2026-11-22T15:30:00Z", 20),
            at_utc("2026-11-23T00:30:00Z", 30),
        ]
    )
    now = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    assert shown(trend_rows(target, days=14, every="1w", now=now)) == [
        # The window starts on Sunday the 15th, 12:00: the week of the 9th would be partial.
        ("2026-11-16T00:00:00+00:00", 2, 15.0, False),
        ("2026-11-23T00:00:00+00:00", 1, 30.0, True),  # this week is still running
    ]
    assert shown(trend_rows(target, days=14, every="1w", zone="Asia/Seoul", now=now)) == [
        ("2026-11-16T00:00:00+09:00", 1, 10.0, False),
        ("2026-11-23T00:00:00+09:00", 2, 25.0, True),
    ]
    # Two-week buckets are Monday-aligned too (counted from Monday 1970-01-05).
    two = trend_rows(target, days=28, every="2w", now=now)
    assert [r["bucket"].weekday() for r in two] == [0] * len(two) and len(two) >= 1


def test_window_ends_now_and_partial_buckets_are_marked(target):
    now = datetime(2026, 11, 28, 12, 30, tzinfo=UTC)  # window: 27th 12:30 .. 28th 12:30
    target.ingest(
        [
            at_utc("2026-11-27T12:20:00Z", 99),  # before the window
            at_utc("2026-11-27T12:45:00Z", 10),  # first bucket 12:00, window starts inside it
            at_utc("2026-11-27T13:10:00Z", 20),
            at_utc("2026-11-28T12:10:00Z", 30),  # the running bucket
            at_utc("2026-11-28T12:30:00Z", 40),  # exactly now: in
            at_utc("2026-11-28T12:33:00Z", 50),  # 3 min after now (accepted clock drift): out
        ]
    )
    assert shown(trend_rows(target, now=now)) == [
        ("2026-11-27T12:00:00+00:00", 1, 10.0, True),
        ("2026-11-27T13:00:00+00:00", 1, 20.0, False),
        ("2026-11-28T12:00:00+00:00", 2, 35.0, True),
    ]


@pytest.mark.parametrize(
    ("every", "zone", "suffix"),
    [("1h", None, "Z"), ("15m", None, "Z"), ("6h", "Asia/Seoul", "+09:00")],
)
def test_bucket_times_have_one_format(tmp_path, every, zone, suffix):
    import re

    stamp = (datetime.now(UTC) - timedelta(minutes=30)).isoformat()
    farmctl(tmp_path, "ingest", "-", input=json.dumps(reading(timestamp=stamp)))
    args = ["trend", "temperature", "--every", every, "-o", "json"]
    rows = json.loads(farmctl(tmp_path, *args, *(["--tz", zone] if zone else [])).stdout)
    assert rows and all(
        re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:00\.000" + re.escape(suffix), r["bucket"])
        for r in rows
    )


def test_zone_defaults_to_the_farm_zone_then_the_machine_zone(monkeypatch):
    from smartfarm_cli.core import queries

    monkeypatch.setenv("SMARTFARM_TZ", "Asia/Seoul")
    assert queries.resolve_zone(None) == "Asia/Seoul"
    assert queries.resolve_zone("Europe/Berlin") == "Europe/Berlin"
    monkeypatch.delenv("SMARTFARM_TZ")
    monkeypatch.setenv("TZ", "America/New_York")
    assert queries.resolve_zone(None) == "America/New_York"
    for bad in ("Mars/Base", "UTC'; DROP TABLE readings; --", "../../etc/passwd"):
        with pytest.raises(queries.QueryError, match="unknown time zone"):
            queries.resolve_zone(bad)


def test_unknown_zone_is_one_line_exit_2(tmp_path):
    result = farmctl(tmp_path, "trend", "temperature", "--tz", "Mars/Base")
    assert result.exit_code == 2 and "unknown time zone 'Mars/Base'" in result.output


# -- choice 9: one rule for re-sent readings: the first copy wins, differences are kept -----------


def test_stream_keeps_the_first_copy_and_reports_the_difference(tmp_path):
    stamp = (datetime.now(UTC) - timedelta(minutes=20)).replace(microsecond=0).isoformat()
    first = reading(timestamp=stamp, temperature=20)
    farmctl(tmp_path, "ingest", "-", input=json.dumps(first))
    again = [
        reading(timestamp=stamp, temperature=25),
        first,
        reading(timestamp=stamp, temperature=20, co2="900"),
    ]
    result = farmctl(tmp_path, "ingest", "-", input="\n".join(map(json.dumps, again)))
    assert result.exit_code == 0
    assert "accepted 0, rejected 0, 3 already stored (2 differed from the stored copy" in (
        result.stderr
    )
    rejected = json.loads(farmctl(tmp_path, "rejected", "-o", "json").stdout)
    reasons = sorted(r["reason"].split(": ", 1)[1] for r in rejected)
    assert reasons == ["co2 800.0 -> 900.0", "temperature 20.0 -> 25.0"]
    latest = json.loads(farmctl(tmp_path, "latest", "-o", "json").stdout)
    assert [(r["temperature"], r["co2"]) for r in latest] == [(20.0, 800.0)]
    trend = json.loads(farmctl(tmp_path, "trend", "temperature", "-o", "json").stdout)
    assert [(r["avg"], r["readings"]) for r in trend] == [(20.0, 1)]


def test_firehose_transform_keeps_the_first_copy_in_a_batch():
    import base64

    from reliability.lambdas import load

    transform = load("firehose_transform")
    now_ms = int(datetime(2026, 11, 28, 12, tzinfo=UTC).timestamp() * 1000)
    items = [
        reading(temperature=20),
        reading(temperature=20),  # the same again
        reading(temperature="25"),  # a corrected copy
        reading(device_id="d2"),
    ]
    records = [
        {"recordId": str(i), "data": base64.b64encode(json.dumps(r).encode()).decode()}
        for i, r in enumerate(items)
    ]
    out = transform.transform({"records": records}, now_ms)["records"]
    assert [o["result"] for o in out] == ["Ok", "Dropped", "ProcessingFailed", "Ok"]
    assert out[2]["data"] == records[2]["data"]  # kept as sent, under the error prefix


def test_athena_sql_collapses_copies_like_the_local_stream(tmp_path):
    """Two copies of one reading in two Firehose objects: Athena's trend and latest count the
    first, as the local stream does. Athena is emulated by DuckDB over the same files, with
    `$path` as the object's key (Firehose names objects by delivery time)."""
    import duckdb
    import sqlglot

    from smartfarm_cli.core import lake, queries
    from smartfarm_cli.core.validate import validate as check
    from smartfarm_cli.targets.local import LocalTarget

    now = datetime.now(UTC).replace(microsecond=0)
    t = now - timedelta(minutes=20)
    sent = [
        [reading(timestamp=t.isoformat(), temperature=20, error_code=0)],
        [
            reading(timestamp=t.isoformat(), temperature=25),  # a later, corrected copy
            reading(timestamp=(t + timedelta(minutes=1)).isoformat(), temperature=22),
        ],
    ]
    local = LocalTarget(tmp_path / "local")
    for batch in sent:
        local.ingest(batch)
    bucket = tmp_path / "s3"
    for n, batch in enumerate(sent):
        table = check(batch).accepted
        for hour_ms, part in lake.split_by_time(table, lake.HOUR_MS):
            name = f"sensor-stream-1-{now:%Y-%m-%d-%H-%M}-{n:02d}-uuid.parquet"
            path = bucket / lake.log_prefix(hour_ms) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(lake.parquet_bytes(part))
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    glob = f"{bucket}/logs/*/*/*/*/*.parquet"
    con.execute(
        'CREATE VIEW readings AS SELECT * EXCLUDE (filename), filename AS "$path" FROM '
        f"read_parquet('{glob}', hive_partitioning = true, filename = true, "
        "hive_types = {'year': 'VARCHAR', 'month': 'VARCHAR', 'day': 'VARCHAR', 'hour': 'VARCHAR'})"
    )

    def athena(query):
        sql = sqlglot.transpile(query.sql, read="athena", write="duckdb")[0]
        return con.execute(sql, query.params).fetchall()

    q_trend = queries.trend("temperature", 1, "1d", now=now, zone="UTC")
    q_trend_aws = queries.trend(
        "temperature", 1, "1d", now=now, zone="UTC", copies_by=queries.ATHENA_COPY_ORDER
    )
    # Without collapsing, Athena would average both copies: (20 + 25 + 22) / 3 = 22.33.
    assert [r[2:] for r in athena(q_trend)] == [(22.33, 20.0, 25.0, 3)]
    # Collapsed, it counts the first copy, exactly as the local stream stored it: (20 + 22) / 2.
    assert [r[2:] for r in athena(q_trend_aws)] == [(21.0, 20.0, 22.0, 2)]
    assert [r[2:] for r in local.run(q_trend).rows] == [(21.0, 20.0, 22.0, 2)]
    q_latest = queries.latest_per_device(now=now, copies_by=queries.ATHENA_COPY_ORDER)
    assert athena(q_latest) == local.latest().rows
    local.close()


# -- choice 11: spikes --since is on the reading's time; --detected is on detection time ----------


def test_spikes_since_reading_time_or_detection_time(tmp_path):
    old = (datetime.now(UTC) - timedelta(days=2)).replace(microsecond=0)
    fresh = (datetime.now(UTC) - timedelta(minutes=5)).replace(microsecond=0)
    farmctl(
        tmp_path,
        "ingest",
        "-",
        input="\n".join(
            [
                json.dumps(reading(timestamp=old.isoformat(), temperature=400)),  # 2 days old
                json.dumps(reading(timestamp=fresh.isoformat(), device_id="d2", error_code=3)),
            ]
        ),
    )
    by_reading = json.loads(farmctl(tmp_path, "spikes", "--since", "24h", "-o", "json").stdout)
    assert [(s["device_id"], s["rule"]) for s in by_reading] == [("d2", "sensor_error")]
    args = ["spikes", "--since", "1h", "--detected", "-o", "json"]
    by_detection = json.loads(farmctl(tmp_path, *args).stdout)
    assert sorted((s["device_id"], s["rule"]) for s in by_detection) == [
        ("d1", "impossible"),
        ("d2", "sensor_error"),
    ]
    found = datetime.fromisoformat(by_detection[0]["detected_at"].replace("Z", "+00:00"))
    assert timedelta(0) <= datetime.now(UTC) - found < timedelta(minutes=5)


def test_spike_files_without_detected_at_still_read(tmp_path):
    """A home written before `detected_at` existed: its spikes list with an empty value."""
    from smartfarm_cli.core import lake
    from smartfarm_cli.targets.local import LocalTarget

    target = LocalTarget(tmp_path)
    fresh = (datetime.now(UTC) - timedelta(minutes=5)).replace(microsecond=0)
    target.ingest([reading(timestamp=fresh.isoformat(), temperature=400)])
    (key,) = target.spike_store.keys(lake.SPIKE_ROOT)
    table = lake.read_parquet_bytes(target.spike_store.get(key))
    target.spike_store.put(key, lake.parquet_bytes(table.drop_columns(["detected_at"])))
    target.ingest([reading(timestamp=fresh.isoformat(), device_id="d2", error_code=1)])
    rows = target.spikes("1h").records()
    assert sorted((r["device_id"], r["detected_at"] is None) for r in rows) == [
        ("d1", True),
        ("d2", False),
    ]
    target.close()
