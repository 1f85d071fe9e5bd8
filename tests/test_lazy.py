"""core.lazy: pyarrow loads on first use, and its first conversion does not import pandas."""

from __future__ import annotations

import json
import subprocess
import sys

from smartfarm_cli.core.generator import generate, to_json_records


def _run(code: str, *args: str) -> list:
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_ingest_does_not_import_pandas(tmp_path):
    source = tmp_path / "readings.ndjson"
    records = to_json_records(
        generate(1_700_000_000_000, 50, 60, 2, 2, 0.05, synthetic=False).table
    )
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    code = (
        "import json, sys\n"
        "from smartfarm_cli.cli import app\n"
        "try:\n    app(sys.argv[1:])\n"
        "except SystemExit as exit:\n    code = exit.code\n"
        "print(json.dumps([code, 'pyarrow' in sys.modules, 'pandas' in sys.modules]))\n"
    )
    home = str(tmp_path / "home")
    assert _run(code, "--home", home, "--target", "local", "ingest", str(source)) == [
        0,
        True,
        False,
    ]


def test_pandas_imported_later_converts_as_usual():
    """After the first probe ran without pandas, a later pandas import is seen by pyarrow:
    a DataFrame becomes a table and a Categorical stays a dictionary (not plain strings)."""
    code = (
        "import json, sys\n"
        "from smartfarm_cli.core.lazy import pa\n"
        "pa.array([1, 2]).to_pylist()\n"
        "before = 'pandas' in sys.modules\n"
        "import pandas as pd\n"
        "frame = pd.DataFrame({'a': [1, 2], 'c': pd.Categorical(['x', 'y'])})\n"
        "print(json.dumps([before, pa.table(frame).num_rows,\n"
        "                  str(pa.array(pd.Categorical(['x', 'y'])).type),\n"
        "                  str(pa.Table.from_pandas(frame).schema.field('c').type)]))\n"
    )
    before, rows, categorical, column = _run(code)
    assert before is False
    assert rows == 2
    assert categorical.startswith("dictionary<values=")
    assert column.startswith("dictionary<values=")
