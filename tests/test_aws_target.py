"""The aws target against moto (`mock_aws`): Kinesis, S3, Glue, Athena, API Gateway, SQS.

moto moves no data between services (REFERENCE.md §10): Kinesis is read back with GetRecords,
Athena results are injected through moto's API, partial PutRecords failures and AWS error codes
are forced with botocore event hooks, and the crawler's RUNNING -> READY comes from moto's state
manager.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pyarrow as pa
import pytest
import requests
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.moto_api import state_manager
from typer.testing import CliRunner

from smartfarm_cli.cli import app
from smartfarm_cli.core import generator
from smartfarm_cli.core.schema import READING_SCHEMA
from smartfarm_cli.errors import FarmctlError
from smartfarm_cli.stack import save_outputs
from smartfarm_cli.targets import TargetOptions
from smartfarm_cli.targets import aws as aws_module
from smartfarm_cli.targets.aws import AwsTarget, athena_literal
from smartfarm_cli.targets.aws_kinesis import MAX_TRIES
from smartfarm_cli.targets.local import LocalTarget

REGION = "ap-northeast-2"
ATHENA_RESULTS_API = "http://motoapi.amazonaws.com/moto-api/static/athena/query-results"
SIMULATOR_KEY = "sim-key-0123456789abcdefghij"
INGEST_KEY = "ingest-key-0123456789abcdefgh"


@pytest.fixture
def stack(tmp_path, monkeypatch):
    """A moto stand-in for the deployed stack, with its outputs cached in <home>."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",  # the stack's own region must win
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "SMARTFARM_HOME": str(tmp_path / "home"),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setattr(aws_module, "CRAWL_POLL_S", 0.05)
    with mock_aws():
        import boto3

        session = boto3.Session(region_name=REGION)
        kinesis = session.client("kinesis")
        kinesis.create_stream(StreamName="sf-readings", ShardCount=2)
        arn = kinesis.describe_stream_summary(StreamName="sf-readings")["StreamDescriptionSummary"][
            "StreamARN"
        ]
        s3 = session.client("s3")
        for bucket in ("sf-logs", "sf-spikes", "sf-athena"):
            s3.create_bucket(
                Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION}
            )
        glue = session.client("glue")
        glue.create_database(DatabaseInput={"Name": "smartfarm"})
        glue.create_crawler(
            Name="sf-crawler",
            Role="arn:aws:iam::123456789012:role/crawler",
            DatabaseName="smartfarm",
            Targets={"S3Targets": [{"Path": "s3://sf-logs/logs/"}]},
        )
        session.client("athena").create_work_group(
            Name="smartfarm",
            Configuration={
                "ResultConfiguration": {"OutputLocation": "s3://sf-athena/athena/"},
                "EnforceWorkGroupConfiguration": True,
            },
        )
        apigw = session.client("apigateway")
        sim_key = apigw.create_api_key(name="sim", value=SIMULATOR_KEY, enabled=True)["id"]
        ingest_key = apigw.create_api_key(name="ingest", value=INGEST_KEY, enabled=True)["id"]
        dlq = session.client("sqs").create_queue(QueueName="sf-alerts-dlq")["QueueUrl"]
        outputs = {
            "region": REGION,
            "ingest_api_url": "https://abc1234567.execute-api.ap-northeast-2.amazonaws.com/v1/records",
            "ingest_api_key_id": ingest_key,
            "simulator_api_url": "https://def1234567.execute-api.ap-northeast-2.amazonaws.com/v1/",
            "simulator_api_key_id": sim_key,
            "stream_name": "sf-readings",
            "stream_arn": arn,
            "firehose_name": "sf-delivery",
            "log_bucket": "sf-logs",
            "spike_bucket": "sf-spikes",
            "athena_results_bucket": "sf-athena",
            "glue_database": "smartfarm",
            "readings_table": "readings",
            "spikes_table": "spikes",
            "athena_workgroup": "smartfarm",
            "crawler_name": "sf-crawler",
            "anomaly_function_name": "sf-anomaly_detector",
            "simulator_function_name": "sf-pseudo_sensor_log_lambda",
            "transform_function_name": "sf-firehose_transform",
            "alerts_dlq_url": dlq,
            "grafana_url": "http://grafana.example",
            "discord_webhook_ssm_parameter": "/sf/alerts/discord-webhook-url",
            "ingest_api_key_ssm_parameter": "/sf/ingest/api-key",
            "grafana_admin_password_ssm_parameter": "/sf/grafana/admin-password",
        }
        home = tmp_path / "home"
        home.mkdir()
        save_outputs(home, outputs)
        yield SimpleNamespace(session=session, outputs=outputs, home=home, tmp=tmp_path)
        state_manager.unset_transition("glue::crawl")


@pytest.fixture
def aws_events(monkeypatch):
    """Register botocore event handlers on every session the aws target creates."""
    handlers: list[tuple[str, object]] = []
    original = AwsTarget._new_session

    def new_session(self):
        session = original(self)
        for event, handler in handlers:
            session.events.register(event, handler)
        return session

    monkeypatch.setattr(AwsTarget, "_new_session", new_session)
    return handlers


def make_target(stack) -> AwsTarget:
    target = AwsTarget(TargetOptions(home=stack.home))
    target.sleep = lambda seconds: None
    return target


def read_stream(stack) -> list[dict]:
    """Every record on every shard, from the start."""
    kinesis = stack.session.client("kinesis")
    records = []
    for shard in kinesis.list_shards(StreamName="sf-readings")["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName="sf-readings", ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            response = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            records.extend(json.loads(r["Data"]) for r in response["Records"])
            if not response["Records"]:
                break
            iterator = response["NextShardIterator"]
    return records


def readings(n: int, greenhouses: int = 3) -> list[dict]:
    now_ms = int(time.time() * 1000) - 3_600_000
    table = generator.generate(now_ms, n // greenhouses, 1.0, greenhouses, 1, 0.0, seed=7).table
    return generator.to_json_records(table)


def assert_one_error(result, text: str, code: int = 1) -> None:
    flat = " ".join(result.output.split())
    assert result.exit_code == code, result.output
    assert flat.startswith("error: ") and flat.count("error:") == 1, result.output
    assert text in flat and "Traceback" not in result.output


def put_records_counter(handlers) -> list[list[dict]]:
    sent: list[list[dict]] = []

    def record(params, **kwargs):
        sent.append(list(params["Records"]))

    handlers.append(("before-parameter-build.kinesis.PutRecords", record))
    return sent


# -- sending ------------------------------------------------------------------------------------


def test_simulate_direct_10000_readings_in_20_calls_all_land(stack, aws_events):
    sent = put_records_counter(aws_events)
    result = CliRunner().invoke(
        app,
        ["simulate", "--direct", "--count", "100", "--interval", "0", "-g", "10", "-d", "10"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "sent 10000 readings in 100 sends: 10000 accepted, 0 rejected" in result.output
    assert len(sent) <= 20
    assert [len(call) for call in sent] == [500] * 20
    # simulated readings say so in the body and under the marked partition key (issue 16.3)
    assert all(
        call[0]["PartitionKey"]
        == "synthetic/{greenhouse_id}:{device_id}".format(**json.loads(call[0]["Data"]))
        and json.loads(call[0]["Data"])["synthetic"] is True
        for call in sent
    )
    landed = read_stream(stack)
    assert len(landed) == 10_000
    per_device: dict[tuple, int] = {}
    for reading in landed:
        key = (reading["greenhouse_id"], reading["device_id"])
        per_device[key] = per_device.get(key, 0) + 1
    assert len(per_device) == 100 and set(per_device.values()) == {100}
    sent_data = sorted(e["Data"] for call in sent for e in call)
    assert sorted(json.dumps(r, separators=(",", ":")).encode() for r in landed) == sent_data


def test_partial_failure_resends_only_the_failed_entries(stack, aws_events):
    """Kinesis drops entries 3, 77 and 499 of the first call; only those three go again."""
    sent = put_records_counter(aws_events)
    failing = {3, 77, 499}
    state = {"calls": 0}

    def drop(params, **kwargs):
        state["calls"] += 1
        if state["calls"] == 1:  # moto never sees the failing entries
            params["Records"] = [e for i, e in enumerate(params["Records"]) if i not in failing]

    def fail(parsed, **kwargs):
        if state["calls"] == 1:
            records = list(parsed["Records"])
            for index in sorted(failing):
                records.insert(
                    index,
                    {
                        "ErrorCode": "ProvisionedThroughputExceededException",
                        "ErrorMessage": "Rate exceeded for shard",
                    },
                )
            parsed["Records"] = records
            parsed["FailedRecordCount"] = len(failing)

    aws_events.append(("before-parameter-build.kinesis.PutRecords", drop))
    aws_events.append(("after-call.kinesis.PutRecords", fail))
    target = make_target(stack)
    sleeps: list[float] = []
    target.sleep = sleeps.append
    items = readings(1200)
    result = target.ingest(items)
    assert result.accepted == 1200 and result.rejected == []
    assert [len(call) for call in sent] == [500, 3, 500, 200]
    assert sent[1] == [sent[0][i] for i in sorted(failing)]  # exactly the failed ones, in order
    assert len(sleeps) == 1 and 0 <= sleeps[0] <= 5  # one backoff before the re-send
    landed = read_stream(stack)
    assert len(landed) == 1200  # nothing lost, nothing duplicated
    expected = sorted(json.dumps(r, sort_keys=True) for r in items)
    assert sorted(json.dumps(r, sort_keys=True) for r in landed) == expected


def test_persistent_failure_stops_after_bounded_tries_and_keeps_the_rest(stack, aws_events):
    sent = put_records_counter(aws_events)

    def always_fail(parsed, **kwargs):
        parsed["Records"] = [
            {"ErrorCode": "InternalFailure", "ErrorMessage": "boom"} for _ in parsed["Records"]
        ]
        parsed["FailedRecordCount"] = len(parsed["Records"])

    aws_events.append(("after-call.kinesis.PutRecords", always_fail))
    target = make_target(stack)
    items = readings(600)
    with pytest.raises(FarmctlError) as caught:
        target.ingest(items)
    message = str(caught.value)
    assert "Kinesis refused 600 readings after 6 tries (InternalFailure x500); 0 were sent" in (
        message
    )
    assert len(sent) == MAX_TRIES == 6  # the first batch only: no hammering a failing stream
    assert all(call == sent[0] for call in sent)
    unsent_files = list((stack.home / "unsent").glob("*.ndjson"))
    assert len(unsent_files) == 1 and str(unsent_files[0]) in message
    kept = [json.loads(line) for line in unsent_files[0].read_text().splitlines()]
    assert kept == items  # both the refused batch and the one never tried


def test_ingest_rejects_bad_readings_without_sending_them(stack, aws_events):
    sent = put_records_counter(aws_events)
    good = readings(3)
    bad = [
        {"greenhouse_id": "gh 1", **{k: v for k, v in good[0].items() if k != "greenhouse_id"}},
        {"device_id": "d"},
    ]
    target = make_target(stack)
    result = target.ingest([good[0], bad[0], good[1], bad[1], good[2]])
    assert result.accepted == 3
    assert [(r.index, r.reason.split(" ")[0]) for r in result.rejected] == [
        (1, "greenhouse_id"),
        (3, "missing"),
    ]
    assert len(sent) == 1 and len(sent[0]) == 3
    assert all(b"gh 1" not in e["Data"] for e in sent[0])
    listed = target.rejected(10)
    assert listed.columns == ["id", "received", "source", "reason", "raw"]
    assert sorted(row[3].split(" ")[0] for row in listed.rows) == ["greenhouse_id", "missing"]
    assert {row[2] for row in listed.rows} == {"ingest"}


def test_ingest_stream_sends_a_file_chunk_by_chunk_with_true_line_numbers(stack, monkeypatch):
    import io

    from smartfarm_cli.core import ingest

    monkeypatch.setattr(ingest, "CHUNK_BYTES", 1_000)  # several chunks
    items = readings(42)  # 14 steps x 3 greenhouses
    lines = [json.dumps(r) for r in items]
    lines.insert(20, "")
    lines[30] = '{"greenhouse_id": "gh-1"}'
    target = make_target(stack)
    result = target.ingest_stream(io.BytesIO("\n".join(lines).encode()))
    assert result.accepted == 41
    assert [(r.index + 1, r.reason.split(":")[0]) for r in result.rejected] == [
        (31, "missing field(s)")
    ]
    landed = read_stream(stack)
    assert len(landed) == 41 and items[29] not in landed


def test_rejected_lists_firehose_error_output_with_the_core_reason(stack):
    raw = {
        "greenhouse_id": "gh-1",
        "device_id": "d-1",
        "timestamp": "yesterday",
        "temperature": 20,
        "humidity": 50,
        "co2": 400,
        "error_code": 0,
    }
    record = {
        "attemptsMade": 1,
        "arrivalTimestamp": 1_764_000_000_000,
        "errorCode": "Lambda.ProcessingFailedStatus",
        "errorMessage": "ProcessingFailed status set for record",
        "rawData": base64.b64encode(json.dumps(raw).encode()).decode(),
    }
    stack.session.client("s3").put_object(
        Bucket="sf-logs",
        Key="errors/processing-failed/year=2025/month=11/day=24/sf-delivery-1",
        Body=json.dumps(record).encode() + b"\n",
    )
    result = CliRunner().invoke(app, ["rejected", "-o", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 1
    assert rows[0]["source"] == "processing-failed"
    assert rows[0]["reason"].startswith("timestamp 'yesterday' is not ISO-8601")
    assert rows[0]["received"] == "2025-11-24T16:00:00.000Z"
    assert json.loads(rows[0]["raw"]) == raw


def test_simulate_posts_to_the_simulator_api_with_its_key(stack, httpserver, monkeypatch):
    # The local server stands in for API Gateway: the documented emulator opt-in.
    monkeypatch.setenv("SMARTFARM_EMULATOR_URL", httpserver.url_for("/"))
    stack.outputs["simulator_api_url"] = httpserver.url_for("/v1/")
    save_outputs(stack.home, stack.outputs)
    httpserver.expect_request(
        "/v1/",
        method="POST",
        headers={"x-api-key": SIMULATOR_KEY},
        json={
            "count": 12,
            "interval": 10.0,
            "greenhouses": 2,
            "devices": 1,
            "anomaly_rate": 0.0,
            "seed": 5,
        },
    ).respond_with_json({"run_id": "run-42", "status": "started"}, status=202)
    result = CliRunner().invoke(
        app, ["simulate", "--count", "12", "--interval", "10", "-g", "2", "--seed", "5"]
    )
    assert result.exit_code == 0, result.output
    assert "started pseudo_sensor_log run run-42: 24 readings in 12 sends" in " ".join(
        result.output.split()
    )
    assert SIMULATOR_KEY not in result.output
    httpserver.check_assertions()


def test_simulator_api_refusal_is_one_clear_line(stack, httpserver, monkeypatch):
    monkeypatch.setenv("SMARTFARM_EMULATOR_URL", httpserver.url_for("/"))
    stack.outputs["simulator_api_url"] = httpserver.url_for("/v1/")
    save_outputs(stack.home, stack.outputs)
    httpserver.expect_request("/v1/").respond_with_json({"message": "Forbidden"}, status=403)
    result = CliRunner().invoke(app, ["simulate"])
    assert_one_error(result, "the simulator API refused the API key (403 Forbidden)")
    assert SIMULATOR_KEY not in result.output


# -- backfill --------------------------------------------------------------------------------


def test_backfill_writes_the_same_hourly_objects_as_local(stack, tmp_path):
    end = datetime(2026, 11, 20, 12, 30, tzinfo=UTC)
    kwargs = dict(
        days=0.5, greenhouses=2, devices=1, interval_s=600.0, anomaly_rate=0.1, seed=3, end=end
    )
    local = LocalTarget(tmp_path / "local")
    expected, expected_bad = local.backfill(**kwargs)
    report, bad = make_target(stack).backfill(**kwargs)
    assert report.files == expected.files and len(report.files) == 13
    assert re.search(r"hour=00/backfill-[0-9a-f]{16}\.parquet$", report.files[0])
    assert (report.readings, report.spikes, bad) == (
        expected.readings,
        expected.spikes,
        expected_bad,
    )
    s3 = stack.session.client("s3")
    from smartfarm_cli.core.lake import read_parquet_bytes

    for key in report.files:
        obj = s3.get_object(Bucket="sf-logs", Key=key)
        assert obj["Metadata"] == {"smartfarm-source": "backfill"}
        assert read_parquet_bytes(obj["Body"].read()).equals(
            read_parquet_bytes((local.logs.path(key)).read_bytes())
        )
    # A second, overlapping backfill adds only new readings and replaces no object.
    later = end + timedelta(minutes=70)
    again, _ = make_target(stack).backfill(**{**kwargs, "end": later})
    assert again.already_stored == 144 - 14 and again.readings == 14
    assert not set(again.files) & set(report.files)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="sf-logs")["Contents"]]
    stored = pa.concat_tables(
        [read_parquet_bytes(s3.get_object(Bucket="sf-logs", Key=k)["Body"].read()) for k in keys]
    )
    assert stored.num_rows == 158
    assert (
        stored.group_by(["greenhouse_id", "device_id", "timestamp"]).aggregate([]).num_rows == 158
    )
    local.close()


# -- queries -------------------------------------------------------------------------------------


def _athena_type(values) -> str:
    sample = next((v for v in values if v is not None), "")
    if isinstance(sample, datetime):  # Trino's from_unixtime gives a zoned timestamp
        return "timestamp with time zone" if sample.tzinfo else "timestamp"
    if isinstance(sample, bool):
        return "boolean"
    if isinstance(sample, int):
        return "bigint"
    if isinstance(sample, float):
        return "double"
    return "varchar"


def _athena_text(value) -> dict:
    if value is None:
        return {}
    if isinstance(value, datetime):
        zone = " UTC" if value.tzinfo else ""
        moment = value.astimezone(UTC) if value.tzinfo else value
        return {"VarCharValue": moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + zone}
    return {"VarCharValue": repr(value) if isinstance(value, float) else str(value)}


def inject_athena_result(columns: list[str], rows: list[tuple]) -> None:
    """What Athena would answer: a header row, then the rows as text, plus column types."""
    table = [{"Data": [{"VarCharValue": c} for c in columns]}]
    table += [{"Data": [_athena_text(v) for v in row]} for row in rows]
    info = [
        {
            "CatalogName": "hive",
            "SchemaName": "",
            "TableName": "",
            "Name": column,
            "Label": column,
            "Type": _athena_type([row[i] for row in rows]),
            "Precision": 0,
            "Scale": 0,
            "Nullable": "UNKNOWN",
            "CaseSensitive": False,
        }
        for i, column in enumerate(columns)
    ]
    body = {"region": REGION, "results": [{"rows": table, "column_info": info}]}
    assert requests.post(ATHENA_RESULTS_API, json=body, timeout=5).status_code == 201


def athena_executions(stack) -> list[dict]:
    athena = stack.session.client("athena")
    ids = athena.list_query_executions(WorkGroup="smartfarm")["QueryExecutionIds"]
    return [athena.get_query_execution(QueryExecutionId=i)["QueryExecution"] for i in ids]


@pytest.fixture
def local_lake(tmp_path):
    """A local lake with two greenhouses and some anomalies over the last day."""
    home = tmp_path / "local-home"
    target = LocalTarget(home)
    target.backfill(days=1, greenhouses=2, devices=1, interval_s=900, anomaly_rate=0.2, seed=4)
    yield target
    target.close()


@pytest.mark.parametrize(
    "args",
    [
        # the backfilled lake is synthetic, which trend leaves out unless asked
        ["trend", "temperature", "--days", "2", "--synthetic", "include"],
        [
            *("trend", "co2", "--days", "2", "--every", "6h", "--greenhouse", "gh-2"),
            *("--synthetic", "include", "-o", "json"),
        ],
        [
            *("trend", "humidity", "--days", "2", "--every", "1d", "--tz", "Asia/Seoul"),
            *("--synthetic", "include", "-o", "csv"),
        ],
        ["spikes", "--since", "2d"],
        ["spikes", "--since", "2d", "-s", "critical", "-o", "csv"],
        ["latest"],
    ],
)
def test_athena_results_render_exactly_like_local(stack, local_lake, monkeypatch, args):
    answered = []
    original = LocalTarget._execute  # where every local statement runs, ours or the user's

    def recording_query(self, *args, **kwargs):
        answered.append(original(self, *args, **kwargs))
        return answered[-1]

    monkeypatch.setattr(LocalTarget, "_execute", recording_query)
    local_out = CliRunner().invoke(
        app, ["--target", "local", "--home", str(local_lake.home), *args]
    )
    assert local_out.exit_code == 0, local_out.output
    (expected,) = answered  # what DuckDB answered, now as Athena would return it
    assert expected.rows, "the local lake should give rows to compare"
    inject_athena_result(expected.columns, expected.rows)
    aws_out = CliRunner().invoke(app, ["--target", "aws", *args])
    assert aws_out.exit_code == 0, aws_out.output
    assert aws_out.stdout == local_out.stdout
    assert "Athena scanned 0 B" in aws_out.stderr and "$5/TB" in aws_out.stderr
    (execution,) = athena_executions(stack)
    assert execution["WorkGroup"] == "smartfarm"
    assert execution["QueryExecutionContext"]["Database"] == "smartfarm"
    assert "concat(year, month, day" in execution["Query"].lower()  # partition predicate
    if "--greenhouse" in args:
        assert execution["ExecutionParameters"] == ["'gh-2'"]
    if "--tz" in args:
        assert "'Asia/Seoul'" in execution["Query"]  # AT TIME ZONE (sqlglot: AT_TIMEZONE)
        assert "\n2026-11-" in aws_out.stdout and ".000+09:00,gh-" in aws_out.stdout
    if "-s" in args:
        assert execution["ExecutionParameters"] == ["'critical'"]


def test_user_values_travel_as_quoted_execution_parameters(stack):
    hostile = "gh-1' OR '1'='1"
    inject_athena_result(["spikes"], [])
    target = make_target(stack)
    target.spikes("1d", "warning", hostile, 10)
    (execution,) = athena_executions(stack)
    assert hostile not in execution["Query"]
    assert execution["Query"].count("?") == 2
    assert execution["ExecutionParameters"] == ["'warning'", "'gh-1'' OR ''1''=''1'"]
    assert athena_literal(3) == "3" and athena_literal(None) == "NULL"


def test_query_converts_athena_types_to_python_values(stack):
    inject_athena_result(
        ["bucket", "greenhouse_id", "avg", "readings"],
        [
            (datetime(2026, 11, 1, 10), "gh-1", 21.5, 3),
            (datetime(2026, 11, 1, 11), "gh-1", None, 4),
        ],
    )
    result = make_target(stack).query("SELECT 1")
    assert result.rows == [
        (datetime(2026, 11, 1, 10), "gh-1", 21.5, 3),
        (datetime(2026, 11, 1, 11), "gh-1", None, 4),
    ]
    assert [type(v) for v in result.rows[0]] == [datetime, str, float, int]
    assert "billed 10.0 MB" in result.note


# -- watch -----------------------------------------------------------------------------------------


def test_follow_yields_records_put_into_kinesis(stack):
    target = make_target(stack)
    batches = target.follow(poll_s=0.01)
    assert next(batches).num_rows == 0  # from LATEST: nothing yet
    items = readings(6)
    kinesis = stack.session.client("kinesis")
    kinesis.put_records(
        StreamName="sf-readings",
        Records=[
            *({"Data": json.dumps(r).encode(), "PartitionKey": r["greenhouse_id"]} for r in items),
            {"Data": b"not json", "PartitionKey": "x"},
        ],
    )
    seen = []
    for _ in range(10):
        table = next(batches)
        seen.extend(table.to_pylist())
        assert table.schema == READING_SCHEMA
        if len(seen) >= 6:
            break
    assert sorted((r["greenhouse_id"], r["temperature"]) for r in seen) == sorted(
        (r["greenhouse_id"], r["temperature"]) for r in items
    )


def test_watch_shows_records_put_while_watching(stack):
    items = readings(3)

    def feed():
        time.sleep(1.0)  # after watch has its LATEST shard iterators, even on a loaded machine
        other = AwsTarget(TargetOptions(home=stack.home))
        other.ingest(items)

    thread = threading.Thread(target=feed)
    thread.start()
    result = CliRunner().invoke(app, ["watch", "--duration", "4", "--refresh", "0.05"])
    thread.join()
    assert result.exit_code == 0, result.output
    assert "3 devices, 3 readings seen" in result.output
    for reading in items:
        assert reading["greenhouse_id"] in result.output


# -- crawler ---------------------------------------------------------------------------------------


def test_crawl_wait_goes_running_to_ready(stack):
    # 1 s of RUNNING at 0.05 s polls: a loaded machine still sees it twice (0.3 s did not).
    state_manager.set_transition("glue::crawl", {"progression": "time", "seconds": 1.0})
    target = make_target(stack)
    target.sleep = time.sleep
    states: list[str] = []
    info = target.crawl(wait=True, progress=lambda state, _: states.append(state), poll_s=0.05)
    assert states[0] == "RUNNING" and states[-1] == "READY"
    assert states.count("RUNNING") >= 2  # seen running by get_crawler, not only assumed
    assert info["state"] == "READY" and info["last crawl"] == "COMPLETED"
    assert info["tables created"] == "none"


def test_crawl_cli_and_already_running(stack):
    state_manager.set_transition("glue::crawl", {"progression": "manual", "times": 1000})
    result = CliRunner().invoke(app, ["crawl"])
    assert result.exit_code == 0, result.output
    assert "RUNNING" in result.output
    result = CliRunner().invoke(app, ["run-crawler"])
    assert_one_error(result, "crawler sf-crawler is already running")
    state_manager.set_transition("glue::crawl", {"progression": "immediate"})
    result = CliRunner().invoke(app, ["crawl", "--wait", "-o", "json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["state"] == "READY"


# -- status --------------------------------------------------------------------------------------


def test_status_reports_stream_freshness_crawler_spikes_and_dlq(stack):
    s3 = stack.session.client("s3")
    for key in (
        "logs/year=2026/month=11/day=27/hour=23/a.parquet",
        "logs/year=2026/month=11/day=28/hour=01/b.parquet",
        "logs/year=2026/month=10/day=30/hour=05/c.parquet",
    ):
        s3.put_object(Bucket="sf-logs", Key=key, Body=b"x")
    inject_athena_result(["spikes", "synthetic"], [(4, 1)])
    result = CliRunner().invoke(app, ["status", "-o", "json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["target"] == "aws" and info["region"] == REGION
    assert info["stream"].startswith("sf-readings: ACTIVE")
    assert info["newest_log_object"].startswith("logs/year=2026/month=11/day=28/hour=01/b.parquet")
    assert info["crawler"] == "sf-crawler: READY"
    assert info["spikes_today_utc"] == 4 and info["synthetic_spikes_today"] == 1
    assert info["alerts_waiting_in_dlq"] == 0
    assert SIMULATOR_KEY not in result.output and INGEST_KEY not in result.output


# -- errors ----------------------------------------------------------------------------------------


def _raise(code: str, message: str):
    def handler(model, **kwargs):
        raise ClientError({"Error": {"Code": code, "Message": message}}, model.name)

    return handler


@pytest.mark.parametrize(
    ("event", "code", "args", "expected"),
    [
        (
            "before-call.athena.StartQueryExecution",
            "AccessDeniedException",
            ["trend", "temperature"],
            "AWS denied StartQueryExecution (AccessDeniedException)",
        ),
        (
            "before-call.glue.StartCrawler",
            "ExpiredTokenException",
            ["crawl"],
            "the AWS credentials have expired (ExpiredTokenException in StartCrawler)",
        ),
        (
            "before-call.kinesis.DescribeStreamSummary",
            "LimitExceededException",
            ["status"],
            "AWS throttled DescribeStreamSummary (LimitExceededException) even after retries",
        ),
        (
            "before-call.kinesis.PutRecords",
            "UnrecognizedClientException",
            ["simulate", "--direct", "--count", "2", "--interval", "0"],
            "AWS does not recognise the credentials (UnrecognizedClientException in PutRecords)",
        ),
    ],
)
def test_aws_errors_end_in_one_clear_line(stack, aws_events, event, code, args, expected):
    aws_events.append((event, _raise(code, "nope\nsecond line")))
    result = CliRunner().invoke(app, args)
    assert_one_error(result, expected)


def test_missing_resource_is_one_clear_line(stack):
    stack.session.client("kinesis").delete_stream(StreamName="sf-readings")
    result = CliRunner().invoke(app, ["simulate", "--direct", "--count", "1", "--interval", "0"])
    assert_one_error(result, "PutRecords found no such resource in ap-northeast-2")
    assert "farmctl deploy" in result.output


def test_missing_credentials_is_one_clear_line(stack, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    result = CliRunner().invoke(app, ["crawl"])
    assert_one_error(result, "no usable AWS credentials")


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TABLE copy_of AS SELECT * FROM readings",
        "INSERT INTO readings SELECT * FROM readings",
        "DROP TABLE readings",
        "SELECT * FROM other_db.readings",
        "SELECT 1; SELECT 2",
    ],
)
def test_aws_query_refuses_anything_but_one_select_before_athena(stack, sql):
    result = CliRunner().invoke(app, ["--target", "aws", "query", sql])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert athena_executions(stack) == []  # refused before any query reached Athena
