"""A real `farmctl serve` process on an ephemeral loopback port, for the serve tests."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

FARMCTL = [sys.executable, "-c", "from smartfarm_cli.cli import app; app()"]
LISTENING = re.compile(r"listening on (https?)://(\S+):(\d+)")


class ServeProcess:
    def __init__(self, home: Path, *args: str, key: str | None = None, env: dict | None = None):
        self.home = home
        self.key = key or secrets.token_urlsafe(32)
        self.args = list(args)
        self.env = {
            **os.environ,
            "SMARTFARM_HOME": str(home),
            "SMARTFARM_API_KEY": self.key,
            "SMARTFARM_TARGET": "local",
            **(env or {}),
        }
        self.proc: subprocess.Popen | None = None
        self.stderr_lines: list[str] = []
        self.stdout_lines: list[str] = []
        self.url = ""

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, timeout: float = 30.0) -> ServeProcess:
        self.proc = subprocess.Popen(
            [*FARMCTL, "serve", "--port", "0", *self.args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        found = threading.Event()

        def pump(stream, lines, look):
            for line in stream:
                lines.append(line)
                if look and (m := LISTENING.search(line)):
                    host = m.group(2)
                    self.url = f"{m.group(1)}://{host}:{m.group(3)}"
                    found.set()

        threading.Thread(
            target=pump, args=(self.proc.stderr, self.stderr_lines, True), daemon=True
        ).start()
        threading.Thread(
            target=pump, args=(self.proc.stdout, self.stdout_lines, False), daemon=True
        ).start()
        deadline = time.monotonic() + timeout
        while not found.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("serve did not start: " + "".join(self.stderr_lines))
        if self.url.startswith("http://0.0.0.0"):
            self.url = self.url.replace("0.0.0.0", "127.0.0.1")
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=2, verify=False).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError("serve never became healthy: " + "".join(self.stderr_lines))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    @property
    def headers(self) -> dict:
        return {"x-api-key": self.key, "content-type": "application/json"}

    def output(self) -> str:
        return "".join(self.stdout_lines) + "".join(self.stderr_lines)


def reading(
    greenhouse: str = "gh-1", device: str = "dev-1", at_ms: int | None = None, **values
) -> dict:
    at_ms = at_ms if at_ms is not None else int(time.time() * 1000)
    stamp = datetime.fromtimestamp(at_ms / 1000, UTC).isoformat(timespec="milliseconds")
    base = {
        "greenhouse_id": greenhouse,
        "device_id": device,
        "timestamp": stamp.replace("+00:00", "Z"),
        "temperature": 21.5,
        "humidity": 60.0,
        "co2": 450.0,
        "error_code": 0,
    }
    base.update(values)
    return base


def lake_rows(home: Path) -> list[tuple]:
    """Every reading in the local lake (DuckDB over the Parquet files), sorted."""
    from smartfarm_cli.targets.local import LocalTarget

    target = LocalTarget(home)
    try:
        result = target.query(
            "SELECT greenhouse_id, device_id, timestamp, temperature, humidity, co2, error_code "
            "FROM readings ORDER BY 1, 2, 3"
        )
        return [tuple(r) for r in result.rows]
    finally:
        target.close()


def pending(home: Path) -> int:
    from smartfarm_cli.targets.local import LocalTarget

    target = LocalTarget(home)
    try:
        return target.pending()
    finally:
        target.close()


def kill_quietly(proc) -> None:
    if proc and proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
