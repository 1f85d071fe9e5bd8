"""R4 Kinesis: partial PutRecords failures and throttling (moto Kinesis + botocore hooks).

Already proven (tests/test_aws_target.py): one partial failure of the first call re-sends
exactly the failed entries; an always-failing stream stops after MAX_TRIES with a clear error
and the unsent readings saved.

Filled here:
- any mix (hypothesis) of partial failures with several error codes and whole-call throttling
  exceptions, over several calls and batches: only failed entries are re-sent, every reading is
  read back from the stream exactly once, calls and backoff sleeps are bounded;
- throttled on every call: bounded tries, one clear error, and the saved unsent file, re-sent
  with `farmctl ingest FILE`, lands everything exactly once;
- a failure in the MIDDLE batch: the earlier batch stays sent, the unsent file holds exactly the
  rest, no reading is both sent and saved.

moto never fails an entry (REFERENCE.md section 10), so failing entries are removed from the
request before moto sees it (`before-parameter-build`) and put back as errors in the parsed
answer (`after-call`); a call that fails entirely is answered in `before-call`.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from pathlib import Path

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws
from typer.testing import CliRunner

from smartfarm_cli.cli import app
from smartfarm_cli.core import generator
from smartfarm_cli.errors import FarmctlError
from smartfarm_cli.stack import save_outputs
from smartfarm_cli.targets import TargetOptions, aws_kinesis
from smartfarm_cli.targets.aws import AwsTarget

REGION = "ap-northeast-2"
STREAM = "r4-readings"
PROPERTY_EXAMPLES = 15
CODES = ["ProvisionedThroughputExceededException", "InternalFailure", "KMSThrottlingException"]
THROTTLE = "throttle"


class Faults:
    """Decides, per PutRecords call, which entries fail (or that the whole call is throttled)."""

    def __init__(self):
        self.plan = lambda call, entries: {}  # -> {index: code} or THROTTLE
        self.calls: list[list[bytes]] = []  # the Data of every entry of every call
        self.outcomes: list[object] = []
        self._failing: dict[int, str] = {}
        self._all = False

    def before_build(self, params, **kwargs):
        entries = params["Records"]
        self.calls.append([e["Data"] for e in entries])
        decision = self.plan(len(self.calls), len(entries))
        self.outcomes.append(decision)
        self._failing = {} if decision == THROTTLE else dict(decision)
        self._all = decision == THROTTLE or len(self._failing) == len(entries)
        if not self._all:
            params["Records"] = [e for i, e in enumerate(entries) if i not in self._failing]

    def before_call(self, model, params, **kwargs):
        if not self._all:
            return None
        if self.outcomes[-1] == THROTTLE:
            raise ClientError(
                {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "Rate"}},
                "PutRecords",
            )
        failed = [
            {"ErrorCode": self._failing[i], "ErrorMessage": "injected"}
            for i in range(len(self._failing))
        ]
        parsed = {"FailedRecordCount": len(failed), "Records": failed, "EncryptionType": "NONE"}
        return AWSResponse("https://kinesis", 200, {}, None), parsed

    def after_call(self, parsed, **kwargs):
        if self._all or not self._failing:
            return
        records = list(parsed["Records"])
        for index in sorted(self._failing):
            records.insert(index, {"ErrorCode": self._failing[index], "ErrorMessage": "injected"})
        parsed["Records"] = records
        parsed["FailedRecordCount"] = len(self._failing)


FAULTS = Faults()
STATS = {"examples": 0, "calls": 0, "resent": 0}  # printed with -s, quoted in README


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    home = tmp_path_factory.mktemp("r4") / "home"
    home.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
        }.items():
            mp.setenv(name, value)
        original = AwsTarget._new_session

        def new_session(self):
            session = original(self)
            session.events.register(
                "before-parameter-build.kinesis.PutRecords", FAULTS.before_build
            )
            session.events.register("before-call.kinesis.PutRecords", FAULTS.before_call)
            session.events.register("after-call.kinesis.PutRecords", FAULTS.after_call)
            return session

        mp.setattr(AwsTarget, "_new_session", new_session)
        with mock_aws():
            import boto3

            session = boto3.Session(region_name=REGION)
            session.client("kinesis").create_stream(StreamName=STREAM, ShardCount=2)
            s3 = session.client("s3")
            s3.create_bucket(
                Bucket="r4-logs", CreateBucketConfiguration={"LocationConstraint": REGION}
            )
            outputs = {"region": REGION, "stream_name": STREAM, "log_bucket": "r4-logs"}
            save_outputs(home, outputs)
            yield session.client("kinesis"), home


@pytest.fixture(autouse=True)
def fresh_faults():
    FAULTS.__init__()
    yield
    FAULTS.__init__()


def read_back(kinesis, tag: str) -> list[bytes]:
    """Every record carrying `tag` (in greenhouse_id), read from every shard from the start."""
    found = []
    for shard in kinesis.list_shards(StreamName=STREAM)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=STREAM, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            response = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            found += [r["Data"] for r in response["Records"] if tag.encode() in r["Data"]]
            if not response["Records"]:
                break
            iterator = response["NextShardIterator"]
    return found


def readings(n: int, tag: str) -> list[dict]:
    start = int(time.time() * 1000) - 3_600_000
    table = generator.generate(start, n, 1.0, 1, 1, 0.0, seed=11).table
    items = generator.to_json_records(table)
    for number, item in enumerate(items):
        item["greenhouse_id"] = tag
        item["device_id"] = f"d{number}"  # unique per reading
    return items


def target(home: Path, sleeps: list) -> AwsTarget:
    t = AwsTarget(TargetOptions(home=home))
    t.sleep = sleeps.append
    return t


def check_resends_are_exactly_the_failures() -> None:
    """Each call after a failed one carries exactly the entries that failed, in order."""
    previous_failed: list[bytes] | None = None
    for sent, outcome in zip(FAULTS.calls, FAULTS.outcomes, strict=True):
        if previous_failed:
            assert sent == previous_failed
        if outcome == THROTTLE:
            previous_failed = sent
        else:
            previous_failed = [d for i, d in enumerate(sent) if i in outcome] or None


@settings(max_examples=PROPERTY_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    n=st.integers(1, 1200),
    faulty_calls=st.lists(
        st.one_of(
            st.just(THROTTLE),
            st.tuples(st.floats(0.001, 1.0), st.sampled_from(CODES), st.integers(0, 2**32)),
        ),
        max_size=aws_kinesis.MAX_TRIES - 1,  # so that every batch can still get through
    ),
)
def test_partial_failures_and_throttling_lose_nothing_and_duplicate_nothing(stack, n, faulty_calls):
    kinesis, home = stack
    FAULTS.__init__()
    tag = f"r4-{uuid.uuid4().hex[:10]}"

    def plan(call, entries):
        if call > len(faulty_calls):
            return {}
        fault = faulty_calls[call - 1]
        if fault == THROTTLE:
            return THROTTLE
        share, code, seed = fault
        rng = random.Random(seed)
        return {i: code for i in range(entries) if rng.random() < share}

    FAULTS.plan = plan
    sleeps: list[float] = []
    items = readings(n, tag)
    result = target(home, sleeps).ingest(items)
    assert result.accepted == n and result.rejected == []
    landed = read_back(kinesis, tag)
    assert len(landed) == n  # zero loss, zero duplicates
    assert sorted(json.loads(d)["device_id"] for d in landed) == sorted(
        i["device_id"] for i in items
    )
    batches = -(-n // aws_kinesis.MAX_RECORDS)
    assert len(FAULTS.calls) <= batches + len(faulty_calls)
    assert len(sleeps) == len(FAULTS.calls) - batches  # one backoff per re-send, no more
    assert all(0 <= s <= aws_kinesis.BACKOFF_CAP_S for s in sleeps)
    check_resends_are_exactly_the_failures()
    STATS["examples"] += 1
    STATS["calls"] += len(FAULTS.calls)
    STATS["resent"] += sum(len(c) for c in FAULTS.calls) - n


def test_throttled_on_every_call_is_bounded_then_the_saved_file_resends_everything(stack):
    kinesis, home = stack
    tag = f"r4-{uuid.uuid4().hex[:10]}"
    FAULTS.plan = lambda call, entries: THROTTLE
    sleeps: list[float] = []
    items = readings(700, tag)
    started = time.monotonic()
    with pytest.raises(FarmctlError) as caught:
        target(home, sleeps).ingest(items)
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert message.startswith(
        "Kinesis refused 700 readings after 6 tries (ProvisionedThroughputExceededException x500);"
        " 0 were sent."
    )
    assert len(FAULTS.calls) == aws_kinesis.MAX_TRIES and len(sleeps) == aws_kinesis.MAX_TRIES - 1
    for attempt, slept in enumerate(sleeps, start=1):  # capped exponential backoff (full jitter)
        assert 0 <= slept <= min(aws_kinesis.BACKOFF_CAP_S, aws_kinesis.BACKOFF_BASE_S * 2**attempt)
    assert read_back(kinesis, tag) == []
    saved = Path(message.split("The unsent ones are in ")[1].split(":")[0])
    assert len(saved.read_text().splitlines()) == 700

    FAULTS.plan = lambda call, entries: {}  # the stream has capacity again
    result = CliRunner().invoke(app, ["--target", "aws", "--home", str(home), "ingest", str(saved)])
    assert result.exit_code == 0, result.output
    assert "accepted 700, rejected 0" in result.stderr
    landed = read_back(kinesis, tag)
    assert sorted(json.loads(d)["device_id"] for d in landed) == sorted(
        i["device_id"] for i in items
    )


def test_failure_in_the_middle_batch_keeps_the_sent_and_saves_exactly_the_rest(stack):
    kinesis, home = stack
    tag = f"r4-{uuid.uuid4().hex[:10]}"
    stuck = {3, 99, 250, 251, 400, 401, 499}

    def plan(call, entries):
        if call == 1:
            return {}
        return {i: "InternalFailure" for i in range(entries) if call == 2 and i in stuck} or (
            {i: "InternalFailure" for i in range(entries)} if call > 2 else {}
        )

    FAULTS.plan = plan
    items = readings(1200, tag)
    with pytest.raises(FarmctlError) as caught:
        target(home, []).ingest(items)
    message = str(caught.value)
    unsent_count = len(stuck) + 200
    assert (
        f"Kinesis refused {unsent_count} readings after 6 tries (InternalFailure x7); " in message
    )
    assert f"{500 + 500 - len(stuck)} were sent" in message
    saved = Path(message.split("The unsent ones are in ")[1].split(":")[0])
    unsent = [json.loads(line)["device_id"] for line in saved.read_text().splitlines()]
    landed = [json.loads(d)["device_id"] for d in read_back(kinesis, tag)]
    assert len(landed) == len(set(landed)) == 1200 - unsent_count
    assert set(landed).isdisjoint(unsent)  # nothing both sent and saved
    assert sorted(landed + unsent) == sorted(i["device_id"] for i in items)  # nothing lost
    # only the failed entries were ever re-sent
    assert all(len(call) == len(stuck) for call in FAULTS.calls[2:])


def test_zz_report_property_counts(capsys):
    with capsys.disabled():
        print(f"\nR4 property: {STATS}")
    assert STATS["examples"] == 0 or STATS["resent"] > 0  # the faults really fired
