"""Load a Lambda handler module from lambdas/<name>/handler.py (as the zip would run it)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load(name: str):
    module_name = f"reliability_{name}_handler"
    if module_name in sys.modules:
        return sys.modules[module_name]
    path = ROOT / "lambdas" / name / "handler.py"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module
