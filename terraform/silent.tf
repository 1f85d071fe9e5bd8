# Silent devices (issue 14): silence produces no files, so a schedule runs silent_check every few
# minutes. It walks the per-device `alerts` items of the device-state table (state.tf), opens a
# `silent` incident per quiet device with a conditional write, logs it (`_log/` items) and
# announces it on Discord once (marker under alerts/ in the spike bucket). The function's role,
# log group, dead-letter queue and tracing come from modules/lambda_function.

locals {
  silent_function_name = "${var.project}-silent_check"
}

module "silent_check" {
  source = "./modules/lambda_function"

  function_name           = local.silent_function_name
  description             = "Open a silent incident for every device that stopped reporting; announce it on Discord"
  zip_path                = local.lambda_zip.silent_check
  zip_hash                = local.lambda_zip_hash.silent_check
  zip_missing_message     = local.lambda_zip_missing
  layers                  = [var.pandas_layer_arn]
  memory_mb               = 256
  timeout_seconds         = 120
  kms_key_arn             = aws_kms_key.main.arn
  log_retention_days      = var.cloudwatch_log_retention_days
  assume_role_policy_json = data.aws_iam_policy_document.lambda_assume.json
  policy_json             = data.aws_iam_policy_document.silent_check.json
  environment = {
    STATE_TABLE  = aws_dynamodb_table.device_state.name
    SPIKE_BUCKET = aws_s3_bucket.spikes.id
    # Empty when no webhook was given: incidents are still opened and logged.
    DISCORD_WEBHOOK_SSM_PARAMETER = local.discord_enabled ? aws_ssm_parameter.discord_webhook[0].name : ""
    LOG_LEVEL                     = var.log_level
  }
}

data "aws_iam_policy_document" "silent_check" {
  source_policy_documents = [data.aws_iam_policy_document.xray.json]

  # Scan the `alerts` items, write each newly silent device once (conditional PutItem), append
  # the events to the log (BatchWriteItem of `_log/` items).
  statement {
    sid       = "ScanAndWriteDeviceState"
    actions   = ["dynamodb:Scan", "dynamodb:PutItem", "dynamodb:BatchWriteItem"]
    resources = [aws_dynamodb_table.device_state.arn]
  }

  # The table, the markers (SSE-KMS) and the webhook SecureString are under the project's key.
  statement {
    sid       = "UseProjectKeyThroughServices"
    actions   = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey"]
    resources = [aws_kms_key.main.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["dynamodb.${local.region}.amazonaws.com", "s3.${local.region}.amazonaws.com", "ssm.${local.region}.amazonaws.com"]
    }
  }

  # The alert markers (one per run) that make a retried run send nothing twice.
  statement {
    sid       = "ReadWriteAlertMarkers"
    actions   = ["s3:GetObject", "s3:PutObject"]
    resources = ["${aws_s3_bucket.spikes.arn}/${local.alert_prefix}*"]
  }

  # Lets a missing marker read as 404 (not 403); limited to the markers' prefix.
  statement {
    sid       = "ListAlertMarkers"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.spikes.arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${local.alert_prefix}*"]
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
}

# EventBridge Scheduler invokes the function asynchronously; its input carries the scheduled
# time, which names the run (the same on Lambda's retries: core.incidents replays, never reopens).
data "aws_iam_policy_document" "scheduler_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["scheduler.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "silent_schedule" {
  name               = "${var.project}-silent-schedule"
  assume_role_policy = data.aws_iam_policy_document.scheduler_assume.json
}

data "aws_iam_policy_document" "silent_schedule" {
  statement {
    sid       = "InvokeSilentCheck"
    actions   = ["lambda:InvokeFunction"]
    resources = [module.silent_check.function_arn]
  }

  statement {
    sid       = "UndeliverableRunsToDeadLetters"
    actions   = ["sqs:SendMessage"]
    resources = [module.silent_check.dead_letter_queue_arn]
  }

  statement {
    sid       = "UseProjectKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.main.arn]
  }
}

resource "aws_iam_role_policy" "silent_schedule" {
  name   = "invoke-silent-check"
  role   = aws_iam_role.silent_schedule.id
  policy = data.aws_iam_policy_document.silent_schedule.json
}

resource "aws_scheduler_schedule" "silent_check" {
  name                = "${var.project}-silent-check"
  description         = "Look for devices that stopped reporting"
  schedule_expression = "rate(${var.silent_check_minutes} ${var.silent_check_minutes == 1 ? "minute" : "minutes"})"
  kms_key_arn         = aws_kms_key.main.arn

  flexible_time_window {
    mode = "OFF"
  }

  target {
    arn      = module.silent_check.function_arn
    role_arn = aws_iam_role.silent_schedule.arn
    # A literal, not jsonencode(): jsonencode writes < and > as \u003c/\u003e, which the
    # scheduler would not recognise as its context attribute.
    input = "{\"scheduled_time\": \"<aws.scheduler.scheduled-time>\", \"source\": \"smartfarm.schedule\"}"

    retry_policy {
      maximum_event_age_in_seconds = 600
      maximum_retry_attempts       = 2
    }

    dead_letter_config {
      arn = module.silent_check.dead_letter_queue_arn
    }
  }
}
