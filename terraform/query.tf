# Athena workgroup: engine v3, results forced into the results bucket (SSE-KMS), and a
# bytes-scanned cutoff so one unfiltered query cannot scan the whole lake.
resource "aws_athena_workgroup" "main" {
  name          = var.project
  description   = "${var.project} sensor queries (farmctl, Grafana)"
  force_destroy = true # only drops saved queries/history on destroy, never data

  configuration {
    enforce_workgroup_configuration    = true
    publish_cloudwatch_metrics_enabled = true
    bytes_scanned_cutoff_per_query     = var.athena_bytes_scanned_cutoff

    engine_version {
      selected_engine_version = "Athena engine version 3"
    }

    result_configuration {
      output_location       = "s3://${aws_s3_bucket.athena_results.id}/athena/"
      expected_bucket_owner = local.account_id

      encryption_configuration {
        encryption_option = "SSE_KMS"
        kms_key_arn       = aws_kms_key.main.arn
      }
    }
  }
}
