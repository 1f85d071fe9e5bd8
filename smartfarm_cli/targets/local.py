"""The embedded target: the whole pipeline on one machine, no AWS account needed.

stream    SQLite in WAL mode (`stream.db`): append-only, one writer and many readers at once
delivery  stream -> Parquet under `sensor-log-bucket/logs/year=/month=/day=/hour=/`, flushed by
          size or age. Before writing, the batch range is recorded as pending; file names are
          derived from that range, so a delivery interrupted anywhere is redone with the same
          names (overwrite, never duplicate), and the checkpoint advances only after the files
          are durable (temp file, fsync, rename).
anomalies the core rules on each delivered file; spikes under `spike-log-bucket/spikes/`, then the
          alert hook (Discord when configured), exactly as the anomaly Lambda does on S3.
queries   DuckDB over the Parquet files: core.queries' own SQL in its DuckDB spelling, user SQL
          through sqlguard (Athena dialect, transpiled by sqlglot); both behind DuckDB's wall.
retention delivered readings stay whole in the stream for STREAM_KEEP_S, then as keys (`seen`)
          until the retention window (24 h) ends: the duplicate guarantee's horizon.
compaction closed hour partitions are rewritten as one file (atomic folder swap, journalled).

Ways in (all end in the core's value rules, core.validate):
  ingest(items)        raw JSON-like readings: validate, append to the stream (a live send)
  ingest_table(table)  typed readings (READING_SCHEMA): value rules, append to the stream
  append(table)        already validated readings: one stream transaction, duplicates ignored
  ingest_stream(file)  NDJSON / JSON array of any size: chunked, columnar, straight to the lake
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import json
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from ..core import generator, lake, queries, schema
from ..core.arrays import arange, device_codes
from ..core.lazy import pa, pc
from ..core.rules import Rules, detect, load_rules
from ..core.schema import COLUMN_NAMES, METRICS, READING_PARTITIONS, SPIKE_PARTITIONS
from ..core.state import HISTORY_KEEP_MS, SqliteStateStore
from ..core.validate import Batch, Rejected, resent_reason, table_from_rows, validate
from ..errors import UserError
from .results import DeliveryReport, IngestResult, NewKey, QueryResult, SimulateReport

HOME_ENV = "SMARTFARM_HOME"
LOG_BUCKET = "sensor-log-bucket"
SPIKE_BUCKET = "spike-log-bucket"
DEFAULT_FLUSH_ROWS = 5_000
DEFAULT_FLUSH_AGE_S = 10.0
MAX_FILE_ROWS = 100_000
# Delivered readings stay in the stream this long (Kinesis' default retention), so a reading
# re-sent within the window is recognised and adds nothing. Override: SMARTFARM_RETENTION_H.
DEFAULT_RETENTION_S = 24 * 3600.0
RETENTION_ENV = "SMARTFARM_RETENTION_H"
# Delivered rows stay whole in the stream this long (for watchers), then only their key does.
STREAM_KEEP_S = 600.0
# An ingest holds back at most this many rows of a chunk's newest hour for the next chunk.
MAX_HELD_ROWS = 200_000
# How many rejected items an IngestResult lists (all of them are kept in the rejected store).
MAX_LISTED_REJECTIONS = 1_000
# An hour partition is compacted once it ended this long ago (late readings may still come;
# one that comes later just makes the hour dirty again).
COMPACT_GRACE_S = 300.0
COMPACTION_DIR = ".compaction"
COMPACTED_PREFIX = "compacted-"
TEMP_PREFIX = ".tmp-"  # a write in progress: readers skip dot files
_TEMP_NUMBERS = itertools.count()
VANISHED_FILE_RETRIES = 3  # a query's listed file replaced by a compaction: list again
# Worker threads that encode and write a backfill's hour files while the next day is generated
# and judged (Parquet encoding, hashing and file writes release the GIL). The thread that waits
# for a day's files writes those no worker has started, so two cores stay busy with one worker
# (a second worker only added GIL hand-offs: bench/run.py P2).
BACKFILL_WRITERS = 1

# Sends one source's incident message once: (source key, Discord message, anomaly count).
AlertHook = Callable[[str, dict, int], object]

_STREAM_DDL = """
CREATE TABLE IF NOT EXISTS stream (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    received_ms INTEGER NOT NULL,
    greenhouse_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    temperature REAL,
    humidity REAL,
    co2 REAL,
    error_code INTEGER NOT NULL,
    synthetic INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS stream_reading ON stream (greenhouse_id, device_id, ts_ms);
CREATE TABLE IF NOT EXISTS rejected (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_ms INTEGER NOT NULL,
    source TEXT NOT NULL,
    reason TEXT NOT NULL,
    raw TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS delivery (
    name TEXT PRIMARY KEY,
    delivered_seq INTEGER NOT NULL,
    pending_from INTEGER,
    pending_to INTEGER
);
INSERT OR IGNORE INTO delivery (name, delivered_seq) VALUES ('lake', 0);
CREATE TABLE IF NOT EXISTS alert_outbox (
    source TEXT PRIMARY KEY,
    created_ms INTEGER NOT NULL,
    message TEXT NOT NULL,
    anomalies INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS alert_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    greenhouse_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    rule TEXT NOT NULL,
    metric TEXT NOT NULL,
    severity TEXT NOT NULL,
    event TEXT NOT NULL,
    anomalies INTEGER NOT NULL,
    worst REAL,
    opened_ms INTEGER NOT NULL,
    source TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_log_time ON alert_log (at_ms);
-- Delivered readings that left the stream, kept as keys until the retention window ends.
CREATE TABLE IF NOT EXISTS devices (
    id INTEGER PRIMARY KEY,
    greenhouse_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    UNIQUE (greenhouse_id, device_id)
);
-- Keyed by time first: keys arrive in time order, so new rows fill the rightmost page to the
-- brim and pruning empties whole pages on the left (device first left pages ~20 % empty).
CREATE TABLE IF NOT EXISTS seen (
    device INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,
    received_min INTEGER NOT NULL,
    PRIMARY KEY (ts_ms, device)
) WITHOUT ROWID;
-- Hour partitions written since they were last compacted (compaction's to-do list).
CREATE TABLE IF NOT EXISTS dirty_hours (prefix TEXT PRIMARY KEY);
-- Lake files of a file ingest not yet synced (a crash is resolved from here).
CREATE TABLE IF NOT EXISTS ingest_journal (key TEXT PRIMARY KEY);
-- Compactions between staging and cleanup (a crash is resolved from here).
CREATE TABLE IF NOT EXISTS compactions (
    staging TEXT PRIMARY KEY,
    prefix TEXT NOT NULL,
    name TEXT NOT NULL,
    inputs TEXT NOT NULL
);
"""
_STREAM_COLUMNS = (
    "greenhouse_id, device_id, ts_ms, temperature, humidity, co2, error_code, synthetic"
)
# One reading into the stream, unless it is there already (the unique key) or was delivered
# earlier within the retention window (`seen`). ?1 arrival ms, ?2..?9 the reading.
_INSERT_NEW = (
    f"INSERT OR IGNORE INTO stream (received_ms, {_STREAM_COLUMNS}) "
    "SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9 WHERE NOT EXISTS (SELECT 1 FROM devices d "
    "JOIN seen s ON s.device = d.id AND s.ts_ms = ?4 "
    "WHERE d.greenhouse_id = ?2 AND d.device_id = ?3)"
)
_STORED_VALUES = (
    "SELECT temperature, humidity, co2, error_code FROM stream "
    "WHERE greenhouse_id = ? AND device_id = ? AND ts_ms = ?"
)


def default_home() -> Path:
    """$SMARTFARM_HOME, else the user's data folder (platformdirs), never the working folder.

    Linux: $XDG_DATA_HOME/smartfarm (~/.local/share/smartfarm); macOS: ~/Library/Application
    Support/smartfarm; Windows: %LOCALAPPDATA%\\smartfarm. A home in the working folder let any
    folder farmctl ran in (a cloned repository, an unpacked archive) decide the target and the
    stack it talks to through a planted `.smartfarm/aws-outputs.json`.
    """
    explicit = os.environ.get(HOME_ENV)
    if explicit:
        return Path(explicit)
    from platformdirs import user_data_path

    return user_data_path("smartfarm", appauthor=False)


class LocalBucket:
    """A folder that behaves like the S3 bucket of the same name (durable whole-object writes)."""

    def __init__(self, root: Path):
        self.root = root

    def path(self, key: str) -> Path:
        return self.root / key

    def get(self, key: str) -> bytes | None:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            return None

    def put(self, key: str, data: bytes | pa.Buffer, durable: bool = True) -> None:
        """Write to a temp file, fsync, rename over the key, fsync the folder.

        Readers never see a partial object. `durable=False` skips the fsyncs, for bulk writes
        that are simply re-run after a crash (backfill). Plain os calls on purpose: a backfill
        writes a few hundred files a second from two threads, and tempfile's random names and
        Python file objects cost more than the write itself (bench/run.py P2).
        """
        target = os.path.join(self.root, key)
        folder = os.path.dirname(target)
        fd, tmp = _new_temp_file(folder)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        if durable:
            _fsync_dir(folder)

    def keys(self, prefix: str, suffix: str = ".parquet") -> list[str]:
        base = self.path(prefix)
        if not base.exists():
            return []
        return sorted(
            str(p.relative_to(self.root))
            for p in base.rglob(f"*{suffix}")
            if not p.name.startswith(".")
        )


class LocalTarget:
    name = "local"

    def __init__(
        self,
        home: Path | str | None = None,
        rules: Rules | None = None,
        alert_hook: AlertHook | None = None,
        flush_rows: int = DEFAULT_FLUSH_ROWS,
        flush_age_s: float = DEFAULT_FLUSH_AGE_S,
        retention_s: float | None = None,
        clock: Callable[[], float] = time.time,
        alert_synthetic: bool = False,
    ):
        self.home = Path(home) if home else default_home()
        # Synthetic readings (simulate, demo, backfill) move no incident and page no one
        # unless asked (`farmctl --alert-synthetic`); their spikes are stored either way.
        self.alert_synthetic = alert_synthetic
        self.rules = rules or load_rules()
        self.alert_hook = alert_hook
        self.flush_rows = flush_rows
        self.flush_age_s = flush_age_s
        self.retention_s = _retention_s() if retention_s is None else retention_s
        self.clock = clock  # wall clock in seconds: arrival stamps, flush age, retention
        self.logs = LocalBucket(self.home / LOG_BUCKET)
        self.spike_store = LocalBucket(self.home / SPIKE_BUCKET)
        self._db: sqlite3.Connection | None = None
        self._state: SqliteStateStore | None = None
        # Flush decision state, in memory: what this process appended since its last delivery.
        self._unflushed_rows = 0
        self._unflushed_since: float | None = None
        self._looked_at_stream = False  # rows left by other (or crashed) processes checked once
        self._appended = False  # this process appends (so its own counters are the news)
        self._fresh: tuple[int, int, pa.Table] | None = None  # (first seq, last seq, rows)
        self._last_prune = float("-inf")
        self._run: _StateRun | None = None  # device state of the files being written

    # -- stream ---------------------------------------------------------------------------

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            self.make_home()
            db = sqlite3.connect(self.home / "stream.db", timeout=30, isolation_level=None)
            # Before WAL: switching to WAL writes the header, after which a new file keeps
            # auto_vacuum off (a stream.db made before this is converted by _prune).
            db.execute("PRAGMA auto_vacuum = INCREMENTAL")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL survives a process crash
            db.execute("PRAGMA busy_timeout=30000")
            db.executescript(_STREAM_DDL)
            if "synthetic" not in {row[1] for row in db.execute("PRAGMA table_info(stream)")}:
                # A stream.db from before the column: its rows are real readings.
                db.execute("ALTER TABLE stream ADD COLUMN synthetic INTEGER NOT NULL DEFAULT 0")
            self._db = db
        return self._db

    @property
    def state(self) -> SqliteStateStore:
        """Per-device state (jump windows; alert incidents) in the stream database."""
        if self._state is None:
            self._state = SqliteStateStore(self.db)
        return self._state

    def prepare(self, writes: bool) -> None:
        """Fail early, in one line, when the home cannot serve the command."""
        if writes:
            self.make_home()
        else:
            self.require_data()

    def make_home(self) -> None:
        """Create the home folder, or say in one line why it cannot be used."""
        fix = "choose a writable folder with --home or SMARTFARM_HOME"
        if self.home.exists() and not self.home.is_dir():
            raise UserError(f"the home {self.home} is a file, not a folder; {fix}")
        try:
            self.home.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.home):
                pass  # the home must take new files, not only exist
        except OSError as exc:
            reason = (exc.strerror or str(exc)).lower()
            raise UserError(f"cannot use {self.home} as the home ({reason}); {fix}") from None

    def require_data(self) -> None:
        """For commands that only read: a home that does not exist is a typo, not a new farm."""
        if self.home.exists() and not self.home.is_dir():
            self.make_home()  # says why the file cannot be a home
        if not self.home.is_dir():
            raise UserError(
                f"no farm data in {self.home}: check --home / SMARTFARM_HOME, or start one "
                "with `farmctl demo`, `farmctl simulate` or `farmctl ingest FILE`"
            )

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
            self._state = None

    def append(self, table: pa.Table) -> tuple[int, list[Rejected]]:
        """Append validated readings to the stream in one transaction.

        A reading is identified by (greenhouse, device, timestamp) and the first copy stored
        wins: a device or a user sending the same reading again (a retried request, the same
        file ingested twice) adds nothing. Returns how many were new, and each re-sent copy
        whose values differ from the stored one (core.validate.resent_reason says how).
        """
        if table.num_rows == 0:
            return 0, []
        now = int(self.clock() * 1000)
        columns = [table[name] for name in COLUMN_NAMES]
        columns[2] = pc.cast(columns[2], pa.int64())
        rows = list(zip(*(c.to_pylist() for c in columns), strict=True))
        differing = []
        # Three statements for a send whose readings are all new (the usual case): insert,
        # the last seq, commit. Rows go in input order, so their seqs follow it.
        with self._transaction() as db:
            before = db.total_changes
            db.executemany(_INSERT_NEW, ((now, *row) for row in rows))
            added = db.total_changes - before
            (last,) = db.execute("SELECT max(seq) FROM stream").fetchone() if added else (0,)
            if added < len(rows):  # some were copies: compare them with what is stored
                for pos, row in enumerate(rows):
                    stored = db.execute(_STORED_VALUES, row[:3]).fetchone()
                    if stored is not None and stored != row[3:7]:  # values, not the mark
                        differing.append((pos, *stored))
        differed = [
            Rejected(pos, resent_reason(stored, rows[pos][3:7]), json.dumps(_reading(rows[pos])))
            for pos, *stored in differing
        ]
        self._appended = True
        if added:
            if self._unflushed_since is None:
                self._unflushed_since = self.clock()
            self._unflushed_rows += added
            # Every row was new: the stream now holds exactly these rows, in this order, so
            # their delivery can be written from this table instead of reading them back.
            exact = added == table.num_rows
            self._fresh = (last - added + 1, last, table) if exact else None
        return added, differed

    def record_rejected(self, rejected: Iterable[Rejected], source: str) -> None:
        now = int(self.clock() * 1000)
        rows = [(now, source, r.reason, r.raw) for r in rejected]
        if rows:
            with self._transaction() as db:
                db.executemany(
                    "INSERT INTO rejected (received_ms, source, reason, raw) VALUES (?, ?, ?, ?)",
                    rows,
                )

    def ingest(self, items: Iterable, source: str = "ingest", deliver: bool = True) -> IngestResult:
        """Validate raw readings, append the good ones, keep the bad ones with their reason.

        With `deliver`, everything pending is flushed to the lake before returning (a one-shot
        command has no later moment to do it); without, delivery is left to size/age flushes.
        """
        batch = validate(items)
        self.record_rejected(batch.rejected, source)
        added, differed = self.append(batch.accepted)
        self.record_rejected(differed, source)
        if deliver:
            self.deliver(force=True)
        duplicates = batch.accepted.num_rows - added
        return IngestResult(added, batch.rejected, duplicates, len(differed))

    def ingest_table(
        self, table: pa.Table, source: str = "ingest", deliver: bool = True
    ) -> IngestResult:
        """Apply the value rules to an already-typed reading table, append the good rows.

        For readings that are typed already (generated ones, a decoded binary batch): the
        same rules as `ingest` (core.validate.check_table) without the JSON round trip.
        """
        table, rejected, _ = self._value_rules(table, source)
        added, differed = self.append(table)
        self.record_rejected(differed, source)
        if deliver:
            self.deliver(force=True)
        return IngestResult(added, rejected, table.num_rows - added, len(differed))

    def _value_rules(
        self, table: pa.Table, source: str
    ) -> tuple[pa.Table, list[Rejected], pa.Array]:
        """(good rows, rejections, reason per row or null): core.validate's value rules over a
        typed table; the rejections are kept in the rejected store."""
        from ..core.validate import _reasons

        reasons = _reasons(table, int(time.time() * 1000))
        rejected: list[Rejected] = []
        if reasons.null_count < table.num_rows:
            bad = pc.indices_nonzero(pc.is_valid(reasons)).to_pylist()
            records = generator.to_json_records(table.take(bad))
            rejected = [
                Rejected(index, reasons[index].as_py(), json.dumps(record, ensure_ascii=False))
                for index, record in zip(bad, records, strict=True)
            ]
            table = table.filter(pc.is_null(reasons))
            self.record_rejected(rejected, source)
        return table, rejected, reasons

    def ingest_stream(self, stream: BinaryIO, source: str = "ingest") -> IngestResult:
        """Validate NDJSON / a JSON array of any size from a byte stream and store it.

        One bounded chunk at a time (core.ingest), so memory does not grow with the input.
        A file is history, not a live feed: its readings are written straight into the lake
        from the validated tables, without passing through the stream, under the delivery
        lock. Readings the lake already holds (same greenhouse, device and timestamp; also
        repeated within the input) are dropped first, so a re-ingested file adds nothing, at
        any age. Files are journalled before they are written and synced once at the end; a
        crash part-way is resolved on the next run (whole files keep their spikes, torn ones
        are removed) and running the same ingest again adds exactly what is missing. Closed
        hours are compacted at the end. The result lists the first MAX_LISTED_REJECTIONS
        rejections (all go to the rejected store).
        """
        from ..core.ingest import read_ahead, read_batches

        self.deliver(force=True)  # the lake holds every earlier reading: dedupe is against it
        # The next chunk is parsed and validated while the current one is written.
        parsers = min(2, os.cpu_count() or 1)  # chunks parsed side by side, kept in order
        return self.ingest_batches(read_ahead(read_batches(stream, parsers=parsers)), source)

    def ingest_batches(self, batches: Iterable[Batch], source: str = "ingest") -> IngestResult:
        """Write already-validated batches straight into the lake, minus what it already holds."""
        result = IngestResult(0, [])
        with self._delivery_lock(wait=True):
            self._recover_ingests()
            with self._state_run(source) as run:
                self._ingest_into_lake(batches, source, result)
                os.sync()  # one flush for the whole input instead of two fsyncs per file
                # The journal goes in the transaction that saves the devices' state: a crash
                # before it leaves the files to _recover_ingests, after it nothing to redo.
                run.statements.append("DELETE FROM ingest_journal")
            self._compact(self._closed_dirty())
        return result

    def _ingest_into_lake(self, batches: Iterable[Batch], source: str, result: IngestResult):
        """Each batch minus what the lake holds, into hour files of the lake.

        The rows of a batch's newest hour wait for the next batch (up to MAX_HELD_ROWS), so
        an input in time order gives one file per hour: nothing left to compact.
        """
        batches = iter(batches)
        batch, held = next(batches, None), None
        while batch is not None:
            following = next(batches, None)
            self.record_rejected(batch.rejected, source)
            room = max(MAX_LISTED_REJECTIONS - len(result.rejected), 0)
            result.rejected += batch.rejected[:room]
            result.unlisted_rejected += max(len(batch.rejected) - room, 0)
            table = batch.accepted if held is None else pa.concat_tables([held, batch.accepted])
            table, held = _newest_hour_apart(table) if following is not None else (table, None)
            self._ingest_table_into_lake(table, source, result)
            batch = following

    def _ingest_table_into_lake(self, table: pa.Table, source: str, result: IngestResult):
        new, differed = self._not_in_lake(table)
        self.record_rejected(differed, source)
        result.differed += len(differed)
        result.accepted += new.num_rows
        result.duplicates += table.num_rows - new.num_rows
        if new.num_rows:
            name = f"ingest-{int(self.clock() * 1000)}-{os.urandom(4).hex()}"
            hours = pc.unique(pc.divide(pc.cast(new["timestamp"], pa.int64()), 3_600_000))
            keys = [f"{lake.log_prefix(h * lake.HOUR_MS)}{name}.parquet" for h in hours.to_pylist()]
            with self._transaction() as db:
                db.executemany("INSERT INTO ingest_journal (key) VALUES (?)", [(k,) for k in keys])
            report = self.write_logs(new, name, durable=False)
            self._mark_dirty(report.files)

    def _recover_ingests(self) -> None:
        """Files of an ingest a crash interrupted: keep whole ones (with spikes), drop torn ones.

        Call with the delivery lock. A whole file gets its spikes (again: same spike keys, and
        the alert marker stops a second message), as the anomaly Lambda would on a redelivered
        S3 event; a file that cannot be read is removed with its spikes, and the readings it
        held are added again by re-running the ingest.
        """
        import pyarrow.parquet as pq

        from ..core.validate import conform

        rows = self.db.execute("SELECT key FROM ingest_journal").fetchall()
        for (key,) in rows:
            path = self.logs.path(key)
            if path.exists():
                try:
                    table = conform(pq.read_table(path))
                except (OSError, ValueError, pa.ArrowException):
                    digest = lake.source_digest(key)
                    for spike in self.spike_store.path(lake.SPIKE_ROOT).rglob(f"{digest}.parquet"):
                        spike.unlink()
                    path.unlink()
                else:
                    self.store_spikes(key, lake.with_source(detect(table, self.rules), key))
            with self._transaction() as db:
                db.execute("DELETE FROM ingest_journal WHERE key = ?", (key,))

    def _not_in_lake(self, table: pa.Table) -> tuple[pa.Table, list[Rejected]]:
        """(rows whose key is neither earlier in `table` nor stored, re-sent copies that differ).

        The first copy wins, as in the stream: a later copy in the input, or one the lake
        already holds, adds nothing; one whose values differ is returned with the reason
        (core.validate.resent_reason), for the rejected store.
        """
        import pyarrow.parquet as pq

        from ..core.validate import conform

        keys = list(lake.READING_KEY)
        if table.num_rows == 0:
            return table, []
        differed: list[Rejected] = []
        table = table.append_column("__row", arange(table.num_rows))
        files = [
            self.logs.path(key)
            for hour in pc.unique(pc.divide(pc.cast(table["timestamp"], pa.int64()), 3_600_000))
            for key in self.logs.keys(lake.log_prefix(hour.as_py() * lake.HOUR_MS))
        ]
        key_schema = pa.schema([schema.READING_SCHEMA.field(k) for k in keys])
        stored_keys = [pq.read_table(f, columns=keys).cast(key_schema) for f in files]
        if (
            stored_keys
            and table.join(pa.concat_tables(stored_keys), keys, join_type="left semi").num_rows
        ):  # every copy of a stored reading is compared with the stored one
            stored = [conform(pq.read_table(f)) for f in files]
            differed += _differing(table, pa.concat_tables(stored))
            table = lake.unstored(table, stored).sort_by("__row")  # back in input order
        if _keys_repeat(table):  # repeated within the input: keep the first
            firsts = table.group_by(keys, use_threads=False).aggregate([("__row", "min")])
            first = pc.is_in(table["__row"], value_set=firsts["__row_min"])
            later = table.filter(pc.invert(first))
            table = table.filter(first)
            differed += _differing(later, table)
        return table.drop_columns(["__row"]), differed

    def _mark_dirty(self, files: list[str]) -> None:
        hours = sorted({key.rsplit("/", 1)[0] for key in files})
        with self._transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO dirty_hours (prefix) VALUES (?)", [(h,) for h in hours]
            )

    def simulate(
        self,
        count: int,
        interval_s: float,
        greenhouses: int = 1,
        devices: int = 1,
        anomaly_rate: float = 0.0,
        seed: int | None = None,
        direct: bool = False,
        progress: Callable[[int, int], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> SimulateReport:
        """`count` sends, `interval_s` apart, each one reading per greenhouse x device.

        Every reading is stamped with the time its send goes out. The value rules (those of
        `ingest_table`) run once over all generated readings, vectorised, before the first
        send: only the stamp changes per send, and a stamp from the clock passes the timestamp
        rules. Each send is then one stream transaction (`append`); delivery runs by size/age
        as they flow, then once at the end.
        """
        import bisect

        del direct  # one path only: the local stream is always written directly
        seed = int.from_bytes(os.urandom(4), "big") if seed is None else seed
        now_ms = int(time.time() * 1000)
        generated = generator.generate(
            now_ms, count, interval_s, greenhouses, devices, anomaly_rate, seed
        )
        per_send = greenhouses * devices
        stamped = generated.table.set_column(
            2, "timestamp", pa.repeat(pa.scalar(now_ms, pa.timestamp("ms")), count * per_send)
        )
        table, refused, reasons = self._value_rules(stamped, "simulate")
        # Where each send's rows start in `table` (rows the rules refused are not in it).
        kept = pc.indices_nonzero(pc.is_null(reasons)).to_pylist() if refused else None
        starts = [
            step * per_send if kept is None else bisect.bisect_left(kept, step * per_send)
            for step in range(count + 1)
        ]
        accepted, rejected = 0, len(refused)
        delivery = DeliveryReport()
        started, stamp_ms = time.monotonic(), 0
        for step in range(count):
            rows = table.slice(starts[step], starts[step + 1] - starts[step])
            # Strictly increasing stamps: two sends in one millisecond are still two readings.
            stamp_ms = max(int(time.time() * 1000), stamp_ms + 1)
            stamp = pa.scalar(stamp_ms, pa.timestamp("ms"))
            rows = rows.set_column(2, "timestamp", pa.repeat(stamp, rows.num_rows))
            added, differed = self.append(rows)
            self.record_rejected(differed, "simulate")
            accepted += added
            delivery.add(self.deliver())
            if progress:
                progress(step + 1, count)
            if step + 1 < count and interval_s > 0:
                sleep(max(0.0, started + (step + 1) * interval_s - time.monotonic()))
        delivery.add(self.deliver(force=True))
        injected = {kind: generated.count(kind) for kind in generator.ANOMALY_KINDS}
        return SimulateReport(count, count * per_send, accepted, rejected, injected, delivery)

    def read_stream(self, after_seq: int, limit: int = 10_000) -> tuple[pa.Table, int]:
        """Readings with seq > after_seq (oldest first) and the last seq returned."""
        rows = self.db.execute(
            f"SELECT seq, {_STREAM_COLUMNS} FROM stream WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        ).fetchall()
        if not rows:
            return schema.READING_SCHEMA.empty_table(), after_seq
        return table_from_rows([r[1:] for r in rows]), rows[-1][0]

    def follow(self, poll_s: float = 0.2, backlog: int = 500) -> Iterator[pa.Table]:
        """Yield batches of new stream readings forever (the last `backlog` ones first)."""
        (last,) = self.db.execute("SELECT coalesce(max(seq), 0) FROM stream").fetchone()
        after = max(0, last - backlog)
        while True:
            table, after = self.read_stream(after)
            yield table
            if table.num_rows == 0:
                time.sleep(poll_s)

    def rejected(self, limit: int = 50) -> QueryResult:
        rows = self.db.execute(
            "SELECT id, received_ms, source, reason, raw FROM rejected ORDER BY id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        rows = [(i, _utc(ms), src, reason, raw) for i, ms, src, reason, raw in rows]
        return QueryResult(["id", "received", "source", "reason", "raw"], rows)

    @contextlib.contextmanager
    def _transaction(self):
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # -- delivery -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _delivery_lock(self, wait: bool):
        """One deliverer per home; others skip (or wait, for an explicit flush)."""
        self.make_home()
        with open(self.home / "delivery.lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def deliver(self, force: bool = False) -> DeliveryReport:
        """Deliver pending stream rows when the size or age threshold is reached (or `force`)."""
        return self._deliver(force, compact=True)

    def _deliver(self, force: bool, compact: bool) -> DeliveryReport:
        """`deliver`; `compact=False` leaves closed hours for a later compaction.

        The size / age decision is taken in memory from what this process appended (the first
        call also looks at rows other or crashed processes left), so a send that does not
        flush costs no query. After a delivery, delivered readings older than the retention
        window leave the stream and (with `compact`) closed hour partitions are compacted.
        """
        report = DeliveryReport()
        # Memory decides only for a process that appends itself; one that only delivers (the
        # delivery process of `farmctl serve`) looks at the stream every time.
        if not force and self._looked_at_stream and self._appended and not self._due():
            return report
        with self._delivery_lock(wait=force) as locked:
            if not locked:
                return report
            self._looked_at_stream = True
            while (batch := self._next_batch(force)) is not None:
                report.add(self._deliver_range(*batch))
            self.check()  # silence produces no files: the delivery loop looks for it
            if report.files or force:
                self._unflushed_rows, self._unflushed_since = 0, None
                self._prune()
                if compact:
                    report.compacted += self._compact(self._closed_dirty())
        return report

    def _due(self) -> bool:
        if self._unflushed_since is None:
            return False
        return (
            self._unflushed_rows >= self.flush_rows
            or self.clock() - self._unflushed_since >= self.flush_age_s
        )

    def _next_batch(self, force: bool) -> tuple[int, int] | None:
        delivered, pending_from, pending_to = self.db.execute(
            "SELECT delivered_seq, pending_from, pending_to FROM delivery WHERE name = 'lake'"
        ).fetchone()
        if pending_from is not None:  # an interrupted delivery: redo exactly that range
            return pending_from, pending_to
        last, oldest_ms = self.db.execute(
            "SELECT max(seq), min(received_ms) FROM stream WHERE seq > ?", (delivered,)
        ).fetchone()
        if last is None:
            return None
        due = (
            force
            or last - delivered >= self.flush_rows
            or self.clock() * 1000 - oldest_ms >= self.flush_age_s * 1000
        )
        if not due:
            return None
        upper = min(last, delivered + MAX_FILE_ROWS)
        with self._transaction() as db:
            db.execute(
                "UPDATE delivery SET pending_from = ?, pending_to = ? WHERE name = 'lake'",
                (delivered + 1, upper),
            )
        return delivered + 1, upper

    def _deliver_range(self, first: int, last: int) -> DeliveryReport:
        fresh, self._fresh = self._fresh, None
        if fresh is not None and fresh[:2] == (first, last):
            table = fresh[2]  # exactly the rows just appended, validated: no read-back
        else:
            rows = self.db.execute(
                f"SELECT {_STREAM_COLUMNS} FROM stream WHERE seq BETWEEN ? AND ? ORDER BY seq",
                (first, last),
            ).fetchall()
            table = table_from_rows(rows)
        report = self.write_logs(table, f"stream-{first:012d}-{last:012d}")
        with self._transaction() as db:
            db.execute(
                "UPDATE delivery SET delivered_seq = ?, pending_from = NULL, pending_to = NULL "
                "WHERE name = 'lake'",
                (last,),
            )
        self._mark_dirty(report.files)
        return report

    def _prune(self) -> int:
        """Retention: delivered readings leave the stream, their keys the window -> how many.

        Delivered rows older than STREAM_KEEP_S (watchers have long read them) leave `stream`
        for `seen`, which keeps only (device, timestamp, arrival minute): ~20 bytes instead of
        ~100, so the home stays small. Keys older than the retention window leave `seen`.
        Together they keep the duplicate guarantee for `retention_s` after arrival. Incident
        history and delivered alert messages older than HISTORY_KEEP_MS leave too.
        """
        now = self.clock()
        if now - self._last_prune < min(3600.0, self.retention_s / 24):
            return 0
        self._last_prune = now
        keep_ms = int((now - min(STREAM_KEEP_S, self.retention_s)) * 1000)
        cutoff_min = int((now - self.retention_s) // 60)
        old = "seq <= (SELECT delivered_seq FROM delivery WHERE name = 'lake') AND received_ms < ?"
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO devices (greenhouse_id, device_id) "
                f"SELECT DISTINCT greenhouse_id, device_id FROM stream WHERE {old}",
                (keep_ms,),
            )
            db.execute(
                "INSERT OR IGNORE INTO seen (device, ts_ms, received_min) "
                "SELECT d.id, s.ts_ms, s.received_ms / 60000 FROM stream s JOIN devices d "
                f"USING (greenhouse_id, device_id) WHERE s.{old} AND s.received_ms / 60000 >= ? "
                "ORDER BY s.ts_ms, d.id",  # in key order: appended keys fill whole pages
                (keep_ms, cutoff_min),
            )
            before = db.total_changes
            db.execute(f"DELETE FROM stream WHERE {old}", (keep_ms,))
            removed = db.total_changes - before
            db.execute("DELETE FROM seen WHERE received_min < ?", (cutoff_min,))
            # incident history and sent messages: as long as on AWS (DynamoDB TTL there)
            horizon_ms = int(now * 1000) - HISTORY_KEEP_MS
            db.execute("DELETE FROM alert_log WHERE at_ms < ?", (horizon_ms,))
            db.execute(
                "DELETE FROM alert_outbox WHERE status = 'delivered' AND updated_ms < ?",
                (horizon_ms,),
            )
        self._reclaim()
        return removed

    def _reclaim(self) -> None:
        """Give the pages pruning emptied back to the file system.

        A stream.db made before auto_vacuum was on (it kept every reading) is rewritten once
        with VACUUM, which also turns auto_vacuum on; from then on incremental_vacuum returns
        free pages after each prune.
        """
        db = self.db
        (mode,) = db.execute("PRAGMA auto_vacuum").fetchone()
        if mode != 2:  # INCREMENTAL
            db.execute("PRAGMA auto_vacuum = INCREMENTAL")
            try:
                db.execute("VACUUM")
            except sqlite3.OperationalError:  # busy beyond the timeout: the next prune retries
                return
        # Each step of the pragma frees one page, and execute() takes one step: executescript
        # runs it to the end.
        db.executescript("PRAGMA incremental_vacuum;")

    def write_logs(
        self, table: pa.Table, name: str | None, alerts: bool = True, durable: bool = True
    ) -> DeliveryReport:
        """Write readings into hourly log files named `name`, then store each file's spikes.

        `name` None gives each hour file a content-addressed backfill key (lake.backfill_key).
        The rules run once over the whole batch, against each device's remembered readings
        (the `device_state` table, core.jumps), so a jump across deliveries is seen; each hour
        file gets the spikes of its own readings, as the Lambda would store them.
        """
        report = DeliveryReport()
        source = name or _batch_name(table)
        with self._state_run(source) as run:
            spikes = detect(table, self.rules, state=run.jumps, source=source)
            self._write_hours(table, name, spikes, alerts, durable, report)
        return report

    def _write_hours(self, table, name, spikes, alerts, durable, report) -> None:
        spikes_by_hour = dict(lake.split_by_time(spikes, lake.HOUR_MS))
        for hour_ms, part in lake.split_by_time(table, lake.HOUR_MS):
            data = lake.parquet_bytes(part)
            key = (
                f"{lake.log_prefix(hour_ms)}{name}.parquet"
                if name
                else lake.backfill_key(hour_ms, data)
            )
            self.logs.put(key, data, durable)
            report.files.append(key)
            report.readings += part.num_rows
            hour_spikes = spikes_by_hour.get(hour_ms, schema.SPIKE_SCHEMA.empty_table())
            hour_spikes = lake.with_source(hour_spikes, key)
            report.add(self.store_spikes(key, hour_spikes, alerts, durable, readings=part))

    def _backfill_day(self, table: pa.Table, pool) -> Callable[[], DeliveryReport]:
        """Judge one day of new backfilled readings and start writing its hour files on `pool`.

        The rules run here, in order, against the run's device state; each hour file is
        encoded, hashed (lake.backfill_key) and written on a worker thread, so the next day is
        generated and judged meanwhile. The returned call writes the day's files no worker has
        started (from the last hour back), waits for the others and stores the spikes of those
        written in one object (no alerts: history is not news), named after the files
        (content-addressed, so the same files give the same object); each spike row still
        names its hour file in source_key. Then a failed write raises: a re-run writes the
        missing hours and their spikes, no reading's spikes are lost.
        """
        source = _batch_name(table)
        spikes = detect(table, self.rules, state=self._run.jumps, source=source)
        spikes_by_hour = dict(lake.split_by_time(spikes, lake.HOUR_MS))
        hours = [
            (hour_ms, part.num_rows, _Job(pool, self._put_backfilled, hour_ms, part))
            for hour_ms, part in lake.split_by_time(table, lake.HOUR_MS)
        ]

        def finish() -> DeliveryReport:
            report, failed = DeliveryReport(), None
            backfilled = [lake.with_source(spikes.slice(0, 0), "")]
            for *_, written in reversed(hours):  # the worker goes on from the first
                written.take()
            for hour_ms, rows, written in hours:
                try:
                    key = written.result()
                except Exception as exc:  # the write failed, or was cancelled after a failure
                    failed = failed or exc
                    continue
                report.files.append(key)
                report.readings += rows
                if hour_ms in spikes_by_hour:
                    backfilled.append(lake.with_source(spikes_by_hour[hour_ms], key))
            if report.files:
                digest = hashlib.sha256("\n".join(report.files).encode()).hexdigest()[:16]
                day_spikes = pa.concat_tables(backfilled)
                report.add(self.store_spikes(f"backfill-{digest}", day_spikes, False, False))
            if failed is not None:
                raise failed
            return report

        return finish

    def _put_backfilled(self, hour_ms: int, part: pa.Table) -> str:
        """Write one backfilled hour file under its content-addressed key (a worker's job)."""
        data = lake.parquet_buffer(part)
        key = lake.backfill_key(hour_ms, data)
        self.logs.put(key, data, durable=False)
        return key

    def _unstored(self, readings: pa.Table) -> pa.Table:
        """`readings` minus those the lake already holds (same greenhouse, device, timestamp)."""
        import pyarrow.parquet as pq

        if readings.num_rows == 0:
            return readings
        span = pc.min_max(pc.cast(readings["timestamp"], pa.int64())).as_py()
        if span["min"] is None or not any(
            self.logs.path(lake.day_prefix(day * lake.DAY_MS)).is_dir()
            for day in range(span["min"] // lake.DAY_MS, span["max"] // lake.DAY_MS + 1)
        ):
            return readings  # days the lake has no folder for (a backfill into new days)
        parts = []
        for hour_ms, part in lake.split_by_time(readings, lake.HOUR_MS):
            keys = self.logs.keys(lake.log_prefix(hour_ms))
            columns = list(lake.READING_KEY)
            tables = [pq.read_table(self.logs.path(k), columns=columns) for k in keys]
            parts.append(lake.unstored(part, tables))
        return pa.concat_tables(parts) if parts else readings

    def store_spikes(
        self,
        key: str,
        spikes: pa.Table,
        alerts: bool = True,
        durable: bool = True,
        readings: pa.Table | None = None,
    ) -> DeliveryReport:
        """What the anomaly Lambda does for one new object: store its spikes, then alert.

        Alerting goes through incidents (core.incidents): the file's `readings` and spikes move
        each device's incidents, and one message per file carries what opened, still fires or
        resolved in it.
        """
        objects = lake.spike_keys(spikes, key)
        for spike_key, rows in objects.items():
            self.spike_store.put(spike_key, lake.spike_parquet_bytes(rows), durable)
        if alerts:
            self.record_incidents(key, readings, spikes)
            if self._run is None:
                self.send_alerts()
        return DeliveryReport(spikes=spikes.num_rows, spike_files=list(objects))

    # -- per-device state of a run of files (docs/state.md) ---------------------------------

    @contextlib.contextmanager
    def _state_run(self, source: str):
        """Hold the devices' jump windows and incidents in memory while files are written.

        Every file is judged as if it were delivered alone (the same jumps, incidents and
        events); the state is loaded once per device and saved once, with the files' alert
        events and the run's `statements`, in one transaction at the end; the messages are sent
        after it. A run inside a run joins it. On an error nothing is saved: the files already
        written are the caller's to recover (the ingest journal), or are written again.
        """
        if self._run is not None:
            yield self._run
            return
        from ..core import incidents, jumps

        run = _StateRun(
            source,
            jumps.Session(self.state, int(time.time() * 1000)),
            incidents.Session(self.state, self.policy, incidents.centre_of(self.rules)),
        )
        self._run = run
        try:
            yield run
        finally:
            self._run = None
        with self._transaction() as db:
            merged = run.jumps.settle(self.rules.jump_per_minute, f"{source}-merged")
            for file, now_ms, anomalies, events in run.incidents.flush():
                self._queue(file, events, anomalies, now_ms)
            for statement in run.statements:
                db.execute(statement)
        if merged:  # another writer saved some of these devices meanwhile (never under the lock)
            self._store_merged(merged, f"{source}-merged")
        self.send_alerts()

    def _store_merged(self, rows: list[tuple[str, pa.Table]], source: str) -> None:
        """The jumps a state merge found, as spikes of their own source (no file of readings)."""
        from ..core.rules import jump_spikes

        spikes = jump_spikes(rows, self.rules, source, int(time.time() * 1000))
        self.store_spikes(source, spikes, alerts=False)

    # -- incidents (core.incidents; state beside the jump windows, docs/state.md) -----------

    def record_incidents(
        self, source: str, readings: pa.Table | None, spikes: pa.Table, now_ms: int | None = None
    ) -> list:
        """Apply one delivered file to the incidents; events logged and, when a webhook is
        configured, their message queued, all in the same transaction as the state (a crash
        after it loses nothing: the queued message is sent by the next delivery or check)."""
        from ..core import alerts, incidents

        now_ms = int(self.clock() * 1000) if now_ms is None else now_ms
        readings = schema.READING_SCHEMA.empty_table() if readings is None else readings
        spikes, readings = alerts.alertable(spikes, readings, self.alert_synthetic)
        if spikes.num_rows == 0 and readings.num_rows == 0:
            return []  # nothing real in this file: no incident moves
        if self._run is not None:  # the run saves the state and queues the events at its end
            self._run.incidents.observe(spikes, readings, source, now_ms)
            return []
        centre = incidents.centre_of(self.rules)
        with self._transaction():
            events = incidents.observe(
                spikes, readings, self.policy, self.state, source, now_ms, centre
            )
            self._queue(source, events, spikes.num_rows, now_ms)
        return events

    @property
    def policy(self):
        from ..core import incidents

        return incidents.policy_from(self.rules.alerts)

    def _queue(self, source: str, events: list, anomalies: int, now_ms: int) -> None:
        from ..core import incidents

        if not events:
            return
        self.db.executemany(
            "INSERT INTO alert_log (at_ms, greenhouse_id, device_id, rule, metric, severity, "
            "event, anomalies, worst, opened_ms, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (e.at_ms, *e.incident, e.severity, e.kind, e.count, e.worst, e.opened_ms, source)
                for e in events
            ],
        )
        if self.alert_hook is not None:
            self.db.execute(
                "INSERT OR IGNORE INTO alert_outbox (source, created_ms, message, anomalies, "
                "updated_ms) VALUES (?, ?, ?, ?, ?)",
                (source, now_ms, json.dumps(incidents.message(events, source)), anomalies, now_ms),
            )

    def send_alerts(self, retry_after_s: float = 60.0) -> int:
        """Send queued incident messages, oldest first -> how many were delivered.

        A message that failed is tried again once `retry_after_s` has passed (so a Discord
        outage does not stall every delivery).
        """
        if self.alert_hook is None:
            return 0
        from ..core import alerts

        now_ms = int(self.clock() * 1000)
        rows = self.db.execute(
            "SELECT source, message, anomalies FROM alert_outbox WHERE status = 'pending' "
            "OR (status = 'undelivered' AND updated_ms <= ?) ORDER BY created_ms, source",
            (now_ms - int(retry_after_s * 1000),),
        ).fetchall()
        delivered = 0
        for source, message, anomalies in rows:
            outcome = self.alert_hook(source, json.loads(message), anomalies)
            done = outcome.status in (alerts.DELIVERED, alerts.ALREADY_DELIVERED)
            delivered += outcome.status == alerts.DELIVERED
            self.db.execute(
                "UPDATE alert_outbox SET status = ?, updated_ms = ? WHERE source = ?",
                ("delivered" if done else "undelivered", int(self.clock() * 1000), source),
            )
        return delivered

    def check(self, now_ms: int | None = None, retry_after_s: float = 60.0) -> list:
        """Silent devices (no reading for `silent_stale_after`): open their incidents and send
        what is queued. Runs without any reading arriving (`farmctl check`, `farmctl watch`)."""
        from ..core import incidents

        now_ms = int(self.clock() * 1000) if now_ms is None else now_ms
        with self._transaction():
            events = incidents.check_silent(self.state, self.policy, now_ms)
            self._queue(f"check-{now_ms}", events, 0, now_ms)
        self.send_alerts(retry_after_s)
        return events

    # -- device API keys (farmctl keys; checked by farmctl serve) -----------------------------

    def _key_store(self):
        from ..serve.keys import KeyStore

        return KeyStore(self.home)

    def list_keys(self) -> QueryResult:
        from .results import KEY_COLUMNS

        store = self._key_store()
        try:
            return QueryResult(list(KEY_COLUMNS), store.rows(), note=f"keys in {store.path}")
        finally:
            store.close()

    def create_key(self, site: str, label: str = "") -> NewKey:
        store = self._key_store()
        try:
            key_id, value, created = store.add(site, label)
        finally:
            store.close()
        return NewKey(site, key_id, datetime.fromtimestamp(created / 1000, UTC), value)

    def revoke_key(self, key_id: str, delete: bool = False) -> None:
        store = self._key_store()
        try:
            done = store.delete(key_id) if delete else store.disable(key_id)
        finally:
            store.close()
        if not done:
            raise UserError(
                f"no key {key_id} in {store.path}: `farmctl keys list` shows the key ids"
            )

    def alerts(self, since: str = "24h", state: str | None = None) -> QueryResult:
        """Open incidents and the recent history (opened / still firing / resolved events)."""
        from ..core import incidents

        try:
            kinds = incidents.history_kinds(state)
        except ValueError as exc:
            raise queries.QueryError(str(exc)) from None
        start = int((datetime.now(UTC) - queries.parse_duration(since)).timestamp() * 1000)
        open_ = incidents.open_incidents(self.state) if state in (None, "open") else []
        history = []
        if kinds:
            marks = ", ".join("?" * len(kinds))
            cursor = self.db.execute(
                "SELECT at_ms, greenhouse_id, device_id, rule, metric, severity, event, anomalies, "
                f"worst, opened_ms, source FROM alert_log WHERE at_ms >= ? AND event IN ({marks}) "
                "ORDER BY at_ms DESC, id DESC",
                (start, *kinds),
            )
            names = [d[0] for d in cursor.description]
            history = [dict(zip(names, row, strict=True)) for row in cursor]
        rows = incidents.alert_rows(open_, history, state, _utc)
        return QueryResult(incidents.ALERT_COLUMNS, rows)

    # -- compaction -------------------------------------------------------------------------

    def compact(self, everything: bool = False) -> int:
        """Deliver what is pending, then compact closed hour partitions -> how many were.

        Compacts the hours written since their last compaction, or with `everything` every
        closed hour partition of the lake holding more than one file.
        """
        report = self.deliver(force=True)
        if not everything:
            return report.compacted
        with self._delivery_lock(wait=True):
            return report.compacted + self._compact(self._closed(_hour_prefixes(self.logs)))

    def compact_closed(self) -> int:
        """Compact the closed hour partitions written since their last compaction."""
        with self._delivery_lock(wait=True):
            return self._compact(self._closed_dirty())

    def _closed(self, prefixes: Iterable[str]) -> list[str]:
        """The hour partitions that ended at least COMPACT_GRACE_S ago."""
        horizon_ms = (self.clock() - COMPACT_GRACE_S) * 1000 - lake.HOUR_MS
        return [p for p in prefixes if _hour_ms(p) <= horizon_ms]

    def _closed_dirty(self) -> list[str]:
        rows = self.db.execute("SELECT prefix FROM dirty_hours").fetchall()
        return self._closed(prefix for (prefix,) in rows)

    def _compact(self, prefixes: list[str]) -> int:
        """Replace the files of each hour partition by one file; call with the delivery lock.

        The compacted file is built in a staging folder outside the lake, recorded in the
        `compactions` journal, then the staging folder and the partition folder swap places in
        one atomic rename (RENAME_EXCHANGE): a reader lists either the old files or the new
        one, never both and never neither. A crash at any point is resolved by
        `_recover_compactions` (before the swap: the staged file is dropped; after: the old
        files are). Spikes are not touched; their source_key keeps naming the delivery file
        the reading arrived in (see README, "Compaction").
        """
        self._recover_ingests()
        self._recover_compactions()
        done = 0
        for prefix in prefixes:
            if self._compact_one(prefix):
                done += 1
            with self._transaction() as db:
                db.execute("DELETE FROM dirty_hours WHERE prefix = ?", (prefix,))
        return done

    def _compact_one(self, prefix: str) -> bool:
        import pyarrow.parquet as pq

        from ..core.validate import conform

        folder = self.logs.path(prefix)
        inputs = _visible_files(folder)
        if len(inputs) < 2:
            return False
        tables = [conform(pq.read_table(folder / name)) for name in inputs]
        table = pa.concat_tables(tables).sort_by("timestamp")
        digest = hashlib.sha256("\n".join(inputs).encode()).hexdigest()[:16]
        name = f"{COMPACTED_PREFIX}{digest}.parquet"
        staging = self.home / COMPACTION_DIR / digest
        shutil.rmtree(staging, ignore_errors=True)
        LocalBucket(staging).put(name, lake.parquet_bytes(table))
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO compactions (staging, prefix, name, inputs) "
                "VALUES (?, ?, ?, ?)",
                (str(staging), prefix, name, "\n".join(inputs)),
            )
        _exchange(staging, folder)
        _fsync_dir(folder.parent)
        self._finish_compaction(str(staging), prefix, name, inputs)
        return True

    def _finish_compaction(self, staging: str, prefix: str, name: str, inputs: list[str]):
        """After the swap: return files written meanwhile, drop the replaced ones."""
        folder, old = self.logs.path(prefix), Path(staging)
        if (folder / name).exists():
            for entry in _visible_files(old):
                if entry not in inputs:  # written into the partition after it was listed
                    os.replace(old / entry, folder / entry)
        shutil.rmtree(old, ignore_errors=True)
        with self._transaction() as db:
            db.execute("DELETE FROM compactions WHERE staging = ?", (staging,))

    def _recover_compactions(self) -> None:
        """Resolve compactions a crash interrupted, then drop staging folders never swapped."""
        rows = self.db.execute("SELECT staging, prefix, name, inputs FROM compactions").fetchall()
        for staging, prefix, name, inputs in rows:
            self._finish_compaction(staging, prefix, name, inputs.split("\n"))
        root = self.home / COMPACTION_DIR
        if root.exists():
            for leftover in root.iterdir():
                shutil.rmtree(leftover, ignore_errors=True)

    def pending(self) -> int:
        (count,) = self.db.execute(
            "SELECT count(*) FROM stream "
            "WHERE seq > (SELECT delivered_seq FROM delivery WHERE name = 'lake')"
        ).fetchone()
        return count

    # -- history ----------------------------------------------------------------------------

    def backfill(
        self,
        days: float,
        greenhouses: int = 3,
        devices: int = 2,
        interval_s: float = 60.0,
        anomaly_rate: float = 0.0,
        seed: int = 0,
        end: datetime | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[DeliveryReport, int]:
        """Generate `days` of history ending at `end` straight into the lake, a day at a time.

        Only readings the lake does not hold yet are written (the first copy of a reading
        wins, as in the stream), each hour into a new content-addressed file: a backfill never
        replaces or removes what another backfill or a delivery wrote, and re-running it adds
        nothing. That is also why files are not fsynced one by one (a crashed backfill is
        simply re-run). Returns the delivery report and the number of generated rows that
        failed validation. Backfilled files get spikes but no alerts: history is not news.
        """
        end = (end or datetime.now(UTC)).replace(second=0, microsecond=0)
        report, bad = DeliveryReport(), 0
        # Days whose files are written or being written and whose spikes are not stored yet:
        # at most two (a day is finished while the next one's files are being written).
        unfinished: list[tuple[Callable[[], DeliveryReport], int, int]] = []
        # The lock keeps deliveries out of the devices' state while the run holds it in memory.
        with (
            self._delivery_lock(wait=True),
            self._state_run("backfill"),
            _worker_pool(BACKFILL_WRITERS, "backfill-write") as pool,
        ):
            try:
                for good, rejected, done, total in generator.history(
                    int(end.timestamp() * 1000),
                    days,
                    interval_s,
                    greenhouses,
                    devices,
                    anomaly_rate,
                    seed,
                ):
                    bad += rejected
                    fresh = self._unstored(good)
                    unfinished.append((self._backfill_day(fresh, pool), done, total))
                    report.already_stored += good.num_rows - fresh.num_rows
                    if len(unfinished) == 2:  # the day before: written while this one was judged
                        _finish_day(report, progress, *unfinished[0])
                        unfinished.pop(0)
                while unfinished:
                    _finish_day(report, progress, *unfinished[0])
                    unfinished.pop(0)
            except BaseException:
                # Store the spikes of every file written before the error, also of a day whose
                # finishing it interrupted (storing them twice writes the same objects again).
                for finish, *_ in unfinished:
                    with contextlib.suppress(Exception):
                        finish()
                raise
        return report, bad

    # -- queries ----------------------------------------------------------------------------

    def query(
        self, sql: str, params: list | None = None, partitions_from: str | None = None
    ) -> QueryResult:
        """Run one read-only Athena-dialect SELECT over the local lake (transpiled to DuckDB).

        The SQL passes sqlguard first; then DuckDB sees only the lake files behind the two
        views: external access is switched off and the configuration locked before the
        statement runs, so even SQL that got past the parser cannot read or write other files.
        `partitions_from` (see core.queries.Query) limits the files to the partition folders
        at or after it, as Athena's partition projection would.
        """
        from ..sqlguard import to_dialect

        return self._execute(to_dialect(sql, "duckdb"), params, partitions_from)

    def run(self, query: queries.Query) -> QueryResult:
        """A query built by core.queries: its DuckDB text runs as it is (no sqlglot: it is made
        from checked parameters, see core.queries), behind the same DuckDB wall as `query`."""
        if query.dialect != "duckdb":
            return self.query(query.sql, query.params, query.partitions_from)
        return self._execute(query.sql, query.params, query.partitions_from)

    def _execute(
        self, statement: str, params: list | None, partitions_from: str | None
    ) -> QueryResult:
        """One DuckDB statement over the lake views, with the files it may read fixed first.

        A file listed for the views can vanish before DuckDB opens it: a compaction in another
        process swapped its partition for one file (the new listing then sees that file
        instead). The statement is then run again on a fresh listing, up to
        VANISHED_FILE_RETRIES times.
        """
        import duckdb

        by_name, vanished = False, 0
        while True:
            con, files = duckdb.connect(), []
            try:
                con.execute("SET TimeZone = 'UTC'")
                files = self._create_views(con, partitions_from, by_name)
                con.execute("SET allowed_paths = ?", [files])
                con.execute("SET enable_external_access = false")
                con.execute("SET lock_configuration = true")
                result = con.execute(statement, params or [])
                columns = [d[0] for d in result.description]
                return QueryResult(columns, result.fetchall())
            except duckdb.Error as exc:
                if not by_name and _missing_column(str(exc)):
                    by_name = True  # a log file older than a column: read every file by name
                    continue
                gone = any(not os.path.exists(f) for f in files)
                if gone and vanished < VANISHED_FILE_RETRIES:
                    vanished += 1
                    continue
                raise queries.QueryError(str(exc).splitlines()[0]) from None
            finally:
                con.close()

    def _create_views(self, con, partitions_from: str | None, by_name: bool = False) -> list[str]:
        """Create the `readings` and `spikes` views; returns the files they read.

        Files written before a column existed (`detected_at` in spikes, `synthetic` in both)
        lack it; Athena reads Parquet by name and gives NULL, and so do these views. Spikes
        are always read by name (`union_by_name`). Reading every file's footer up front costs
        1.13-1.38x on a week of hourly log files (bench/synthetic_views.py), so the
        readings view reads by name only when the first file lacks a column, or with
        `by_name` (the caller's retry after DuckDB found a later file that lacks one, which it
        reports as a schema mismatch instead of reading wrong values).
        """
        views = (
            (
                queries.READINGS_TABLE,
                self.logs,
                lake.LOG_ROOT,
                schema.READING_COLUMNS,
                READING_PARTITIONS,
            ),
            (
                queries.SPIKES_TABLE,
                self.spike_store,
                lake.SPIKE_ROOT,
                schema.SPIKE_COLUMNS,
                SPIKE_PARTITIONS,
            ),
        )
        every_file: list[str] = []
        for view, bucket, root, columns, partitions in views:
            files = _partition_files(bucket.path(root), partitions, partitions_from or "")
            every_file += files
            typed = ", ".join(
                f'CAST(NULL AS {_DUCK_TYPES[c.glue]}) AS "{c.name}"' for c in columns
            ) + "".join(f", CAST(NULL AS VARCHAR) AS {p}" for p in partitions)
            if files:
                source = "[" + ", ".join(f"'{_sql_str(f)}'" for f in files) + "]"
                hive_types = ", ".join(f"'{p}': 'VARCHAR'" for p in partitions)
                union = (
                    by_name
                    or view == queries.SPIKES_TABLE
                    or not _has_columns(con, files[0], [c.name for c in columns])
                )
                older = f", union_by_name = {str(union).lower()}) "
                older += f"UNION ALL BY NAME SELECT {typed} WHERE false"
                con.execute(
                    f"CREATE VIEW {view} AS SELECT * FROM read_parquet({source}, "
                    f"hive_partitioning = true, hive_types = {{{hive_types}}}{older}"
                )
            else:
                con.execute(f"CREATE VIEW {view} AS SELECT {typed} WHERE false")
        return every_file

    def trend(
        self,
        metric: str,
        days: float,
        every: str = "1h",
        greenhouse: str | None = None,
        zone: str | None = None,
        synthetic: str = "exclude",
    ) -> QueryResult:
        valid = self.rules.impossible.get(metric)
        query = queries.trend(
            metric,
            days,
            every,
            greenhouse,
            valid_range=valid,
            zone=zone,
            dialect="duckdb",
            synthetic=synthetic,
        )
        result = self.run(query)
        return QueryResult(*queries.finish_trend(result.columns, result.rows, query), result.note)

    def spikes(
        self,
        since: str = "24h",
        severity: str | None = None,
        greenhouse: str | None = None,
        limit: int = 200,
        detected: bool = False,
        synthetic: str = "include",
    ) -> QueryResult:
        return self.run(
            queries.spikes(
                since,
                severity,
                greenhouse,
                limit,
                detected=detected,
                dialect="duckdb",
                synthetic=synthetic,
            )
        )

    def latest(self, synthetic: str = "include") -> QueryResult:
        return self.run(
            queries.latest_per_device(timedelta(days=1), dialect="duckdb", synthetic=synthetic)
        )

    # -- status -----------------------------------------------------------------------------

    def status(self) -> dict:
        delivered, pending_from = self.db.execute(
            "SELECT delivered_seq, pending_from FROM delivery WHERE name = 'lake'"
        ).fetchone()
        streamed, newest_ms, oldest_pending_ms = self.db.execute(
            "SELECT count(*), max(ts_ms), min(CASE WHEN seq > ? THEN received_ms END) FROM stream",
            (delivered,),
        ).fetchone()
        (rejected,) = self.db.execute("SELECT count(*) FROM rejected").fetchone()
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        lake_rows = self._execute(  # our own fixed SQL: no parse needed (see run)
            f'SELECT count(*), max("timestamp") FROM {queries.READINGS_TABLE}', [], None
        ).rows[0]
        spikes_today, synthetic_today = self.run(queries.spike_count(today, dialect="duckdb")).rows[
            0
        ]
        lag = 0.0 if oldest_pending_ms is None else time.time() - oldest_pending_ms / 1000
        return {
            "target": "local",
            "home": str(self.home.resolve()),
            "stream_readings": streamed,
            "delivered_up_to_seq": delivered,
            "pending_delivery": self.pending(),
            "interrupted_delivery": pending_from is not None,  # redone by the next flush
            "delivery_lag_s": round(lag, 1),
            "newest_streamed_reading": _utc(newest_ms) if newest_ms else None,
            "lake_readings": lake_rows[0],
            "newest_lake_reading": lake_rows[1],
            "spikes_today_utc": spikes_today,
            "synthetic_spikes_today": synthetic_today,  # of those (simulate, demo, backfill)
            "rejected_readings": rejected,
            "open_incidents": len(self._open_incidents()),
        }

    def _open_incidents(self) -> list[dict]:
        from ..core import incidents

        return incidents.open_incidents(self.state)


def _finish_day(report: DeliveryReport, progress, written, done: int, total: int) -> None:
    report.add(written())
    if progress:
        progress(done, total)


@contextlib.contextmanager
def _worker_pool(workers: int, name: str):
    """A thread pool that, when the block fails, drops queued jobs and waits for running ones:
    the error surfaces at once and no worker is still writing after it."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(workers, thread_name_prefix=name)
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


class _Job:
    """A call submitted to a thread pool that the thread waiting for it may run itself."""

    def __init__(self, pool, call: Callable, *args):
        self.call, self.args = call, args
        self.future = pool.submit(call, *args)

    def take(self) -> None:
        """Run the call on this thread if no worker has started it."""
        if not self.future.cancelled() and self.future.cancel():
            from concurrent.futures import Future

            self.future = Future()
            try:
                self.future.set_result(self.call(*self.args))
            except Exception as exc:
                self.future.set_exception(exc)

    def result(self):
        return self.future.result()


@dataclass
class _StateRun:
    """What LocalTarget._state_run holds in memory for one run of files."""

    source: str
    jumps: object  # core.jumps.Session
    incidents: object  # core.incidents.Session
    statements: list[str] = field(default_factory=list)  # run in the saving transaction


def _newest_hour_apart(table: pa.Table) -> tuple[pa.Table, pa.Table | None]:
    """(rows before the table's newest hour, rows of that hour), in input order.

    Everything stays together when the newest hour holds more than MAX_HELD_ROWS (memory).
    """
    if table.num_rows == 0:
        return table, None
    hours = pc.divide(pc.cast(table["timestamp"], pa.int64()), lake.HOUR_MS)
    newest = pc.equal(hours, pc.max(hours))
    held = pc.sum(newest).as_py()
    if held > MAX_HELD_ROWS:
        return table, None
    start = table.num_rows - held
    if pc.all(newest.slice(start)).as_py():  # input in time order: the newest hour is its tail
        return table.slice(0, start), table.slice(start)
    return table.filter(pc.invert(newest)), table.filter(newest)


def _keys_repeat(table: pa.Table) -> bool:
    """Whether a reading key (greenhouse, device, timestamp) occurs twice in `table`.

    Counts distinct integer keys (id codes x time span) instead of grouping the strings: the
    answer is almost always no, and this is ~20x cheaper than the grouping that finds which.
    """
    if table.num_rows < 2:
        return False
    codes, devices = device_codes(table)
    stamps = pc.cast(table["timestamp"], pa.int64())
    if codes.null_count or stamps.null_count:
        return True  # let the grouping decide
    low, high = (value.as_py() for value in pc.min_max(stamps).values())
    span = high - low + 1
    if len(devices) * span >= 1 << 62:
        return True  # no integer key fits
    key = pc.add(pc.multiply(pc.cast(codes, pa.int64()), span), pc.subtract(stamps, low))
    return pc.count_distinct(key).as_py() < table.num_rows


def _differing(resent: pa.Table, stored: pa.Table) -> list[Rejected]:
    """Rows of `resent` whose key is in `stored` with other values, as rejections saying how."""
    keys = list(lake.READING_KEY)
    values = [*METRICS, "error_code"]
    both = resent.join(
        stored.select(keys + values), keys, join_type="inner", right_suffix="__stored"
    )
    if both.num_rows == 0:
        return []
    same = None
    for name in values:
        a, b = both[name], both[f"{name}__stored"]
        equal = pc.or_(pc.fill_null(pc.equal(a, b), False), pc.and_(pc.is_null(a), pc.is_null(b)))
        same = equal if same is None else pc.and_(same, equal)
    changed = both.filter(pc.invert(same))
    records = generator.to_json_records(changed.select(list(COLUMN_NAMES)))
    old = zip(*(changed[f"{name}__stored"].to_pylist() for name in values), strict=True)
    return [
        Rejected(
            -1,
            resent_reason(tuple(was), tuple(record[v] for v in values)),
            json.dumps(record, ensure_ascii=False),
        )
        for was, record in zip(old, records, strict=True)
    ]


def _reading(row: tuple) -> dict:
    """A stream row as the JSON reading it came from (timestamp as ISO, ms)."""
    reading = dict(zip(COLUMN_NAMES, row, strict=True))
    reading["synthetic"] = bool(reading["synthetic"])
    reading["timestamp"] = _utc(reading["timestamp"]).isoformat(timespec="milliseconds") + "Z"
    return reading


def _batch_name(table: pa.Table) -> str:
    """A name for a batch without one (backfill): the same readings give the same name."""
    if table.num_rows == 0:
        return "backfill-empty"
    stamps = pc.cast(table["timestamp"], pa.int64())
    low, high = pc.min_max(stamps).values()
    return f"backfill-{low.as_py()}-{high.as_py()}-{table.num_rows}"


def _hour_prefixes(bucket: LocalBucket) -> list[str]:
    """Every hour partition folder of the lake, as `logs/year=/month=/day=/hour=HH`."""
    level = [bucket.path(lake.LOG_ROOT)]
    for key in READING_PARTITIONS:
        deeper = []
        for path in level:
            with contextlib.suppress(FileNotFoundError), os.scandir(path) as entries:
                deeper += [
                    Path(e.path) for e in entries if e.is_dir() and e.name.startswith(f"{key}=")
                ]
        level = deeper
    return sorted(str(p.relative_to(bucket.root)) for p in level)


def _hour_ms(prefix: str) -> int:
    """`logs/year=2026/month=11/day=28/hour=05` -> epoch ms of 2026-11-28T05:00Z."""
    parts = dict(part.split("=", 1) for part in prefix.strip("/").split("/") if "=" in part)
    moment = datetime(
        int(parts["year"]), int(parts["month"]), int(parts["day"]), int(parts["hour"]), tzinfo=UTC
    )
    return int(moment.timestamp() * 1000)


def _visible_files(folder: Path) -> list[str]:
    with contextlib.suppress(FileNotFoundError), os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.name.endswith(".parquet") and e.name[0] != ".")
    return []


def _exchange(a: Path, b: Path) -> None:
    """Swap two folders atomically (Linux renameat2 RENAME_EXCHANGE)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        raise OSError("compaction needs renameat2 (Linux, glibc 2.28+)")
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"cannot swap {a} and {b}: {os.strerror(errno)}")


def _new_temp_file(folder: str) -> tuple[int, str]:
    """(descriptor, path) of a new, empty, private `.tmp-` file in `folder`, made if missing.

    Named by process id and a counter; a name left by a crashed process with the same id is
    skipped (O_EXCL), so two writers never share a temp file.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    for _ in range(1000):
        tmp = os.path.join(folder, f"{TEMP_PREFIX}{os.getpid()}-{next(_TEMP_NUMBERS)}")
        try:
            return os.open(tmp, flags, 0o600), tmp
        except FileNotFoundError:  # a new partition (found this way: one call less per put)
            os.makedirs(folder, exist_ok=True)
            return os.open(tmp, flags, 0o600), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temp file name in {folder}")


def _fsync_dir(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _retention_s() -> float:
    value = os.environ.get(RETENTION_ENV)
    if not value:
        return DEFAULT_RETENTION_S
    try:
        hours = float(value)
    except ValueError:
        hours = -1.0
    if not hours >= 0:
        from ..errors import UserError

        raise UserError(f"{RETENTION_ENV}={value!r}: give the stream retention in hours, e.g. 24")
    return hours * 3600


def _partition_files(base: Path, keys: tuple[str, ...], floor: str) -> list[str]:
    """Parquet files under `base` whose partition key (e.g. 2026112115) is >= `floor`.

    Walks one partition level at a time and never enters a folder whose key prefix already
    sorts before the floor, so a 7-day window on a year-long lake lists about 170 folders.
    """
    level = [(str(base), "")]
    for key in keys:
        deeper = []
        for path, prefix in level:
            with contextlib.suppress(FileNotFoundError), os.scandir(path) as entries:
                for entry in entries:
                    if entry.is_dir() and entry.name.startswith(f"{key}="):
                        value = prefix + entry.name[len(key) + 1 :]
                        if value >= floor[: len(value)]:
                            deeper.append((entry.path, value))
        level = deeper
    files = []
    for path, _ in level:
        with os.scandir(path) as entries:
            files += [e.path for e in entries if e.name.endswith(".parquet") and e.name[0] != "."]
    return sorted(files)


# DuckDB's name for each Glue (core.schema) column type, for the typed empty views.
_DUCK_TYPES = {
    "string": "VARCHAR",
    "timestamp": "TIMESTAMP",
    "double": "DOUBLE",
    "int": "INTEGER",
    "boolean": "BOOLEAN",
}


def _missing_column(message: str) -> bool:
    """DuckDB's complaint that a later file lacks a column the first file has."""
    return "schema mismatch" in message or "could not be found in file" in message


def _has_columns(con, path: str, names: list[str]) -> bool:
    """Whether a Parquet file holds every one of `names` (DuckDB reads its footer only)."""
    import duckdb

    try:
        found = {
            row[0] for row in con.execute("SELECT name FROM parquet_schema(?)", [path]).fetchall()
        }
    except duckdb.Error:
        return False  # unreadable: let the by-name read report it
    return set(names) <= found


def _sql_str(text: str) -> str:
    return text.replace("'", "''")


def _utc(ms: int) -> datetime:
    """Epoch milliseconds as the naive UTC datetime the lake's timestamps are."""
    return datetime.fromtimestamp(ms / 1000, UTC).replace(tzinfo=None)
