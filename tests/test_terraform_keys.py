"""Issue 16 item 4 in Terraform: per-site usage plans, no device key in the state, the optional
source-address policy and its redeployment. What the account holds after a real apply (on moto)
and the variables' validation at plan time are in test_terraform_apply.py."""

from __future__ import annotations

import re

from test_terraform import TF, load_hcl, ref, res, same, tf

from smartfarm_cli import keys


def ingest_blocks(kind: str) -> list:
    return load_hcl(TF / "ingest.tf").get(kind, [])


def test_each_site_gets_its_own_usage_plan_and_the_old_plan_becomes_the_default_sites():
    plan = res("aws_api_gateway_usage_plan", "ingest")
    assert plan["for_each"] == ref("toset(var.ingest_sites)")
    assert plan["name"] == "${var.project}-ingest-site-${each.key}"  # never "-ingest-simulator"
    assert plan["tags"] == {"smartfarm:site": "${each.key}"}
    assert plan["api_stages"][0]["stage"] == ref("aws_api_gateway_stage.ingest.stage_name")
    assert plan["throttle_settings"][0]["rate_limit"] == ref("var.ingest_throttle_rate_limit")
    assert plan["quota_settings"][0]["limit"] == ref("var.ingest_quota_limit")
    sites = tf()["variable"]["ingest_sites"]
    assert sites["default"] == ["main"] and sites["type"] == ref("list(string)")
    moved = {m["from"]: m["to"] for m in ingest_blocks("moved")}
    assert moved[ref("aws_api_gateway_usage_plan.ingest")] == ref(
        'aws_api_gateway_usage_plan.ingest["main"]'
    )
    outputs = tf()["output"]["ingest_usage_plans"]
    assert same(
        outputs["value"],
        ref("{ for site, plan in aws_api_gateway_usage_plan.ingest : site => plan.id }"),
    )


def test_no_device_key_value_is_in_the_state_unless_the_shared_key_is_asked_for():
    """Terraform makes no per-site key (farmctl keys does, through the API): the only device key
    Terraform can hold is the old shared one, off by default."""
    assert tf()["variable"]["shared_ingest_api_key"]["default"] is False
    for kind, name in (
        ("aws_api_gateway_api_key", "ingest"),
        ("aws_api_gateway_usage_plan_key", "ingest"),
        ("aws_ssm_parameter", "ingest_api_key"),
    ):
        assert res(kind, name)["count"] == ref("var.shared_ingest_api_key ? 1 : 0"), name
    device_keys = [n for n in tf()["resource"]["aws_api_gateway_api_key"] if "simulator" not in n]
    assert device_keys == ["ingest"]
    shared_on = res("aws_api_gateway_usage_plan_key", "ingest")["usage_plan_id"]
    assert shared_on == ref("aws_api_gateway_usage_plan.ingest[var.ingest_sites[0]].id")
    for output in ("ingest_api_key_id", "ingest_api_key_ssm_parameter"):
        assert "var.shared_ingest_api_key ?" in tf()["output"][output]["value"]


def test_site_names_follow_one_rule_in_terraform_and_farmctl():
    text = (TF / "variables.tf").read_text()
    (pattern,) = re.findall(r'for s in var\.ingest_sites : can\(regex\("\^(.+?)\$", s\)\)', text)
    assert pattern.replace("\\\\", "\\") == keys.SITE.pattern
    for good in ("north", "gh-block-2", "a", "x" * 32):
        assert keys.SITE.fullmatch(good)
    for bad in ("North", "-north", "north-", "x" * 33, "gh block", "", "site_1"):
        assert not keys.SITE.fullmatch(bad)


def test_source_address_policy_denies_every_other_address_and_redeploys_the_stage():
    doc = tf()["data"]["aws_iam_policy_document"]["ingest_source"]
    (allow,) = doc["statement"]
    api_arn = "${aws_api_gateway_rest_api.ingest.execution_arn}/*"
    assert allow["actions"] == ["execute-api:Invoke"] and allow["resources"] == [api_arn]
    assert "effect" not in allow  # Allow: the API key still decides
    (dynamic,) = doc["dynamic"]
    deny_when = dynamic["statement"]["for_each"]
    assert same(deny_when, ref("length(var.ingest_allowed_source_cidrs) > 0 ? [1] : []"))
    (deny,) = dynamic["statement"]["content"]
    assert deny["effect"] == "Deny" and deny["resources"] == [api_arn]
    (condition,) = deny["condition"]
    assert condition == {
        "test": "NotIpAddress",
        "variable": "aws:SourceIp",
        "values": ref("var.ingest_allowed_source_cidrs"),
    }
    policy = res("aws_api_gateway_rest_api_policy", "ingest")
    assert "count" not in policy and "for_each" not in policy  # emptying the list is an update
    assert policy["policy"] == ref("data.aws_iam_policy_document.ingest_source.json")
    triggers = res("aws_api_gateway_deployment", "ingest")["triggers"]["redeployment"]
    assert "aws_api_gateway_rest_api_policy.ingest.policy" in triggers
    assert tf()["variable"]["ingest_allowed_source_cidrs"]["default"] == []


def test_the_simulators_sends_are_flagged_when_addresses_are_limited():
    (check,) = ingest_blocks("check")
    (assertion,) = check["simulator_reaches_the_ingest_api"]["assert"]
    assert assertion["condition"] == ref("length(var.ingest_allowed_source_cidrs) == 0")
    assert "farmctl simulate --direct" in assertion["error_message"]
