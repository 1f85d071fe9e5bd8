"""`farmctl serve` as a device sees it: a real server process, real HTTP clients, curl.

Every test talks to a `farmctl serve` subprocess on an ephemeral loopback port; what the
server stored is read back from the local stream, rejected store and lake.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import requests
from serve_support import FARMCTL, ServeProcess, lake_rows, pending, reading

from smartfarm_cli.targets.local import LocalTarget


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("serve") / "home"
    with ServeProcess(home, "--rate-limit", "10000", "--burst-limit", "10000") as proc:
        yield proc


def test_put_record_answers_like_kinesis_and_lands_in_the_lake(server):
    good = reading("gh-a", "dev-1", temperature="23.5", error_code="0")  # seed-style strings
    response = httpx.post(server.url + "/record", json=good, headers={"x-api-key": server.key})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"FailedRecordCount", "SequenceNumber", "ShardId"}
    assert body["FailedRecordCount"] == 0 and body["SequenceNumber"].isdigit()
    assert response.headers["x-smartfarm-rejected"] == "0"
    LocalTarget(server.home).deliver(force=True)
    rows = [r for r in lake_rows(server.home) if r[0] == "gh-a"]
    assert len(rows) == 1 and rows[0][3] == 23.5 and rows[0][6] == 0


def test_put_records_keeps_request_order_and_refuses_bad_values_into_the_rejected_store(server):
    now = int(time.time() * 1000)
    batch = [reading("gh-b", f"dev-{i}", now - i) for i in range(5)]
    batch[2]["timestamp"] = "2026-11-28T10:00:00"  # no offset: the core refuses it
    response = requests.post(
        server.url + "/records", json={"records": batch}, headers=server.headers
    )
    assert response.status_code == 200
    body = response.json()
    assert body["FailedRecordCount"] == 0 and len(body["Records"]) == 5
    sequence = [int(r["SequenceNumber"]) for r in body["Records"]]
    assert sequence == sorted(sequence) and len(set(sequence)) == 5
    assert response.headers["x-smartfarm-rejected"] == "1"
    target = LocalTarget(server.home)
    refused = target.rejected(limit=20).records()
    assert any(
        r["source"] == "serve" and "no UTC offset" in r["reason"] and "dev-2" in r["raw"]
        for r in refused
    )
    target.deliver(force=True)
    devices = sorted(r[1] for r in lake_rows(server.home) if r[0] == "gh-b")
    assert devices == ["dev-0", "dev-1", "dev-3", "dev-4"]


def test_curl_posts_like_a_device_script(server, tmp_path):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    body = tmp_path / "reading.json"
    body.write_text(json.dumps(reading("gh-curl", "esp32-1")))
    out = subprocess.run(
        [
            "curl", "-sS", "-w", "\n%{http_code}", "-H", f"x-api-key: {server.key}",
            "-H", "Content-Type: application/json", "--data-binary", f"@{body}",
            server.url + "/record",
        ],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    text, status = out.stdout.rsplit("\n", 1)
    assert status == "200" and json.loads(text)["FailedRecordCount"] == 0
    wrong = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H", "x-api-key: nope",
         "-H", "Content-Type: application/json", "--data-binary", f"@{body}",
         server.url + "/record"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert wrong.stdout == "403"


@pytest.mark.parametrize(
    ("path", "body", "status", "needle"),
    [
        ("/record", b"{not json", 400, "not JSON"),
        ("/record", json.dumps({"greenhouse_id": "gh-1"}).encode(), 400, "must contain"),
        ("/record", json.dumps(reading(co2=True)).encode(), 400, "co2"),
        ("/record", json.dumps(reading(greenhouse="gh 1")).encode(), 400, "greenhouse_id"),
        ("/records", json.dumps({"records": []}).encode(), 400, "records"),
        ("/records", json.dumps({"records": [reading()] * 501}).encode(), 400, "records"),
        ("/records", json.dumps([reading()]).encode(), 400, "object"),
        (
            "/records",
            json.dumps({"records": [reading(error_code=1.5)]}).encode(),
            400,
            "error_code",
        ),
    ],
)
def test_bad_bodies_get_400_with_a_reason_and_store_nothing(server, path, body, status, needle):
    before = LocalTarget(server.home).status()["stream_readings"]
    response = httpx.post(server.url + path, content=body, headers=server.headers)
    assert response.status_code == status
    answer = response.json()
    assert answer["message"] == "Invalid request body"
    assert needle in answer["reason"], answer
    assert LocalTarget(server.home).status()["stream_readings"] == before


def test_key_media_type_size_and_route_faults(server):
    url, good = server.url + "/record", json.dumps(reading("gh-f")).encode()
    assert (
        httpx.post(url, content=good, headers={"content-type": "application/json"}).status_code
        == 403
    )
    wrong = {"x-api-key": server.key[:-1] + "x", "content-type": "application/json"}
    answer = httpx.post(url, content=good, headers=wrong)
    assert answer.status_code == 403 and answer.json() == {"message": "Forbidden"}
    text = {"x-api-key": server.key, "content-type": "text/plain"}
    assert httpx.post(url, content=good, headers=text).status_code == 415
    # No Content-Type at all counts as JSON, as on API Gateway.
    assert httpx.post(url, content=good, headers={"x-api-key": server.key}).status_code == 200
    huge = b'{"records": [' + b" " * (10 * 1024 * 1024) + b"]}"
    assert (
        httpx.post(server.url + "/records", content=huge, headers=server.headers).status_code == 413
    )
    # Chunked (no Content-Length): counted while it arrives.
    chunks = (b" " * 1024 * 1024 for _ in range(12))
    assert httpx.post(url, content=chunks, headers=server.headers).status_code == 413
    big_header = {**server.headers, "x-padding": "a" * 11_000}
    assert httpx.post(url, content=good, headers=big_header).status_code == 431
    missing = httpx.post(server.url + "/nowhere", content=good, headers=server.headers)
    assert (
        missing.status_code == 403 and missing.json()["message"] == "Missing Authentication Token"
    )
    assert httpx.get(server.url + "/record").status_code == 403


def test_a_kinesis_sized_record_is_refused_whole(server):
    record = reading("gh-big", extra="x" * (1024 * 1024 + 10))  # unknown fields pass the model
    answer = httpx.post(server.url + "/records", json={"records": [record]}, headers=server.headers)
    assert answer.status_code == 400
    refused = answer.json()  # error_response.vtl's shape: no stream internals for the client
    assert refused["message"] == "the stream rejected the request" and refused["requestId"]
    assert "kinesis" not in refused


def test_healthz_and_openapi(server):
    health = httpx.get(server.url + "/healthz")
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "ok" and body["stream"]["writable"] is True
    assert body["delivery"]["healthy"] is True
    doc = httpx.get(server.url + "/openapi.json").json()
    assert set(doc["paths"]) == {"/record", "/records"}


def test_access_log_is_json_and_never_holds_the_key(server):
    httpx.post(server.url + "/record", json=reading("gh-log"), headers={"x-api-key": server.key})
    httpx.post(server.url + "/record", json=reading("gh-log"), headers={"x-api-key": "wrong-key-1"})
    time.sleep(0.3)
    lines = [json.loads(line) for line in server.stdout_lines if line.startswith("{")]
    access = [line for line in lines if line["event"] == "access" and line["path"] == "/record"]
    assert {200, 403} <= {line["status"] for line in access}
    assert all({"client", "method", "status", "ms"} <= set(line) for line in access)
    assert server.key not in server.output() and "wrong-key-1" not in server.output()


def test_rate_limit_answers_429_with_retry_after(tmp_path):
    with ServeProcess(tmp_path / "home", "--rate-limit", "0.5", "--burst-limit", "3") as proc:
        codes = []
        for i in range(6):
            answer = httpx.post(
                proc.url + "/record", json=reading(device=f"d{i}"), headers=proc.headers
            )
            codes.append(answer.status_code)
            if answer.status_code == 429:
                assert int(answer.headers["retry-after"]) >= 1
                assert answer.json() == {"message": "Too Many Requests"}
        assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429, 429]
        time.sleep(2.1)  # one token back at 0.5 requests/s
        answer = httpx.post(proc.url + "/record", json=reading(device="late"), headers=proc.headers)
        assert answer.status_code == 200


def test_sigterm_with_readings_in_flight_loses_nothing(tmp_path):
    """Readings acknowledged before and during shutdown are all in the lake afterwards."""
    home = tmp_path / "home"
    proc = ServeProcess(
        home, "--flush-age", "3600", "--flush-rows", "1000000", "--rate-limit", "100000",
        "--burst-limit", "100000",
    ).start()  # fmt: skip
    acknowledged: list[str] = []
    lock, stop = threading.Lock(), threading.Event()
    base = int(time.time() * 1000) - 60_000

    def client(worker: int) -> None:
        with httpx.Client() as http:
            for n in range(10_000):
                if stop.is_set():
                    return
                device = f"w{worker}-{n}"
                batch = [reading("gh-s", device, base + i) for i in range(20)]
                try:
                    answer = http.post(
                        proc.url + "/records", json={"records": batch}, headers=proc.headers
                    )
                except httpx.TransportError:
                    return  # the server has closed: fine, just not acknowledged
                if answer.status_code == 200:
                    with lock:
                        acknowledged.append(device)

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(client, w) for w in range(4)]
        time.sleep(1.5)
        code = proc.stop()
        stop.set()
        for future in futures:
            future.result()
    # uvicorn re-raises the signal once shut down, so the exit is "terminated by SIGTERM".
    assert code in (0, -signal.SIGTERM), proc.output()
    assert len(acknowledged) > 10
    assert pending(home) == 0  # nothing left undelivered in the stream
    stored = {r[1] for r in lake_rows(home) if r[0] == "gh-s"}
    missing = set(acknowledged) - stored
    assert not missing, f"{len(missing)} acknowledged batches not in the lake"
    rows = [r for r in lake_rows(home) if r[0] == "gh-s"]
    assert len(rows) == 20 * len(stored)
    shutdown = [json.loads(x) for x in proc.stdout_lines if '"shutdown"' in x]
    assert shutdown and shutdown[0]["pending"] == 0


def test_stream_failure_answers_503_and_healthz_says_so(tmp_path, monkeypatch):
    """The writer cannot append (disk error): 503 + Retry-After, nothing acknowledged."""
    import sqlite3

    import uvicorn

    from smartfarm_cli.serve import pipeline as pipeline_module
    from smartfarm_cli.serve.app import Settings, create_app
    from smartfarm_cli.serve.keys import load_keyring
    from smartfarm_cli.serve.runner import bind

    def broken_store(target, items):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(pipeline_module, "store", broken_store)
    value = "k" * 40
    keys = load_keyring(tmp_path / "home", env={"SMARTFARM_API_KEY": value})
    app = create_app(Settings(home=tmp_path / "home", api_key=keys, access_log=False))
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        deadline = time.monotonic() + 60
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started, "the in-process server did not start in 60 s"
        headers = {"x-api-key": value}
        answer = httpx.post(url + "/record", json=reading(), headers=headers, timeout=60)
        assert answer.status_code == 503
        assert int(answer.headers["retry-after"]) >= 1
        assert answer.json()["message"] == "the stream rejected the request"
        assert answer.json()["requestId"] and "kinesis" not in answer.json()
        health = httpx.get(url + "/healthz", timeout=60)
        assert health.status_code == 503
        assert "disk I/O error" in health.json()["stream"]["last_error"]
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
    assert pending(tmp_path / "home") == 0


def test_serve_takes_the_site_keys_farmctl_keys_makes_and_keeps_only_their_hashes(tmp_path):
    """Issue 16 item 4 on the local target: per-site keys, hashes only, revocation while running."""
    home = tmp_path / "h"
    env = {**os.environ, "SMARTFARM_HOME": str(home), "SMARTFARM_TARGET": "local"}
    env.pop("SMARTFARM_API_KEY", None)

    def farmctl(*args):
        return subprocess.run(
            [*FARMCTL, *args], env=env, capture_output=True, text=True, timeout=60
        )

    refused = farmctl("serve", "--port", "0")  # no key at all: one line, no server
    assert refused.returncode == 2 and "farmctl keys create SITE" in refused.stderr
    shown = farmctl("serve", "--show-key")
    assert shown.returncode == 2 and "only hashes" in shown.stderr
    north = farmctl("keys", "create", "north")
    assert north.returncode == 0, north.stderr
    north_key = north.stdout.strip()
    assert len(north_key) == 40 and north.stdout == north_key + "\n"  # the value alone
    store = home / "api-keys.db"
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    assert north_key.encode() not in store.read_bytes()  # only its SHA-256
    assert hashlib.sha256(north_key.encode()).hexdigest().encode() in store.read_bytes()
    proc = ServeProcess(home, key=north_key)
    proc.env.pop("SMARTFARM_API_KEY")

    def post(key: str) -> int:
        headers = {"x-api-key": key}
        return httpx.post(proc.url + "/record", json=reading(), headers=headers).status_code

    with proc:
        assert post(north_key) == 200
        south = farmctl("keys", "create", "south").stdout.strip()  # made while serve runs
        deadline = time.monotonic() + 10
        while post(south) != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert post(south) == 200
        (north_id,) = [
            r["key_id"]
            for r in json.loads(farmctl("keys", "list", "-o", "json").stdout)
            if r["site"] == "north"
        ]
        assert farmctl("keys", "revoke", north_id, "--yes").returncode == 0
        deadline = time.monotonic() + 10
        while post(north_key) != 403 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert post(north_key) == 403 and post(south) == 200
    listed = {r["site"]: r for r in json.loads(farmctl("keys", "list", "-o", "json").stdout)}
    assert listed["north"]["enabled"] is False and listed["south"]["enabled"] is True
    assert listed["south"]["last_used"]  # written when serve stopped
    output = proc.output()
    assert north_key not in output and south not in output
    assert f'"key_id": "{north_id}"' in output or f'"key_id":"{north_id}"' in output


def test_the_old_plaintext_key_file_is_imported_as_a_hash_and_removed(tmp_path):
    home = tmp_path / "h"
    home.mkdir()
    old = "o" * 43
    (home / "serve-api-key").write_text(old + "\n")
    proc = ServeProcess(home, key=old)
    proc.env.pop("SMARTFARM_API_KEY")
    with proc:
        ok = httpx.post(proc.url + "/record", json=reading(), headers=proc.headers)
        assert ok.status_code == 200
    assert not (home / "serve-api-key").exists()
    assert old.encode() not in (home / "api-keys.db").read_bytes()
    rows = LocalTarget(home).list_keys().records()
    assert [(r["site"], r["label"]) for r in rows] == [("default", "imported from serve-api-key")]


def test_short_key_file_is_one_clear_line(tmp_path):
    keyfile = tmp_path / "key"
    keyfile.write_text("short\n")
    env = {k: v for k, v in os.environ.items() if k != "SMARTFARM_API_KEY"}
    out = subprocess.run(
        [*FARMCTL, "--home", str(tmp_path / "h"), "serve", "--api-key-file", str(keyfile)],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2
    text = " ".join(out.stderr.split())  # rich wraps to the terminal width
    assert "shorter than 20 characters" in text and "Traceback" not in text


def test_non_loopback_host_warns_that_the_key_is_the_only_guard(tmp_path):
    with ServeProcess(tmp_path / "home", "--host", "0.0.0.0") as proc:
        assert httpx.get(proc.url + "/healthz").status_code == 200
    text = proc.output()
    assert "the API key is the only guard" in text and "TLS is off" in text


def _raw(url: str, data: bytes, wait_s: float) -> bytes:
    """Send raw bytes, then read whatever the server answers within wait_s."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=wait_s) as sock:
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            pass
        return received


def test_slow_and_oversized_clients_are_cut_off(tmp_path):
    with ServeProcess(tmp_path / "home", "--client-timeout", "1") as proc:
        # Headers that never finish (slow loris): 408 and closed after the client timeout.
        started = time.monotonic()
        answer = _raw(proc.url, b"POST /record HTTP/1.1\r\nHost: x\r\nx-api-key: ", 5)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert time.monotonic() - started < 4
        # A body announced but never sent in full: 408 from the ingest endpoint.
        head = (
            f"POST /record HTTP/1.1\r\nHost: x\r\nx-api-key: {proc.key}\r\n"
            "Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{"
        ).encode()
        answer = _raw(proc.url, head, 5)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        # Endless headers: 431 once they pass 10 KiB, without waiting for the rest.
        start = b"POST /record HTTP/1.1\r\nHost: x\r\n"
        for flood in (
            start + b"".join(b"x-%d: %s\r\n" % (i, b"a" * 100) for i in range(120)),
            start + b"x-a: " + b"a" * 30_000,  # one line that never ends
        ):
            answer = _raw(proc.url, flood, 5)
            assert answer.startswith(b"HTTP/1.1 431"), answer
        # The server still answers normal clients.
        assert (
            httpx.post(proc.url + "/record", json=reading(), headers=proc.headers).status_code
            == 200
        )


def test_package_data_covers_every_serve_file():
    """pyproject's package-data globs match every file the server reads from the package.

    (Building a wheel here would need a newer setuptools from the network.)"""
    import fnmatch
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    config = tomllib.loads((root / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["smartfarm_cli"]
    package = root / "smartfarm_cli"
    shipped = [
        p.relative_to(package).as_posix()
        for p in (package / "serve").rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    ]
    assert "serve/static/vendor/uPlot.iife.min.js" in shipped and "serve/openapi.json" in shipped
    for path in shipped:
        assert any(
            fnmatch.fnmatchcase(path, g) and path.count("/") == g.count("/") for g in globs
        ), path


def _children(pid: int) -> list[tuple[int, str]]:
    from pathlib import Path

    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append((int(proc.name), cmdline))
    return found


def test_a_killed_delivery_process_is_restarted_and_nothing_is_lost(tmp_path):
    home = tmp_path / "home"
    with ServeProcess(home, "--flush-age", "0.5") as proc:
        (child,) = [pid for pid, cmd in _children(proc.proc.pid) if "spawn_main" in cmd]
        os.kill(child, signal.SIGKILL)
        base = int(time.time() * 1000) - 5000
        batch = [reading("gh-k", f"d{i}", base + i) for i in range(50)]
        answer = httpx.post(proc.url + "/records", json={"records": batch}, headers=proc.headers)
        assert answer.status_code == 200

        def restarted():
            health = httpx.get(proc.url + "/healthz").json()["delivery"]
            return health["process_restarts"] >= 1 and health["delivered_readings"] >= 50

        deadline = time.monotonic() + 30
        while not restarted():
            assert time.monotonic() < deadline, httpx.get(proc.url + "/healthz").text
            time.sleep(0.2)
    assert len([r for r in lake_rows(home) if r[0] == "gh-k"]) == 50
    assert pending(home) == 0


def test_delivery_process_flushes_and_exits_when_the_server_is_killed(tmp_path):
    home = tmp_path / "home"
    proc = ServeProcess(home, "--flush-age", "3600").start()
    (child,) = [pid for pid, cmd in _children(proc.proc.pid) if "spawn_main" in cmd]
    batch = [reading("gh-o", f"d{i}") for i in range(20)]
    assert (
        httpx.post(proc.url + "/records", json={"records": batch}, headers=proc.headers).status_code
        == 200
    )
    proc.stop(signal.SIGKILL)
    deadline = time.monotonic() + 30
    while os.path.exists(f"/proc/{child}") and "zombie" not in _state(child):
        assert time.monotonic() < deadline, "the delivery process outlived the server"
        time.sleep(0.1)
    # The readings the server acknowledged were delivered by the orphaned child on its way out.
    assert len([r for r in lake_rows(home) if r[0] == "gh-o"]) == 20
    assert pending(home) == 0


def _state(pid: int) -> str:
    try:
        return (
            "zombie" if open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z" else ""
        )
    except OSError:
        return "zombie"
