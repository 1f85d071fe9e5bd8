"""One structured JSON log line per event, as the Lambdas write them to CloudWatch."""

from __future__ import annotations

import json
import os
import sys

LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40}


def log(level: str, event: str, **fields) -> None:
    """Print `{"level", "event", **fields}` unless below $LOG_LEVEL (CloudWatch Logs Insights
    can then filter on every field). Callers never pass secrets."""
    if LEVELS.get(level, 20) < LEVELS.get(os.environ.get("LOG_LEVEL", "INFO").upper(), 20):
        return
    record = {"level": level, "event": event, **fields}
    sys.stdout.write(json.dumps(record, default=str, ensure_ascii=False) + "\n")
    sys.stdout.flush()
