"""Reproducible Lambda zips: `lambdas/<fn>/*.py` at the zip root plus `smartfarm_cli/core/`.

Each zip holds `handler.py` (handler `handler.handler`), `smartfarm_cli/__init__.py` and the
allowed files of `smartfarm_cli/core/`, nothing else: the stock python3.12 runtime brings boto3,
the AWS SDK for pandas layer brings pyarrow.

What goes in is an allow-list, not "everything but dot-files": `*.py` and `rules.toml` only, so
editor backups (`handler.py~`, `.swp`), notes, test events and build leftovers stay out. Dot-folders
(`.venv`, `.cache`, `.git`) and `__pycache__` are not entered. A symlink anywhere in the walked
tree (file or folder) stops the build with PackagingError: a link would pack whatever it points
at, from outside the source tree.

Reproducible: entries sorted, dated 1980-01-01 00:00, mode 0644, deflated at a fixed level, no
folder entries, so the same sources give the same bytes whatever their mtimes, modes or the
order the file system lists them in (Terraform's source_code_hash changes only with the code).
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

from .errors import UserError

FUNCTIONS = ("anomaly_detector", "pseudo_sensor_log", "firehose_transform", "silent_check")
PACKAGE_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_ROOT.parent
FIXED_TIME = (1980, 1, 1, 0, 0, 0)
FILE_MODE = 0o100644
ALLOWED_SUFFIXES = (".py",)
ALLOWED_NAMES = frozenset({"rules.toml"})
SKIP_DIRS = frozenset({"__pycache__"})


class PackagingError(UserError):
    """The Lambda sources are missing or hold something that must not ship (one line, exit 2)."""


def allowed(name: str) -> bool:
    """True for a file name the zips may carry (`*.py`, `rules.toml`; never a dot-file)."""
    if name.startswith("."):
        return False
    return name in ALLOWED_NAMES or name.endswith(ALLOWED_SUFFIXES)


def _refuse_link(path: Path) -> None:
    if path.is_symlink():
        raise PackagingError(
            f"{path} is a symlink; the Lambda zips take regular files only (a link would pack "
            "whatever it points at): replace it with the file itself or remove it"
        )


def _files(base: Path) -> list[Path]:
    """Allowed regular files under `base`, skipping dot-folders and __pycache__."""
    _refuse_link(base)
    found = []
    for folder, dirs, names in os.walk(base, followlinks=False):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS)
        for name in dirs:
            _refuse_link(here / name)
        for name in sorted(names):
            path = here / name
            if not allowed(name):
                continue
            _refuse_link(path)
            if not path.is_file():  # a FIFO, socket or device named like a source file
                raise PackagingError(f"{path} is not a regular file; remove it")
            found.append(path)
    return found


def zip_entries(name: str, repo_root: Path = REPO_ROOT) -> dict[str, Path]:
    """{archive name: source file} for one function."""
    function_dir = repo_root / "lambdas" / name
    if not (function_dir / "handler.py").is_file():
        raise PackagingError(
            f"{function_dir / 'handler.py'} not found; build the zips from a source checkout"
        )
    entries = {p.relative_to(function_dir).as_posix(): p for p in _files(function_dir)}
    package = repo_root / "smartfarm_cli"
    _refuse_link(package)
    _refuse_link(package / "__init__.py")
    entries["smartfarm_cli/__init__.py"] = package / "__init__.py"
    for path in _files(package / "core"):
        entries[path.relative_to(repo_root).as_posix()] = path
    return entries


def write_zip(entries: dict[str, Path], target: Path) -> Path:
    """Write the entries reproducibly; the target is replaced atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w") as archive:
            for arcname in sorted(entries):
                info = zipfile.ZipInfo(arcname, date_time=FIXED_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.create_system = 3  # unix, so external_attr holds the mode
                info.external_attr = FILE_MODE << 16
                archive.writestr(info, entries[arcname].read_bytes(), compresslevel=9)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def build_lambda_zips(
    out_dir: Path = Path("build/lambda"),
    functions: tuple[str, ...] = FUNCTIONS,
    repo_root: Path = REPO_ROOT,
) -> dict[str, Path]:
    """Build `<out_dir>/<function>.zip` for each function -> {function: zip path}."""
    out_dir = Path(out_dir)
    return {
        name: write_zip(zip_entries(name, repo_root), out_dir / f"{name}.zip") for name in functions
    }


if __name__ == "__main__":  # python -m smartfarm_cli.packaging [OUT_DIR], from the repository root
    import sys

    built = build_lambda_zips(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("build/lambda"))
    for function, zip_path in sorted(built.items()):
        print(f"{function}: {zip_path}")
