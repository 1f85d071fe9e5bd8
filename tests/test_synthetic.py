"""Synthetic readings (issue 16, item 3): tagged on every generating path, carried by the core,
the Parquet files, the Glue table and the Firehose transform, refused from devices, never
alerted on unless asked, and queried next to lake files older than the column."""

from __future__ import annotations

import base64
import importlib.util
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apigw_vtl import render, template
from moto import mock_aws
from test_lambda_anomaly_detector import (
    FAST,
    PATH,
    SPIKE_BUCKET,
    Context,
    discord_fake,
    handler_module,
    keys,
    put_log,
    s3_event,
)
from test_terraform import _decoded_local, _dynamic_columns, tf
from typer.testing import CliRunner

from smartfarm_cli.cli import app
from smartfarm_cli.core import alerts, generator, lake, queries, schema
from smartfarm_cli.core.rules import detect, load_rules
from smartfarm_cli.core.state import SQLITE_DDL, SqliteStateStore
from smartfarm_cli.core.validate import conform, table_from_rows, validate
from smartfarm_cli.serve import contract
from smartfarm_cli.targets.aws_kinesis import entry
from smartfarm_cli.targets.local import LocalTarget

ROOT = Path(__file__).resolve().parents[1]
T0 = int(datetime(2026, 11, 28, 10, 0, tzinfo=UTC).timestamp() * 1000)
MIN = 60_000
PARAM = "/smartfarm/discord_webhook"
STATE = "smartfarm-device-state"


def _load(name: str):
    path = ROOT / "lambdas" / name / "handler.py"
    spec = importlib.util.spec_from_file_location(f"{name}_synthetic_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


firehose = _load("firehose_transform")
pseudo = _load("pseudo_sensor_log")


def reading(**over):
    base = {
        "greenhouse_id": "gh-1",
        "device_id": "dev-1",
        "timestamp": T0,
        "temperature": 21.0,
        "humidity": 60.0,
        "co2": 800.0,
        "error_code": 0,
    }
    return {**base, **over}


# -- the schema --------------------------------------------------------------------------------


def test_synthetic_is_optional_boolean_default_false_and_round_trips_through_parquet(tmp_path):
    batch = validate(
        [
            reading(device_id="absent"),
            reading(device_id="real", synthetic=False),
            reading(device_id="fake", synthetic=True),
            reading(device_id="null", synthetic=None),
            reading(device_id="text", synthetic="true"),
            reading(device_id="one", synthetic=1),
        ],
        now_ms=T0,
    )
    assert [r.reason for r in batch.rejected] == [
        "synthetic must be true or false, got 'true'",
        "synthetic must be true or false, got 1",
    ]
    assert batch.accepted.schema == schema.READING_SCHEMA
    got = dict(
        zip(
            batch.accepted["device_id"].to_pylist(),
            batch.accepted["synthetic"].to_pylist(),
            strict=True,
        )
    )
    assert got == {"absent": False, "real": False, "fake": True, "null": False}

    path = tmp_path / "r.parquet"
    pq.write_table(batch.accepted, path)
    back = conform(pq.read_table(path))
    assert back.equals(batch.accepted)
    assert pq.read_schema(path).field("synthetic").type == pa.bool_()


def test_a_log_file_older_than_the_column_reads_as_real():
    old = pa.table(
        {
            "greenhouse_id": ["gh-1"],
            "device_id": ["d"],
            "timestamp": pa.array([T0], pa.timestamp("ms")),
            "temperature": [21.0],
            "humidity": [60.0],
            "co2": [800.0],
            "error_code": pa.array([0], pa.int32()),
        }
    )
    table = conform(old)
    assert table.schema == schema.READING_SCHEMA
    assert table["synthetic"].to_pylist() == [False]
    # a column of nulls (Athena's answer for such a file) is real too
    nulls = conform(table.set_column(7, "synthetic", pa.nulls(1, pa.bool_())))
    assert nulls["synthetic"].to_pylist() == [False]


def test_everything_generated_is_synthetic():
    generated = generator.generate(T0, 3, 60, 2, 2, anomaly_rate=0.5, seed=1)
    assert set(generated.table["synthetic"].to_pylist()) == {True}
    chunks = list(generator.history(T0, 0.1, 600, 1, 1, 0.0, 1))
    assert chunks and all(set(t["synthetic"].to_pylist()) == {True} for t, *_ in chunks)
    assert generator.generate(T0, 1, synthetic=False).table["synthetic"].to_pylist() == [False] * 6


# -- Glue table, API model, mapping templates ----------------------------------------------------


@pytest.mark.parametrize(
    ("table", "local"), [("readings", "reading_columns"), ("spikes", "spike_columns")]
)
def test_glue_tables_have_a_boolean_synthetic_column(table, local):
    assert _dynamic_columns(table) == f"${{local.{local}}}"
    columns = {c["name"]: c["type"] for c in _decoded_local(local)}
    assert columns["synthetic"] == "boolean"


def test_anomaly_lambda_gets_alert_on_synthetic_from_a_false_by_default_variable():
    variable = tf()["variable"]["alert_on_synthetic"]
    assert variable["type"] == "bool" and variable["default"] is False
    assert variable["description"]
    env = tf()["resource"]["aws_lambda_function"]["anomaly_detector"]["environment"]
    env = env[0] if isinstance(env, list) else env
    assert env["variables"]["ALERT_ON_SYNTHETIC"] == "${tostring(var.alert_on_synthetic)}"


def test_the_simulator_key_marks_the_partition_key_and_a_device_key_cannot():
    body = json.dumps({"records": [reading(), reading(device_id="dev-2")]})
    text = template("put_records.vtl", stream_name="s", simulator_api_key_id="sim-key-id")
    as_simulator = json.loads(render(text, body, api_key_id="sim-key-id")[0])
    as_device = json.loads(render(text, body, api_key_id="device-key-id")[0])
    assert [r["PartitionKey"] for r in as_simulator["Records"]] == [
        "synthetic/gh-1:dev-1",
        "synthetic/gh-1:dev-2",
    ]
    assert [r["PartitionKey"] for r in as_device["Records"]] == ["gh-1:dev-1", "gh-1:dev-2"]
    one = template("put_record.vtl", stream_name="s", simulator_api_key_id="sim-key-id")
    assert (
        json.loads(render(one, json.dumps(reading()), api_key_id="sim-key-id")[0])["PartitionKey"]
        == "synthetic/gh-1:dev-1"
    )
    assert (
        json.loads(render(one, json.dumps(reading()), api_key_id="other")[0])["PartitionKey"]
        == "gh-1:dev-1"
    )
    # The id charset keeps every device key out of the marked space.
    assert "/" not in "".join(c for c in "ABCxyz019_-")


def test_ingest_api_model_and_serve_refuse_synthetic_true_from_devices():
    with pytest.raises(contract.ContractError) as info:
        contract.parse("/record", json.dumps(reading(synthetic=True)).encode())
    assert info.value.status == 400 and "synthetic" in json.dumps(info.value.body)
    batch = {"records": [reading(), reading(device_id="d2", synthetic=True)]}
    with pytest.raises(contract.ContractError):
        contract.parse("/records", json.dumps(batch).encode())
    # false (or absent) is fine
    assert contract.parse("/record", json.dumps(reading(synthetic=False)).encode())
    model = json.loads((ROOT / "terraform" / "schemas" / "reading.json").read_text())
    assert model["properties"]["synthetic"] == {"type": "boolean", "enum": [False]}


# -- Firehose transform --------------------------------------------------------------------------


def firehose_record(i: int, payload: dict, partition_key: str) -> dict:
    return {
        "recordId": f"4954698668313554428650745793632162567570019247115678515{i:04d}",
        "approximateArrivalTimestamp": T0,
        "data": base64.b64encode(json.dumps(payload).encode()).decode(),
        "kinesisRecordMetadata": {
            "sequenceNumber": f"49546986683135544286507457936321625675700192471156{i:04d}",
            "subsequenceNumber": 0,
            "partitionKey": partition_key,
            "shardId": "shardId-000000000000",
            "approximateArrivalTimestamp": T0,
        },
    }


def test_transform_takes_synthetic_from_the_partition_key_never_from_the_body():
    event = {
        "invocationId": "inv-1",
        "deliveryStreamArn": "arn:aws:firehose:us-east-1:123456789012:deliverystream/smartfarm",
        "sourceKinesisStreamArn": "arn:aws:kinesis:us-east-1:123456789012:stream/smartfarm",
        "region": "us-east-1",
        "records": [
            firehose_record(0, reading(device_id="sim"), "synthetic/gh-1:sim"),
            firehose_record(1, reading(device_id="dev"), "gh-1:dev"),
            # a device (or anyone) claiming synthetic in the body: stored as real
            firehose_record(2, reading(device_id="liar", synthetic=True), "gh-1:liar"),
            # farmctl simulate --direct: body and key both say so
            firehose_record(3, reading(device_id="cli", synthetic=True), "synthetic/gh-1:cli"),
        ],
    }
    out = firehose.handler(event, None)["records"]
    assert [o["result"] for o in out] == ["Ok"] * 4
    decoded = [json.loads(base64.b64decode(o["data"])) for o in out]
    assert [(d["device_id"], d["synthetic"]) for d in decoded] == [
        ("sim", True),
        ("dev", False),
        ("liar", False),
        ("cli", True),
    ]


def test_farmctl_puts_synthetic_readings_under_the_marked_partition_key():
    assert entry(reading(synthetic=True))["PartitionKey"] == "synthetic/gh-1:dev-1"
    assert entry(reading(synthetic=False))["PartitionKey"] == "gh-1:dev-1"
    assert entry(reading())["PartitionKey"] == "gh-1:dev-1"


def test_pseudo_sensor_log_posts_bodies_the_ingest_model_accepts():
    posted: list[dict] = []

    def post(url, body, headers, timeout):
        posted.append(body)
        contract.parse("/records", json.dumps(body).encode())  # what the API checks first
        return 200, json.dumps({"FailedRecordCount": 0, "Records": []}).encode()

    spec = pseudo.RunSpec(
        **{
            **pseudo.asdict(pseudo.parse_body({"count": 2, "interval": 0}, 100.0)),
            "run_id": "r1",
        }
    )
    summary = pseudo.run(
        spec, "https://example.invalid/records", "k", post=post, sleep=lambda s: None
    )
    assert summary["sent"] == spec.readings and posted
    assert all("synthetic" not in r for body in posted for r in body["records"])


# -- jump state ----------------------------------------------------------------------------------


def test_synthetic_readings_do_not_pollute_a_real_devices_jump_window(tmp_path):
    import sqlite3

    db = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    db.executescript(SQLITE_DDL)
    state = SqliteStateStore(db)
    rules = load_rules()
    # A real gh-1/dev-1 at 20 °C, a simulated gh-1/dev-1 at 35 °C, interleaved across files.
    for minute in range(4):
        real = ("gh-1", "dev-1", T0 + minute * MIN, 20.0 + minute * 0.1, 60.0, 800.0, 0, False)
        fake = ("gh-1", "dev-1", T0 + minute * MIN + 30_000, 35.0, 60.0, 800.0, 0, True)
        spikes = detect(table_from_rows([real, fake]), rules, f"f{minute}", state=state)
        assert spikes.num_rows == 0, spikes.to_pylist()
    # Each sequence still finds its own jumps, and a synthetic jump is marked synthetic.
    jump = ("gh-1", "dev-1", T0 + 4 * MIN + 30_000, 39.5, 60.0, 800.0, 0, True)
    spikes = detect(table_from_rows([jump]), rules, "f5", state=state)
    assert [(r["rule"], r["synthetic"]) for r in spikes.to_pylist()] == [("jump", True)]
    real_jump = ("gh-1", "dev-1", T0 + 4 * MIN, 30.0, 60.0, 800.0, 0, False)
    spikes = detect(table_from_rows([real_jump]), rules, "f6", state=state)
    assert [(r["rule"], r["synthetic"]) for r in spikes.to_pylist()] == [("jump", False)]
    # one window per sequence: the real device's and the simulated one's
    assert {r[0] for r in db.execute("SELECT kind FROM device_state")} == {
        "jump",
        "jump#synthetic",
    }


# -- the anomaly Lambda --------------------------------------------------------------------------

SYN_KEY = "logs/year=2026/month=11/day=28/hour=10/sensor-stream-1-2026-11-28-10-04-59-syn.parquet"


def synthetic_spikes_file():
    rows = [
        ("gh-1", "sim-hot", T0, 400.0, 60.0, 800.0, 0, True),  # impossible
        ("gh-1", "sim-err", T0, None, None, None, 1, True),  # sensor_error
        ("gh-1", "sim-ok", T0, 21.0, 60.0, 800.0, 0, True),
    ]
    return table_from_rows(rows)


@pytest.fixture
def lambda_aws(monkeypatch, httpserver):
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "SPIKE_BUCKET": SPIKE_BUCKET,
        "DISCORD_WEBHOOK_SSM_PARAMETER": PARAM,
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("RULES_PATH", "SMARTFARM_RULES", "ALERT_ON_SYNTHETIC", "STATE_TABLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(handler_module, "ALERT_POLICY", FAST)
    monkeypatch.setattr(handler_module, "NOW", lambda: (T0 + 30_000) / 1000)
    handler_module._webhook_cache.clear()
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="sensor-log-bucket")
        s3.create_bucket(Bucket=SPIKE_BUCKET)
        boto3.client("ssm").put_parameter(
            Name=PARAM, Value=httpserver.url_for(PATH), Type="SecureString"
        )
        boto3.client("dynamodb").create_table(
            TableName=STATE,
            KeySchema=[
                {"AttributeName": "device", "KeyType": "HASH"},
                {"AttributeName": "kind", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "device", "AttributeType": "S"},
                {"AttributeName": "kind", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        yield s3


def stored_spikes(s3):
    (key,) = keys(s3, SPIKE_BUCKET, "spikes/")
    return lake.read_parquet_bytes(s3.get_object(Bucket=SPIKE_BUCKET, Key=key)["Body"].read())


@pytest.mark.parametrize("with_state", [False, True])
def test_synthetic_spikes_are_stored_marked_but_post_nothing(
    lambda_aws, httpserver, monkeypatch, with_state
):
    if with_state:
        monkeypatch.setenv("STATE_TABLE", STATE)
    calls = discord_fake(httpserver, [(200, {"id": "1"}, {})])
    put_log(lambda_aws, SYN_KEY, synthetic_spikes_file())
    result = handler_module.handler(s3_event(SYN_KEY), Context())
    assert result["spikes"] == 2 and result["alerts"] == {SYN_KEY: alerts.SKIPPED_SYNTHETIC}
    assert calls == []  # the local Discord server got no request at all
    spikes = stored_spikes(lambda_aws)
    assert {(r["device_id"], r["rule"], r["synthetic"]) for r in spikes.to_pylist()} == {
        ("sim-hot", "impossible", True),
        ("sim-err", "sensor_error", True),
    }
    if with_state:  # no incident, no last-seen time for the simulated devices
        items = boto3.client("dynamodb").scan(TableName=STATE)["Items"]
        assert not [i for i in items if not i["kind"]["S"].startswith("jump")]


@pytest.mark.parametrize("with_state", [False, True])
def test_alert_on_synthetic_posts_them(lambda_aws, httpserver, monkeypatch, with_state):
    if with_state:
        monkeypatch.setenv("STATE_TABLE", STATE)
    monkeypatch.setenv("ALERT_ON_SYNTHETIC", "true")
    calls = discord_fake(httpserver, [(200, {"id": "1"}, {})])
    put_log(lambda_aws, SYN_KEY, synthetic_spikes_file())
    result = handler_module.handler(s3_event(SYN_KEY), Context())
    assert result["alerts"] == {SYN_KEY: alerts.DELIVERED}
    assert len(calls) == 1
    text = json.dumps(calls[0]["json"])
    assert "sim-hot" in text and "sim-err" in text


def test_a_mixed_file_alerts_only_on_its_real_spikes(lambda_aws, httpserver, monkeypatch):
    monkeypatch.setenv("STATE_TABLE", STATE)
    calls = discord_fake(httpserver, [(200, {"id": "1"}, {})])
    table = pa.concat_tables(
        [
            synthetic_spikes_file(),
            table_from_rows([("gh-2", "real-hot", T0, 400.0, 60.0, 800.0, 0, False)]),
        ]
    )
    put_log(lambda_aws, SYN_KEY, table)
    result = handler_module.handler(s3_event(SYN_KEY), Context())
    assert result["spikes"] == 3 and result["alerts"] == {SYN_KEY: alerts.DELIVERED}
    text = json.dumps(calls[0]["json"])
    assert "real-hot" in text and "sim-hot" not in text and "sim-err" not in text


# -- the local target and the CLI ------------------------------------------------------------------


def _farmctl(home, *args, env=None):
    result = CliRunner().invoke(app, ["--home", str(home), *args], env=env)
    return result


@pytest.mark.parametrize("asked", [False, True])
def test_farmctl_simulate_alerts_only_with_alert_synthetic(tmp_path, httpserver, asked):
    calls = discord_fake(httpserver, [(200, {"id": "1"}, {})])
    env = {"SMARTFARM_DISCORD_WEBHOOK": httpserver.url_for(PATH)}
    flags = ["--alert-synthetic"] if asked else []
    home = tmp_path / "home"
    result = _farmctl(
        home,
        *flags,
        "simulate",
        "--count",
        "4",
        "--interval",
        "0",
        "-g",
        "2",
        "--anomaly-rate",
        "0.5",
        "--seed",
        "3",
        env=env,
    )
    assert result.exit_code == 0, result.output
    spikes = _farmctl(home, "spikes", "-o", "json")
    rows = json.loads(spikes.stdout)
    assert rows and all(r["synthetic"] is True for r in rows)  # stored, marked
    assert len(calls) == (1 if asked else 0)
    target = LocalTarget(home)
    (opened,) = target.db.execute("SELECT count(*) FROM alert_log").fetchone()
    assert (opened > 0) is asked
    assert bool(target.state.scan("alerts")) is asked  # no incident state at all unless asked
    target.close()


def test_local_synthetic_readings_do_not_resolve_or_keep_alive_a_real_device(tmp_path):
    target = LocalTarget(tmp_path / "home")
    now = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=30)
    ms = int(now.timestamp() * 1000)
    target.ingest([reading(timestamp=ms, error_code=1, temperature=None)])
    assert target.db.execute("SELECT event FROM alert_log").fetchall() == [("opened",)]
    # 20 minutes of healthy synthetic readings under the same ids resolve nothing
    fake = generator.generate(ms + MIN, 20, 60, 1, 1).table
    target.ingest_table(fake)
    assert target.db.execute("SELECT event FROM alert_log").fetchall() == [("opened",)]
    target.close()


def _old_file(path: Path, rows: list[tuple]):
    """A lake file as written before the column existed (seven columns)."""
    table = table_from_rows(rows).drop_columns(["synthetic"])
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


# The old file sorts first (its footer says so before the read) or last (DuckDB finds it in the
# middle of a positional read and the query is re-run reading every file by name).
@pytest.mark.parametrize("old_name", ["aa-old.parquet", "zz-old.parquet"])
def test_queries_read_old_and_new_lake_files_together(tmp_path, old_name):
    home = tmp_path / "home"
    target = LocalTarget(home)
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    ms = int(hour.timestamp() * 1000)
    prefix = lake.log_prefix(ms)
    target.ingest([reading(device_id="new", timestamp=ms + 5 * MIN, temperature=22.0)])
    target.ingest_table(generator.generate(ms + 6 * MIN, 2, 60, 1, 1).table)  # gh-1/dev-1, fake
    # an old file (real readings, no column) next to the new ones (real and synthetic), written
    # after the deliveries so no compaction rewrites it
    _old_file(
        home / "sensor-log-bucket" / prefix / old_name,
        [("gh-1", "old", ms + i * MIN, 20.0, 60.0, 800.0, 0) for i in range(3)],
    )
    assert len(target.logs.keys(prefix)) == 2
    count = target.query("SELECT count(*) AS n, count(synthetic) AS marked FROM readings")
    assert count.rows == [(6, 3)]  # old rows: NULL in the column, as on Athena

    def trend(mode):
        result = target.trend("temperature", 1, "1d", synthetic=mode)
        return sum(row[result.columns.index("readings")] for row in result.rows)

    assert (trend("exclude"), trend("include"), trend("only")) == (4, 6, 2)
    latest = {r["device_id"]: r["synthetic"] for r in target.latest().records()}
    assert latest == {"old": False, "new": False, "dev-1": True}
    assert {r["device_id"] for r in target.latest(synthetic="exclude").records()} == {"old", "new"}
    with pytest.raises(queries.QueryError, match="choose one of exclude, include, only"):
        target.trend("temperature", 1, synthetic="maybe")
    target.close()


def test_spikes_mark_synthetic_and_read_old_spike_files(tmp_path):
    home = tmp_path / "home"
    target = LocalTarget(home)
    now = datetime.now(UTC) - timedelta(minutes=10)
    ms = int(now.timestamp() * 1000)
    target.ingest([reading(device_id="real", timestamp=ms, temperature=400.0)])
    target.ingest_table(table_from_rows([("gh-1", "fake", ms, 400.0, 60.0, 800.0, 0, True)]))
    # a spike file written before the column existed
    old = conform(table_from_rows([("gh-2", "older", ms, 400.0, 60.0, 800.0, 0)]))
    spikes = detect(old, target.rules, "logs/old.parquet").drop_columns(["synthetic"])
    for key, rows in lake.spike_keys(spikes, "logs/old.parquet").items():
        target.spike_store.put(key, lake.parquet_bytes(rows))
    result = target.spikes("1h")
    got = {r["device_id"]: r["synthetic"] for r in result.records()}
    assert got == {"real": False, "fake": True, "older": False}
    assert {r["device_id"] for r in target.spikes("1h", synthetic="exclude").records()} == {
        "real",
        "older",
    }
    assert {r["device_id"] for r in target.spikes("1h", synthetic="only").records()} == {"fake"}
    target.close()


def test_a_stream_db_from_before_the_column_is_migrated(tmp_path):
    import sqlite3

    home = tmp_path / "home"
    home.mkdir()
    db = sqlite3.connect(home / "stream.db")
    db.execute(
        "CREATE TABLE stream (seq INTEGER PRIMARY KEY AUTOINCREMENT, received_ms INTEGER NOT "
        "NULL, greenhouse_id TEXT NOT NULL, device_id TEXT NOT NULL, ts_ms INTEGER NOT NULL, "
        "temperature REAL, humidity REAL, co2 REAL, error_code INTEGER NOT NULL)"
    )
    db.execute(
        "INSERT INTO stream (received_ms, greenhouse_id, device_id, ts_ms, temperature, "
        "humidity, co2, error_code) VALUES (?, 'gh-1', 'pending', ?, 21, 60, 800, 0)",
        (T0, int(datetime.now(UTC).timestamp() * 1000) - MIN),
    )
    db.commit()
    db.close()
    target = LocalTarget(home)
    target.deliver(force=True)
    assert {r["device_id"]: r["synthetic"] for r in target.latest().records()} == {"pending": False}
    target.close()


def test_demo_and_backfill_data_is_synthetic(tmp_path):
    home = tmp_path / "home"
    result = _farmctl(home, "backfill", "--days", "0.1", "-g", "1", "-d", "1", "--every", "10m")
    assert result.exit_code == 0, result.output
    counted = _farmctl(
        home, "query", "SELECT synthetic, count(*) AS n FROM readings GROUP BY 1", "-o", "json"
    )
    rows = json.loads(counted.stdout)
    assert [r["synthetic"] for r in rows] == [True] and rows[0]["n"] > 0
    # trend leaves them out by default and says how to see them
    empty = _farmctl(home, "trend", "temperature", "--days", "1")
    assert empty.exit_code == 0
    assert "synthetic readings only: add --synthetic include" in empty.stderr
    shown = _farmctl(
        home, "trend", "temperature", "--days", "1", "--synthetic", "include", "-o", "json"
    )
    assert json.loads(shown.stdout)


def test_athena_sql_treats_a_missing_column_as_real():
    """Athena gives NULL for files older than the column: every query coalesces it."""
    now = datetime(2026, 11, 29, tzinfo=UTC)
    assert "NOT coalesce(synthetic, false)" in queries.trend("co2", 1, now=now).sql
    assert "synthetic" not in queries.trend("co2", 1, now=now, synthetic="include").sql
    assert "coalesce(synthetic, false) AS synthetic" in queries.latest_per_device(now=now).sql
    spikes = queries.spikes("1d", now=now, synthetic="only").sql
    assert "coalesce(synthetic, false) AS synthetic" in spikes and "AND synthetic" in spikes


def test_grafana_averages_leave_synthetic_readings_out_and_spikes_mark_them():
    dashboard = json.loads(
        (ROOT / "terraform" / "grafana" / "dashboards" / "smartfarm.json").read_text()
    )
    sql = {p["title"]: t["rawSQL"] for p in dashboard["panels"] for t in p.get("targets", [])}
    averages = [s for title, s in sql.items() if "by greenhouse" in title]
    assert len(averages) == 3
    assert all("AND NOT coalesce(synthetic, false)" in s for s in averages)
    assert "coalesce(synthetic, false) AS synthetic" in sql["Spikes (latest 500)"]


def test_status_counts_todays_synthetic_spikes_apart(tmp_path):
    target = LocalTarget(tmp_path / "h")
    # Both readings are today's unless the test runs in the first 20 s of a UTC day.
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=10)
    real = [reading(temperature=400.0, timestamp=now.isoformat(), device_id="dev-9")]
    target.ingest(real)
    target.deliver(force=True)
    stamp = int((now - timedelta(seconds=10)).timestamp() * 1000)
    fake = generator.generate(stamp, 1, 60, 1, 1, 0.0).table  # synthetic, healthy
    fake = fake.set_column(3, "temperature", pa.array([500.0]))
    target.append(fake)
    target.deliver(force=True)
    info = target.status()
    assert (info["spikes_today_utc"], info["synthetic_spikes_today"]) == (2, 1)
