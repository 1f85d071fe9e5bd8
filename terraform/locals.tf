data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  region     = var.region

  # Bucket names must be globally unique: the seed's names plus project and account id.
  log_bucket_name         = "${var.project}-sensor-log-bucket-${local.account_id}"
  spike_bucket_name       = "${var.project}-spike-log-bucket-${local.account_id}"
  results_bucket_name     = "${var.project}-athena-results-${local.account_id}"
  access_logs_bucket_name = "${var.project}-s3-access-logs-${local.account_id}"

  # Object layout (DESIGN.md): event-time Hive partitions, zero-padded strings.
  log_prefix   = "logs/"
  spike_prefix = "spikes/"
  alert_prefix = "alerts/"
  error_prefix = "errors/"

  glue_database  = replace(var.project, "-", "_")
  readings_table = "readings"
  spikes_table   = "spikes"

  # Columns generated from smartfarm_cli/core/schema.py (terraform/schemas/generate.py).
  reading_columns = jsondecode(file("${path.module}/schemas/glue_readings_columns.json"))
  spike_columns   = jsondecode(file("${path.module}/schemas/glue_spikes_columns.json"))

  # Lambda zips are built by `farmctl deploy` (not by Terraform) into build/lambda/<name>.zip.
  lambda_build_dir = coalesce(var.lambda_build_dir, "${path.module}/../build/lambda")
  lambda_zip = {
    anomaly_detector   = "${local.lambda_build_dir}/anomaly_detector.zip"
    pseudo_sensor_log  = "${local.lambda_build_dir}/pseudo_sensor_log.zip"
    firehose_transform = "${local.lambda_build_dir}/firehose_transform.zip"
    silent_check       = "${local.lambda_build_dir}/silent_check.zip"
  }
  # null when a zip is missing: each function's precondition then says what to run, instead of
  # filebase64sha256 failing on a fresh clone.
  lambda_zip_hash    = { for name, zip in local.lambda_zip : name => fileexists(zip) ? filebase64sha256(zip) : null }
  lambda_zip_missing = "The Lambda zips are not built in ${local.lambda_build_dir}: run `farmctl deploy` (it builds them before planning) or `python -m smartfarm_cli.packaging` first."

  anomaly_function_name   = "${var.project}-anomaly_detector"
  simulator_function_name = "${var.project}-pseudo_sensor_log_lambda"
  transform_function_name = "${var.project}-firehose_transform"

  # Built from parts (not from the resource) so the simulator's own policy can name it
  # without a dependency cycle between the function and its role.
  simulator_function_arn = "arn:${local.partition}:lambda:${local.region}:${local.account_id}:function:${local.simulator_function_name}"

  ssm_prefix                    = "/${var.project}"
  discord_webhook_ssm_parameter = "${local.ssm_prefix}/alerts/discord-webhook-url"
  ingest_api_key_ssm_parameter  = "${local.ssm_prefix}/ingest/api-key"
  # The simulator's own ingest key (simulator.tf), apart from the devices' key above.
  simulator_ingest_api_key_ssm_parameter = "${local.ssm_prefix}/simulator/ingest-api-key"
  grafana_password_ssm_name              = "${local.ssm_prefix}/grafana/admin-password"
  # Not a password: the value the Grafana instance replaces with one it generates at first boot.
  grafana_password_placeholder = "unset: the Grafana instance writes the admin password here at first boot"

  # A plain switch, not derived from the URL: the URL is ephemeral and may not decide a count.
  discord_enabled = var.discord_alerts_enabled

  glue_catalog_arn   = "arn:${local.partition}:glue:${local.region}:${local.account_id}:catalog"
  glue_database_arn  = "arn:${local.partition}:glue:${local.region}:${local.account_id}:database/${local.glue_database}"
  glue_tables_arn    = "arn:${local.partition}:glue:${local.region}:${local.account_id}:table/${local.glue_database}/*"
  athena_catalog_arn = "arn:${local.partition}:athena:${local.region}:${local.account_id}:datacatalog/AwsDataCatalog"
}
