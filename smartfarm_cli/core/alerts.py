"""Alert delivery to a Discord webhook: retries, rate limits and the idempotency marker.

Pure and injectable so that the CLI (requests) and the Lambdas (urllib) share it:
`post(url, json_body, timeout) -> (status, headers, body bytes)` does one HTTP POST and raises
`OSError` (requests' and urllib's errors are OSErrors) when no HTTP answer came back;
`sleep` and `clock` are injected so tests stay fast.

Protocol, per delivered log object `source_key`:

1. The caller has already stored the spikes (the alert never comes first).
2. The marker `lake.alert_key(source_key)` in the spike store is read. `delivered` means a
   message went out before: nothing is sent again (S3 events arrive at least once).
   `undelivered` (or no marker) means the alert is (re)tried: a duplicate event after an outage
   gets the message through late rather than never.
3. One message (`discord.build_alert_message`) is POSTed to `<url>?wait=true`, so Discord
   confirms it was saved. HTTP 429 waits for `retry_after` (JSON body, else the `Retry-After`
   header; values that can only be milliseconds are converted) and retries; 5xx, timeouts and
   refused connections back off exponentially; other 4xx are permanent. Attempts and the total
   time spent are bounded.
4. The outcome is written to the marker: status, reason, attempts, HTTP status, time. Never the
   URL; reasons are scrubbed of it. A marker that cannot be written raises (the caller must fail
   so the event is retried).

Known window: two copies of one event processed at the very same moment can both send before
either writes its marker. S3 duplicates are rare and usually far apart; the spikes themselves
are never duplicated (deterministic keys).
"""

from __future__ import annotations

import http.client
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from . import discord
from .arrays import any_true
from .lake import ObjectStore, alert_key
from .lazy import pa, pc
from .webhook import WebhookURLError, check_webhook_url

Post = Callable[[str, dict, float], tuple[int, Mapping[str, str], bytes]]

DELIVERED = "delivered"
UNDELIVERED = "undelivered"
ALREADY_DELIVERED = "already_delivered"
NOTHING_TO_SEND = "nothing_to_send"

# A retry_after above this many seconds is taken as milliseconds (Discord has sent ms once).
RETRY_AFTER_MS_THRESHOLD = 1000.0


ALERT_ON_SYNTHETIC_ENV = "ALERT_ON_SYNTHETIC"  # the anomaly Lambda's switch (Terraform variable)
SKIPPED_SYNTHETIC = "skipped_synthetic"


def env_flag(value: str | None) -> bool:
    """`1`, `true`, `yes`, `on` (any case) -> True; anything else, or unset -> False."""
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def alertable(
    spikes: pa.Table, readings: pa.Table | None, include_synthetic: bool = False
) -> tuple[pa.Table, pa.Table | None]:
    """The spikes and readings that may move incidents and page someone.

    Synthetic readings (simulator, demo, backfill: the `synthetic` column) are judged and their
    spikes stored like any other, but they open, remind and resolve no incident, refresh no
    device's last-seen time and send no Discord message, unless `include_synthetic` (the CLI's
    `--alert-synthetic`, the Lambda's ALERT_ON_SYNTHETIC). Rows without the column, or with
    null in it (files older than the column), are real.
    """
    if include_synthetic:
        return spikes, readings
    return _real(spikes), None if readings is None else _real(readings)


def _real(table: pa.Table) -> pa.Table:
    if "synthetic" not in table.column_names or table.num_rows == 0:
        return table
    if not any_true(table["synthetic"]):
        return table  # the usual file: nothing synthetic, nothing to copy
    return table.filter(pc.invert(pc.fill_null(table["synthetic"], False)))


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds for one message. Total time spent ~ attempts * timeout + waits <= max_total_s."""

    max_attempts: int = 5
    timeout_s: float = 10.0
    backoff_base_s: float = 1.0
    backoff_max_s: float = 16.0
    max_total_s: float = 60.0
    max_retry_after_s: float = 60.0


DEFAULT_POLICY = RetryPolicy()


@dataclass
class SendResult:
    delivered: bool
    attempts: int
    http_status: int | None
    reason: str


@dataclass
class AlertOutcome:
    status: str  # delivered | undelivered | already_delivered | nothing_to_send
    source_key: str
    spikes: int
    attempts: int = 0
    http_status: int | None = None
    reason: str = ""
    marker_key: str = ""


def with_wait(url: str) -> str:
    """The webhook URL with `wait=true`, so Discord answers only once the message is saved."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "wait"]
    query.append(("wait", "true"))
    return urlunsplit(parts._replace(query=urlencode(query)))


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in (headers or {}).items():
        if key.lower() == name:
            return value
    return None


def _float(value) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number >= 0 and number == number and number != float("inf") else None


def retry_after_s(headers: Mapping[str, str], body: bytes) -> float | None:
    """Seconds to wait after a 429: the JSON `retry_after`, else `Retry-After`, else None."""
    from_body = None
    try:
        data = json.loads(body or b"{}")
        if isinstance(data, dict):
            from_body = _float(data.get("retry_after"))
    except (ValueError, UnicodeDecodeError):
        pass
    from_header = _float(_header(headers, "retry-after"))
    if from_header is None:
        from_header = _float(_header(headers, "x-ratelimit-reset-after"))
    if from_body is None:
        return from_header
    if from_header is not None and from_body > 100 * max(from_header, 0.001):
        return from_body / 1000.0  # body in ms, header in s
    if from_body >= RETRY_AFTER_MS_THRESHOLD:
        return from_body / 1000.0
    return from_body


_ERRNO = re.compile(r"\[Errno -?\d+\] [^'\")]+")


def network_reason(exc: BaseException) -> str:
    """A short reason for a failed request: `ConnectionError: [Errno 111] Connection refused`."""
    text = str(exc) or "no answer"
    found = _ERRNO.search(text)
    if found:
        text = found.group(0).strip()
    elif "timed out" in text.lower() or isinstance(exc, TimeoutError):
        text = "timed out"
    return f"{type(exc).__name__}: {discord.clip(text, 200)}"


def _describe_error(status: int, body: bytes) -> str:
    try:
        data = json.loads(body or b"{}")
        message = data.get("message") if isinstance(data, dict) else None
    except (ValueError, UnicodeDecodeError):
        message = None
    text = message or (body or b"").decode("utf-8", "replace").strip()
    return f"HTTP {status}" + (f": {discord.clip(text, 200)}" if text else "")


def send_message(
    post: Post,
    url: str,
    payload: dict,
    policy: RetryPolicy = DEFAULT_POLICY,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    deadline: float | None = None,
) -> SendResult:
    """POST one message with retries. Never raises for HTTP or network failures.

    A URL outside the allow-list (core.webhook) is refused before any request.
    """
    try:
        url = check_webhook_url(url)
    except WebhookURLError as exc:
        return SendResult(False, 0, None, f"not sent: {exc}")
    target = with_wait(url)
    start = clock()
    stop_at = start + policy.max_total_s
    if deadline is not None:
        stop_at = min(stop_at, deadline)
    attempts, status = 0, None
    reason = "not attempted"
    while attempts < policy.max_attempts:
        timeout = max(0.1, min(policy.timeout_s, stop_at - clock()))
        attempts += 1
        wait: float | None
        try:
            status, headers, body = post(target, payload, timeout)
        except ValueError:  # urllib/requests refuse the URL itself: no retry can help
            reason = "the webhook URL is malformed; expected https://discord.com/api/webhooks/…"
            return SendResult(False, attempts, None, reason)
        except (OSError, http.client.HTTPException) as exc:
            status = None
            reason = discord.clip(discord.redact(network_reason(exc), url), 300)
            wait = min(policy.backoff_max_s, policy.backoff_base_s * 2 ** (attempts - 1))
        else:
            if 200 <= status < 300:
                return SendResult(True, attempts, status, "")
            reason = discord.redact(_describe_error(status, body), url)
            if 300 <= status < 400:
                # Never followed, and its body is not quoted: it did not come from Discord.
                reason = f"HTTP {status}: the webhook answered with a redirect (not followed)"
                break
            if status == 429:
                wait = retry_after_s(headers, body)
                wait = policy.backoff_base_s if wait is None else wait
                if wait > policy.max_retry_after_s:
                    reason += f" (rate limited for {wait:g} s, more than we wait)"
                    break
            elif status >= 500 or status == 408:
                wait = min(policy.backoff_max_s, policy.backoff_base_s * 2 ** (attempts - 1))
            else:
                break  # 4xx other than 408/429: the request itself is wrong; retrying won't help
        if attempts >= policy.max_attempts:
            break
        if clock() + wait + 0.1 > stop_at:
            reason += f" (out of retry time after {clock() - start:.1f} s)"
            break
        sleep(wait)
    return SendResult(False, attempts, status, f"{reason} after {attempts} attempt(s)")


def read_marker(store: ObjectStore, source_key: str) -> dict | None:
    """The recorded alert outcome for one source object, or None."""
    data = store.get(alert_key(source_key))
    if data is None:
        return None
    try:
        marker = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None  # unreadable marker: treat as never alerted (retry rather than lose)
    return marker if isinstance(marker, dict) else None


def write_marker(
    store: ObjectStore,
    source_key: str,
    status: str,
    reason: str,
    spikes: int,
    attempts: int = 0,
    http_status: int | None = None,
    previous: dict | None = None,
    now: datetime | None = None,
) -> str:
    """Record the outcome (never the URL). Raises whatever the store raises."""
    key = alert_key(source_key)
    now = now or datetime.now(UTC)
    marker = {
        "source_key": source_key,
        "status": status,
        "reason": reason,
        "attempts": attempts,
        "http_status": http_status,
        "spikes": spikes,
        "time": now.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "runs": int((previous or {}).get("runs", 0)) + 1,
    }
    store.put(key, json.dumps(marker, ensure_ascii=False, indent=1).encode())
    return key


def deliver_alert(
    store: ObjectStore,
    source_key: str,
    spikes: pa.Table,
    post: Post,
    url: str,
    sleep: Callable[[float], None] = time.sleep,
    policy: RetryPolicy = DEFAULT_POLICY,
    clock: Callable[[], float] = time.monotonic,
    deadline: float | None = None,
) -> AlertOutcome:
    """Announce one delivered file's spikes (already stored) once, and record the outcome."""
    if spikes.num_rows == 0:
        return AlertOutcome(NOTHING_TO_SEND, source_key, 0, marker_key=alert_key(source_key))
    return deliver_message(
        store,
        source_key,
        lambda: discord.build_alert_message(spikes, source_key),
        spikes.num_rows,
        post,
        url,
        sleep,
        policy,
        clock,
        deadline,
    )


def deliver_message(
    store: ObjectStore,
    source_key: str,
    message: dict | Callable[[], dict],
    count: int,
    post: Post,
    url: str,
    sleep: Callable[[float], None] = time.sleep,
    policy: RetryPolicy = DEFAULT_POLICY,
    clock: Callable[[], float] = time.monotonic,
    deadline: float | None = None,
) -> AlertOutcome:
    """Send the one message of a source (a file's anomalies, or its incident events) once.

    The marker beside the spikes makes it idempotent: `delivered` means nothing is sent again.
    """
    key = alert_key(source_key)
    previous = read_marker(store, source_key)
    if previous and previous.get("status") == DELIVERED:
        return AlertOutcome(
            ALREADY_DELIVERED,
            source_key,
            count,
            attempts=0,
            reason=f"already delivered at {previous.get('time', '?')}",
            marker_key=key,
        )
    payload = message() if callable(message) else message
    result = send_message(post, url, payload, policy, sleep, clock, deadline)
    status = DELIVERED if result.delivered else UNDELIVERED
    write_marker(
        store,
        source_key,
        status,
        result.reason,
        count,
        result.attempts,
        result.http_status,
        previous,
    )
    return AlertOutcome(
        status, source_key, count, result.attempts, result.http_status, result.reason, key
    )


def record_undelivered(
    store: ObjectStore, source_key: str, spikes: pa.Table, reason: str
) -> AlertOutcome:
    """No send was possible (e.g. the webhook URL could not be read): say so in the marker."""
    count = spikes.num_rows
    previous = read_marker(store, source_key)
    if previous and previous.get("status") == DELIVERED:
        return AlertOutcome(ALREADY_DELIVERED, source_key, count, marker_key=alert_key(source_key))
    key = write_marker(store, source_key, UNDELIVERED, reason, count, 0, None, previous)
    return AlertOutcome(UNDELIVERED, source_key, count, reason=reason, marker_key=key)
