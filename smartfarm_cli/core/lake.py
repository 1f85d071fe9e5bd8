"""Layout of the log and spike stores, shared by S3 and the local disk.

`logs/year=YYYY/month=MM/day=DD/hour=HH/<name>.parquet` by event time, and
`spikes/year=YYYY/month=MM/day=DD/<digest>.parquet` where the digest is derived from the source
log key: re-processing the same log object writes the same spike key, so a repeated S3 event or
a repeated local delivery overwrites instead of duplicating. A local backfill keeps a day's
spikes in one object whose digest is derived from the batch's content-addressed hour files (the
rows' `source_key` still names each hour file).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Protocol

from .lazy import pa, pc, pq
from .rules import Rules, detect
from .state import StateStore
from .validate import partition_prefix

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
LOG_ROOT = "logs"
READING_KEY = ("greenhouse_id", "device_id", "timestamp")  # one reading per key in the lake
SPIKE_ROOT = "spikes"
ALERT_ROOT = "alerts"


class ObjectStore(Protocol):
    """The two bucket operations the pipeline needs: an S3 bucket or a folder on disk."""

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, data: bytes) -> None: ...


def split_by_time(table: pa.Table, bucket_ms: int) -> Iterator[tuple[int, pa.Table]]:
    """Yield (bucket start ms, rows in that bucket) in time order, rows sorted by time."""
    if table.num_rows == 0:
        return
    if not in_time_order(table):
        table = table.sort_by("timestamp")
    buckets = pc.divide(pc.cast(table["timestamp"], pa.int64()), bucket_ms)
    counts = pc.value_counts(buckets)  # first-seen order == ascending on sorted input
    offset = 0
    for bucket, count in zip(
        counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True
    ):
        yield bucket * bucket_ms, table.slice(offset, count)
        offset += count


def in_time_order(table: pa.Table) -> bool:
    """Whether the rows' timestamps never decrease (a null timestamp counts as out of order)."""
    stamps = table["timestamp"]
    if len(stamps) < 2:
        return stamps.null_count == 0
    rising = pc.less_equal(stamps.slice(0, len(stamps) - 1), stamps.slice(1))
    return bool(pc.all(rising, skip_nulls=False).as_py())


def log_prefix(hour_ms: int) -> str:
    return partition_prefix(hour_ms, LOG_ROOT)


def day_prefix(day_ms: int, root: str = LOG_ROOT) -> str:
    """`logs/year=YYYY/month=MM/day=DD/`: the folder of a day's hour partitions."""
    return partition_prefix(day_ms, root, ("year", "month", "day"))


def backfill_key(hour_ms: int, data: bytes | pa.Buffer) -> str:
    """Content-addressed key of one backfilled hour file.

    The same rows give the same key (a re-run rewrites identical bytes); other rows give a new
    key, so a backfill never replaces a file that another backfill or a delivery wrote.
    """
    return f"{log_prefix(hour_ms)}backfill-{hashlib.sha256(data).hexdigest()[:16]}.parquet"


def unstored(readings: pa.Table, stored: list[pa.Table]) -> pa.Table:
    """The readings whose (greenhouse, device, timestamp) is in none of the `stored` tables.

    The lake keeps the first copy of a reading, as the stream does: what is already stored
    wins, and a backfill over the same hours adds only the readings that are new.
    """
    if not stored or readings.num_rows == 0:
        return readings
    key_schema = pa.schema([readings.schema.field(c) for c in READING_KEY])
    keys = pa.concat_tables([t.select(READING_KEY).cast(key_schema) for t in stored])
    fresh = readings.join(keys, list(READING_KEY), join_type="left anti")
    order = ("timestamp", "greenhouse_id", "device_id")
    return fresh.select(readings.column_names).sort_by([(c, "ascending") for c in order])


def source_digest(source_key: str) -> str:
    return hashlib.sha256(source_key.encode()).hexdigest()[:24]


def spike_objects(
    log_table: pa.Table, source_key: str, rules: Rules, state: StateStore | None = None
) -> tuple[pa.Table, dict[str, pa.Table]]:
    """Run the rules on one delivered log file -> (all spikes, {spike key: spikes of that day}).

    With `state`, jumps are judged against each device's remembered readings (core.jumps).
    """
    spikes = detect(log_table, rules, source_key, state=state)
    return spikes, spike_keys(spikes, source_key)


def spike_keys(spikes: pa.Table, source_key: str) -> dict[str, pa.Table]:
    """{spike object key: rows} for one source object's spikes, one object per day."""
    digest = source_digest(source_key)
    return {
        day_prefix(day_ms, SPIKE_ROOT) + f"{digest}.parquet": rows
        for day_ms, rows in split_by_time(spikes, DAY_MS)
    }


def with_source(spikes: pa.Table, source_key: str) -> pa.Table:
    index = spikes.schema.get_field_index("source_key")
    return spikes.set_column(index, "source_key", pa.repeat(pa.scalar(source_key), spikes.num_rows))


def alert_key(source_key: str) -> str:
    """Where the alert outcome for one source object is recorded (idempotency marker)."""
    return f"{ALERT_ROOT}/{source_digest(source_key)}.json"


def parquet_bytes(table: pa.Table) -> bytes:
    return parquet_buffer(table).to_pybytes()


def parquet_buffer(table: pa.Table) -> pa.Buffer:
    """The Parquet file as an Arrow buffer: hashed and written without a copy to `bytes`."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="snappy")
    return sink.getvalue()


def spike_parquet_bytes(table: pa.Table) -> bytes:
    """A spike object: usually one or two rows, so the footer is most of the file.

    Without column statistics and the embedded Arrow schema (the Parquet types say the same:
    strings, doubles, int32, timestamp[ms]) a one-row spike file is 2.0 KB instead of 4.3 KB;
    readers (DuckDB, Athena, pyarrow) see the same table.
    """
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="snappy", store_schema=False, write_statistics=False)
    return sink.getvalue().to_pybytes()


def read_parquet_bytes(data: bytes) -> pa.Table:
    return pq.read_table(pa.BufferReader(data))
