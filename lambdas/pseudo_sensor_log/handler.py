"""pseudo_sensor_log: test traffic for the ingest API, in two modes of one function.

1. API Gateway proxy request (REST API `pseudo_api_gw`, `POST /`, AWS_PROXY integration), body
   like `{"count": 12, "interval": 10}`. The body is validated (400 with a JSON reason when it is
   wrong); then the function invokes ITSELF asynchronously (InvocationType=Event, function name
   from SELF_FUNCTION_NAME) with `{"run": {...}}` and answers 202 `{"run_id", ...}` at once.
   API Gateway cuts synchronous calls at 29 s, far below 12 x 10 s.
2. The asynchronous run `{"run": {...}}`: readings from the core generator, one step (every
   greenhouse x device) per interval, POSTed as `{"records": [reading, ...]}` (<= 500 per
   request) to INGEST_URL (the kinesis_api_gw `POST /records` endpoint) with the `x-api-key`
   header. A PutRecords-style answer with FailedRecordCount > 0 gets its failed records re-sent,
   a bounded number of times. The readings are synthetic, but the body does not say so (the
   ingest API refuses `synthetic: true` from anyone): the API's mapping template marks every
   reading sent with the simulator's own key (INGEST_API_KEY_SSM_PARAMETER), and the Firehose
   transform stores them with synthetic = true, so they page no one unless the stack's
   alert_on_synthetic is set.

A direct invocation with the body itself as the event (`{"count": 3, "interval": 1}`, e.g. the
console's test button) is validated and run synchronously.

Environment:
  SELF_FUNCTION_NAME             this function's name (proxy mode)
  FUNCTION_TIMEOUT_S             the function timeout; else the remaining time of the invocation
  INGEST_URL                     e.g. https://<id>.execute-api.<region>.amazonaws.com/prod/records
  INGEST_API_KEY_SSM_PARAMETER   SecureString holding the API key (or INGEST_API_KEY, for tests)
Terraform: the role needs lambda:InvokeFunction on this function itself, ssm:GetParameter (and
kms:Decrypt) on the key parameter; set the async invoke config's maximum_retry_attempts = 0 (a
retried run would send the readings twice) and the timeout to at least the largest run allowed.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import asdict, dataclass

from smartfarm_cli.core import generator, putrecords
from smartfarm_cli.core.jsonlog import log
from smartfarm_cli.core.schema import SYNTHETIC
from smartfarm_cli.core.simulation import (
    FIELDS,
    BadRequest,
    RunSpec,
    parse_body,
)
from smartfarm_cli.core.webhook import no_redirect_opener

USER_AGENT = "smartfarm-pseudo-sensor-log (aws lambda, 0.1)"
TIMEOUT_MARGIN_S = 15.0
DEFAULT_TIMEOUT_S = 900.0
SEND_RETRIES = 3
HTTP_TIMEOUT_S = 10.0


def run_budget_s(context) -> float:
    """Seconds a run may last: the function timeout (env, else remaining time) minus a margin."""
    configured = os.environ.get("FUNCTION_TIMEOUT_S")
    if configured:
        total = float(configured)
    elif context is not None and hasattr(context, "get_remaining_time_in_millis"):
        total = context.get_remaining_time_in_millis() / 1000.0
    else:
        total = DEFAULT_TIMEOUT_S
    return max(0.0, total - TIMEOUT_MARGIN_S)


def _response(status: int, body: dict) -> dict:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(body),
    }


def _lambda_invoker(payload: dict) -> None:
    import boto3

    response = boto3.client("lambda").invoke(
        FunctionName=os.environ["SELF_FUNCTION_NAME"],
        InvocationType="Event",
        Payload=json.dumps(payload).encode(),
    )
    if response.get("StatusCode") != 202:
        raise RuntimeError(f"async invoke answered {response.get('StatusCode')}")


def handle_api_request(event: dict, context, invoke=_lambda_invoker) -> dict:
    """API Gateway proxy request -> 400 with a reason, or 202 with the run id (run started)."""
    method = event.get("httpMethod") or (
        event.get("requestContext", {}).get("http", {}).get("method")
    )
    if method and method.upper() != "POST":
        return _response(405, {"error": "use POST with a JSON body"})
    body = event.get("body")
    if event.get("isBase64Encoded") and isinstance(body, str):
        import base64

        try:
            body = base64.b64decode(body).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return _response(400, {"error": "body is not valid base64-encoded UTF-8"})
    if body is None or (isinstance(body, str) and not body.strip()):
        return _response(400, {"error": 'empty body; send e.g. {"count": 12, "interval": 10}'})
    try:
        spec = parse_body(body, run_budget_s(context))
    except BadRequest as exc:
        log("INFO", "request_rejected", reason=str(exc))
        return _response(400, {"error": str(exc)})
    request_id = (event.get("requestContext") or {}).get("requestId") or ""
    spec = RunSpec(**{**asdict(spec), "run_id": request_id or uuid.uuid4().hex})
    try:
        invoke({"run": asdict(spec)})
    except Exception as exc:
        log("ERROR", "run_not_started", run_id=spec.run_id, error=type(exc).__name__)
        return _response(
            500, {"error": "could not start the run; try again", "run_id": spec.run_id}
        )
    log("INFO", "run_started", **asdict(spec))
    return _response(
        202,
        {
            "run_id": spec.run_id,
            "count": spec.count,
            "interval": spec.interval,
            "readings": spec.readings,
            "status": "started",
        },
    )


# -- sending -----------------------------------------------------------------------------------


def urllib_post(url: str, body: dict, headers: dict, timeout: float):
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers},
    )
    try:
        with no_redirect_opener().open(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()
    except http.client.HTTPException as exc:
        raise ConnectionError(f"bad HTTP answer: {type(exc).__name__}") from None


@dataclass
class SendStats:
    requests: int = 0
    sent: int = 0
    failed: int = 0
    resent: int = 0


def send_batch(records: list[dict], url: str, api_key: str, post, sleep, stats: SendStats):
    """POST up to 500 readings; re-send failed ones (partial failure, 429, 5xx) with backoff."""

    def put(pending: list[dict]) -> list:
        try:
            status, answer = post(url, {"records": pending}, {"x-api-key": api_key}, HTTP_TIMEOUT_S)
        except OSError as exc:
            log("WARNING", "send_error", error=type(exc).__name__, records=len(pending))
            raise putrecords.RetryableError(type(exc).__name__) from None
        if status == 429 or status >= 500:
            log("WARNING", "send_retry", status=status, records=len(pending))
            raise putrecords.RetryableError(f"HTTP {status}")
        if status >= 300:
            text = answer[:300].decode("utf-8", "replace")
            log("ERROR", "send_rejected", status=status, answer=text)
            raise putrecords.PermanentError(f"HTTP {status}")
        try:
            data = json.loads(answer or b"{}")
        except (ValueError, UnicodeDecodeError):
            data = {}
        return putrecords.error_codes(data if isinstance(data, dict) else {}, len(pending))

    outcome = putrecords.send_batch(
        records, put, sleep, SEND_RETRIES + 1, lambda attempt: min(2.0, 0.1 * 2**attempt)
    )
    stats.requests += outcome.calls
    stats.sent += outcome.sent
    stats.resent += outcome.resent
    stats.failed += len(outcome.unsent)


def run(
    spec: RunSpec,
    url: str,
    api_key: str,
    post=urllib_post,
    sleep=time.sleep,
    clock=time.monotonic,
    wall_ms=None,
) -> dict:
    """Send `count` steps of readings, one step every `interval` seconds."""
    per_step = spec.greenhouses * spec.devices
    start_ms = int(time.time() * 1000) if wall_ms is None else wall_ms
    generated = generator.generate(
        start_ms,
        spec.count,
        spec.interval,
        spec.greenhouses,
        spec.devices,
        spec.anomaly_rate,
        spec.seed,
    )
    stats = SendStats()
    t0 = clock()
    for step in range(spec.count):
        delay = t0 + step * spec.interval - clock()
        if delay > 0:
            sleep(delay)
        rows = generator.to_json_records(
            generated.table.slice(step * per_step, per_step).drop_columns([SYNTHETIC])
        )
        for batch in putrecords.batches(rows):
            send_batch(batch, url, api_key, post, sleep, stats)
    summary = {
        "run_id": spec.run_id,
        "steps": spec.count,
        "readings": spec.readings,
        "sent": stats.sent,
        "failed": stats.failed,
        "resent": stats.resent,
        "requests": stats.requests,
        "anomalies_injected": spec.readings - generated.injected.null_count,
        "duration_s": round(clock() - t0, 3),
    }
    log("ERROR" if stats.failed else "INFO", "run_finished", **summary)
    return summary


def ingest_api_key() -> str:
    name = os.environ.get("INGEST_API_KEY_SSM_PARAMETER", "").strip()
    if name:
        import boto3

        response = boto3.client("ssm").get_parameter(Name=name, WithDecryption=True)
        return response["Parameter"]["Value"]
    key = os.environ.get("INGEST_API_KEY", "")
    if not key:
        raise RuntimeError("set INGEST_API_KEY_SSM_PARAMETER (or INGEST_API_KEY)")
    return key


def handle_run(run_event: dict, context=None) -> dict:
    """The asynchronous run: re-validated (anyone may invoke the function), then sent."""
    spec = parse_body({k: v for k, v in run_event.items() if k in FIELDS}, run_budget_s(context))
    spec = RunSpec(**{**asdict(spec), "run_id": str(run_event.get("run_id") or uuid.uuid4().hex)})
    return run(spec, os.environ["INGEST_URL"], ingest_api_key())


def handler(event, context):
    if isinstance(event, dict) and isinstance(event.get("run"), dict):
        return handle_run(event["run"], context)
    if isinstance(event, dict) and ("httpMethod" in event or "requestContext" in event):
        return handle_api_request(event, context)
    if isinstance(event, dict) and "count" in event:  # direct invocation with the body itself
        return handle_run(event, context)
    raise ValueError("unknown event: expected an API Gateway request or {'run': {...}}")
