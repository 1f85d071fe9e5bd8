# Anomaly step: every Parquet object Firehose writes under logs/ triggers anomaly_detector, which
# writes spikes to spike-log-bucket/spikes/ (deterministic keys, so a repeated event overwrites)
# and posts to Discord (webhook URL read from SSM at run time).
#
# The URL is written through the write-only value_wo from an ephemeral variable: it reaches SSM
# but neither the Terraform state nor a saved plan (Terraform >= 1.11). Terraform cannot diff a
# write-only value, so the URL is (re)written on create and whenever discord_webhook_version
# changes; `farmctl discord test` checks what SSM holds.

resource "aws_ssm_parameter" "discord_webhook" {
  count = local.discord_enabled ? 1 : 0

  name        = local.discord_webhook_ssm_parameter
  description = "Discord webhook URL for ${var.project} anomaly alerts"
  type        = "SecureString"
  key_id      = aws_kms_key.main.arn

  value_wo         = var.discord_webhook_url
  value_wo_version = var.discord_webhook_version
}

resource "aws_sqs_queue" "alerts_dlq" {
  name                      = "${var.project}-anomaly-failures"
  message_retention_seconds = 1209600 # 14 days to inspect and replay
  kms_master_key_id         = aws_kms_key.main.arn
}

resource "aws_cloudwatch_log_group" "anomaly_detector" {
  name              = "/aws/lambda/${local.anomaly_function_name}"
  retention_in_days = var.cloudwatch_log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

resource "aws_iam_role" "anomaly_detector" {
  name               = "${var.project}-anomaly-detector"
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
}

data "aws_iam_policy_document" "anomaly_detector" {
  source_policy_documents = [data.aws_iam_policy_document.xray.json]

  statement {
    sid       = "ReadDeliveredLogs"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.logs.arn}/${local.log_prefix}*"]
  }

  statement {
    sid     = "WriteSpikesAndAlertState"
    actions = ["s3:GetObject", "s3:PutObject"]
    resources = [
      "${aws_s3_bucket.spikes.arn}/${local.spike_prefix}*",
      "${aws_s3_bucket.spikes.arn}/${local.alert_prefix}*",
    ]
  }

  # Lets a missing alert-state object read as 404 (not 403); limited to the two prefixes.
  statement {
    sid       = "ListSpikePrefixes"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.spikes.arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${local.spike_prefix}*", "${local.alert_prefix}*"]
    }
  }

  dynamic "statement" {
    for_each = local.discord_enabled ? [1] : []
    content {
      sid       = "ReadDiscordWebhook"
      actions   = ["ssm:GetParameter"]
      resources = [aws_ssm_parameter.discord_webhook[0].arn]
    }
  }

  statement {
    sid       = "UseProjectKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.main.arn]
  }

  statement {
    sid       = "OnFailureDestination"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.alerts_dlq.arn]
  }

  statement {
    sid       = "OwnLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.anomaly_detector.arn}:*"]
  }
}

resource "aws_iam_role_policy" "anomaly_detector" {
  name   = "detect-anomalies"
  role   = aws_iam_role.anomaly_detector.id
  policy = data.aws_iam_policy_document.anomaly_detector.json
}

resource "aws_lambda_function" "anomaly_detector" {
  #checkov:skip=CKV_AWS_116:Failed asynchronous events go to the SQS on-failure destination (aws_lambda_function_event_invoke_config), which supersedes a DLQ and keeps the error context.
  #checkov:skip=CKV_AWS_117:Reads S3 and SSM and calls Discord over the internet; a VPC would need a NAT gateway for no gain.
  #checkov:skip=CKV_AWS_272:Zips are built from the repository by `farmctl deploy`; no signing profile in this project.
  #checkov:skip=CKV_AWS_115:One invocation per delivered object (at most a few per minute); reserving concurrency could fail in accounts with a low concurrency quota.
  function_name    = local.anomaly_function_name
  description      = "Detect anomalous readings in each delivered Parquet object, store spikes, alert Discord"
  role             = aws_iam_role.anomaly_detector.arn
  runtime          = "python3.12"
  handler          = "handler.handler"
  architectures    = ["x86_64"]
  filename         = local.lambda_zip.anomaly_detector
  source_code_hash = local.lambda_zip_hash.anomaly_detector
  layers           = [var.pandas_layer_arn]
  memory_size      = var.anomaly_memory_mb
  timeout          = var.anomaly_timeout_seconds
  kms_key_arn      = aws_kms_key.main.arn

  environment {
    variables = {
      SPIKE_BUCKET = aws_s3_bucket.spikes.id
      # Empty when no webhook was given: the function then only stores spikes.
      DISCORD_WEBHOOK_SSM_PARAMETER = local.discord_enabled ? aws_ssm_parameter.discord_webhook[0].name : ""
      LOG_LEVEL                     = var.log_level
      STATE_TABLE                   = aws_dynamodb_table.device_state.name # state.tf
      # Synthetic readings (simulator, farmctl simulate/backfill) page no one unless asked.
      ALERT_ON_SYNTHETIC = tostring(var.alert_on_synthetic)
    }
  }

  tracing_config {
    mode = "Active"
  }

  depends_on = [
    aws_cloudwatch_log_group.anomaly_detector,
    aws_iam_role_policy.anomaly_detector,
    aws_iam_role_policy.anomaly_detector_state,
  ]

  lifecycle {
    precondition {
      condition     = local.lambda_zip_hash.anomaly_detector != null
      error_message = local.lambda_zip_missing
    }
  }
}

resource "aws_lambda_function_event_invoke_config" "anomaly_detector" {
  function_name                = aws_lambda_function.anomaly_detector.function_name
  maximum_retry_attempts       = 2
  maximum_event_age_in_seconds = 21600

  destination_config {
    on_failure {
      destination = aws_sqs_queue.alerts_dlq.arn
    }
  }
}

resource "aws_lambda_permission" "s3_invokes_anomaly_detector" {
  statement_id   = "AllowSensorLogBucket"
  action         = "lambda:InvokeFunction"
  function_name  = aws_lambda_function.anomaly_detector.function_name
  principal      = "s3.amazonaws.com"
  source_arn     = aws_s3_bucket.logs.arn
  source_account = local.account_id
}

resource "aws_s3_bucket_notification" "logs" {
  bucket = aws_s3_bucket.logs.id

  lambda_function {
    id                  = "anomaly-detector"
    lambda_function_arn = aws_lambda_function.anomaly_detector.arn
    events              = ["s3:ObjectCreated:*"]
    filter_prefix       = local.log_prefix
    filter_suffix       = ".parquet"
  }

  depends_on = [aws_lambda_permission.s3_invokes_anomaly_detector]
}
