"""Lambda zips: reproducible bytes, the right entries, and each handler running from its unpacked
zip in a clean interpreter that has only the stdlib, boto3 (+ its deps) and pyarrow."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote_plus

import boto3
import pytest
from werkzeug import Response

from smartfarm_cli.core import lake
from smartfarm_cli.core.validate import table_from_rows
from smartfarm_cli.packaging import FUNCTIONS, REPO_ROOT, PackagingError, build_lambda_zips

SITE_PACKAGES = Path(boto3.__file__).resolve().parents[1]
# What the stock python3.12 runtime (boto3) and the AWS SDK for pandas layer (pyarrow) provide.
ALLOWED = (
    "boto3",
    "botocore",
    "s3transfer",
    "jmespath",
    "dateutil",
    "urllib3",
    "six.py",
    "pyarrow",
)
MUST_BE_MISSING = (
    "typer",
    "rich",
    "requests",
    "awswrangler",
    "pandas",
    "duckdb",
    "sqlglot",
    "numpy",
    "moto",
    "smartfarm_cli.targets",
    "smartfarm_cli.alerting",
)
TOKEN = "zip-T0KEN-secret"
HOOK_PATH = f"/api/webhooks/8080/{TOKEN}"

RUNNER = """
import importlib.util, json, os, sys
sys.path[:0] = [os.environ["SF_CODE"], os.environ["SF_SITE"]]
missing = os.environ["SF_MUST_BE_MISSING"].split(",")
importable = [m for m in missing if importlib.util.find_spec(m) is not None]
import handler
import smartfarm_cli
event = json.loads(os.environ["SF_EVENT"])
try:
    result = handler.handler(event, None)
    error = None
except Exception as exc:
    result, error = None, f"{type(exc).__name__}: {exc}"
print("RESULT " + json.dumps({
    "result": result, "error": error, "importable": importable,
    "core": smartfarm_cli.__file__, "numpy_loaded": "numpy" in sys.modules,
}, default=str))
"""


@pytest.fixture(scope="module")
def zips(tmp_path_factory):
    return build_lambda_zips(tmp_path_factory.mktemp("zips") / "build" / "lambda")


@pytest.fixture(scope="module")
def clean_site(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    for name in ALLOWED:
        source = SITE_PACKAGES / name
        assert source.exists(), source
        (site / name).symlink_to(source)
    return site


def unpack(zip_path: Path, target: Path) -> Path:
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(target)
    return target


def run_clean(code_dir: Path, site: Path, event: dict, env: dict | None = None) -> dict:
    runner = code_dir.parent / "runner.py"
    runner.write_text(RUNNER)
    full_env = {
        "SF_CODE": str(code_dir),
        "SF_SITE": str(site),
        "SF_EVENT": json.dumps(event),
        "SF_MUST_BE_MISSING": ",".join(MUST_BE_MISSING),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        **(env or {}),
    }
    done = subprocess.run(
        [sys.executable, "-I", "-S", str(runner)],
        env=full_env,
        cwd=code_dir.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert TOKEN not in done.stdout and TOKEN not in done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    report = json.loads(line[len("RESULT ") :])
    assert report["importable"] == [], report["importable"]  # nothing beyond the runtime
    assert report["core"].startswith(str(code_dir)), report["core"]  # core from the zip
    assert report["numpy_loaded"] is False
    report["logs"] = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
    return report


def test_building_twice_gives_identical_bytes(zips, tmp_path):
    again = build_lambda_zips(tmp_path / "again")
    assert set(zips) == set(FUNCTIONS) == set(again)
    for name in FUNCTIONS:
        assert zips[name].read_bytes() == again[name].read_bytes(), name
        assert zips[name].name == f"{name}.zip"


def test_zip_entries_are_handler_plus_core_only(zips):
    core = sorted(
        p.relative_to(REPO_ROOT).as_posix()
        for p in (REPO_ROOT / "smartfarm_cli" / "core").iterdir()
        if p.is_file() and p.suffix in (".py", ".toml")
    )
    for name, path in zips.items():
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
        names = [i.filename for i in infos]
        assert names == sorted(names)
        assert "handler.py" in names
        assert "smartfarm_cli/__init__.py" in names
        assert "smartfarm_cli/core/rules.toml" in names
        assert [n for n in names if n.startswith("smartfarm_cli/core/")] == core
        assert set(names) == {"handler.py", "smartfarm_cli/__init__.py", *core}, name
        for info in infos:
            assert "__pycache__" not in info.filename and not info.filename.endswith(".pyc")
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
            assert stat.S_IMODE(info.external_attr >> 16) == 0o644
        with zipfile.ZipFile(path) as archive:
            handler = archive.read("handler.py")
        assert handler == (REPO_ROOT / "lambdas" / name / "handler.py").read_bytes()


def test_missing_sources_say_what_to_do(tmp_path):
    with pytest.raises(PackagingError, match="source checkout"):
        build_lambda_zips(tmp_path / "out", repo_root=tmp_path)


def test_firehose_transform_runs_from_its_zip(zips, clean_site, tmp_path):
    code = unpack(zips["firehose_transform"], tmp_path / "code")
    now = int(time.time() * 1000)
    good = {
        "greenhouse_id": "gh-1",
        "device_id": "d-1",
        "timestamp": now - 1000,
        "temperature": "21.5",
        "humidity": 60,
        "co2": 800,
        "error_code": "0",
    }
    records = [
        {
            "recordId": "1",
            "approximateArrivalTimestamp": now,
            "data": base64.b64encode(json.dumps(good).encode()).decode(),
        },
        {
            "recordId": "2",
            "approximateArrivalTimestamp": now,
            "data": base64.b64encode(b"not json").decode(),
        },
    ]
    report = run_clean(code, clean_site, {"records": records})
    out = report["result"]["records"]
    assert [o["result"] for o in out] == ["Ok", "ProcessingFailed"]
    reading = json.loads(base64.b64decode(out[0]["data"]))
    assert reading["temperature"] == 21.5 and reading["error_code"] == 0
    assert set(out[0]["metadata"]["partitionKeys"]) == {"year", "month", "day", "hour"}


def test_pseudo_sensor_log_runs_from_its_zip(zips, clean_site, tmp_path, httpserver):
    calls = []

    def handle(request):
        calls.append((time.monotonic(), request.headers.get("x-api-key"), request.get_json()))
        n = len(request.get_json()["records"])
        return Response(json.dumps({"FailedRecordCount": 0, "Records": [{}] * n}))

    httpserver.expect_request("/prod/records", method="POST").respond_with_handler(handle)
    code = unpack(zips["pseudo_sensor_log"], tmp_path / "code")
    env = {
        "INGEST_URL": httpserver.url_for("/prod/records"),
        "INGEST_API_KEY": "k-123",
        "FUNCTION_TIMEOUT_S": "60",
    }
    run = {"run": {"count": 2, "interval": 0.1, "greenhouses": 1, "devices": 2, "run_id": "z"}}
    report = run_clean(code, clean_site, run, env)
    assert report["error"] is None and report["result"]["sent"] == 4
    assert len(calls) == 2 and all(c[1] == "k-123" for c in calls)

    bad = {"httpMethod": "POST", "requestContext": {"requestId": "r"}, "body": '{"count": -1}'}
    report = run_clean(code, clean_site, bad, env)
    assert report["result"]["statusCode"] == 400


def test_anomaly_detector_runs_from_its_zip_against_moto_server(
    zips, clean_site, tmp_path, httpserver
):
    from moto.server import ThreadedMotoServer

    messages = []

    def handle(request):
        messages.append(request.get_json())
        return Response(json.dumps({"id": "1"}), status=200)

    httpserver.expect_request(HOOK_PATH, method="POST").respond_with_handler(handle)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        session = boto3.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
        )
        s3 = session.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="sensor-log-bucket")
        s3.create_bucket(Bucket="spike-log-bucket")
        session.client("ssm", endpoint_url=endpoint).put_parameter(
            Name="/smartfarm/discord_webhook",
            Value=httpserver.url_for(HOOK_PATH),
            Type="SecureString",
        )
        t0 = int(datetime(2026, 11, 28, 10, tzinfo=UTC).timestamp() * 1000)
        rows = [
            ("gh-1", "dev-1", t0, 400.0, 60.0, 800.0, 0),
            ("gh-1", "dev-2", t0, 21.0, 60.0, 800.0, 1),
            ("gh-1", "dev-3", t0, 21.0, 60.0, 800.0, 0),
        ]
        key = "logs/year=2026/month=11/day=28/hour=10/part 1=x.parquet"
        s3.put_object(
            Bucket="sensor-log-bucket", Key=key, Body=lake.parquet_bytes(table_from_rows(rows))
        )
        event = {
            "Records": [
                {
                    "eventSource": "aws:s3",
                    "eventName": "ObjectCreated:Put",
                    "s3": {
                        "bucket": {"name": "sensor-log-bucket"},
                        "object": {"key": quote_plus(key, safe="/")},
                    },
                }
            ]
        }
        env = {
            "AWS_ENDPOINT_URL": endpoint,
            "SPIKE_BUCKET": "spike-log-bucket",
            "DISCORD_WEBHOOK_SSM_PARAMETER": "/smartfarm/discord_webhook",
            "SMARTFARM_WEBHOOK_ALLOW_LOOPBACK": "1",  # the webhook is a local test server
        }
        code = unpack(zips["anomaly_detector"], tmp_path / "code")
        report = run_clean(code, clean_site, event, env)
        assert report["error"] is None, report
        assert report["result"]["spikes"] == 2 and report["result"]["alerts"] == {key: "delivered"}
        spike_key = f"spikes/year=2026/month=11/day=28/{lake.source_digest(key)}.parquet"
        stored = lake.read_parquet_bytes(
            s3.get_object(Bucket="spike-log-bucket", Key=spike_key)["Body"].read()
        )
        assert sorted(stored.column("rule").to_pylist()) == ["impossible", "sensor_error"]
        assert len(messages) == 1 and "2 anomalies" in messages[0]["content"]

        # the same event again, in a fresh interpreter: no second message
        again = run_clean(code, clean_site, event, env)
        assert again["result"]["alerts"] == {key: "already_delivered"}
        assert len(messages) == 1
    finally:
        server.stop()


def test_build_dir_holds_only_the_zips(zips):
    folder = next(iter(zips.values())).parent
    assert sorted(os.listdir(folder)) == sorted(f"{n}.zip" for n in FUNCTIONS)  # no temp files


# -- what may go into a zip (issue 16 item 7) ----------------------------------------------------


def source_copy(root: Path) -> Path:
    """A copy of the Lambda sources (regular files only) to plant junk in."""
    import shutil

    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in FUNCTIONS:
        shutil.copytree(REPO_ROOT / "lambdas" / name, root / "lambdas" / name, ignore=ignore)
    shutil.copytree(
        REPO_ROOT / "smartfarm_cli" / "core", root / "smartfarm_cli" / "core", ignore=ignore
    )
    shutil.copy2(
        REPO_ROOT / "smartfarm_cli" / "__init__.py", root / "smartfarm_cli" / "__init__.py"
    )
    return root


def names_in(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as archive:
        return archive.namelist()


def test_only_allowed_files_go_in(tmp_path):
    root = source_copy(tmp_path / "src")
    clean = {
        n: names_in(p) for n, p in build_lambda_zips(tmp_path / "clean", repo_root=root).items()
    }
    fn = root / "lambdas" / "anomaly_detector"
    core = root / "smartfarm_cli" / "core"
    junk = {
        fn / "handler.py~": "backup",
        fn / ".handler.py.swp": "swap",
        fn / "NOTES.md": "private notes",
        fn / "event.json": '{"test": "event"}',
        fn / "secrets.env": "TOKEN=x",
        fn / ".venv" / "lib" / "evil.py": "x = 1",  # a dot-folder, even with .py inside
        fn / "sub" / ".cache" / "c.py": "x = 2",
        fn / "__pycache__" / "handler.py": "x = 3",
        core / ".idea" / "workspace.py": "x = 4",
        core / "rules.toml.bak": "old rules",
        core / "queries.pyc": "bytecode",
        core / "draft.txt": "draft",
    }
    for path, text in junk.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (fn / "util.py").write_text("HELPER = 1\n")  # a real extra module does go in
    (fn / "rules.toml").write_text("# function-level override\n")
    zips = build_lambda_zips(tmp_path / "out", repo_root=root)
    names = names_in(zips["anomaly_detector"])
    assert set(names) == {*clean["anomaly_detector"], "util.py", "rules.toml"}
    for other in ("pseudo_sensor_log", "firehose_transform"):
        assert names_in(zips[other]) == clean[other]  # core junk reached no zip
    for name in names:
        assert name.endswith(".py") or name.endswith("/rules.toml") or name == "rules.toml"
        assert not any(part.startswith(".") or part == "__pycache__" for part in name.split("/"))


@pytest.mark.parametrize(
    "where",
    ["function file", "function folder", "core file", "core folder", "core itself", "package init"],
)
def test_symlinks_are_refused(tmp_path, where):
    root = source_copy(tmp_path / "src")
    outside = tmp_path / "outside"
    (outside / "pkg").mkdir(parents=True)
    (outside / "secret.py").write_text("SECRET = 'from outside the tree'\n")
    (outside / "pkg" / "mod.py").write_text("X = 1\n")
    fn = root / "lambdas" / "anomaly_detector"
    core = root / "smartfarm_cli" / "core"
    if where == "function file":
        link = fn / "extra.py"
        link.symlink_to(outside / "secret.py")
    elif where == "function folder":
        link = fn / "vendored"
        link.symlink_to(outside / "pkg", target_is_directory=True)
    elif where == "core file":
        link = core / "extra.py"
        link.symlink_to(outside / "secret.py")
    elif where == "core folder":
        link = core / "plugins"
        link.symlink_to(outside / "pkg", target_is_directory=True)
    elif where == "core itself":
        import shutil

        shutil.move(core, outside / "core")
        link = core
        link.symlink_to(outside / "core", target_is_directory=True)
    else:
        link = root / "smartfarm_cli" / "__init__.py"
        (outside / "init.py").write_text(link.read_text())
        link.unlink()
        link.symlink_to(outside / "init.py")
    with pytest.raises(PackagingError, match="is a symlink") as info:
        build_lambda_zips(tmp_path / "out", repo_root=root)
    assert str(link) in str(info.value)
    assert info.value.exit_code == 2  # farmctl deploy ends with this one line, exit 2
    assert not (tmp_path / "out" / "anomaly_detector.zip").exists()


def test_a_dangling_or_unlisted_symlink_in_a_skipped_place_is_ignored(tmp_path):
    root = source_copy(tmp_path / "src")
    fn = root / "lambdas" / "anomaly_detector"
    (fn / ".venv").symlink_to(tmp_path, target_is_directory=True)  # dot-folder: not entered
    (fn / "notes").symlink_to(tmp_path / "missing")  # not an allowed name: never read
    zips = build_lambda_zips(tmp_path / "out", repo_root=root)
    assert "notes" not in names_in(zips["anomaly_detector"])


def test_bytes_change_with_code_only(tmp_path):
    """source_code_hash input: same bytes after mtime / mode / copy changes, new bytes for code."""
    root = source_copy(tmp_path / "src")
    first = {
        n: p.read_bytes() for n, p in build_lambda_zips(tmp_path / "a", repo_root=root).items()
    }
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, (1_900_000_000, 1_900_000_000))
            path.chmod(0o755)
    moved = source_copy(tmp_path / "elsewhere")  # another checkout, other inode order
    for source in (root, moved):
        again = build_lambda_zips(tmp_path / f"b-{source.name}", repo_root=source)
        assert {n: p.read_bytes() for n, p in again.items()} == first
    handler = root / "lambdas" / "firehose_transform" / "handler.py"
    handler.write_text(handler.read_text() + "\n# changed\n")
    changed = build_lambda_zips(tmp_path / "c", repo_root=root)
    assert changed["firehose_transform"].read_bytes() != first["firehose_transform"]
    assert changed["anomaly_detector"].read_bytes() == first["anomaly_detector"]
    (root / "smartfarm_cli" / "core" / "rules.toml").write_text("# rules changed\n")
    rules = build_lambda_zips(tmp_path / "d", repo_root=root)
    assert all(rules[n].read_bytes() != first[n] for n in FUNCTIONS)
