"""The reading and spike schemas: the single source of truth.

Everything else is derived from the tables below: the Arrow schemas written to Parquet, the
JSON Schema of the API Gateway request model, the Glue column lists in Terraform (checked by a
test) and the README's field table (also checked by a test).
"""

from __future__ import annotations

from dataclasses import dataclass

METRICS = ("temperature", "humidity", "co2")
METRIC_UNITS = {"temperature": "°C", "humidity": "%RH", "co2": "ppm"}
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


@dataclass(frozen=True)
class Column:
    name: str
    arrow: str  # pyarrow type alias (pa.type_for_alias): the schemas below are built on first use
    glue: str
    comment: str


READING_COLUMNS: tuple[Column, ...] = (
    Column("greenhouse_id", "string", "string", "greenhouse, 1-64 of [A-Za-z0-9_-]"),
    Column("device_id", "string", "string", "device within the greenhouse, same charset"),
    Column("timestamp", "timestamp[ms]", "timestamp", "event time, UTC"),
    Column("temperature", "float64", "double", "degrees Celsius"),
    Column("humidity", "float64", "double", "relative humidity, percent"),
    Column("co2", "float64", "double", "CO2, ppm"),
    Column("error_code", "int32", "int", "0 = healthy, anything else is a sensor fault"),
)

SPIKE_EXTRA_COLUMNS: tuple[Column, ...] = (
    Column("rule", "string", "string", "sensor_error | impossible | out_of_band | jump"),
    Column("metric", "string", "string", "temperature | humidity | co2 | error_code"),
    Column("severity", "string", "string", "critical | warning"),
    Column("detail", "string", "string", "human-readable reason"),
    Column("source_key", "string", "string", "log object the reading came from"),
    Column("detected_at", "timestamp[ms]", "timestamp", "when the rules found it, UTC"),
)

SPIKE_COLUMNS: tuple[Column, ...] = READING_COLUMNS + SPIKE_EXTRA_COLUMNS

# Hive-style partition keys, zero-padded strings (year=2026/month=01/...).
READING_PARTITIONS: tuple[str, ...] = ("year", "month", "day", "hour")
SPIKE_PARTITIONS: tuple[str, ...] = ("year", "month", "day")

_SCHEMAS = {"READING_SCHEMA": READING_COLUMNS, "SPIKE_SCHEMA": SPIKE_COLUMNS}


def __getattr__(name: str):
    """READING_SCHEMA and SPIKE_SCHEMA (pyarrow schemas), built when first asked for, so a
    command that never touches Arrow data does not import pyarrow (core.lazy); from then on
    they are ordinary module attributes."""
    if name not in _SCHEMAS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import pyarrow as pa

    schema = pa.schema([pa.field(c.name, pa.type_for_alias(c.arrow)) for c in _SCHEMAS[name]])
    globals()[name] = schema
    return schema


FIELD_NAMES = tuple(c.name for c in READING_COLUMNS)


def glue_columns(columns: tuple[Column, ...] = READING_COLUMNS) -> list[dict[str, str]]:
    """Column list as Glue (and Terraform's `columns` blocks) expect it."""
    return [{"name": c.name, "type": c.glue, "comment": c.comment} for c in columns]


def reading_json_schema() -> dict:
    """JSON Schema (draft-04, as API Gateway models require) for one reading.

    It checks shape only; value rules (charset, ranges, timestamp forms) live in validate.py,
    because devices may send epoch numbers, ISO strings and numeric strings.
    """
    return {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "title": "Reading",
        "type": "object",
        "required": list(FIELD_NAMES),
        "properties": {
            "greenhouse_id": {"type": "string", "pattern": ID_PATTERN},
            "device_id": {"type": "string", "pattern": ID_PATTERN},
            "timestamp": {"type": ["string", "number"]},
            "temperature": {"type": ["number", "string", "null"]},
            "humidity": {"type": ["number", "string", "null"]},
            "co2": {"type": ["number", "string", "null"]},
            "error_code": {"type": ["integer", "string"]},
        },
    }


def batch_json_schema(max_items: int = 500) -> dict:
    """JSON Schema for `{"records": [reading, ...]}`, the PutRecords-style batch body."""
    reading = reading_json_schema()
    reading.pop("$schema")
    return {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "title": "ReadingBatch",
        "type": "object",
        "required": ["records"],
        "properties": {
            "records": {"type": "array", "minItems": 1, "maxItems": max_items, "items": reading}
        },
    }
