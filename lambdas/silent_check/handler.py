"""silent_check: run every few minutes by an EventBridge Scheduler schedule -> silent devices.

Silence produces no files, so nothing else would notice it. Each run walks the per-device
`alerts` items of STATE_TABLE (core.incidents.check_silent): a device that reported within
`silent_known_for` and then nothing for `silent_stale_after` gets a `silent` incident (one
conditional write per device, so a reading arriving meanwhile wins and nothing opens twice).
The events are logged (`_log/` items, for `farmctl alerts`) and announced in one Discord
message, idempotent through the marker `alerts/<digest of the run>.json` in SPIKE_BUCKET.

The schedule passes its scheduled time; a Lambda retry of the same run gets the same event, so
the same source `check-<scheduled time>`: the devices' items hold the events that run produced
and the retry sends exactly them (core.incidents replay), never a second opening. A run whose
message stayed undelivered fails for that reason, so Lambda retries it (then the dead-letter
queue keeps the event).

Environment:
  STATE_TABLE                     required, the device-state DynamoDB table
  SPIKE_BUCKET                    required, where the alert markers are kept (alerts/ only)
  DISCORD_WEBHOOK_SSM_PARAMETER   optional, SecureString holding the webhook URL (no alert if unset)
  RULES_PATH                      optional rules.toml override ([alerts] thresholds)
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from smartfarm_cli.core import alerts, incidents
from smartfarm_cli.core.jsonlog import log
from smartfarm_cli.core.lambda_io import S3Store, urllib_post, webhook_from_ssm
from smartfarm_cli.core.rules import load_rules
from smartfarm_cli.core.state import DynamoEventLog, DynamoStateStore

NOW = time.time  # the check's wall clock (a fake one in tests)
POLICY = alerts.RetryPolicy(max_attempts=4, timeout_s=10.0, backoff_base_s=1.0, max_total_s=40.0)


class StoreError(RuntimeError):
    """The state or the log could not be written: fail so Lambda retries the same event."""


class Undelivered(RuntimeError):
    """The message did not go out: fail so Lambda retries the same run (its events replayed)."""


def run_source(event: dict, now_ms: int) -> str:
    """The run's id: the schedule's time (stable across retries), else the invocation's minute."""
    scheduled = str((event or {}).get("scheduled_time") or (event or {}).get("time") or "")
    return f"check-{scheduled[:40]}" if scheduled else f"check-{now_ms // 60_000 * 60_000}"


def check(event, state, history, rules, marker_store, webhook_url, post, now_ms, sleep=time.sleep):
    """One run: open silent incidents, log them, announce them once -> summary."""
    source = run_source(event, now_ms)
    try:
        events = incidents.check_silent(state, incidents.policy_from(rules.alerts), now_ms, source)
        history.append(incidents.log_records(events, source), source)
    except Exception as exc:
        raise StoreError(f"cannot record silent devices: {type(exc).__name__}") from exc
    summary = {
        "source": source,
        "silent": [incidents.describe(e) for e in events],
        "events": incidents.log_records(events, source),
        "alert": "",
    }
    if not events:
        summary["alert"] = alerts.NOTHING_TO_SEND
        return summary
    try:
        url = webhook_url()
        problem = "" if url else "not_configured"
    except Exception as exc:  # SSM unreachable, parameter missing, access denied
        url, problem = None, f"webhook URL unavailable: {type(exc).__name__}"
    if problem == "not_configured":
        summary["alert"] = problem
        return summary
    message = incidents.message(events, source)
    try:
        if url:
            outcome = alerts.deliver_message(
                marker_store, source, message, len(events), post, url, sleep, POLICY
            )
        else:
            previous = alerts.read_marker(marker_store, source)
            alerts.write_marker(
                marker_store, source, alerts.UNDELIVERED, problem, 0, 0, None, previous
            )
            outcome = alerts.AlertOutcome(alerts.UNDELIVERED, source, len(events), reason=problem)
    except Exception as exc:
        raise StoreError(f"cannot store the alert marker: {type(exc).__name__}") from exc
    summary["alert"] = outcome.status
    if outcome.status == alerts.UNDELIVERED:
        summary["error"] = outcome.reason
    return summary


def _rules():
    path = os.environ.get("RULES_PATH") or None
    if path and not os.path.isabs(path):
        path = str(Path(__file__).with_name(path))
    return load_rules(path)


def handler(event, context):
    import boto3

    table = os.environ["STATE_TABLE"]
    client = boto3.client("dynamodb")
    summary = check(
        event,
        DynamoStateStore(client, table),
        DynamoEventLog(client, table),
        _rules(),
        S3Store(boto3.client("s3"), os.environ["SPIKE_BUCKET"]),
        webhook_from_ssm(lambda: boto3.client("ssm")),
        urllib_post,
        int(NOW() * 1000),
    )
    log("WARNING" if summary.get("error") else "INFO", "silent_check", **summary)
    if summary["alert"] == alerts.UNDELIVERED:  # retried by Lambda: the same run, replayed
        raise Undelivered(f"silent-device message undelivered: {summary['error']}")
    return summary
