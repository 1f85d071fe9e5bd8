# S3: sensor-log-bucket (Parquet logs), spike-log-bucket (spikes and alert state), Athena
# results, and the bucket receiving S3 server access logs of the other three.

resource "aws_s3_bucket" "logs" {
  #checkov:skip=CKV_AWS_144:Single-region pipeline; cross-region replication doubles storage cost. Versioning + retention protect against deletes; add replication for DR if required.
  bucket        = local.log_bucket_name
  force_destroy = var.force_destroy_buckets
}

resource "aws_s3_bucket" "spikes" {
  #checkov:skip=CKV_AWS_144:Single-region pipeline; spikes can be recomputed from the log bucket by re-running the detector.
  #checkov:skip=CKV2_AWS_62:Nothing reacts to spike objects; alerts are sent by the detector when it writes them.
  bucket        = local.spike_bucket_name
  force_destroy = var.force_destroy_buckets
}

resource "aws_s3_bucket" "athena_results" {
  #checkov:skip=CKV_AWS_144:Query results are temporary (expire after var.athena_results_retention_days) and reproducible.
  #checkov:skip=CKV2_AWS_62:Nothing reacts to Athena result objects.
  bucket        = local.results_bucket_name
  force_destroy = true # query results only, always reproducible
}

resource "aws_s3_bucket" "access_logs" {
  #checkov:skip=CKV_AWS_18:This bucket is the access-log sink; logging it into itself would loop.
  #checkov:skip=CKV_AWS_144:Access logs are an audit aid, not primary data; no second region.
  #checkov:skip=CKV2_AWS_62:Nothing consumes events of the access-log sink.
  #checkov:skip=CKV_AWS_145:S3 server access logging can only deliver to an SSE-S3 (AES256) bucket, not SSE-KMS.
  bucket        = local.access_logs_bucket_name
  force_destroy = var.force_destroy_buckets
}

locals {
  # The three data buckets share public-access, versioning, encryption, TLS and logging settings.
  data_buckets = {
    logs           = aws_s3_bucket.logs
    spikes         = aws_s3_bucket.spikes
    athena_results = aws_s3_bucket.athena_results
  }
  all_buckets = merge(local.data_buckets, { access_logs = aws_s3_bucket.access_logs })
}

resource "aws_s3_bucket_public_access_block" "all" {
  for_each = local.all_buckets

  bucket                  = each.value.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "all" {
  for_each = local.all_buckets

  bucket = each.value.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_versioning" "all" {
  for_each = local.all_buckets

  bucket = each.value.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "data" {
  for_each = local.data_buckets

  bucket = each.value.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.main.arn
    }
    bucket_key_enabled = true
  }
}

# Server access logging only delivers to SSE-S3 buckets.
resource "aws_s3_bucket_server_side_encryption_configuration" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_logging" "data" {
  for_each = local.data_buckets

  bucket        = each.value.id
  target_bucket = aws_s3_bucket.access_logs.id
  target_prefix = "${each.key}/"

  # S3 checks the sink's policy (the logging.s3.amazonaws.com grant) when logging is turned on:
  # without this, a first apply can answer InvalidTargetBucketForLogging.
  depends_on = [aws_s3_bucket_policy.all]
}

# TLS-only policies (plus, for the sink, the log delivery grant).
data "aws_iam_policy_document" "tls_only" {
  for_each = local.all_buckets

  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [each.value.arn, "${each.value.arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }

  dynamic "statement" {
    for_each = each.key == "access_logs" ? [1] : []
    content {
      sid       = "S3ServerAccessLogsDelivery"
      effect    = "Allow"
      actions   = ["s3:PutObject"]
      resources = ["${each.value.arn}/*"]

      principals {
        type        = "Service"
        identifiers = ["logging.s3.amazonaws.com"]
      }

      condition {
        test     = "StringEquals"
        variable = "aws:SourceAccount"
        values   = [local.account_id]
      }

      condition {
        test     = "ArnLike"
        variable = "aws:SourceArn"
        values   = [for b in local.data_buckets : b.arn]
      }
    }
  }
}

resource "aws_s3_bucket_policy" "all" {
  for_each = local.all_buckets

  bucket = each.value.id
  policy = data.aws_iam_policy_document.tls_only[each.key].json

  depends_on = [aws_s3_bucket_public_access_block.all]
}

# Lifecycle: retention per bucket, old versions expire, unfinished uploads are cleaned up.
resource "aws_s3_bucket_lifecycle_configuration" "logs" {
  bucket = aws_s3_bucket.logs.id

  # logs/ (Parquet) and errors/ (rejected readings) share one retention.
  rule {
    id     = "expire-logs-and-errors"
    status = "Enabled"
    filter {}
    expiration {
      days = var.log_retention_days
    }
    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_retention_days
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.all]
}

resource "aws_s3_bucket_lifecycle_configuration" "spikes" {
  bucket = aws_s3_bucket.spikes.id

  rule {
    id     = "expire-spikes-and-alerts"
    status = "Enabled"
    filter {}
    expiration {
      days = var.spike_retention_days
    }
    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_retention_days
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.all]
}

resource "aws_s3_bucket_lifecycle_configuration" "athena_results" {
  bucket = aws_s3_bucket.athena_results.id

  rule {
    id     = "expire-results"
    status = "Enabled"
    filter {}
    expiration {
      days = var.athena_results_retention_days
    }
    noncurrent_version_expiration {
      noncurrent_days = 1
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  depends_on = [aws_s3_bucket_versioning.all]
}

resource "aws_s3_bucket_lifecycle_configuration" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id

  rule {
    id     = "expire-access-logs"
    status = "Enabled"
    filter {}
    expiration {
      days = var.log_retention_days
    }
    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_retention_days
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.all]
}
