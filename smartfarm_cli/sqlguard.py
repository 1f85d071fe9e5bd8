"""The gate every SQL text from outside passes before it reaches DuckDB or Athena.

A query is untrusted input: it may be exactly one read-only SELECT (or WITH ... SELECT, or a set
operation of SELECTs) over the `readings` and `spikes` tables. It is parsed with sqlglot, checked
node by node, and what runs is the SQL regenerated from the checked tree, never the user's text,
so anything sqlglot did not understand cannot slip through. The local target adds a second wall
for every statement, this gate's output and its own queries alike (core.queries builds those
from checked parameters and they skip the parse): DuckDB runs with external access off and its
configuration locked (see LocalTarget.query / _execute).
"""

from __future__ import annotations

import logging
import re

import sqlglot
from sqlglot import exp

from .core.queries import READINGS_TABLE, SPIKES_TABLE, QueryError

TABLES = frozenset({READINGS_TABLE, SPIKES_TABLE})

# Statement nodes that may never appear anywhere inside a query tree.
_FORBIDDEN = (
    exp.Into,
    exp.Insert,
    exp.Update,
    exp.Delete,
    exp.Merge,
    exp.Create,
    exp.Drop,
    exp.Alter,
    exp.Copy,
    exp.Command,
    exp.Set,
    exp.Pragma,
    exp.Use,
    exp.Transaction,
)
# DuckDB functions that reach the file system or run nested SQL (DuckDB's external-access
# switch blocks them too; refusing them here gives a clear message instead of a permission error).
_FILE_FUNCTION_PREFIXES = (
    "read_",
    "parquet_",
    "sniff_",
    "glob",
    "query",
    "iceberg_",
    "delta_",
    "sqlite_",
    "postgres_",
    "mysql_",
    "duckdb_",
    "pragma_",
    "load",
    "install",
)

logging.getLogger("sqlglot").setLevel(logging.ERROR)  # its parse warnings are ours to report


def read_only_select(sql: str, dialect: str = "athena") -> exp.Query:
    """Parse `sql` and return its tree if it is one read-only query over readings/spikes.

    Raises QueryError (a user mistake) naming what is not allowed.
    """
    if not sql or not sql.strip():
        raise QueryError('the query is empty; try "SELECT count(*) FROM readings"')
    try:
        statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except sqlglot.errors.SqlglotError as exc:
        raise QueryError(f"cannot parse the SQL: {str(exc).splitlines()[0]}") from None
    if len(statements) != 1:
        raise QueryError("give exactly one SQL statement")
    tree = statements[0]
    if not isinstance(tree, exp.Query):
        raise QueryError(
            f"only SELECT queries are allowed (got {tree.key.upper()}); "
            "farmctl query reads the readings and spikes tables and changes nothing"
        )
    for node in tree.walk():
        if isinstance(node, _FORBIDDEN):
            raise QueryError(f"{node.key.upper()} is not allowed in a query; use a plain SELECT")
        if isinstance(node, exp.Func):
            name = (node.name if isinstance(node, exp.Anonymous) else node.sql_name()).lower()
            if name.startswith(_FILE_FUNCTION_PREFIXES):
                raise QueryError(
                    f"function {name}() is not allowed: queries read only the readings and "
                    "spikes tables"
                )
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    for table in tree.find_all(exp.Table):
        name = table.this
        if not isinstance(name, exp.Identifier):
            raise QueryError(
                f"{table.sql(dialect=dialect)} is not a table; queries read only "
                f"{' and '.join(sorted(TABLES))}"
            )
        if table.args.get("db") or table.args.get("catalog"):
            raise QueryError(f"use {table.name!r} without a schema or catalog prefix")
        if table.name.lower() not in TABLES | ctes:
            raise QueryError(
                f"unknown table {table.name!r}; queries read only {' and '.join(sorted(TABLES))}"
            )
    return tree


def name_columns(tree: exp.Query) -> exp.Query:
    """Give unnamed result columns a name from their expression: count(*) -> count.

    Without it DuckDB says `count_star()` and Athena `_col0`: the same query would print
    different headers on the two targets.
    """
    select = tree
    while isinstance(select, exp.SetOperation):
        select = select.this  # a set operation takes its column names from the first SELECT
    if not isinstance(select, exp.Select):
        return tree
    taken = {e.alias_or_name.lower() for e in select.expressions}
    for position, projection in enumerate(select.expressions):
        if isinstance(projection, exp.Alias | exp.Column | exp.Star) or projection.alias:
            continue
        base = re.sub(r"[^a-z0-9]+", "_", projection.sql().lower()).strip("_")[:40] or "col"
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}_{n}"
        taken.add(name)
        select.expressions[position].replace(exp.alias_(projection.copy(), name, quoted=True))
    return tree


def to_dialect(sql: str, dialect: str) -> str:
    """The checked query, columns named, as SQL of `dialect` (``duckdb`` or ``athena``)."""
    return name_columns(read_only_select(sql)).sql(dialect=dialect)
