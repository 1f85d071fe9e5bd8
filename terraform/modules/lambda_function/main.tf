# One Lambda function with what each of the stack's functions needs around it: its own role
# (logs + dead-letter queue + the caller's policy), a KMS-encrypted log group with retention,
# an encrypted dead-letter queue for asynchronous events that failed every retry, X-Ray tracing.

resource "aws_cloudwatch_log_group" "function" {
  name              = "/aws/lambda/${var.function_name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
}

resource "aws_sqs_queue" "dead_letters" {
  name                      = "${var.function_name}-failures"
  message_retention_seconds = 1209600 # 14 days to inspect and replay
  kms_master_key_id         = var.kms_key_arn
}

resource "aws_iam_role" "function" {
  name               = var.function_name
  assume_role_policy = var.assume_role_policy_json
}

data "aws_iam_policy_document" "function" {
  source_policy_documents = [var.policy_json]

  statement {
    sid       = "WriteOwnLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.function.arn}:*"]
  }

  statement {
    sid       = "SendToOwnDeadLetterQueue"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.dead_letters.arn]
  }

  # The queue and the environment are encrypted with the project's key.
  statement {
    sid       = "UseKeyForDeadLetters"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = [var.kms_key_arn]
  }
}

resource "aws_iam_role_policy" "function" {
  name   = "function"
  role   = aws_iam_role.function.id
  policy = data.aws_iam_policy_document.function.json
}

resource "aws_lambda_function" "function" {
  #checkov:skip=CKV_AWS_117:Reads DynamoDB, S3 and SSM and calls Discord over the internet; a VPC would need a NAT gateway for no gain.
  #checkov:skip=CKV_AWS_272:Zips are built from the repository by `farmctl deploy`; no signing profile in this project.
  #checkov:skip=CKV_AWS_115:A few invocations an hour; reserving concurrency could fail in accounts with a low concurrency quota.
  function_name    = var.function_name
  description      = var.description
  role             = aws_iam_role.function.arn
  runtime          = "python3.12"
  handler          = "handler.handler"
  architectures    = ["x86_64"]
  filename         = var.zip_path
  source_code_hash = var.zip_hash
  layers           = var.layers
  memory_size      = var.memory_mb
  timeout          = var.timeout_seconds
  kms_key_arn      = var.kms_key_arn

  environment {
    variables = var.environment
  }

  dead_letter_config {
    target_arn = aws_sqs_queue.dead_letters.arn
  }

  tracing_config {
    mode = "Active"
  }

  depends_on = [aws_cloudwatch_log_group.function, aws_iam_role_policy.function]

  lifecycle {
    precondition {
      condition     = var.zip_hash != null
      error_message = var.zip_missing_message
    }
  }
}

resource "aws_lambda_function_event_invoke_config" "function" {
  function_name                = aws_lambda_function.function.function_name
  maximum_retry_attempts       = var.maximum_retry_attempts
  maximum_event_age_in_seconds = var.maximum_event_age_seconds
}
