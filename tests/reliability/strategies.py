"""Hypothesis strategies for good and bad readings, shared by the R1 (bad input) tests.

A good reading carries a unique `device_id` (`dev-<n>`) so that every accepted reading can be
found again in the lake. A bad reading is a healthy reading with exactly one defect, each of
which the design says must be refused: missing field, wrong type, NaN / inf, huge or empty
string, bad id charset, timestamp far past / future / badly formatted, nested object, not an
object at all.

Inputs that trigger the bugs listed in README "Reliability" (integers beyond float range,
timestamps beyond int64 ms, lone surrogates, very deep nesting) are kept OUT of these
strategies and tested one by one in the xfail(strict) tests, so the properties here stay sharp.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

from hypothesis import strategies as st

from smartfarm_cli.core.schema import FIELD_NAMES, METRICS

NOW = datetime.now(UTC)
SIX_DAYS_S = 6 * 86_400
HUGE = "x" * 100_000

ids = st.from_regex(r"\A[A-Za-z0-9_-]{1,24}\Z")


def _iso(moment: datetime, offset_h: int) -> str:
    from datetime import timezone

    local = moment.astimezone(timezone(timedelta(hours=offset_h)))
    text = local.isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z") if offset_h == 0 else text


@st.composite
def timestamps(draw):
    """Every accepted form: epoch s / ms (number or string), ISO-8601 with Z or an offset."""
    back = draw(st.floats(min_value=1.0, max_value=SIX_DAYS_S))
    moment = NOW - timedelta(seconds=back)
    form = draw(st.sampled_from(["ms", "s", "s_str", "ms_str", "iso_z", "iso_off"]))
    if form == "ms":
        return int(moment.timestamp() * 1000)
    if form == "s":
        return round(moment.timestamp(), 3)
    if form == "s_str":
        return f" {moment.timestamp():.3f} "
    if form == "ms_str":
        return str(int(moment.timestamp() * 1000))
    if form == "iso_z":
        return _iso(moment, 0)
    return _iso(moment, draw(st.integers(min_value=-12, max_value=14)))


def numbers(low: float, high: float):
    """A metric as a float, an int or the seed's numeric string (`"400"`)."""
    value = st.floats(min_value=low, max_value=high, allow_nan=False, allow_infinity=False)
    return st.one_of(
        value,
        value.map(round),
        value.map(lambda v: str(round(v, 2))),
        value.map(lambda v: f"  {v:.1f} "),
    )


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20).filter(lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s)),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
extra_fields = st.dictionaries(
    st.text(min_size=1, max_size=12).filter(lambda k: k not in FIELD_NAMES and k.isprintable()),
    json_values,
    max_size=3,
)


@st.composite
def good_readings(draw):
    """A reading the pipeline must accept (device_id is set by the caller to `dev-<n>`)."""
    sensor_error = draw(st.integers(0, 4)) == 0
    reading = {
        "greenhouse_id": draw(ids),
        "device_id": "dev-0",
        "timestamp": draw(timestamps()),
        # values anywhere (impossible ones too: the seed's 400 °C is a spike, not a rejection)
        "temperature": draw(numbers(-60, 500)),
        "humidity": draw(numbers(-10, 150)),
        "co2": draw(numbers(-100, 20_000)),
        "error_code": draw(st.sampled_from([0, "0", " 0 ", 0.0])),
    }
    if sensor_error:
        reading["error_code"] = draw(st.sampled_from([1, "1", 17, "-3", 2**31 - 1]))
        for metric in draw(st.sets(st.sampled_from(METRICS))):
            reading[metric] = None
    reading.update(draw(extra_fields))  # unknown extra fields are ignored, not refused
    return reading


WRONG_TYPES = [None, True, False, [], [1, 2], {}, {"value": 21}, {"nested": {"deep": [1]}}]
BAD_IDS = ["", "a" * 65, "gh 1", "gh/1", "gh.1", "온실-1", "gh\n1", "gh'1", HUGE, " gh1"]
BAD_TIMESTAMPS = [
    None,
    True,
    "",
    "   ",
    "yesterday",
    "2026-13-45T00:00:00Z",
    "2026-11-28 25:00:00+00:00",
    "2026-11-28T10:00:00",  # no offset
    "28/11/2026 10:00",
    "1970-01-01T00:00:00Z",
    "1999-12-31T23:59:59Z",
    0,
    -1,
    946_684_799,  # one second before 2000
    "2100-01-01T00:00:00Z",
    "9999-12-31T23:59:59+00:00",
    4_102_444_800_000,  # 2100 in ms
    9e15,  # year ~287,000 in ms: still within int64, so it must be refused as future
    math.nan,
    math.inf,
    -math.inf,
    "NaN",
    "inf",
    [],
    {"t": 1},
    HUGE,
    "1" * 65,
]
BAD_NUMBERS = [
    "warm",
    "",
    "   ",
    "NaN",
    "nan",
    "inf",
    "-Infinity",
    math.nan,
    math.inf,
    -math.inf,
    True,
    [],
    [21.5],
    {"value": 21.5},
    "1" * 65,
    HUGE,
    "21,5",
    "0x15",
]
BAD_ERROR_CODES = [None, 1.5, "1.5", "abc", "", True, 2**31, "2147483648", -(2**31) - 1, [], {}]
NOT_OBJECTS = ["reading", 42, 3.5, None, True, ["a", "b"]]


@st.composite
def bad_readings(draw, base=None):
    """(item, defect) where item is a healthy reading with exactly one defect."""
    reading = dict(draw(good_readings()) if base is None else base)
    reading["error_code"] = 0
    for metric in METRICS:
        if reading[metric] is None:
            reading[metric] = 21.0
    kind = draw(
        st.sampled_from(
            [
                "missing",
                "id_type",
                "id_bad",
                "ts_bad",
                "metric_bad",
                "metric_null",
                "error_bad",
                "not_object",
            ]
        )
    )
    if kind == "missing":
        field = draw(st.sampled_from(FIELD_NAMES))
        del reading[field]
        return reading, f"missing {field}"
    if kind == "id_type":
        field = draw(st.sampled_from(["greenhouse_id", "device_id"]))
        reading[field] = draw(st.sampled_from([*WRONG_TYPES, 21, 2.5]))
        return reading, f"{field} type"
    if kind == "id_bad":
        field = draw(st.sampled_from(["greenhouse_id", "device_id"]))
        reading[field] = draw(st.sampled_from(BAD_IDS))
        return reading, f"{field} charset/length"
    if kind == "ts_bad":
        reading["timestamp"] = draw(st.sampled_from(BAD_TIMESTAMPS))
        return reading, "timestamp"
    if kind == "metric_bad":
        metric = draw(st.sampled_from(METRICS))
        reading[metric] = draw(st.sampled_from(BAD_NUMBERS))
        return reading, f"{metric} value"
    if kind == "metric_null":
        metric = draw(st.sampled_from(METRICS))
        reading[metric] = None
        return reading, f"{metric} null while healthy"
    if kind == "error_bad":
        reading["error_code"] = draw(st.sampled_from(BAD_ERROR_CODES))
        return reading, "error_code"
    return draw(st.sampled_from(NOT_OBJECTS)), "not an object"


@st.composite
def mixed_batches(draw, min_size=1, max_size=12):
    """A shuffled batch: [(item, None)] for good readings, [(item, defect)] for bad ones.

    Good readings get device ids dev-0, dev-1, ... in input order, so the ids of the accepted
    readings must be exactly those of the good items.
    """
    flags = draw(st.lists(st.booleans(), min_size=min_size, max_size=max_size))
    batch = []
    for number, is_good in enumerate(flags):
        if is_good:
            reading = draw(good_readings())
            reading["device_id"] = f"dev-{number}"
            batch.append((reading, None))
        else:
            batch.append(draw(bad_readings()))
    return batch


def ndjson(items) -> str:
    return "".join(json.dumps(item) + "\n" for item in items)
