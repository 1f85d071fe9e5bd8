"""`farmctl keys ...`: the devices' API keys, one set per site, on either target.

aws: keys on each site's usage plan of kinesis_api_gw (sites are declared by Terraform's
`ingest_sites`; the keys are made here through the API Gateway API, so their values are never
in the Terraform state). local: the keys `farmctl serve` accepts, kept as hashes in the home.

A new key's value is shown exactly once: alone on stdout (so `KEY=$(farmctl keys create north)`
works) or written to `--out FILE` (mode 0600, never over an existing file). Listings never
carry a value. Mounted by cli.py with `app.add_typer(keys_app, name="keys")`.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import typer

from .errors import UserError
from .render import Col, OutputFormat, print_result
from .terminal import console, err_console, guarded

keys_app = typer.Typer(
    help="Device API keys per site: list, create, rotate, revoke.",
    no_args_is_help=True,
)

# The same rule as Terraform's ingest_sites validation (terraform/variables.tf).
SITE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?")
LABEL_MAX = 64
KEYS_VIEW = [
    Col("site"),
    Col("key_id", "key id", whole=True),
    Col("enabled"),
    Col("created", "created (UTC)"),
    Col("last_used", "last used", whole=True),
    Col("label", wide=True, wrap=True),
]

OutFile = typer.Option(
    None, "--out", help="Write the new key to this file (mode 0600) instead of stdout."
)


def _target(writes: bool):
    from .cli import State  # cli.py mounts this app, so it is loaded by then

    return State.target(reads_only=not writes)


def check_site(site: str) -> str:
    if not SITE.fullmatch(site or ""):
        raise UserError(
            f"{site!r} is not a site name: use 1-32 characters of a-z, 0-9 and '-', starting "
            "and ending with a letter or digit (e.g. north, gh-block-2)"
        )
    return site


def check_label(label: str) -> str:
    if len(label) > LABEL_MAX or any(not c.isprintable() for c in label):
        raise UserError(f"--label must be at most {LABEL_MAX} printable characters")
    return label


def _check_out(out: Path | None) -> None:
    """Before any key is made: the file must be new and its folder must exist."""
    if out is None:
        return
    if out.exists() or out.is_symlink():
        raise UserError(f"{out} exists: choose a new file name (farmctl never overwrites one)")
    if not out.parent.is_dir():
        raise UserError(f"the folder of {out} does not exist")


def _hand_over(new, out: Path | None) -> None:
    """Show the new key's value once: stdout alone, or a new 0600 file."""
    if out is not None:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(new.value + "\n")
        where = f"written to {out} (mode 0600)"
    else:
        sys.stdout.write(new.value + "\n")
        sys.stdout.flush()
        where = "printed on stdout, once: farmctl keeps no copy"
    err_console.print(
        f"new key {new.key_id} for site {new.site} {where}. Set it as the devices' x-api-key.",
        highlight=False,
        soft_wrap=True,
    )


def _resolve(rows: list[dict], which: str) -> tuple[str, list[dict]]:
    """SITE or KEY_ID -> (site, its keys); a key id wins only when no site has that name."""
    by_site = [r for r in rows if r["site"] == which]
    by_id = [r for r in rows if r["key_id"] == which]
    if by_site and by_id:
        raise UserError(f"{which!r} is both a site and a key id: pass the other one")
    if by_id:
        return by_id[0]["site"], by_id
    if by_site:
        return which, by_site
    raise UserError(f"no site or key id {which!r}: `farmctl keys list` shows both")


def _confirm(question: str) -> bool:
    """Ask on the terminal (stderr, so a captured stdout holds only the key); no terminal = no."""
    if not sys.stdin.isatty():
        return False
    try:
        return typer.confirm(question, default=False, err=True)
    except typer.Abort:
        return False


@keys_app.callback()
def _group() -> None:
    """Device API keys per site: list, create, rotate, revoke."""


@keys_app.command("list")
@guarded
def list_keys(
    site: str | None = typer.Option(None, "--site", help="Only this site's keys."),
    output: OutputFormat = typer.Option(
        OutputFormat.table, "--output", "-o", help="table, json or csv."
    ),
    wide: bool = typer.Option(False, "--wide", "-w", help="Show the labels too."),
) -> None:
    """Every device key: site, key id, enabled, created, last used. Never a key's value.

    Example: farmctl keys list   ·   farmctl keys list --site north -o json
    """
    target = _target(writes=False)
    result = target.list_keys()
    rows = result.rows
    if site is not None:
        rows = [r for r in rows if r[0] == check_site(site)]
    print_result(
        console,
        result.columns,
        rows,
        output,
        view=KEYS_VIEW,
        wide=wide,
        empty="no keys yet: `farmctl keys create SITE` makes one",
    )
    if output is OutputFormat.table and result.note:
        err_console.print(result.note, highlight=False, soft_wrap=True)


@keys_app.command("create")
@guarded
def create(
    site: str = typer.Argument(..., help="Site the key is for, e.g. north."),
    label: str = typer.Option("", "--label", help="What the key is for, e.g. a device name."),
    out: Path | None = OutFile,
) -> None:
    """A new key for SITE, printed once (or written to --out FILE, mode 0600).

    Example: KEY=$(farmctl keys create north --label esp32-7)
    """
    check_site(site)
    check_label(label)
    _check_out(out)
    target = _target(writes=True)
    _hand_over(target.create_key(site, label), out)


@keys_app.command("rotate")
@guarded
def rotate(
    which: str = typer.Argument(..., metavar="SITE|KEY_ID", help="A site, or one key by id."),
    revoke_old: bool = typer.Option(
        False, "--revoke-old", help="Disable the old key at once, without asking."
    ),
    delete_old: bool = typer.Option(
        False, "--delete-old", help="Delete the old key instead of disabling it."
    ),
    out: Path | None = OutFile,
) -> None:
    """A new key in place of the old one; the old one stays valid until you revoke it.

    The new key is printed once. Then, on a terminal, farmctl asks whether to revoke the old
    key now; answer no to keep both working while the devices are moved (`farmctl keys list`
    shows when the old key was last used), then `farmctl keys revoke KEY_ID`.

    Example: farmctl keys rotate north --out north.key
    """
    _check_out(out)
    target = _target(writes=True)
    try:
        site, keys = _resolve(target.list_keys().records(), which)
    except UserError:
        if not SITE.fullmatch(which):
            raise
        site, keys = which, []  # a site without keys yet (aws: create_key checks it exists)
    old = [r for r in keys if r["enabled"]]
    if len(old) > 1:
        ids = ", ".join(r["key_id"] for r in old)
        raise UserError(
            f"site {site} has {len(old)} enabled keys ({ids}): rotate one at a time with "
            "`farmctl keys rotate KEY_ID`"
        )
    label = old[0]["label"] if old else ""
    new = target.create_key(site, label)
    _hand_over(new, out)
    if not old:
        err_console.print(f"site {site} had no enabled key to replace", highlight=False)
        return
    old_id = old[0]["key_id"]
    verb = "delete" if delete_old else "revoke"
    if revoke_old or _confirm(
        f"{verb.capitalize()} the old key {old_id} of site {site} now? Devices still sending "
        "it get 403"
    ):
        target.revoke_key(old_id, delete=delete_old)
        err_console.print(f"old key {old_id} {verb}d", highlight=False)
    else:
        err_console.print(
            f"old key {old_id} stays valid: move the devices to the new key, check "
            f"`farmctl keys list` (last used), then `farmctl keys revoke {old_id}`",
            highlight=False,
            soft_wrap=True,
        )


@keys_app.command("revoke")
@guarded
def revoke(
    which: str = typer.Argument(
        ..., metavar="SITE|KEY_ID", help="One key by id, or every key of a site."
    ),
    delete: bool = typer.Option(False, "--delete", help="Delete instead of disable."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
) -> None:
    """Disable (or --delete) one key, or every key of a site: devices sending it get 403.

    Example: farmctl keys revoke k3v9x0abcd   ·   farmctl keys revoke north --delete --yes
    """
    target = _target(writes=True)
    site, keys = _resolve(target.list_keys().records(), which)
    chosen = keys if delete else [r for r in keys if r["enabled"]]
    if not chosen:
        err_console.print(f"nothing to revoke: no enabled key of {which}", highlight=False)
        return
    ids = ", ".join(r["key_id"] for r in chosen)
    verb = "delete" if delete else "disable"
    question = (
        f"{verb.capitalize()} {len(chosen)} key(s) of site {site} ({ids})? Devices sending "
        "them get 403"
    )
    if not yes:
        if not sys.stdin.isatty():
            raise UserError(f"{verb} {ids}: confirm on a terminal, or pass --yes")
        if not _confirm(question):
            err_console.print("nothing revoked", highlight=False)
            return
    for row in chosen:
        target.revoke_key(row["key_id"], delete=delete)
    err_console.print(f"{verb}d: {ids}", highlight=False, soft_wrap=True)
