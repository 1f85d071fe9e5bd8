"""A real local pipeline that runs until it is killed (R5, tests/test_reliability_crash.py).

    python crash_worker.py HOME RUN ACK_FILE

Ingests batches of 5 readings (each with a unique device_id `r<RUN>-<n>`, spread over three
hours so one delivery writes several hour files; every 10th is the seed's 400 °C), with small
flush thresholds so that deliveries (Parquet write, fsync, rename, spikes, checkpoint) happen
all the time. After each ingest call returns, the batch's ids are appended to ACK_FILE and
fsynced: those readings were acknowledged to the caller and must never be lost.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime, timedelta

from smartfarm_cli.targets.local import LocalTarget


def main() -> None:
    home, run, ack_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    target = LocalTarget(home, flush_rows=7, flush_age_s=0.05)
    target.pending()  # open the stream before saying ready
    print("ready", flush=True)
    now = datetime.now(UTC).replace(microsecond=0)
    number = 0
    with open(ack_path, "a") as ack:
        while True:
            batch = []
            for _ in range(5):
                moment = now - timedelta(hours=number % 3, seconds=number % 3000)
                batch.append(
                    {
                        "greenhouse_id": "gh-crash",
                        "device_id": f"r{run}-{number}",
                        "timestamp": moment.isoformat().replace("+00:00", "Z"),
                        "temperature": 400 if number % 10 == 0 else 21.0,
                        "humidity": 60,
                        "co2": 800,
                        "error_code": 0,
                    }
                )
                number += 1
            # every third batch takes the CLI's path (deliver everything now)
            target.ingest(batch, deliver=number % 15 == 0)
            ack.write(" ".join(item["device_id"] for item in batch) + "\n")
            ack.flush()
            os.fsync(ack.fileno())
            target.deliver()


if __name__ == "__main__":
    main()
