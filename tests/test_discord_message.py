"""core.discord: one message per file, every Discord limit checked independently here."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest

from smartfarm_cli.core import discord, lake
from smartfarm_cli.core.rules import load_rules
from smartfarm_cli.core.schema import SPIKE_SCHEMA
from smartfarm_cli.core.validate import table_from_rows

T0 = int(datetime(2026, 11, 28, 10, 0, tzinfo=UTC).timestamp() * 1000)


def assert_within_discord_limits(message: dict) -> None:
    """Written out limit by limit (not via discord.limit_violations, which it also checks)."""
    assert len(message["content"]) <= 2000
    assert message["allowed_mentions"] == {"parse": []}
    embeds = message["embeds"]
    assert len(embeds) <= 10
    total = 0
    for embed in embeds:
        assert len(embed.get("title", "")) <= 256
        assert len(embed.get("description", "")) <= 4096
        assert len(embed.get("fields", [])) <= 25
        assert len(embed.get("footer", {}).get("text", "")) <= 2048
        assert len(embed.get("author", {}).get("name", "")) <= 256
        total += len(embed.get("title", "")) + len(embed.get("description", ""))
        total += len(embed.get("footer", {}).get("text", ""))
        total += len(embed.get("author", {}).get("name", ""))
        for field in embed.get("fields", []):
            assert 0 < len(field["name"]) <= 256
            assert 0 < len(field["value"]) <= 1024
            total += len(field["name"]) + len(field["value"])
        assert isinstance(embed.get("color"), int)
    assert total <= 6000
    assert discord.limit_violations(message) == []


def thousand_anomalies(id_length: int = 64, greenhouses: int = 1000):
    """1,000 readings, one anomaly each, on 1,000 devices (so no jump rule)."""
    rows = []
    for i in range(1000):
        gh = f"{i % greenhouses:04d}".rjust(id_length, "g")[:id_length]
        dev = f"d{i:04d}".rjust(id_length, "d")[:id_length]
        kind = i % 4
        rows.append(
            (
                gh,
                dev,
                T0 + i * 1000,
                400.0 if kind == 1 else 21.0,
                99.0 if kind == 2 else 60.0,
                5000.0 if kind == 3 else 800.0,
                7 if kind == 0 else 0,
            )
        )
    source = "logs/year=2026/month=11/day=28/hour=10/" + "x" * 900 + ".parquet"
    spikes, _ = lake.spike_objects(table_from_rows(rows), source, load_rules())
    assert spikes.num_rows == 1000
    return spikes, source


@pytest.mark.parametrize("greenhouses", [1, 7, 1000])
def test_thousand_anomalies_make_one_message_within_limits(greenhouses):
    spikes, source = thousand_anomalies(greenhouses=greenhouses)
    message = discord.build_alert_message(spikes, source)
    assert_within_discord_limits(message)
    assert len(message["embeds"]) >= 2  # a summary and at least one item
    assert "1,000 anomal" in message["content"]
    summary = message["embeds"][0]
    by_rule = next(f["value"] for f in summary["fields"] if f["name"] == "By rule")
    assert "`sensor_error` (critical): **250**" in by_rule
    assert "`impossible` (critical): **250**" in by_rule
    assert "`out_of_band` (warning): **500**" in by_rule
    greenhouse_field = next(f for f in summary["fields"] if f["name"].startswith("By greenhouse"))
    assert f"({greenhouses})" in greenhouse_field["name"]
    if greenhouses > discord.GREENHOUSE_LINES:
        assert "more greenhouses" in greenhouse_field["value"]


def test_items_are_most_severe_first_and_coloured_by_severity():
    spikes, source = thousand_anomalies(id_length=8, greenhouses=3)
    message = discord.build_alert_message(spikes, source)
    items = message["embeds"][1:]
    severities = [e["title"].split(" · ")[0] for e in items]
    assert severities == sorted(severities, key=lambda s: s != "CRITICAL")
    assert severities[0] == "CRITICAL"
    for embed in items:
        expected = discord.COLOURS[
            "critical" if embed["title"].startswith("CRITICAL") else "warning"
        ]
        assert embed["color"] == expected
    # both critical kinds are shown, not only the first flood
    kinds = {e["title"] for e in items}
    assert "CRITICAL · sensor_error · error_code" in kinds
    assert "CRITICAL · impossible · temperature" in kinds
    assert message["embeds"][0]["color"] == discord.COLOURS["critical"]


def test_warnings_only_is_orange_and_few_items_are_all_shown():
    rows = [("gh-1", "dev-1", T0, 21.0, 99.0, 800.0, 0)]
    spikes, _ = lake.spike_objects(table_from_rows(rows), "logs/a.parquet", load_rules())
    message = discord.build_alert_message(spikes, "logs/a.parquet")
    assert_within_discord_limits(message)
    assert len(message["embeds"]) == 2
    assert message["embeds"][0]["color"] == discord.COLOURS["warning"]
    assert "All 1 anomalies are shown" in message["embeds"][0]["description"]
    assert "⚠️" in message["content"] and "1 anomaly**" in message["content"]


def test_hostile_text_is_clipped_and_cannot_break_out():
    n = 40
    long = "@everyone " + "`" * 5 + "y" * 6000
    spikes = pa.table(
        {
            "greenhouse_id": ["g" * 64] * n,
            "device_id": ["d" * 64] * n,
            "timestamp": pa.array([T0] * n, pa.timestamp("ms")),
            "temperature": [1e300] * n,
            "humidity": [None] * n,
            "co2": [-1.0] * n,
            "error_code": pa.array([2**31 - 1] * n, pa.int32()),
            "synthetic": [False] * n,
            "rule": ["r" * 500] * n,
            "metric": ["m" * 500] * n,
            "severity": ["critical"] * n,
            "detail": [long] * n,
            "source_key": [long] * n,
            "detected_at": pa.array([T0] * n, pa.timestamp("ms")),
        },
        schema=SPIKE_SCHEMA,
    )
    message = discord.build_alert_message(spikes, long)
    assert_within_discord_limits(message)
    assert "``" not in message["content"].replace("`**", "")  # backticks of the key replaced


def test_limit_violations_detects_each_breach():
    bad = {
        "content": "x" * 2001,
        "embeds": [
            {"title": "t" * 257, "description": "d" * 4097, "fields": [{"name": "n", "value": "v"}]}
        ]
        * 11,
    }
    problems = discord.limit_violations(bad)
    assert "content longer than 2,000" in problems
    assert "more than 10 embeds" in problems
    assert "embeds hold more than 6,000 characters" in problems
    assert "embed 0: title too long" in problems and "embed 0: description too long" in problems


def test_test_message_is_labelled_and_within_limits():
    message = discord.build_test_message("farmctl on host")
    assert "TEST" in message["content"]
    assert_within_discord_limits(message)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (
            "https://discord.com/api/webhooks/1234567890/AbC-dEf_123",
            "https://discord.com/api/webhooks/1234567890/****",
        ),
        (
            "https://discord.com/api/webhooks/1234567890/AbC-dEf_123?thread_id=5",
            "https://discord.com/api/webhooks/1234567890/****",
        ),
        (
            "https://user:pw@ptb.discord.com/api/v10/webhooks/99/tok/github",
            "https://ptb.discord.com/api/v10/webhooks/99/****",
        ),
        ("http://127.0.0.1:8080/hook/secret-token", "http://127.0.0.1:8080/hook/****"),
        ("not a url", "****"),
    ],
)
def test_mask_webhook_url(url, masked):
    assert discord.mask_webhook_url(url) == masked


def test_redact_removes_url_and_token():
    url = "https://discord.com/api/webhooks/1234567890/AbC-dEf_123"
    text = (
        "HTTPSConnectionPool: Max retries exceeded with url: "
        f"/api/webhooks/1234567890/AbC-dEf_123?wait=true ({url})"
    )
    clean = discord.redact(text, url)
    assert "AbC-dEf_123" not in clean and "1234567890" in clean
