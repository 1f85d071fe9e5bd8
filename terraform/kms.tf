# One customer-managed key for the project's data at rest: Kinesis stream, S3 buckets (bucket
# keys keep the KMS request cost low), SQS, SSM SecureStrings, CloudWatch log groups, Lambda
# environment variables, Athena results and Glue crawler output.
locals {
  # Every log group the stack encrypts with the key: Lambda, Firehose and API access logs carry
  # the project prefix; the Glue crawler's encrypted logs live under /aws-glue/crawlers (the
  # crawler role's own log scope); API Gateway's execution logs are named after the REST API ids,
  # which cannot appear here (the APIs depend on the stream, the stream on this key), so that
  # prefix stays account-wide.
  kms_log_groups = [
    "/aws/lambda/${var.project}-*",
    "/aws/kinesisfirehose/${var.project}-*",
    "/aws/apigateway/${var.project}-*",
    "/aws-glue/crawlers*",
    "API-Gateway-Execution-Logs_*",
  ]
}

data "aws_iam_policy_document" "kms" {
  #checkov:skip=CKV_AWS_109:This is a KMS key policy: "*" resource means this key only, and the account-root statement is AWS's default that delegates key use to IAM policies.
  #checkov:skip=CKV_AWS_111:Same: key policy of this one key; write access is granted per role in IAM policies that name the key ARN.
  #checkov:skip=CKV_AWS_356:Same: in a key policy the only valid resource is "*" (the key itself).
  # Default key policy: the account (its IAM policies) administers and uses the key. Without it
  # the key becomes unmanageable. Resource "*" in a key policy means "this key".
  statement {
    sid       = "AccountAdministersKey"
    effect    = "Allow"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }

  # CloudWatch Logs encrypts the project's log groups with this key (it cannot use IAM roles);
  # only those groups (local.kms_log_groups), not every group in the account.
  statement {
    sid    = "CloudWatchLogsUsesKey"
    effect = "Allow"
    actions = [
      "kms:Encrypt",
      "kms:Decrypt",
      "kms:ReEncryptFrom",
      "kms:ReEncryptTo",
      "kms:GenerateDataKey",
      "kms:GenerateDataKeyWithoutPlaintext",
      "kms:DescribeKey",
    ]
    resources = ["*"]

    principals {
      type        = "Service"
      identifiers = ["logs.${local.region}.amazonaws.com"]
    }

    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values = [
        for group in local.kms_log_groups :
        "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:${group}"
      ]
    }
  }

  # CloudWatch encrypts alarm notifications for the SNS topic in alarms.tf (without this grant an
  # encrypted topic silently receives nothing); only for this project's alarms in this account.
  statement {
    sid       = "CloudWatchAlarmsUseKeyForTopic"
    effect    = "Allow"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey*"]
    resources = ["*"]

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

resource "aws_kms_key" "main" {
  description             = "${var.project}: data at rest (stream, buckets, queues, parameters, logs)"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms.json
}

resource "aws_kms_alias" "main" {
  name          = "alias/${var.project}"
  target_key_id = aws_kms_key.main.key_id
}
