"""`farmctl keys` (issue 16 item 4): per-site device keys on both targets.

aws: moto API Gateway holds the sites' usage plans as Terraform makes them (one per site, the
optional shared key on the first). moto stores keys and usage-plan keys but enforces none and
has no GetUsage (REFERENCE.md §10), so the last-used day is checked with GetUsage answered by a
botocore before-call hook in the real response shape. local: the hashed store `farmctl serve`
reads (its enforcement is tested on a real server in test_serve.py).
"""

from __future__ import annotations

import csv
import io
import json
import stat
from datetime import UTC, datetime, timedelta

import pytest
from botocore.awsrequest import AWSResponse
from moto import mock_aws
from typer.testing import CliRunner

from smartfarm_cli import terminal
from smartfarm_cli.cli import app
from smartfarm_cli.stack import save_outputs
from smartfarm_cli.targets.aws import AwsTarget
from smartfarm_cli.targets.local import LocalTarget

REGION = "ap-northeast-2"
SHARED_VALUE = "shared-terraform-key-value-0123456789"


def farmctl(home, *args, target="aws", input=None):
    result = CliRunner().invoke(app, ["--home", str(home), "--target", target, *args], input=input)
    assert "Traceback" not in result.output, result.output
    return result


@pytest.fixture(params=[80, 200])
def width(request, monkeypatch):
    monkeypatch.setattr(terminal.console.real, "width", request.param)
    return request.param


@pytest.fixture
def stack(tmp_path, monkeypatch):
    """The sites' usage plans as terraform/ingest.tf makes them, and the stack outputs."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_REGION", "AWS_PROFILE", "SMARTFARM_HOME", "SMARTFARM_TARGET"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        import boto3

        apigw = boto3.client("apigateway", region_name=REGION)
        plans = {
            site: apigw.create_usage_plan(name=f"sf-ingest-site-{site}")["id"]
            for site in ("north", "south")
        }
        simulator = apigw.create_usage_plan(name="sf-ingest-simulator")["id"]
        shared = apigw.create_api_key(name="sf-ingest-devices", value=SHARED_VALUE, enabled=True)
        apigw.create_usage_plan_key(
            usagePlanId=plans["north"], keyId=shared["id"], keyType="API_KEY"
        )
        home = tmp_path / "home"
        home.mkdir()
        save_outputs(
            home,
            {
                "region": REGION,
                "ingest_api_url": f"https://abc1234567.execute-api.{REGION}.amazonaws.com/v1/records",
                "ingest_api_key_id": shared["id"],
                "ingest_usage_plans": plans,
            },
        )
        yield type(
            "Stack",
            (),
            {
                "apigw": apigw,
                "plans": plans,
                "home": home,
                "shared": shared["id"],
                "sim": simulator,
            },
        )


def plan_values(stack, site) -> set[str]:
    items = stack.apigw.get_usage_plan_keys(usagePlanId=stack.plans[site])["items"]
    return {item["value"] for item in items if item["id"] in api_key_ids(stack)}


def api_key_ids(stack) -> set[str]:
    return {k["id"] for k in stack.apigw.get_api_keys()["items"]}


def listed(home, target="aws") -> list[dict]:
    result = farmctl(home, "keys", "list", "-o", "json", target=target)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# -- aws --------------------------------------------------------------------------------------


def test_aws_create_puts_a_key_on_the_sites_plan_and_prints_its_value_once(stack):
    made = farmctl(stack.home, "keys", "create", "north", "--label", "gate-1")
    assert made.exit_code == 0, made.output
    value = made.stdout.strip()
    assert made.stdout == value + "\n" and len(value) >= 20  # the value alone on stdout
    assert value not in made.stderr and "north" in made.stderr
    assert value in plan_values(stack, "north") and value not in plan_values(stack, "south")
    (key,) = [k for k in stack.apigw.get_api_keys()["items"] if k["id"] != stack.shared]
    assert key["enabled"] is True and key["description"] == "gate-1"
    assert key["tags"]["smartfarm:site"] == "north" and key["name"].startswith(
        "sf-ingest-site-north-"
    )
    rows = {r["key_id"]: r for r in listed(stack.home)}
    assert set(rows) == {stack.shared, key["id"]}
    assert rows[key["id"]]["site"] == "north" and rows[key["id"]]["label"] == "gate-1"
    assert rows[stack.shared]["label"].startswith("shared key (Terraform")
    assert datetime.fromisoformat(rows[key["id"]]["created"].replace("Z", "+00:00"))


def test_aws_site_must_be_declared_in_the_stack_and_well_formed(stack):
    undeclared = farmctl(stack.home, "keys", "create", "east")
    assert undeclared.exit_code == 2
    assert "not declared" in undeclared.stderr and "ingest_sites" in undeclared.stderr
    bad = farmctl(stack.home, "keys", "create", "North Side")
    assert bad.exit_code == 2 and "not a site name" in bad.stderr
    assert api_key_ids(stack) == {stack.shared}  # nothing was made


def test_aws_list_never_shows_a_value_in_any_format(stack, width):
    made = farmctl(stack.home, "keys", "create", "south").stdout.strip()
    for fmt in ("table", "json", "csv"):
        result = farmctl(stack.home, "keys", "list", "-o", fmt, "--wide")
        assert result.exit_code == 0, result.output
        for value in (made, SHARED_VALUE):
            assert value not in result.stdout and value not in result.stderr
    table = farmctl(stack.home, "keys", "list")
    lines = table.stdout.splitlines()
    assert all(len(line) <= width for line in lines)
    for key_id in api_key_ids(stack):
        assert key_id in table.stdout  # ids are never cut
    assert "last_used unknown: API Gateway GetUsage failed" in table.stderr  # moto has none
    rows = list(
        csv.DictReader(io.StringIO(farmctl(stack.home, "keys", "list", "-o", "csv").stdout))
    )
    assert {r["site"] for r in rows} == {"north", "south"}
    assert list(rows[0]) == ["site", "key_id", "label", "enabled", "created", "last_used"]


def test_aws_last_used_is_the_last_day_getusage_counted(stack, monkeypatch):
    made = farmctl(stack.home, "keys", "create", "south")
    (new_id,) = api_key_ids(stack) - {stack.shared}
    today = datetime.now(UTC).date()
    start = today - timedelta(days=29)
    asked = []

    def get_usage(params, **kwargs):
        asked.append(params["query_string"])
        plan = params["url_path"].split("/")[2]
        days = [[0, 100]] * 30
        items = {}
        if plan == stack.plans["south"]:
            items = {new_id: [*days[:27], [12, 88], [0, 100], [0, 100]]}  # day 28 of 30: 2 days ago
        elif plan == stack.plans["north"]:
            items = {stack.shared: days}  # not used in the window
        body = {"usagePlanId": plan, "startDate": start.isoformat(), "items": items}
        return AWSResponse(params["url_path"], 200, {}, None), body

    original = AwsTarget._new_session

    def new_session(self):
        session = original(self)
        session.events.register("before-call.api-gateway.GetUsage", get_usage)
        return session

    monkeypatch.setattr(AwsTarget, "_new_session", new_session)
    assert made.exit_code == 0
    rows = {r["key_id"]: r for r in listed(stack.home)}
    assert rows[new_id]["last_used"] == (today - timedelta(days=2)).isoformat()
    assert rows[stack.shared]["last_used"] is None
    assert len(asked) == 2 and all(q["endDate"] == today.isoformat() for q in asked)
    assert all(q["startDate"] == start.isoformat() for q in asked)


def test_aws_rotate_makes_a_new_key_and_revokes_the_old_one_when_asked(stack, tmp_path):
    first = farmctl(stack.home, "keys", "create", "south", "--label", "barn").stdout.strip()
    (old_id,) = api_key_ids(stack) - {stack.shared}
    # No terminal, no --revoke-old: both stay valid for the overlap.
    kept = farmctl(stack.home, "keys", "rotate", "south")
    assert kept.exit_code == 0, kept.output
    second = kept.stdout.strip()
    assert second != first and "stays valid" in kept.stderr and old_id in kept.stderr
    assert plan_values(stack, "south") == {first, second}
    assert stack.apigw.get_api_key(apiKey=old_id)["enabled"] is True
    # Two enabled keys now: a site rotation would be ambiguous, a key rotation is not.
    ambiguous = farmctl(stack.home, "keys", "rotate", "south")
    assert ambiguous.exit_code == 2 and "rotate one at a time" in ambiguous.stderr
    out = tmp_path / "south.key"
    rotated = farmctl(stack.home, "keys", "rotate", old_id, "--revoke-old", "--out", str(out))
    assert rotated.exit_code == 0, rotated.output
    third = out.read_text().strip()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and rotated.stdout == ""
    assert third not in rotated.stderr and third in plan_values(stack, "south")
    assert stack.apigw.get_api_key(apiKey=old_id)["enabled"] is False
    rows = [r for r in listed(stack.home) if r["site"] == "south"]
    assert [r["label"] for r in rows] == ["barn"] * 3  # the replacement keeps the label
    again = farmctl(stack.home, "keys", "rotate", "south", "--out", str(out))
    assert again.exit_code == 2 and "exists" in again.stderr  # never over a key file


def test_aws_revoke_disables_or_deletes_and_leaves_terraforms_key_alone(stack):
    farmctl(stack.home, "keys", "create", "south")
    (key_id,) = api_key_ids(stack) - {stack.shared}
    no_terminal = farmctl(stack.home, "keys", "revoke", key_id)
    assert no_terminal.exit_code == 2 and "--yes" in no_terminal.stderr
    assert stack.apigw.get_api_key(apiKey=key_id)["enabled"] is True
    declined = farmctl(stack.home, "keys", "revoke", "south", "--yes")
    assert declined.exit_code == 0
    assert stack.apigw.get_api_key(apiKey=key_id)["enabled"] is False
    deleted = farmctl(stack.home, "keys", "revoke", key_id, "--delete", "--yes")
    assert deleted.exit_code == 0, deleted.output
    assert api_key_ids(stack) == {stack.shared}
    assert stack.apigw.get_usage_plan_keys(usagePlanId=stack.plans["south"])["items"] == []
    shared = farmctl(stack.home, "keys", "revoke", stack.shared, "--yes")
    assert shared.exit_code == 2 and "shared_ingest_api_key = false" in shared.stderr
    assert stack.apigw.get_api_key(apiKey=stack.shared)["enabled"] is True
    unknown = farmctl(stack.home, "keys", "revoke", "nosuchkey1", "--yes")
    assert unknown.exit_code == 2 and "farmctl keys list" in unknown.stderr


def test_aws_keys_of_other_plans_are_not_listed(stack):
    import boto3

    apigw = boto3.client("apigateway", region_name=REGION)
    sim = apigw.create_api_key(name="sf-simulator-ingest", enabled=True)
    apigw.create_usage_plan_key(usagePlanId=stack.sim, keyId=sim["id"], keyType="API_KEY")
    assert sim["id"] not in {r["key_id"] for r in listed(stack.home)}
    refused = farmctl(stack.home, "keys", "revoke", sim["id"], "--yes")
    assert refused.exit_code == 2


def test_aws_an_old_stack_without_site_plans_says_to_deploy(stack):
    save_outputs(stack.home, {"region": REGION, "ingest_api_key_id": stack.shared})
    result = farmctl(stack.home, "keys", "list")
    assert result.exit_code == 1 and "farmctl deploy" in result.stderr


# -- local (the keys farmctl serve accepts) -------------------------------------------------


def test_local_keys_are_stored_as_hashes_and_listed_without_values(tmp_path, width):
    home = tmp_path / "h"
    made = farmctl(home, "keys", "create", "north", "--label", "esp32-7", target="local")
    assert made.exit_code == 0, made.output
    value = made.stdout.strip()
    assert len(value) == 40 and made.stdout == value + "\n"
    store = home / "api-keys.db"
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    assert value.encode() not in store.read_bytes()
    out = tmp_path / "south.key"
    to_file = farmctl(home, "keys", "create", "south", "--out", str(out), target="local")
    assert to_file.exit_code == 0 and to_file.stdout == ""
    south = out.read_text().strip()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and south not in to_file.stderr
    for fmt in ("table", "json", "csv"):
        result = farmctl(home, "keys", "list", "-o", fmt, "-w", target="local")
        assert value not in result.output and south not in result.output
    table = farmctl(home, "keys", "list", target="local").stdout
    assert all(len(line) <= width for line in table.splitlines())
    rows = listed(home, "local")
    assert [(r["site"], r["label"], r["enabled"]) for r in rows] == [
        ("north", "esp32-7", True),
        ("south", "", True),
    ]
    for row in rows:
        assert row["key_id"] in table and len(row["key_id"]) == 10
    assert [r["site"] for r in listed(home, "local") if r["site"] == "south"] == ["south"]


def test_local_rotate_and_revoke(tmp_path):
    home = tmp_path / "h"
    farmctl(home, "keys", "create", "north", target="local")
    (old,) = LocalTarget(home).list_keys().records()
    rotated = farmctl(home, "keys", "rotate", "north", "--revoke-old", target="local")
    assert rotated.exit_code == 0, rotated.output
    rows = {r["key_id"]: r for r in LocalTarget(home).list_keys().records()}
    assert rows[old["key_id"]]["enabled"] is False and len(rows) == 2
    (new_id,) = set(rows) - {old["key_id"]}
    assert rows[new_id]["enabled"] is True and rows[new_id]["site"] == "north"
    deleted = farmctl(home, "keys", "revoke", "north", "--delete", "--yes", target="local")
    assert deleted.exit_code == 0
    assert LocalTarget(home).list_keys().rows == []
    missing = farmctl(home, "keys", "revoke", "nosuchkey1", "--yes", target="local")
    assert missing.exit_code == 2 and "farmctl keys list" in missing.stderr


def test_a_new_key_never_shows_its_value_in_repr_or_str(tmp_path):
    new = LocalTarget(tmp_path / "h").create_key("north", "x")
    assert new.value not in repr(new) and new.value not in str(new)
    assert new.key_id in str(new)


def test_a_fresh_site_rotation_only_creates(tmp_path):
    home = tmp_path / "h"
    first = farmctl(home, "keys", "rotate", "west", target="local")
    assert first.exit_code == 0 and "no enabled key to replace" in first.stderr
    assert [r["site"] for r in LocalTarget(home).list_keys().records()] == ["west"]
