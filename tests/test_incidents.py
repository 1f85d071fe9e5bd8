"""Incident lifecycle (issue 14) on the shared per-device state, with a fake clock.

Defaults (rules.toml [alerts]): critical repeat 1 h / resolve 10 min, warning 4 h / 30 min,
silent after 10 min for devices seen within 7 d.
"""

import sqlite3
import threading
from datetime import UTC, datetime

import pytest

from smartfarm_cli.core import discord, incidents
from smartfarm_cli.core.rules import detect, load_rules
from smartfarm_cli.core.state import SqliteStateStore
from smartfarm_cli.core.validate import table_from_rows

RULES = load_rules()
POLICY = incidents.policy_from(RULES.alerts)
T0 = int(datetime(2026, 11, 28, 0, 0, tzinfo=UTC).timestamp() * 1000)
MIN = 60_000


def store():
    return SqliteStateStore(
        sqlite3.connect(":memory:", isolation_level=None), clock=lambda: T0 / 1000
    )


def minute_file(minute, error_code=0, device="d1", temperature=21.0):
    table = table_from_rows(
        [("gh-1", device, T0 + minute * MIN, temperature, 60.0, 800.0, error_code)]
    )
    return table, detect(table, RULES, f"f{minute}")


def run(state, minute, **kw):
    table, spikes = minute_file(minute, **kw)
    return incidents.observe(
        spikes,
        table,
        POLICY,
        state,
        f"f-{kw.get('device', 'd1')}-{minute}",
        T0 + minute * MIN + 30_000,
    )


def test_stuck_sensor_for_a_day_is_26_messages_not_1440():
    """P15 by hand: error_code 1 every minute for 24 h, one file a minute, then healthy.

    Opened at minute 0; a reminder each time an hour has passed since the last message
    (minutes 60, 120, ..., 1380: 23 of them, plus minute 1440 for 24); healthy readings from
    minute 1441 on; 10 minutes after the last anomaly (minute 1439 + 10 = 1449) it resolves.
    """
    state, messages = store(), []
    for minute in range(1440):
        events = run(state, minute, error_code=1)
        if events:
            messages.append(events)
    for minute in range(1440, 1500):
        events = run(state, minute)
        if events:
            messages.append(events)
    kinds = [e.kind for batch in messages for e in batch]
    assert kinds.count("opened") == 1
    assert kinds.count("still firing") == 23
    assert kinds.count("resolved") == 1
    assert len(messages) == 25 <= 26
    reminder = next(e for batch in messages for e in batch if e.kind == "still firing")
    assert reminder.count == 60 and reminder.worst == 1  # 60 anomalies since the last message
    resolved = messages[-1][0]
    assert resolved.kind == "resolved" and resolved.count == 1440
    # Resolved when the newest reading is 10 min past the last anomaly (minute 1439): 1449.
    assert resolved.at_ms == T0 + 1449 * MIN + 30_000
    assert incidents.describe(resolved) == (
        "gh-1/d1 sensor_error (error_code) resolved after 24 h 9 min"
    )


def test_redone_file_changes_nothing_and_sends_nothing():
    state = store()
    table, spikes = minute_file(0, error_code=2)
    first = incidents.observe(spikes, table, POLICY, state, "file-a", T0)
    assert [e.kind for e in first] == ["opened"]
    assert incidents.observe(spikes, table, POLICY, state, "file-a", T0 + MIN) == []
    ((body, version),) = state.load([("gh-1", "d1", "alerts")]).values()
    assert version == 1 and body["open"]["sensor_error/error_code"]["total"] == 1


def test_silent_device_opens_once_and_its_next_reading_resolves_it():
    state = store()
    run(state, 0)
    run(state, 1, device="d2")
    # Readings arrive 30 s after their minute: d1 was last heard at 00:00:30, d2 at 00:01:30.
    # At 00:11 d1 has been quiet for 10.5 min (silent), d2 for 9.5 min (not yet).
    events = incidents.check_silent(state, POLICY, T0 + 11 * MIN)
    assert [(e.device_id, e.kind, e.last_seen_ms) for e in events] == [
        ("d1", "opened", T0 + 30_000)
    ]
    assert incidents.describe(events[0]) == "gh-1/d1 silent since 2026-11-28 00:00 UTC"
    # 30 min: d2 is silent now; d1's silent incident is open already (one message, not two).
    later = incidents.check_silent(state, POLICY, T0 + 30 * MIN)
    assert [(e.device_id, e.kind) for e in later] == [("d2", "opened")]
    back = run(state, 70)  # d1 again, an hour later
    assert [(e.rule, e.kind) for e in back] == [("silent", "resolved")]
    assert incidents.describe(back[0]).startswith("gh-1/d1 reporting again after 1 h")
    # A device not heard of for longer than known_for (7 d) is not reported as silent.
    assert incidents.check_silent(state, POLICY, T0 + 8 * 86_400_000) == []


def test_warning_and_critical_keep_their_own_intervals():
    state = store()
    # 41 °C is out of band (warning): reminders every 4 h, resolved 30 min after the last one.
    firing = [run(state, m, temperature=41.0) for m in range(0, 300)]
    kinds = [e.kind for batch in firing for e in batch]
    assert kinds == ["opened", "still firing"]  # minute 0 and minute 240
    quiet = [e for m in range(300, 340) for e in run(state, m)]
    assert [(e.kind, e.at_ms) for e in quiet] == [("resolved", T0 + 329 * MIN + 30_000)]


def test_two_writers_racing_to_open_the_same_incident_open_it_once(tmp_path):
    path = tmp_path / "state.db"
    barrier = threading.Barrier(2)
    results = []

    class Racing(SqliteStateStore):
        def load(self, keys):
            found = super().load(keys)
            if not getattr(self, "waited", False):
                self.waited = True
                barrier.wait(timeout=10)
            return found

    def invoke(n):
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        table, spikes = minute_file(n, error_code=3)
        results.append(incidents.observe(spikes, table, POLICY, Racing(db), f"f{n}", T0 + MIN))

    threads = [threading.Thread(target=invoke, args=(n,)) for n in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    kinds = sorted(e.kind for events in results for e in events)
    assert kinds == ["opened"]  # the loser reloaded, saw it open, and counted instead
    ((body, version),) = (
        SqliteStateStore(sqlite3.connect(path)).load([("gh-1", "d1", "alerts")]).values()
    )
    assert version == 2 and body["open"]["sensor_error/error_code"]["total"] == 2


def test_message_names_each_incident_and_stays_within_discord_limits():
    state = store()
    events = []
    for n in range(30):  # 30 devices open at once: one request, 10 embeds, the rest counted
        events += run(state, 0, device=f"dev-{n:02d}-" + "x" * 50, error_code=1)
    payload = incidents.message(events, "logs/year=2026/…/stream-1.parquet")
    assert discord.limit_violations(payload) == []
    assert len(payload["embeds"]) == 10 and "30 opened (+20 not shown)" in payload["content"]
    assert payload["allowed_mentions"] == {"parse": []}


def test_alerts_section_overrides_and_bad_values(tmp_path):
    from smartfarm_cli.core.rules import RulesError

    path = tmp_path / "rules.toml"
    path.write_text('[alerts]\ncritical_repeat_interval = "15m"\n')
    policy = incidents.policy_from(load_rules(path).alerts)
    assert policy.repeat_ms["critical"] == 900_000 and policy.resolve_ms["critical"] == 600_000
    path.write_text('[alerts]\nsilent_stale_after = "soon"\n')
    with pytest.raises(RulesError, match=r"\[alerts\]"):
        load_rules(path)
