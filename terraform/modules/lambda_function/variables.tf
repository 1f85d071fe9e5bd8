variable "function_name" {
  description = "Lambda function name; also names its role, log group and dead-letter queue."
  type        = string
  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,64}$", var.function_name))
    error_message = "function_name must be 1-64 letters, digits, hyphens or underscores."
  }
}

variable "description" {
  description = "What the function does (shown in the Lambda console)."
  type        = string
}

variable "zip_path" {
  description = "Path of the function's zip (built by `farmctl deploy`)."
  type        = string
}

variable "zip_hash" {
  description = "filebase64sha256 of the zip, or null when it is not built (the precondition then says what to run)."
  type        = string
  nullable    = true
}

variable "zip_missing_message" {
  description = "Error shown when the zip is not built."
  type        = string
}

variable "layers" {
  description = "Layer ARNs (the AWS SDK for pandas layer brings pyarrow)."
  type        = list(string)
  default     = []
}

variable "memory_mb" {
  description = "Memory of the function, MB."
  type        = number
  default     = 256
  validation {
    condition     = var.memory_mb >= 128 && var.memory_mb <= 10240
    error_message = "memory_mb must be between 128 and 10240."
  }
}

variable "timeout_seconds" {
  description = "Timeout of one invocation, seconds."
  type        = number
  default     = 60
  validation {
    condition     = var.timeout_seconds >= 1 && var.timeout_seconds <= 900
    error_message = "timeout_seconds must be between 1 and 900."
  }
}

variable "environment" {
  description = "Environment variables (names only of secrets: values are read at run time)."
  type        = map(string)
  default     = {}
}

variable "kms_key_arn" {
  description = "KMS key encrypting the environment, the log group and the dead-letter queue."
  type        = string
}

variable "log_retention_days" {
  description = "CloudWatch Logs retention of the function's log group, days."
  type        = number
}

variable "assume_role_policy_json" {
  description = "Trust policy of the function's role (lambda.amazonaws.com)."
  type        = string
}

variable "policy_json" {
  description = "What the function may do besides writing its logs and its dead-letter queue (a policy document's JSON)."
  type        = string
}

variable "maximum_retry_attempts" {
  description = "Retries of a failed asynchronous invocation (the same event) before it goes to the dead-letter queue."
  type        = number
  default     = 2
  validation {
    condition     = var.maximum_retry_attempts >= 0 && var.maximum_retry_attempts <= 2
    error_message = "maximum_retry_attempts must be 0, 1 or 2."
  }
}

variable "maximum_event_age_seconds" {
  description = "Oldest asynchronous event still retried, seconds."
  type        = number
  default     = 3600
  validation {
    condition     = var.maximum_event_age_seconds >= 60 && var.maximum_event_age_seconds <= 21600
    error_message = "maximum_event_age_seconds must be between 60 and 21600."
  }
}
