"""core.alerts against a real local HTTP server standing in for Discord (requests and urllib)."""

from __future__ import annotations

import importlib.util
import itertools
import json
import socket
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from werkzeug import Response

from smartfarm_cli.alerting import requests_post
from smartfarm_cli.core import alerts, lake
from smartfarm_cli.core.rules import load_rules
from smartfarm_cli.core.validate import table_from_rows

TOKEN = "s3cr3t-T0KEN-do-not-leak"
PATH = f"/api/webhooks/424242/{TOKEN}"
SOURCE = "logs/year=2026/month=11/day=28/hour=10/stream-000000000001-000000000010.parquet"
T0 = int(datetime(2026, 11, 28, 10, 0, tzinfo=UTC).timestamp() * 1000)
FAST = alerts.RetryPolicy(
    max_attempts=4, timeout_s=0.3, backoff_base_s=0.02, backoff_max_s=0.1, max_total_s=5.0
)


class MemoryStore:
    def __init__(self):
        self.objects: dict[str, bytes] = {}

    def get(self, key):
        return self.objects.get(key)

    def put(self, key, data):
        self.objects[key] = data


def discord_fake(httpserver, responses):
    """Serve `responses` [(status, json body, headers)] in order (the last one repeats)."""
    calls: list[dict] = []

    def handle(request):
        calls.append(
            {
                "t": time.monotonic(),
                "json": request.get_json(silent=True),
                "query": request.query_string.decode(),
            }
        )
        status, body, headers = responses[min(len(calls), len(responses)) - 1]
        return Response(
            json.dumps(body), status=status, headers=headers, content_type="application/json"
        )

    httpserver.expect_request(PATH, method="POST").respond_with_handler(handle)
    return calls


def spikes_table():
    rows = [
        ("gh-1", "dev-1", T0, 21.0, 60.0, 800.0, 1),
        ("gh-1", "dev-2", T0, 400.0, 60.0, 800.0, 0),
        ("gh-2", "dev-1", T0, 21.0, 99.0, 800.0, 0),
    ]
    spikes, _ = lake.spike_objects(table_from_rows(rows), SOURCE, load_rules())
    assert spikes.num_rows == 3
    return spikes


def urllib_post():
    """The Lambda's stdlib transport, loaded from its handler file."""
    path = Path(__file__).resolve().parents[1] / "lambdas" / "anomaly_detector" / "handler.py"
    spec = importlib.util.spec_from_file_location("anomaly_handler_for_alerts", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.urllib_post


@pytest.fixture(params=["requests", "urllib"])
def post(request):
    return requests_post if request.param == "requests" else urllib_post()


def marker(store):
    return json.loads(store.objects[lake.alert_key(SOURCE)])


def test_delivered_once_with_wait_and_no_mentions(httpserver, post):
    calls = discord_fake(httpserver, [(200, {"id": "1"}, {})])
    store = MemoryStore()
    url = httpserver.url_for(PATH)
    outcome = alerts.deliver_alert(store, SOURCE, spikes_table(), post, url, policy=FAST)
    assert outcome.status == alerts.DELIVERED and outcome.attempts == 1
    assert len(calls) == 1
    assert calls[0]["query"] == "wait=true"
    body = calls[0]["json"]
    assert body["allowed_mentions"] == {"parse": []}
    assert "3 anomalies" in body["content"]
    saved = marker(store)
    assert saved["status"] == "delivered" and saved["attempts"] == 1 and saved["spikes"] == 3
    assert TOKEN not in store.objects[lake.alert_key(SOURCE)].decode()
    assert "424242" not in store.objects[lake.alert_key(SOURCE)].decode()  # no URL at all

    again = alerts.deliver_alert(store, SOURCE, spikes_table(), post, url, policy=FAST)
    assert again.status == alerts.ALREADY_DELIVERED
    assert len(calls) == 1  # a duplicate event sends nothing


def test_429_retry_after_in_body_is_honoured(httpserver, post):
    calls = discord_fake(
        httpserver,
        [
            (
                429,
                {"message": "You are being rate limited.", "retry_after": 0.4, "global": False},
                {"Retry-After": "1"},
            ),
            (200, {"id": "1"}, {}),
        ],
    )
    store = MemoryStore()
    outcome = alerts.deliver_alert(
        store, SOURCE, spikes_table(), post, httpserver.url_for(PATH), policy=FAST
    )
    assert outcome.status == alerts.DELIVERED and outcome.attempts == 2
    gap = calls[1]["t"] - calls[0]["t"]  # measured on the server side
    assert 0.4 <= gap < 1.5, gap


def test_429_retry_after_header_only_and_ms_guard(httpserver, post):
    calls = discord_fake(
        httpserver,
        [
            (429, {"message": "limited"}, {"Retry-After": "0.3"}),
            (429, {"retry_after": 250}, {"Retry-After": "0.25"}),  # body in ms
            (200, {"id": "1"}, {}),
        ],
    )
    outcome = alerts.deliver_alert(
        MemoryStore(), SOURCE, spikes_table(), post, httpserver.url_for(PATH), policy=FAST
    )
    assert outcome.status == alerts.DELIVERED and outcome.attempts == 3
    assert 0.3 <= calls[1]["t"] - calls[0]["t"] < 1.5
    assert 0.25 <= calls[2]["t"] - calls[1]["t"] < 1.5  # not 250 s


def test_retry_after_parsing():
    assert alerts.retry_after_s({}, b'{"retry_after": 1.5}') == 1.5
    assert alerts.retry_after_s({"retry-after": "2"}, b"{}") == 2.0
    assert alerts.retry_after_s({"Retry-After": "2"}, b'{"retry_after": 2000}') == 2.0
    assert alerts.retry_after_s({}, b'{"retry_after": 3500}') == 3.5  # only ms makes sense
    assert alerts.retry_after_s({"X-RateLimit-Reset-After": "0.7"}, b"not json") == 0.7
    assert alerts.retry_after_s({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, b"") is None


def test_500s_end_undelivered_then_a_duplicate_event_retries(httpserver, post):
    calls = discord_fake(httpserver, [(500, {"message": "boom"}, {})])
    store = MemoryStore()
    url = httpserver.url_for(PATH)
    waits = []

    def sleep(seconds):
        waits.append(seconds)
        time.sleep(seconds)

    outcome = alerts.deliver_alert(
        store, SOURCE, spikes_table(), post, url, sleep=sleep, policy=FAST
    )
    assert outcome.status == alerts.UNDELIVERED
    assert len(calls) == FAST.max_attempts
    saved = marker(store)
    assert saved["status"] == "undelivered" and saved["http_status"] == 500
    assert "HTTP 500" in saved["reason"] and saved["attempts"] == FAST.max_attempts
    assert waits == [0.02, 0.04, 0.08]  # exponential backoff between the attempts
    gaps = [b["t"] - a["t"] for a, b in itertools.pairwise(calls)]
    assert all(gap >= wait for gap, wait in zip(gaps, waits, strict=True))

    httpserver.clear()
    calls = discord_fake(httpserver, [(200, {"id": "2"}, {})])
    retried = alerts.deliver_alert(store, SOURCE, spikes_table(), post, url, policy=FAST)
    assert retried.status == alerts.DELIVERED and len(calls) == 1
    assert marker(store)["runs"] == 2


def test_permanent_4xx_is_not_retried(httpserver, post):
    calls = discord_fake(httpserver, [(404, {"message": "Unknown Webhook", "code": 10015}, {})])
    store = MemoryStore()
    outcome = alerts.deliver_alert(
        store, SOURCE, spikes_table(), post, httpserver.url_for(PATH), policy=FAST
    )
    assert outcome.status == alerts.UNDELIVERED and len(calls) == 1
    assert "Unknown Webhook" in marker(store)["reason"]


def test_timeouts_end_undelivered_in_bounded_time(post):
    silent = socket.socket()  # accepts connections (backlog) but never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    url = f"http://127.0.0.1:{silent.getsockname()[1]}{PATH}"
    policy = alerts.RetryPolicy(
        max_attempts=3, timeout_s=0.2, backoff_base_s=0.01, backoff_max_s=0.05, max_total_s=3.0
    )
    store = MemoryStore()
    started = time.monotonic()
    try:
        outcome = alerts.deliver_alert(store, SOURCE, spikes_table(), post, url, policy=policy)
    finally:
        silent.close()
    assert time.monotonic() - started < 2.0
    assert outcome.status == alerts.UNDELIVERED and outcome.attempts == 3
    saved = marker(store)
    assert saved["status"] == "undelivered" and "imeout" in saved["reason"]
    assert TOKEN not in saved["reason"]


def test_connection_refused_ends_undelivered_and_token_never_leaks(post):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    url = f"http://127.0.0.1:{port}{PATH}"
    store = MemoryStore()
    outcome = alerts.deliver_alert(store, SOURCE, spikes_table(), post, url, policy=FAST)
    assert outcome.status == alerts.UNDELIVERED and outcome.attempts == FAST.max_attempts
    text = store.objects[lake.alert_key(SOURCE)].decode()
    assert "Connection" in text or "refused" in text
    assert TOKEN not in text and TOKEN not in outcome.reason


def test_total_retry_time_is_bounded(httpserver):
    calls = discord_fake(httpserver, [(503, {}, {})])
    policy = alerts.RetryPolicy(
        max_attempts=50, timeout_s=0.3, backoff_base_s=0.1, backoff_max_s=0.2, max_total_s=0.6
    )
    started = time.monotonic()
    outcome = alerts.deliver_alert(
        MemoryStore(),
        SOURCE,
        spikes_table(),
        requests_post,
        httpserver.url_for(PATH),
        policy=policy,
    )
    assert time.monotonic() - started < 1.5
    assert outcome.status == alerts.UNDELIVERED and 2 <= len(calls) < 10
    assert "out of retry time" in outcome.reason


def test_rate_limit_longer_than_allowed_gives_up_at_once(httpserver):
    calls = discord_fake(httpserver, [(429, {"retry_after": 900.0}, {"Retry-After": "900"})])
    sleeps = []
    outcome = alerts.deliver_alert(
        MemoryStore(),
        SOURCE,
        spikes_table(),
        requests_post,
        httpserver.url_for(PATH),
        sleep=sleeps.append,
        policy=FAST,
    )
    assert outcome.status == alerts.UNDELIVERED and len(calls) == 1 and sleeps == []
    assert "rate limited for 900 s" in outcome.reason


def test_nothing_to_send_for_an_empty_table():
    store = MemoryStore()

    def never(*_):
        raise AssertionError("must not post")

    outcome = alerts.deliver_alert(
        store, SOURCE, spikes_table().slice(0, 0), never, "http://x.invalid/a/b", policy=FAST
    )
    assert outcome.status == alerts.NOTHING_TO_SEND and store.objects == {}


def test_with_wait_keeps_other_query_parameters():
    assert alerts.with_wait("https://d/api/webhooks/1/t") == "https://d/api/webhooks/1/t?wait=true"
    assert (
        alerts.with_wait("https://d/api/webhooks/1/t?thread_id=9&wait=false")
        == "https://d/api/webhooks/1/t?thread_id=9&wait=true"
    )
