"""bench/peers.py (P16): the answer check must catch real disagreements and only forgive ties."""

import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import peers

HOUR = datetime(2026, 11, 24, 12, tzinfo=UTC)
REFERENCE = {
    (HOUR, "gh-000"): (80, 22.0, 22.33, Decimal("22.165")),  # a half-cent tie
    (HOUR, "gh-001"): (80, 22.3, 22.63, Decimal("22.4712")),
}
TIES = {(HOUR, "gh-000")}

FARMCTL = """bucket,greenhouse_id,avg,min,max,readings,partial
2026-11-24T12:00:00.000Z,gh-000,22.16,22.0,22.33,80,False
2026-11-24T12:00:00.000Z,gh-001,22.47,22.3,22.63,80,False
"""
PSQL = """bucket,greenhouse_id,avg,min,max,readings
2026-11-24 12:00:00+00,gh-000,22.17,22,22.33,80
2026-11-24 12:00:00+00,gh-001,22.47,22.3,22.63,80
"""
INFLUX = """name,tags,time,avg,min,max,readings
readings,greenhouse_id=gh-000,2026-11-24T12:00:00Z,22.165,22,22.33,80

name,tags,time,avg,min,max,readings
readings,greenhouse_id=gh-001,2026-11-24T12:00:00Z,22.4712,22.3,22.63,80
"""


def test_three_formats_parse_to_the_same_keys_and_match_the_reference():
    ours = peers._answer(FARMCTL, "farmctl")
    psql = peers._answer(PSQL, "postgres")
    influx = peers._answer(INFLUX, "influx")
    assert set(ours) == set(psql) == set(influx) == set(REFERENCE)
    assert peers._check(ours, REFERENCE, unrounded=False) == []
    assert peers._check(psql, REFERENCE, unrounded=False) == []
    assert peers._check(influx, REFERENCE, unrounded=True) == []
    # 22.16 against 22.17 on the tie is counted, not failed
    assert peers._differences(ours, psql, TIES, unrounded=False) == ([], 1)


def test_a_wrong_count_an_average_off_by_a_cent_and_a_missing_bucket_are_caught():
    ours = peers._answer(FARMCTL.replace("22.47,22.3,22.63,80", "22.48,22.3,22.63,79"), "farmctl")
    problems = peers._check(ours, REFERENCE, unrounded=False)
    assert len(problems) == 2 and "79/22.3/22.63" in problems[0] and "avg 22.48" in problems[1]
    psql = peers._answer(PSQL, "postgres")
    assert peers._differences(ours, psql, TIES, unrounded=False) == ([(HOUR, "gh-001")], 1)
    missing = peers._answer(PSQL.splitlines(True)[0] + PSQL.splitlines(True)[1], "postgres")
    assert peers._check(missing, REFERENCE, unrounded=False) == ["2026-11-24 12:00 gh-001: missing"]
    # an unrounded mean must match closely, not to the cent
    influx = peers._answer(INFLUX.replace("22.4712", "22.4749"), "influx")
    assert len(peers._check(influx, REFERENCE, unrounded=True)) == 1


def test_interleaved_alternates_order_and_times_only_the_run_step():
    calls = []

    def contender(name, cost):
        def run():
            calls.append(name)
            peers.time.sleep(cost)

        return (lambda: calls.append(f"prep-{name}"), run, lambda: peers.time.sleep(0.05))

    times, ratios = peers.interleaved(
        {"a": contender("a", 0.02), "b": contender("b", 0.01)}, runs=2, warmup=0
    )
    assert [c for c in calls if not c.startswith("prep")] == ["a", "b", "b", "a"]
    assert 0.01 <= times["b"] < 0.04  # the 50 ms finish step is not in the timing
    assert 1.2 < ratios["b"] < 3
