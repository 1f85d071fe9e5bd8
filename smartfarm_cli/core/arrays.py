"""Small pyarrow compute helpers that pyarrow itself does not offer."""

from __future__ import annotations

from .lazy import pa, pc

_RANGE: list = []  # the longest arange built so far (up to _RANGE_CACHED): others slice it
_RANGE_CACHED = 1 << 20  # 8 MB


def _build_range(n: int) -> pa.Array:
    return pc.subtract(pc.cumulative_sum(pa.repeat(pa.scalar(1, pa.int64()), n)), 1)


def arange(n: int) -> pa.Array:
    """0, 1, ..., n-1 as int64 (much faster than pa.array(range(n)) for large n)."""
    if n == 0:
        return pa.array([], pa.int64())
    if n > _RANGE_CACHED:
        return _build_range(n)
    if not _RANGE or len(_RANGE[0]) < n:
        _RANGE[:] = [_build_range(min(max(n, 2 * len(_RANGE[0]) if _RANGE else 0), _RANGE_CACHED))]
    return _RANGE[0].slice(0, n)


def empty(schema: pa.Schema) -> pa.Table:
    """An empty table of `schema` (pa.Schema.empty_table, like pa.array, imports pandas)."""
    return pa.Table.from_arrays([pa.nulls(0, f.type) for f in schema], schema=schema)


def any_true(mask) -> bool:
    """Whether a boolean (chunked) array holds a true (pc.any has a larger fixed cost)."""
    chunks = mask.chunks if isinstance(mask, pa.ChunkedArray) else [mask]
    return any(chunk.true_count for chunk in chunks)


def mod(values, divisor: int):
    """Integer modulo for non-negative integers."""
    return pc.subtract(values, pc.multiply(pc.divide(values, divisor), divisor))


def shift(array, by: int) -> pa.Array:
    """array[i - by], null where that falls before the start."""
    array = array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
    by = min(by, len(array))
    return pa.concat_arrays([pa.nulls(by, array.type), array.slice(0, len(array) - by)])
