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
    cached = _RANGE[0] if _RANGE else None  # read once: another thread may replace it
    if cached is None or len(cached) < n:
        grown = 2 * len(cached) if cached is not None else 0
        cached = _build_range(min(max(n, grown), _RANGE_CACHED))
        _RANGE[:] = [cached]
    return cached.slice(0, n)


def any_true(mask) -> bool:
    """Whether a boolean (chunked) array holds a true (pc.any has a larger fixed cost)."""
    chunks = mask.chunks if isinstance(mask, pa.ChunkedArray) else [mask]
    return any(chunk.true_count for chunk in chunks)


def _encoded(column) -> tuple[pa.Array, pa.Array]:
    """(indices, dictionary) of a column's dictionary encoding. A chunked column is encoded
    chunk by chunk against one dictionary (no copy of its strings into one chunk)."""
    encoded = pc.dictionary_encode(column)
    if not isinstance(encoded, pa.ChunkedArray):
        return encoded.indices, encoded.dictionary
    if encoded.num_chunks == 0:
        return pa.nulls(0, pa.int32()), pa.nulls(0, column.type)
    return (
        pa.concat_arrays([chunk.indices for chunk in encoded.chunks]),
        encoded.chunks[-1].dictionary,  # every chunk's: the dictionary of the whole column
    )


def device_codes(
    table: pa.Table, rows: pa.Array | None = None
) -> tuple[pa.Array, list[tuple[str, str]]]:
    """Each row's device (of `rows`, indices into `table`, when given) as an int32 code, and
    the (greenhouse, device) ids by code: codes are dense and ascend with the ids. A row
    without an id gets no code (null).

    Each id column is dictionary-encoded once (no per-row strings are built); only the
    distinct devices reach Python.
    """
    g, greenhouses = _encoded(table["greenhouse_id"])
    d, devices = _encoded(table["device_id"])
    if rows is not None:
        g, d = pc.take(g, rows), pc.take(d, rows)
    width = max(len(devices), 1)
    pair = pc.add(pc.multiply(pc.cast(g, pa.int64()), width), pc.cast(d, pa.int64()))
    greenhouses, devices = greenhouses.to_pylist(), devices.to_pylist()
    named = sorted(
        (greenhouses[p // width], devices[p % width], p)
        for p in pc.drop_null(pc.unique(pair)).to_pylist()
    )
    size = len(greenhouses) * width
    if size <= 8 * len(named) + 256:  # few id combinations: look the codes up by position
        lookup: list[int | None] = [None] * size
        for code, (_, _, p) in enumerate(named):
            lookup[p] = code
        codes = pc.take(pa.array(lookup, pa.int32()), pair)
    else:
        codes = pc.index_in(pair, value_set=pa.array([p for _, _, p in named], pa.int64()))
    return codes, [(g, d) for g, d, _ in named]
