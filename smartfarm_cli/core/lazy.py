"""pyarrow, imported the first time it is used.

A query command (`farmctl latest`, `trend`) needs DuckDB, not pyarrow, yet reaches modules that
compute with pyarrow elsewhere (the rules, validation, the lake). Importing pyarrow (and numpy
with it) costs ~0.15 s of such a command's ~0.4 s, so modules take `pa`, `pc` and `pq` from
here: the real module is imported on the first attribute read, and its attributes are then
copied onto the stand-in, so later reads are plain attribute reads. Module-level code must not
touch them (core.schema builds its Arrow schemas on first use for that reason).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any


class LazyModule:
    """Stands in for the module `name` until an attribute is read."""

    def __init__(self, name: str):
        self._lazy_name = name

    def __getattr__(self, attr: str) -> Any:  # only for attributes not copied yet
        module = importlib.import_module(self._lazy_name)
        vars(self).update(vars(module))
        return getattr(module, attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._lazy_name!r}>"


if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
else:
    pa = LazyModule("pyarrow")
    pc = LazyModule("pyarrow.compute")
    pq = LazyModule("pyarrow.parquet")
