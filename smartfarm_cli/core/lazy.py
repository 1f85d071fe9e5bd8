"""pyarrow, imported the first time it is used, without the pandas import it would trigger.

A query command (`farmctl latest`, `trend`) needs DuckDB, not pyarrow, yet reaches modules that
compute with pyarrow elsewhere (the rules, validation, the lake). Importing pyarrow (and numpy
with it) costs ~0.15 s of such a command's ~0.4 s, so modules take `pa`, `pc` and `pq` from
here: the real module is imported on the first attribute read, and its attributes are then
copied onto the stand-in, so later reads are plain attribute reads. Module-level code must not
touch them (core.schema builds its Arrow schemas on first use for that reason).

pyarrow's first conversion of a Python value (`pa.array([...])`, `pa.scalar`, `as_py`) imports
pandas, when installed, only to learn whether the value is a pandas object: ~0.18 s of every
ingest, backfill or simulate, for objects we never pass. `_ask_without_pandas` asks that first
question with pandas hidden, so pyarrow records it as absent; should the process import pandas
later (the aws target, through awswrangler), pyarrow is told as soon as the import ends (its
shim loads pandas again on any call that needs it), so pandas objects convert as before.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any


class LazyModule:
    """Stands in for the module `name` until an attribute is read."""

    def __init__(self, name: str):
        self._lazy_name = name

    def __getattr__(self, attr: str) -> Any:  # only for attributes not copied yet
        module = importlib.import_module(self._lazy_name)
        _ask_without_pandas()
        vars(self).update(vars(module))
        return getattr(module, attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._lazy_name!r}>"


class _HidePandas:  # a meta path finder (importlib.abc.MetaPathFinder, which costs an import)
    def find_spec(self, name, path=None, target=None):
        if name == "pandas":
            raise ModuleNotFoundError("hidden from pyarrow's first probe", name=name)
        return None


class _TellPyarrowAboutPandas:  # a meta path finder and the loader it hands out
    """Finds pandas as usual; once it has loaded, lets pyarrow's shim import it for real."""

    def find_spec(self, name, path=None, target=None):
        if name != "pandas":
            return None
        import importlib.util

        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            self._loader, spec.loader = spec.loader, self
        return spec

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        import pyarrow.lib

        _ = pyarrow.lib._pandas_api.pd  # a raising property: it imports pandas again, and keeps it


_asked = False


def _ask_without_pandas() -> None:
    global _asked
    if _asked or "pandas" in sys.modules:
        return
    _asked = True
    import pyarrow

    hide = _HidePandas()
    sys.meta_path.insert(0, hide)
    try:
        pyarrow.array([0])  # the first conversion: pyarrow tries (and fails) to import pandas
    finally:
        sys.meta_path.remove(hide)
    import importlib.util

    if importlib.util.find_spec("pandas") is not None:
        sys.meta_path.insert(0, _TellPyarrowAboutPandas())


if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
else:
    pa = LazyModule("pyarrow")
    pc = LazyModule("pyarrow.compute")
    pq = LazyModule("pyarrow.parquet")
