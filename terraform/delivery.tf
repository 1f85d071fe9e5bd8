# Kinesis Data Firehose: stream -> transform Lambda (core validation, event-time partition keys)
# -> Parquet (Glue `readings` schema, Snappy) -> sensor-log-bucket/logs/year=/month=/day=/hour=/.
# Rejected readings are marked ProcessingFailed by the Lambda and land under errors/.

resource "aws_cloudwatch_log_group" "firehose" {
  name              = "/aws/kinesisfirehose/${var.project}-sensor-delivery"
  retention_in_days = var.cloudwatch_log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

resource "aws_cloudwatch_log_stream" "firehose_s3" {
  name           = "DestinationDelivery"
  log_group_name = aws_cloudwatch_log_group.firehose.name
}

resource "aws_kinesis_firehose_delivery_stream" "logs" {
  #checkov:skip=CKV_AWS_240:Firehose rejects server_side_encryption when the source is a Kinesis stream; the stream is KMS-encrypted and objects are written with SSE-KMS (kms_key_arn + bucket default).
  #checkov:skip=CKV_AWS_241:Same reason as CKV_AWS_240: no Firehose-side SSE with a Kinesis source; the project CMK encrypts the stream and the delivered objects.
  name        = "${var.project}-sensor-delivery"
  destination = "extended_s3"

  kinesis_source_configuration {
    kinesis_stream_arn = aws_kinesis_stream.readings.arn
    role_arn           = aws_iam_role.firehose.arn
  }

  extended_s3_configuration {
    role_arn    = aws_iam_role.firehose.arn
    bucket_arn  = aws_s3_bucket.logs.arn
    kms_key_arn = aws_kms_key.main.arn

    # Event time (the reading's own timestamp, UTC) from the transform Lambda.
    prefix              = "${local.log_prefix}year=!{partitionKeyFromLambda:year}/month=!{partitionKeyFromLambda:month}/day=!{partitionKeyFromLambda:day}/hour=!{partitionKeyFromLambda:hour}/"
    error_output_prefix = "${local.error_prefix}!{firehose:error-output-type}/year=!{timestamp:yyyy}/month=!{timestamp:MM}/day=!{timestamp:dd}/"
    # Firehose names converted objects without an extension; the anomaly trigger filters on it.
    file_extension     = ".parquet"
    compression_format = "UNCOMPRESSED" # Snappy happens inside Parquet

    buffering_size     = var.firehose_buffering_size_mb
    buffering_interval = var.firehose_buffering_interval_seconds

    dynamic_partitioning_configuration {
      enabled        = true
      retry_duration = 300
    }

    processing_configuration {
      enabled = true

      processors {
        type = "Lambda"

        parameters {
          parameter_name  = "LambdaArn"
          parameter_value = "${aws_lambda_function.firehose_transform.arn}:$LATEST"
        }
        parameters {
          parameter_name  = "BufferSizeInMBs"
          parameter_value = "1"
        }
        parameters {
          parameter_name  = "BufferIntervalInSeconds"
          parameter_value = "60"
        }
      }
    }

    data_format_conversion_configuration {
      enabled = true

      input_format_configuration {
        deserializer {
          open_x_json_ser_de {}
        }
      }

      output_format_configuration {
        serializer {
          parquet_ser_de {
            compression = "SNAPPY"
          }
        }
      }

      schema_configuration {
        catalog_id    = local.account_id
        region        = local.region
        database_name = aws_glue_catalog_database.main.name
        table_name    = aws_glue_catalog_table.readings.name
        role_arn      = aws_iam_role.firehose.arn
        version_id    = "LATEST"
      }
    }

    cloudwatch_logging_options {
      enabled         = true
      log_group_name  = aws_cloudwatch_log_group.firehose.name
      log_stream_name = aws_cloudwatch_log_stream.firehose_s3.name
    }
  }

  depends_on = [aws_iam_role_policy.firehose]
}

data "aws_iam_policy_document" "firehose_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["firehose.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "sts:ExternalId"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "firehose" {
  name               = "${var.project}-firehose-delivery"
  assume_role_policy = data.aws_iam_policy_document.firehose_assume.json
}

data "aws_iam_policy_document" "firehose" {
  statement {
    sid = "ReadStream"
    actions = [
      "kinesis:DescribeStream",
      "kinesis:DescribeStreamSummary",
      "kinesis:GetShardIterator",
      "kinesis:GetRecords",
      "kinesis:ListShards",
    ]
    resources = [aws_kinesis_stream.readings.arn]
  }

  statement {
    sid = "WriteLogBucket"
    actions = [
      "s3:AbortMultipartUpload",
      "s3:GetBucketLocation",
      "s3:GetObject",
      "s3:ListBucket",
      "s3:ListBucketMultipartUploads",
      "s3:PutObject",
    ]
    resources = [
      aws_s3_bucket.logs.arn,
      "${aws_s3_bucket.logs.arn}/${local.log_prefix}*",
      "${aws_s3_bucket.logs.arn}/${local.error_prefix}*",
    ]
  }

  statement {
    sid = "ReadGlueSchema"
    actions = [
      "glue:GetTable",
      "glue:GetTableVersion",
      "glue:GetTableVersions",
    ]
    resources = [
      local.glue_catalog_arn,
      local.glue_database_arn,
      "arn:${local.partition}:glue:${local.region}:${local.account_id}:table/${local.glue_database}/${local.readings_table}",
    ]
  }

  statement {
    sid       = "InvokeTransform"
    actions   = ["lambda:InvokeFunction", "lambda:GetFunctionConfiguration"]
    resources = [aws_lambda_function.firehose_transform.arn, "${aws_lambda_function.firehose_transform.arn}:*"]
  }

  # The key only through the two services Firehose uses it with: reading the encrypted stream
  # and writing the encrypted bucket.
  statement {
    sid       = "UseProjectKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.main.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["kinesis.${local.region}.amazonaws.com", "s3.${local.region}.amazonaws.com"]
    }
  }

  statement {
    sid       = "DeliveryLogs"
    actions   = ["logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.firehose.arn}:*"]
  }
}

resource "aws_iam_role_policy" "firehose" {
  name   = "deliver-readings"
  role   = aws_iam_role.firehose.id
  policy = data.aws_iam_policy_document.firehose.json
}

# ---------------------------------------------------------------------------------------------
# Transform Lambda (lambdas/firehose_transform/handler.py): validates and normalises each reading
# with the core, returns partitionKeyFromLambda {year, month, day, hour} of its event time, or
# ProcessingFailed with the reason.
# ---------------------------------------------------------------------------------------------
resource "aws_cloudwatch_log_group" "firehose_transform" {
  name              = "/aws/lambda/${local.transform_function_name}"
  retention_in_days = var.cloudwatch_log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

resource "aws_iam_role" "firehose_transform" {
  name               = "${var.project}-firehose-transform"
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
}

data "aws_iam_policy_document" "firehose_transform" {
  source_policy_documents = [data.aws_iam_policy_document.xray.json]

  statement {
    sid       = "OwnLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.firehose_transform.arn}:*"]
  }

  # Lambda decrypts this function's environment with the function ARN as encryption context;
  # nothing else encrypted with the key can be decrypted by the role.
  statement {
    sid       = "DecryptEnvironment"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.main.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:EncryptionContext:aws:lambda:FunctionArn"
      values   = ["arn:${local.partition}:lambda:${local.region}:${local.account_id}:function:${local.transform_function_name}"]
    }
  }
}

resource "aws_iam_role_policy" "firehose_transform" {
  name   = "transform-readings"
  role   = aws_iam_role.firehose_transform.id
  policy = data.aws_iam_policy_document.firehose_transform.json
}

resource "aws_lambda_function" "firehose_transform" {
  #checkov:skip=CKV_AWS_116:Invoked synchronously by Firehose, which retries and sends failed records to errors/; a DLQ only applies to asynchronous invocations.
  #checkov:skip=CKV_AWS_117:Touches no VPC resource; a VPC would only add NAT cost.
  #checkov:skip=CKV_AWS_272:Zips are built from the repository by `farmctl deploy`; no signing profile in this project.
  #checkov:skip=CKV_AWS_115:Concurrency follows Firehose's invocation rate; reserving it could fail in accounts with a low concurrency quota.
  function_name    = local.transform_function_name
  description      = "Firehose transform: validate/normalise readings, event-time partition keys"
  role             = aws_iam_role.firehose_transform.arn
  runtime          = "python3.12"
  handler          = "handler.handler"
  architectures    = ["x86_64"]
  filename         = local.lambda_zip.firehose_transform
  source_code_hash = local.lambda_zip_hash.firehose_transform
  layers           = [var.pandas_layer_arn]
  memory_size      = 512
  timeout          = var.transform_timeout_seconds
  kms_key_arn      = aws_kms_key.main.arn

  environment {
    variables = {
      LOG_LEVEL = var.log_level
    }
  }

  tracing_config {
    mode = "Active"
  }

  depends_on = [aws_cloudwatch_log_group.firehose_transform, aws_iam_role_policy.firehose_transform]

  lifecycle {
    precondition {
      condition     = local.lambda_zip_hash.firehose_transform != null
      error_message = local.lambda_zip_missing
    }
  }
}
