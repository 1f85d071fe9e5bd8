# Per-device state (docs/state.md): one small item per (greenhouse/device, kind), read and
# written by anomaly_detector with conditional writes. Today `kind = "jump"` holds each device's
# last judged readings, so the jump rule sees across delivered objects; alert incidents and
# last-seen times (issue 14) share this table. On-demand, TTL on `expires_at` (the core sets it
# 30 days after a device's last write), encrypted with the project's key.

locals {
  state_table_name = "${var.project}-device-state"
}

resource "aws_dynamodb_table" "device_state" {
  name         = local.state_table_name
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "device"
  range_key    = "kind"

  attribute {
    name = "device"
    type = "S"
  }

  attribute {
    name = "kind"
    type = "S"
  }

  ttl {
    attribute_name = "expires_at"
    enabled        = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = aws_kms_key.main.arn
  }

  # The state is rebuilt from new readings within a window; recovery still beats a silent reset.
  point_in_time_recovery {
    enabled = true
  }
}

# anomaly_detector reads a file's devices in one BatchGetItem and writes each device once per
# file with a conditional PutItem (core.state.DynamoStateStore), and appends incident events as
# `_log/` items with BatchWriteItem (core.state.DynamoEventLog): nothing else.
data "aws_iam_policy_document" "anomaly_detector_state" {
  statement {
    sid       = "ReadWriteDeviceState"
    actions   = ["dynamodb:BatchGetItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:BatchWriteItem"]
    resources = [aws_dynamodb_table.device_state.arn]
  }

  # DynamoDB encrypts and decrypts the items with the project's key on the caller's behalf.
  statement {
    sid       = "UseProjectKeyThroughDynamoDB"
    actions   = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey"]
    resources = [aws_kms_key.main.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["dynamodb.${local.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "anomaly_detector_state" {
  name   = "device-state"
  role   = aws_iam_role.anomaly_detector.id
  policy = data.aws_iam_policy_document.anomaly_detector_state.json
}
