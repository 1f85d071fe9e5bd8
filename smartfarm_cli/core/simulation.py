"""What a simulation run may ask for: one set of bounds for `farmctl simulate` and the
pseudo_sensor_log Lambda's `{"count": 12, "interval": 10}` request body.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

MAX_COUNT = 10_000
MAX_INTERVAL_S = 300.0
MAX_GREENHOUSES = 100
MAX_DEVICES = 100
MAX_READINGS = 200_000  # count x greenhouses x devices in one run
FIELDS = {"count", "interval", "greenhouses", "devices", "anomaly_rate", "seed"}


class BadRequest(ValueError):
    """The request body is wrong; the message says how."""


@dataclass(frozen=True)
class RunSpec:
    count: int
    interval: float
    greenhouses: int = 3
    devices: int = 2
    anomaly_rate: float = 0.0
    seed: int = 0
    run_id: str = ""

    @property
    def readings(self) -> int:
        return self.count * self.greenhouses * self.devices


def _int(body: dict, name: str, low: int, high: int, default: int | None = None) -> int:
    if name not in body and default is not None:
        return default
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{name} must be a whole number from {low} to {high}, got {value!r:.40}")
    if not low <= value <= high:
        raise BadRequest(f"{name} must be from {low} to {high}, got {value}")
    return value


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer with hundreds of digits
        return False


def _number(body: dict, name: str, low: float, high: float, default: float | None = None):
    if name not in body and default is not None:
        return default
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not _finite(value):
        raise BadRequest(f"{name} must be a number from {low:g} to {high:g}, got {value!r:.40}")
    if not low <= value <= high:
        raise BadRequest(f"{name} must be from {low:g} to {high:g}, got {str(value)[:40]}")
    return float(value)


def parse_body(body, budget_s: float) -> RunSpec:
    """Validate a request body (JSON text or an already parsed dict) -> RunSpec."""
    if isinstance(body, str | bytes):
        try:
            body = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise BadRequest('body is not JSON; send e.g. {"count": 12, "interval": 10}') from None
    if not isinstance(body, dict):
        raise BadRequest('body must be a JSON object like {"count": 12, "interval": 10}')
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise BadRequest(
            f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(FIELDS))}"
        )
    if "count" not in body or "interval" not in body:
        raise BadRequest('count and interval are required, e.g. {"count": 12, "interval": 10}')
    spec = RunSpec(
        count=_int(body, "count", 1, MAX_COUNT),
        interval=_number(body, "interval", 0.0, MAX_INTERVAL_S),
        # Defaults as `farmctl simulate`: the seed's count is the number of readings sent.
        greenhouses=_int(body, "greenhouses", 1, MAX_GREENHOUSES, 1),
        devices=_int(body, "devices", 1, MAX_DEVICES, 1),
        anomaly_rate=_number(body, "anomaly_rate", 0.0, 1.0, 0.0),
        seed=_int(body, "seed", -(2**31), 2**31 - 1, 0),
    )
    duration = spec.count * spec.interval
    if duration > budget_s:
        raise BadRequest(
            f"count x interval = {duration:g} s is longer than this function can run "
            f"({budget_s:g} s after a safety margin); lower count or interval"
        )
    if spec.readings > MAX_READINGS:
        raise BadRequest(
            f"count x greenhouses x devices = {spec.readings:,} readings is more than "
            f"{MAX_READINGS:,} per run"
        )
    return spec
