"""Discord webhook payloads: one message per delivered log file, always within Discord's limits.

A file's anomalies become ONE message, whatever their number: the content line summarises the
file, the first embed counts the anomalies per rule / severity / greenhouse, and the remaining
embeds (coloured by severity) show the most severe individual readings. Everything is clipped to
the limits below before it is sent, so Discord never answers 400 "BASE_TYPE_MAX_LENGTH".

Webhook URLs carry a secret token (`/api/webhooks/<id>/<token>`): `mask_webhook_url` keeps the
id and hides the token for display, `redact` scrubs it from any text (error messages of HTTP
libraries quote the URL they failed on).

Pure: stdlib + pyarrow only (this module is zipped into the Lambdas).
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlsplit

from .lazy import pa, pc
from .rules import SEVERITY_ORDER
from .schema import METRIC_UNITS

# Discord limits (characters). https://discord.com/developers/docs/resources/message#embed-limits
CONTENT_MAX = 2000
EMBEDS_MAX = 10
EMBEDS_TOTAL_MAX = 6000
TITLE_MAX = 256
DESCRIPTION_MAX = 4096
FIELDS_MAX = 25
FIELD_NAME_MAX = 256
FIELD_VALUE_MAX = 1024
FOOTER_MAX = 2048
AUTHOR_NAME_MAX = 256

COLOURS = {"critical": 0xE74C3C, "warning": 0xF39C12, "info": 0x3498DB}
USERNAME = "smartfarm"
NO_MENTIONS = {"parse": []}
SEVERITY_ICON = {"critical": "🔴", "warning": "🟠"}

MAX_ITEM_EMBEDS = EMBEDS_MAX - 1  # the first embed is the summary
GREENHOUSE_LINES = 15
SOURCE_KEY_SHOWN = 300


def clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, with an ellipsis when cut."""
    text = str(text)
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def _code(text: str, limit: int = SOURCE_KEY_SHOWN) -> str:
    """Inline code span (no backticks inside, so nothing can break out of it)."""
    return "`" + clip(str(text).replace("`", "'"), limit) + "`"


def embed_chars(embed: dict) -> int:
    """Characters that count towards the 6,000-per-message embed budget."""
    total = len(embed.get("title", "")) + len(embed.get("description", ""))
    total += len(embed.get("footer", {}).get("text", ""))
    total += len(embed.get("author", {}).get("name", ""))
    for f in embed.get("fields", []):
        total += len(f["name"]) + len(f["value"])
    return total


def _field(name: str, value: str, inline: bool = False) -> dict:
    return {
        "name": clip(name, FIELD_NAME_MAX),
        "value": clip(value or "-", FIELD_VALUE_MAX),
        "inline": inline,
    }


def _lines(
    lines: list[str], limit: int = FIELD_VALUE_MAX, max_lines: int | None = None, noun: str = "more"
) -> str:
    """Join lines, ending with "… and N <noun>" for those that do not fit in `limit` chars."""
    shown_max = len(lines) if max_lines is None else min(max_lines, len(lines))
    out: list[str] = []
    used = 0
    for number, line in enumerate(lines[:shown_max]):
        rest = len(lines) - number
        reserve = 0 if rest == 1 else len(f"… and {rest} {noun}") + 1
        if used + len(line) + reserve > limit:
            break
        out.append(line)
        used += len(line) + 1
    left = len(lines) - len(out)
    if left:
        out.append(f"… and {left} {noun}")
    return clip("\n".join(out), limit)


def _iso_ms(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.isoformat(timespec="seconds").replace("+00:00", "Z")
    return str(value)


def _number(value) -> str:
    return "-" if value is None else f"{value:g}"


def _sorted_by_severity(spikes: pa.Table) -> pa.Table:
    """Most severe first (unknown severities last), then oldest first."""
    rank = pa.repeat(pa.scalar(len(SEVERITY_ORDER), pa.int64()), spikes.num_rows)
    for severity, order in SEVERITY_ORDER.items():
        hit = pc.fill_null(pc.equal(spikes["severity"], severity), False)
        rank = pc.if_else(hit, pa.scalar(order, pa.int64()), rank)
    ranked = spikes.append_column("_rank", rank)
    ranked = ranked.sort_by([("_rank", "ascending"), ("timestamp", "ascending")])
    return ranked.drop_columns(["_rank"])


def most_severe(spikes: pa.Table, limit: int) -> list[dict]:
    """Up to `limit` rows, most severe first, taking turns between (rule, metric) kinds so that
    one flood of a single kind does not hide the others; oldest first within a kind."""
    ordered = _sorted_by_severity(spikes)
    queues = []
    for rule, metric in _distinct_kinds(ordered):
        mask = pc.and_(pc.equal(ordered["rule"], rule), pc.equal(ordered["metric"], metric))
        queues.append(ordered.filter(pc.fill_null(mask, False)).slice(0, limit).to_pylist())
    picked: list[dict] = []
    # Round-robin within each severity, the more severe severity first.
    for severity in sorted({q[0]["severity"] for q in queues if q}, key=_severity_rank):
        group = [q for q in queues if q and q[0]["severity"] == severity]
        depth = 0
        while len(picked) < limit and any(depth < len(q) for q in group):
            picked += [q[depth] for q in group if depth < len(q)][: limit - len(picked)]
            depth += 1
    return picked[:limit]


def _severity_rank(severity) -> int:
    return SEVERITY_ORDER.get(severity, len(SEVERITY_ORDER))


def _distinct_kinds(ordered: pa.Table) -> list[tuple[str, str]]:
    """(rule, metric) pairs in order of first appearance in the severity-sorted table."""
    index = pc.cumulative_sum(pa.repeat(pa.scalar(1, pa.int64()), ordered.num_rows))
    firsts = (
        ordered.select(["rule", "metric"])
        .append_column("_i", index)
        .group_by(["rule", "metric"], use_threads=False)
        .aggregate([("_i", "min")])
        .sort_by("_i_min")
    )
    return list(zip(firsts["rule"].to_pylist(), firsts["metric"].to_pylist(), strict=True))


def _counts(spikes: pa.Table, keys: list[str]) -> list[tuple]:
    """[(key values..., count)] most frequent first, then by key."""
    grouped = spikes.group_by(keys).aggregate([(keys[0], "count")]).to_pylist()
    rows = [(*(g[k] for k in keys), g[f"{keys[0]}_count"]) for g in grouped]
    return sorted(rows, key=lambda r: (-r[-1], *[str(v) for v in r[:-1]]))


def _summary_embed(spikes: pa.Table, source_key: str, shown: int) -> dict:
    total = spikes.num_rows
    by_rule = _counts(spikes, ["severity", "rule"])
    by_rule.sort(key=lambda r: (SEVERITY_ORDER.get(r[0], 9), -r[2], r[1]))
    by_metric = _counts(spikes, ["metric"])
    by_greenhouse = _counts(spikes, ["greenhouse_id"])
    devices = _counts(spikes, ["greenhouse_id", "device_id"])
    worst = by_rule[0][0] if by_rule else "info"
    first = pc.min(spikes["timestamp"]).as_py()
    last = pc.max(spikes["timestamp"]).as_py()
    if shown < total:
        description = (
            f"Showing the {shown} most severe of {total:,} anomalies below; all {total:,} are "
            "stored in the spike store (`farmctl spikes`)."
        )
    else:
        description = f"All {total:,} anomalies are shown below and stored in the spike store."
    fields = [
        _field(
            "By rule",
            _lines([f"{SEVERITY_ICON.get(s, '⚪')} `{r}` ({s}): **{n:,}**" for s, r, n in by_rule]),
        ),
        _field("By metric", _lines([f"`{m}`: {n:,}" for m, n in by_metric]), inline=True),
        _field(
            f"By greenhouse ({len(by_greenhouse)})",
            _lines(
                [f"`{g}`: {n:,}" for g, n in by_greenhouse],
                max_lines=GREENHOUSE_LINES,
                noun="more greenhouses",
            ),
            inline=True,
        ),
        _field("Devices affected", f"{len(devices):,}", inline=True),
        _field("Readings between", f"{_iso_ms(first)} and {_iso_ms(last)}"),
    ]
    return {
        "title": clip(f"{total:,} anomalies in one delivered log file", TITLE_MAX),
        "description": clip(description, DESCRIPTION_MAX),
        "color": COLOURS.get(worst, COLOURS["info"]),
        "fields": fields[:FIELDS_MAX],
        "footer": {"text": clip(f"source: {source_key}", FOOTER_MAX)},
    }


def _item_embed(row: dict) -> dict:
    severity = row.get("severity") or "warning"
    readings = " · ".join(
        f"{metric} {_number(row.get(metric))} {unit}" for metric, unit in METRIC_UNITS.items()
    )
    fields = [
        _field("Greenhouse / device", f"`{row['greenhouse_id']}` / `{row['device_id']}`", True),
        _field("Reading time (UTC)", _iso_ms(row.get("timestamp")), True),
        _field("Values", f"{readings} · error_code {row.get('error_code')}"),
    ]
    embed = {
        "title": clip(f"{severity.upper()} · {row['rule']} · {row['metric']}", TITLE_MAX),
        "description": clip(row.get("detail") or "", DESCRIPTION_MAX),
        "color": COLOURS.get(severity, COLOURS["info"]),
        "fields": fields,
    }
    ts = row.get("timestamp")
    if isinstance(ts, datetime):
        embed["timestamp"] = _iso_ms(ts)
    return embed


def build_alert_message(
    spikes: pa.Table, source_key: str, max_items: int = MAX_ITEM_EMBEDS
) -> dict:
    """The webhook body for one delivered file's anomalies (SPIKE_SCHEMA rows)."""
    total = spikes.num_rows
    critical = (pc.sum(pc.equal(spikes["severity"], "critical")).as_py() or 0) if total else 0
    warning = total - critical
    items = most_severe(spikes, max(0, min(max_items, MAX_ITEM_EMBEDS))) if total else []
    item_embeds = [_item_embed(row) for row in items]

    # Fit the item embeds into the budget left by the summary (its text depends on `shown`).
    shown = len(item_embeds)
    while True:
        summary = _summary_embed(spikes, source_key, shown) if total else None
        used = embed_chars(summary) if summary else 0
        budget_ok = used + sum(embed_chars(e) for e in item_embeds[:shown]) <= EMBEDS_TOTAL_MAX
        if budget_ok or shown == 0:
            break
        shown -= 1
    embeds = ([summary] if summary else []) + item_embeds[:shown]
    if summary and embed_chars(summary) > EMBEDS_TOTAL_MAX:  # cannot happen with the clips above
        embeds = []

    icon = "🚨" if critical else "⚠️"
    content = (
        f"{icon} **smartfarm: {total:,} anomal{'y' if total == 1 else 'ies'}** "
        f"({critical:,} critical, {warning:,} warning) in {_code(source_key)}"
    )
    return {
        "username": USERNAME,
        "content": clip(content, CONTENT_MAX),
        "embeds": embeds,
        "allowed_mentions": dict(NO_MENTIONS),
    }


def build_test_message(origin: str, now: datetime | None = None) -> dict:
    """A clearly labelled test message (`farmctl discord test`)."""
    now = now or datetime.now(UTC)
    return {
        "username": USERNAME,
        "content": "🧪 **smartfarm TEST message**: ignore it, no anomaly happened.",
        "embeds": [
            {
                "title": "Webhook test",
                "description": clip(
                    "If you can read this, smartfarm can post anomaly alerts to this channel.",
                    DESCRIPTION_MAX,
                ),
                "color": COLOURS["info"],
                "fields": [_field("Sent by", clip(origin, 200), True)],
                "timestamp": _iso_ms(now),
            }
        ],
        "allowed_mentions": dict(NO_MENTIONS),
    }


ALARM_COLOURS = {"ALARM": COLOURS["critical"], "OK": 0x2ECC71, "INSUFFICIENT_DATA": COLOURS["info"]}
ALARM_ICONS = {"ALARM": "🚨", "OK": "✅", "INSUFFICIENT_DATA": "❔"}


def build_alarm_message(alarm: dict) -> dict:
    """A CloudWatch alarm state change (the JSON of its SNS notification) as one message.

    Only what an operator needs: name, old -> new state, reason, metric, time and the alarm's
    description. Not the account id or ARNs (the channel is not an AWS console).
    """
    name = str(alarm.get("AlarmName") or "?")
    state = str(alarm.get("NewStateValue") or "?")
    old = str(alarm.get("OldStateValue") or "?")
    trigger = alarm.get("Trigger") if isinstance(alarm.get("Trigger"), dict) else {}
    metric = "/".join(str(trigger[k]) for k in ("Namespace", "MetricName") if trigger.get(k))
    fields = [
        _field("State", f"{old} → **{state}**", True),
        _field("Metric", f"`{clip(metric, 200)}`" if metric else "-", True),
        _field("Changed at", str(alarm.get("StateChangeTime") or "-"), True),
        _field("Reason", str(alarm.get("NewStateReason") or "-")),
    ]
    embed = {
        "title": clip(name, TITLE_MAX),
        "description": clip(str(alarm.get("AlarmDescription") or ""), DESCRIPTION_MAX),
        "color": ALARM_COLOURS.get(state, COLOURS["warning"]),
        "fields": fields,
    }
    verb = "is back to OK" if state == "OK" else f"is {state}"
    content = f"{ALARM_ICONS.get(state, '⚠️')} **smartfarm alarm** {_code(name, 200)} {verb}"
    return {
        "username": USERNAME,
        "content": clip(content, CONTENT_MAX),
        "embeds": [embed],
        "allowed_mentions": dict(NO_MENTIONS),
    }


def limit_violations(message: dict) -> list[str]:
    """Every Discord limit the message breaks (empty when it is safe to send)."""
    problems = []
    if len(message.get("content", "")) > CONTENT_MAX:
        problems.append("content longer than 2,000")
    embeds = message.get("embeds", [])
    if len(embeds) > EMBEDS_MAX:
        problems.append("more than 10 embeds")
    if sum(embed_chars(e) for e in embeds) > EMBEDS_TOTAL_MAX:
        problems.append("embeds hold more than 6,000 characters")
    for number, e in enumerate(embeds):
        checks = [
            (len(e.get("title", "")) > TITLE_MAX, "title"),
            (len(e.get("description", "")) > DESCRIPTION_MAX, "description"),
            (len(e.get("fields", [])) > FIELDS_MAX, "field count"),
            (len(e.get("footer", {}).get("text", "")) > FOOTER_MAX, "footer"),
            (len(e.get("author", {}).get("name", "")) > AUTHOR_NAME_MAX, "author name"),
        ]
        for f in e.get("fields", []):
            checks.append((len(f["name"]) > FIELD_NAME_MAX, "field name"))
            checks.append((len(f["value"]) > FIELD_VALUE_MAX, "field value"))
            checks.append((not f["name"] or not f["value"], "empty field"))
        problems += [f"embed {number}: {what} too long" for bad, what in checks if bad]
    return problems


# -- secrets ------------------------------------------------------------------------------------


def mask_webhook_url(url: str) -> str:
    """`https://discord.com/api/webhooks/123/****`: the id stays, the token and query go."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "****"
    if not parts.scheme or not host:
        return "****"
    segments = parts.path.split("/")
    if "webhooks" in segments:
        keep = segments[: segments.index("webhooks") + 2]
    else:
        named = [i for i, s in enumerate(segments) if s]
        keep = segments[: named[-1]] if named else segments
    path = "/".join(keep)
    if not path.endswith("/"):
        path += "/"
    return f"{parts.scheme}://{host}{port}{path}****"


def _secrets(url: str) -> list[str]:
    """The parts of a webhook URL that must never be shown: the URL, its token, its query."""
    secrets = [url]
    try:
        parts = urlsplit(url)
    except ValueError:
        return secrets
    segments = [s for s in parts.path.split("/") if s]
    if "webhooks" in segments:
        secrets += segments[segments.index("webhooks") + 2 :]
    elif segments:
        secrets.append(segments[-1])
    if parts.query:
        secrets.append(parts.query)
    if parts.password:
        secrets.append(parts.password)
    return [s for s in secrets if len(s) >= 4]


def redact(text: str, url: str | None) -> str:
    """`text` with the webhook URL and its token replaced by `****`."""
    if not url:
        return text
    for secret in sorted(_secrets(url), key=len, reverse=True):
        text = text.replace(secret, "****")
    return text
