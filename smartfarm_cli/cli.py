"""farmctl: drive the smartfarm pipeline on the local (embedded) or the aws target.

Commands only parse options, call a target and render. Heavy libraries (pyarrow, duckdb,
boto3, awswrangler) are imported inside the commands, so `farmctl --help` stays instant.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
from pathlib import Path

import typer

from .core import simulation as sim
from .discord_cli import discord_app, set_ssm_parameter_source
from .errors import UserError
from .keys import keys_app
from .render import (
    ALERTS_VIEW,
    INGEST_VIEW,
    LATEST_VIEW,
    REJECTED_VIEW,
    SPIKES_VIEW,
    TREND_SUMMARY_VIEW,
    OutputFormat,
    mark_synthetic,
    print_result,
    with_spike_reading,
)
from .targets import TargetOptions, open_target
from .terminal import FarmctlGroup, console, err_console, guarded

app = typer.Typer(
    help="Greenhouse sensor pipeline: simulate, ingest, query, watch and alert.\n\n"
    "Runs on the embedded `local` target (no AWS account needed) or the deployed `aws` stack.",
    cls=FarmctlGroup,
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    # Plain click help: rich help pulls in markdown-it and doubles `farmctl --help` time.
    rich_markup_mode=None,
)
app.add_typer(discord_app, name="discord")
app.add_typer(keys_app, name="keys")

LEGACY_HOME = ".smartfarm"  # the default home before it moved to the user's data folder
OutputOption = typer.Option(OutputFormat.table, "--output", "-o", help="table, json or csv.")
WideOption = typer.Option(False, "--wide", "-w", help="Show every column in the table.")
GreenhouseFilter = typer.Option(
    None, "--greenhouse", "--gh", help="Only this greenhouse id, e.g. gh-1.", show_default=False
)


def SyntheticOption(default: str):
    return typer.Option(
        default,
        "--synthetic",
        help="Synthetic readings (simulate, demo, backfill): exclude, include or only.",
    )


class State:
    options = TargetOptions()
    _target = None
    reads_only = False  # the command asked only to read (see main)

    @classmethod
    def target(cls, reads_only: bool = False):
        """The chosen target, checked before anything is drawn or asked (Target.prepare)."""
        if cls._target is None:
            from .alerting import local_alert_hook

            cls._target = open_target(cls.options, alert_hook_factory=local_alert_hook)
        cls._target.prepare(writes=not reads_only)
        cls.reads_only = reads_only
        return cls._target


def run() -> None:
    """The `farmctl` console script: `app`, and a quick exit after a command that only read.

    Once a read's output is flushed, tearing the interpreter down (module by module, then
    DuckDB's engine) takes ~20 ms of a ~0.2 s query command and does nothing the finished read
    needs, so it ends with `os._exit`. Every other command exits as usual.
    """
    try:
        app()
    except SystemExit as done:
        if State.reads_only and (done.code is None or isinstance(done.code, int)):
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            except OSError:  # e.g. a closed pipe: the usual exit reports it
                raise done from None
            os._exit(done.code or 0)
        raise


def command(*names: str):
    """Register a command under one or more names; failures end in one line (terminal.py)."""

    def register(fn):
        wrapper = guarded(fn)
        app.command(names[0])(wrapper)
        for alias in names[1:]:
            app.command(alias, help=f"Alias of `{names[0]}`.")(wrapper)
        return wrapper

    return register


@app.callback()
def main(
    target: str = typer.Option(
        None,
        "--target",
        "-t",
        envvar="SMARTFARM_TARGET",
        help="local or aws. Default: aws when a deployed stack is known, else local.",
    ),
    home: Path = typer.Option(
        None,
        "--home",
        envvar="SMARTFARM_HOME",
        help="farmctl's home: local data (stream, lake, spikes) and the aws stack's outputs. "
        "Default: the user's data folder (Linux: ~/.local/share/smartfarm).",
    ),
    rules: str = typer.Option(
        None, "--rules", envvar="SMARTFARM_RULES", help="TOML file overriding the anomaly rules."
    ),
    profile: str = typer.Option(None, "--profile", envvar="AWS_PROFILE", help="AWS profile (aws)."),
    region: str = typer.Option(None, "--region", envvar="AWS_REGION", help="AWS region (aws)."),
    stack_dir: Path = typer.Option(
        None, "--stack-dir", help="Terraform folder of the aws stack. Default ./terraform"
    ),
    alert_synthetic: bool = typer.Option(
        False,
        "--alert-synthetic",
        envvar="SMARTFARM_ALERT_SYNTHETIC",
        help="local: synthetic readings (simulate, demo) open incidents and alert like real "
        "ones. Default: their spikes are stored, nothing is sent. (aws: the stack's "
        "alert_on_synthetic variable.)",
    ),
    version: bool = typer.Option(
        False,
        "--version",
        "-V",
        is_eager=True,
        callback=lambda value: _print_version() if value else None,
        help="Show farmctl's version and exit.",
    ),
) -> None:
    State.options = TargetOptions(
        target, home, rules, profile, region, stack_dir, alert_synthetic=alert_synthetic
    )
    State._target = None
    if home is None and Path(LEGACY_HOME).is_dir():
        from .targets.local import default_home

        typer.echo(
            f"note: ./{LEGACY_HOME} is no longer read by default (farmctl's home is now "
            f"{default_home()}); pass --home {LEGACY_HOME} to use it",
            err=True,
        )
    set_ssm_parameter_source(_aws_webhook_parameter)


def _print_version() -> None:
    from importlib.metadata import version

    console.print(f"farmctl {version('smartfarm-cli')}", highlight=False)
    raise typer.Exit()


def _aws_webhook_parameter() -> tuple[str, object] | None:
    """(SSM parameter holding the Discord webhook, ssm client in the stack's region) on aws."""
    from .targets import resolve_name

    if resolve_name(State.options) != "aws":
        return None
    target = State.target()
    name = target.discord_webhook_parameter()
    return (name, target.client("ssm")) if name else None


# -- feeding the pipeline -----------------------------------------------------------------


@command("simulate", "send-fake-logs")
def simulate(
    count: int = typer.Option(
        12, "--count", "-n", min=1, max=sim.MAX_COUNT, help="Sends (time steps)."
    ),
    interval: float = typer.Option(
        10.0, "--interval", "-i", min=0, max=sim.MAX_INTERVAL_S, help="Seconds between sends."
    ),
    greenhouses: int = typer.Option(
        1, "--greenhouses", "-g", min=1, max=sim.MAX_GREENHOUSES, help="Greenhouses per send."
    ),
    devices: int = typer.Option(
        1, "--devices", "-d", min=1, max=sim.MAX_DEVICES, help="Devices per greenhouse."
    ),
    anomaly_rate: float = typer.Option(
        0.0, "--anomaly-rate", min=0, max=1, help="Share of anomalous readings, e.g. 0.05."
    ),
    seed: int = typer.Option(None, "--seed", help="Seed for repeatable readings."),
    direct: bool = typer.Option(
        False, "--direct", help="aws: send from this machine, not via pseudo_api_gw."
    ),
) -> None:
    """Send fake readings: --count sends, --interval seconds apart, one reading per device.

    The same as the pseudo_sensor_log Lambda's `{"count": 12, "interval": 10}` request.
    Anomalies are injected on every second send (a first reading has nothing to jump from).

    Example: farmctl simulate --count 12 --interval 10 --greenhouses 3 --anomaly-rate 0.05
    """
    from rich.progress import Progress

    request = dict(count=count, interval=interval, greenhouses=greenhouses, devices=devices)
    try:  # the same bounds as the pseudo_sensor_log Lambda's request body
        sim.parse_body({**request, "anomaly_rate": anomaly_rate}, budget_s=math.inf)
    except sim.BadRequest as exc:
        raise UserError(str(exc)) from None
    target = State.target()
    try:
        with Progress(console=err_console.real, transient=True) as progress:
            task = progress.add_task("sending", total=count)
            report = target.simulate(
                count=count,
                interval_s=interval,
                greenhouses=greenhouses,
                devices=devices,
                anomaly_rate=anomaly_rate,
                seed=seed,
                direct=direct,
                progress=lambda done, total: progress.update(task, completed=done),
            )
    except KeyboardInterrupt:
        if target.name == "local":
            err_console.print(
                "interrupted: the readings sent so far are in the stream; "
                f"`{_farmctl()} flush` delivers them to the lake now"
            )
        raise typer.Exit(130) from None
    console.print(report.summary())
    if anomaly_rate and count == 1:
        err_console.print("no anomalies with --count 1: they go on every second send")
    if target.name == "local":
        err_console.print(
            f"next: `{_farmctl()} latest`, `{_farmctl()} spikes`, "
            f"`{_farmctl()} trend temperature --days 1 --synthetic include` "
            "(simulated readings are marked synthetic)",
            style="dim",
        )


def _farmctl() -> str:
    """How to call farmctl again on the same home (for hints)."""
    return f"farmctl --home {State.options.home}" if State.options.home else "farmctl"


@command("ingest")
def ingest(
    source: str = typer.Argument("-", help="NDJSON or JSON-array file; - reads stdin."),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 when any reading is rejected."),
    wide: bool = WideOption,
    output: OutputFormat = OutputOption,
) -> None:
    """Send readings from a file or stdin through the target's ingest path.

    Example: farmctl ingest readings.ndjson   |   cat readings.json | farmctl ingest -
    """
    if source == "-" and sys.stdin.isatty():
        err_console.print("reading readings from the terminal; end with Ctrl-D (or give a FILE)")
    try:
        handle = sys.stdin.buffer if source == "-" else open(source, "rb")  # noqa: SIM115
    except FileNotFoundError:
        raise UserError(f"no such file: {source}") from None
    except IsADirectoryError:
        raise UserError(f"{source} is a folder; give a file of readings") from None
    with handle:
        result = State.target().ingest_stream(handle)
    duplicates = f", {result.duplicates} already stored" if result.duplicates else ""
    if result.differed:
        duplicates += (
            f" ({result.differed} differed from the stored copy: the first was kept, "
            "the others are in `farmctl rejected`)"
        )
    unlisted = f" ({result.unlisted_rejected} not listed; see `farmctl rejected`)"
    unlisted = unlisted if result.unlisted_rejected else ""
    err_console.print(
        f"accepted {result.accepted}, rejected {result.rejected_count}{duplicates}{unlisted}"
    )
    if not (result.accepted or result.rejected or result.duplicates):
        err_console.print(f"warning: {source if source != '-' else 'stdin'} held no readings")
    if result.rejected:
        # line: NDJSON line number in the file (blank lines counted); JSON array: item position.
        rows = [(r.index + 1, r.reason, r.raw) for r in result.rejected]
        print_result(
            console,
            ["line", "reason", "input"],
            rows,
            output,
            title="rejected (--wide shows the input)",
            view=INGEST_VIEW,
            wide=wide,
        )
    if strict and result.rejected:
        raise typer.Exit(1)


@command("backfill")
def backfill(
    days: float = typer.Option(7, "--days", min=0.01, max=3660, help="Days of history to write."),
    greenhouses: int = typer.Option(
        3, "--greenhouses", "-g", min=1, max=1000, help="How many greenhouses (gh-1, gh-2, ...)."
    ),
    devices: int = typer.Option(
        2, "--devices", "-d", min=1, max=100, help="Devices per greenhouse (dev-1, ...)."
    ),
    every: str = typer.Option("1m", "--every", help="Reading interval, e.g. 1m, 5m, 1h."),
    anomaly_rate: float = typer.Option(
        0.001, "--anomaly-rate", min=0, max=1, help="Share of anomalous readings, e.g. 0.01."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for repeatable history."),
) -> None:
    """Write generated history straight into the lake (spikes included, no alerts).

    Only readings the lake lacks are written: nothing stored is replaced, and running the
    same backfill again adds nothing.

    Example: farmctl backfill --days 7 --greenhouses 20 --every 1m
    """
    from rich.progress import Progress

    from .core.queries import parse_duration

    interval = parse_duration(every).total_seconds()
    target = State.target()
    started = time.perf_counter()
    with Progress(console=err_console.real, transient=True) as progress:
        task = progress.add_task("backfilling", total=None)
        report, bad = target.backfill(
            days=days,
            greenhouses=greenhouses,
            devices=devices,
            interval_s=interval,
            anomaly_rate=anomaly_rate,
            seed=seed,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    elapsed = time.perf_counter() - started
    rate = report.readings / elapsed if elapsed else 0
    already = (
        f"; {report.already_stored:,} already in the lake (kept as stored)"
        if report.already_stored
        else ""
    )
    console.print(
        f"wrote {report.readings:,} readings in {len(report.files)} files "
        f"({elapsed:.2f} s, {rate:,.0f} readings/s); {report.spikes:,} spikes; "
        f"{bad} rejected{already}"
    )


@command("flush")
def flush() -> None:
    """Deliver everything waiting in the local stream to the lake now."""
    target = State.target()
    if target.name == "aws":
        console.print("aws: Firehose delivers by itself (64 MiB or 60 s buffer); nothing to flush")
        return
    report = target.deliver(force=True)
    console.print(
        f"delivered {report.readings} readings in {len(report.files)} files, {report.spikes} spikes"
    )


@command("compact")
def compact(
    everything: bool = typer.Option(
        False, "--all", help="Every closed hour of the lake, not only those written lately."
    ),
) -> None:
    """Compact closed hour partitions of the local lake to one file each.

    Runs by itself after every delivery; this command also delivers what is pending first.
    Example: farmctl compact --all
    """
    target = State.target()
    if target.name == "aws":
        raise UserError("compact works on the local lake; on aws see terraform/README.md")
    done = target.compact(everything=everything)
    console.print(f"compacted {done} hour partition(s) to one file each")


# -- asking questions ---------------------------------------------------------------------


@command("trend")
def trend(
    metric: str = typer.Argument(..., help="temperature, humidity or co2."),
    days: float = typer.Option(7, "--days", help="Window length in days, e.g. 7 or 0.5."),
    every: str = typer.Option("1h", "--every", help="Bucket size: 1m, 15m, 1h, 6h, 1d..."),
    greenhouse: str = GreenhouseFilter,
    chart: bool = typer.Option(True, "--chart/--no-chart", help="Draw the terminal chart."),
    table: bool = typer.Option(
        False, "--table", help="Show every bucket as a table instead of the per-greenhouse summary."
    ),
    tz: str = typer.Option(
        None,
        "--tz",
        help="Zone for buckets and their times, e.g. Asia/Seoul "
        "(default $SMARTFARM_TZ, else this machine's zone).",
    ),
    synthetic: str = SyntheticOption("exclude"),
    output: OutputFormat = OutputOption,
) -> None:
    """Average / min / max of a metric per time bucket and greenhouse.

    On a terminal: a chart and one summary row per greenhouse (mean, min, max, last bucket).
    The full series (one row per bucket and greenhouse) comes with --table, -o json or -o csv.

    Example: farmctl trend temperature --days 7 --every 6h --greenhouse gh-1
    """
    from .core.schema import METRIC_UNITS
    from .render import trend_chart, trend_summary

    target = State.target(reads_only=True)
    result = target.trend(metric, days, every, greenhouse, tz, synthetic=synthetic)
    window = "last day" if days == 1 else f"last {days:g} days"
    if output is not OutputFormat.table:
        print_result(console, result.columns, result.rows, output)
    elif not result.rows:
        _check_greenhouse(target, greenhouse)
        hint = ""
        if (
            synthetic == "exclude"
            and target.trend(metric, days, every, greenhouse, tz, synthetic="only").rows
        ):
            hint = " (synthetic readings only: add --synthetic include)"
        err_console.print(f"no {metric} readings in the {window}{hint}")
    else:
        unit = METRIC_UNITS[metric]
        drawn = trend_chart(result.rows, metric, unit, width=console.width - 2) if chart else None
        if drawn is not None:
            console.print(drawn)
        elif chart:
            err_console.print("one bucket only: no chart (try a smaller --every)")
        title = f"{metric} ({unit}), {window}, every {every}"
        if table:
            print_result(console, result.columns, result.rows, output, title=title)
        else:
            columns, rows = trend_summary(result.rows)
            print_result(console, columns, rows, output, title=title, view=TREND_SUMMARY_VIEW)
    _note(result)


def _check_greenhouse(target, greenhouse: str | None) -> None:
    """An empty answer for a greenhouse the lake has never seen is a typo: say so."""
    if (
        greenhouse
        and not target.query(
            "SELECT 1 FROM readings WHERE greenhouse_id = ? LIMIT 1", [greenhouse]
        ).rows
    ):
        raise UserError(f"unknown greenhouse {greenhouse!r}: no reading of it is stored")


@command("query")
def query(
    sql: str = typer.Argument(
        ..., help="One read-only SELECT in Athena (Trino) dialect over readings and spikes."
    ),
    wide: bool = WideOption,
    output: OutputFormat = OutputOption,
) -> None:
    """Run one read-only SELECT on the `readings` and `spikes` tables.

    Only a SELECT (or WITH ... SELECT) over readings and spikes runs; anything that would
    write, read files or change settings is refused. Unnamed columns are named after their
    expression (count(*) -> count).

    Example: farmctl query "SELECT greenhouse_id, max(co2) FROM readings GROUP BY 1"
    """
    result = State.target(reads_only=True).query(sql)
    print_result(console, result.columns, result.rows, output, wide=wide, empty="no rows")
    _note(result)


@command("spikes")
def spikes(
    since: str = typer.Option(
        "24h", "--since", help="Window on the reading's time, e.g. 30m, 24h, 7d."
    ),
    severity: str = typer.Option(None, "--severity", "-s", help="critical or warning."),
    greenhouse: str = GreenhouseFilter,
    limit: int = typer.Option(200, "--limit", min=1, max=100_000, help="At most this many rows."),
    wide: bool = WideOption,
    detected: bool = typer.Option(
        False,
        "--detected",
        help="--since counts from when the rules found the spike, not from the reading's time.",
    ),
    synthetic: str = SyntheticOption("include"),
    output: OutputFormat = OutputOption,
) -> None:
    """Stored anomalies, most severe and newest first.

    The table shows what fired where; --wide (or -o json / csv) adds the detail, all the
    reading's values and the log object each spike came from.

    Example: farmctl spikes --since 7d --severity critical
    """
    target = State.target(reads_only=True)
    result = target.spikes(since, severity, greenhouse, limit, detected, synthetic=synthetic)
    if not result.rows and output is OutputFormat.table:
        _check_greenhouse(target, greenhouse)
    columns, rows, footnote = result.columns, result.rows, None
    if output is OutputFormat.table:
        columns, rows = with_spike_reading(columns, rows)
        rows, footnote = mark_synthetic(columns, rows)
    print_result(
        console,
        columns,
        rows,
        output,
        title=f"spikes, last {since}",
        view=SPIKES_VIEW,
        wide=wide,
        empty=f"no spikes in the last {since}" + (f" for {greenhouse}" if greenhouse else ""),
        caption=footnote,
    )
    _note(result)


@command("latest")
def latest(
    synthetic: str = SyntheticOption("include"), output: OutputFormat = OutputOption
) -> None:
    """The newest reading of every device in the lake (last 24 h), synthetic ones marked.

    Example: farmctl latest -o json
    """
    result = State.target(reads_only=True).latest(synthetic=synthetic)
    print_result(
        console,
        result.columns,
        result.rows,
        output,
        title="latest reading per device (UTC)",
        view=LATEST_VIEW,
        empty="no readings in the last 24 hours",
    )
    _note(result)


@command("rejected")
def rejected(
    limit: int = typer.Option(50, "--limit", min=1, help="At most this many rows."),
    wide: bool = WideOption,
    output: OutputFormat = OutputOption,
) -> None:
    """Readings the pipeline refused, with the reason (newest first).

    --wide (or -o json / csv) adds the raw input as it arrived.

    Example: farmctl rejected --limit 10 --wide
    """
    result = State.target(reads_only=True).rejected(limit)
    print_result(
        console,
        result.columns,
        result.rows,
        output,
        title="rejected readings",
        view=REJECTED_VIEW,
        wide=wide,
        empty="no rejected readings",
    )


@command("alerts")
def alerts_(
    since: str = typer.Option("24h", "--since", help="History window, e.g. 1h, 24h, 7d."),
    state: str = typer.Option(None, "--state", help="open or resolved (default: both)."),
    wide: bool = WideOption,
    output: OutputFormat = OutputOption,
) -> None:
    """Open incidents and recent incident history (opened, still firing, resolved).

    The table shows what is wrong where and since when; --wide (or -o json / csv) adds the
    severity, each event's time, the anomaly count and the worst value.

    Example: farmctl alerts --state open
    """
    target = State.target(reads_only=True)
    result = target.alerts(since, state)
    print_result(
        console,
        result.columns,
        result.rows,
        output,
        title=f"incidents, last {since}",
        view=ALERTS_VIEW,
        wide=wide,
        empty={
            "open": "no open incidents",
            "resolved": f"no incidents resolved in the last {since}",
        }.get(state or "", f"no open incidents and no incident history in the last {since}"),
    )


@command("check")
def check() -> None:
    """Look for silent devices now, and send queued alerts (no reading needed).

    On the aws target this runs the deployed silent_check Lambda (what its schedule runs).

    Example: farmctl check
    """
    target = State.target()
    from .core.incidents import describe

    events = target.check(retry_after_s=0)
    for event in events:
        console.print(describe(event), highlight=False)
    err_console.print(f"{len(events)} device(s) newly silent")


@command("status")
def status(output: OutputFormat = OutputOption) -> None:
    """Target, counts, newest reading, delivery lag and today's spikes.

    Example: farmctl status -o json
    """
    print_record(State.target(reads_only=True).status(), output, title="smartfarm status")


def print_record(info: dict, output: OutputFormat, title: str) -> None:
    """One object: a two-column table, one JSON object, or a CSV header and one row.

    Machine output uses snake_case keys; the table shows them as words.
    """
    from .render import RECORD_VIEW, write_csv, write_json_object

    info = {re.sub(r"[^a-z0-9]+", "_", key.lower()).strip("_"): v for key, v in info.items()}
    if output is OutputFormat.json:
        write_json_object(info)
    elif output is OutputFormat.csv:
        write_csv(list(info), [list(info.values())])
    else:
        rows = [(key.replace("_", " "), value) for key, value in info.items()]
        print_result(console, ["item", "value"], rows, output, title=title, view=RECORD_VIEW)


@command("watch")
def watch(
    duration: float = typer.Option(
        0, "--duration", help="Stop after N seconds (0 = until Ctrl-C)."
    ),
    refresh: float = typer.Option(0.2, "--refresh", min=0.05, help="Seconds between polls."),
) -> None:
    """Live table of the latest reading per device; anomalies highlighted.

    Example: farmctl watch   (then run `farmctl simulate` in another terminal)
    """
    from rich.live import Live

    from .watch import LatestBoard

    target = State.target()  # a new home is fine: watch waits for the first readings
    board = LatestBoard(target.rules)
    deadline = time.monotonic() + duration if duration else None
    with Live(board.render(), console=console.real, refresh_per_second=8, transient=False) as live:
        for batch in target.follow(poll_s=refresh):
            if batch.num_rows:
                board.update(batch)
                live.update(board.render())
            if deadline and time.monotonic() >= deadline:
                break


@command("serve")
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (loopback)."),
    port: int = typer.Option(8787, "--port", min=0, max=65535, help="TCP port (0 = any free)."),
    api_key_file: Path = typer.Option(
        None,
        "--api-key-file",
        help="File holding one more API key (else $SMARTFARM_API_KEY); device keys: farmctl keys.",
    ),
    show_key: bool = typer.Option(False, "--show-key", hidden=True),
    certfile: Path = typer.Option(None, "--certfile", help="TLS certificate (PEM)."),
    keyfile: Path = typer.Option(None, "--keyfile", help="TLS private key (PEM)."),
    rate_limit: float = typer.Option(
        50, "--rate-limit", min=0.1, help="Requests/s per API key (usage-plan throttle)."
    ),
    burst_limit: int = typer.Option(100, "--burst-limit", min=1, help="Burst of requests per key."),
    flush_rows: int = typer.Option(5000, "--flush-rows", min=1, help="Deliver at this many rows."),
    flush_age: float = typer.Option(10.0, "--flush-age", min=0.1, help="...or at this age (s)."),
    client_timeout: float = typer.Option(
        10.0, "--client-timeout", min=0.1, max=300, help="Seconds a client has for headers/body."
    ),
    fsync: bool = typer.Option(
        True,
        "--fsync/--no-fsync",
        help="Sync the stream to disk before each 200 (survives a power cut); --no-fsync: "
        "survives a process crash only, for about a third more requests/s.",
    ),
) -> None:
    """Ingest API for real devices (same contract as kinesis_api_gw) plus a live dashboard.

    Example: farmctl serve   then   curl -H "x-api-key: $KEY" -H "Content-Type: application/json"
    --data-binary @reading.json localhost:8787/record   (KEY=$(farmctl keys create SITE))
    """
    try:
        from .serve.app import Settings, create_app
        from .serve.keys import load_keyring
        from .serve.runner import serve as run_server
    except ImportError as exc:
        raise UserError(
            f"farmctl serve needs the serve extra ({exc.name} is missing): "
            "pip install 'smartfarm-cli[serve]'"
        ) from None

    target = State.target()  # a home that cannot be used: one line now
    if target.name != "local":
        raise UserError("serve runs the local pipeline; use --target local")
    home = target.home
    if show_key:
        raise UserError(
            "serve keeps only hashes of its keys, so it cannot show one: `farmctl keys create "
            "SITE` (or `farmctl keys rotate SITE`) makes a key and prints it once"
        )
    keys = load_keyring(home, api_key_file)
    err_console.print(f"API keys: {keys.describe()}", soft_wrap=True, highlight=False)
    settings = Settings(
        home=home,
        api_key=keys,
        rules_path=State.options.rules_path,
        rate_limit=rate_limit,
        burst_limit=burst_limit,
        flush_rows=flush_rows,
        flush_age_s=flush_age,
        fsync=fsync,
        body_timeout_s=client_timeout,
    )
    run_server(create_app(settings), host, port, certfile, keyfile, client_timeout)


@command("demo")
def demo() -> None:
    """Backfill a week, stream a live burst with anomalies, show the trend and the spikes.

    Example: farmctl demo   (uses ./.smartfarm-demo unless --home is given)
    """
    from .demo import run_demo

    if State.options.name == "aws":
        raise UserError("the demo runs on the local target; drop --target aws")
    State.options.home = State.options.home or Path(".smartfarm-demo")
    State.options.name = "local"
    run_demo(State.target(), console)


# -- the aws stack (deploy, destroy, crawl) -------------------------------------------------


def _aws_target():
    """The aws target even before any stack is known (deploy is what creates it)."""
    from .core.rules import load_rules
    from .targets.aws import AwsTarget

    if State.options.name not in (None, "aws"):
        raise UserError("this command drives the aws stack; drop --target local")
    return AwsTarget(State.options, load_rules(State.options.rules_path))


def _confirm(question: str) -> bool:
    """Ask yes/no; no answer at all (a closed stdin) is a no."""
    try:
        return typer.confirm(question, default=False)
    except typer.Abort:
        return False


def _echo(line: str) -> None:
    console.out(line, highlight=False)


StateBucketOption = typer.Option(
    None,
    "--state-bucket",
    help="S3 bucket for the Terraform state (created if missing: versioned, SSE-KMS, "
    "TLS only); saved in <stack-dir>/farmctl.s3.tfbackend for later runs.",
)
StatePrefixOption = typer.Option(
    None, "--state-prefix", help="Key prefix of the state object. Default smartfarm."
)
StateKmsOption = typer.Option(
    None,
    "--state-kms-key",
    help="KMS key (ARN, id or alias/...) for the state. Default: a key farmctl creates.",
)
LocalStateOption = typer.Option(
    False,
    "--local-state",
    help="Keep the state in <stack-dir>/terraform.tfstate (0600) instead of S3; it holds "
    "API key values in plain text.",
)


def _state_request(bucket, prefix, kms_key, local):
    from .state_backend import StateRequest

    return StateRequest(bucket=bucket, prefix=prefix, kms_key=kms_key, local=local)


@command("deploy")
def deploy(
    auto_approve: bool = typer.Option(
        False, "--auto-approve", help="Apply the plan without asking."
    ),
    var_file: Path = typer.Option(None, "--var-file", help="Terraform .tfvars file to use."),
    state_bucket: str = StateBucketOption,
    state_prefix: str = StatePrefixOption,
    state_kms_key: str = StateKmsOption,
    local_state: bool = LocalStateOption,
    output: OutputFormat = OutputOption,
) -> None:
    """Set up the Terraform state, build the Lambda zips, run terraform init / plan / apply,
    and remember the outputs.

    The state (it holds API key values) goes to S3: the first deploy names the
    bucket with --state-bucket, later ones reuse it. --local-state keeps it in a local file.

    Example: farmctl deploy --state-bucket smartfarm-tfstate-123456789012 --var-file prod.tfvars
    """
    info = _aws_target().deploy(
        auto_approve=auto_approve,
        var_file=var_file,
        echo=_echo,
        confirm=_confirm,
        state=_state_request(state_bucket, state_prefix, state_kms_key, local_state),
    )
    print_record(info, output, title="aws stack")


@command("destroy")
def destroy(
    auto_approve: bool = typer.Option(False, "--auto-approve", help="Do not ask first."),
    var_file: Path = typer.Option(None, "--var-file", help="Terraform .tfvars file to use."),
    state_bucket: str = typer.Option(
        None,
        "--state-bucket",
        help="S3 bucket of the state, when <stack-dir>/farmctl.s3.tfbackend is missing.",
    ),
    state_prefix: str = StatePrefixOption,
    local_state: bool = typer.Option(
        False, "--local-state", help="The state is <stack-dir>/terraform.tfstate."
    ),
) -> None:
    """Delete the deployed aws stack (terraform destroy); asks first. The state bucket stays.

    Example: farmctl destroy
    """
    target = _aws_target()
    request = _state_request(state_bucket, state_prefix, None, local_state)
    stack_dir, where = target.destroy_state(request)  # checked before anything is asked
    if not auto_approve and not _confirm(
        f"Destroy every resource of the stack in {stack_dir} "
        f"(stream, buckets, tables, Lambdas, Grafana; state: {where.describe(stack_dir)})?"
    ):
        raise UserError("destroy cancelled: nothing was changed")
    info = target.destroy(auto_approve=True, var_file=var_file, echo=_echo, state=request)
    console.print(
        f"destroyed the stack in {info['destroyed']}; outputs cache {info['outputs cache']}; "
        f"state kept in {info['terraform state']}",
        highlight=False,
    )


@command("crawl", "run-crawler")
def crawl(
    wait: bool = typer.Option(
        False, "--wait", help="Show the state until READY, then the changes."
    ),
    output: OutputFormat = OutputOption,
) -> None:
    """Start the Glue crawler over the log bucket (aws).

    Example: farmctl crawl --wait
    """
    target = _aws_target()
    with err_console.status("starting the crawler") as spinner:
        info = target.crawl(
            wait=wait,
            progress=lambda state, elapsed: spinner.update(f"crawler {state} ({elapsed:.0f} s)"),
        )
    print_record(info, output, title="glue crawler")


def _note(result) -> None:
    if result.note:
        err_console.print(result.note, style="dim")


if __name__ == "__main__":
    run()
