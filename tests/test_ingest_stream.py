"""Columnar chunked ingest (core.ingest + LocalTarget.ingest_stream): same answers as the
per-item path, true line numbers, bounded memory, files and stdin alike."""

import io
import json
import os
import random
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from smartfarm_cli.core import ingest
from smartfarm_cli.core.validate import parse_json_lines, validate
from smartfarm_cli.targets.local import LocalTarget

NOW_MS = int(datetime(2026, 11, 28, 12, tzinfo=UTC).timestamp() * 1000)
START = datetime(2026, 11, 28, 6, tzinfo=UTC)


def reading(i: int, **overrides) -> dict:
    moment = START + timedelta(seconds=i)
    base = {
        "greenhouse_id": f"gh-{i % 5}",
        "device_id": f"d{i % 3}",
        "timestamp": moment.isoformat().replace("+00:00", "Z"),
        "temperature": 20 + (i % 7) * 0.5,
        "humidity": 60,
        "co2": 800.0,
        "error_code": 0,
    }
    base.update(overrides)
    return base


def mixed_lines(n: int, seed: int = 1) -> list[str]:
    """Good readings with every kind of bad or odd line the two paths must agree on."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        r = reading(i)
        k = rng.random()
        if k < 0.02:
            r["temperature"] = "400"  # seed-style numeric string: accepted
        elif k < 0.04:
            r["timestamp"] = 1795850000 + i  # epoch seconds
        elif k < 0.05:
            r["timestamp"] = "2026-11-28T01:00:00"  # no offset: rejected
        elif k < 0.06:
            del r["co2"]  # missing field (not the same as null)
        elif k < 0.07:
            r["error_code"], r["co2"] = 3, None  # null allowed with an error code
        elif k < 0.08:
            r["device_id"] = "bad id!"
        elif k < 0.09:
            lines.append("")
            lines.append("   ")
        elif k < 0.10:
            lines.append("{not json")
            continue
        elif k < 0.11:
            r["humidity"] = True
        elif k < 0.12:
            r["timestamp"] = 1795850000.5 + i  # fractional epoch seconds
        elif k < 0.13:
            r["co2"] = float("nan")  # Python's json writes NaN; must be rejected
        elif k < 0.14:
            r["timestamp"] = "2026-11-28T01:00:00.25+09:00"
        elif k < 0.15:
            r["extra"] = {"nested": [1, 2]}  # unknown fields are ignored
        elif k < 0.16:
            r["timestamp"] = 1795850000123 + i  # epoch milliseconds
        elif k < 0.17:
            r["timestamp"] = "2100-01-01T00:00:00Z"  # future: rejected
        elif k < 0.18:
            lines.append("[1, 2]")  # JSON, not an object
            continue
        elif k < 0.19:
            r["error_code"] = 1.5
        lines.append(json.dumps(r))
    return lines


def old_path(data: bytes):
    """The per-item path (parse_json_lines + validate), with indexes mapped to true lines."""
    batch = validate(parse_json_lines(data), NOW_MS)
    text = data.decode()
    nonblank = [i for i, line in enumerate(text.split("\n")) if line.strip()]
    return batch.accepted, [(nonblank[r.index], r.reason, r.raw) for r in batch.rejected]


def new_path(data: bytes, chunk_bytes: int, parsers: int = 1):
    stream = io.BytesIO(data)
    batches = list(ingest.read_batches(stream, NOW_MS, chunk_bytes=chunk_bytes, parsers=parsers))
    accepted = pa.concat_tables([b.accepted for b in batches])
    return accepted, [(r.index, r.reason, r.raw) for b in batches for r in b.rejected]


@pytest.mark.parametrize("parsers", [1, 3])
@pytest.mark.parametrize("chunk_bytes", [600, 7_919, 1 << 20])
def test_mixed_file_gives_the_same_answer_as_the_per_item_path(chunk_bytes, parsers):
    data = "\n".join(mixed_lines(1_500)).encode()
    old_accepted, old_rejected = old_path(data)
    accepted, rejected = new_path(data, chunk_bytes, parsers)
    assert accepted.equals(old_accepted)
    assert rejected == old_rejected
    assert len(rejected) > 100 and accepted.num_rows > 1_200  # the file really is mixed


def test_bad_lines_on_chunk_boundaries_are_rejected_alone_with_their_line():
    good = [json.dumps(reading(i)) for i in range(40)]
    line_len = len(good[0]) + 1
    # Bad lines at 9, 10 (a chunk holds ~10 lines), 19, 20 and the very last one.
    lines = list(good)
    for at in (9, 10, 19, 20, 39):
        lines[at] = '{"greenhouse_id": "gh-1", broken'
    data = ("\n".join(lines) + "\n").encode()
    batches = list(ingest.read_batches(io.BytesIO(data), NOW_MS, chunk_bytes=10 * line_len))
    assert len(batches) > 3
    rejected = [r for b in batches for r in b.rejected]
    assert [r.index + 1 for r in rejected] == [10, 11, 20, 21, 40]
    assert all(r.reason.startswith(f"line {r.index + 1} is not valid JSON") for r in rejected)
    assert sum(b.accepted.num_rows for b in batches) == 35


def test_line_numbers_count_blank_lines():
    lines = [json.dumps(reading(0)), "", "  ", json.dumps(reading(1, device_id="bad id"))]
    lines += ["", json.dumps(reading(2)), "\r", "nope"]
    batches = list(ingest.read_batches(io.BytesIO("\n".join(lines).encode()), NOW_MS))
    rejected = [(r.index + 1, r.reason) for b in batches for r in b.rejected]
    assert rejected == [
        (4, "device_id must be 1-64 of A-Z a-z 0-9 _ -"),
        (8, "line 8 is not valid JSON: Expecting value"),
    ]


def test_a_large_json_array_is_streamed_item_by_item(monkeypatch):
    monkeypatch.setattr(ingest, "ARRAY_CHUNK_ITEMS", 100)
    items = [reading(i) for i in range(450)]
    items[123] = {"greenhouse_id": "gh-1"}
    data = json.dumps(items, indent=2).encode()
    batches = list(ingest.read_batches(io.BytesIO(data), NOW_MS, chunk_bytes=4_096))
    assert len(batches) == 5
    assert sum(b.accepted.num_rows for b in batches) == 449
    [bad] = [r for b in batches for r in b.rejected]
    assert bad.index == 123 and bad.reason.startswith("missing field(s): device_id")


def test_a_broken_large_json_array_keeps_the_items_before_the_break():
    text = json.dumps([reading(i) for i in range(200)])
    data = (text[:-600] + "}, {oops").encode()
    batches = list(ingest.read_batches(io.BytesIO(data), NOW_MS, chunk_bytes=2_048))
    accepted = sum(b.accepted.num_rows for b in batches)
    [broken] = [r for b in batches for r in b.rejected]
    assert 190 <= accepted < 200
    assert broken.index == accepted
    assert broken.reason.startswith(f"the JSON array breaks after item {accepted}")


def test_small_documents_keep_the_whole_text_rules():
    one = json.dumps(reading(0), indent=2).encode()  # one pretty-printed object
    [batch] = ingest.read_batches(io.BytesIO(one), NOW_MS)
    assert batch.accepted.num_rows == 1 and batch.rejected == []
    array = json.dumps([reading(0), reading(1)]).encode()
    [batch] = ingest.read_batches(io.BytesIO(array), NOW_MS)
    assert batch.accepted.num_rows == 2
    [blank] = ingest.read_batches(io.BytesIO(b"  \n"), NOW_MS)
    assert blank.accepted.num_rows == 0 and blank.rejected == []


def test_invalid_utf8_rejects_only_its_line():
    data = b"\n".join(
        [
            json.dumps(reading(0)).encode(),
            b'{"greenhouse_id": "\xff"}',
            json.dumps(reading(1)).encode(),
        ]
    )
    [batch] = ingest.read_batches(io.BytesIO(data), NOW_MS)
    assert batch.accepted.num_rows == 2
    assert [(r.index, r.reason) for r in batch.rejected] == [
        (1, "line 2 is not UTF-8 text (byte 19)")
    ]


def lake_ids(home) -> list[tuple]:
    glob = f"{home}/sensor-log-bucket/logs/*/*/*/*/*.parquet"
    return duckdb.sql(
        f"SELECT greenhouse_id, device_id, epoch_ms(timestamp), temperature "
        f"FROM read_parquet('{glob}') ORDER BY ALL"
    ).fetchall()


def recent_lines(n: int) -> list[str]:
    """Readings of the last hours (so they pass the future check with the real clock)."""
    start = (datetime.now(UTC) - timedelta(hours=5)).replace(minute=40, second=0, microsecond=0)
    out = []
    for i in range(n):
        r = reading(i, timestamp=(start + timedelta(seconds=i)).isoformat())
        out.append(json.dumps(r))
    return out


def test_file_ingest_matches_the_stream_path_and_adds_nothing_twice(tmp_path):
    lines = recent_lines(2_000)
    lines[500] = lines[10]  # a reading repeated inside the file
    lines[700] = '{"broken'
    data = "\n".join(lines).encode()
    via_stream = LocalTarget(tmp_path / "old")
    old = via_stream.ingest(parse_json_lines(data))
    columnar = LocalTarget(tmp_path / "new")
    new = columnar.ingest_stream(io.BytesIO(data))
    assert (new.accepted, new.duplicates) == (old.accepted, old.duplicates) == (1_998, 1)
    assert [(r.index, r.reason) for r in new.rejected] == [
        (700, "line 701 is not valid JSON: Unterminated string starting at")
    ]
    assert lake_ids(tmp_path / "new") == lake_ids(tmp_path / "old")
    again = columnar.ingest_stream(io.BytesIO(data))
    assert (again.accepted, again.duplicates) == (0, 1_999)
    assert len(lake_ids(tmp_path / "new")) == 1_998
    # Closed hours end as one file each.
    hours = {p.parent for p in (tmp_path / "new" / "sensor-log-bucket").rglob("*.parquet")}
    assert len(hours) == 2
    for folder in hours:
        assert len(list(folder.glob("*.parquet"))) == 1


def test_a_torn_ingest_file_is_dropped_and_re_running_the_ingest_adds_it(tmp_path):
    home = tmp_path / "h"
    data = "\n".join(recent_lines(300)).encode()
    target = LocalTarget(home)
    target.ingest_stream(io.BytesIO(data))
    [first, *_] = sorted((home / "sensor-log-bucket").rglob("*.parquet"))
    rows_in_first = pq.read_metadata(first).num_rows
    # As a power cut would leave it: the file renamed into place, its contents lost.
    first.write_bytes(b"")
    with target._transaction() as db:
        db.execute(
            "INSERT INTO ingest_journal (key) VALUES (?)",
            (str(first.relative_to(home / "sensor-log-bucket")),),
        )
    result = target.ingest_stream(io.BytesIO(data))
    assert result.accepted == rows_in_first
    assert len(lake_ids(home)) == 300


def test_farmctl_ingest_reads_stdin_in_chunks_like_a_file(tmp_path):
    lines = recent_lines(500)
    lines.insert(250, "")
    lines[400] = '{"greenhouse_id": 5}'
    data = "\n".join(lines).encode()
    env = {**os.environ, "SMARTFARM_HOME": str(tmp_path / "h"), "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "smartfarm_cli.cli", "ingest", "-", "-o", "json"],
        input=data,
        capture_output=True,
        env=env,
        check=True,
    )
    assert b"accepted 499, rejected 1" in done.stderr
    [row] = json.loads(done.stdout)
    assert row["line"] == 401 and row["reason"].startswith("missing field(s): device_id")


RSS_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    from datetime import UTC, datetime, timedelta
    from smartfarm_cli.targets.local import LocalTarget
    path, home = sys.argv[1], sys.argv[2]
    with open(path, "rb") as handle:
        result = LocalTarget(home).ingest_stream(handle)
    print(json.dumps({"accepted": result.accepted,
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    """
)


def write_file(path, n: int) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
    with open(path, "w") as handle:
        for i in range(n):
            ts = (start + timedelta(minutes=i // 200)).isoformat()
            handle.write(
                f'{{"greenhouse_id": "gh-{i % 10}", "device_id": "d{i // 10 % 20}", '
                f'"timestamp": "{ts}", "temperature": {20 + i % 13 * 0.1:.1f}, '
                f'"humidity": 55, "co2": 700, "error_code": 0}}\n'
            )


def test_memory_stays_bounded_whatever_the_file_size(tmp_path):
    peaks = {}
    for n in (40_000, 160_000):
        path = tmp_path / f"{n}.ndjson"
        write_file(path, n)
        done = subprocess.run(
            [sys.executable, "-c", RSS_SCRIPT, str(path), str(tmp_path / f"h{n}")],
            capture_output=True,
            check=True,
            text=True,
        )
        out = json.loads(done.stdout)
        assert out["accepted"] == n
        peaks[n] = out["rss_mb"]
    # 4x the input (24 MB vs 6 MB) may not cost more than a few chunks of working memory.
    assert peaks[160_000] - peaks[40_000] < 40, peaks


@pytest.mark.parametrize(
    "value",
    [
        "gh-1",
        "dev_2",
        "A9",
        "-",
        "_",
        "x" * 64,
        "x" * 65,
        "",
        "a b",
        "a.b",
        "a/b",
        "a\n",
        "é",
        "ab\u00e9",
        "\uff10",
        "\u01c5",
        "\u0660",
        "a\x00",
        "ß",
    ],
)
def test_ids_are_checked_exactly_like_the_id_pattern(value):
    import re

    from smartfarm_cli.core.schema import ID_PATTERN
    from smartfarm_cli.core.validate import ids_ok

    expected = re.fullmatch(ID_PATTERN.strip("^$"), value) is not None
    assert ids_ok(pa.array([value])).to_pylist() == [expected]


# -- read_ahead: the next chunk is parsed in a background thread ---------------------------------


def test_read_ahead_yields_every_batch_in_order_then_raises_the_producers_error():
    import threading

    from smartfarm_cli.core.ingest import read_ahead

    threads = []

    def produce():
        threads.append(threading.current_thread().name)
        yield from (1, 2, 3)
        raise ValueError("the input broke after 3 batches")

    got = []
    with pytest.raises(ValueError, match="broke after 3"):
        for batch in read_ahead(produce()):
            got.append(batch)
    assert got == [1, 2, 3]
    assert threads == ["ingest-read-ahead"]


def test_read_ahead_stops_its_producer_when_the_consumer_leaves_early():
    from smartfarm_cli.core.ingest import read_ahead

    produced = []

    def produce():
        for n in range(1000):
            produced.append(n)
            yield n

    for batch in read_ahead(produce(), depth=1):
        if batch == 2:
            break
    count = len(produced)
    assert count <= 5  # 0-2 taken, at most one waiting and one being made
    assert len(produced) == count  # and nothing after the loop ended


def test_top_level_null_lines_never_reach_pyarrow_and_are_rejected_alone():
    """pyarrow 25 segfaults when a JSON block starts with a top-level `null` (apache/arrow#47409).

    Run in a child process: a crash would otherwise take the test runner with it.
    """
    script = textwrap.dedent(
        """
        import json, sys
        from datetime import UTC, datetime
        from smartfarm_cli.core import ingest
        good = [json.dumps(r) for r in json.loads(sys.stdin.read())]
        # `null` first (the reported crash), then at many offsets so some start a parse block
        lines = ["null"] + good[:3]
        for i, line in enumerate(good[3:]):
            lines.append(line)
            if i % 97 == 0:
                lines.append("  null" if i % 2 else "null")
        chunk = ("\\n".join(lines) + "\\n").encode()
        now_ms = int(datetime(2026, 11, 28, 12, tzinfo=UTC).timestamp() * 1000)
        batch = ingest.ndjson_chunk(chunk, now_ms=now_ms)
        print(json.dumps({"accepted": batch.accepted.num_rows,
                          "rejected": sorted(r.index for r in batch.rejected),
                          "lines": [i for i, l in enumerate(lines) if l.strip() == "null"]}))
        """
    )
    readings = [reading(i) for i in range(20_000)]
    done = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(readings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["accepted"] == 20_000
    assert result["rejected"] == result["lines"]
    assert len(result["lines"]) > 200


def test_repeated_keys_are_found_whatever_the_time_span():
    """The distinct-count check on integer keys (id codes x time span) and its fallback."""
    import pyarrow as pa

    from smartfarm_cli.targets.local import _keys_repeat

    def table(ids, stamps):
        return pa.table(
            {
                "greenhouse_id": [g for g, _ in ids],
                "device_id": [d for _, d in ids],
                "timestamp": pa.array(stamps, pa.timestamp("ms")),
            }
        )

    ids = [("gh-1", "dev-1"), ("gh-1", "dev-2"), ("gh-2", "dev-1")]
    assert not _keys_repeat(table(ids, [5, 5, 5]))  # same time, other devices
    assert _keys_repeat(table([*ids, ids[1]], [5, 5, 5, 5]))
    assert not _keys_repeat(table(ids[:1], [5]))
    # A span too wide for an int64 key (ms over 2^61 x 4 devices) goes to the grouping: True,
    # which the caller then checks with the exact grouping.
    wide = [0, 1 << 61, 7]
    assert _keys_repeat(table([*ids[:2], ("gh-2", "dev-2")], wide))


def test_parallel_parsers_stop_when_the_consumer_leaves_early():
    """Leaving after the first batch cancels the chunks not started and ends the threads."""
    import threading

    data = ("\n".join(json.dumps(reading(i)) for i in range(2_000)) + "\n").encode()
    batches = ingest.read_batches(io.BytesIO(data), NOW_MS, chunk_bytes=2_000, parsers=2)
    first = next(batches)
    assert first.accepted.num_rows > 0
    batches.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("ingest-parse")]
