# CloudWatch alarms on the failures that are otherwise silent: events parked in a dead-letter
# queue, Lambda errors, Firehose deliveries or transformations that fail or fall behind, and
# API Gateway 5xx answers. Every alarm (and its return to OK) goes to one KMS-encrypted SNS topic;
# subscribe to it with var.alarm_emails, or any other SNS subscription (chat relay, pager).
# A period without data (no traffic) is not an alarm.

locals {
  alarm_prefix = "${var.project}-alarm-"
  alarm_arns   = "arn:${local.partition}:cloudwatch:${local.region}:${local.account_id}:alarm:${local.alarm_prefix}*"

  dlq_alarms = {
    anomaly-failures      = aws_sqs_queue.alerts_dlq.name
    simulator-failures    = aws_sqs_queue.simulator_dlq.name
    silent-check-failures = "${local.silent_function_name}-failures" # modules/lambda_function
  }
  lambda_alarms = {
    anomaly_detector   = aws_lambda_function.anomaly_detector.function_name
    pseudo_sensor_log  = aws_lambda_function.simulator.function_name
    firehose_transform = aws_lambda_function.firehose_transform.function_name
    silent_check       = module.silent_check.function_name
  }
  api_alarms = {
    kinesis_api_gw = aws_api_gateway_rest_api.ingest.name
    pseudo_api_gw  = aws_api_gateway_rest_api.simulator.name
  }
  # Firehose metric -> (statistic, comparison, threshold, what it means)
  firehose_alarms = {
    delivery-failed = {
      metric    = "DeliveryToS3.Success"
      statistic = "Minimum"
      operator  = "LessThanThreshold"
      threshold = 1
      meaning   = "a delivery to the log bucket failed (Firehose retries, then writes to the error prefix)"
    }
    transform-failed = {
      metric    = "ExecuteProcessing.Success"
      statistic = "Minimum"
      operator  = "LessThanThreshold"
      threshold = 1
      meaning   = "the firehose_transform Lambda could not be invoked or failed"
    }
    conversion-failed = {
      metric    = "FailedConversion.Records"
      statistic = "Sum"
      operator  = "GreaterThanThreshold"
      threshold = 0
      meaning   = "readings that passed validation could not be converted to Parquet"
    }
    delivery-late = {
      metric    = "DeliveryToS3.DataFreshness"
      statistic = "Maximum"
      operator  = "GreaterThanThreshold"
      threshold = var.firehose_buffering_interval_seconds + 900
      meaning   = "the oldest reading waiting in Firehose is 15 minutes older than the buffer interval"
    }
  }
}

resource "aws_sns_topic" "alarms" {
  name              = "${var.project}-alarms"
  display_name      = "${var.project} alarms"
  kms_master_key_id = aws_kms_key.main.arn
}

# The account's own principals keep their IAM-granted access (same-account); this policy only adds
# CloudWatch, for this project's alarms (no confused deputy).
data "aws_iam_policy_document" "alarms_topic" {
  statement {
    sid       = "CloudWatchAlarmsPublish"
    effect    = "Allow"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.alarms.arn]

    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }

    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = [local.alarm_arns]
    }
  }
}

resource "aws_sns_topic_policy" "alarms" {
  arn    = aws_sns_topic.alarms.arn
  policy = data.aws_iam_policy_document.alarms_topic.json
}

resource "aws_sns_topic_subscription" "alarm_email" {
  for_each = toset(var.alarm_emails)

  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = each.value
}

resource "aws_cloudwatch_metric_alarm" "dlq_not_empty" {
  for_each = local.dlq_alarms

  alarm_name          = "${local.alarm_prefix}${each.key}-dlq"
  alarm_description   = "Events are waiting in the dead-letter queue ${each.value}: inspect and replay them."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = each.value }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
}

resource "aws_cloudwatch_metric_alarm" "lambda_errors" {
  for_each = local.lambda_alarms

  alarm_name          = "${local.alarm_prefix}${each.key}-errors"
  alarm_description   = "The ${each.value} Lambda raised errors: see its log group."
  namespace           = "AWS/Lambda"
  metric_name         = "Errors"
  dimensions          = { FunctionName = each.value }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
}

resource "aws_cloudwatch_metric_alarm" "firehose" {
  for_each = local.firehose_alarms

  alarm_name          = "${local.alarm_prefix}firehose-${each.key}"
  alarm_description   = "Firehose ${aws_kinesis_firehose_delivery_stream.logs.name}: ${each.value.meaning}."
  namespace           = "AWS/Firehose"
  metric_name         = each.value.metric
  dimensions          = { DeliveryStreamName = aws_kinesis_firehose_delivery_stream.logs.name }
  statistic           = each.value.statistic
  period              = 300
  evaluation_periods  = 1
  threshold           = each.value.threshold
  comparison_operator = each.value.operator
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
}

resource "aws_cloudwatch_metric_alarm" "api_5xx" {
  for_each = local.api_alarms

  alarm_name          = "${local.alarm_prefix}${each.key}-5xx"
  alarm_description   = "${each.value} answered 5xx (integration or Kinesis failure): see its execution and access logs."
  namespace           = "AWS/ApiGateway"
  metric_name         = "5XXError"
  dimensions          = { ApiName = each.value, Stage = var.api_stage_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
}

# Optionally relayed to the Discord channel: the anomaly_detector function (it already reads the
# webhook) posts one message per alarm state change it receives from this topic.
resource "aws_sns_topic_subscription" "alarms_to_discord" {
  count = var.alarms_to_discord && local.discord_enabled ? 1 : 0

  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "lambda"
  endpoint  = aws_lambda_function.anomaly_detector.arn
}

resource "aws_lambda_permission" "alarms_invoke_anomaly_detector" {
  count = var.alarms_to_discord && local.discord_enabled ? 1 : 0

  statement_id  = "AllowAlarmsTopic"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.anomaly_detector.function_name
  principal     = "sns.amazonaws.com"
  source_arn    = aws_sns_topic.alarms.arn
}
