# Test traffic: pseudo_api_gw (POST /, API key) -> pseudo_sensor_log_lambda (AWS_PROXY, sync).
# The handler validates {"count": 12, "interval": 10}, answers 400 with a reason or invokes
# itself asynchronously (InvocationType=Event) and answers 202 with a run id at once; the
# asynchronous run then posts readings to kinesis_api_gw POST /records with the ingest key.

resource "aws_sqs_queue" "simulator_dlq" {
  name                      = "${var.project}-simulator-failures"
  message_retention_seconds = 1209600
  kms_master_key_id         = aws_kms_key.main.arn
}

resource "aws_cloudwatch_log_group" "simulator" {
  name              = "/aws/lambda/${local.simulator_function_name}"
  retention_in_days = var.cloudwatch_log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

resource "aws_iam_role" "simulator" {
  name               = "${var.project}-pseudo-sensor-log"
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
}

data "aws_iam_policy_document" "simulator" {
  source_policy_documents = [data.aws_iam_policy_document.xray.json]

  statement {
    sid       = "InvokeSelfAsync"
    actions   = ["lambda:InvokeFunction"]
    resources = [local.simulator_function_arn]
  }

  # Its own ingest key only, never the devices' key.
  statement {
    sid       = "ReadOwnIngestApiKey"
    actions   = ["ssm:GetParameter"]
    resources = [aws_ssm_parameter.simulator_ingest_api_key.arn]
  }

  statement {
    sid       = "UseProjectKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.main.arn]
  }

  statement {
    sid       = "OnFailureDestination"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.simulator_dlq.arn]
  }

  statement {
    sid       = "OwnLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.simulator.arn}:*"]
  }
}

resource "aws_iam_role_policy" "simulator" {
  name   = "simulate-sensors"
  role   = aws_iam_role.simulator.id
  policy = data.aws_iam_policy_document.simulator.json
}

resource "aws_lambda_function" "simulator" {
  #checkov:skip=CKV_AWS_116:Its asynchronous self-invocations report failures to the SQS on-failure destination (aws_lambda_function_event_invoke_config); the API path is synchronous.
  #checkov:skip=CKV_AWS_117:Calls the public ingest API; a VPC would need a NAT gateway for no gain.
  #checkov:skip=CKV_AWS_272:Zips are built from the repository by `farmctl deploy`; no signing profile in this project.
  #checkov:skip=CKV_AWS_115:Runs are bounded by the simulator usage plan (throttle + daily quota); reserving concurrency could fail in accounts with a low concurrency quota.
  function_name    = local.simulator_function_name
  description      = "pseudo_sensor_log_lambda: sends generated readings to kinesis_api_gw"
  role             = aws_iam_role.simulator.arn
  runtime          = "python3.12"
  handler          = "handler.handler"
  architectures    = ["x86_64"]
  filename         = local.lambda_zip.pseudo_sensor_log
  source_code_hash = local.lambda_zip_hash.pseudo_sensor_log
  layers           = [var.pandas_layer_arn]
  memory_size      = 256
  timeout          = var.simulator_timeout_seconds
  kms_key_arn      = aws_kms_key.main.arn

  environment {
    variables = {
      INGEST_URL                   = "${aws_api_gateway_stage.ingest.invoke_url}/records"
      INGEST_API_KEY_SSM_PARAMETER = aws_ssm_parameter.simulator_ingest_api_key.name
      SELF_FUNCTION_NAME           = local.simulator_function_name
      FUNCTION_TIMEOUT_S           = tostring(var.simulator_timeout_seconds)
      LOG_LEVEL                    = var.log_level
    }
  }

  tracing_config {
    mode = "Active"
  }

  depends_on = [aws_cloudwatch_log_group.simulator, aws_iam_role_policy.simulator]

  lifecycle {
    precondition {
      condition     = local.lambda_zip_hash.pseudo_sensor_log != null
      error_message = local.lambda_zip_missing
    }
  }
}

# A retried run would send its readings twice: no retries, failures go to the queue.
resource "aws_lambda_function_event_invoke_config" "simulator" {
  function_name                = aws_lambda_function.simulator.function_name
  maximum_retry_attempts       = 0
  maximum_event_age_in_seconds = 3600

  destination_config {
    on_failure {
      destination = aws_sqs_queue.simulator_dlq.arn
    }
  }
}

resource "aws_api_gateway_rest_api" "simulator" {
  lifecycle {
    create_before_destroy = true
  }

  name        = "${var.project}-pseudo_api_gw"
  description = "Test traffic: POST / {\"count\": N, \"interval\": S} starts a simulator run"

  endpoint_configuration {
    types = ["REGIONAL"]
  }
}

resource "aws_api_gateway_method" "simulator" {
  #checkov:skip=CKV2_AWS_53:The Lambda validates the body itself and answers 400 with the reason (count/interval limits live in the core, not in an API model).
  rest_api_id      = aws_api_gateway_rest_api.simulator.id
  resource_id      = aws_api_gateway_rest_api.simulator.root_resource_id
  http_method      = "POST"
  authorization    = "NONE" # operators authenticate with the simulator API key (x-api-key)
  api_key_required = true
}

resource "aws_api_gateway_integration" "simulator" {
  rest_api_id             = aws_api_gateway_rest_api.simulator.id
  resource_id             = aws_api_gateway_rest_api.simulator.root_resource_id
  http_method             = aws_api_gateway_method.simulator.http_method
  type                    = "AWS_PROXY"
  integration_http_method = "POST"
  uri                     = aws_lambda_function.simulator.invoke_arn
}

resource "aws_lambda_permission" "simulator_api" {
  statement_id  = "AllowPseudoApiGw"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.simulator.function_name
  principal     = "apigateway.amazonaws.com"
  source_arn    = "${aws_api_gateway_rest_api.simulator.execution_arn}/*/POST/"
}

resource "aws_api_gateway_deployment" "simulator" {
  rest_api_id = aws_api_gateway_rest_api.simulator.id
  description = "pseudo_api_gw"

  triggers = {
    redeployment = sha1(jsonencode([
      aws_api_gateway_method.simulator.id,
      aws_api_gateway_method.simulator.api_key_required,
      aws_api_gateway_integration.simulator.id,
      aws_api_gateway_integration.simulator.uri,
    ]))
  }

  lifecycle {
    create_before_destroy = true
  }

  depends_on = [aws_api_gateway_integration.simulator]
}

resource "aws_cloudwatch_log_group" "simulator_access" {
  name              = "/aws/apigateway/${var.project}-pseudo_api_gw/access"
  retention_in_days = var.cloudwatch_log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

resource "aws_api_gateway_stage" "simulator" {
  #checkov:skip=CKV_AWS_120:Each POST starts a run; caching would drop runs.
  #checkov:skip=CKV2_AWS_29:WAF left out for an operator-only test endpoint behind an API key with a daily quota of var.simulator_quota_limit runs.
  #checkov:skip=CKV2_AWS_51:Operators authenticate with an API key; client certificates only authenticate API Gateway to a backend.
  rest_api_id          = aws_api_gateway_rest_api.simulator.id
  deployment_id        = aws_api_gateway_deployment.simulator.id
  stage_name           = var.api_stage_name
  xray_tracing_enabled = true

  access_log_settings {
    destination_arn = aws_cloudwatch_log_group.simulator_access.arn
    format          = local.api_access_log_format
  }

  depends_on = [aws_api_gateway_account.this]
}

resource "aws_api_gateway_method_settings" "simulator" {
  #checkov:skip=CKV_AWS_225:No caching: every POST starts a run.
  rest_api_id = aws_api_gateway_rest_api.simulator.id
  stage_name  = aws_api_gateway_stage.simulator.stage_name
  method_path = "*/*"

  settings {
    metrics_enabled      = true
    logging_level        = "ERROR"
    data_trace_enabled   = false
    caching_enabled      = false
    cache_data_encrypted = true
  }
}

resource "aws_api_gateway_api_key" "simulator" {
  name        = "${var.project}-simulator-operator"
  description = "Key for starting simulator runs on pseudo_api_gw"
}

resource "aws_api_gateway_usage_plan" "simulator" {
  name        = "${var.project}-simulator"
  description = "Throttle and daily quota of simulator runs"

  api_stages {
    api_id = aws_api_gateway_rest_api.simulator.id
    stage  = aws_api_gateway_stage.simulator.stage_name
  }

  throttle_settings {
    rate_limit  = var.simulator_throttle_rate_limit
    burst_limit = var.simulator_throttle_burst_limit
  }

  quota_settings {
    limit  = var.simulator_quota_limit
    period = "DAY"
  }
}

resource "aws_api_gateway_usage_plan_key" "simulator" {
  key_id        = aws_api_gateway_api_key.simulator.id
  key_type      = "API_KEY"
  usage_plan_id = aws_api_gateway_usage_plan.simulator.id
}

# The simulator's sends to kinesis_api_gw use a key of their own, in a usage plan of their own:
# fake runs are throttled and counted apart, so they can never use up the devices' quota (one
# accepted simulator request may ask for up to 10,000 sends).
resource "aws_api_gateway_api_key" "simulator_ingest" {
  name        = "${var.project}-ingest-simulator"
  description = "Key the pseudo_sensor_log Lambda sends as x-api-key to kinesis_api_gw (not the devices' key)"
}

resource "aws_api_gateway_usage_plan" "simulator_ingest" {
  name        = "${var.project}-ingest-simulator"
  description = "Throttle and quota of the simulator's sends to the ingest API, apart from the devices'"

  api_stages {
    api_id = aws_api_gateway_rest_api.ingest.id
    stage  = aws_api_gateway_stage.ingest.stage_name
  }

  throttle_settings {
    rate_limit  = var.simulator_ingest_rate_limit
    burst_limit = var.simulator_ingest_burst_limit
  }

  quota_settings {
    limit  = var.simulator_ingest_quota_limit
    period = "DAY"
  }
}

resource "aws_api_gateway_usage_plan_key" "simulator_ingest" {
  key_id        = aws_api_gateway_api_key.simulator_ingest.id
  key_type      = "API_KEY"
  usage_plan_id = aws_api_gateway_usage_plan.simulator_ingest.id
}

resource "aws_ssm_parameter" "simulator_ingest_api_key" {
  name        = local.simulator_ingest_api_key_ssm_parameter
  description = "API key value the ${var.project} simulator sends to kinesis_api_gw"
  type        = "SecureString"
  key_id      = aws_kms_key.main.arn
  value       = aws_api_gateway_api_key.simulator_ingest.value
}
