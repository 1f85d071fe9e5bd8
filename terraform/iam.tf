# Shared trust policies and the region-wide API Gateway logging role. Each component's own
# permission policy lives next to the component (ingest.tf, delivery.tf, alerts.tf, ...), so
# every policy sits beside the resources it names.

data "aws_iam_policy_document" "lambda_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

# No aws:SourceAccount / aws:SourceArn condition: API Gateway sends neither key when it assumes
# an integration's credentials role (or its CloudWatch logging role), so such a condition denies
# the assume and every POST /record(s) answers 500. The roles' own policies are what limit them.
data "aws_iam_policy_document" "apigateway_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["apigateway.amazonaws.com"]
    }
  }
}

# X-Ray tracing of the Lambda functions. These two actions have no resource-level permissions,
# so "*" is what AWS requires (listed in tests/test_terraform.py).
data "aws_iam_policy_document" "xray" {
  statement {
    sid       = "XRayTraces"
    actions   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
    resources = ["*"]
  }
}

# API Gateway writes execution and access logs through one role set per account and region.
resource "aws_iam_role" "apigw_cloudwatch" {
  count = var.manage_apigw_account ? 1 : 0

  name               = "${var.project}-apigw-cloudwatch"
  assume_role_policy = data.aws_iam_policy_document.apigateway_assume.json
}

data "aws_iam_policy_document" "apigw_cloudwatch" {
  statement {
    sid = "ApiGatewayLogs"
    actions = [
      "logs:CreateLogGroup",
      "logs:CreateLogStream",
      "logs:DescribeLogGroups",
      "logs:DescribeLogStreams",
      "logs:PutLogEvents",
      "logs:GetLogEvents",
      "logs:FilterLogEvents",
    ]
    resources = ["arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:*"]
  }
}

resource "aws_iam_role_policy" "apigw_cloudwatch" {
  count = var.manage_apigw_account ? 1 : 0

  name   = "push-to-cloudwatch-logs"
  role   = aws_iam_role.apigw_cloudwatch[0].id
  policy = data.aws_iam_policy_document.apigw_cloudwatch.json
}

resource "aws_api_gateway_account" "this" {
  count = var.manage_apigw_account ? 1 : 0

  cloudwatch_role_arn = aws_iam_role.apigw_cloudwatch[0].arn

  depends_on = [aws_iam_role_policy.apigw_cloudwatch]
}
