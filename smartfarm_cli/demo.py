"""`farmctl demo`: the whole pipeline on the local target, from generated data to spikes."""

from __future__ import annotations

from rich.console import Console

from .core.schema import METRIC_UNITS
from .render import (
    SPIKES_VIEW,
    TREND_SUMMARY_VIEW,
    OutputFormat,
    mark_synthetic,
    print_result,
    trend_chart,
    trend_summary,
    with_spike_reading,
)


def run_demo(
    target, console: Console, greenhouses: int = 4, devices: int = 2, seed: int = 7
) -> None:
    console.rule("1/4  backfill: 7 days of history, straight into the lake")
    report, _ = target.backfill(
        days=7,
        greenhouses=greenhouses,
        devices=devices,
        interval_s=600,
        anomaly_rate=0.002,
        seed=seed,
    )
    console.print(
        f"{report.readings:,} readings in {len(report.files)} hourly Parquet files under "
        f"{target.logs.root}; {report.spikes} spikes found in them"
    )

    console.rule("2/4  live burst: readings through validation -> stream -> delivery -> rules")
    burst = target.simulate(
        count=30,
        interval_s=0.05,
        greenhouses=greenhouses,
        devices=devices,
        anomaly_rate=0.15,
        seed=seed,
    )
    console.print(burst.summary())

    console.rule("3/4  temperature, last 7 days")
    hourly = target.trend("temperature", 7, "1h", synthetic="include")  # all generated
    chart = trend_chart(
        hourly.rows, "temperature", METRIC_UNITS["temperature"], width=console.width - 2
    )
    if chart is not None:
        console.print(chart)
    columns, rows = trend_summary(hourly.rows)
    print_result(
        console,
        columns,
        rows,
        OutputFormat.table,
        title="temperature (°C) per greenhouse, last 7 days",
        view=TREND_SUMMARY_VIEW,
    )

    console.rule("4/4  spikes in the last 10 minutes")
    spikes = target.spikes("10m", limit=15)
    columns, rows = with_spike_reading(spikes.columns, spikes.rows)
    rows, footnote = mark_synthetic(columns, rows)
    print_result(
        console,
        columns,
        rows,
        OutputFormat.table,
        title="newest spikes, most severe first (farmctl spikes --wide shows details)",
        view=SPIKES_VIEW,
        empty="no spikes in the last 10 minutes",
        caption=footnote,
    )
    by_rule = target.query(
        "SELECT rule, severity, count(*) AS spikes FROM spikes "
        "WHERE \"timestamp\" >= current_timestamp - INTERVAL '10' MINUTE "
        "GROUP BY 1, 2 ORDER BY 3 DESC"
    )
    print_result(console, by_rule.columns, by_rule.rows, OutputFormat.table, title="spikes by rule")
    console.print(
        f"\nEverything above lives in {target.home}. Try: farmctl --home {target.home} watch, "
        f'farmctl --home {target.home} query "SELECT count(*) FROM readings"'
    )
