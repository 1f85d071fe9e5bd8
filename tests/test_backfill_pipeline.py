"""Backfill writes a day's hour files on worker threads while the next day is generated and
judged. A failure on either side surfaces as the error (no hang, no worker left writing),
leaves no partial or temporary file, keeps the spikes of every reading written, and a re-run
completes the lake exactly as one clean run would have."""

import errno
import os
import threading
from datetime import UTC, datetime

import pyarrow.parquet as pq
import pytest

from smartfarm_cli.core import lake
from smartfarm_cli.targets import local
from smartfarm_cli.targets.local import LocalTarget

END = datetime(2026, 11, 28, tzinfo=UTC)
# 3 UTC days x 144 steps x 3 greenhouses: 1,296 readings in 72 hour files, ~40 spikes.
KW = dict(greenhouses=3, devices=1, interval_s=600, anomaly_rate=0.02, seed=3, end=END)
READINGS = 3 * 144 * 3


def lake_contents(target: LocalTarget) -> tuple[list, list]:
    """(every reading, every spike) in the home, sorted, read file by file."""
    readings, spikes = [], []
    for bucket, rows, columns in (
        (target.logs, readings, ["greenhouse_id", "device_id", "timestamp", "temperature"]),
        (target.spike_store, spikes, ["greenhouse_id", "device_id", "timestamp", "rule"]),
    ):
        for key in bucket.keys(""):
            table = pq.read_table(bucket.path(key), columns=columns)
            rows += [tuple(r.values()) for r in table.to_pylist()]
    return sorted(readings), sorted(spikes)


def leftovers(target: LocalTarget) -> list[str]:
    """Temporary files (a put that never finished) anywhere in the home."""
    return [str(p) for p in target.home.rglob(".tmp-*")]


def writers_alive() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("backfill-write")]


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """What one uninterrupted backfill stores."""
    target = LocalTarget(tmp_path_factory.mktemp("clean") / "home")
    report, bad = target.backfill(3, **KW)
    assert (report.readings, bad, len(report.files)) == (READINGS, 0, 72)
    contents = lake_contents(target)
    assert len(contents[0]) == READINGS and len(contents[1]) == report.spikes > 10
    target.close()
    return contents


def test_progress_reports_each_day_once_its_files_are_on_disk(target):
    seen = []

    def progress(done, total):
        files = len(target.logs.keys("logs"))
        seen.append((done, total, files))

    report, _ = target.backfill(3, progress=progress, **KW)
    assert [(done, total) for done, total, _ in seen] == [(144, 432), (288, 432), (432, 432)]
    # when a day is reported, its 24 hour files (and maybe some of the next day's) exist
    assert [files >= 24 * day for day, (*_, files) in enumerate(seen, 1)] == [True] * 3
    assert len(report.files) == len(set(report.files)) == 72
    assert report.spike_files == sorted(target.spike_store.keys("spikes"))
    assert writers_alive() == []


def test_a_failed_file_write_surfaces_and_a_rerun_completes_the_lake(target, monkeypatch, clean):
    real = os.replace
    renames = []

    def replace(src, dst):  # the 30th hour file (day 2) meets a full disk at its rename
        renames.append(dst)
        if len(renames) == 30:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="No space left on device"):
        target.backfill(3, **KW)
    monkeypatch.setattr(os, "replace", real)
    assert writers_alive() == [] and leftovers(target) == []
    readings, spikes = lake_contents(target)  # every visible file is whole and readable
    assert 24 < len(readings) < READINGS
    # the spikes of every reading written are stored, each naming its file
    for key in target.spike_store.keys("spikes"):
        for source in set(pq.read_table(target.spike_store.path(key))["source_key"].to_pylist()):
            assert target.logs.path(source).exists()
    stored = {r[:3] for r in readings}
    assert {s[:3] for s in spikes} <= stored
    assert set(spikes) == {s for s in clean[1] if s[:3] in stored}

    again, _ = target.backfill(3, **KW)
    assert again.already_stored == len(readings) and again.readings == READINGS - len(readings)
    assert lake_contents(target) == clean
    assert leftovers(target) == []


def test_a_failure_while_judging_the_next_day_keeps_the_day_written(target, monkeypatch, clean):
    real, calls = local.detect, []

    def detect(*args, **kwargs):  # the rules fail on day 3, while day 2's files are written
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("rules failed")
        return real(*args, **kwargs)

    monkeypatch.setattr(local, "detect", detect)
    progress = []
    with pytest.raises(RuntimeError, match="rules failed"):
        target.backfill(3, progress=lambda done, total: progress.append(done), **KW)
    monkeypatch.setattr(local, "detect", real)
    assert progress == [144]  # day 2 was not reported done ...
    assert writers_alive() == [] and leftovers(target) == []
    readings, spikes = lake_contents(target)
    assert len(readings) == 2 * 144 * 3  # ... but its files were finished, with their spikes
    assert set(spikes) == {s for s in clean[1] if s[2] < datetime(2026, 11, 27)}

    again, _ = target.backfill(3, **KW)
    assert (again.already_stored, again.readings) == (2 * 144 * 3, 144 * 3)
    assert lake_contents(target) == clean


def test_an_interrupt_stops_the_writers_and_a_rerun_completes_the_lake(target, clean):
    def progress(done, total):
        if done == 144:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        target.backfill(3, progress=progress, **KW)
    assert writers_alive() == [] and leftovers(target) == []
    readings, _ = lake_contents(target)
    assert 144 * 3 <= len(readings) <= 2 * 144 * 3
    target.backfill(3, **KW)
    assert lake_contents(target) == clean


def test_an_interrupt_while_the_main_thread_writes_keeps_every_written_readings_spikes(
    target, monkeypatch, clean
):
    """Ctrl-C lands inside a file the main thread writes while finishing day 1: the files
    written by then still get their spikes, and a re-run completes the lake."""
    real, calls = LocalTarget._put_backfilled, []

    def put(self, hour_ms, part):
        if threading.current_thread() is threading.main_thread():
            calls.append(hour_ms)
            if len(calls) == 3:
                raise KeyboardInterrupt
        return real(self, hour_ms, part)

    monkeypatch.setattr(LocalTarget, "_put_backfilled", put)
    monkeypatch.setattr(local, "BACKFILL_WRITERS", 1)
    with pytest.raises(KeyboardInterrupt):
        target.backfill(3, **KW)
    monkeypatch.setattr(LocalTarget, "_put_backfilled", real)
    assert len(calls) >= 3 and writers_alive() == [] and leftovers(target) == []
    readings, spikes = lake_contents(target)
    stored = {r[:3] for r in readings}
    assert len(stored) > 0 and {s[:3] for s in spikes} <= stored
    assert set(spikes) == {s for s in clean[1] if s[:3] in stored}
    target.backfill(3, **KW)
    assert lake_contents(target) == clean


def test_backfill_keys_stay_content_addressed(target):
    report, _ = target.backfill(1, **KW)
    for key in report.files:
        data = target.logs.path(key).read_bytes()
        hour_ms = local._hour_ms(key.rsplit("/", 1)[0])
        assert lake.backfill_key(hour_ms, data) == key


def test_the_waiting_thread_writes_the_files_no_worker_has_started(target, monkeypatch):
    """With the one writer stuck on its first file, the day still completes: the thread that
    waits for the day's files writes the other 23 itself, then the writer is let go."""
    release, ran_on = threading.Event(), []
    real = LocalTarget._put_backfilled

    def put(self, hour_ms, part):
        me = threading.current_thread()
        ran_on.append(me.name)
        if me is not threading.main_thread():
            assert release.wait(10)  # stuck until the main thread has written the rest
        elif ran_on.count(me.name) == 23:
            release.set()
        return real(self, hour_ms, part)

    monkeypatch.setattr(LocalTarget, "_put_backfilled", put)
    report, _ = target.backfill(1, **KW)
    assert report.readings == 144 * 3 and len(set(report.files)) == 24
    main = threading.main_thread().name
    assert sorted(ran_on) == sorted([main] * 23 + [ran_on[0]]) and ran_on[0] != main
    assert release.is_set() and writers_alive() == []


def test_a_job_the_pool_cancelled_is_not_run_by_the_waiter():
    from concurrent.futures import CancelledError, ThreadPoolExecutor

    pool, gate, ran = ThreadPoolExecutor(1), threading.Event(), []
    first = local._Job(pool, gate.wait, 10)
    queued = local._Job(pool, ran.append, "queued")
    pool.shutdown(wait=False, cancel_futures=True)
    queued.take()
    gate.set()
    assert first.result() is True and ran == []
    with pytest.raises(CancelledError):
        queued.result()
