"""Benchmarks of `farmctl serve` (P12-P14), loopback, load from separate processes.

    python bench/serve_bench.py                 # all three, writes bench/serve_results.json
    python bench/serve_bench.py --readme        # ...and rewrites README's serve table
    python bench/serve_bench.py --duration 10   # shorter P12 (the goal is stated for 30 s)

P12  `wrk` POSTs /records with 100 unique readings per request for `--duration` s; readings/s
     from the 200s wrk counted, p99 from wrk; then SIGTERM (final flush) and a DuckDB count of
     the lake, which must equal the accepted readings.
P13  `wrk` POSTs /record (one reading) to `farmctl serve`, and to the same uvicorn + Starlette
     stack answering a constant 200 (the framework ceiling), interleaved; the ratio of the
     requests/s and serve's p99.
P14  a client process POSTs one reading for a new device and polls /api/latest (the
     dashboard's data) until it is there; p95 over `--samples` readings.

Needs `wrk` (Debian: apt-get install wrk). Results go to bench/serve_results.json and, with
--readme, between the `serve-bench` markers of README.md (bench/run.py owns the main table).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LUA = ROOT / "bench" / "serve_wrk.lua"
RESULTS = ROOT / "bench" / "serve_results.json"
README = ROOT / "README.md"
START, END = "<!-- serve-bench:start -->", "<!-- serve-bench:end -->"
LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")
WRK_THREADS, WRK_CONNECTIONS = 2, 32


def start_serve(home: Path, key: str, *args: str) -> tuple[subprocess.Popen, str, Path]:
    log = home.parent / f"{home.name}-serve.log"
    env = {**os.environ, "SMARTFARM_API_KEY": key, "SMARTFARM_HOME": str(home)}
    cmd = [sys.executable, "-c", "from smartfarm_cli.cli import app; app()"]
    cmd += ["--target", "local", "serve", "--port", "0"]
    proc = subprocess.Popen(
        [*cmd, "--rate-limit", "1000000", "--burst-limit", "1000000", *args],
        env=env,
        stdout=open(log, "w"),  # noqa: SIM115 - closed with the process
        stderr=subprocess.STDOUT,
    )
    return proc, _wait_url(proc, log), log


def start_baseline() -> tuple[subprocess.Popen, str, Path]:
    log = Path(tempfile.mkdtemp(prefix="sf-baseline-")) / "baseline.log"
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--baseline-server"],
        stdout=open(log, "w"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
    return proc, _wait_url(proc, log), log


def _wait_url(proc: subprocess.Popen, log: Path) -> str:
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        match = LISTENING.search(log.read_text())
        if match:
            url = f"http://127.0.0.1:{match.group(1)}"
            try:
                httpx.get(url + "/healthz", timeout=2)
                return url
            except httpx.TransportError:
                pass
        if proc.poll() is not None:
            raise SystemExit("server did not start:\n" + log.read_text())
        time.sleep(0.1)
    raise SystemExit("server did not start in 60 s:\n" + log.read_text())


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(180)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(
    url: str, path: str, batch: int, seconds: float, key: str, base_ms: int, pid: int = 0
) -> dict:
    cpu_before = cpu_seconds(pid) if pid else 0.0
    env = {
        **os.environ,
        "SF_KEY": key,
        "SF_PATH": path,
        "SF_BATCH": str(batch),
        "SF_BASE_MS": str(base_ms),
    }
    out = subprocess.run(
        [
            "wrk", f"-t{WRK_THREADS}", f"-c{WRK_CONNECTIONS}", f"-d{int(seconds)}s",
            "--timeout", "10s", "-s", str(LUA), url + path,
        ],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    line = next(x for x in out.stdout.splitlines() if x.startswith("SF_RESULT "))
    result = json.loads(line.removeprefix("SF_RESULT "))
    result["seconds"] = result["duration_us"] / 1e6
    # The server's CPU per answered request: on a shared machine this is the steadier figure.
    result["cpu_s"] = cpu_seconds(pid) - cpu_before if pid else 0.0
    return result


def lake_count(home: Path) -> int:
    from smartfarm_cli.targets.local import LocalTarget

    target = LocalTarget(home)
    try:
        return target.query("SELECT count(*) FROM readings").rows[0][0]
    finally:
        target.close()


def p12(work: Path, seconds: float) -> dict:
    key, home = secrets.token_urlsafe(32), work / "p12"
    proc, url, _ = start_serve(home, key)
    base = int(time.time() * 1000) - 2 * 86_400_000
    try:
        result = wrk(url, "/records", 100, seconds, key, base, proc.pid)
    finally:
        stop(proc)
    accepted = result["ok"] * 100
    stored = lake_count(home)
    rate = accepted / result["seconds"]
    p99_ms = result["p99_us"] / 1000
    # wrk stops counting at the deadline while up to one request per connection is still being
    # answered: those readings are stored but not counted as accepted.
    in_flight = WRK_CONNECTIONS * 100
    none_lost = accepted <= stored <= accepted + in_flight
    baseline = ingest_baseline(work, 300_000)
    return {
        "id": "P12",
        "requests": result["requests"],
        "refused": result["bad"],
        "errors": {k: v for k, v in result.items() if k.startswith("errors_") and v},
        "seconds": round(result["seconds"], 1),
        "accepted_readings": accepted,
        "lake_readings": stored,
        "readings_per_s": round(rate),
        "p50_ms": round(result["p50_us"] / 1000, 1),
        "p99_ms": round(p99_ms, 1),
        "none_lost": none_lost,
        "baseline_readings_per_s": round(baseline),
        "cpu_us_per_reading": round(result["cpu_s"] / max(1, accepted) * 1e6, 1),
        "ratio": round(rate / baseline, 3),
        "met": rate >= 50_000 and p99_ms <= 100 and none_lost and result["bad"] == 0,
    }


def ingest_baseline(work: Path, readings: int) -> float:
    """The same readings as request bodies, parsed and written by LocalTarget.ingest in-process
    (no HTTP, no contract check), then delivered: what the server's write path costs alone."""
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--ingest-baseline", str(work / "base"),
         str(readings)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return float(out.stdout.strip())


def ingest_baseline_run(home: str, readings: int) -> None:
    from smartfarm_cli.targets.local import LocalTarget

    base = int(time.time() * 1000) - 86_400_000
    bodies = []
    for start in range(0, readings, 100):
        batch = [
            {"greenhouse_id": "bench-1", "device_id": f"d{n % 10}", "timestamp": base + n,
             "temperature": 15 + (n % 100) / 10, "humidity": 55.0, "co2": 450, "error_code": 0}
            for n in range(start, start + 100)
        ]  # fmt: skip
        bodies.append(json.dumps({"records": batch}).encode())
    target = LocalTarget(home)
    started = time.perf_counter()
    group: list = []
    for body in bodies:
        group += json.loads(body)["records"]
        if len(group) >= 20_000:
            target.ingest(group, source="bench", deliver=False)
            target.deliver()
            group = []
    if group:
        target.ingest(group, source="bench", deliver=False)
    target.deliver(force=True)
    print(readings / (time.perf_counter() - started))


def p13(work: Path, seconds: float, rounds: int = 2) -> dict:
    key = secrets.token_urlsafe(32)
    runs: dict[str, list] = {"baseline": [], "serve": [], "nofsync": []}
    base = int(time.time() * 1000) - 86_400_000
    for round_ in range(rounds):  # interleaved: baseline, serve, serve --no-fsync, again...
        for name in runs:
            if name == "baseline":
                proc, url, _ = start_baseline()
            else:
                extra = ["--no-fsync"] if name == "nofsync" else []
                proc, url, _ = start_serve(work / f"p13-{name}", key, *extra)
            start = base + (round_ * 3 + len(runs[name])) * 10**8 + hash(name) % 10**7
            try:
                runs[name].append(wrk(url, "/record", 1, seconds, key, start, proc.pid))
            finally:
                stop(proc)

    def rps(name):
        return sum(r["ok"] for r in runs[name]) / sum(r["seconds"] for r in runs[name])

    def cpu_us(name):
        return sum(r["cpu_s"] for r in runs[name]) / max(1, sum(r["ok"] for r in runs[name])) * 1e6

    def p99(name):
        return round(max(r["p99_us"] for r in runs[name]) / 1000, 1)

    ratio = rps("serve") / rps("baseline")
    return {
        "id": "P13",
        "serve_requests_per_s": round(rps("serve")),
        "baseline_requests_per_s": round(rps("baseline")),
        "ratio": round(ratio, 3),
        "p50_ms": round(max(r["p50_us"] for r in runs["serve"]) / 1000, 1),
        "p99_ms": p99("serve"),
        "baseline_p99_ms": p99("baseline"),
        "cpu_us_per_request": round(cpu_us("serve")),
        "baseline_cpu_us_per_request": round(cpu_us("baseline")),
        "nofsync_requests_per_s": round(rps("nofsync")),
        "nofsync_ratio": round(rps("nofsync") / rps("baseline"), 3),
        "nofsync_p99_ms": p99("nofsync"),
        "nofsync_cpu_us_per_request": round(cpu_us("nofsync")),
        "refused": sum(r["bad"] for name in runs for r in runs[name]),
        "met": ratio >= 0.4 and p99("serve") <= 50,
    }


def p14(work: Path, samples: int) -> dict:
    key, home = secrets.token_urlsafe(32), work / "p14"
    from smartfarm_cli.targets.local import LocalTarget

    seed = LocalTarget(home)  # a realistic lake behind the latest panel: 7 days, 20 greenhouses
    seed.backfill(days=7, greenhouses=20, devices=2, interval_s=300, seed=1)
    seed.close()
    proc, url, _ = start_serve(home, key)
    try:
        out = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--p14-client", url, key, str(samples)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    finally:
        stop(proc)
    latencies = sorted(json.loads(out.stdout))
    p50 = latencies[len(latencies) // 2]
    p95 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.95))]
    return {
        "id": "P14",
        "samples": len(latencies),
        "p50_ms": round(p50 * 1000),
        "p95_ms": round(p95 * 1000),
        "max_ms": round(latencies[-1] * 1000),
        "met": p95 <= 1.0,
    }


def p14_client(url: str, key: str, samples: int) -> None:
    """Runs in its own process: POST, then poll the dashboard's latest endpoint."""
    import httpx

    latencies = []
    with httpx.Client(base_url=url, timeout=10) as http:
        for n in range(samples):
            device = f"probe-{n}"
            reading = {
                "greenhouse_id": "gh-probe",
                "device_id": device,
                "timestamp": int(time.time() * 1000),
                "temperature": 20.0,
                "humidity": 50.0,
                "co2": 420,
                "error_code": 0,
            }
            started = time.perf_counter()
            answer = http.post("/record", json=reading, headers={"x-api-key": key})
            answer.raise_for_status()
            while True:
                devices = http.get("/api/latest").json()["devices"]
                if any(d["device_id"] == device for d in devices):
                    break
                if time.perf_counter() - started > 30:
                    raise SystemExit(f"{device} not visible after 30 s")
                time.sleep(0.02)
            latencies.append(time.perf_counter() - started)
            time.sleep(0.1)
    print(json.dumps(latencies))


def baseline_server() -> None:
    """The same uvicorn + Starlette stack answering a constant 200 (the framework ceiling)."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    body = b'{"FailedRecordCount":0,"SequenceNumber":"1","ShardId":"shardId-000000000000"}'

    async def constant(request):
        return Response(body, 200, media_type="application/json")

    app = Starlette(
        routes=[Route("/record", constant, methods=["POST"]), Route("/healthz", constant)]
    )
    from smartfarm_cli.serve.runner import bind

    sock = bind("127.0.0.1", 0)
    print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, server_header=False)
    uvicorn.Server(config).run(sockets=[sock])


def table(results: dict) -> str:
    p12r, p13r, p14r = results["P12"], results["P13"], results["P14"]

    def met(row):
        return "yes" if row["met"] else "**no**"

    lines = [
        f"Measured {results['date']} on {results['machine']} with `{results['command']}` "
        f"(loopback; load from `wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS}` in its own process; "
        f"the machine is shared: 1-minute load average {results['load_before']} before, "
        f"{results['load_after']} after).",
        "",
        "| id | measure | ours | baseline (same run) | ratio | goal | met |",
        "|---|---|---|---|---|---|---|",
        f"| P12 | `farmctl serve`: POST /records x 100 readings for {p12r['seconds']} s | "
        f"{p12r['readings_per_s']:,} readings/s, p50 {p12r['p50_ms']} ms, p99 "
        f"{p12r['p99_ms']} ms; {p12r['accepted_readings']:,} acknowledged, "
        f"{p12r['lake_readings']:,} in the lake after the flush; server CPU "
        f"{p12r['cpu_us_per_reading']} µs per reading "
        f"({'none lost' if p12r['none_lost'] else 'READINGS LOST'}) | the same readings "
        f"parsed and written by `LocalTarget.ingest` + delivery in one process, no HTTP: "
        f"{p12r['baseline_readings_per_s']:,} readings/s | {p12r['ratio']:.2f}x | "
        f">= 50,000 readings/s for 30 s, p99 <= 100 ms, none lost | {met(p12r)} |",
        f"| P13 | `farmctl serve`: POST /record (one reading), WAL fsync per commit (default) | "
        f"{p13r['serve_requests_per_s']:,} requests/s, p99 {p13r['p99_ms']} ms; server CPU "
        f"{p13r['cpu_us_per_request']} µs per request | "
        f"same uvicorn + Starlette answering a constant 200: "
        f"{p13r['baseline_requests_per_s']:,} requests/s, p99 {p13r['baseline_p99_ms']} ms; "
        f"{p13r['baseline_cpu_us_per_request']} µs per request | {p13r['ratio']:.2f}x | "
        f">= 0.40x, p99 <= 50 ms | {met(p13r)} |",
        f"| P13b | the same with `--no-fsync` (safe against a process crash only) | "
        f"{p13r['nofsync_requests_per_s']:,} requests/s, p99 {p13r['nofsync_p99_ms']} ms; "
        f"{p13r['nofsync_cpu_us_per_request']} µs per request | "
        f"as P13 | {p13r['nofsync_ratio']:.2f}x | (information) | - |",
        f"| P14 | reading POSTed -> on the dashboard's /api/latest ({p14r['samples']} readings, "
        f"7-day 20-greenhouse lake) | p50 {p14r['p50_ms']} ms, p95 {p14r['p95_ms']} ms | - | - "
        f"| p95 <= 1 s | {met(p14r)} |",
    ]
    return "\n".join(lines)


def write_readme(text: str) -> None:
    readme = README.read_text()
    if START not in readme or END not in readme:
        raise SystemExit(f"README.md lacks the {START} / {END} markers")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{START}\n{text}\n{END}{tail}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=30.0, help="P12 seconds (goal: 30)")
    parser.add_argument("--p13-seconds", type=float, default=10.0)
    parser.add_argument("--samples", type=int, default=60, help="P14 readings")
    parser.add_argument("--readme", action="store_true", help="rewrite README's serve table")
    parser.add_argument("--only", choices=["P12", "P13", "P14"])
    parser.add_argument("--baseline-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--p14-client", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--ingest-baseline", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.baseline_server:
        baseline_server()
        return 0
    if args.ingest_baseline:
        ingest_baseline_run(args.ingest_baseline[0], int(args.ingest_baseline[1]))
        return 0
    if args.p14_client:
        url, key, samples = args.p14_client
        p14_client(url, key, int(samples))
        return 0
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    command = "python bench/serve_bench.py" + (" --readme" if args.readme else "")
    results = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} cores, Python {platform.python_version()}",
        "load_before": round(os.getloadavg()[0], 1),
        "command": command,
    }
    with tempfile.TemporaryDirectory(prefix="sf-serve-bench-") as tmp:
        work = Path(tmp)
        if args.only in (None, "P12"):
            results["P12"] = p12(work, args.duration)
            print(json.dumps(results["P12"]), flush=True)
        if args.only in (None, "P13"):
            results["P13"] = p13(work, args.p13_seconds)
            print(json.dumps(results["P13"]), flush=True)
        if args.only in (None, "P14"):
            results["P14"] = p14(work, args.samples)
            print(json.dumps(results["P14"]), flush=True)
    results["load_after"] = round(os.getloadavg()[0], 1)
    if args.only is None:
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
        text = table(results)
        print(text)
        if args.readme:
            write_readme(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
