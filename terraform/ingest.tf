# kinesis_api_gw: REST API proxying straight to Kinesis (no Lambda on the hot path).
#   POST /records  {"records": [reading, ...]} (1-500)  -> PutRecords
#   POST /record   reading                              -> PutRecord
# Bodies are checked against JSON-Schema models generated from smartfarm_cli/core/schema.py;
# value rules (timestamps, numeric strings, ranges) are applied by the Firehose transform.

resource "aws_api_gateway_rest_api" "ingest" {
  lifecycle {
    create_before_destroy = true
  }

  name        = "${var.project}-kinesis_api_gw"
  description = "Sensor ingest: API Gateway -> Kinesis ${aws_kinesis_stream.readings.name}"

  endpoint_configuration {
    types = ["REGIONAL"]
  }
}

resource "aws_api_gateway_model" "reading" {
  rest_api_id  = aws_api_gateway_rest_api.ingest.id
  name         = "Reading"
  description  = "One sensor reading (generated from smartfarm_cli.core.schema.reading_json_schema)"
  content_type = "application/json"
  schema       = file("${path.module}/schemas/reading.json")
}

resource "aws_api_gateway_model" "reading_batch" {
  rest_api_id  = aws_api_gateway_rest_api.ingest.id
  name         = "ReadingBatch"
  description  = "Up to 500 readings (generated from smartfarm_cli.core.schema.batch_json_schema)"
  content_type = "application/json"
  schema       = file("${path.module}/schemas/reading_batch.json")
}

resource "aws_api_gateway_request_validator" "ingest_body" {
  rest_api_id                 = aws_api_gateway_rest_api.ingest.id
  name                        = "validate-body"
  validate_request_body       = true
  validate_request_parameters = false
}

# A JSON answer to a refused body.
resource "aws_api_gateway_gateway_response" "ingest_bad_body" {
  rest_api_id   = aws_api_gateway_rest_api.ingest.id
  response_type = "BAD_REQUEST_BODY"
  status_code   = "400"

  # Gateway response templates are plain substitution (no VTL, no escaping): only
  # messageString, which API Gateway quotes and escapes itself, may go into the JSON. The raw
  # validationErrorString (it holds quotes) stays in the access log's validationError field.
  response_templates = {
    "application/json" = "{\"message\": $context.error.messageString}"
  }
}

resource "aws_api_gateway_resource" "records" {
  rest_api_id = aws_api_gateway_rest_api.ingest.id
  parent_id   = aws_api_gateway_rest_api.ingest.root_resource_id
  path_part   = "records"
}

resource "aws_api_gateway_resource" "record" {
  rest_api_id = aws_api_gateway_rest_api.ingest.id
  parent_id   = aws_api_gateway_rest_api.ingest.root_resource_id
  path_part   = "record"
}

locals {
  ingest_routes = {
    records = {
      resource_id       = aws_api_gateway_resource.records.id
      model             = aws_api_gateway_model.reading_batch.name
      action            = "PutRecords"
      request_template  = templatefile("${path.module}/templates/put_records.vtl", { stream_name = aws_kinesis_stream.readings.name, simulator_api_key_id = aws_api_gateway_api_key.simulator_ingest.id })
      response_template = file("${path.module}/templates/put_records_response.vtl")
    }
    record = {
      resource_id       = aws_api_gateway_resource.record.id
      model             = aws_api_gateway_model.reading.name
      action            = "PutRecord"
      request_template  = templatefile("${path.module}/templates/put_record.vtl", { stream_name = aws_kinesis_stream.readings.name, simulator_api_key_id = aws_api_gateway_api_key.simulator_ingest.id })
      response_template = file("${path.module}/templates/put_record_response.vtl")
    }
  }
  # Backend status -> method status (selection patterns match the Kinesis HTTP status).
  ingest_error_statuses = {
    "400" = "4\\d{2}"
    "500" = "5\\d{2}"
  }
}

resource "aws_api_gateway_method" "ingest" {
  for_each = local.ingest_routes

  rest_api_id          = aws_api_gateway_rest_api.ingest.id
  resource_id          = each.value.resource_id
  http_method          = "POST"
  authorization        = "NONE" # devices authenticate with their site's API key (x-api-key)
  api_key_required     = true
  request_validator_id = aws_api_gateway_request_validator.ingest_body.id
  request_models = {
    "application/json" = each.value.model
  }
}

resource "aws_api_gateway_integration" "ingest" {
  for_each = local.ingest_routes

  rest_api_id             = aws_api_gateway_rest_api.ingest.id
  resource_id             = each.value.resource_id
  http_method             = aws_api_gateway_method.ingest[each.key].http_method
  type                    = "AWS"
  integration_http_method = "POST"
  uri                     = "arn:${local.partition}:apigateway:${local.region}:kinesis:action/${each.value.action}"
  credentials             = aws_iam_role.ingest.arn
  # Only application/json has a template (and a model); anything else gets 415, never passes through.
  passthrough_behavior = "NEVER"

  request_parameters = {
    "integration.request.header.Content-Type" = "'application/x-amz-json-1.1'"
  }

  request_templates = {
    "application/json" = each.value.request_template
  }
}

resource "aws_api_gateway_method_response" "ingest_ok" {
  for_each = local.ingest_routes

  rest_api_id = aws_api_gateway_rest_api.ingest.id
  resource_id = each.value.resource_id
  http_method = aws_api_gateway_method.ingest[each.key].http_method
  status_code = "200"

  response_models = {
    "application/json" = "Empty"
  }
}

resource "aws_api_gateway_integration_response" "ingest_ok" {
  for_each = local.ingest_routes

  rest_api_id = aws_api_gateway_rest_api.ingest.id
  resource_id = each.value.resource_id
  http_method = aws_api_gateway_method.ingest[each.key].http_method
  status_code = aws_api_gateway_method_response.ingest_ok[each.key].status_code

  response_templates = {
    "application/json" = each.value.response_template
  }

  depends_on = [aws_api_gateway_integration.ingest]
}

locals {
  ingest_error_responses = {
    for pair in setproduct(keys(local.ingest_routes), keys(local.ingest_error_statuses)) :
    "${pair[0]}-${pair[1]}" => { route = pair[0], status = pair[1], pattern = local.ingest_error_statuses[pair[1]] }
  }
}

resource "aws_api_gateway_method_response" "ingest_error" {
  for_each = local.ingest_error_responses

  rest_api_id = aws_api_gateway_rest_api.ingest.id
  resource_id = local.ingest_routes[each.value.route].resource_id
  http_method = aws_api_gateway_method.ingest[each.value.route].http_method
  status_code = each.value.status

  response_models = {
    "application/json" = "Error"
  }
}

# Throttling: error_response.vtl turns Kinesis' 400 ProvisionedThroughputExceededException into
# 429 ($context.responseOverride.status), so clients retry instead of dropping the readings.
resource "aws_api_gateway_method_response" "ingest_throttled" {
  for_each = local.ingest_routes

  rest_api_id = aws_api_gateway_rest_api.ingest.id
  resource_id = each.value.resource_id
  http_method = aws_api_gateway_method.ingest[each.key].http_method
  status_code = "429"

  response_models = {
    "application/json" = "Error"
  }
}

resource "aws_api_gateway_integration_response" "ingest_error" {
  for_each = local.ingest_error_responses

  rest_api_id       = aws_api_gateway_rest_api.ingest.id
  resource_id       = local.ingest_routes[each.value.route].resource_id
  http_method       = aws_api_gateway_method.ingest[each.value.route].http_method
  status_code       = aws_api_gateway_method_response.ingest_error[each.key].status_code
  selection_pattern = each.value.pattern

  response_templates = {
    "application/json" = file("${path.module}/templates/error_response.vtl")
  }

  depends_on = [aws_api_gateway_integration.ingest]
}

resource "aws_api_gateway_deployment" "ingest" {
  rest_api_id = aws_api_gateway_rest_api.ingest.id
  description = "kinesis_api_gw"

  # Redeploy whenever a route, model, validator, template or response changes: whole resources,
  # so a newly added argument cannot be forgotten here.
  triggers = {
    redeployment = sha1(jsonencode([
      aws_api_gateway_model.reading.schema,
      aws_api_gateway_model.reading_batch.schema,
      aws_api_gateway_gateway_response.ingest_bad_body,
      aws_api_gateway_request_validator.ingest_body,
      aws_api_gateway_method.ingest,
      aws_api_gateway_integration.ingest,
      aws_api_gateway_method_response.ingest_ok,
      aws_api_gateway_method_response.ingest_error,
      aws_api_gateway_method_response.ingest_throttled,
      aws_api_gateway_integration_response.ingest_ok,
      aws_api_gateway_integration_response.ingest_error,
      # A resource policy takes effect only with a new deployment.
      aws_api_gateway_rest_api_policy.ingest.policy,
    ]))
  }

  lifecycle {
    create_before_destroy = true
  }

  depends_on = [
    aws_api_gateway_integration.ingest,
    aws_api_gateway_integration_response.ingest_ok,
    aws_api_gateway_integration_response.ingest_error,
  ]
}

resource "aws_cloudwatch_log_group" "ingest_access" {
  name              = "/aws/apigateway/${var.project}-kinesis_api_gw/access"
  retention_in_days = var.cloudwatch_log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

locals {
  # Access log line: no body, no headers, no key value (only the key id).
  api_access_log_format = jsonencode({
    requestId         = "$context.requestId"
    ip                = "$context.identity.sourceIp"
    apiKeyId          = "$context.identity.apiKeyId"
    requestTime       = "$context.requestTime"
    httpMethod        = "$context.httpMethod"
    resourcePath      = "$context.resourcePath"
    status            = "$context.status"
    responseLength    = "$context.responseLength"
    latencyMs         = "$context.responseLatency"
    integrationStatus = "$context.integration.status"
    integrationError  = "$context.integration.error"
    validationError   = "$context.error.validationErrorString"
  })
}

resource "aws_api_gateway_stage" "ingest" {
  #checkov:skip=CKV_AWS_120:Caching makes no sense for POST ingestion and costs per hour.
  #checkov:skip=CKV2_AWS_29:WAF (~$5+/month per ACL plus requests) is left out; API keys, usage-plan throttling and quotas guard the endpoint. Attach a WAF ACL here if exposed more widely.
  #checkov:skip=CKV2_AWS_51:Devices authenticate with API keys; API Gateway client certificates only authenticate API Gateway to a backend, not callers.
  rest_api_id          = aws_api_gateway_rest_api.ingest.id
  deployment_id        = aws_api_gateway_deployment.ingest.id
  stage_name           = var.api_stage_name
  xray_tracing_enabled = true

  access_log_settings {
    destination_arn = aws_cloudwatch_log_group.ingest_access.arn
    format          = local.api_access_log_format
  }

  depends_on = [aws_api_gateway_account.this]
}

resource "aws_api_gateway_method_settings" "ingest" {
  #checkov:skip=CKV_AWS_225:No caching for POST ingestion (see the stage).
  rest_api_id = aws_api_gateway_rest_api.ingest.id
  stage_name  = aws_api_gateway_stage.ingest.stage_name
  method_path = "*/*"

  settings {
    metrics_enabled      = true
    logging_level        = "ERROR"
    data_trace_enabled   = false # would log request bodies
    caching_enabled      = false
    cache_data_encrypted = true
  }
}

# -- Who may send: per-site keys, per-site usage plans, optionally only from the farm's addresses --
#
# One usage plan per site (var.ingest_sites). A site's keys share its plan's settings (throttle and
# quota apply per key), and revoking or rotating them never touches another site. The keys are
# created by `farmctl keys create|rotate SITE` through the API Gateway API, never by Terraform, so
# no device key value is in the Terraform state; farmctl finds a site's plan through the output
# ingest_usage_plans. `terraform destroy` removes the plans; keys farmctl made then belong to no
# plan and no stage, so API Gateway refuses them (`farmctl keys revoke --all --delete` first
# removes them too).
resource "aws_api_gateway_usage_plan" "ingest" {
  for_each = toset(var.ingest_sites)

  name        = "${var.project}-ingest-site-${each.key}"
  description = "Throttle and quota of each key of site ${each.key} on kinesis_api_gw (keys: farmctl keys)"

  api_stages {
    api_id = aws_api_gateway_rest_api.ingest.id
    stage  = aws_api_gateway_stage.ingest.stage_name
  }

  throttle_settings {
    rate_limit  = var.ingest_throttle_rate_limit
    burst_limit = var.ingest_throttle_burst_limit
  }

  quota_settings {
    limit  = var.ingest_quota_limit
    period = var.ingest_quota_period
  }

  tags = {
    "smartfarm:site" = each.key
  }
}

# The single plan of earlier versions becomes the default site's plan (no new plan, no gap).
moved {
  from = aws_api_gateway_usage_plan.ingest
  to   = aws_api_gateway_usage_plan.ingest["main"]
}

# The old key every device shared: only while devices still send it (var.shared_ingest_api_key).
# Its value is in the Terraform state and in the SSM parameter below.
resource "aws_api_gateway_api_key" "ingest" {
  count = var.shared_ingest_api_key ? 1 : 0

  name        = "${var.project}-ingest-devices"
  description = "Old key shared by every device; move them to per-site keys (farmctl keys) and set shared_ingest_api_key = false"
}

moved {
  from = aws_api_gateway_api_key.ingest
  to   = aws_api_gateway_api_key.ingest[0]
}

resource "aws_api_gateway_usage_plan_key" "ingest" {
  count = var.shared_ingest_api_key ? 1 : 0

  key_id        = aws_api_gateway_api_key.ingest[0].id
  key_type      = "API_KEY"
  usage_plan_id = aws_api_gateway_usage_plan.ingest[var.ingest_sites[0]].id
}

moved {
  from = aws_api_gateway_usage_plan_key.ingest
  to   = aws_api_gateway_usage_plan_key.ingest[0]
}

# The shared key's value as a SecureString (for devices being moved); never an output.
resource "aws_ssm_parameter" "ingest_api_key" {
  count = var.shared_ingest_api_key ? 1 : 0

  name        = local.ingest_api_key_ssm_parameter
  description = "Value of the old shared ingest key of ${var.project}-kinesis_api_gw"
  type        = "SecureString"
  key_id      = aws_kms_key.main.arn
  value       = aws_api_gateway_api_key.ingest[0].value
}

moved {
  from = aws_ssm_parameter.ingest_api_key
  to   = aws_ssm_parameter.ingest_api_key[0]
}

# Optional: only the farm's own addresses may call the API at all (checked before the API key).
# The policy always exists: with ingest_allowed_source_cidrs empty it only allows what an API
# without IAM authorization allows anyway (anyone, then the API key decides). Adding, changing or
# emptying the list is then an update of this resource, which the deployment below is made after;
# a removed resource would be destroyed only after the new deployment, which would keep the old
# address limit in force.
data "aws_iam_policy_document" "ingest_source" {
  statement {
    sid       = "InvokeWithAnApiKey"
    actions   = ["execute-api:Invoke"]
    resources = ["${aws_api_gateway_rest_api.ingest.execution_arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }
  }

  dynamic "statement" {
    for_each = length(var.ingest_allowed_source_cidrs) > 0 ? [1] : []

    content {
      sid       = "DenyOutsideTheFarm"
      effect    = "Deny"
      actions   = ["execute-api:Invoke"]
      resources = ["${aws_api_gateway_rest_api.ingest.execution_arn}/*"]

      principals {
        type        = "*"
        identifiers = ["*"]
      }

      condition {
        test     = "NotIpAddress"
        variable = "aws:SourceIp"
        values   = var.ingest_allowed_source_cidrs
      }
    }
  }
}

resource "aws_api_gateway_rest_api_policy" "ingest" {
  rest_api_id = aws_api_gateway_rest_api.ingest.id
  policy      = data.aws_iam_policy_document.ingest_source.json
}

# Role API Gateway assumes to call Kinesis.
resource "aws_iam_role" "ingest" {
  name               = "${var.project}-apigw-kinesis"
  assume_role_policy = data.aws_iam_policy_document.apigateway_assume.json
}

data "aws_iam_policy_document" "ingest" {
  statement {
    sid       = "PutToStream"
    actions   = ["kinesis:PutRecord", "kinesis:PutRecords"]
    resources = [aws_kinesis_stream.readings.arn]
  }

  statement {
    sid       = "EncryptWithProjectKey"
    actions   = ["kms:GenerateDataKey"]
    resources = [aws_kms_key.main.arn]
  }
}

resource "aws_iam_role_policy" "ingest" {
  name   = "put-readings"
  role   = aws_iam_role.ingest.id
  policy = data.aws_iam_policy_document.ingest.json
}

# The simulator Lambda posts to kinesis_api_gw from AWS's own addresses, which an address limit
# refuses: say so at plan time (a warning, not an error).
check "simulator_reaches_the_ingest_api" {
  assert {
    condition     = length(var.ingest_allowed_source_cidrs) == 0
    error_message = "ingest_allowed_source_cidrs limits kinesis_api_gw to the farm's addresses, so pseudo_sensor_log_lambda's sends (from AWS addresses) are refused with 403: use `farmctl simulate --direct` (Kinesis, your credentials) for test traffic."
  }
}
