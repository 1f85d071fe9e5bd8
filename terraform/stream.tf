# Kinesis Data Stream: on-demand (no shards to size), encrypted with the project key.
resource "aws_kinesis_stream" "readings" {
  name             = "${var.project}-sensor-stream"
  retention_period = var.stream_retention_hours
  encryption_type  = "KMS"
  kms_key_id       = aws_kms_key.main.arn

  stream_mode_details {
    stream_mode = "ON_DEMAND"
  }
}
