"""Plausible greenhouse readings, vectorised with pyarrow compute (no numpy needed in Lambda).

Temperature, humidity and CO2 follow a diurnal curve (warmest at 14:00 local time, CO2 drawn
down by daytime photosynthesis) plus seeded Gaussian noise. Anomalies are injected at a rate,
on odd time steps only: two injected readings of one device are never adjacent (an adjacent
pair would make the jump rule see a healthy return reading as a jump), and the first reading,
which has no predecessor to jump from, stays healthy.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from .arrays import arange
from .lake import DAY_MS, HOUR_MS
from .lazy import pa, pc
from .validate import check_table

ANOMALY_KINDS = ("sensor_error", "impossible", "out_of_band", "jump")
SEOUL_UTC_OFFSET_H = 9


@dataclass(frozen=True)
class Generated:
    table: pa.Table
    injected: pa.Array  # per row: the anomaly kind injected, or null for a healthy reading

    def count(self, kind: str) -> int:
        return pc.sum(pc.equal(self.injected, kind)).as_py() or 0


NORMAL_TABLE_SIZE = 1 << 16
_NORMALS: list[pa.Array] = []  # the table _gaussians picks from, built on first use


def _polar_normals(n: int, seed: int) -> pa.Array:
    """`n` standard normal draws (Marsaglia's polar method, no trigonometry).

    Points (u, v) drawn uniformly in the square [-1, 1)^2 are kept inside the unit circle
    (pi/4 of them); each kept point gives two independent normals. Draws continue, with the
    next seeds, until enough points were kept.
    """
    needed = -(-n // 2)  # kept points
    kept: list[pa.Array] = []
    while needed > 0:
        draw = needed + needed // 3 + 16  # ~27 % are rejected
        u = pc.subtract(pc.multiply(pc.random(draw, initializer=seed), 2.0), 1.0)
        v = pc.subtract(pc.multiply(pc.random(draw, initializer=seed + 1), 2.0), 1.0)
        square = pc.add(pc.multiply(u, u), pc.multiply(v, v))
        inside = pc.and_(pc.less(square, 1.0), pc.greater(square, 0.0))
        u, v, square = u.filter(inside), v.filter(inside), square.filter(inside)
        scale = pc.sqrt(pc.divide(pc.multiply(-2.0, pc.ln(square)), square))
        kept += [pc.multiply(u, scale), pc.multiply(v, scale)]
        needed -= len(square)
        seed += 2
    return pa.chunked_array(kept).slice(0, n).combine_chunks()


def _gaussians(n: int, count: int, seed: int) -> list[pa.Array]:
    """`count` arrays of `n` standard normal values, each picked at random (seeded) from one
    table of NORMAL_TABLE_SIZE polar-method draws made once per process.

    For the noise on simulated readings the table is as normal as fresh draws (its largest
    value is ~4.3 sigma), and a pick is a quarter of the work of a fresh draw (a backfill
    generates hundreds of thousands of readings a second).
    """
    if not _NORMALS:
        _NORMALS.append(_polar_normals(NORMAL_TABLE_SIZE, 0))
    at = pc.multiply(pc.random(n * count, initializer=seed), float(NORMAL_TABLE_SIZE))
    values = _NORMALS[0].take(pc.cast(at, pa.int32(), safe=False))  # truncated: 0 .. size-1
    return [values.slice(i * n, n) for i in range(count)]


def _clip(values, low: float, high: float):
    return pc.min_element_wise(pc.max_element_wise(values, low), high)


def generate(
    start_ms: int,
    steps: int,
    interval_s: float = 60.0,
    greenhouses: int = 3,
    devices: int = 2,
    anomaly_rate: float = 0.0,
    seed: int = 0,
    utc_offset_h: float = SEOUL_UTC_OFFSET_H,
    synthetic: bool = True,
) -> Generated:
    """`steps` time steps from `start_ms`, each with one reading per greenhouse x device.

    Rows are in time order (then greenhouse, then device), as a stream would carry them.
    Every generated reading is marked `synthetic` (simulate, demo, backfill and the
    pseudo_sensor_log Lambda all generate here); `synthetic=False` is for tests and benches
    that stand in for real devices.
    """
    from .schema import READING_SCHEMA  # built on first use (core.lazy)

    per_step = greenhouses * devices
    n = steps * per_step
    if n == 0:
        return Generated(READING_SCHEMA.empty_table(), pa.array([], pa.string()))
    # What depends on the time step only is computed once per step, then spread to its rows.
    index = arange(n)
    step = pc.divide(index, per_step)  # integer division
    slot = pc.subtract(index, pc.multiply(step, per_step))  # greenhouse * devices + device
    step_ms = pc.cast(
        pc.round(pc.multiply(pc.cast(arange(steps), pa.float64()), interval_s * 1000)), pa.int64()
    )
    ts_ms = pc.add(start_ms, step_ms)
    hours = pc.add(pc.divide(pc.cast(ts_ms, pa.float64()), 3_600_000.0), utc_offset_h)
    day_curve = pc.sin(pc.multiply(pc.subtract(hours, 8.0), 2 * math.pi / 24))  # peak 14:00
    day_curve = day_curve.take(step)
    # Per slot: the ids, and a fixed per-greenhouse climate offset in [-2, +2] °C.
    slots = [(gh, dev) for gh in range(greenhouses) for dev in range(devices)]
    greenhouse_ids = pa.array([f"gh-{gh + 1}" for gh, _ in slots]).take(slot)
    device_ids = pa.array([f"dev-{dev + 1}" for _, dev in slots]).take(slot)
    base = pa.array([21.0 + (gh * 7) % 5 - 2.0 for gh, _ in slots]).take(slot)

    noise_t, noise_h, noise_c = _gaussians(n, 3, seed * 8 + 1)
    temperature = pc.add(base, pc.multiply(6.0, day_curve))
    temperature = pc.add(temperature, pc.multiply(0.3, noise_t))
    humidity = pc.subtract(70.0, pc.multiply(12.0, day_curve))
    humidity = _clip(pc.add(humidity, pc.multiply(1.5, noise_h)), 25.0, 93.0)
    co2 = pc.subtract(750.0, pc.multiply(250.0, day_curve))
    co2 = _clip(pc.add(co2, pc.multiply(25.0, noise_c)), 350.0, 1800.0)
    error_code = pa.repeat(pa.scalar(0, pa.int32()), n)

    injected = pa.nulls(n, pa.string())
    if anomaly_rate > 0:
        odd_step = pc.equal(pc.bit_wise_and(step, 1), 1)
        threshold = min(1.0, 2 * anomaly_rate)
        draw = pc.random(n, initializer=seed * 8 + 7)
        hit = pc.and_(odd_step, pc.less(draw, threshold))
        # Reuse the draw to pick the kind: draw / threshold spreads hits evenly over kinds.
        # Capped before the cast: for misses the ratio can exceed int64 at tiny rates.
        share = pc.multiply(pc.divide(draw, threshold), len(ANOMALY_KINDS))
        which = pc.cast(pc.floor(pc.min_element_wise(share, len(ANOMALY_KINDS))), pa.int64())
        which = pc.if_else(hit, which, pa.scalar(None, pa.int64()))  # null: a healthy reading
        injected = pa.array(ANOMALY_KINDS).take(which)
        is_kind = {
            kind: pc.fill_null(pc.equal(which, number), False)
            for number, kind in enumerate(ANOMALY_KINDS)
        }
        error_code = pc.cast(is_kind["sensor_error"], pa.int32())  # 1 for an error, else 0
        temperature = pc.if_else(is_kind["impossible"], 400.0, temperature)  # the seed's example
        humidity = pc.if_else(is_kind["out_of_band"], 99.0, humidity)
        temperature = pc.if_else(is_kind["jump"], pc.add(temperature, 12.0), temperature)

    table = pa.Table.from_arrays(
        [
            greenhouse_ids,
            device_ids,
            pc.cast(ts_ms.take(step), pa.timestamp("ms")),
            pc.round(temperature, 2),
            pc.round(humidity, 2),
            pc.round(co2, 1),
            error_code,
            pa.repeat(pa.scalar(synthetic), n),
        ],
        schema=READING_SCHEMA,
    )
    return Generated(table, injected)


def history(
    end_ms: int,
    days: float,
    interval_s: float,
    greenhouses: int,
    devices: int,
    anomaly_rate: float,
    seed: int,
    synthetic: bool = True,
) -> Iterator[tuple[pa.Table, int, int, int]]:
    """`days` of validated history ending at `end_ms`, one UTC day at a time.

    Yields (valid readings, readings that failed validation, steps done, steps in all). Chunks
    end on UTC midnights, so every hourly file is written from exactly one chunk.
    """
    step_ms = int(interval_s * 1000)
    total = int(days * 86_400_000 / step_ms)
    start_ms = end_ms - total * step_ms
    done = 0
    while done < total:
        next_midnight = (start_ms + done * step_ms) // DAY_MS * DAY_MS + DAY_MS
        upto = min(total, -(-(next_midnight - start_ms) // step_ms))
        table = generate(
            start_ms + done * step_ms,
            upto - done,
            interval_s,
            greenhouses,
            devices,
            anomaly_rate,
            seed + done,
            synthetic=synthetic,
        ).table
        good, rejected, _ = check_table(table, now_ms=end_ms + HOUR_MS)
        done = upto
        yield good, rejected.num_rows, done, total


def to_json_records(table: pa.Table) -> list[dict]:
    """Rows as JSON-ready dicts, timestamps as ISO-8601 UTC strings (what a device would send)."""
    records = table.to_pylist()
    for record in records:
        record["timestamp"] = record["timestamp"].isoformat(timespec="milliseconds") + "Z"
    return records
