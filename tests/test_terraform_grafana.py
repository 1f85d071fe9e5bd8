"""The Grafana dashboard kept in terraform/grafana/: JSON, data source, and every panel's SQL.

Each query is expanded the way grafana-athena-datasource expands its macros (pkg/athena/macros.go:
$__timeFilter(c) -> c BETWEEN TIMESTAMP '..' AND TIMESTAMP '..', $__timeFrom()/$__timeTo() ->
TIMESTAMP '..', $__timeGroup(c, 'i') -> FROM_UNIXTIME(FLOOR(TO_UNIXTIME(c)/s)*s)) and Grafana
interpolates template variables, then parsed as Athena SQL with sqlglot and checked against
the tables and columns of smartfarm_cli.core.schema.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import sqlglot
from sqlglot import exp

from smartfarm_cli.core import schema

GRAFANA = Path(__file__).resolve().parents[1] / "terraform/grafana"
DASHBOARD = GRAFANA / "dashboards/smartfarm.json"

TABLES = {
    "readings": {c.name for c in schema.READING_COLUMNS} | set(schema.READING_PARTITIONS),
    "spikes": {c.name for c in schema.SPIKE_COLUMNS} | set(schema.SPIKE_PARTITIONS),
}
FROM = "2026-01-01 00:00:00"
TO = "2026-01-08 00:00:00"


def _split_args(text: str) -> list[str]:
    return [a.strip() for a in text.split(",")]


def _interval_seconds(text: str) -> int:
    m = re.fullmatch(r"'?(\d+)([smhd])'?", text.strip())
    assert m, f"unsupported interval {text}"
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def expand(sql: str) -> str:
    """Grafana variables, then the Athena plugin's macros."""
    sql = sql.replace("${greenhouse:sqlstring}", "'gh-1','gh-2'")
    sql = sql.replace("$__interval", "5m")
    assert "${" not in sql and not re.search(r"\$(?!__)\w", sql), f"unknown variable in {sql}"

    def time_filter(m):
        args = _split_args(m.group(1))
        return f"{args[0]} BETWEEN TIMESTAMP '{FROM}' AND TIMESTAMP '{TO}'"

    def time_group(m):
        args = _split_args(m.group(1))
        s = _interval_seconds(args[1])
        return f"FROM_UNIXTIME(FLOOR(TO_UNIXTIME({args[0]})/{s})*{s})"

    sql = re.sub(r"\$__timeFilter\(([^)]*)\)", time_filter, sql)
    sql = re.sub(r"\$__timeGroup\(([^)]*)\)", time_group, sql)
    sql = sql.replace("$__timeFrom()", f"TIMESTAMP '{FROM}'")
    sql = sql.replace("$__timeTo()", f"TIMESTAMP '{TO}'")
    assert "$__" not in sql, f"unexpanded macro in {sql}"
    return sql


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def queries() -> list[tuple[str, str, int | None]]:
    """(where, rawSQL, format) for every panel target and the template variable."""
    found = []
    for panel in dashboard()["panels"]:
        for target in panel["targets"]:
            found.append((panel["title"], target["rawSQL"], target.get("format")))
    for var in dashboard()["templating"]["list"]:
        found.append((f"variable {var['name']}", var["query"]["rawSQL"], None))
    return found


def test_dashboard_json_parses_and_has_the_required_panels():
    dash = dashboard()
    assert dash["uid"] and dash["title"]
    titles = [p["title"].lower() for p in dash["panels"]]
    for word in ("temperature", "humidity", "co2", "latest", "spikes"):
        assert any(word in t for t in titles), f"no panel about {word}"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


def test_panels_use_the_provisioned_athena_datasource():
    provisioned = (GRAFANA / "provisioning/datasource.yaml.tftpl").read_text()
    uid = re.search(r"uid:\s*(\S+)", provisioned).group(1)
    kind = re.search(r"type:\s*(\S+)", provisioned).group(1)
    assert kind == "grafana-athena-datasource"
    for panel in dashboard()["panels"]:
        for target in [panel, *panel["targets"]]:
            assert target["datasource"] == {"type": kind, "uid": uid}, panel["title"]


def test_each_metric_has_a_time_series_panel_per_greenhouse():
    series = [p for p in dashboard()["panels"] if p["type"] == "timeseries"]
    covered = set()
    for panel in series:
        (target,) = panel["targets"]
        assert target["format"] == 0, "time series format (long -> wide per greenhouse)"
        tree = sqlglot.parse_one(expand(target["rawSQL"]), read="athena")
        aliases = [s.alias_or_name for s in tree.expressions]
        assert aliases[0] == "time" and "greenhouse_id" in aliases
        covered |= set(aliases) & set(schema.METRICS)
    assert covered == set(schema.METRICS)


def _tables_and_columns(tree: exp.Expression) -> tuple[set[str], set[str], set[str]]:
    tables = {t.name for t in tree.find_all(exp.Table)}
    columns = {c.name for c in tree.find_all(exp.Column)}
    aliases = {a.alias for a in tree.find_all(exp.Alias)}
    return tables, columns, aliases


@pytest.mark.parametrize(("where", "sql", "fmt"), queries(), ids=[q[0] for q in queries()])
def test_query_parses_as_athena_sql_over_existing_tables_and_columns(where, sql, fmt):
    expanded = expand(sql)
    tree = sqlglot.parse_one(expanded, read="athena")
    assert isinstance(tree, exp.Select), where
    tables, columns, aliases = _tables_and_columns(tree)
    assert tables and tables <= set(TABLES), f"{where}: unknown tables {tables - set(TABLES)}"
    known = set().union(*(TABLES[t] for t in tables)) | aliases
    assert columns <= known, f"{where}: unknown columns {sorted(columns - known)}"
    # Every query prunes partitions (year/month/day) as well as filtering on time.
    assert {"year", "month", "day"} <= columns, f"{where}: no partition filter"
    # Round trip: sqlglot can print it back as Athena SQL.
    assert sqlglot.transpile(expanded, read="athena", write="athena")


def test_macro_expansion_matches_the_plugin():
    assert expand('$__timeFilter("timestamp")') == (
        f"\"timestamp\" BETWEEN TIMESTAMP '{FROM}' AND TIMESTAMP '{TO}'"
    )
    assert expand("$__timeGroup(\"timestamp\", '1h')") == (
        'FROM_UNIXTIME(FLOOR(TO_UNIXTIME("timestamp")/3600)*3600)'
    )
    with pytest.raises(AssertionError):
        expand("SELECT $unknown FROM readings")


def test_a_wrong_column_would_be_caught():
    tree = sqlglot.parse_one(expand("SELECT temprature FROM readings"), read="athena")
    _tables, columns, aliases = _tables_and_columns(tree)
    assert columns - (TABLES["readings"] | aliases) == {"temprature"}
