"""`farmctl query` is untrusted input: one read-only SELECT over readings and spikes, nothing else.

Two walls: sqlguard refuses anything but such a SELECT (and runs the SQL regenerated from the
checked tree), and DuckDB runs with external access off and its configuration locked, so SQL
that got past the parser still cannot touch a file outside the lake's views.
"""

from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from smartfarm_cli import sqlguard
from smartfarm_cli.cli import app
from smartfarm_cli.core import queries
from smartfarm_cli.core.queries import QueryError


@pytest.fixture
def home(tmp_path, target):
    target.backfill(days=0.5, greenhouses=2, devices=1, interval_s=300, seed=3)
    return target.home


def farmctl(home, *args):
    return CliRunner().invoke(app, ["--home", str(home), *args])


def lake_count(home) -> int:
    result = farmctl(home, "query", "SELECT count(*) AS n FROM readings", "-o", "csv")
    assert result.exit_code == 0, result.output
    return int(result.stdout.splitlines()[1])


@pytest.mark.parametrize(
    ("sql", "says"),
    [
        ("COPY (SELECT 1) TO '{tmp}/copied.csv'", "only SELECT"),
        ("COPY readings TO '{lake}/extra.parquet'", "only SELECT"),
        ("SELECT * FROM read_text('/etc/hostname')", "read_text() is not allowed"),
        ("SELECT * FROM read_csv('/etc/passwd')", "read_csv() is not allowed"),
        ("SELECT read_blob('/etc/hostname')", "read_blob() is not allowed"),
        ("SELECT * FROM '/etc/passwd'", "unknown table '/etc/passwd'"),
        ("SELECT * FROM other.readings", "without a schema"),
        ("SELECT * INTO copy_of FROM readings", "INTO is not allowed"),
        ("ATTACH '{tmp}/x.db' AS x", "cannot parse"),
        ("INSTALL httpfs", "only SELECT"),
        ("SET enable_external_access = true", "only SELECT"),
        ("PRAGMA version", "only SELECT"),
        ("DROP VIEW readings", "only SELECT"),
        ("SELECT 1; SELECT 2", "exactly one"),
        ("", "empty"),
        ("   ", "empty"),
        ("SELEC 1", "cannot parse"),
    ],
)
def test_only_one_read_only_select_is_run(home, tmp_path, sql, says):
    before = lake_count(home)
    lake = home / "sensor-log-bucket" / "logs"
    result = farmctl(home, "query", sql.format(tmp=tmp_path, lake=lake))
    assert result.exit_code == 2, result.output
    assert says in result.stderr
    assert result.stderr.count("\n") == 1  # one line, no traceback
    assert not (tmp_path / "copied.csv").exists()
    assert not (tmp_path / "x.db").exists()
    assert not (lake / "extra.parquet").exists()
    assert lake_count(home) == before


@pytest.mark.parametrize(
    "sql",
    [
        "WITH t AS (SELECT greenhouse_id, co2 FROM readings) SELECT max(co2) FROM t",
        "SELECT greenhouse_id FROM readings UNION SELECT greenhouse_id FROM spikes",
        "SELECT r.device_id FROM readings r JOIN spikes s ON r.device_id = s.device_id LIMIT 1",
        "SELECT x FROM (VALUES (1), (2)) AS t(x)",
    ],
)
def test_ordinary_selects_still_run(home, sql):
    result = farmctl(home, "query", sql, "-o", "json")
    assert result.exit_code == 0, result.output


def test_duckdb_refuses_files_even_when_the_parser_is_bypassed(target, home, tmp_path, monkeypatch):
    """Second wall: with sqlguard out of the way, DuckDB itself refuses every file access."""
    monkeypatch.setattr(sqlguard, "to_dialect", lambda sql, dialect: sql)
    before = target.query("SELECT count(*) FROM readings").rows[0][0]
    attacks = [
        "SELECT * FROM read_text('/etc/hostname')",
        f"COPY (SELECT 1) TO '{tmp_path}/copied.csv'",
        f"COPY readings TO '{home}/sensor-log-bucket/logs/year=2026/extra.parquet'",
        f"ATTACH '{tmp_path}/x.db' AS x",
        "SET enable_external_access = true",
        "SET lock_configuration = false",
    ]
    for sql in attacks:
        with pytest.raises(QueryError):
            target.query(sql)
    assert not (tmp_path / "copied.csv").exists()
    assert not list(home.rglob("extra.parquet"))
    assert target.query("SELECT count(*) FROM readings").rows[0][0] == before


def test_internal_queries_skip_the_parser_but_not_the_wall(target, home, monkeypatch):
    """trend, spikes, latest and status run core.queries' DuckDB text without sqlglot (it is
    built from checked parameters), still behind DuckDB's wall, and still answer."""

    def no_parser(sql, dialect):
        raise AssertionError(f"internal SQL went through sqlguard: {sql}")

    monkeypatch.setattr(sqlguard, "to_dialect", no_parser)
    # the backfilled home is synthetic, which trend leaves out unless asked
    assert target.trend("temperature", 1, "1h", synthetic="include").rows
    assert target.trend("co2", 1, "15m", zone="Asia/Seoul", synthetic="include").rows
    assert target.latest().rows
    target.spikes("7d")
    target.spikes("7d", detected=True)
    monkeypatch.undo()
    assert target.status()["lake_readings"] == lake_count(home)
    # The wall holds for a statement that reaches DuckDB as it is, as internal ones do.
    for attack in ("SELECT * FROM read_text('/etc/hostname')", "SET lock_configuration = false"):
        with pytest.raises(QueryError):
            target.run(queries.Query(attack, [], dialect="duckdb"))


NOW = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)  # a DST change day in Europe


@pytest.mark.parametrize(
    "build",
    [
        lambda d: queries.trend("temperature", 7, "1h", now=NOW, zone="UTC", dialect=d),
        lambda d: queries.trend(
            "humidity",
            2,
            "15m",
            "gh-1",
            now=NOW,
            valid_range=(0, 100),
            zone="Europe/Berlin",
            dialect=d,
        ),
        lambda d: queries.trend("co2", 60, "2w", now=NOW, zone="Asia/Seoul", dialect=d),
        lambda d: queries.trend("co2", 3, "1d", now=NOW, zone="America/New_York", dialect=d),
        lambda d: queries.latest_per_device(now=NOW, dialect=d),
        lambda d: queries.spikes("24h", "critical", "gh-2", 50, now=NOW, dialect=d),
        lambda d: queries.spikes("1h", now=NOW, detected=True, dialect=d),
        lambda d: queries.spike_count(NOW, dialect=d),
    ],
)
def test_duckdb_spelling_is_what_sqlglot_makes_of_the_athena_sql(build):
    """The local target runs the DuckDB text directly: it must be the same query as the
    Athena text transpiled (the same tree once parsed)."""
    import sqlglot

    athena, duck = build("athena"), build("duckdb")
    transpiled = sqlglot.transpile(athena.sql, read="athena", write="duckdb")[0]
    assert sqlglot.parse_one(duck.sql, read="duckdb") == sqlglot.parse_one(
        transpiled, read="duckdb"
    )
    assert (duck.params, duck.partitions_from) == (athena.params, athena.partitions_from)


def test_both_spellings_give_the_same_answers(target, home):
    """The same builders, run through the gate (Athena text, transpiled) and as DuckDB text."""
    now = datetime.now(UTC)
    for build in (
        lambda d: queries.trend(
            "temperature", 1, "1h", now=now, zone="UTC", dialect=d, synthetic="include"
        ),
        lambda d: queries.trend(
            "co2", 1, "10m", now=now, zone="Asia/Seoul", dialect=d, synthetic="include"
        ),
        lambda d: queries.latest_per_device(now=now, dialect=d),
        lambda d: queries.spikes("7d", now=now, dialect=d),
    ):
        assert target.run(build("duckdb")).rows == target.run(build("athena")).rows
