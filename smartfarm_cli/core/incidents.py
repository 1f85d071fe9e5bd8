"""Alert incidents: what an operator is told, and when (issue 14).

An anomaly opens an incident keyed by (greenhouse, device, rule, metric). Opening sends one
message; further anomalies of an open incident are counted, and a reminder goes out every
`repeat_interval` while it persists (with the count and the worst value since the last message);
once the device has sent readings for `resolve_after` without that anomaly, one "resolved"
message says how long it lasted. A device that reported within `known_for` and then sends nothing
for `stale_after` opens a `silent` incident; its next reading resolves it. Thresholds live in
rules.toml ([alerts]), per severity.

State: the per-device item `kind = "alerts"` of core.state (docs/state.md), beside the jump
window: the device's last reading time, its open incidents, and the last sources it judged (so a
redone delivery or a duplicate S3 event changes nothing and sends nothing twice). Every write is
conditional: of two invocations racing on one device, one opens the incident, the other sees it
open. Pure: stdlib + pyarrow; the caller sends the messages (`message`) and keeps them in an
outbox until they are sent.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

from . import discord
from .lazy import pa, pc
from .queries import parse_duration
from .state import StateConflict, StateKey, StateStore

KIND = "alerts"
SILENT = "silent"
RECENT_SOURCES = 32
STATE_TTL_MS = 30 * 86_400_000
MAX_ATTEMPTS = 8

OPENED, REMINDER, RESOLVED = "opened", "still firing", "resolved"


@dataclass(frozen=True)
class Policy:
    repeat_ms: dict[str, int]  # severity -> reminder interval
    resolve_ms: dict[str, int]  # severity -> quiet time before "resolved"
    known_for_ms: int
    stale_after_ms: int
    silent_severity: str = "warning"


def policy_from(section: dict) -> Policy:
    """The [alerts] section of rules.toml -> Policy (durations like "1h", "10m")."""

    def ms(name: str) -> int:
        return int(parse_duration(section[name]).total_seconds() * 1000)

    return Policy(
        repeat_ms={s: ms(f"{s}_repeat_interval") for s in ("critical", "warning")},
        resolve_ms={s: ms(f"{s}_resolve_after") for s in ("critical", "warning")},
        known_for_ms=ms("silent_known_for"),
        stale_after_ms=ms("silent_stale_after"),
        silent_severity=str(section.get("silent_severity", "warning")),
    )


@dataclass(frozen=True)
class Event:
    kind: str  # opened | still firing | resolved
    greenhouse_id: str
    device_id: str
    rule: str
    metric: str
    severity: str
    at_ms: int  # when it was decided
    opened_ms: int
    count: int = 0  # anomalies this message covers (opened: in the file; reminder: since last)
    worst: float | None = None
    last_seen_ms: int | None = None  # silent: when the device's readings last arrived

    @property
    def incident(self) -> tuple[str, str, str, str]:
        return (self.greenhouse_id, self.device_id, self.rule, self.metric)

    def stored(self) -> list:
        """The event as kept in its device's item (the device is the item's key)."""
        return [self.kind, self.rule, self.metric, self.severity, self.at_ms, self.opened_ms,
                self.count, self.worst, self.last_seen_ms]  # fmt: skip


def _restored(device: tuple[str, str], stored: list) -> Event:
    kind, rule, metric, severity, at_ms, opened_ms, count, worst, last_seen_ms = stored
    return Event(
        kind, *device, rule, metric, severity, at_ms, opened_ms, count, worst, last_seen_ms
    )


def _remember(body: dict, digest: str, events: list[Event]) -> None:
    """Mark `digest` judged and keep the events it produced (for a replay of the same source)."""
    body["sources"] = sources = [*body["sources"], digest][-RECENT_SOURCES:]
    earlier = body.get("events")
    if not earlier and not events:  # the common case: nothing kept, nothing to keep
        body["events"] = {}
        return
    recent = set(sources)
    kept = {d: e for d, e in (earlier or {}).items() if d in recent}
    if events:
        kept[digest] = [e.stored() for e in events]
    body["events"] = kept


def _replayed(device: tuple[str, str], body: dict, digest: str) -> list[Event]:
    return [_restored(device, e) for e in (body.get("events") or {}).get(digest, [])]


@dataclass
class _Group:
    severity: str
    count: int = 0
    worst: float | None = None
    last_ms: int = 0
    distance: float = -1.0


@dataclass
class _Device:
    last_reading_ms: int | None = None
    groups: dict[str, _Group] = field(default_factory=dict)


def _digest(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def _worse(group: _Group, value, distance: float) -> None:
    if value is not None and distance > group.distance:
        group.worst, group.distance = value, distance


def _by_device(spikes: pa.Table, readings: pa.Table, centre: dict, now_ms: int) -> dict:
    """(greenhouse, device) -> newest reading time and the file's anomalies per rule/metric."""
    devices: dict[tuple[str, str], _Device] = {}
    if readings.num_rows:
        stamps = pa.table(
            {
                "greenhouse_id": readings["greenhouse_id"],
                "device_id": readings["device_id"],
                "ts": pc.cast(readings["timestamp"], pa.int64()),
            }
        )
        newest = stamps.group_by(["greenhouse_id", "device_id"], use_threads=False).aggregate(
            [("ts", "max")]
        )
        for g, d, ts in zip(
            newest["greenhouse_id"].to_pylist(),
            newest["device_id"].to_pylist(),
            newest["ts_max"].to_pylist(),
            strict=True,
        ):
            devices[(g, d)] = _Device(min(ts, now_ms))  # one group per device
    if spikes.num_rows:
        columns = ["greenhouse_id", "device_id", "timestamp", "rule", "metric", "severity"]
        values = {c: spikes[c].to_pylist() for c in columns}
        values["timestamp"] = pc.cast(spikes["timestamp"], pa.int64()).to_pylist()
        for name in ("temperature", "humidity", "co2", "error_code"):
            values[name] = spikes[name].to_pylist()
        for i in range(spikes.num_rows):
            key = (values["greenhouse_id"][i], values["device_id"][i])
            incident = f"{values['rule'][i]}/{values['metric'][i]}"
            group = devices.setdefault(key, _Device()).groups.setdefault(
                incident, _Group(values["severity"][i])
            )
            group.count += 1
            group.last_ms = max(group.last_ms, values["timestamp"][i])
            value = values[values["metric"][i]][i]
            middle = centre.get(values["metric"][i], 0.0)
            _worse(group, value, abs(value - middle) if value is not None else -1.0)
    return devices


def observe(
    spikes: pa.Table,
    readings: pa.Table,
    policy: Policy,
    store: StateStore,
    source: str,
    now_ms: int,
    centre: dict[str, float] | None = None,
    replay: bool = False,
) -> list[Event]:
    """Apply one delivered file (its readings and spikes) to the devices' incidents.

    `centre` gives, per metric, the value the "worst" is measured from (the middle of the
    crop band). Returns the events to announce, in a stable order. A source already judged for
    a device changes nothing for it; with `replay` it returns the events that source produced
    then (kept in the device's item, written in the same conditional write as the incidents):
    the anomaly Lambda, retried after a crash between this write and the message, announces
    exactly what the first attempt would have (the alert marker stops a second send).
    """
    devices = _by_device(spikes, readings, centre or {}, now_ms)
    digest = _digest(source)
    pending = sorted(devices)
    events: list[Event] = []
    for _ in range(MAX_ATTEMPTS):
        keys: dict[tuple[str, str], StateKey] = {k: (*k, KIND) for k in pending}
        loaded = store.load(list(keys.values()))
        writes, found = [], {}
        for device in pending:
            body, version = loaded[keys[device]]
            body = body or {"open": {}, "sources": []}
            if digest in body["sources"]:  # this file was judged for this device already
                events += _replayed(device, body, digest) if replay else []
                continue
            new_events = _apply(device, devices[device], body, policy, now_ms)
            _remember(body, digest, new_events)
            writes.append((keys[device], body, version, now_ms + STATE_TTL_MS))
            found[device] = new_events
        conflicts = set(store.save(writes))
        for device, new_events in found.items():
            if keys[device] not in conflicts:
                events += new_events
        if not conflicts:
            return sorted(events, key=lambda e: (*e.incident, e.kind))
        pending = sorted((g, d) for g, d, _ in conflicts)
    raise StateConflict(f"alert state kept changing under us for {len(pending)} device(s)")


class Session:
    """Devices' incidents held in memory while one writer applies many files, saved once.

    `observe` applies one file as `observe()` would (replay off), to items kept in memory: a
    device's item is loaded the first time one of the files names it. `flush` writes every
    changed item once, conditionally on the version read, and returns each file's events. The
    files' per-device summaries are kept until then (a few numbers per device and file, never
    the readings), so a device another writer changed meanwhile is reloaded and the files are
    applied to it again, in order: the outcome is that of `observe()` called once per file.
    """

    def __init__(self, store: StateStore, policy: Policy, centre: dict[str, float] | None = None):
        self.store = store
        self.policy = policy
        self.centre = centre or {}
        self.bodies: dict[tuple[str, str], dict] = {}
        self.versions: dict[tuple[str, str], int] = {}
        self.expires: dict[tuple[str, str], int] = {}
        self.changed: set[tuple[str, str]] = set()
        # Per file: (source, digest, now_ms, anomalies, device -> summary, device -> events).
        self.files: list[tuple[str, str, int, int, dict, dict]] = []

    def observe(self, spikes: pa.Table, readings: pa.Table, source: str, now_ms: int) -> None:
        devices = _by_device(spikes, readings, self.centre, now_ms)
        self._load([d for d in devices if d not in self.versions])
        digest = _digest(source)
        events = {d: self._step(d, digest, now_ms, devices[d]) for d in sorted(devices)}
        self.files.append((source, digest, now_ms, spikes.num_rows, devices, events))

    def _load(self, devices: list[tuple[str, str]]) -> None:
        if not devices:
            return
        loaded = self.store.load([(*d, KIND) for d in devices])
        for device in devices:
            body, version = loaded[(*device, KIND)]
            self.bodies[device] = body or {"open": {}, "sources": []}
            self.versions[device] = version

    def _step(self, device, digest: str, now_ms: int, seen: _Device) -> list[Event]:
        body = self.bodies[device]
        if digest in body["sources"]:  # this file was judged for this device already
            return []
        events = _apply(device, seen, body, self.policy, now_ms)
        _remember(body, digest, events)
        self.changed.add(device)
        self.expires[device] = now_ms + STATE_TTL_MS
        return events

    def flush(self) -> list[tuple[str, int, int, list[Event]]]:
        """Save the changed items -> per file (source, now_ms, anomalies, its events)."""
        for _ in range(MAX_ATTEMPTS):
            changed = sorted(self.changed)
            writes = [
                ((*d, KIND), self.bodies[d], self.versions[d], self.expires[d]) for d in changed
            ]
            lost = {(g, d) for g, d, _ in self.store.save(writes)}
            for device in changed:
                if device not in lost:
                    self.versions[device] += 1
            self.changed = set()
            if not lost:
                break
            self._load(sorted(lost))  # another writer's item: apply every file to it again
            for _source, digest, now_ms, _count, devices, events in self.files:
                for device in sorted(lost & set(devices)):
                    events[device] = self._step(device, digest, now_ms, devices[device])
        else:
            raise StateConflict(f"alert state kept changing under us for {len(lost)} device(s)")
        out = [
            (
                source,
                now_ms,
                count,
                sorted(
                    (e for found in events.values() for e in found),
                    key=lambda e: (*e.incident, e.kind),
                ),
            )
            for source, _digest, now_ms, count, _devices, events in self.files
        ]
        self.files = []
        return out


def _apply(device, seen: _Device, body: dict, policy: Policy, now_ms: int) -> list[Event]:
    open_ = body["open"]
    if seen.last_reading_ms is not None:
        body["last_ms"] = max(body.get("last_ms") or 0, seen.last_reading_ms)  # event time
        body["heard_ms"] = now_ms  # when its readings last arrived: what silence is about
    if not open_ and not seen.groups:  # the common case: nothing to open, remind or resolve
        return []
    greenhouse, device_id = device
    events = []
    if seen.last_reading_ms is not None:
        silent = open_.pop(f"{SILENT}/readings", None)
        if silent:
            events.append(
                Event(
                    RESOLVED,
                    greenhouse,
                    device_id,
                    SILENT,
                    "readings",
                    silent["severity"],
                    now_ms,
                    silent["opened_ms"],
                    last_seen_ms=silent.get("last_seen_ms"),
                )
            )
    for name, group in sorted(seen.groups.items()):
        rule, metric = name.split("/", 1)
        incident = open_.get(name)
        if incident is None:
            open_[name] = {
                "severity": group.severity,
                "opened_ms": now_ms,
                "last_anomaly_ms": group.last_ms,
                "last_message_ms": now_ms,
                "total": group.count,
                "since_message": 0,
                "worst_since_message": None,
                "distance": -1.0,
            }
            events.append(
                Event(
                    OPENED,
                    greenhouse,
                    device_id,
                    rule,
                    metric,
                    group.severity,
                    now_ms,
                    now_ms,
                    group.count,
                    group.worst,
                )
            )
            continue
        incident["total"] += group.count
        incident["since_message"] += group.count
        incident["last_anomaly_ms"] = max(incident["last_anomaly_ms"], group.last_ms)
        if group.distance > incident["distance"]:
            incident["worst_since_message"], incident["distance"] = group.worst, group.distance
        if now_ms - incident["last_message_ms"] >= policy.repeat_ms[incident["severity"]]:
            events.append(
                Event(
                    REMINDER,
                    greenhouse,
                    device_id,
                    rule,
                    metric,
                    incident["severity"],
                    now_ms,
                    incident["opened_ms"],
                    incident["since_message"],
                    incident["worst_since_message"],
                )
            )
            incident.update(
                last_message_ms=now_ms, since_message=0, worst_since_message=None, distance=-1.0
            )
    newest = body.get("last_ms")
    for name in sorted(open_):
        incident = open_[name]
        rule, metric = name.split("/", 1)
        if rule == SILENT or name in seen.groups or newest is None:
            continue
        if newest - incident["last_anomaly_ms"] >= policy.resolve_ms[incident["severity"]]:
            del open_[name]
            events.append(
                Event(
                    RESOLVED,
                    greenhouse,
                    device_id,
                    rule,
                    metric,
                    incident["severity"],
                    now_ms,
                    incident["opened_ms"],
                    incident["total"],
                )
            )
    return events


def check_silent(
    store: StateStore, policy: Policy, now_ms: int, source: str | None = None
) -> list[Event]:
    """Open a `silent` incident for every device quiet for `stale_after` (known recently).

    Runs without any reading arriving. A device another writer updated meanwhile is skipped:
    the next check sees it again. With a `source` (the scheduled run's id, the same when the
    run is retried), the run is remembered per device like a delivered file: a retry of it
    returns the events it produced before and opens nothing twice.
    """
    digest = _digest(source) if source is not None else None
    events, writes, replayed = [], [], []
    for key, body, version in store.scan(KIND):
        if digest is not None and digest in body["sources"]:
            replayed += _replayed(key[:2], body, digest)
            continue
        last = body.get("heard_ms")
        if last is None or f"{SILENT}/readings" in body["open"]:
            continue
        quiet = now_ms - last
        if quiet < policy.stale_after_ms or quiet > policy.known_for_ms:
            continue
        body["open"][f"{SILENT}/readings"] = {
            "severity": policy.silent_severity,
            "opened_ms": now_ms,
            "last_seen_ms": last,
        }
        event = Event(
            OPENED,
            key[0],
            key[1],
            SILENT,
            "readings",
            policy.silent_severity,
            now_ms,
            now_ms,
            last_seen_ms=last,
        )
        if digest is not None:
            _remember(body, digest, [event])
        writes.append((key, body, version, now_ms + STATE_TTL_MS))
        events.append(event)
    conflicts = set(store.save(writes))
    fresh = [e for e in events if (e.greenhouse_id, e.device_id, KIND) not in conflicts]
    return sorted(replayed + fresh, key=lambda e: e.incident)


def open_incidents(store: StateStore) -> list[dict]:
    """Every open incident, for `farmctl alerts` and `farmctl status`."""
    rows = []
    for (greenhouse, device, _), body, _version in store.scan(KIND):
        for name, incident in sorted(body["open"].items()):
            rule, metric = name.split("/", 1)
            rows.append(
                {
                    "greenhouse_id": greenhouse,
                    "device_id": device,
                    "rule": rule,
                    "metric": metric,
                    "severity": incident["severity"],
                    "opened_ms": incident["opened_ms"],
                    "count": incident.get("total", 0),
                    "last_seen_ms": incident.get("last_seen_ms") or body.get("heard_ms"),
                }
            )
    return rows


# -- the message ------------------------------------------------------------------------------


def _clock(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _duration(ms: int) -> str:
    minutes = max(0, round(ms / 60_000))
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def _value(value) -> str:
    return "-" if value is None else discord._number(value)


def describe(event: Event) -> str:
    """One line naming the incident and what happened to it."""
    who = f"{event.greenhouse_id}/{event.device_id}"
    if event.rule == SILENT:
        if event.kind == OPENED:
            return f"{who} silent since {_clock(event.last_seen_ms)}"
        return f"{who} reporting again after {_duration(event.at_ms - event.opened_ms)} of silence"
    what = f"{who} {event.rule} ({event.metric})"
    if event.kind == OPENED:
        noun = "anomaly" if event.count == 1 else "anomalies"
        return f"{what} opened: {event.count} {noun}, worst {_value(event.worst)}"
    if event.kind == REMINDER:
        return (
            f"{what} still firing x{event.count} since the last message, worst "
            f"{_value(event.worst)} (open since {_clock(event.opened_ms)})"
        )
    return f"{what} resolved after {_duration(event.at_ms - event.opened_ms)}"


def message(events: list[Event], source: str) -> dict:
    """One Discord message carrying every event of one delivered file (or one check)."""
    counts = {kind: sum(e.kind == kind for e in events) for kind in (OPENED, REMINDER, RESOLVED)}
    summary = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
    ordered = sorted(
        events, key=lambda e: (e.kind == RESOLVED, e.severity != "critical", *e.incident)
    )
    shown = ordered[: discord.EMBEDS_MAX]
    more = len(ordered) - len(shown)
    content = f"**smartfarm incidents**: {summary}" + (f" (+{more} not shown)" if more else "")
    content += f" · from {discord._code(source, 200)}"
    budget = discord.EMBEDS_TOTAL_MAX // max(1, len(shown))
    embeds = []
    for event in shown:
        icon = "✅" if event.kind == RESOLVED else discord.SEVERITY_ICON.get(event.severity, "⚪")
        colour = 0x2ECC71 if event.kind == RESOLVED else discord.COLOURS.get(event.severity)
        title = discord.clip(f"{icon} {event.kind}: {event.rule} ({event.metric})", 200)
        text = discord.clip(describe(event), max(1, budget - len(title) - 10))
        embeds.append({"title": title, "description": text, "color": colour})
    return {
        "username": discord.USERNAME,
        "content": discord.clip(content, discord.CONTENT_MAX),
        "embeds": embeds,
        "allowed_mentions": dict(discord.NO_MENTIONS),
    }


# -- what the Lambdas and both targets share around the lifecycle -----------------------------


def centre_of(rules) -> dict[str, float]:
    """Per metric, the value "worst" is measured from: the middle of the crop band."""
    return {metric: sum(band) / 2 for metric, band in rules.band.items()}


def log_records(events: list[Event], source: str) -> list[dict]:
    """The history rows of some events (local table `alert_log`; on AWS the `_log/` items)."""
    return [
        {
            "at_ms": e.at_ms,
            "greenhouse_id": e.greenhouse_id,
            "device_id": e.device_id,
            "rule": e.rule,
            "metric": e.metric,
            "severity": e.severity,
            "event": e.kind,
            "anomalies": e.count,
            "worst": e.worst,
            "opened_ms": e.opened_ms,
            "last_seen_ms": e.last_seen_ms,
            "source": source,
        }
        for e in events
    ]


def event_from_record(r: dict) -> Event:
    """A history row back as the event (what `farmctl check` prints on the aws target)."""
    return Event(
        r["event"],
        r["greenhouse_id"],
        r["device_id"],
        r["rule"],
        r["metric"],
        r["severity"],
        r["at_ms"],
        r["opened_ms"],
        r["anomalies"],
        r["worst"],
        r.get("last_seen_ms"),
    )


ALERT_COLUMNS = [
    "state",
    "greenhouse_id",
    "device_id",
    "rule",
    "metric",
    "severity",
    "opened",
    "at",
    "anomalies",
    "worst",
]
ALERT_STATES = (None, "open", "resolved")


def history_kinds(state: str | None) -> tuple[str, ...]:
    """Which logged events `farmctl alerts --state` shows (open incidents come from the state)."""
    if state not in ALERT_STATES:
        raise ValueError(f"unknown state {state!r}; choose open or resolved")
    if state == "open":
        return ()
    return (RESOLVED,) if state == "resolved" else (OPENED, REMINDER, RESOLVED)


def alert_rows(open_: list[dict], history: list[dict], state: str | None, when) -> list[tuple]:
    """`farmctl alerts` rows: open incidents, then history newest first (`when`: ms -> time)."""
    where = ("greenhouse_id", "device_id", "rule", "metric", "severity")
    rows = []
    if state in (None, "open"):
        for r in open_:
            who = tuple(r[c] for c in where)
            rows.append(("open", *who, when(r["opened_ms"]), None, r["count"], None))
    kinds = history_kinds(state)
    for r in sorted(history, key=lambda r: -r["at_ms"]):
        if r["event"] in kinds:
            who = tuple(r[c] for c in where)
            times = (when(r["opened_ms"]), when(r["at_ms"]))
            rows.append((r["event"], *who, *times, r["anomalies"], r["worst"]))
    return rows
