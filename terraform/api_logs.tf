# API Gateway execution logs. Both stages log errors (method settings, logging_level ERROR) to
# a log group API Gateway names API-Gateway-Execution-Logs_<rest api id>/<stage> and, left alone,
# creates itself on the first logged request: without a KMS key, without retention, and outside
# Terraform, so it outlives `terraform destroy`. Declaring the groups here gives them the
# project's key and retention and removes them with the stack.
#
# The name uses var.api_stage_name rather than the stage resource, so each group is created right
# after its REST API, before the stage can serve (and log) a request. A stack deployed before this
# file existed may already have API Gateway's own groups: import each once before the next apply,
#   terraform import 'aws_cloudwatch_log_group.api_execution["ingest"]' \
#     'API-Gateway-Execution-Logs_<rest api id>/<stage>'
# (and the same for "simulator"), or delete them.

locals {
  api_execution_log_groups = {
    ingest    = "API-Gateway-Execution-Logs_${aws_api_gateway_rest_api.ingest.id}/${var.api_stage_name}"
    simulator = "API-Gateway-Execution-Logs_${aws_api_gateway_rest_api.simulator.id}/${var.api_stage_name}"
  }
}

resource "aws_cloudwatch_log_group" "api_execution" {
  for_each = local.api_execution_log_groups

  name              = each.value
  retention_in_days = var.cloudwatch_log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}
