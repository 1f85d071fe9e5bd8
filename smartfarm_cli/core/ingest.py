"""Streaming, columnar reading of NDJSON and JSON-array input in bounded chunks.

`read_batches(stream)` yields one validated `Batch` per chunk of about `chunk_bytes` of input,
so memory stays bounded whatever the size of the file (or of stdin).

NDJSON: each chunk (cut at a newline) is parsed by pyarrow's JSON reader into columns and
converted to the reading schema with vectorised casts. Only rows that this fast path cannot
take with certainty (a chunk pyarrow refuses, a null that may be a missing field, numeric
strings, odd timestamps, non-finite numbers, rows breaking a value rule) are handed, line by
line, to the per-item path of `validate.validate`, which decides them exactly as before and
names the reason. Both paths end in the same value rules (`validate.check_table`), so there is
one validation implementation. A rejected line's `index` is its 0-based line number in the
input (blank lines counted), so `index + 1` is the line a text editor shows.

JSON arrays (input starting with `[`): small inputs (one chunk) are parsed whole, exactly as
`validate.parse_json_lines` does; larger ones are read item by item with `json.JSONDecoder.
raw_decode` over a bounded buffer and validated per chunk of items (`index` = item position).
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from typing import BinaryIO

from .lazy import pa, pc
from .schema import FIELD_NAMES, READING_SCHEMA, SYNTHETIC
from .validate import (
    EPOCH_MS_THRESHOLD,
    Batch,
    Rejected,
    Unparsable,
    _parse_line,
    check_table,
    parse_json_lines,
    validate,
)

CHUNK_BYTES = 4 << 20  # ~30k readings: bounded memory, big enough for columnar speed
ARRAY_CHUNK_ITEMS = 20_000
# Pieces of a chunk pyarrow refuses are halved down to this many lines, then parsed per line.
MIN_PIECE_LINES = 64
# ISO-8601 forms whose Arrow cast equals datetime.fromisoformat exactly (ms precision, offset).
_ISO_FAST = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,3})?(Z|[+-]\d{2}:\d{2})$"
_LINE = "__line"
_SPACE = (b" ", b"\t", b"\r", b"\n")
_BLANK_AFTER_NEWLINE = re.compile(rb"\n[\n\r\t ]")


def read_batches(
    stream: BinaryIO,
    now_ms: int | None = None,
    chunk_bytes: int | None = None,
    parsers: int = 1,
) -> Iterator[Batch]:
    """Validated batches from an NDJSON / JSON-array byte stream, one per bounded chunk.

    `parsers` > 1 parses that many NDJSON chunks at once on worker threads (pyarrow releases
    the GIL while it parses), still yielding the batches in input order; memory grows by as
    many chunks.
    """
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    head = _read_some(stream, chunk_bytes)
    first = head.lstrip()[:1]
    at_eof = len(head) < chunk_bytes
    if at_eof and first in (b"[", b"{"):
        # One small document: the whole-text rules of parse_json_lines (an array, one object,
        # or NDJSON when it is not one JSON document).
        try:
            whole = json.loads(head)
        except (ValueError, RecursionError):
            whole = None
        if isinstance(whole, list | dict):
            items = parse_json_lines(head)
            yield validate(items, now_ms)
            return
    if first == b"[" and not at_eof:
        yield from _array_batches(head, stream, now_ms, chunk_bytes)
        return

    def parse(item: tuple[bytes, int, int]) -> Batch:
        chunk, first_line, newlines = item
        return ndjson_chunk(chunk, first_line, now_ms, newlines)

    chunks = _ndjson_chunks(head, stream, chunk_bytes)
    yield from map(parse, chunks) if parsers <= 1 else _in_order(chunks, parse, parsers)


def _in_order(items: Iterator, work, workers: int) -> Iterator:
    """work(item) for each item on `workers` threads, at most `workers` at once, in order.

    Leaving early (or an error) cancels what has not started and waits for what has.
    """
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers, thread_name_prefix="ingest-parse") as pool:
        running: deque = deque()
        try:
            for item in items:
                running.append(pool.submit(work, item))
                if len(running) >= workers:
                    yield running.popleft().result()
            while running:
                yield running.popleft().result()
        finally:
            for future in running:
                future.cancel()


def read_ahead(batches: Iterator[Batch], depth: int = 1) -> Iterator[Batch]:
    """`batches`, produced by a background thread up to `depth` batches ahead of the consumer.

    Parsing and validating the next chunk (pyarrow releases the GIL while it works) overlaps
    with whatever the consumer does with the current one; memory grows by `depth` chunks. An
    error of the producer is raised here, after the batches before it; leaving the loop early
    stops the producer (after the chunk it is working on).
    """
    import queue
    import threading

    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def offer(item) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for batch in batches:
                if not offer((batch, None)):
                    return
            offer((end, None))
        except BaseException as exc:  # handed to the consumer, raised there
            offer((None, exc))

    thread = threading.Thread(target=produce, name="ingest-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            batch, error = ready.get()
            if error is not None:
                raise error
            if batch is end:
                return
            yield batch
    finally:
        stop.set()
        thread.join(timeout=5)  # a producer blocked on a silent stdin is a daemon: left behind


def _read_some(stream: BinaryIO, size: int) -> bytes:
    """Up to `size` bytes; fewer only at the end of the stream (pipes return short reads)."""
    parts, have = [], 0
    while have < size:
        part = stream.read(size - have)
        if not part:
            break
        parts.append(part)
        have += len(part)
    return b"".join(parts)


def _ndjson_chunks(head: bytes, stream, chunk_bytes) -> Iterator[tuple[bytes, int, int]]:
    """(chunk cut at a newline, 0-based number of its first line, its count of newlines)."""
    buf, eof = head, len(head) < chunk_bytes
    line_no = 0  # 0-based number of the first line of the next chunk
    while buf:
        cut = buf.rfind(b"\n")
        if not eof and cut < 0 and len(buf) < 64 * chunk_bytes:
            more = _read_some(stream, chunk_bytes)  # a line longer than a chunk: read on
            eof, buf = len(more) < chunk_bytes, buf + more
            continue
        if eof or cut < 0:
            chunk, buf = buf, b""
        else:
            chunk, buf = buf[: cut + 1], buf[cut + 1 :]
        newlines = chunk.count(b"\n")
        yield chunk, line_no, newlines
        line_no += newlines
        if not eof:
            more = _read_some(stream, chunk_bytes)
            eof, buf = len(more) < chunk_bytes, buf + more


def ndjson_chunk(
    chunk: bytes, first_line: int = 0, now_ms: int | None = None, newlines: int | None = None
) -> Batch:
    """Validate one chunk of NDJSON whose first line is `first_line` (0-based).

    `newlines`: the chunk's count of b"\\n", when the caller has it (a 4 MB count is ~1 ms).
    """
    if chunk and not _may_have_blank_lines(chunk):  # the usual case, with no per-line Python at all
        newlines = chunk.count(b"\n") if newlines is None else newlines
        lines = newlines + (not chunk.endswith(b"\n"))
        raw = _read_table(chunk, lines)
        typed, certain = _typed(raw) if raw is not None else (None, None)
        if typed is not None and pc.all(certain).as_py():
            good, _, _ = check_table(typed, now_ms)
            if good.num_rows == lines:
                return Batch(good, [])
    lines = chunk.split(b"\n")
    numbered = [(first_line + i, line) for i, line in enumerate(lines) if line.strip(b" \t\r")]
    fast, slow = _columnar(numbered, now_ms)
    if not slow:
        return Batch(fast.drop_columns([_LINE]), [])
    slow_accepted, rejected = _per_line(slow, now_ms)
    if fast.num_rows == 0:
        return Batch(slow_accepted.drop_columns([_LINE]), rejected)
    # Keep input order (the first of two equal readings is the one the stream keeps).
    both = pa.concat_tables([fast, slow_accepted])
    both = both.take(pc.sort_indices(both[_LINE]))
    return Batch(both.drop_columns([_LINE]), rejected)


def _may_have_blank_lines(chunk: bytes) -> bool:
    """True when a line may be blank (skipped by pyarrow, but counted in line numbers)."""
    return chunk[:1] in _SPACE or _BLANK_AFTER_NEWLINE.search(chunk) is not None


def _per_line(numbered: list[tuple[int, bytes]], now_ms) -> tuple[pa.Table, list[Rejected]]:
    """The per-item path for the lines the columnar path did not take -> (accepted, rejected)."""
    items = [_parse_line(number + 1, line) for number, line in numbered]
    batch = validate(items, now_ms)
    rejected = [Rejected(numbered[r.index][0], r.reason, r.raw) for r in batch.rejected]
    refused = {r.index for r in rejected}
    lines = pa.array([n for n, _ in numbered if n not in refused], pa.int64())
    return batch.accepted.append_column(_LINE, lines), rejected


def _columnar(numbered: list[tuple[int, bytes]], now_ms) -> tuple[pa.Table, list]:
    """(rows the columnar path takes, with line numbers; lines left to the per-item path)."""
    empty = READING_SCHEMA.empty_table().append_column(_LINE, pa.array([], pa.int64()))
    if not numbered:
        return empty, []
    raw = _parse_pieces(numbered)
    if raw is None:  # refused: halve, so a bad line costs a few small parses, not the chunk
        if len(numbered) <= MIN_PIECE_LINES:
            return empty, numbered
        middle = len(numbered) // 2
        left, left_slow = _columnar(numbered[:middle], now_ms)
        right, right_slow = _columnar(numbered[middle:], now_ms)
        return pa.concat_tables([left, right]), left_slow + right_slow
    typed, certain = _typed(raw)
    if typed is None:
        return empty, numbered
    typed = typed.append_column(_LINE, pa.array([n for n, _ in numbered], pa.int64()))
    sure = typed.filter(certain)
    good, _, _ = check_table(sure, now_ms)
    if good.num_rows == len(numbered):
        return good, []
    taken = set(good[_LINE].to_pylist())
    return good, [(n, line) for n, line in numbered if n not in taken]


def _schemas() -> tuple[pa.Schema, pa.Schema]:
    """What pyarrow is told to read: timestamps as text (ISO-8601), else as numbers (epoch).

    Letting pyarrow infer timestamps would lose whether an offset was given; unknown fields
    are skipped, as `validate.coerce` ignores them.
    """
    fields = [
        pa.field(name, pa.string() if name in ("greenhouse_id", "device_id") else pa.float64())
        for name in FIELD_NAMES
    ]
    fields.append(pa.field(SYNTHETIC, pa.bool_()))  # optional; anything but a boolean: per item
    iso = pa.schema([f.with_type(pa.string()) if f.name == "timestamp" else f for f in fields])
    return iso, pa.schema(fields)


_SCHEMAS = _schemas()


def _parse_pieces(numbered: list[tuple[int, bytes]]) -> pa.Table | None:
    """pyarrow's reading of these lines, or None when it refuses them or miscounts rows."""
    return _read_table(b"\n".join(line for _, line in numbered), len(numbered))


def _read_table(data: bytes, lines: int) -> pa.Table | None:
    import pyarrow.json as pj

    # pyarrow 25's JSON reader dereferences a null pointer (SIGSEGV, the whole process gone)
    # when a block starts with a top-level `null` (apache/arrow#47409). Only lines whose first
    # byte opens an object reach it (a raw newline cannot occur inside JSON, so each b"\n{"
    # starts a line); the rest take the per-item path, which rejects them by line number.
    if data.count(b"\n{") + data.startswith(b"{") != lines:
        return None
    try:  # pyarrow does not check; the per-line path names the bad line
        data.isascii() or data.decode("utf-8")  # ASCII is UTF-8, and much faster to check
    except UnicodeDecodeError:
        return None
    # One thread: the parse is not the bottleneck, and the suite once crashed (SIGSEGV) inside
    # a threaded read_json on hypothesis input that did not reproduce alone.
    read_options = pj.ReadOptions(block_size=1 << 20, use_threads=False)
    for schema in _SCHEMAS:
        try:
            table = pj.read_json(
                pa.BufferReader(data),
                read_options=read_options,
                parse_options=pj.ParseOptions(
                    explicit_schema=schema, unexpected_field_behavior="ignore"
                ),
            )
        except (pa.ArrowInvalid, OverflowError):
            continue
        # `{"a":1}{"a":2}` on one line: two rows to pyarrow, not JSON to the per-item path.
        return table if table.num_rows == lines else None
    return None


def _typed(raw: pa.Table) -> tuple[pa.Table | None, pa.Array | None]:
    """pyarrow's inferred columns -> (READING_SCHEMA table, rows converted with certainty).

    Anything not certain to convert exactly as `validate.coerce` would (nulls, which may be a
    missing field; strings where numbers are expected; non-finite numbers; timestamps outside
    the plain ISO-8601 form) is left to the per-item path.
    """
    if any(name not in raw.column_names for name in FIELD_NAMES):
        return None, None
    n = raw.num_rows
    certain = pa.array([True] * n, pa.bool_()) if n else pa.array([], pa.bool_())
    columns = []
    for name in FIELD_NAMES:
        col = raw[name]
        if col.null_count == n:
            return None, None
        certain = pc.and_(certain, pc.is_valid(col))
        if name in ("greenhouse_id", "device_id"):
            if not pa.types.is_string(col.type):
                return None, None
            converted = col
        elif name == "timestamp":
            converted, ok = _timestamp(col)
            if converted is None:
                return None, None
            certain = pc.and_(certain, ok)
        else:
            if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
                return None, None
            as_float = pc.cast(col, pa.float64())
            certain = pc.and_(certain, pc.is_finite(as_float))
            if name == "error_code":
                whole = pc.equal(pc.floor(as_float), as_float)
                in_range = pc.less_equal(pc.abs(as_float), 2**31 - 1)
                certain = pc.and_(certain, pc.and_(whole, in_range))
                converted = pc.cast(pc.if_else(certain, as_float, 0.0), pa.int32())
            else:
                converted = as_float
        columns.append(converted)
    if SYNTHETIC in raw.column_names:  # absent or null: a real reading, as in validate.coerce
        columns.append(pc.fill_null(raw[SYNTHETIC], False))
    else:
        columns.append(pa.repeat(False, n))
    certain = pc.fill_null(certain, False)
    table = pa.Table.from_arrays(
        [pc.cast(c, f.type, safe=False) for c, f in zip(columns, READING_SCHEMA, strict=True)],
        schema=READING_SCHEMA,
    )
    return table, certain


def _timestamp(col: pa.ChunkedArray) -> tuple[pa.Array | None, pa.Array | None]:
    """A timestamp column -> (epoch-ms timestamps, rows converted exactly)."""
    ms_type = pa.timestamp("ms")
    if pa.types.is_string(col.type):
        plain = pc.fill_null(pc.match_substring_regex(col, _ISO_FAST), False)
        candidate = pc.if_else(plain, col, "2000-01-01T00:00:00Z")
        try:
            parsed = pc.cast(candidate, pa.timestamp("ms", "UTC"))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None, None
        return pc.cast(parsed, ms_type), plain
    if pa.types.is_integer(col.type):
        values = pc.cast(col, pa.int64())
        small = pc.less(pc.abs(values), EPOCH_MS_THRESHOLD)
        safe = pc.if_else(small, values, 0)
        ms = pc.if_else(small, pc.multiply(safe, 1000), values)
        return pc.cast(ms, ms_type), pc.fill_null(pc.less(pc.abs(values), 10**15), False)
    if pa.types.is_floating(col.type):
        values = pc.cast(col, pa.float64())
        finite = pc.fill_null(pc.is_finite(values), False)
        ok = pc.and_(finite, pc.less(pc.abs(values), 1e15))
        safe = pc.if_else(ok, values, 0.0)
        small = pc.less(pc.abs(safe), EPOCH_MS_THRESHOLD)
        ms = pc.if_else(small, pc.multiply(safe, 1000.0), safe)
        return pc.cast(pc.cast(ms, pa.int64(), safe=False), ms_type), ok
    return None, None


# -- JSON arrays ------------------------------------------------------------------------------


def _array_batches(head: bytes, stream, now_ms, chunk_bytes) -> Iterator[Batch]:
    """Items of one large JSON array, validated per ARRAY_CHUNK_ITEMS, memory bounded.

    A break in the array (bad JSON) ends it: the items before are kept, the rest of the input
    is rejected as one item naming where it broke.
    """
    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8")()
    text = ""
    pos = 0
    index = 0
    eof = False
    started = False
    items: list = []
    base = 0  # index of items[0]

    def refill() -> bool:
        nonlocal text, pos, eof
        if eof:
            return False
        data = _read_some(stream, chunk_bytes) if started else head
        try:
            decoded = utf8.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            raise ValueError(f"the JSON array is not UTF-8 text (byte {exc.start})") from None
        if not data:
            eof = True
        text = text[pos:] + decoded
        pos = 0
        return bool(data)

    def skip_ws() -> None:
        nonlocal pos
        while True:
            while pos < len(text) and text[pos] in " \t\r\n":
                pos += 1
            if pos < len(text) or not refill():
                return

    try:
        refill()
        started = True
        skip_ws()
        pos += 1  # the opening "["
        skip_ws()
        if text[pos : pos + 1] == "]":
            return
        while True:
            skip_ws()
            while True:
                try:
                    item, end = decoder.raw_decode(text, pos)
                    break
                except json.JSONDecodeError:
                    if len(text) - pos > 64 * chunk_bytes or not refill():
                        raise
                except RecursionError:
                    raise ValueError("an item is nested too deeply") from None
            items.append(item)
            index += 1
            pos = end
            if len(items) >= ARRAY_CHUNK_ITEMS:
                yield _shifted(validate(items, now_ms), base)
                base, items = index, []
            skip_ws()
            sep = text[pos : pos + 1]
            pos += 1
            if sep == "]":
                break
            if sep != ",":
                raise ValueError(f"expected , or ] after item {index}, got {sep or 'the end'!r}")
    except ValueError as exc:  # JSONDecodeError included
        message = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        items.append(Unparsable(f"the JSON array breaks after item {index}: {message}", ""))
    if items:
        yield _shifted(validate(items, now_ms), base)


def _shifted(batch: Batch, base: int) -> Batch:
    if base:
        batch.rejected = [Rejected(r.index + base, r.reason, r.raw) for r in batch.rejected]
    return batch


__all__ = ["CHUNK_BYTES", "ndjson_chunk", "read_ahead", "read_batches"]
