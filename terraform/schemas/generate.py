"""Regenerate the JSON files here from smartfarm_cli.core.schema (the single source of truth).

    python terraform/schemas/generate.py          # write the files
    python terraform/schemas/generate.py --check  # exit 1 if any file is stale

Terraform loads them with file(): the API Gateway request models (reading.json, reading_batch.json)
and the Glue column lists (glue_readings_columns.json, glue_spikes_columns.json).
tests/test_terraform_schemas.py fails when they drift from the core.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from smartfarm_cli.core import schema  # noqa: E402


def render(obj: object) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def expected() -> dict[str, str]:
    return {
        "reading.json": render(schema.reading_json_schema()),
        "reading_batch.json": render(schema.batch_json_schema()),
        "glue_readings_columns.json": render(schema.glue_columns(schema.READING_COLUMNS)),
        "glue_spikes_columns.json": render(schema.glue_columns(schema.SPIKE_COLUMNS)),
    }


def main(argv: list[str]) -> int:
    stale = []
    for name, text in expected().items():
        path = HERE / name
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current != text:
            stale.append(name)
            if "--check" not in argv:
                path.write_text(text, encoding="utf-8")
    if "--check" in argv and stale:
        print("stale: " + ", ".join(stale) + " (run python terraform/schemas/generate.py)")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
