"""Targets: `local` (embedded, the default) and `aws` (the deployed stack), one interface.

Both satisfy `base.Target` (ingest, deliver, backfill, query, trend, spikes, latest, follow,
status, rejected, prepare) and return the same result types, so the CLI renders them alike.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError

if TYPE_CHECKING:
    from .base import Target

TARGET_ENV = "SMARTFARM_TARGET"
TARGETS = ("local", "aws")


@dataclass
class TargetOptions:
    name: str | None = None
    home: Path | None = None
    rules_path: str | None = None
    profile: str | None = None
    region: str | None = None
    stack_dir: Path | None = None
    alert_synthetic: bool = False  # local: synthetic readings alert too (--alert-synthetic)


def resolve_name(options: TargetOptions) -> str:
    """--target, else $SMARTFARM_TARGET, else aws when a deployed stack is known, else local.

    A cache that exists but may have been written by someone else (stack.check_cache_file) is
    refused with one line rather than trusted to pick the target.
    """
    name = options.name or os.environ.get(TARGET_ENV)
    if name is None:
        from ..stack import cache_path, check_cache_file
        from .local import default_home

        outputs = cache_path(options.home or default_home())
        name = "aws" if outputs.exists() or outputs.is_symlink() else "local"
        if name == "aws":
            check_cache_file(outputs)
    if name not in TARGETS:
        raise UserError(f"unknown target {name!r}; use --target local or --target aws")
    return name


def open_target(options: TargetOptions, alert_hook_factory=None) -> Target:
    """Build the chosen target; `alert_hook_factory(target)` gives the local Discord hook."""
    from ..core.rules import RulesError, load_rules

    try:
        rules = load_rules(options.rules_path)
    except RulesError as exc:
        raise UserError(str(exc)) from None
    name = resolve_name(options)
    if name == "aws":
        from .aws import AwsTarget

        return AwsTarget(options, rules)
    from .local import LocalTarget

    target = LocalTarget(options.home, rules, alert_synthetic=options.alert_synthetic)
    if alert_hook_factory is not None:
        target.alert_hook = alert_hook_factory(target)
    return target
