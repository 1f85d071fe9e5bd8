"""anomaly_detector: S3 ObjectCreated on sensor-log-bucket -> spikes + one incident message.

Per record of the event (an event may hold several; keys are URL-encoded, `+` is a space):
read the Parquet object, run the shared rules (`smartfarm_cli/core`; `jump` against each
device's state in the STATE_TABLE DynamoDB table, conditional writes), store the spikes at the
deterministic key `spikes/year=/month=/day=/<digest of source key>.parquet` in SPIKE_BUCKET, then
move the devices' incidents (core.incidents, same table: one conditional write per device and
file, which also records each device's last-seen time), log the events (`_log/` items) and
announce them in one Discord message (core.alerts: marker `alerts/<digest>.json` beside the
spikes). Without STATE_TABLE each object is judged alone and its spikes announced as they are.

Crash safety: the events a file produced are kept in each device's item, written in the same
conditional write as the incidents. An invocation that dies after that write and before the
message went out is retried by Lambda with the same event; the retry finds the file judged,
gets the same events back, rewrites the same log items and sends the message (the marker
`delivered` stops a second send). Two invocations racing on one device: the loser of the
conditional write reloads and finds the incident open, so only one announces it.

Objects with the metadata `smartfarm-source: backfill` (generated history) get their spikes
stored but no alert. Synthetic readings (the `synthetic` column: simulator runs, demo, backfill)
are judged and their spikes stored, marked synthetic, but move no incident, refresh no device's
last-seen time and send nothing, unless ALERT_ON_SYNTHETIC is true (core.alerts.alertable); their
jumps are judged against a window of their own (core.rules.SyntheticState).
A duplicate event overwrites the same spike object and finds the marker
`delivered`, so it creates no second file and no second message; an `undelivered` alert is
retried by it.

Failure policy: an object that cannot be read or is not a valid log file is logged and reported
in the result, and the other records go on. The invocation fails (raises, so Lambda retries it
and the on-failure destination sees it) when something could not be STORED (spikes, state or the
alert marker), and, with STATE_TABLE, when an incident message stayed undelivered: the retry
replays the same events (nothing is judged or counted twice) and tries the message again, and
after Lambda's two retries the event waits in the on-failure queue, to be redriven, instead of
the opening of an incident being lost. Without STATE_TABLE an undelivered message is recorded in
the marker only (a duplicate event retries it).

The same function relays the stack's CloudWatch alarms to the channel: an event whose records
come from SNS (the alarms topic, terraform/alarms.tf) becomes one Discord message per alarm state
change (`relay_alarms`); a failed post is logged, not raised (the topic's e-mail subscribers
still get the alarm, and a retry would only page again).

Environment:
  SPIKE_BUCKET                    required, the spike-log-bucket name
  DISCORD_WEBHOOK_SSM_PARAMETER   optional, SecureString holding the webhook URL (no alert if unset)
  RULES_PATH                      optional rules.toml override (relative to this file's folder)
  ALERT_ON_SYNTHETIC              optional, `true`: synthetic readings alert like real ones
                                  (Terraform variable alert_on_synthetic, default false)
  STATE_TABLE                     DynamoDB table of per-device state (jump windows, incidents,
                                  see docs/state.md); unset: each object is judged on its own
                                  and its spikes announced per file (no incidents)
The webhook URL must pass core.webhook's allow-list (https Discord hosts only; the stack never
sets the local-test-server opt-in), and redirects are not followed (core.lambda_io).
Logs are JSON lines on stdout; they never contain the webhook URL.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote_plus

from smartfarm_cli.core import alerts, discord, incidents, lake
from smartfarm_cli.core.jsonlog import log
from smartfarm_cli.core.lambda_io import WEBHOOK_CACHE as _webhook_cache  # noqa: F401 (tests)
from smartfarm_cli.core.lambda_io import S3Store, urllib_post, webhook_from_ssm
from smartfarm_cli.core.rules import Rules, load_rules
from smartfarm_cli.core.state import DynamoEventLog, DynamoStateStore, StateStore
from smartfarm_cli.core.validate import conform

ALERT_POLICY = alerts.RetryPolicy(
    max_attempts=5, timeout_s=10.0, backoff_base_s=1.0, max_total_s=60.0
)
DEADLINE_MARGIN_S = 10.0  # keep this much of the invocation for writing markers and logs
SOURCE_METADATA = "smartfarm-source"  # `backfill` on generated history: spikes, no alert
NOW = time.time  # the incidents' wall clock (a fake one in tests)


class StoreError(RuntimeError):
    """Something could not be written: the invocation must fail so it is retried."""


class Undelivered(RuntimeError):
    """An incident message did not go out: fail so Lambda retries (the events are replayed)."""


def s3_records(event: dict) -> list[tuple[str, str]]:
    """(bucket, decoded key) of every ObjectCreated record in an S3 notification event."""
    found = []
    for record in event.get("Records") or []:
        if not str(record.get("eventName", "")).startswith("ObjectCreated"):
            continue
        s3 = record.get("s3") or {}
        bucket = (s3.get("bucket") or {}).get("name")
        key = (s3.get("object") or {}).get("key")
        if bucket and key:
            found.append((bucket, unquote_plus(key)))
    return found


@dataclass
class Deps:
    """Everything the processing needs from the outside world (replaceable in tests)."""

    s3: object
    spike_store: lake.ObjectStore
    rules: Rules
    webhook_url: object  # () -> str | None, raises on failure
    post: object = urllib_post
    sleep: object = time.sleep
    clock: object = time.monotonic
    deadline: float | None = None
    policy: alerts.RetryPolicy = ALERT_POLICY
    state: StateStore | None = None  # per-device state (jump windows, incidents); None: alone
    history: DynamoEventLog | None = None  # incident events, for `farmctl alerts`
    now: object = time.time  # wall clock (epoch s) of the incident lifecycle
    alert_synthetic: bool = False  # ALERT_ON_SYNTHETIC: synthetic readings alert too


@dataclass
class ObjectResult:
    bucket: str
    key: str
    status: str = "ok"  # ok | skipped | failed | store_failed
    spikes: int = 0
    spike_files: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)  # incident events, as one line each
    alert: str = ""
    error: str = ""


def process_object(bucket: str, key: str, deps: Deps) -> ObjectResult:
    """One log object: rules, spikes stored, then the alert. Raises StoreError on write failure."""
    result = ObjectResult(bucket, key)
    if not key.startswith(lake.LOG_ROOT + "/"):
        result.status = "skipped"
        result.error = f"not under {lake.LOG_ROOT}/"
        return result
    try:
        try:
            response = deps.s3.get_object(Bucket=bucket, Key=key)
        except deps.s3.exceptions.NoSuchKey:
            raise ValueError("object no longer exists") from None
        metadata = {k.lower(): v for k, v in (response.get("Metadata") or {}).items()}
        table = conform(lake.read_parquet_bytes(response["Body"].read()))
    except Exception as exc:  # unreadable, not Parquet, wrong columns: report, go on
        result.status = "failed"
        result.error = f"{type(exc).__name__}: {str(exc)[:300]}"
        return result
    try:
        spikes, objects = lake.spike_objects(table, key, deps.rules, state=deps.state)
    except Exception as exc:  # the device state could not be read or written: retry the event
        raise StoreError(f"cannot judge {key} against device state: {type(exc).__name__}") from exc
    result.spikes = spikes.num_rows
    alert_spikes, readings = alerts.alertable(spikes, table, deps.alert_synthetic)
    for spike_key, rows in objects.items():
        try:
            deps.spike_store.put(spike_key, lake.spike_parquet_bytes(rows))
        except Exception as exc:
            raise StoreError(f"cannot store spikes {spike_key}: {type(exc).__name__}") from exc
        result.spike_files.append(spike_key)
    if deps.state is None and spikes.num_rows == 0:
        result.alert = alerts.NOTHING_TO_SEND
        return result
    if metadata.get(SOURCE_METADATA) == "backfill":
        result.alert = "skipped_backfill"  # history is not news (same as the local target)
        return result
    if readings.num_rows == 0 or (deps.state is None and alert_spikes.num_rows == 0):
        # Only synthetic readings (or their spikes): stored, but no incident and no message.
        result.alert = alerts.SKIPPED_SYNTHETIC if spikes.num_rows else alerts.NOTHING_TO_SEND
        return result
    spikes = alert_spikes
    message, count = None, spikes.num_rows
    if deps.state is not None:
        try:
            events = incidents.observe(
                spikes,
                readings,
                incidents.policy_from(deps.rules.alerts),
                deps.state,
                key,
                int(deps.now() * 1000),
                incidents.centre_of(deps.rules),
                replay=True,
            )
            if deps.history is not None:
                deps.history.append(incidents.log_records(events, key), key)
        except Exception as exc:  # state or log not written: retry the event (replays it)
            raise StoreError(f"cannot record incidents of {key}: {type(exc).__name__}") from exc
        result.events = [incidents.describe(e) for e in events]
        if not events:
            result.alert = alerts.NOTHING_TO_SEND
            return result
        message, count = incidents.message(events, key), len(events)
    try:
        url = deps.webhook_url()
        problem = "" if url else "not_configured"
    except Exception as exc:  # SSM unreachable, parameter missing, access denied
        url, problem = None, f"webhook URL unavailable: {type(exc).__name__}"
    if problem == "not_configured":
        result.alert = problem  # spikes are stored; alerts are simply not set up
        return result
    try:
        if url:
            outcome = alerts.deliver_message(
                deps.spike_store,
                key,
                message or (lambda: discord.build_alert_message(spikes, key)),
                count,
                deps.post,
                url,
                sleep=deps.sleep,
                policy=deps.policy,
                clock=deps.clock,
                deadline=deps.deadline,
            )
        else:
            outcome = alerts.record_undelivered(deps.spike_store, key, spikes, problem)
    except Exception as exc:
        raise StoreError(f"cannot store the alert marker for {key}: {type(exc).__name__}") from exc
    result.alert = outcome.status
    if outcome.status == alerts.UNDELIVERED:
        result.error = outcome.reason
    return result


def process_event(event: dict, deps: Deps) -> dict:
    """Every record of the event; store failures are collected and raised at the end."""
    results: list[ObjectResult] = []
    store_failures: list[str] = []
    for bucket, key in s3_records(event):
        started = time.monotonic()
        try:
            result = process_object(bucket, key, deps)
        except StoreError as exc:
            result = ObjectResult(bucket, key, status="store_failed", error=str(exc))
            store_failures.append(key)
        level = "ERROR" if result.status in ("failed", "store_failed") else "INFO"
        if result.alert == alerts.UNDELIVERED:
            level = "WARNING"
        log(
            level,
            "object_processed",
            bucket=bucket,
            key=key,
            status=result.status,
            spikes=result.spikes,
            spike_files=result.spike_files,
            events=result.events,
            alert=result.alert,
            error=result.error,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )
        results.append(result)
    summary = {
        "objects": len(results),
        "ok": sum(r.status == "ok" for r in results),
        "failed": [{"key": r.key, "error": r.error} for r in results if r.status == "failed"],
        "store_failed": store_failures,
        "undelivered": [
            r.key for r in results if r.alert == alerts.UNDELIVERED and r.events and deps.state
        ],
        "spikes": sum(r.spikes for r in results),
        "alerts": {r.key: r.alert for r in results if r.alert},
    }
    log("ERROR" if store_failures else "INFO", "event_processed", **summary)
    return summary


def is_alarm_event(event) -> bool:
    """True for an SNS delivery (every record from `aws:sns`), as the alarms topic sends."""
    records = event.get("Records") if isinstance(event, dict) else None
    return bool(records) and all(
        isinstance(r, dict) and r.get("EventSource") == "aws:sns" for r in records
    )


def relay_alarms(event: dict, deps: Deps) -> dict:
    """Each CloudWatch alarm notification in an SNS event -> one Discord message."""
    counts = {"alarms": 0, "delivered": 0, "undelivered": 0, "not_configured": 0, "skipped": 0}
    for record in event["Records"]:
        sns = record.get("Sns") or {}
        try:
            alarm = json.loads(sns.get("Message") or "")
        except (TypeError, ValueError):
            alarm = None
        if not isinstance(alarm, dict) or not alarm.get("AlarmName"):
            counts["skipped"] += 1
            log("WARNING", "alarm_skipped", message_id=sns.get("MessageId"), reason="not an alarm")
            continue
        counts["alarms"] += 1
        try:
            url = deps.webhook_url()
            problem = "" if url else "not_configured"
        except Exception as exc:  # SSM unreachable, parameter missing, access denied
            url, problem = None, f"webhook URL unavailable: {type(exc).__name__}"
        if url:
            message = discord.build_alarm_message(alarm)
            result = alerts.send_message(
                deps.post, url, message, deps.policy, deps.sleep, deps.clock, deps.deadline
            )
            status = alerts.DELIVERED if result.delivered else alerts.UNDELIVERED
            problem = result.reason
        else:
            status = "not_configured" if problem == "not_configured" else alerts.UNDELIVERED
        counts[status] += 1
        log(
            "INFO" if status == alerts.DELIVERED else "WARNING",
            "alarm_relayed",
            alarm=str(alarm.get("AlarmName"))[:256],
            state=str(alarm.get("NewStateValue"))[:32],
            status=status,
            error=problem,
        )
    return counts


_rules_cache: dict[str, Rules] = {}


def _rules() -> Rules:
    path = os.environ.get("RULES_PATH") or None
    if path and not os.path.isabs(path):
        path = str(Path(__file__).with_name(path))
    cache_key = path or ""
    if cache_key not in _rules_cache:
        _rules_cache[cache_key] = load_rules(path)
    return _rules_cache[cache_key]


def _state_store() -> tuple[StateStore | None, DynamoEventLog | None]:
    import boto3

    table = os.environ.get("STATE_TABLE", "").strip()
    if not table:
        return None, None
    client = boto3.client("dynamodb")
    return DynamoStateStore(client, table), DynamoEventLog(client, table)


def handler(event, context):
    import boto3

    deadline = None
    if context is not None and hasattr(context, "get_remaining_time_in_millis"):
        remaining = context.get_remaining_time_in_millis() / 1000.0
        deadline = time.monotonic() + max(1.0, remaining - DEADLINE_MARGIN_S)
    if is_alarm_event(event):
        relay = Deps(
            s3=None,
            spike_store=None,
            rules=None,
            webhook_url=webhook_from_ssm(lambda: boto3.client("ssm")),
            deadline=deadline,
            policy=ALERT_POLICY,
        )
        return relay_alarms(event, relay)
    s3 = boto3.client("s3")
    state, history = _state_store()
    deps = Deps(
        s3=s3,
        spike_store=S3Store(s3, os.environ["SPIKE_BUCKET"]),
        rules=_rules(),
        webhook_url=webhook_from_ssm(lambda: boto3.client("ssm")),
        deadline=deadline,
        policy=ALERT_POLICY,
        state=state,
        history=history,
        now=NOW,
        alert_synthetic=alerts.env_flag(os.environ.get(alerts.ALERT_ON_SYNTHETIC_ENV)),
    )
    summary = process_event(event, deps)
    if summary["store_failed"]:
        raise StoreError(f"could not store results for {len(summary['store_failed'])} object(s)")
    if summary["undelivered"]:
        raise Undelivered(
            f"incident message undelivered for {len(summary['undelivered'])} object(s); "
            "Lambda retries the event"
        )
    return summary
