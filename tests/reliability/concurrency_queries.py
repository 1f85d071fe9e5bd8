"""R6 reader: `farmctl trend` (and now and then `farmctl status`) in a loop for DURATION seconds.

    python concurrency_queries.py HOME DURATION

Each command runs through the real CLI (typer's CliRunner, in this one process, so hundreds of
queries fit in the window). Prints one JSON line: queries run, failures (with their output),
and the lake counts seen, which must never go down.
"""

from __future__ import annotations

import json
import sys
import time

from typer.testing import CliRunner

from smartfarm_cli.cli import app


def main() -> None:
    home, duration = sys.argv[1], float(sys.argv[2])
    runner = CliRunner()
    started = time.monotonic()
    queries, failures, counts = 0, [], []
    while time.monotonic() - started < duration:
        args = ["--home", home, "trend", "temperature", "--days", "1", "--every", "1m"]
        result = runner.invoke(app, [*args, "--no-chart", "-o", "json"])
        queries += 1
        if result.exit_code != 0 or "locked" in result.output:
            failures.append(result.output[-500:] + repr(result.exception))
        elif result.stdout.strip():
            counts.append(sum(row["readings"] for row in json.loads(result.stdout)))
        if queries % 5 == 0:
            status = runner.invoke(app, ["--home", home, "status", "-o", "json"])
            queries += 1
            if status.exit_code != 0 or "locked" in status.output:
                failures.append(status.output[-500:] + repr(status.exception))
    print(json.dumps({"queries": queries, "failures": failures, "counts": counts}), flush=True)


if __name__ == "__main__":
    main()
