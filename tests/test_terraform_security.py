"""Issue 16's Terraform items, checked on the parsed stack (same loaders as test_terraform.py)
and, where Terraform can evaluate them offline without the AWS provider, by `terraform plan`."""

from __future__ import annotations

import pytest
from test_terraform import TF, ref, res, same, tf  # noqa: F401  (shared loaders)

APIS = ("ingest", "simulator")


# -- item 9: API Gateway execution-log groups ---------------------------------------------------


def test_api_execution_log_groups_are_declared_encrypted_and_retained():
    """API Gateway's own groups have no key, no retention and survive destroy: declare them."""
    names = tf()["locals"]["api_execution_log_groups"]
    for api in APIS:
        expected = (
            f"API-Gateway-Execution-Logs_${{aws_api_gateway_rest_api.{api}.id}}"
            "/${var.api_stage_name}"
        )
        assert same(names[api], expected), names[api]
        # The name API Gateway writes to is <api id>/<stage name>: the stage must use the same var.
        assert res("aws_api_gateway_stage", api)["stage_name"] == ref("var.api_stage_name")
        settings = res("aws_api_gateway_method_settings", api)["settings"][0]
        assert settings["logging_level"] in ("ERROR", "INFO")  # execution logging is on
    group = res("aws_cloudwatch_log_group", "api_execution")
    assert group["for_each"] == ref("local.api_execution_log_groups")
    assert group["name"] == ref("each.value")
    assert group["kms_key_id"] == ref("aws_kms_key.main.arn")
    assert group["retention_in_days"] == ref("var.cloudwatch_log_retention_days")


@pytest.mark.parametrize("api", APIS)
def test_no_stage_depends_on_its_execution_log_group_by_name_only(api):
    """The group must not wait for the stage (it would be created after the first requests)."""
    assert "aws_api_gateway_stage" not in tf()["locals"]["api_execution_log_groups"][api]
