# ---------------------------------------------------------------------------------------------
# General
# ---------------------------------------------------------------------------------------------
variable "region" {
  description = "AWS region to deploy into."
  type        = string
  default     = "ap-northeast-2"

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.region))
    error_message = "region must look like an AWS region name, e.g. ap-northeast-2."
  }
}

variable "project" {
  description = "Name prefix for every resource (lower case). Bucket names add the account id to it."
  type        = string
  default     = "smartfarm"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,18}[a-z0-9]$", var.project))
    error_message = "project must be 3-20 characters of a-z, 0-9 and '-', starting with a letter."
  }
}

variable "tags" {
  description = "Extra tags added to every resource (on top of Project/ManagedBy/Component)."
  type        = map(string)
  default     = {}
}

variable "log_level" {
  description = "LOG_LEVEL given to the Lambda functions."
  type        = string
  default     = "INFO"

  validation {
    condition     = contains(["DEBUG", "INFO", "WARNING", "ERROR"], var.log_level)
    error_message = "log_level must be one of DEBUG, INFO, WARNING, ERROR."
  }
}

variable "cloudwatch_log_retention_days" {
  description = "Retention of every CloudWatch log group (Lambda, Firehose, API Gateway access logs)."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.cloudwatch_log_retention_days)
    error_message = "cloudwatch_log_retention_days must be a value CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, ... 365, ... 3653)."
  }
}

# ---------------------------------------------------------------------------------------------
# Lambda packaging
# ---------------------------------------------------------------------------------------------
variable "lambda_build_dir" {
  description = "Folder holding anomaly_detector.zip, pseudo_sensor_log.zip and firehose_transform.zip (built by `farmctl deploy`). null = <repo>/build/lambda."
  type        = string
  default     = null
}

variable "pandas_layer_arn" {
  description = "ARN of the AWS SDK for pandas (awswrangler) layer for python3.12 x86_64 in var.region, e.g. arn:aws:lambda:ap-northeast-2:336392948345:layer:AWSSDKPandas-Python312:<version>. Look the version up in https://aws-sdk-pandas.readthedocs.io/en/stable/layers.html; it differs per region. Only the publisher's account or this account, in var.region, is accepted (layers.tf)."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:lambda:[a-z0-9-]+:[0-9]{12}:layer:[A-Za-z0-9_-]+:[0-9]+$", var.pandas_layer_arn))
    error_message = "pandas_layer_arn must be a versioned Lambda layer ARN: arn:aws:lambda:<region>:<account>:layer:<name>:<version>."
  }

  validation {
    condition     = !can(regex("(?i)arm64", var.pandas_layer_arn))
    error_message = "The functions run on x86_64; use the x86_64 AWSSDKPandas-Python312 layer, not the -Arm64 one."
  }
}

# ---------------------------------------------------------------------------------------------
# Stream and delivery
# ---------------------------------------------------------------------------------------------
variable "stream_retention_hours" {
  description = "How long the Kinesis stream keeps records (hours). Longer than 24 h costs extra."
  type        = number
  default     = 24

  validation {
    condition     = var.stream_retention_hours >= 24 && var.stream_retention_hours <= 8760
    error_message = "stream_retention_hours must be between 24 and 8760."
  }
}

variable "firehose_buffering_size_mb" {
  description = "Firehose buffer size in MiB. Format conversion and dynamic partitioning need at least 64."
  type        = number
  default     = 64

  validation {
    condition     = var.firehose_buffering_size_mb >= 64 && var.firehose_buffering_size_mb <= 128
    error_message = "firehose_buffering_size_mb must be between 64 and 128 (64 is the minimum with Parquet conversion)."
  }
}

variable "firehose_buffering_interval_seconds" {
  description = "Firehose buffer interval in seconds: how long a reading may wait before it lands in S3."
  type        = number
  default     = 60

  validation {
    condition     = var.firehose_buffering_interval_seconds >= 60 && var.firehose_buffering_interval_seconds <= 900
    error_message = "firehose_buffering_interval_seconds must be between 60 and 900."
  }
}

variable "transform_timeout_seconds" {
  description = "Timeout of the Firehose transform Lambda (Firehose allows at most 300 s)."
  type        = number
  default     = 60

  validation {
    condition     = var.transform_timeout_seconds >= 10 && var.transform_timeout_seconds <= 300
    error_message = "transform_timeout_seconds must be between 10 and 300."
  }
}

# ---------------------------------------------------------------------------------------------
# Storage
# ---------------------------------------------------------------------------------------------
variable "log_retention_days" {
  description = "Days a Parquet log object (and a Firehose error object) is kept in sensor-log-bucket."
  type        = number
  default     = 365

  validation {
    condition     = var.log_retention_days >= 7
    error_message = "log_retention_days must be at least 7 (the dashboards look back 7 days)."
  }
}

variable "spike_retention_days" {
  description = "Days a spike / alert object is kept in spike-log-bucket."
  type        = number
  default     = 730

  validation {
    condition     = var.spike_retention_days >= 7
    error_message = "spike_retention_days must be at least 7."
  }
}

variable "athena_results_retention_days" {
  description = "Days Athena query results are kept."
  type        = number
  default     = 7

  validation {
    condition     = var.athena_results_retention_days >= 1
    error_message = "athena_results_retention_days must be at least 1."
  }
}

variable "noncurrent_version_retention_days" {
  description = "Days an overwritten or deleted object version is kept (versioned buckets)."
  type        = number
  default     = 30

  validation {
    condition     = var.noncurrent_version_retention_days >= 1
    error_message = "noncurrent_version_retention_days must be at least 1."
  }
}

variable "force_destroy_buckets" {
  description = "Let `terraform destroy` delete buckets that still hold objects (data loss!). Keep false in production."
  type        = bool
  default     = false
}

# ---------------------------------------------------------------------------------------------
# Catalog and query
# ---------------------------------------------------------------------------------------------
variable "projection_start_year" {
  description = "First year of the partition projection range (readings older than this are not queried)."
  type        = number
  default     = 2020

  validation {
    condition     = var.projection_start_year >= 2000 && var.projection_start_year <= 2100
    error_message = "projection_start_year must be between 2000 and 2100."
  }
}

variable "projection_end_year" {
  description = "Last year of the partition projection range."
  type        = number
  default     = 2040

  validation {
    condition     = var.projection_end_year >= 2000 && var.projection_end_year <= 2100
    error_message = "projection_end_year must be between 2000 and 2100 (and not before projection_start_year)."
  }
}

variable "crawler_schedule" {
  description = "Optional cron schedule for the Glue crawler, e.g. cron(0 3 * * ? *). null = run on demand (`farmctl crawl`)."
  type        = string
  default     = null

  validation {
    condition     = var.crawler_schedule == null || can(regex("^cron\\(.+\\)$", var.crawler_schedule))
    error_message = "crawler_schedule must be null or a cron(...) expression."
  }
}

variable "athena_bytes_scanned_cutoff" {
  description = "Athena workgroup limit: a query scanning more bytes than this is cancelled (cost guard)."
  type        = number
  default     = 1073741824

  validation {
    condition     = var.athena_bytes_scanned_cutoff >= 10000000
    error_message = "athena_bytes_scanned_cutoff must be at least 10,000,000 bytes (Athena's minimum)."
  }
}

# ---------------------------------------------------------------------------------------------
# Ingest API (kinesis_api_gw)
# ---------------------------------------------------------------------------------------------
variable "api_stage_name" {
  description = "Stage name of both REST APIs."
  type        = string
  default     = "v1"

  validation {
    condition     = can(regex("^[A-Za-z0-9_]{1,64}$", var.api_stage_name))
    error_message = "api_stage_name must be 1-64 of letters, digits and '_'."
  }
}

variable "manage_apigw_account" {
  description = "Set the region-wide API Gateway CloudWatch role (needed for access/execution logs). Set false if another stack already manages aws_api_gateway_account in this account and region."
  type        = bool
  default     = true
}

variable "ingest_throttle_rate_limit" {
  description = "Steady-state requests per second allowed for the ingest API key."
  type        = number
  default     = 50

  validation {
    condition     = var.ingest_throttle_rate_limit > 0
    error_message = "ingest_throttle_rate_limit must be positive."
  }
}

variable "ingest_throttle_burst_limit" {
  description = "Burst of requests allowed for the ingest API key."
  type        = number
  default     = 100

  validation {
    condition     = var.ingest_throttle_burst_limit >= 1
    error_message = "ingest_throttle_burst_limit must be at least 1."
  }
}

variable "ingest_quota_limit" {
  description = "Requests per quota period allowed for the ingest API key."
  type        = number
  default     = 500000

  validation {
    condition     = var.ingest_quota_limit >= 1
    error_message = "ingest_quota_limit must be at least 1."
  }
}

variable "ingest_quota_period" {
  description = "Quota period of the ingest usage plan."
  type        = string
  default     = "DAY"

  validation {
    condition     = contains(["DAY", "WEEK", "MONTH"], var.ingest_quota_period)
    error_message = "ingest_quota_period must be DAY, WEEK or MONTH."
  }
}

# ---------------------------------------------------------------------------------------------
# Simulator (pseudo_api_gw + pseudo_sensor_log_lambda)
# ---------------------------------------------------------------------------------------------
variable "simulator_timeout_seconds" {
  description = "Timeout of the asynchronous simulator run: count x interval must fit in it."
  type        = number
  default     = 900

  validation {
    condition     = var.simulator_timeout_seconds >= 30 && var.simulator_timeout_seconds <= 900
    error_message = "simulator_timeout_seconds must be between 30 and 900 (Lambda's maximum)."
  }
}

variable "simulator_quota_limit" {
  description = "Simulator runs allowed per day for the simulator API key."
  type        = number
  default     = 200

  validation {
    condition     = var.simulator_quota_limit >= 1
    error_message = "simulator_quota_limit must be at least 1."
  }
}

variable "simulator_throttle_rate_limit" {
  description = "Steady-state requests per second allowed for the simulator API key."
  type        = number
  default     = 1

  validation {
    condition     = var.simulator_throttle_rate_limit > 0
    error_message = "simulator_throttle_rate_limit must be positive."
  }
}

variable "simulator_ingest_rate_limit" {
  description = "Requests per second the simulator's own ingest key may send to kinesis_api_gw (apart from the devices' throttle)."
  type        = number
  default     = 10

  validation {
    condition     = var.simulator_ingest_rate_limit > 0
    error_message = "simulator_ingest_rate_limit must be positive."
  }
}

variable "simulator_ingest_burst_limit" {
  description = "Burst of the simulator's own ingest key."
  type        = number
  default     = 20

  validation {
    condition     = var.simulator_ingest_burst_limit >= 1
    error_message = "simulator_ingest_burst_limit must be at least 1."
  }
}

variable "simulator_ingest_quota_limit" {
  description = "Ingest requests per day for the simulator's own key (the devices' quota is never touched by fake runs)."
  type        = number
  default     = 20000

  validation {
    condition     = var.simulator_ingest_quota_limit >= 1
    error_message = "simulator_ingest_quota_limit must be at least 1."
  }
}

variable "simulator_throttle_burst_limit" {
  description = "Burst of requests allowed for the simulator API key."
  type        = number
  default     = 2

  validation {
    condition     = var.simulator_throttle_burst_limit >= 1
    error_message = "simulator_throttle_burst_limit must be at least 1."
  }
}

# ---------------------------------------------------------------------------------------------
# Alerts
# ---------------------------------------------------------------------------------------------
variable "discord_webhook_url" {
  description = "Discord webhook URL for anomaly alerts. Ephemeral: Terraform writes it to an SSM SecureString through the write-only value_wo and keeps it in neither the state nor the plan file, so it must be given again when a saved plan is applied (TF_VAR_discord_webhook_url). \"\" only with discord_alerts_enabled = false."
  type        = string
  sensitive   = true
  ephemeral   = true

  validation {
    condition     = var.discord_webhook_url == "" || can(regex("^https://((ptb|canary)\\.)?discord(app)?\\.com/api/webhooks/[0-9]+/[A-Za-z0-9_-]+$", var.discord_webhook_url))
    error_message = "discord_webhook_url must be \"\" or https://discord.com/api/webhooks/<id>/<token>."
  }

  validation {
    condition     = !var.discord_alerts_enabled || var.discord_webhook_url != ""
    error_message = "discord_webhook_url is empty but discord_alerts_enabled is true: set TF_VAR_discord_webhook_url=https://discord.com/api/webhooks/<id>/<token>, or discord_alerts_enabled = false to store spikes without notifying."
  }
}

# Non-secret switches: an ephemeral value may not decide a count, and a hash of the URL would put
# a fingerprint of the secret into the state, so these two are plain inputs.
variable "discord_alerts_enabled" {
  description = "Post anomaly alerts (and, with alarms_to_discord, alarm changes) to Discord. false: spikes are only stored; no webhook parameter is created."
  type        = bool
  default     = true
}

variable "discord_webhook_version" {
  description = "Version of the webhook URL written to SSM (value_wo_version). Terraform cannot see a write-only value change: raise this number whenever discord_webhook_url changes, or the old URL stays in SSM."
  type        = number
  default     = 1

  validation {
    condition     = var.discord_webhook_version >= 1 && floor(var.discord_webhook_version) == var.discord_webhook_version
    error_message = "discord_webhook_version must be a whole number >= 1 (raise it by one when the webhook URL changes)."
  }
}

variable "anomaly_timeout_seconds" {
  description = "Timeout of the anomaly detector (one Parquet object per invocation)."
  type        = number
  default     = 120

  validation {
    condition     = var.anomaly_timeout_seconds >= 10 && var.anomaly_timeout_seconds <= 900
    error_message = "anomaly_timeout_seconds must be between 10 and 900."
  }
}

variable "anomaly_memory_mb" {
  description = "Memory of the anomaly detector (pyarrow reads a whole 64 MiB Parquet object)."
  type        = number
  default     = 1024

  validation {
    condition     = var.anomaly_memory_mb >= 256 && var.anomaly_memory_mb <= 10240
    error_message = "anomaly_memory_mb must be between 256 and 10240."
  }
}

# ---------------------------------------------------------------------------------------------
# Monitoring (Grafana on EC2)
# ---------------------------------------------------------------------------------------------
variable "allowed_cidrs" {
  description = "CIDR blocks allowed to reach Grafana on port 3000 (e.g. the farm office's public IP /32)."
  type        = list(string)

  validation {
    # IPv4 only: the security group rule takes cidr_blocks, which refuses IPv6 ranges at plan time.
    condition     = length(var.allowed_cidrs) > 0 && alltrue([for c in var.allowed_cidrs : can(cidrhost(c, 0)) && !strcontains(c, ":")])
    error_message = "allowed_cidrs must list at least one valid IPv4 CIDR block, e.g. [\"203.0.113.7/32\"] (IPv6 ranges are not supported)."
  }

  validation {
    condition     = !contains(var.allowed_cidrs, "0.0.0.0/0")
    error_message = "Do not open Grafana to the whole internet; list the farm's own address ranges."
  }
}

variable "grafana_instance_type" {
  description = "EC2 instance type for Grafana (x86_64)."
  type        = string
  default     = "t3.small"

  validation {
    condition     = can(regex("^[a-z][a-z0-9]*\\.[a-z0-9]+$", var.grafana_instance_type)) && !can(regex("^[a-z]+[0-9]+g[a-z]*\\.", var.grafana_instance_type))
    error_message = "grafana_instance_type must be an x86_64 instance type such as t3.small (the AMI is x86_64, not Graviton)."
  }
}

variable "grafana_ami_ssm_parameter" {
  description = "Public SSM parameter holding the Amazon Linux 2023 AMI id."
  type        = string
  default     = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"

  validation {
    condition     = startswith(var.grafana_ami_ssm_parameter, "/aws/service/ami-amazon-linux-latest/al2023-")
    error_message = "grafana_ami_ssm_parameter must be an Amazon Linux 2023 public parameter."
  }
}

variable "grafana_subnet_id" {
  description = "Public subnet for the Grafana instance. null = a default subnet of the default VPC."
  type        = string
  default     = null

  validation {
    condition     = var.grafana_subnet_id == null || can(regex("^subnet-[0-9a-f]+$", var.grafana_subnet_id))
    error_message = "grafana_subnet_id must be null or a subnet id (subnet-...)."
  }
}

variable "grafana_root_volume_gb" {
  description = "Size of Grafana's encrypted root volume in GiB."
  type        = number
  default     = 20

  validation {
    condition     = var.grafana_root_volume_gb >= 8 && var.grafana_root_volume_gb <= 200
    error_message = "grafana_root_volume_gb must be between 8 and 200."
  }
}

variable "grafana_version" {
  description = "Grafana OSS version the instance installs from rpm.grafana.com (pinned: changing it replaces the instance; the admin password in SSM and the provisioned dashboard come back, dashboards made by hand in the UI do not)."
  type        = string
  default     = "13.1.1"

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+$", var.grafana_version))
    error_message = "grafana_version must be a release number such as 13.1.1."
  }
}

variable "athena_plugin_version" {
  description = "grafana-athena-datasource plugin version (pinned; see https://grafana.com/grafana/plugins/grafana-athena-datasource/)."
  type        = string
  default     = "3.4.2"

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+$", var.athena_plugin_version))
    error_message = "athena_plugin_version must be a release number such as 3.4.2."
  }
}

variable "domain_name" {
  description = "Optional DNS name for Grafana (e.g. grafana.farm.example.com). Needs hosted_zone_id too."
  type        = string
  default     = null

  validation {
    condition     = var.domain_name == null || can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]{2,}$", var.domain_name))
    error_message = "domain_name must be null or a lower-case DNS name."
  }
}

variable "hosted_zone_id" {
  description = "Route53 hosted zone id in which domain_name is created. Needs domain_name too."
  type        = string
  default     = null

  validation {
    condition     = var.hosted_zone_id == null || can(regex("^Z[A-Z0-9]+$", var.hosted_zone_id))
    error_message = "hosted_zone_id must be null or a Route53 zone id (Z...)."
  }
}

variable "silent_check_minutes" {
  description = "How often silent_check looks for devices that stopped reporting (issue 14), minutes. Keep it below the [alerts] silent_stale_after of rules.toml."
  type        = number
  default     = 5
  validation {
    condition     = var.silent_check_minutes >= 1 && var.silent_check_minutes <= 60 && floor(var.silent_check_minutes) == var.silent_check_minutes
    error_message = "silent_check_minutes must be a whole number between 1 and 60."
  }
}

# ---------------------------------------------------------------------------------------------
# Alarms
# ---------------------------------------------------------------------------------------------
variable "alarm_emails" {
  description = "E-mail addresses subscribed to the alarms SNS topic (each must confirm the subscription mail). Empty: subscribe to the topic some other way."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for e in var.alarm_emails : can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", e))])
    error_message = "alarm_emails must hold e-mail addresses (name@example.com)."
  }
}

variable "alarms_to_discord" {
  description = "Also post every alarm state change to the Discord channel (through anomaly_detector; needs discord_alerts_enabled)."
  type        = bool
  default     = true
}

# ---------------------------------------------------------------------------------------------
# Ingest keys and addresses (issue 16 item 4)
# ---------------------------------------------------------------------------------------------
variable "ingest_sites" {
  description = "Farm sites (a location or greenhouse group). Each gets its own usage plan on kinesis_api_gw (the ingest_throttle_* and ingest_quota_* limits apply per key of each site); its keys are made with `farmctl keys create|rotate SITE`, outside Terraform, so no key value is in the state."
  type        = list(string)
  default     = ["main"]

  validation {
    condition     = length(var.ingest_sites) >= 1 && length(var.ingest_sites) <= 100
    error_message = "ingest_sites must name between 1 and 100 sites, e.g. [\"north\", \"south\"]."
  }

  validation {
    condition     = alltrue([for s in var.ingest_sites : can(regex("^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$", s))])
    error_message = "Each site in ingest_sites must be 1-32 characters of a-z, 0-9 and '-', starting and ending with a letter or digit (e.g. \"north\", \"gh-block-2\")."
  }

  validation {
    condition     = length(distinct(var.ingest_sites)) == length(var.ingest_sites)
    error_message = "ingest_sites must not name a site twice."
  }
}

variable "shared_ingest_api_key" {
  description = "Also create the old single ingest key shared by every device, on the first site's usage plan. Its value is in the Terraform state and an SSM parameter. Only to move devices that still send it to per-site keys; then set it back to false."
  type        = bool
  default     = false
}

variable "ingest_allowed_source_cidrs" {
  description = "IPv4/IPv6 CIDRs the farm's devices send from (e.g. the site routers' public addresses). Non-empty: a resource policy on kinesis_api_gw denies every other source address, on top of the API key. Empty (default): no resource policy."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.ingest_allowed_source_cidrs : can(cidrhost(c, 0)) && can(regex("^[0-9a-fA-F:.]+/[0-9]{1,3}$", c))])
    error_message = "ingest_allowed_source_cidrs must hold IPv4 or IPv6 CIDR blocks such as 203.0.113.0/24 or 2001:db8::/48."
  }

  validation {
    condition     = alltrue([for c in var.ingest_allowed_source_cidrs : try(tonumber(split("/", c)[1]) > 0, true)])
    error_message = "ingest_allowed_source_cidrs must not hold a /0 block (0.0.0.0/0 or ::/0 lets every address in): leave the list empty for no address limit."
  }

  validation {
    condition     = length(var.ingest_allowed_source_cidrs) <= 50
    error_message = "ingest_allowed_source_cidrs holds at most 50 blocks (a REST API resource policy is limited to 8 KiB)."
  }
}

# ---------------------------------------------------------------------------------------------
# Synthetic readings
# ---------------------------------------------------------------------------------------------
variable "alert_on_synthetic" {
  description = "Let synthetic readings (sent with the simulator's ingest key, or marked by farmctl simulate/backfill) open incidents and post to Discord like real ones. Default false: their spikes are stored, marked synthetic, and nobody is paged."
  type        = bool
  default     = false
}
