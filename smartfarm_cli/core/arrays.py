"""Small pyarrow compute helpers that pyarrow itself does not offer."""

from __future__ import annotations

from .lazy import pa, pc


def arange(n: int) -> pa.Array:
    """0, 1, ..., n-1 as int64 (much faster than pa.array(range(n)) for large n)."""
    if n == 0:
        return pa.array([], pa.int64())
    return pc.subtract(pc.cumulative_sum(pa.repeat(pa.scalar(1, pa.int64()), n)), 1)


def mod(values, divisor: int):
    """Integer modulo for non-negative integers."""
    return pc.subtract(values, pc.multiply(pc.divide(values, divisor), divisor))


def shift(array, by: int) -> pa.Array:
    """array[i - by], null where that falls before the start."""
    array = array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
    by = min(by, len(array))
    return pa.concat_arrays([pa.nulls(by, array.type), array.slice(0, len(array) - by)])
