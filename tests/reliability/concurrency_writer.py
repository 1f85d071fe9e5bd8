"""R6 writer: ingest and deliver into one local home for DURATION seconds, then report.

    python concurrency_writer.py HOME DURATION

Batches of 20 healthy readings (4 greenhouses x 5 devices, stamped now) go through
LocalTarget.ingest, deliveries run by size / age as they would under `farmctl simulate`.
Prints one JSON line: {"written": N, "batches": B, "seconds": S}. Any exception (e.g.
"database is locked") ends the process with a traceback on stderr and a non-zero exit.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime

from smartfarm_cli.targets.local import LocalTarget


def main() -> None:
    home, duration = sys.argv[1], float(sys.argv[2])
    target = LocalTarget(home, flush_rows=300, flush_age_s=1.0)
    started = time.monotonic()
    written = batches = 0
    while time.monotonic() - started < duration:
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        batch = [
            {
                "greenhouse_id": f"gh-{g}",
                "device_id": f"dev-{d}",
                "timestamp": stamp,
                "temperature": 20 + (written % 7) * 0.5,
                "humidity": 60,
                "co2": 800,
                "error_code": 0,
            }
            for g in range(4)
            for d in range(5)
        ]
        result = target.ingest(batch, deliver=False)
        written += result.accepted
        batches += 1
        target.deliver()
        time.sleep(0.02)
    target.deliver(force=True)
    target.close()
    print(json.dumps({"written": written, "batches": batches, "seconds": duration}), flush=True)


if __name__ == "__main__":
    main()
