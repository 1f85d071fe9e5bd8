"""Webhook allow-list and no-redirect rule (issue 16 item 8), on both paths: the CLI / local
target (requests) and the anomaly Lambda (urllib), with real local HTTP servers."""

from __future__ import annotations

import importlib.util
import sys
import urllib.error
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from typer.testing import CliRunner
from werkzeug import Response

from smartfarm_cli import alerting
from smartfarm_cli.cli import app
from smartfarm_cli.core import alerts, lake, webhook
from smartfarm_cli.core.rules import load_rules
from smartfarm_cli.core.validate import table_from_rows

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "redir-T0KEN-must-stay-put"
PATH = f"/api/webhooks/6060/{TOKEN}"
T0 = int(datetime(2026, 11, 28, 10, 0, tzinfo=UTC).timestamp() * 1000)
SOURCE = "logs/year=2026/month=11/day=28/hour=10/x.parquet"
FAST = alerts.RetryPolicy(max_attempts=3, timeout_s=1.0, backoff_base_s=0.01, max_total_s=5.0)
INNER_BODY = "LOOPBACK-ONLY-BODY 9f1c"


def _load_anomaly_handler():
    path = ROOT / "lambdas" / "anomaly_detector" / "handler.py"
    spec = importlib.util.spec_from_file_location("anomaly_detector_handler_sec", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


anomaly = _load_anomaly_handler()
POSTS = {"requests (CLI)": alerting.requests_post, "urllib (Lambda)": anomaly.urllib_post}


class MemoryStore:
    def __init__(self):
        self.objects: dict[str, bytes] = {}

    def get(self, key):
        return self.objects.get(key)

    def put(self, key, data):
        self.objects[key] = data


def spikes_table():
    readings = table_from_rows([("gh-1", "dev-1", T0, 400.0, 60.0, 800.0, 0)])
    return lake.spike_objects(readings, SOURCE, load_rules())[0]


class Recorder:
    """A post function that records calls (nothing may be sent to a refused URL)."""

    def __init__(self):
        self.calls: list[str] = []

    def __call__(self, url, body, timeout):
        self.calls.append(url)
        return 200, {}, b"{}"


# -- the allow-list ----------------------------------------------------------------------------

ACCEPTED = [
    "https://discord.com/api/webhooks/1234567890/AbC-dEf_123",
    "https://discordapp.com/api/webhooks/1/t",
    "https://ptb.discord.com/api/webhooks/1/t",
    "https://canary.discord.com/api/v10/webhooks/1/t/",
    "https://DISCORD.com/api/webhooks/1/t?thread_id=5",
    "https://discord.com:443/api/webhooks/1/t",
    "  https://discord.com/api/webhooks/1/t\n",
]

REFUSED = [
    ("http://discord.com/api/webhooks/1/t", "only https://"),
    ("file:///etc/hostname", "only https://"),
    ("ftp://discord.com/api/webhooks/1/t", "only https://"),
    ("discord.com/api/webhooks/1/t", "no scheme"),
    ("https://evil.example/api/webhooks/1/t", "'evil.example' is not Discord's"),
    ("https://discord.com.evil.example/api/webhooks/1/t", "is not Discord's"),
    ("https://www.discord.com/api/webhooks/1/t", "is not Discord's"),
    ("https://discord.com:8443/api/webhooks/1/t", "port 8443"),
    ("https://user:pw@discord.com/api/webhooks/1/t", "user info"),
    ("https://discord.com/api/webhooks/1/t#x", "fragment"),
    ("https://discord.com/api/webhooks/abc/t", "path"),
    ("https://discord.com/api/webhooks/1/t/github", "path"),
    ("https://discord.com/oauth2/authorize", "path"),
    ("https://discord.com/api/webhooks/1/t%2F..%2F", "path"),
    ("http://127.0.0.1:8080/api/webhooks/1/t", "only https://"),  # loopback without opt-in
    ("https://localhost/api/webhooks/1/t", "not Discord's"),
    ("https://[::1/api/webhooks/1/t", "malformed"),
]


@pytest.mark.parametrize("url", ACCEPTED)
def test_discord_webhook_urls_are_accepted(url, monkeypatch):
    monkeypatch.delenv(webhook.ALLOW_LOOPBACK_ENV)
    assert webhook.check_webhook_url(url) == url.strip()


@pytest.mark.parametrize(("url", "why"), REFUSED)
def test_other_urls_are_refused_with_a_reason_that_hides_the_url(url, why, monkeypatch):
    monkeypatch.delenv(webhook.ALLOW_LOOPBACK_ENV)
    with pytest.raises(webhook.WebhookURLError, match=r"^the webhook") as info:
        webhook.check_webhook_url(url)
    assert why in str(info.value)
    assert "/t" not in str(info.value).replace("/<token>", "")  # the token is never quoted


def test_loopback_opt_in_accepts_local_test_servers_only():
    env = {webhook.ALLOW_LOOPBACK_ENV: "1"}
    for url in (
        "http://127.0.0.1:8080/api/webhooks/1/t",
        "http://127.9.9.9/api/webhooks/1/t",
        "http://localhost:5000/api/webhooks/1/t",
        "http://[::1]:5000/api/webhooks/1/t",
    ):
        assert webhook.check_webhook_url(url, env) == url
    for url in (
        "http://10.0.0.1/api/webhooks/1/t",
        "http://169.254.169.254/api/webhooks/1/t",  # instance metadata is not loopback
        "http://localhost.evil.example/api/webhooks/1/t",
        "http://discord.com/api/webhooks/1/t",
        "http://127.0.0.1:8080/latest/meta-data",  # the path rule still holds
    ):
        with pytest.raises(webhook.WebhookURLError):
            webhook.check_webhook_url(url, env)
    assert not webhook.loopback_allowed({webhook.ALLOW_LOOPBACK_ENV: "0"})
    assert not webhook.loopback_allowed({})


# -- refused before any request, on every path --------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["http://discord.com/api/webhooks/1/t", "file:///etc/hostname", "https://evil.example/x"],
)
def test_send_message_sends_nothing_to_a_refused_url(url, monkeypatch):
    monkeypatch.delenv(webhook.ALLOW_LOOPBACK_ENV)
    post = Recorder()
    result = alerts.send_message(post, url, {"content": "x"}, FAST, sleep=lambda s: None)
    assert post.calls == []
    assert (result.delivered, result.attempts, result.http_status) == (False, 0, None)
    assert result.reason.startswith("not sent: the webhook")


def test_lambda_records_a_file_url_as_undelivered_and_reads_no_file(tmp_path, monkeypatch):
    monkeypatch.delenv(webhook.ALLOW_LOOPBACK_ENV)
    secret_file = tmp_path / "hostname"
    secret_file.write_text("FILE-CONTENT-7d2e\n")
    store = MemoryStore()
    outcome = alerts.deliver_alert(
        store, SOURCE, spikes_table(), anomaly.urllib_post, secret_file.as_uri(), policy=FAST
    )
    assert outcome.status == alerts.UNDELIVERED and outcome.attempts == 0
    assert "only https://" in outcome.reason
    marker = store.get(lake.alert_key(SOURCE)).decode()
    assert "FILE-CONTENT" not in marker and str(tmp_path) not in marker


def test_urllib_opener_itself_refuses_file_urls(tmp_path):
    """Defence in depth: even past the allow-list, urllib_post cannot read a file."""
    secret_file = tmp_path / "hostname"
    secret_file.write_text("FILE-CONTENT-7d2e\n")
    with pytest.raises(urllib.error.URLError, match="unknown url type"):
        anomaly.urllib_post(secret_file.as_uri(), {"content": "x"}, 1.0)


def test_cli_refuses_http_and_file_webhooks_with_one_line(monkeypatch):
    monkeypatch.delenv(webhook.ALLOW_LOOPBACK_ENV)
    runner = CliRunner()
    for url in ("http://discord.com/api/webhooks/1/secret-tok", "file:///etc/hostname"):
        result = runner.invoke(app, ["discord", "test", "--webhook", url])
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and "only https://" in lines[0] and "secret-tok" not in lines[0]
    with pytest.raises(alerting.WebhookError, match="refused: the webhook URL uses http://"):
        alerting.resolve_webhook(
            env={alerting.WEBHOOK_ENV: "http://discord.com/api/webhooks/1/secret-tok"}
        )


def test_without_opt_in_a_local_server_gets_no_request(httpserver, monkeypatch):
    monkeypatch.delenv(webhook.ALLOW_LOOPBACK_ENV)
    httpserver.expect_request(PATH, method="POST").respond_with_json({"id": "1"})
    for post in POSTS.values():
        result = alerts.send_message(post, httpserver.url_for(PATH), {"content": "x"}, FAST)
        assert not result.delivered and "only https://" in result.reason
    assert httpserver.log == []


# -- redirects are never followed ---------------------------------------------------------------


@pytest.fixture
def inner_server():
    """A second loopback server: the target a malicious 302 would point at."""
    server = HTTPServer(host="127.0.0.1")
    server.start()
    server.expect_request("/internal", method="POST").respond_with_data(INNER_BODY)
    server.expect_request("/internal", method="GET").respond_with_data(INNER_BODY)
    yield server
    server.clear()
    server.stop()


@pytest.mark.parametrize("status", [301, 302, 307, 308])
@pytest.mark.parametrize("name", list(POSTS))
def test_redirect_to_loopback_is_not_followed(name, status, httpserver, inner_server):
    httpserver.expect_request(PATH, method="POST").respond_with_response(
        Response("moved", status=status, headers={"Location": inner_server.url_for("/internal")})
    )
    store = MemoryStore()
    outcome = alerts.deliver_alert(
        store, SOURCE, spikes_table(), POSTS[name], httpserver.url_for(PATH), policy=FAST
    )
    assert inner_server.log == []  # nothing reached the redirect's target
    assert len(httpserver.log) == 1  # a redirect is final, not retried
    assert outcome.status == alerts.UNDELIVERED and outcome.http_status == status
    assert "redirect (not followed)" in outcome.reason
    marker = store.get(lake.alert_key(SOURCE)).decode()
    assert INNER_BODY not in marker and "moved" not in marker and TOKEN not in marker


def test_lambda_handler_path_does_not_follow_a_redirect(httpserver, inner_server):
    """Through process_object, as the deployed handler runs it (webhook URL from 'SSM')."""
    httpserver.expect_request(PATH, method="POST").respond_with_response(
        Response("", status=302, headers={"Location": inner_server.url_for("/internal")})
    )

    class S3:
        class exceptions:
            NoSuchKey = KeyError

        def get_object(self, Bucket, Key):
            readings = table_from_rows([("gh-1", "dev-1", T0, 400.0, 60.0, 800.0, 0)])

            class Body:
                @staticmethod
                def read():
                    return lake.parquet_bytes(readings)

            return {"Body": Body(), "Metadata": {}}

    store = MemoryStore()
    deps = anomaly.Deps(
        s3=S3(),
        spike_store=store,
        rules=load_rules(),
        webhook_url=lambda: httpserver.url_for(PATH),
        sleep=lambda s: None,
        policy=FAST,
    )
    result = anomaly.process_object("sensor-log-bucket", SOURCE, deps)
    assert result.status == "ok" and result.spikes == 1
    assert result.alert == alerts.UNDELIVERED and "redirect (not followed)" in result.error
    assert inner_server.log == [] and len(httpserver.log) == 1
