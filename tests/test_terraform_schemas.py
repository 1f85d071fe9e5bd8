"""terraform/schemas/*.json are exactly what smartfarm_cli.core.schema produces.

Terraform loads them with file(): the API Gateway request models and the Glue column lists.
Regenerate with `python terraform/schemas/generate.py` after changing the core schema.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smartfarm_cli.core import schema

SCHEMAS = Path(__file__).resolve().parents[1] / "terraform/schemas"

EXPECTED = {
    "reading.json": schema.reading_json_schema,
    "reading_batch.json": schema.batch_json_schema,
    "glue_readings_columns.json": lambda: schema.glue_columns(schema.READING_COLUMNS),
    "glue_spikes_columns.json": lambda: schema.glue_columns(schema.SPIKE_COLUMNS),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_schema_file_equals_core_output(name):
    text = (SCHEMAS / name).read_text(encoding="utf-8")
    want = EXPECTED[name]()
    assert json.loads(text) == want, f"{name} is stale: run python terraform/schemas/generate.py"
    assert text == json.dumps(want, indent=2, ensure_ascii=False) + "\n"


def test_api_models_are_the_exact_json_dumps_of_the_core():
    for name, fn in (
        ("reading.json", schema.reading_json_schema),
        ("reading_batch.json", schema.batch_json_schema),
    ):
        model = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
        assert json.dumps(model) == json.dumps(fn())
        assert model["$schema"] == "http://json-schema.org/draft-04/schema#"
    batch = json.loads((SCHEMAS / "reading_batch.json").read_text(encoding="utf-8"))
    assert batch["properties"]["records"]["maxItems"] == 500


def test_glue_column_order_and_types_follow_the_core():
    got = json.loads((SCHEMAS / "glue_readings_columns.json").read_text(encoding="utf-8"))
    assert [(c["name"], c["type"]) for c in got] == [
        (c.name, c.glue) for c in schema.READING_COLUMNS
    ]
    spikes = json.loads((SCHEMAS / "glue_spikes_columns.json").read_text(encoding="utf-8"))
    assert [c["name"] for c in spikes] == [c.name for c in schema.SPIKE_COLUMNS]
