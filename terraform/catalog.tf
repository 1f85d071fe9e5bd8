# Glue Data Catalog: database, the `readings` and `spikes` tables (columns generated from
# smartfarm_cli/core/schema.py), partition projection, and the seed's crawler.

resource "aws_glue_catalog_database" "main" {
  name        = local.glue_database
  description = "${var.project} sensor readings and spikes"
}

resource "aws_glue_catalog_table" "readings" {
  name          = local.readings_table
  database_name = aws_glue_catalog_database.main.name
  description   = "Sensor readings delivered by Firehose as Parquet, partitioned by event time (UTC)"
  table_type    = "EXTERNAL_TABLE"

  # Partition projection: partitions are computed at query time from the template below, so
  # data Firehose delivered a minute ago is queryable without a crawl or MSCK REPAIR.
  parameters = {
    "classification"            = "parquet"
    "EXTERNAL"                  = "TRUE"
    "parquet.compression"       = "SNAPPY"
    "projection.enabled"        = "true"
    "projection.year.type"      = "integer"
    "projection.year.range"     = "${var.projection_start_year},${var.projection_end_year}"
    "projection.year.digits"    = "4"
    "projection.month.type"     = "integer"
    "projection.month.range"    = "1,12"
    "projection.month.digits"   = "2"
    "projection.day.type"       = "integer"
    "projection.day.range"      = "1,31"
    "projection.day.digits"     = "2"
    "projection.hour.type"      = "integer"
    "projection.hour.range"     = "0,23"
    "projection.hour.digits"    = "2"
    "storage.location.template" = "s3://${aws_s3_bucket.logs.id}/${local.log_prefix}year=$${year}/month=$${month}/day=$${day}/hour=$${hour}/"
  }

  # Zero-padded strings, as in the object keys (year=2026/month=01/day=07/hour=09).
  dynamic "partition_keys" {
    for_each = ["year", "month", "day", "hour"]
    content {
      name = partition_keys.value
      type = "string"
    }
  }

  storage_descriptor {
    location      = "s3://${aws_s3_bucket.logs.id}/${local.log_prefix}"
    input_format  = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
    output_format = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"

    ser_de_info {
      name                  = "parquet"
      serialization_library = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
      parameters = {
        "serialization.format" = "1"
      }
    }

    dynamic "columns" {
      for_each = local.reading_columns
      content {
        name    = columns.value.name
        type    = columns.value.type
        comment = columns.value.comment
      }
    }
  }

  lifecycle {
    precondition {
      condition     = var.projection_end_year >= var.projection_start_year
      error_message = "projection_end_year must not be before projection_start_year."
    }
  }
}

resource "aws_glue_catalog_table" "spikes" {
  name          = local.spikes_table
  database_name = aws_glue_catalog_database.main.name
  description   = "Anomalous readings written by the anomaly detector (reading + rule, metric, severity, detail, source_key)"
  table_type    = "EXTERNAL_TABLE"

  parameters = {
    "classification"            = "parquet"
    "EXTERNAL"                  = "TRUE"
    "projection.enabled"        = "true"
    "projection.year.type"      = "integer"
    "projection.year.range"     = "${var.projection_start_year},${var.projection_end_year}"
    "projection.year.digits"    = "4"
    "projection.month.type"     = "integer"
    "projection.month.range"    = "1,12"
    "projection.month.digits"   = "2"
    "projection.day.type"       = "integer"
    "projection.day.range"      = "1,31"
    "projection.day.digits"     = "2"
    "storage.location.template" = "s3://${aws_s3_bucket.spikes.id}/${local.spike_prefix}year=$${year}/month=$${month}/day=$${day}/"
  }

  dynamic "partition_keys" {
    for_each = ["year", "month", "day"]
    content {
      name = partition_keys.value
      type = "string"
    }
  }

  storage_descriptor {
    location      = "s3://${aws_s3_bucket.spikes.id}/${local.spike_prefix}"
    input_format  = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
    output_format = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"

    ser_de_info {
      name                  = "parquet"
      serialization_library = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
      parameters = {
        "serialization.format" = "1"
      }
    }

    dynamic "columns" {
      for_each = local.spike_columns
      content {
        name    = columns.value.name
        type    = columns.value.type
        comment = columns.value.comment
      }
    }
  }
}

# ---------------------------------------------------------------------------------------------
# Crawler (the seed's step, run by `farmctl crawl`).
#
# It can never break the projected `readings` table:
#   * table_prefix "crawled_" makes it create/update only crawled_* tables (e.g. crawled_logs),
#     never `readings` or `spikes`, which Terraform owns;
#   * schema_change_policy LOG/LOG: an existing table is never updated or deleted, changes are
#     only logged; with CRAWL_NEW_FOLDERS_ONLY it only lists folders added since the last run;
#   * partitions it finds inherit the table's schema (InheritFromTable).
# Queries use `readings` (projection); the crawled table is a cross-check of what Firehose wrote.
# ---------------------------------------------------------------------------------------------
resource "aws_glue_security_configuration" "crawler" {
  name = "${var.project}-crawler"

  encryption_configuration {
    cloudwatch_encryption {
      cloudwatch_encryption_mode = "SSE-KMS"
      kms_key_arn                = aws_kms_key.main.arn
    }

    job_bookmarks_encryption {
      job_bookmarks_encryption_mode = "CSE-KMS"
      kms_key_arn                   = aws_kms_key.main.arn
    }

    s3_encryption {
      s3_encryption_mode = "SSE-KMS"
      kms_key_arn        = aws_kms_key.main.arn
    }
  }
}

resource "aws_glue_crawler" "logs" {
  name                   = "${var.project}-sensor-log-crawler"
  description            = "Crawls sensor-log-bucket/logs/ into crawled_* tables (never touches the projected readings table)"
  database_name          = aws_glue_catalog_database.main.name
  role                   = aws_iam_role.crawler.arn
  table_prefix           = "crawled_"
  schedule               = var.crawler_schedule
  security_configuration = aws_glue_security_configuration.crawler.name

  s3_target {
    path       = "s3://${aws_s3_bucket.logs.id}/${local.log_prefix}"
    exclusions = ["**/_SUCCESS", "**/*.tmp"]
  }

  schema_change_policy {
    update_behavior = "LOG"
    delete_behavior = "LOG"
  }

  recrawl_policy {
    recrawl_behavior = "CRAWL_NEW_FOLDERS_ONLY"
  }

  configuration = jsonencode({
    Version = 1.0
    Grouping = {
      TableGroupingPolicy = "CombineCompatibleSchemas"
    }
    CrawlerOutput = {
      Partitions = { AddOrUpdateBehavior = "InheritFromTable" }
    }
  })
}

data "aws_iam_policy_document" "glue_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["glue.amazonaws.com"]
    }
    # Confused-deputy guard like the other trust policies. IfExists: API Gateway was found not to
    # send aws:SourceAccount when it assumes a role (issue 10), and a missing key must not stop
    # the crawler; when Glue sends it, only this account's crawlers may assume the role.
    condition {
      test     = "StringEqualsIfExists"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "crawler" {
  name               = "${var.project}-glue-crawler"
  assume_role_policy = data.aws_iam_policy_document.glue_assume.json
}

data "aws_iam_policy_document" "crawler" {
  statement {
    sid       = "ListLogPrefix"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [aws_s3_bucket.logs.arn]
  }

  statement {
    sid       = "ReadLogs"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.logs.arn}/${local.log_prefix}*"]
  }

  statement {
    sid = "CatalogCrawledTablesOnly"
    actions = [
      "glue:GetDatabase",
      "glue:GetTable",
      "glue:GetTables",
      "glue:CreateTable",
      "glue:UpdateTable",
      "glue:GetPartition",
      "glue:GetPartitions",
      "glue:BatchGetPartition",
      "glue:CreatePartition",
      "glue:BatchCreatePartition",
      "glue:UpdatePartition",
      "glue:BatchUpdatePartition",
    ]
    resources = [
      local.glue_catalog_arn,
      local.glue_database_arn,
      "arn:${local.partition}:glue:${local.region}:${local.account_id}:table/${local.glue_database}/crawled_*",
    ]
  }

  statement {
    sid = "CrawlerLogs"
    actions = [
      "logs:CreateLogGroup",
      "logs:CreateLogStream",
      "logs:PutLogEvents",
      "logs:AssociateKmsKey",
    ]
    resources = [
      "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:/aws-glue/crawlers*",
    ]
  }

  statement {
    sid       = "UseProjectKey"
    actions   = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.main.arn]
  }
}

resource "aws_iam_role_policy" "crawler" {
  name   = "crawl-sensor-logs"
  role   = aws_iam_role.crawler.id
  policy = data.aws_iam_policy_document.crawler.json
}
