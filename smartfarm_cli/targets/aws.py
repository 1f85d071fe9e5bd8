"""The `aws` target: the deployed stack, driven with the caller's credentials.

ingest / simulate --direct   core validation, then Kinesis PutRecords (<= 500 records, <= 5 MiB per
                             call), re-sending only failed entries (aws_kinesis.KinesisSender)
simulate                     POST to pseudo_api_gw with its API key; the Lambda sends server-side
backfill                     hourly Parquet objects straight into the log bucket; the bucket's
                             notification runs the anomaly Lambda on each
query / trend / spikes       Athena through awswrangler (workgroup, ctas_approach=False), user
                             values as server-side execution parameters
watch (follow)               Kinesis GetRecords on every shard from LATEST
deploy / destroy             terraform (smartfarm_cli.stack), outputs cached in <home>
crawl                        the Glue crawler, polled until READY

boto3, botocore, awswrangler and pandas are imported inside the methods that need them, and no
AWS call happens before a method is called: `farmctl --help` stays instant.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import gzip
import json
import math
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa

from .. import stack, state_backend
from ..core import generator, lake, queries
from ..core.rules import Rules, load_rules
from ..core.schema import READING_SCHEMA
from ..core.validate import Rejected, Unparsable, validate
from ..errors import FarmctlError, UserError
from . import TargetOptions
from .aws_errors import mapped, translate
from .aws_kinesis import KinesisSender, Unsent, decode, entry
from .local import default_home
from .results import (
    KEY_COLUMNS,
    DeliveryReport,
    IngestResult,
    NewKey,
    QueryResult,
    SimulateReport,
)

ATHENA_USD_PER_TB = 5.0
ATHENA_MIN_BILLED_BYTES = 10 * 1000**2  # Athena bills at least 10 MB per query
ERROR_ROOT = "errors"
CLI_REJECTED_TYPE = "farmctl-rejected"
CRAWL_POLL_S = 5.0
CRAWL_TIMEOUT_S = 3600.0
MIN_POLL_S = 0.2  # GetRecords allows 5 calls per second per shard
SIMULATOR_TIMEOUT_S = 35.0
BACKFILL_THREADS = 8
KEY_USAGE_DAYS = 30  # `keys list`: how far back GetUsage looks for a key's last use

Progress = Callable[[int, int], None]
Echo = Callable[[str], None]


class AwsTarget:
    name = "aws"

    def __init__(self, options: TargetOptions | None = None, rules: Rules | None = None):
        self.options = options or TargetOptions()
        self.rules = rules or load_rules()
        self.home = Path(self.options.home) if self.options.home else default_home()
        self.stack_dir = Path(self.options.stack_dir or stack.DEFAULT_STACK_DIR)
        self.sleep: Callable[[float], None] = time.sleep
        self._outputs: stack.StackOutputs | None = None
        self._session = None
        self._clients: dict[str, object] = {}

    # -- stack and session -------------------------------------------------------------------

    def error_context(self) -> tuple[str | None, str | None]:
        region = self.options.region
        if region is None and self._outputs is not None:
            region = self._outputs.optional("region")
        return region, self.options.profile

    def prepare(self, writes: bool) -> None:
        """Fail early, in one line, when no deployed stack is known (reading or writing)."""
        del writes
        _ = self.outputs

    @property
    def outputs(self) -> stack.StackOutputs:
        if self._outputs is None:
            outputs = stack.load_outputs(self.home, self.options.stack_dir, self._terraform_env())
            deployed = outputs["region"]
            if self.options.region and self.options.region != deployed:
                raise FarmctlError(
                    f"the stack is deployed in {deployed} but the region is set to "
                    f"{self.options.region} (--region / AWS_REGION): pass --region {deployed} "
                    "or unset AWS_REGION"
                )
            self._outputs = outputs
        return self._outputs

    @property
    def region(self) -> str:
        return self.options.region or self.outputs["region"]

    def _new_session(self):
        import boto3

        return boto3.Session(profile_name=self.options.profile, region_name=self.region)

    @property
    def session(self):
        if self._session is None:
            self._session = self._new_session()
        return self._session

    def client(self, service: str):
        if service not in self._clients:
            from botocore.config import Config

            config = Config(
                retries={"mode": "standard", "max_attempts": 5},
                connect_timeout=10,
                read_timeout=60,
                user_agent_extra="farmctl",
            )
            self._clients[service] = self.session.client(service, config=config)
        return self._clients[service]

    def _terraform_env(self) -> dict[str, str]:
        return stack.terraform_env(self.options.profile, self.options.region)

    def discord_webhook_parameter(self) -> str | None:
        """Name of the SSM SecureString holding the Discord webhook URL (never the URL)."""
        return self.outputs.optional("discord_webhook_ssm_parameter") or None

    def _own_api_url(self, output: str) -> str:
        """An API URL from the outputs, once its API is known to be this account's.

        stack.check_api_urls has vetted the shape (the stack region's execute-api host); this
        asks API Gateway, with the caller's credentials, whether that REST API exists here, so
        an API key is never sent to an API someone else owns. URLs on the explicit loopback
        emulator carry no API id and are taken as they are.
        """
        url = self.outputs[output]
        api = stack.api_id(url)
        if api is None:
            return url
        try:
            self.client("apigateway").get_rest_api(restApiId=api)
        except Exception as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            if code not in ("NotFoundException", "NotFound"):
                raise
            raise FarmctlError(
                f"the {output} in the stack outputs ({self.outputs.source}) names REST API "
                f"{api}, which does not exist in this account in {self.region}: the API key is "
                "not sent; run `farmctl deploy` to refresh the outputs"
            ) from None
        return url

    def _api_key(self, output: str) -> str:
        """The value of an API key the stack created (fetched, never printed or cached)."""
        response = self.client("apigateway").get_api_key(
            apiKey=self.outputs[output], includeValue=True
        )
        value = response.get("value")
        if not value:
            raise FarmctlError(
                f"API Gateway returned no value for the key {self.outputs[output]}: the caller "
                "needs apigateway:GET on /apikeys"
            )
        return value

    # -- feeding the pipeline ----------------------------------------------------------------

    def _sender(self, sleep: Callable[[float], None] | None = None) -> KinesisSender:
        return KinesisSender(
            self.client("kinesis"), self.outputs["stream_name"], sleep or self.sleep
        )

    def _send(self, sender: KinesisSender, readings: list[dict], done_before: int = 0) -> None:
        """Send readings through `sender`; whatever Kinesis still refuses is saved, not lost."""
        try:
            sender.send(entry(r) for r in readings)
        except Unsent as unsent:
            path = self._save_unsent(unsent.entries)
            codes = ", ".join(f"{code} x{n}" for code, n in sorted(unsent.codes.items()))
            raise FarmctlError(
                f"Kinesis refused {len(unsent.entries):,} readings after {unsent.tries} tries "
                f"({codes}); {done_before + unsent.sent:,} were sent. The unsent ones are in "
                f"{path}: re-send them with `farmctl ingest {path}` once the stream has capacity"
            ) from None

    def _save_unsent(self, entries: list[dict]) -> Path:
        folder = self.home / "unsent"
        folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        path = folder / f"{stamp}-{uuid.uuid4().hex[:8]}.ndjson"
        path.write_bytes(b"".join(item["Data"] + b"\n" for item in entries))
        return path

    def _store_rejected(self, rejected: list[Rejected], source: str) -> None:
        """Keep CLI-side rejections beside Firehose's error output, so `rejected` lists both."""
        if not rejected:
            return
        now_ms = int(time.time() * 1000)
        lines = [
            json.dumps(
                {
                    "arrivalTimestamp": now_ms,
                    "errorCode": "farmctl.Rejected",
                    "errorMessage": r.reason,
                    "source": source,
                    "rawData": base64.b64encode(r.raw.encode()).decode(),
                },
                ensure_ascii=False,
            )
            for r in rejected
        ]
        prefix = lake.partition_prefix(
            now_ms, f"{ERROR_ROOT}/{CLI_REJECTED_TYPE}", ("year", "month", "day")
        )
        key = f"{prefix}{now_ms}-{uuid.uuid4().hex[:8]}.json"
        self.client("s3").put_object(
            Bucket=self.outputs["log_bucket"],
            Key=key,
            Body=("\n".join(lines) + "\n").encode(),
            ContentType="application/x-ndjson",
        )

    @mapped
    def ingest(self, items: Iterable, source: str = "ingest", deliver: bool = True) -> IngestResult:
        """Validate raw readings; send the good ones to Kinesis, keep the bad ones with reasons.

        `deliver` is accepted for interface parity: Firehose delivers on its own buffer schedule.
        """
        del deliver
        batch = validate(items)
        self._store_rejected(batch.rejected, source)
        self._send(self._sender(), generator.to_json_records(batch.accepted))
        return IngestResult(batch.accepted.num_rows, batch.rejected)

    @mapped
    def ingest_stream(self, stream: BinaryIO, source: str = "ingest") -> IngestResult:
        """Like `ingest`, for NDJSON / a JSON array of any size, one bounded chunk at a time."""
        from ..core.ingest import read_batches

        result = IngestResult(0, [])
        sender = self._sender()
        for batch in read_batches(stream):
            self._store_rejected(batch.rejected, source)
            self._send(sender, generator.to_json_records(batch.accepted), result.accepted)
            result.accepted += batch.accepted.num_rows
            result.rejected += batch.rejected
        return result

    @mapped
    def simulate(
        self,
        count: int,
        interval_s: float,
        greenhouses: int = 1,
        devices: int = 1,
        anomaly_rate: float = 0.0,
        seed: int | None = None,
        direct: bool = False,
        progress: Progress | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> SimulateReport:
        """Start a pseudo_sensor_log run (default) or send fake readings from here (`direct`)."""
        if not direct:
            return self._simulate_remote(
                count, interval_s, greenhouses, devices, anomaly_rate, seed, progress
            )
        return self._simulate_direct(
            count, interval_s, greenhouses, devices, anomaly_rate, seed, progress, sleep
        )

    def _simulate_remote(
        self, count, interval_s, greenhouses, devices, anomaly_rate, seed, progress
    ) -> SimulateReport:
        import requests

        url = self._own_api_url("simulator_api_url")
        body = {
            "count": count,
            "interval": interval_s,
            "greenhouses": greenhouses,
            "devices": devices,
            "anomaly_rate": anomaly_rate,
            "seed": seed,
        }
        headers = {"x-api-key": self._api_key("simulator_api_key_id")}
        try:
            response = requests.post(url, json=body, headers=headers, timeout=SIMULATOR_TIMEOUT_S)
        except requests.RequestException as exc:
            raise FarmctlError(
                f"cannot reach the simulator API ({type(exc).__name__}): check the network, "
                "or send from this machine with --direct"
            ) from None
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        answer = answer if isinstance(answer, dict) else {}
        reason = answer.get("error") or answer.get("message") or response.reason
        if response.status_code == 400:
            raise UserError(f"the simulator refused the request: {reason}")
        if response.status_code == 403:
            raise FarmctlError(
                f"the simulator API refused the API key (403 {reason}): run `farmctl deploy` "
                "to restore the key and usage plan"
            )
        if response.status_code == 429:
            raise FarmctlError(
                "the simulator API's usage plan throttled or used up its quota (429): wait and "
                "try again, or use --direct"
            )
        if response.status_code >= 300:
            raise FarmctlError(f"the simulator API answered {response.status_code}: {reason}")
        run_id = answer.get("run_id")
        if not run_id:
            raise FarmctlError("the simulator API answered without a run_id")
        if progress:
            progress(count, count)
        readings = count * greenhouses * devices
        return SimulateReport(count, readings, 0, 0, {}, run_id=str(run_id))

    def _simulate_direct(
        self, count, interval_s, greenhouses, devices, anomaly_rate, seed, progress, sleep
    ) -> SimulateReport:
        """Readings due by now are sent together: `interval 0` sends 10,000 in 20 calls."""
        seed = int.from_bytes(os.urandom(4), "big") if seed is None else seed
        generated = generator.generate(
            int(time.time() * 1000), count, interval_s, greenhouses, devices, anomaly_rate, seed
        )
        per_send = greenhouses * devices
        sender = self._sender(sleep)
        pending: list[dict] = []
        accepted = rejected = 0

        def flush(everything: bool) -> None:
            nonlocal pending, accepted, rejected
            if not pending:
                return
            keep = 0 if everything else len(pending) % 500
            ready, pending = pending[: len(pending) - keep], pending[len(pending) - keep :]
            batch = validate(ready)
            self._store_rejected(batch.rejected, "simulate")
            accepted += batch.accepted.num_rows
            rejected += len(batch.rejected)
            self._send(sender, generator.to_json_records(batch.accepted))

        started = time.monotonic()
        for step in range(count):
            wait = started + step * interval_s - time.monotonic()
            if wait > 0:
                flush(everything=True)  # nothing waits longer than its own send time
                sleep(wait)
            rows = generated.table.slice(step * per_send, per_send)
            now = pa.scalar(int(time.time() * 1000), pa.timestamp("ms"))
            rows = rows.set_column(2, "timestamp", pa.repeat(now, per_send))
            pending.extend(generator.to_json_records(rows))
            if len(pending) >= 500:
                flush(everything=False)
            if progress:
                progress(step + 1, count)
        flush(everything=True)
        injected = {kind: generated.count(kind) for kind in generator.ANOMALY_KINDS}
        return SimulateReport(count, count * per_send, accepted, rejected, injected)

    @mapped
    def backfill(
        self,
        days: float,
        greenhouses: int = 3,
        devices: int = 2,
        interval_s: float = 60.0,
        anomaly_rate: float = 0.0,
        seed: int = 0,
        end: datetime | None = None,
        progress: Progress | None = None,
    ) -> tuple[DeliveryReport, int]:
        """Generated history as hourly content-addressed backfill objects in the log bucket.

        Same generation, validation, dedupe and key names as the local target: readings an
        object under the same hour prefix already holds are left out, and each hour's new
        readings get a key derived from their bytes, so a backfill never overwrites an object
        and a repeated backfill adds nothing. The bucket notification runs the anomaly Lambda
        on every object; the spike count reported is what the same core rules find in each
        object (the Lambda stores them). Objects carry metadata `smartfarm-source: backfill`,
        so alerting can skip history.
        """
        end = (end or datetime.now(UTC)).replace(second=0, microsecond=0)
        report, bad, generated = DeliveryReport(), 0, 0
        bucket = self.outputs["log_bucket"]
        s3 = self.client("s3")

        def put(item: tuple[str, bytes]) -> None:
            key, data = item
            s3.put_object(
                Bucket=bucket,
                Key=key,
                Body=data,
                ContentType="application/vnd.apache.parquet",
                Metadata={"smartfarm-source": "backfill"},
            )

        def unstored(item: tuple[int, pa.Table]) -> tuple[int, pa.Table]:
            hour_ms, part = item
            stored = [
                lake.read_parquet_bytes(
                    s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
                ).select(list(lake.READING_KEY))
                for page in s3.get_paginator("list_objects_v2").paginate(
                    Bucket=bucket, Prefix=lake.log_prefix(hour_ms)
                )
                for obj in page.get("Contents", [])
                if obj["Key"].endswith(".parquet")
            ]
            return hour_ms, lake.unstored(part, stored)

        with ThreadPoolExecutor(BACKFILL_THREADS) as pool:
            for good, rejected, done, total in generator.history(
                int(end.timestamp() * 1000),
                days,
                interval_s,
                greenhouses,
                devices,
                anomaly_rate,
                seed,
            ):
                bad += rejected
                objects = []
                for hour_ms, part in pool.map(unstored, lake.split_by_time(good, lake.HOUR_MS)):
                    if part.num_rows == 0:
                        continue
                    data = lake.parquet_bytes(part)
                    key = lake.backfill_key(hour_ms, data)
                    objects.append((key, data))
                    report.files.append(key)
                    report.readings += part.num_rows
                    spikes, _ = lake.spike_objects(part, key, self.rules)
                    report.spikes += spikes.num_rows
                list(pool.map(put, objects))
                generated += good.num_rows
                if progress:
                    progress(done, total)
        report.already_stored = generated - report.readings
        return report, bad

    def deliver(self, force: bool = False) -> DeliveryReport:
        """Nothing to do from here: Firehose delivers by its own size/age buffer (<= 60 s)."""
        del force
        return DeliveryReport()

    # -- watching ------------------------------------------------------------------------------

    @mapped
    def follow(self, poll_s: float = 0.2, backlog: int = 500) -> Iterator[pa.Table]:
        """Yield batches of readings arriving on the stream (every shard, from LATEST).

        `backlog` is accepted for interface parity; the stream is read from LATEST, as a live
        view should. Records are validated by the core, so every batch has READING_SCHEMA.
        """
        del backlog
        from botocore.exceptions import ClientError

        kinesis = self.client("kinesis")
        stream_name = self.outputs["stream_name"]
        poll_s = max(poll_s, MIN_POLL_S)
        iterators: dict[str, str | None] = {}
        last_seq: dict[str, str] = {}
        known: set[str] = set()

        def discover(start: str) -> None:
            for shard in _list_shards(kinesis, stream_name):
                shard_id = shard["ShardId"]
                if shard_id in known:
                    continue
                known.add(shard_id)
                iterators[shard_id] = kinesis.get_shard_iterator(
                    StreamName=stream_name, ShardId=shard_id, ShardIteratorType=start
                )["ShardIterator"]

        discover("LATEST")
        while True:
            items: list = []
            reshard = False
            for shard_id, iterator in list(iterators.items()):
                if iterator is None:
                    continue
                try:
                    response = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
                except ClientError as exc:
                    code = exc.response.get("Error", {}).get("Code", "")
                    if code == "ExpiredIteratorException":
                        kind = "AFTER_SEQUENCE_NUMBER" if shard_id in last_seq else "LATEST"
                        extra = (
                            {"StartingSequenceNumber": last_seq[shard_id]}
                            if (shard_id in last_seq)
                            else {}
                        )
                        iterators[shard_id] = kinesis.get_shard_iterator(
                            StreamName=stream_name,
                            ShardId=shard_id,
                            ShardIteratorType=kind,
                            **extra,
                        )["ShardIterator"]
                        continue
                    if code == "ProvisionedThroughputExceededException":
                        continue  # another reader shares the shard: try on the next poll
                    raise
                for record in response.get("Records", []):
                    items.append(decode(record["Data"]))
                    last_seq[shard_id] = record["SequenceNumber"]
                iterators[shard_id] = response.get("NextShardIterator")
                if iterators[shard_id] is None:  # shard closed by a reshard
                    reshard = True
            if reshard:
                discover("TRIM_HORIZON")  # child shards: read them from their start
            table = validate(items).accepted if items else READING_SCHEMA.empty_table()
            yield table
            if table.num_rows == 0:
                time.sleep(poll_s)

    # -- queries -------------------------------------------------------------------------------

    @mapped
    def query(
        self, sql: str, params: list | None = None, partitions_from: str | None = None
    ) -> QueryResult:
        """Run one read-only SELECT in the stack's workgroup; `?` values travel as parameters.

        The SQL passes the same sqlguard as on the local target, and Athena runs the SQL
        regenerated from the checked tree. `partitions_from` is for the local target's file
        listing; on Athena, partition projection prunes by the SQL's own partition predicates.
        """
        del partitions_from
        import awswrangler as wr

        from ..sqlguard import to_dialect

        frame = wr.athena.read_sql_query(
            to_dialect(sql, "athena"),
            database=self.outputs["glue_database"],
            workgroup=self.outputs["athena_workgroup"],
            ctas_approach=False,
            params=[athena_literal(v) for v in params] if params else None,
            paramstyle="qmark",
            boto3_session=self.session,
            athena_query_wait_polling_delay=0.25,
        )
        columns = [str(c) for c in frame.columns]
        metadata = getattr(frame, "query_metadata", None) or {}
        return QueryResult(columns, frame_rows(frame), cost_note(metadata.get("Statistics", {})))

    def run(self, query: queries.Query) -> QueryResult:
        return self.query(query.sql, query.params, query.partitions_from)

    def trend(
        self,
        metric: str,
        days: float,
        every: str = "1h",
        greenhouse: str | None = None,
        zone: str | None = None,
        synthetic: str = "exclude",
    ) -> QueryResult:
        valid = self.rules.impossible.get(metric)
        query = queries.trend(
            metric,
            days,
            every,
            greenhouse,
            valid_range=valid,
            zone=zone,
            copies_by=queries.ATHENA_COPY_ORDER,  # Firehose delivers at least once
            synthetic=synthetic,
        )
        result = self.run(query)
        return QueryResult(*queries.finish_trend(result.columns, result.rows, query), result.note)

    def spikes(
        self,
        since: str = "24h",
        severity: str | None = None,
        greenhouse: str | None = None,
        limit: int = 200,
        detected: bool = False,
        synthetic: str = "include",
    ) -> QueryResult:
        query = queries.spikes(
            since, severity, greenhouse, limit, detected=detected, synthetic=synthetic
        )
        return self.run(query)

    def latest(self, synthetic: str = "include") -> QueryResult:
        query = queries.latest_per_device(
            timedelta(days=1), copies_by=queries.ATHENA_COPY_ORDER, synthetic=synthetic
        )
        return self.run(query)

    @mapped
    def rejected(self, limit: int = 50) -> QueryResult:
        """Newest rejected readings: Firehose's error output plus farmctl's own rejections."""
        s3 = self.client("s3")
        bucket = self.outputs["log_bucket"]
        objects = []
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=f"{ERROR_ROOT}/"
        ):
            objects.extend(page.get("Contents", []))
        objects.sort(key=lambda o: (o["LastModified"], o["Key"]), reverse=True)
        rows: list[tuple] = []
        for number, obj in enumerate(objects):
            if len(rows) >= limit:
                break
            data = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            if data[:2] == b"\x1f\x8b":
                data = gzip.decompress(data)
            kind = obj["Key"].split("/")[1] if obj["Key"].count("/") > 1 else "error"
            records = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
            for line_no, record in enumerate(reversed(records)):
                rows.append(error_row(f"{number + 1}.{line_no + 1}", kind, record))
        rows.sort(key=lambda row: row[1] or datetime.min, reverse=True)
        return QueryResult(["id", "received", "source", "reason", "raw"], rows[:limit])

    # -- incidents (issue 14: core.incidents over the device-state table) ------------------------

    def _state_table(self) -> str:
        table = self.outputs.optional("state_table")
        if not table:
            raise UserError(
                "the deployed stack has no state_table output (it predates incidents): "
                "run farmctl deploy to update it"
            )
        return table

    # -- device API keys (farmctl keys) --------------------------------------------------------
    # Made on the site's usage plan through the API Gateway API, never by Terraform: the values
    # stay out of the Terraform state. The value of a new key is returned once, never listed
    # (GetUsagePlanKeys answers with values: only ids are kept from it).

    def _site_plans(self) -> dict[str, str]:
        plans = self.outputs["ingest_usage_plans"]
        if not isinstance(plans, dict) or not plans:
            raise FarmctlError(
                f"the stack outputs ({self.outputs.source}) hold no site -> usage plan map "
                "(ingest_usage_plans): run `farmctl deploy` to update the stack"
            )
        return plans

    def _keys(self, with_usage: bool) -> tuple[list[tuple], list[str]]:
        """(rows in KEY_COLUMNS order, notes) for every key on the sites' usage plans."""
        apigw = self.client("apigateway")
        known = {}
        for page in apigw.get_paginator("get_api_keys").paginate(includeValues=False):
            for item in page.get("items", []):
                item.pop("value", None)
                known[item["id"]] = item
        shared = self.outputs.optional("ingest_api_key_id")
        rows, notes = [], []
        for site, plan_id in sorted(self._site_plans().items()):
            ids = [
                item["id"]  # the items also carry each key's value: never kept
                for page in apigw.get_paginator("get_usage_plan_keys").paginate(usagePlanId=plan_id)
                for item in page.get("items", [])
                if item.get("type", "API_KEY") == "API_KEY"
            ]
            used = self._last_used(plan_id, notes) if with_usage and ids else {}
            for key_id in ids:
                item = known.get(key_id)
                if item is None:  # deleted while listed
                    continue
                label = item.get("description") or ""
                if key_id == shared:
                    label = "shared key (Terraform: shared_ingest_api_key)"
                created = item.get("createdDate")
                if isinstance(created, datetime):
                    created = created.astimezone(UTC)
                rows.append(
                    (site, key_id, label, bool(item.get("enabled")), created, used.get(key_id))
                )
        rows.sort(key=lambda r: (r[0], r[4] or datetime.min.replace(tzinfo=UTC), r[1]))
        return rows, notes

    def _last_used(self, plan_id: str, notes: list[str]) -> dict:
        """{key id: last day with requests} over the last KEY_USAGE_DAYS (GetUsage, per day)."""
        today = datetime.now(UTC).date()
        start = today - timedelta(days=KEY_USAGE_DAYS - 1)
        found: dict = {}
        try:
            pages = (
                self.client("apigateway")
                .get_paginator("get_usage")
                .paginate(
                    usagePlanId=plan_id, startDate=start.isoformat(), endDate=today.isoformat()
                )
            )
            for page in pages:
                first = page.get("startDate") or start.isoformat()
                first = datetime.strptime(first, "%Y-%m-%d").date()
                for key_id, days in (page.get("items") or {}).items():
                    for offset, day in enumerate(days or []):
                        if day and day[0] > 0:
                            found[key_id] = first + timedelta(days=offset)
        except Exception as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            if code is None:
                raise
            note = f"last_used unknown: API Gateway GetUsage failed ({code})"
            if note not in notes:
                notes.append(note)
            return {}
        return found

    @mapped
    def list_keys(self) -> QueryResult:
        rows, notes = self._keys(with_usage=True)
        notes.append(
            f"last_used: the last day (UTC) with requests in the past {KEY_USAGE_DAYS} days"
        )
        return QueryResult(list(KEY_COLUMNS), rows, note="; ".join(notes))

    @mapped
    def create_key(self, site: str, label: str = "") -> NewKey:
        plans = self._site_plans()
        if site not in plans:
            raise UserError(
                f"site {site!r} is not declared in the stack (sites: {', '.join(sorted(plans))}):"
                " add it to ingest_sites (e.g. in terraform.tfvars) and run `farmctl deploy`"
            )
        apigw = self.client("apigateway")
        plan = apigw.get_usage_plan(usagePlanId=plans[site])
        now = datetime.now(UTC)
        extra = {"description": label} if label else {}
        made = apigw.create_api_key(
            name=f"{plan['name']}-{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:4]}",
            enabled=True,
            tags={"smartfarm:site": site, "smartfarm:created-by": "farmctl"},
            **extra,
        )
        try:
            apigw.create_usage_plan_key(
                usagePlanId=plans[site], keyId=made["id"], keyType="API_KEY"
            )
        except Exception:
            apigw.delete_api_key(apiKey=made["id"])  # no key left outside every plan
            raise
        created = made.get("createdDate")
        created = created.astimezone(UTC) if isinstance(created, datetime) else now
        return NewKey(site, made["id"], created, made["value"])

    @mapped
    def revoke_key(self, key_id: str, delete: bool = False) -> None:
        rows, _ = self._keys(with_usage=False)
        found = [row for row in rows if row[1] == key_id]
        if not found:
            raise UserError(
                f"no key {key_id} on the stack's usage plans: `farmctl keys list` shows the key ids"
            )
        if key_id == self.outputs.optional("ingest_api_key_id"):
            raise UserError(
                f"{key_id} is the shared key Terraform manages: set shared_ingest_api_key = "
                "false and run `farmctl deploy` to remove it"
            )
        apigw = self.client("apigateway")
        if delete:
            plan_id = self._site_plans()[found[0][0]]
            apigw.delete_usage_plan_key(usagePlanId=plan_id, keyId=key_id)
            apigw.delete_api_key(apiKey=key_id)
        else:
            apigw.update_api_key(
                apiKey=key_id,
                patchOperations=[{"op": "replace", "path": "/enabled", "value": "false"}],
            )

    @mapped
    def alerts(self, since: str = "24h", state: str | None = None) -> QueryResult:
        """Open incidents (the `alerts` items) and history (the `_log/` items) in DynamoDB."""
        from ..core import incidents
        from ..core.state import DynamoEventLog, DynamoStateStore

        try:
            kinds = incidents.history_kinds(state)
        except ValueError as exc:
            raise queries.QueryError(str(exc)) from None
        now = datetime.now(UTC)
        start_ms = int((now - queries.parse_duration(since)).timestamp() * 1000)
        client, table = self.client("dynamodb"), self._state_table()
        open_ = []
        if state in (None, "open"):
            open_ = incidents.open_incidents(DynamoStateStore(client, table))
        history = []
        if kinds:
            history = DynamoEventLog(client, table).since(start_ms, int(now.timestamp() * 1000))
        rows = incidents.alert_rows(open_, history, state, _naive_utc)
        return QueryResult(incidents.ALERT_COLUMNS, rows)

    @mapped
    def check(self, now_ms: int | None = None, retry_after_s: float = 60.0) -> list:
        """Run the deployed silent_check Lambda now (the schedule runs it every few minutes).

        It opens, logs and announces what it finds, exactly as a scheduled run; the events come
        back in its answer. `now_ms` and `retry_after_s` are local-target knobs: the Lambda
        uses its own clock, and Discord retries are its own.
        """
        del now_ms, retry_after_s
        from ..core import incidents

        name = self.outputs.optional("silent_check_function_name")
        if not name:
            raise UserError(
                "the deployed stack has no silent_check function: run farmctl deploy to update it"
            )
        answer = self.client("lambda").invoke(
            FunctionName=name,
            InvocationType="RequestResponse",
            Payload=json.dumps({"source": "farmctl check"}).encode(),
        )
        payload = json.loads(answer["Payload"].read() or b"null")
        if answer.get("FunctionError") or not isinstance(payload, dict):
            message = payload.get("errorMessage", "") if isinstance(payload, dict) else ""
            raise FarmctlError(
                f"silent_check failed: {message[:300] or 'no answer'}; see its CloudWatch logs"
            )
        return [incidents.event_from_record(r) for r in payload.get("events", [])]

    def _open_incident_count(self) -> int | None:
        if not self.outputs.optional("state_table"):
            return None  # a stack deployed before incidents
        from ..core import incidents
        from ..core.state import DynamoStateStore

        store = DynamoStateStore(self.client("dynamodb"), self._state_table())
        return len(incidents.open_incidents(store))

    # -- status ----------------------------------------------------------------------------------

    @mapped
    def status(self) -> dict:
        out = self.outputs
        summary = self.client("kinesis").describe_stream_summary(StreamName=out["stream_name"])
        summary = summary["StreamDescriptionSummary"]
        mode = summary.get("StreamModeDetails", {}).get("StreamMode", "PROVISIONED")
        newest = self._newest_object(out["log_bucket"], lake.LOG_ROOT, 4)
        if newest is None:
            freshness = "no log objects yet"
        else:
            age = datetime.now(UTC) - newest["LastModified"]
            freshness = f"{newest['Key']} ({_age(age)} ago)"
        crawler = self.client("glue").get_crawler(Name=out["crawler_name"])["Crawler"]
        last = crawler.get("LastCrawl") or {}
        crawl_text = crawler.get("State", "?")
        if last:
            crawl_text += f"; last crawl {last.get('Status', '?')}"
            if last.get("StartTime"):
                crawl_text += f" at {_stamp(last['StartTime'])}"
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        spike_q = queries.spike_count(today)
        spikes_today = self.run(spike_q)
        dlq = self.client("sqs").get_queue_attributes(
            QueueUrl=out["alerts_dlq_url"], AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]["ApproximateNumberOfMessages"]
        return {
            "target": "aws",
            "region": self.region,
            "stack_outputs": out.source,
            "stream": (
                f"{out['stream_name']}: {summary['StreamStatus']}, {mode}, "
                f"{summary.get('OpenShardCount', '?')} open shards"
            ),
            "ingest_api": out.optional("ingest_api_url"),
            "newest_log_object": freshness,
            "crawler": f"{out['crawler_name']}: {crawl_text}",
            "spikes_today_utc": spikes_today.rows[0][0] if spikes_today.rows else 0,
            "synthetic_spikes_today": spikes_today.rows[0][1] if spikes_today.rows else 0,
            "alerts_waiting_in_dlq": int(dlq),
            "open_incidents": self._open_incident_count(),
            "grafana": out.optional("grafana_url"),
        }

    def _newest_object(self, bucket: str, root: str, depth: int) -> dict | None:
        """Walk the zero-padded partitions from the newest, instead of listing the bucket."""
        s3 = self.client("s3")
        prefix = f"{root}/"
        for _ in range(depth):
            pages = s3.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix, Delimiter="/"
            )
            found = [p["Prefix"] for page in pages for p in page.get("CommonPrefixes", [])]
            if not found:
                return None
            prefix = max(found)
        contents = [
            obj
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for obj in page.get("Contents", [])
        ]
        return max(contents, key=lambda o: o["LastModified"]) if contents else None

    # -- the stack: deploy, destroy, crawl -------------------------------------------------------

    def deploy(
        self,
        auto_approve: bool = False,
        var_file: Path | None = None,
        echo: Echo | None = None,
        confirm: Callable[[str], bool] | None = None,
        state: state_backend.StateRequest | None = None,
    ) -> dict:
        """Set up the state backend, build the Lambda zips, terraform init / plan / apply, then
        cache the outputs.

        The state lives in S3 (`state.bucket`, created when missing, or the saved
        farmctl.s3.tfbackend) unless `state.local` asks for a local file; with neither, nothing
        runs (state_backend.plan refuses). The plan is saved and applied as reviewed; without
        `auto_approve`, `confirm(question)` decides whether to apply it.
        """
        echo = echo or (lambda line: None)
        request = state or state_backend.StateRequest()
        stack_dir = self.preflight(var_file)  # before building anything
        where = state_backend.plan(stack_dir, request, self._state_region(), "deploy")
        var_args = [f"-var-file={_var_file(var_file)}"] if var_file else []
        env = self._terraform_env()
        echo(f"[1/5] terraform state: {where.describe(stack_dir)}")
        where = self._prepare_state(where, echo)
        echo("[2/5] building the Lambda zips")
        from ..packaging import build_lambda_zips

        zips = build_lambda_zips(stack_dir.parent / "build" / "lambda")
        for name, path in sorted(zips.items()):
            echo(f"  {name}: {path}")
        plan = stack_dir / stack.PLAN_FILE
        with stack.endpoint_override_file(stack_dir, env) as override:
            if override is not None:
                echo(f"  endpoint: {env[stack.ENDPOINT_ENV]} ({stack.ENDPOINT_ENV})")
            echo("[3/5] terraform init")
            self._init(stack_dir, where, echo, env)
            echo("[4/5] terraform plan")
            code = stack.run_terraform(
                [
                    "plan",
                    "-input=false",
                    "-no-color",
                    "-detailed-exitcode",
                    f"-out={stack.PLAN_FILE}",
                    *var_args,
                ],
                stack_dir,
                echo,
                env,
                ok_codes=(0, 2),
            )
            try:
                if code == 0:
                    echo("[5/5] no changes to apply")
                else:
                    if not auto_approve and not (confirm and confirm("Apply this plan?")):
                        raise UserError("deploy cancelled: nothing was changed")
                    echo("[5/5] terraform apply")
                    # ephemeral variables (the webhook URL) are not in the plan: given again
                    again = stack.apply_var_args(stack_dir, var_file, var_args)
                    stack.run_terraform(
                        ["apply", "-input=false", "-no-color", *again, stack.PLAN_FILE],
                        stack_dir,
                        echo,
                        env,
                    )
            finally:
                plan.unlink(missing_ok=True)  # a plan file may hold variable values
        values = stack.terraform_outputs(stack_dir, env)
        if not values:
            raise FarmctlError(
                "terraform applied but printed no outputs: check terraform/outputs.tf"
            )
        path = stack.save_outputs(self.home, values)
        self._outputs = None
        return {
            "outputs saved to": str(path),
            "terraform state": where.describe(stack_dir),
            **{k: values[k] for k in _SHOWN if k in values},
        }

    # -- where the Terraform state lives (state_backend) ---------------------------------------

    def _state_region(self) -> str:
        """Region of a new state bucket: --region / AWS_REGION / the profile's, else the
        stack's default."""
        region = (
            self.options.region
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
        )
        if region:
            return region
        try:
            import boto3

            region = boto3.Session(profile_name=self.options.profile).region_name
        except Exception:  # a broken profile was reported by preflight already
            region = None
        return region or state_backend.DEFAULT_REGION

    def _prepare_state(self, where, echo: Echo):
        """Create or check the state bucket (deploy with --state-bucket); refuse a migration
        that would overwrite another state. Returns the plan with the final S3 settings."""
        if where.kind != "s3":
            return where
        s3_state = where.s3
        session = None
        if where.bootstrap or where.migrate:
            import boto3

            session = boto3.Session(profile_name=self.options.profile, region_name=s3_state.region)
        with self._state_errors(s3_state):
            if where.bootstrap:
                identity = self.caller_identity()
                partition = str(identity.get("Arn", "arn:aws:")).split(":")[1] or "aws"
                s3_state = state_backend.bootstrap(
                    session, where, identity["Account"], echo, partition
                )
            if where.migrate:
                remote = state_backend.remote_state_text(session, s3_state)
                state_backend.check_migration(self.stack_dir, remote, s3_state)
        return dataclasses.replace(where, s3=s3_state)

    @contextlib.contextmanager
    def _state_errors(self, s3_state):
        """AWS failures while setting up or reading the state bucket: one line each."""
        try:
            yield
        except (FarmctlError, KeyboardInterrupt):
            raise
        except Exception as exc:  # botocore client, credential and endpoint errors
            known = translate(exc, s3_state.region, self.options.profile)
            raise known or FarmctlError(
                f"the state bucket {s3_state.bucket} could not be set up or read "
                f"({_short(exc)}): fix the cause and run the deploy again"
            ) from None

    def _init(self, stack_dir: Path, where, echo: Echo, env: dict[str, str]) -> None:
        """terraform init against the chosen state; moves a local state into S3 when asked."""
        init = ["init", "-input=false", "-no-color"]
        if where.kind == "local":
            if where.save:
                state_backend.write_local_override(stack_dir)
            stack.run_terraform(init, stack_dir, echo, env)
            return
        s3_state = where.s3
        args = [*init, *s3_state.backend_args(state_backend.endpoint_of(env))]
        had_override = state_backend.local_chosen(stack_dir)
        if where.migrate or had_override:
            # From a local state (or the local choice) to S3: copy it (no prompt); a copied
            # state is then checked in S3 and the local file removed.
            args += ["-migrate-state", "-force-copy"]
            state_backend.remove_local_override(stack_dir)
        try:
            stack.run_terraform(args, stack_dir, echo, env)
        except FarmctlError:
            if had_override:
                state_backend.write_local_override(stack_dir)  # the folder stays as it was
            raise
        if where.save or had_override:
            path = state_backend.save(stack_dir, s3_state)
            echo(f"  state settings saved in {path}")
        if where.migrate:
            import boto3

            session = boto3.Session(profile_name=self.options.profile, region_name=s3_state.region)
            with self._state_errors(s3_state):
                remote = state_backend.remote_state_text(session, s3_state)
            if remote is None:
                raise FarmctlError(
                    f"terraform init -migrate-state left no state at {s3_state.url}: the local "
                    f"{stack_dir / state_backend.LOCAL_STATE} is kept; run the deploy again"
                )
            for path in state_backend.remove_migrated_local_state(stack_dir, remote):
                echo(f"  moved the local state to {s3_state.url}; removed {path}")

    def caller_identity(self) -> dict:
        """STS GetCallerIdentity with the caller's credentials (honours AWS_ENDPOINT_URL)."""
        import boto3

        region = self.options.region or os.environ.get("AWS_REGION") or "us-east-1"
        session = boto3.Session(profile_name=self.options.profile, region_name=region)
        return session.client("sts").get_caller_identity()

    def preflight(self, var_file: Path | None = None) -> Path:
        """Check, before building anything, what a deploy needs; one line per problem."""
        stack.find_terraform()
        stack_dir = stack.check_stack_dir(self.stack_dir)
        if var_file is not None:
            _var_file(var_file)
        env = self._terraform_env()
        problems = []
        version_problem = stack.version_problem(stack.terraform_version(env))
        if version_problem:
            problems.append(version_problem)
        try:
            self.caller_identity()
        except Exception as exc:  # botocore's credential, endpoint and client errors
            problems.append(
                f"AWS credentials do not resolve ({_short(exc)}): configure them "
                "(aws configure, AWS_PROFILE / --profile, or AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY) and check with `aws sts get-caller-identity`"
            )
        for name in stack.missing_variables(stack_dir, var_file, env):
            problems.append(
                f"variable {name} is not set: add `{name} = ...` to "
                f"{stack_dir / 'terraform.tfvars'} or a --var-file, or set TF_VAR_{name}"
            )
        if problems:
            raise UserError("\n".join(problems))
        return stack_dir

    def destroy(
        self,
        auto_approve: bool = False,
        var_file: Path | None = None,
        echo: Echo | None = None,
        state: state_backend.StateRequest | None = None,
    ) -> dict:
        """terraform init (same state as deploy) + destroy; forgets the outputs.

        The CLI asks first unless --auto-approve. The state bucket and its history are kept.
        """
        if not auto_approve:
            raise UserError("destroy needs confirmation: answer the prompt or pass --auto-approve")
        echo = echo or (lambda line: None)
        stack_dir, where = self.destroy_state(state)
        var_args = [f"-var-file={_var_file(var_file)}"] if var_file else []
        env = self._terraform_env()
        echo(f"terraform state: {where.describe(stack_dir)}")
        with stack.endpoint_override_file(stack_dir, env):
            self._init(stack_dir, where, echo, env)
            stack.run_terraform(
                ["destroy", "-input=false", "-no-color", "-auto-approve", *var_args],
                stack_dir,
                echo,
                env,
            )
        forgotten = stack.forget_outputs(self.home)
        self._outputs = None
        return {
            "destroyed": str(stack_dir),
            "outputs cache": "removed" if forgotten else "none",
            "terraform state": where.describe(stack_dir),
        }

    def destroy_state(self, state: state_backend.StateRequest | None = None):
        """(stack folder, state plan) for destroy, checked before anything is asked."""
        stack.find_terraform()
        stack_dir = stack.check_stack_dir(self.stack_dir)
        request = state or state_backend.StateRequest()
        where = state_backend.plan(stack_dir, request, self._state_region(), "destroy")
        if where.migrate:
            raise UserError(
                f"{stack_dir / state_backend.LOCAL_STATE} exists next to the S3 state "
                f"{where.s3.url}: run `farmctl deploy` first (it moves the local state to S3), "
                "or pass --local-state if the local file is the stack's state"
            )
        return stack_dir, where

    @mapped
    def crawl(
        self,
        wait: bool = False,
        progress: Callable[[str, float], None] | None = None,
        poll_s: float | None = None,
        timeout_s: float | None = None,
    ) -> dict:
        """Start the Glue crawler; with `wait`, poll until READY and report what changed."""
        poll_s = CRAWL_POLL_S if poll_s is None else poll_s
        timeout_s = CRAWL_TIMEOUT_S if timeout_s is None else timeout_s
        glue = self.client("glue")
        name = self.outputs["crawler_name"]
        database = self.outputs["glue_database"]
        before = _tables(glue, database) if wait else {}
        started = time.monotonic()
        try:
            glue.start_crawler(Name=name)
            note = "started"
        except glue.exceptions.CrawlerRunningException:
            if not wait:
                raise FarmctlError(
                    f"crawler {name} is already running: `farmctl crawl --wait` waits for it"
                ) from None
            note = "was already running"
        if progress:
            progress("RUNNING", 0.0)
        if not wait:
            return {"crawler": name, "state": "RUNNING", "note": f"{note}; --wait follows it"}
        while True:
            crawler = glue.get_crawler(Name=name)["Crawler"]
            state = crawler.get("State", "?")
            elapsed = time.monotonic() - started
            if progress:
                progress(state, elapsed)
            if state == "READY":
                break
            if elapsed > timeout_s:
                raise FarmctlError(
                    f"crawler {name} is still {state} after {elapsed:.0f} s: check it in the "
                    "Glue console; `farmctl crawl --wait` resumes waiting"
                )
            self.sleep(poll_s)
        last = crawler.get("LastCrawl") or {}
        if last.get("Status") == "FAILED":
            raise FarmctlError(
                f"crawler {name} failed: {last.get('ErrorMessage', 'no reason given')} "
                f"(log group {last.get('LogGroup', '/aws-glue/crawlers')})"
            )
        after = _tables(glue, database)
        created = sorted(set(after) - set(before))
        updated = sorted(t for t in after if t in before and after[t] != before[t])
        deleted = sorted(set(before) - set(after))
        return {
            "crawler": name,
            "state": "READY",
            "note": note,
            "last crawl": last.get("Status", "-"),
            "tables created": ", ".join(created) or "none",
            "tables updated": ", ".join(updated) or "none",
            "tables deleted": ", ".join(deleted) or "none",
            "waited (s)": round(time.monotonic() - started, 1),
        }


_SHOWN = (
    "region",
    "ingest_api_url",
    "stream_name",
    "log_bucket",
    "athena_workgroup",
    "grafana_url",
)


def _short(exc: Exception) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _var_file(path: Path) -> str:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such var file: {path}")
    return str(path.resolve())


def _list_shards(kinesis, stream_name: str) -> list[dict]:
    shards: list[dict] = []
    kwargs: dict = {"StreamName": stream_name}
    while True:
        response = kinesis.list_shards(**kwargs)
        shards.extend(response.get("Shards", []))
        token = response.get("NextToken")
        if not token:
            return shards
        kwargs = {"NextToken": token}


def _tables(glue, database: str) -> dict[str, tuple]:
    """{table: (update time, column count, partition keys)} to tell what a crawl changed."""
    tables = {}
    for page in glue.get_paginator("get_tables").paginate(DatabaseName=database):
        for table in page.get("TableList", []):
            columns = table.get("StorageDescriptor", {}).get("Columns", [])
            tables[table["Name"]] = (
                str(table.get("UpdateTime", "")),
                len(columns),
                len(table.get("PartitionKeys", [])),
            )
    return tables


def athena_literal(value) -> str:
    """One execution parameter as the SQL literal Athena expects (strings single-quoted)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UserError(f"{value} cannot be a query parameter")
        return repr(value)
    if isinstance(value, datetime):
        moment = value.astimezone(UTC) if value.tzinfo else value
        return f"TIMESTAMP '{moment.strftime('%Y-%m-%d %H:%M:%S.%f')[:-3]}'"
    return "'" + str(value).replace("'", "''") + "'"


def python_value(value):
    """A pandas/numpy cell -> the plain Python value DuckDB would give on the local target."""
    if value is None:
        return None
    import pandas as pd

    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if hasattr(value, "item") and type(value).__module__ == "numpy":
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def frame_rows(frame) -> list[tuple]:
    return [tuple(python_value(v) for v in row) for row in frame.itertuples(index=False, name=None)]


def cost_note(statistics: dict) -> str:
    scanned = int(statistics.get("DataScannedInBytes") or 0)
    billed = max(ATHENA_MIN_BILLED_BYTES, scanned)
    cost = billed / 1e12 * ATHENA_USD_PER_TB
    took = statistics.get("TotalExecutionTimeInMillis")
    timing = f" in {took / 1000:.1f} s" if took else ""
    return (
        f"Athena scanned {_bytes(scanned)}{timing}; billed {_bytes(billed)} "
        f"(10 MB minimum) = ${cost:.6f} at $5/TB"
    )


def error_row(row_id: str, kind: str, record: dict) -> tuple:
    """One Firehose error record (or farmctl's own) -> (id, received, source, reason, raw)."""
    raw_b64 = record.get("rawData") or ""
    try:
        raw = base64.b64decode(raw_b64).decode("utf-8", errors="replace")
    except (ValueError, TypeError):
        raw = str(raw_b64)
    reason = record.get("errorMessage") if record.get("errorCode") == "farmctl.Rejected" else None
    if reason is None:
        reason = _reason_for(raw) or (
            f"{record.get('errorCode', 'error')}: {record.get('errorMessage', '')}".strip(": ")
        )
    arrived = record.get("arrivalTimestamp") or record.get("attemptEndingTimestamp")
    received = (  # naive UTC, like the local target's and the lake's timestamps
        datetime.fromtimestamp(arrived / 1000, UTC).replace(tzinfo=None)
        if isinstance(arrived, int | float)
        else None
    )
    source = record.get("source") or kind
    return (row_id, received, source, reason, raw[:2000])


def _reason_for(raw: str) -> str | None:
    """The core's reason for refusing a raw reading (what the transform Lambda decided)."""
    try:
        item = json.loads(raw)
    except json.JSONDecodeError as exc:
        item = Unparsable(f"not valid JSON: {exc.msg}", raw)
    rejected = validate([item]).rejected
    return rejected[0].reason if rejected else None


def _bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.2f} TB"


def _age(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _naive_utc(ms: int) -> datetime:
    """Epoch milliseconds as the naive UTC datetime the lake's timestamps are (as local)."""
    return datetime.fromtimestamp(ms / 1000, UTC).replace(tzinfo=None)
