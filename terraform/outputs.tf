# Read by farmctl (`terraform output -json`, saved by `farmctl deploy`). Names are a contract.
# No secret values: API keys are given by id, secrets by SSM parameter name.

output "region" {
  description = "AWS region of the stack."
  value       = local.region
}

output "ingest_api_url" {
  description = "kinesis_api_gw: full URL of POST /records (batch of readings)."
  value       = "${aws_api_gateway_stage.ingest.invoke_url}/records"
}

output "ingest_record_url" {
  description = "kinesis_api_gw: full URL of POST /record (one reading)."
  value       = "${aws_api_gateway_stage.ingest.invoke_url}/record"
}

output "ingest_api_key_id" {
  description = "Id of the old shared ingest key (\"\" unless shared_ingest_api_key); device keys are per site: farmctl keys list."
  value       = var.shared_ingest_api_key ? aws_api_gateway_api_key.ingest[0].id : ""
}

output "simulator_api_url" {
  description = "pseudo_api_gw: full URL of POST / (starts a simulator run)."
  value       = "${aws_api_gateway_stage.simulator.invoke_url}/"
}

output "simulator_api_key_id" {
  description = "Id of the simulator API key (value: aws apigateway get-api-key --include-value)."
  value       = aws_api_gateway_api_key.simulator.id
}

output "stream_name" {
  description = "Kinesis data stream name."
  value       = aws_kinesis_stream.readings.name
}

output "stream_arn" {
  description = "Kinesis data stream ARN."
  value       = aws_kinesis_stream.readings.arn
}

output "firehose_name" {
  description = "Firehose delivery stream name."
  value       = aws_kinesis_firehose_delivery_stream.logs.name
}

output "log_bucket" {
  description = "sensor-log-bucket: Parquet logs under logs/year=/month=/day=/hour=/."
  value       = aws_s3_bucket.logs.id
}

output "spike_bucket" {
  description = "spike-log-bucket: spikes under spikes/year=/month=/day=/ and alert state under alerts/."
  value       = aws_s3_bucket.spikes.id
}

output "athena_results_bucket" {
  description = "Bucket holding Athena query results (prefix athena/)."
  value       = aws_s3_bucket.athena_results.id
}

output "glue_database" {
  description = "Glue database of the readings and spikes tables."
  value       = aws_glue_catalog_database.main.name
}

output "readings_table" {
  description = "Glue table of readings (partition projection)."
  value       = aws_glue_catalog_table.readings.name
}

output "spikes_table" {
  description = "Glue table of spikes (partition projection)."
  value       = aws_glue_catalog_table.spikes.name
}

output "athena_workgroup" {
  description = "Athena workgroup to run queries in (engine v3, enforced result location)."
  value       = aws_athena_workgroup.main.name
}

output "crawler_name" {
  description = "Glue crawler over logs/ (run by `farmctl crawl`; writes crawled_* tables only)."
  value       = aws_glue_crawler.logs.name
}

output "anomaly_function_name" {
  description = "anomaly_detector Lambda function name."
  value       = aws_lambda_function.anomaly_detector.function_name
}

output "simulator_function_name" {
  description = "pseudo_sensor_log_lambda function name."
  value       = aws_lambda_function.simulator.function_name
}

output "transform_function_name" {
  description = "Firehose transform Lambda function name."
  value       = aws_lambda_function.firehose_transform.function_name
}

output "alerts_dlq_url" {
  description = "SQS queue receiving anomaly_detector events that failed after 2 retries."
  value       = aws_sqs_queue.alerts_dlq.url
}

output "simulator_dlq_url" {
  description = "SQS queue receiving failed asynchronous simulator runs."
  value       = aws_sqs_queue.simulator_dlq.url
}

output "grafana_url" {
  description = "Grafana UI (port 3000; reachable from allowed_cidrs only)."
  value       = "http://${local.grafana_host}:3000"
}

output "discord_webhook_ssm_parameter" {
  description = "SSM SecureString name holding the Discord webhook URL (\"\" when no webhook was given)."
  value       = local.discord_enabled ? aws_ssm_parameter.discord_webhook[0].name : ""
}

output "ingest_api_key_ssm_parameter" {
  description = "SSM SecureString name holding the old shared ingest key's value (\"\" unless shared_ingest_api_key)."
  value       = var.shared_ingest_api_key ? aws_ssm_parameter.ingest_api_key[0].name : ""
}

output "grafana_admin_password_ssm_parameter" {
  description = "SSM SecureString name holding the Grafana admin password (user admin)."
  value       = aws_ssm_parameter.grafana_admin_password.name
}

output "kms_key_arn" {
  description = "Project KMS key (readers of the buckets need kms:Decrypt on it)."
  value       = aws_kms_key.main.arn
}

output "state_table" {
  description = "DynamoDB table of per-device state and incidents (farmctl alerts and status read it)."
  value       = aws_dynamodb_table.device_state.name
}

output "silent_check_function_name" {
  description = "silent_check Lambda function name (farmctl check invokes it)."
  value       = module.silent_check.function_name
}

output "ingest_usage_plans" {
  description = "Site -> id of its usage plan on kinesis_api_gw (farmctl keys creates, lists and revokes the keys on these plans)."
  value       = { for site, plan in aws_api_gateway_usage_plan.ingest : site => plan.id }
}
