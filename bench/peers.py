"""P16 (issue 12): farmctl against the stores a farm would otherwise pick, same data, same run.

Debian's `influxdb` (1.6) and `postgresql` (15) are started by the bench on loopback, in
throwaway directories, and stopped and removed afterwards; each is skipped with a one-line reason
where it is not installed. The data is P8's 1,000,000-line NDJSON file (50 greenhouses x 4
devices, one reading a minute, ending 2026-11-28).

Load (whole processes, interleaved rounds, medians):
- ours: `farmctl ingest FILE.ndjson` into a fresh home (parses the NDJSON itself);
- InfluxDB: `influx -import` of a line-protocol file: HTTP line-protocol writes in batches of
  5,000 points (the importer's fixed batch, the size InfluxDB's docs recommend), into a freshly
  created database;
- PostgreSQL: one `psql -f` running CREATE TABLE, `\\copy ... FROM` a CSV file, CREATE INDEX on
  the time column (what the time-window query needs) and ANALYZE (which PostgreSQL's docs
  recommend after a bulk load).
The line-protocol and CSV files are converted from the NDJSON beforehand with DuckDB, outside
the timing (the conversion times are reported next to the result): the peers get their best
input format for free, farmctl pays for parsing JSON.

Query: `farmctl trend temperature --days 7 -o csv` (zone UTC) against the same SQL as one
`psql --csv -c` process and the same InfluxQL as one `influx -format csv -execute` process.
Every answer is checked against an exact reference computed by DuckDB straight from the NDJSON
with decimals: bucket and greenhouse sets, counts, min and max equal; a printed average within
half a unit of its last printed digit of the exact mean (InfluxDB prints the mean unrounded).
Half-cent ties (an exact mean ending in 5 at the third decimal) may be printed either way; they
are counted and reported, as is every other disagreement.

Bytes per reading on disk, after the load: farmctl's lake and whole home and InfluxDB's
database directories (data + WAL, after its cache snapshot and full compaction; allocated
blocks, so its preallocated series files count what they occupy), PostgreSQL's table + index
(`pg_total_relation_size`; its WAL is recycled and not counted).

Settings that differ from the packages' defaults, and why: InfluxDB writes no `_internal`
monitor database and snapshots / fully compacts after 5 s without writes instead of 10 min /
4 h (so the size measured is the one it settles at, not its WAL); PostgreSQL runs without
autovacuum (the bench's ANALYZE does its work, and a background vacuum would otherwise run
during the next timings). Each timed load starts from an empty database; InfluxDB's database
is dropped after each timed load so its background snapshot does not run during the next
contender's timing, and loaded once more (untimed) for the sizes and the queries.
"""

from __future__ import annotations

import csv
import io
import math
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from datapath import FARMCTL, ndjson_file
from run import _free_port

READINGS = 1_000_000
NDJSON_COLUMNS = (
    "{'greenhouse_id': 'VARCHAR', 'device_id': 'VARCHAR', 'timestamp': 'VARCHAR', "
    "'temperature': 'DOUBLE', 'humidity': 'DOUBLE', 'co2': 'DOUBLE', 'error_code': 'INTEGER'}"
)
PG_TABLE = """CREATE TABLE readings (
    greenhouse_id text NOT NULL, device_id text NOT NULL, "timestamp" timestamptz NOT NULL,
    temperature double precision, humidity double precision, co2 double precision,
    error_code integer NOT NULL);"""


def _load_avg() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def interleaved(
    contenders: dict[str, tuple[Callable[[], object], ...]],
    runs: int,
    warmup: int = 1,
) -> tuple[dict[str, float], dict[str, float]]:
    """Interleaved rounds of n contenders, each `(prepare, run[, finish])`; only `run` is timed.

    Rounds alternate forward and backward order (A B C, C B A, ...). Returns the median time
    of each, and for every contender after the first the median of the per-round ratios
    first / that one.
    """
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            for step in contenders[name]:
                step()
    times: dict[str, list[float]] = {name: [] for name in names}
    ratios: dict[str, list[float]] = {name: [] for name in names[1:]}
    for i in range(runs):
        round_times = {}
        for name in names if i % 2 == 0 else reversed(names):
            prepare, run, *finish = contenders[name]
            prepare()
            started = time.perf_counter()
            run()
            round_times[name] = time.perf_counter() - started
            for step in finish:
                step()
        for name in names:
            times[name].append(round_times[name])
        for name in names[1:]:
            ratios[name].append(round_times[names[0]] / round_times[name])
    return (
        {name: statistics.median(t) for name, t in times.items()},
        {name: statistics.median(r) for name, r in ratios.items()},
    )


def _allocated(path: Path) -> int:
    """Bytes the files under `path` occupy on disk (allocated blocks, like `du`)."""
    return sum(p.lstat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if done.returncode:
        raise RuntimeError(f"{command[0]} failed ({done.returncode}): {done.stderr[-800:]}")
    return done


# -- the servers ------------------------------------------------------------------------------


def _postgres_bin() -> Path | None:
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class Postgres:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (trust auth, no autovacuum)."""

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="bench-p16-pg-"))
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # initdb refuses root: the cluster belongs to `postgres`
            shutil.chown(self.dir, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.data = self.dir / "data"
        self.version = ""

    def start(self) -> None:
        _run(
            [
                *self.as_user,
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ]
        )
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.dir} -c autovacuum=off"
        )
        _run(
            [
                *self.as_user,
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.dir / "server.log"),
                "-w",
                "-o",
                options,
                "start",
            ]
        )
        self.version = self.sql("SHOW server_version").split()[0]

    def psql(self, *args: str) -> list[str]:
        return [
            str(self.bindir / "psql"),
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            *args,
        ]

    def sql(self, statement: str) -> str:
        return _run(self.psql("-q", "-A", "-t", "-c", statement), env=_pg_env()).stdout

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run(
                [*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-w", "stop"],
                capture_output=True,
            )
        shutil.rmtree(self.dir, ignore_errors=True)


def _pg_env() -> dict:
    return {**os.environ, "PGTZ": "UTC", "PGCONNECT_TIMEOUT": "10"}


INFLUX_CONFIG = """reporting-enabled = false
bind-address = "127.0.0.1:{rpc_port}"
[meta]
  dir = "{dir}/meta"
[data]
  dir = "{dir}/data"
  wal-dir = "{dir}/wal"
  query-log-enabled = false
  cache-snapshot-write-cold-duration = "5s"
  compact-full-write-cold-duration = "5s"
[monitor]
  store-enabled = false
[http]
  bind-address = "127.0.0.1:{port}"
  log-enabled = false
[logging]
  level = "warn"
  suppress-logo = true
"""


class Influx:
    """A throwaway influxd on 127.0.0.1 with a generated config."""

    def __init__(self, influxd: str, influx: str):
        self.influxd, self.influx = influxd, influx
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="bench-p16-influx-"))
        self.process: subprocess.Popen | None = None
        self.version = ""

    def start(self) -> None:
        config = self.dir / "influxdb.conf"
        config.write_text(INFLUX_CONFIG.format(dir=self.dir, port=self.port, rpc_port=_free_port()))
        log = open(self.dir / "influxd.log", "wb")  # noqa: SIM115 (closed with the process)
        self.process = subprocess.Popen(
            [self.influxd, "-config", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ping", timeout=2) as r:
                    self.version = r.headers.get("X-Influxdb-Version", "")
                    return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log_tail = (self.dir / "influxd.log").read_text(errors="replace")[-500:]
                    raise RuntimeError(f"influxd did not start: {log_tail}") from None
                time.sleep(0.2)

    def query(self, statement: str, database: str | None = None) -> dict:
        import json

        fields = {"q": statement, **({"db": database} if database else {})}
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/query",
            data=urllib.parse.urlencode(fields).encode(),
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = json.loads(response.read())
        errors = [r["error"] for r in answer.get("results", []) if "error" in r]
        if errors:
            raise RuntimeError(f"influxdb: {errors[0]}")
        return answer

    def cli(self, *args: str) -> list[str]:
        return [self.influx, "-host", "127.0.0.1", "-port", str(self.port), *args]

    def settle(self, database: str, limit_s: float = 90) -> None:
        """Wait until the WAL is snapshotted and the TSM files stop changing (3 s)."""
        data, wal = self.dir / "data" / database, self.dir / "wal" / database
        deadline, last, stable = time.monotonic() + limit_s, None, 0
        while time.monotonic() < deadline and stable < 3:
            time.sleep(1)
            state = (
                sum(p.stat().st_size for p in wal.rglob("*.wal")),
                sorted((p.name, p.stat().st_size) for p in data.rglob("*.tsm*")),
            )
            stable = stable + 1 if state == last and state[0] == 0 else 0
            last = state

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def _why_no_postgres() -> str | None:
    bindir = _postgres_bin()
    if bindir is None or not (bindir / "pg_ctl").exists():
        return "PostgreSQL server not installed (Debian: apt-get install postgresql)"
    if not (bindir / "psql").exists() and not shutil.which("psql"):
        return "psql not installed (Debian: apt-get install postgresql-client)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no `postgres` user to own the cluster"
        if not shutil.which("runuser"):
            return "running as root and `runuser` is missing to start the cluster as `postgres`"
    return None


def _why_no_influx() -> str | None:
    if not shutil.which("influxd"):
        return "InfluxDB not installed (Debian: apt-get install influxdb influxdb-client)"
    if not shutil.which("influx"):
        return "the influx CLI is not installed (Debian: apt-get install influxdb-client)"
    return None


# -- data --------------------------------------------------------------------------------------


def _convert(source: Path, scratch: Path) -> tuple[Path, Path, float, float]:
    """NDJSON -> a line-protocol file (with the importer's header) and a CSV file, via DuckDB.

    Returns (line protocol, csv, seconds for each). Tags are sorted by key, as InfluxDB's docs
    recommend; fields are floats, error_code an integer, times in seconds.
    """
    import duckdb

    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    rows = f"read_json('{source}', format = 'newline_delimited', columns = {NDJSON_COLUMNS})"
    body, lp = scratch / "body.lp", scratch / "readings.lp"
    started = time.perf_counter()
    con.execute(
        f"""COPY (SELECT 'readings,device_id=' || device_id || ',greenhouse_id=' || greenhouse_id
             || ' temperature=' || temperature || ',humidity=' || humidity || ',co2=' || co2
             || ',error_code=' || error_code || 'i '
             || CAST(epoch(strptime("timestamp", '%Y-%m-%dT%H:%M:%SZ')) AS BIGINT)
            FROM {rows}) TO '{body}' (FORMAT CSV, HEADER false, QUOTE '', ESCAPE '',
            DELIMITER '\t')"""
    )
    with open(lp, "wb") as out, open(body, "rb") as lines:
        out.write(b"# DML\n# CONTEXT-DATABASE: bench\n")
        shutil.copyfileobj(lines, out, 1 << 20)
    body.unlink()
    lp_s = time.perf_counter() - started
    table = scratch / "readings.csv"
    started = time.perf_counter()
    con.execute(
        f"""COPY (SELECT greenhouse_id, device_id, "timestamp", temperature, humidity, co2,
                         error_code FROM {rows}) TO '{table}' (FORMAT CSV, HEADER false)"""
    )
    csv_s = time.perf_counter() - started
    con.close()
    return lp, table, lp_s, csv_s


def _reference(source: Path, valid: tuple[float, float]) -> tuple[dict, datetime, datetime]:
    """Exact per (hour, greenhouse) count / min / max / sum of the NDJSON's temperatures.

    Temperatures are read as doubles and summed as DECIMAL(18, 2); the file holds two-decimal
    values (asserted), so the sums, and the means computed from them, are exact.
    """
    import duckdb

    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    con.execute(
        f"""CREATE TABLE r AS SELECT strptime("timestamp", '%Y-%m-%dT%H:%M:%SZ') AS ts,
            greenhouse_id, temperature, error_code
            FROM read_json('{source}', format = 'newline_delimited',
                           columns = {NDJSON_COLUMNS})"""
    )
    inexact, first, last = con.execute(
        "SELECT count(*) FILTER (WHERE round(temperature, 2) <> temperature), min(ts), max(ts) "
        "FROM r"
    ).fetchone()
    assert inexact == 0, "the reference needs two-decimal temperatures"
    rows = con.execute(
        f"""SELECT date_trunc('hour', ts), greenhouse_id, count(temperature),
                   min(temperature), max(temperature),
                   CAST(sum(CAST(temperature AS DECIMAL(18, 2))) AS VARCHAR)
            FROM r WHERE error_code = 0 AND temperature BETWEEN {valid[0]!r} AND {valid[1]!r}
            GROUP BY 1, 2"""
    ).fetchall()
    con.close()
    reference = {
        (bucket.replace(tzinfo=UTC), gh): (n, lo, hi, Decimal(total) / n)
        for bucket, gh, n, lo, hi, total in rows
    }
    return reference, first.replace(tzinfo=UTC), last.replace(tzinfo=UTC)


def _parse_time(text: str) -> datetime:
    text = text.strip().replace(" ", "T")
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    elif text.endswith("+00"):
        text += ":00"
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _answer(text: str, kind: str) -> dict:
    """One tool's CSV answer -> {(bucket, greenhouse): (count, min, max, printed avg)}."""
    rows: dict = {}
    for row in csv.DictReader(io.StringIO(text)):
        if kind == "influx":
            if row.get("name") != "readings":  # a header line repeated per series
                continue
            key = (_parse_time(row["time"]), row["tags"].split("=", 1)[1])
        else:
            key = (_parse_time(row["bucket"]), row["greenhouse_id"])
        rows[key] = (int(row["readings"]), float(row["min"]), float(row["max"]), row["avg"])
    return rows


def _check(answer: dict, reference: dict, unrounded: bool) -> list[str]:
    """Disagreements of one answer with the exact reference (empty when they agree)."""
    problems = []
    for key in sorted(set(reference) | set(answer)):
        when = f"{key[0]:%Y-%m-%d %H:%M} {key[1]}"
        if key not in answer:
            problems.append(f"{when}: missing")
            continue
        if key not in reference:
            problems.append(f"{when}: not in the data")
            continue
        n, lo, hi, avg = answer[key]
        ref_n, ref_lo, ref_hi, mean = reference[key]
        if (n, lo, hi) != (ref_n, ref_lo, ref_hi):
            problems.append(f"{when}: count/min/max {n}/{lo}/{hi} != {ref_n}/{ref_lo}/{ref_hi}")
        printed = Decimal(avg)
        if unrounded:
            ok = abs(printed - mean) <= Decimal("1e-9") * max(1, abs(mean))
        else:
            places = -printed.as_tuple().exponent if printed.as_tuple().exponent < 0 else 0
            ok = abs(printed - mean) <= Decimal(1).scaleb(-places) / 2
        if not ok:
            problems.append(f"{when}: avg {avg} != exact {mean}")
    return problems


def _differences(a: dict, b: dict, ties: set, unrounded: bool) -> tuple[list, int]:
    """Buckets where two answers disagree: (beyond a half-cent tie, on a tie only).

    Printed averages must be equal; unrounded ones (InfluxDB's) equal to 1e-9 relative.
    """
    real, on_tie = [], 0
    for key in sorted(a.keys() | b.keys()):
        if key not in a or key not in b:
            real.append(key)
            continue
        (*rest_a, avg_a), (*rest_b, avg_b) = a[key], b[key]
        gap = abs(Decimal(avg_a) - Decimal(avg_b))
        if rest_a != rest_b:
            real.append(key)
        elif gap > (Decimal("1e-9") * max(1, abs(Decimal(avg_a))) if unrounded else 0):
            if key in ties:
                on_tie += 1
            else:
                real.append(key)
    return real, on_tie


# -- the measure -------------------------------------------------------------------------------


_RESULT: dict = {}


def _measure(runs: int) -> dict:
    from smartfarm_cli.core.rules import DEFAULT_RULES_PATH, load_rules

    skipped = {"influx": _why_no_influx(), "postgres": _why_no_postgres()}
    source = ndjson_file(READINGS)
    scratch = Path(tempfile.mkdtemp(prefix="bench-p16-"))
    load_start = _load_avg()
    env = {k: v for k, v in os.environ.items() if k not in ("SMARTFARM_RULES", "SMARTFARM_HOME")}
    env.update(SMARTFARM_TZ="UTC", SMARTFARM_TARGET="local")
    home = scratch / "home"
    servers: list = []
    try:
        lp, table, lp_s, csv_s = _convert(source, scratch)
        valid = load_rules(DEFAULT_RULES_PATH).impossible["temperature"]
        reference, first, last = _reference(source, valid)
        now = datetime.now(UTC)
        if last > now:
            raise RuntimeError(f"the data ends at {last}, after this machine's clock ({now})")
        # `trend --days N` means [now - N days, now]: keep every reading inside the window.
        days = max(7, math.ceil((now - first + timedelta(hours=1)) / timedelta(days=1)))

        contenders: dict = {}

        def ours_prepare():
            shutil.rmtree(home, ignore_errors=True)

        def ours_load():
            out = _run([str(FARMCTL), "--home", str(home), "ingest", str(source)], env=env)
            assert f"accepted {READINGS}, rejected 0" in out.stdout + out.stderr, out.stdout

        contenders["farmctl"] = (ours_prepare, ours_load)

        influx = postgres = None
        if not skipped["influx"]:
            influx = Influx(shutil.which("influxd"), shutil.which("influx"))
            servers.append(influx)
            influx.start()

            def influx_prepare():
                influx.query("DROP DATABASE bench")
                influx.query("CREATE DATABASE bench")

            def influx_load():
                out = _run(influx.cli("-import", "-path", str(lp), "-precision", "s"))
                assert f"Processed {READINGS} inserts" in out.stdout, out.stdout[-300:]
                assert "Failed 0 inserts" in out.stdout, out.stdout[-300:]

            def influx_finish():
                # Not timed: the database goes once its load is timed, so its background
                # snapshot and compaction do not run during the next contender's timing.
                influx.query("DROP DATABASE bench")

            contenders["influx"] = (influx_prepare, influx_load, influx_finish)
        if not skipped["postgres"]:
            postgres = Postgres(_postgres_bin())
            servers.append(postgres)
            postgres.start()
            script = scratch / "load.sql"
            script.write_text(
                f"{PG_TABLE}\n\\copy readings FROM '{table}' WITH (FORMAT csv)\n"
                'CREATE INDEX readings_time ON readings ("timestamp");\nANALYZE readings;\n'
            )

            def pg_prepare():
                postgres.sql("DROP TABLE IF EXISTS readings")

            def pg_load():
                _run(postgres.psql("-q", "-f", str(script)), env=_pg_env())

            contenders["postgres"] = (pg_prepare, pg_load)

        load_runs = max(3, runs // 2)
        load_s, load_ratio = interleaved(contenders, load_runs)
        load_end = _load_avg()

        sizes = {"lake": _allocated(home / "sensor-log-bucket"), "home": _allocated(home)}
        versions = {}
        if influx:
            influx.query("CREATE DATABASE bench")
            contenders["influx"][1]()  # one more load (untimed), kept for sizes and queries
            influx.settle("bench")
            sizes["influx"] = _allocated(influx.dir / "data" / "bench") + _allocated(
                influx.dir / "wal" / "bench"
            )
            versions["influx"] = influx.version
        if postgres:
            table_b, index_b, count = (
                postgres.sql(
                    "SELECT pg_relation_size('readings'), pg_indexes_size('readings'), "
                    "(SELECT count(*) FROM readings)"
                )
                .strip()
                .split("|")
            )
            assert int(count) == READINGS, count
            sizes["postgres"] = int(table_b) + int(index_b)
            sizes["postgres_table"], sizes["postgres_index"] = int(table_b), int(index_b)
            versions["postgres"] = postgres.version

        # -- the query -----------------------------------------------------------------------
        lo, hi = valid
        sql = (
            "SELECT date_trunc('hour', \"timestamp\") AS bucket, greenhouse_id, "
            "round(avg(temperature)::numeric, 2) AS avg, min(temperature) AS min, "
            "max(temperature) AS max, count(temperature) AS readings FROM readings "
            f'WHERE "timestamp" >= now() - interval \'{days} days\' AND "timestamp" <= now() '
            f"AND error_code = 0 AND temperature BETWEEN {lo!r} AND {hi!r} "
            "GROUP BY 1, 2 ORDER BY 1, 2"
        )
        influxql = (
            "SELECT mean(temperature) AS avg, min(temperature) AS min, max(temperature) AS max, "
            f"count(temperature) AS readings FROM readings WHERE time >= now() - {days}d AND "
            f"time <= now() AND error_code = 0 AND temperature >= {lo!r} AND "
            f"temperature <= {hi!r} GROUP BY time(1h), greenhouse_id fill(none)"
        )
        trend = ["trend", "temperature", "--days", str(days), "-o", "csv"]
        commands = {"farmctl": ([str(FARMCTL), "--home", str(home), *trend], env)}
        if postgres:
            commands["postgres"] = (postgres.psql("--csv", "-c", sql), _pg_env())
        if influx:
            influx_args = ("-database", "bench", "-precision", "rfc3339", "-format", "csv")
            commands["influx"] = (influx.cli(*influx_args, "-execute", influxql), None)
        outputs: dict[str, set[str]] = {name: set() for name in commands}

        def query(name):
            command, command_env = commands[name]

            def run():
                outputs[name].add(_run(command, env=command_env).stdout)

            return (lambda: None, run)

        query_start = _load_avg()
        query_s, query_ratio = interleaved({name: query(name) for name in commands}, runs)
        query_end = _load_avg()
        # The same trend in this process (no interpreter start-up or imports), for the record.
        from smartfarm_cli.targets.local import LocalTarget

        target, in_process = LocalTarget(home), []
        for _ in range(3):
            started = time.perf_counter()
            rows = target.trend("temperature", days, "1h", None, "UTC").rows
            in_process.append(time.perf_counter() - started)
        target.close()
        assert len(rows) == len(reference), len(rows)

        # An exact mean ending in 5 at the third decimal prints either way within float noise.
        ties = {k for k, (*_, mean) in reference.items() if (mean * 1000) % 10 == 5}
        answers, problems, unstable = {}, {}, {}
        for name, texts in outputs.items():
            parsed = [_answer(text, name) for text in sorted(texts)]
            answers[name] = parsed[0]
            unrounded = name == "influx"
            problems[name] = [p for a in parsed for p in _check(a, reference, unrounded)]
            unstable[name] = 0
            for answer in parsed[1:]:
                real, on_tie = _differences(parsed[0], answer, ties, unrounded)
                unstable[name] = max(unstable[name], on_tie)
                problems[name] += [
                    f"{k[0]:%Y-%m-%d %H:%M} {k[1]}: differs between runs" for k in real
                ]
        ours_vs_psql = 0
        if "postgres" in answers:
            real, ours_vs_psql = _differences(answers["farmctl"], answers["postgres"], ties, False)
            problems["farmctl"] += [f"{k[0]:%Y-%m-%d %H:%M} {k[1]}: farmctl != psql" for k in real]
        for name, found in problems.items():
            for problem in found[:20]:
                print(f"  P16 {name}: {problem}", file=sys.stderr)
    finally:
        for server in reversed(servers):
            server.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    return {
        "skipped": {k: v for k, v in skipped.items() if v},
        "versions": versions,
        "days": days,
        "load_s": load_s,
        "load_ratio": load_ratio,
        "load_runs": load_runs,
        "convert_s": {"influx": lp_s, "postgres": csv_s},
        "sizes": sizes,
        "query_s": query_s,
        "query_ratio": query_ratio,
        "query_runs": runs,
        "query_in_process_s": statistics.median(in_process),
        "buckets": len(reference),
        "problems": problems,
        "ties": {"ties": len(ties), "ours_vs_psql": ours_vs_psql, "unstable": unstable},
        "load_avg": {"load": (load_start, load_end), "query": (query_start, query_end)},
    }


def _result(runs: int) -> dict:
    """P16 and P16b share one setup and one run (the query needs the loaded stores)."""
    if "result" not in _RESULT:
        _RESULT["result"] = _measure(runs)
    return _RESULT["result"]


NAMES = {"influx": "InfluxDB", "postgres": "PostgreSQL"}


def _skips(r: dict) -> str:
    return "".join(f"; {NAMES[k]} skipped: {why}" for k, why in r["skipped"].items())


def p16_load(runs: int) -> dict:
    r = _result(runs)
    ours, sizes = r["load_s"]["farmctl"], r["sizes"]
    load_avg = r["load_avg"]["load"]
    parts = []
    if "influx" in r["load_s"]:
        parts.append(
            f"InfluxDB {r['versions']['influx']} `influx -import` (HTTP line protocol, 5,000-point "
            f"batches) {r['load_s']['influx']:.2f} s, {sizes['influx'] / READINGS:.1f} B/reading "
            "(data + WAL after its full compaction)"
        )
    if "postgres" in r["load_s"]:
        parts.append(
            f"PostgreSQL {r['versions']['postgres']} `psql`: `\\copy` + index on time + ANALYZE "
            f"{r['load_s']['postgres']:.2f} s, {sizes['postgres'] / READINGS:.1f} B/reading "
            f"(table {sizes['postgres_table'] / READINGS:.1f} + index "
            f"{sizes['postgres_index'] / READINGS:.1f})"
        )
    converted = " / ".join(
        f"{'line protocol' if k == 'influx' else 'CSV'} {r['convert_s'][k]:.1f} s"
        for k in ("influx", "postgres")
        if k in r["load_s"]
    )
    if converted:
        parts.append(f"their input converted from the NDJSON beforehand, untimed ({converted})")
        with_conversion = ", ".join(
            f"{NAMES[k]} {r['load_s'][k] + r['convert_s'][k]:.2f} s"
            for k in ("influx", "postgres")
            if k in r["load_s"]
        )
        parts.append(f"load + conversion: {with_conversion}")
    ratios = ", ".join(f"{v:.2f}x {NAMES[k]}" for k, v in r["load_ratio"].items())
    met = None
    if not r["skipped"]:
        met = r["load_ratio"]["influx"] < 1 and r["load_ratio"]["postgres"] <= 1.5
    return {
        "measure": f"load of P8's 1,000,000-reading NDJSON, whole processes, stores on loopback "
        f"({r['load_runs']} interleaved rounds): `farmctl ingest` into a fresh home vs "
        "InfluxDB and PostgreSQL started by the bench; bytes per reading on disk",
        "value": f"{ours:.2f} s ({READINGS / ours:,.0f} readings/s); lake "
        f"{sizes['lake'] / READINGS:.1f} B/reading, whole home {sizes['home'] / READINGS:.1f} "
        f"(load average {load_avg[0]} -> {load_avg[1]})",
        "baseline": "; ".join(parts) + _skips(r) if parts else _skips(r)[2:],
        "ratio": ratios or None,
        "goal": "< 1x InfluxDB, <= 1.5x PostgreSQL",
        "met": met,
    }


def p16_query(runs: int) -> dict:
    r = _result(runs)
    load_avg = r["load_avg"]["query"]
    problems = {k: v for k, v in r["problems"].items() if v}
    tool = {"farmctl": "farmctl", "influx": "influx", "postgres": "psql"}
    if problems:
        answers = "**answers disagree with the exact reference**: " + ", ".join(
            f"{tool[k]} {len(v)} (e.g. {v[0]})" for k, v in problems.items()
        )
    else:
        who = [tool[k] for k in r["problems"]]
        who = " and ".join([", ".join(who[:-1]), who[-1]] if len(who) > 1 else who)
        answers = (
            f"the answers of {who} equal the exact reference "
            f"({r['buckets']:,} buckets: counts, min, max; averages within half a unit of the "
            "printed digit)"
        )
    ties = r["ties"]
    answers += f"; {ties['ties']} exact means end on a half cent"
    if "postgres" in r["query_s"]:
        answers += f", {ties['ours_vs_psql']} of them printed differently by farmctl and psql"
    answers += "".join(
        f", {tool[k]} prints up to {n} of them differently from run to run"
        for k, n in ties["unstable"].items()
        if n
    )
    parts = []
    if "postgres" in r["query_s"]:
        psql_s = r["query_s"]["postgres"]
        parts.append(f"the same SQL as one `psql --csv -c` process {psql_s:.2f} s")
    if "influx" in r["query_s"]:
        parts.append(
            f"the same InfluxQL (`GROUP BY time(1h), greenhouse_id`) as one `influx -format csv "
            f"-execute` process {r['query_s']['influx']:.2f} s"
        )
    ratios = ", ".join(
        f"{v:.2f}x {'psql' if k == 'postgres' else 'influx'}" for k, v in r["query_ratio"].items()
    )
    met = None
    if "postgres" not in r["skipped"]:
        met = r["query_ratio"]["postgres"] <= 1 and not problems
    return {
        "measure": f"hourly temperature trend per greenhouse over P16's loaded stores, whole "
        f"processes ({r['query_runs']} interleaved rounds): `farmctl trend temperature --days "
        f"{r['days']} -o csv` (zone UTC) vs psql and influx; answers checked against an exact "
        "reference from the NDJSON",
        "value": f"{r['query_s']['farmctl']:.2f} s (the same trend inside a running process: "
        f"{r['query_in_process_s']:.2f} s); {answers} (load average {load_avg[0]} -> "
        f"{load_avg[1]})",
        "baseline": "; ".join(parts) + _skips(r) if parts else _skips(r)[2:],
        "ratio": ratios or None,
        "goal": "<= 1x psql; answers equal",
        "met": met,
    }
