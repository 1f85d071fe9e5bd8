"""The background half of `farmctl serve`: the stream writer, the delivery loop, the live board.

Each runs in its own thread with its own LocalTarget (SQLite connections stay in the thread that
opened them). The only call into the local target's write path is `store()`, so a change there
(issue 12 makes ingest columnar) touches one function here.

writer    group commit: every request waiting when the writer wakes goes into ONE validation
          call and ONE stream transaction (synchronous=FULL, so a 200 survives a power cut);
          each request then gets its own answer.
delivery  LocalTarget.deliver() every `tick_s` (it flushes by size or age itself), which also
          runs the rules, stores spikes and calls the Discord hook; one forced flush at shutdown.
board     follows the stream like `farmctl watch` (the same LatestBoard), so a reading is on the
          dashboard's latest panel before it is delivered to the lake.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

log = logging.getLogger("smartfarm.serve")

MAX_GROUP_READINGS = 20_000  # readings per group commit
MAX_QUEUED_READINGS = 200_000  # beyond this the stream is "busy": 429 + Retry-After
GATHER_S = 0.002  # how long a commit may wait for requests already on their way


def store(target, items: list):
    """The one call into LocalTarget's write path: core validation, rejected store, append."""
    return target.ingest(items, source="serve", deliver=False)


class StreamBusy(Exception):
    """Too many readings wait for the stream already."""


class StreamClosed(Exception):
    """The server is shutting down."""


@dataclass
class StoreOutcome:
    accepted: int  # new in the stream (duplicates of stored readings are not counted)
    rejected: list  # core.validate.Rejected, indexes relative to the request


@dataclass
class _Job:
    items: list
    future: object  # asyncio.Future of the submitting loop, or concurrent.futures.Future
    loop: object = None


def _settle(results: list) -> None:
    """Set each job's outcome (in the job's event loop: one wake-up per group commit)."""
    for job, outcome, error in results:
        if job.future.done():
            continue  # the client went away
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(outcome)


class Writer:
    """Appends readings to the stream in group commits; `submit` returns a Future."""

    def __init__(
        self,
        open_target: Callable[[], object],
        on_stored: Callable[[int], None],
        fsync: bool = True,
    ):
        self._open_target = open_target
        self.fsync = fsync
        self._on_stored = on_stored
        self._jobs: deque[_Job] = deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._closing = False
        self._last_group = 0
        self._thread = threading.Thread(target=self._run, name="serve-writer", daemon=True)
        self.last_error: str | None = None
        self.last_ok = time.time()
        self.commits = 0

    def start(self) -> None:
        self._thread.start()

    @property
    def queued(self) -> int:
        return self._queued

    def submit(self, items: list, loop=None):
        """Queue readings; an asyncio future of `loop` (or a concurrent Future) gets the outcome."""
        job = _Job(items, loop.create_future() if loop else Future(), loop)
        with self._cond:
            if self._closing:
                raise StreamClosed()
            if self._queued + len(items) > MAX_QUEUED_READINGS:
                raise StreamBusy()
            self._jobs.append(job)
            self._queued += len(items)
            self._cond.notify()
        return job.future

    def close(self, timeout: float = 300.0) -> None:
        """Stop taking jobs, finish every job already taken, then stop."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)

    def _take(self) -> list[_Job] | None:
        with self._cond:
            while not self._jobs and not self._closing:
                self._cond.wait()
            if not self._jobs:
                return None
            if self._last_group > 1 and not self._closing:
                # Requests are arriving concurrently: give the ones on their way a moment to
                # join this commit (fewer, larger commits; each request waits at most GATHER_S).
                deadline = time.monotonic() + GATHER_S
                while len(self._jobs) < self._last_group and not self._closing:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            group, size = [], 0
            while self._jobs and (
                not group or size + len(self._jobs[0].items) <= MAX_GROUP_READINGS
            ):
                job = self._jobs.popleft()
                group.append(job)
                size += len(job.items)
            self._last_group = len(group)
            return group

    def _run(self) -> None:
        target = self._open_target()
        # fsync: every 200 survives a power cut (the WAL is synced on each commit); without,
        # the local target's own setting (WAL + NORMAL) holds: a 200 survives a process crash.
        if self.fsync:
            target.db.execute("PRAGMA synchronous=FULL")
        # WAL checkpoints (copying the log into the database file, with its own fsyncs) are
        # left to the delivery loop's connection, so no device waits for one.
        target.db.execute("PRAGMA wal_autocheckpoint=0")
        try:
            while (group := self._take()) is not None:
                self._write(target, group)
        finally:
            target.close()

    def _write(self, target, group: list[_Job]) -> None:
        items = [item for job in group for item in job.items]
        results: list = []
        try:
            result = store(target, items)
        except Exception as exc:  # disk full, database locked too long, ...
            self.last_error = f"{type(exc).__name__}: {str(exc)[:200]}"
            log.error("stream write failed: %s", self.last_error)
            results = [(job, None, exc) for job in group]
        else:
            self.last_error = None
            self.last_ok = time.time()
            self.commits += 1
            by_job: list[list] = [[] for _ in group]
            starts, offset = [], 0
            for job in group:
                starts.append(offset)
                offset += len(job.items)
            position = 0
            for rejected in result.rejected:  # sorted by index
                while position + 1 < len(group) and rejected.index >= starts[position + 1]:
                    position += 1
                by_job[position].append(
                    type(rejected)(rejected.index - starts[position], rejected.reason, rejected.raw)
                )
            results = [
                (job, StoreOutcome(len(job.items) - len(refused), refused), None)
                for job, refused in zip(group, by_job, strict=True)
            ]
            self._on_stored(result.accepted)
        finally:
            with self._cond:
                self._queued -= len(items)
            by_loop: dict = {}
            for entry in results:
                by_loop.setdefault(entry[0].loop, []).append(entry)
            for loop, entries in by_loop.items():
                if loop is None:
                    _settle(entries)
                else:
                    with contextlib.suppress(RuntimeError):  # the loop has closed
                        loop.call_soon_threadsafe(_settle, entries)


@dataclass(frozen=True)
class DeliveryOptions:
    """What the delivery process needs to open its own LocalTarget (picklable)."""

    home: str
    rules_path: str | None
    flush_rows: int
    flush_age_s: float
    tick_s: float = 0.5
    alerts: bool = True


def _delivery_process(options: DeliveryOptions, stop, conn) -> None:
    """The delivery loop, in its own process: LocalTarget.deliver() every tick, then a forced
    flush. Ctrl-C and SIGTERM reach the whole process group; the server decides when this stops
    (after its writer has drained), or this stops by itself once the server is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from ..core.rules import load_rules
    from ..targets.local import LocalTarget

    parent = os.getppid()
    target = LocalTarget(
        options.home,
        load_rules(options.rules_path),
        flush_rows=options.flush_rows,
        flush_age_s=options.flush_age_s,
    )
    if options.alerts:
        from ..alerting import local_alert_hook

        target.alert_hook = local_alert_hook(target)
    status = {"delivered": 0, "spikes": 0, "pending": 0, "last_error": None, "final": None}

    def once(force: bool) -> None:
        try:
            report = target.deliver(force=force)
            status["pending"] = target.pending()
        except Exception as exc:
            status["last_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
            log.error(
                "delivery failed: %s (retried in %.1f s)", status["last_error"], options.tick_s
            )
        else:
            status.update(last_error=None, last_run=time.time())
            status["delivered"] += report.readings
            status["spikes"] += report.spikes
            if force:
                status["final"] = report.readings

    def tell() -> bool:
        try:
            conn.send(dict(status))
            return True
        except OSError:  # the server is gone
            return False

    try:
        while not stop.wait(options.tick_s):
            if os.getppid() != parent:
                break  # the server is gone: flush what it accepted and stop
            once(force=False)
            if not tell():
                break
        once(force=True)
        tell()
    finally:
        target.close()
        conn.close()


class DeliveryLoop:
    """Runs the delivery loop in a child process and mirrors its status here.

    Delivery (reading the stream back, Parquet encoding, rules, spike files, alerts) costs about
    as much CPU per reading as taking it in; in its own process it does not compete with the
    HTTP side for the GIL. A child that dies is started again.
    """

    def __init__(self, options: DeliveryOptions):
        import multiprocessing

        self.options = options
        self.tick_s = options.tick_s
        self._ctx = multiprocessing.get_context("spawn")  # never fork a threaded process
        self._stop = self._ctx.Event()
        self._process = None
        self._conn = None
        self._monitor = threading.Thread(target=self._watch, name="serve-delivery", daemon=True)
        self.last_run = time.time()
        self.last_error: str | None = None
        self.delivered = 0
        self.spikes = 0
        self.pending = 0
        self.final_readings: int | None = None
        self.restarts = 0

    def _spawn(self) -> None:
        receive, send = self._ctx.Pipe(duplex=False)
        self._process = self._ctx.Process(
            target=_delivery_process,
            args=(self.options, self._stop, send),
            name="farmctl-serve-delivery",
        )
        self._process.start()
        send.close()
        self._conn = receive
        self._base = (self.delivered, self.spikes)

    def start(self) -> None:
        self._spawn()
        self._monitor.start()

    def stop(self, timeout: float = 300.0) -> None:
        self._stop.set()
        self._monitor.join(timeout)

    def _watch(self) -> None:
        while True:
            try:
                if self._conn.poll(0.2):
                    self._update(self._conn.recv())
                    continue
            except (EOFError, OSError):
                self._process.join(0.2)  # it has closed its end: it is exiting
            if not self._process.is_alive():
                while self._conn.poll():  # what it said last
                    try:
                        self._update(self._conn.recv())
                    except (EOFError, OSError):
                        break
                self._process.join()
                if self._stop.is_set():
                    return
                self.restarts += 1
                self.last_error = f"delivery process exited ({self._process.exitcode}); restarted"
                log.error("%s", self.last_error)
                time.sleep(min(5.0, 0.5 * self.restarts))
                self._spawn()

    def _update(self, status: dict) -> None:
        self.delivered = self._base[0] + status["delivered"]
        self.spikes = self._base[1] + status["spikes"]
        self.pending = status["pending"]
        self.last_error = status["last_error"]
        self.last_run = status.get("last_run", self.last_run)
        if status["final"] is not None:
            self.final_readings = status["final"]


class LiveBoard:
    """The newest reading per device from the stream, as `farmctl watch` keeps it.

    Each poll reads at most the newest `tail` stream rows (LocalTarget.read_stream) into the
    same LatestBoard `farmctl watch` uses. Under a flood of readings the rows in between are
    skipped (the dashboard's latest panel also has the lake query behind it), so the view costs
    the writer little however fast readings arrive.
    """

    def __init__(self, open_target: Callable[[], object], poll_s: float = 0.2, tail: int = 2000):
        self._open_target = open_target
        self.poll_s = poll_s
        self.tail = tail
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="serve-board", daemon=True)
        self._board = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def rows(self) -> list[dict]:
        with self._lock:
            if self._board is None:
                return []
            return [dict(row) for row in self._board.latest.values()]

    def _run(self) -> None:
        from ..watch import LatestBoard

        target = self._open_target()
        board = LatestBoard(target.rules)
        with self._lock:
            self._board = board
        after = 0
        try:
            while not self._stop.is_set():
                (last,) = target.db.execute("SELECT coalesce(max(seq), 0) FROM stream").fetchone()
                if last > after:
                    batch, after = target.read_stream(max(after, last - self.tail), self.tail)
                    with self._lock:
                        board.update(batch)
                self._stop.wait(self.poll_s)
        except Exception as exc:  # the board is a view; the pipeline goes on without it
            log.error("live board stopped: %s: %s", type(exc).__name__, str(exc)[:200])
        finally:
            target.close()


class RateLimiter:
    """Token bucket per API key: `rate` requests/s steady, `burst` at once (a usage plan)."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """0 when the request may go; else seconds until it would."""
        now = self._clock()
        with self._lock:
            tokens, then = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - then) * self.rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate
