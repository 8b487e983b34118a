variable "name" {
  description = "Service name: ECS cluster, service, task family, NLB and target group (lower-case letters, digits, hyphens; at most 28 characters for the load balancer names)"
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,27}$", var.name))
    error_message = "name is 2-28 lower-case letters, digits or hyphens, starting with a letter."
  }
}

variable "vpc_id" {
  description = "VPC of the service"
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets for the tasks and the EFS mount targets (one per Availability Zone)"
  type        = list(string)

  validation {
    condition     = length(var.private_subnet_ids) >= 2
    error_message = "Run across at least two Availability Zones."
  }
}

variable "nlb_subnet_ids" {
  description = "Subnets of the internal NLB; null uses private_subnet_ids"
  type        = list(string)
  default     = null
}

variable "task_security_group_id" {
  description = "Security group of the tasks (network module); this module adds the NLB and EFS rules to it"
  type        = string
}

variable "caller_cidrs" {
  description = "CIDRs of the bank core systems allowed to reach the NLB listener"
  type        = list(string)

  validation {
    condition     = length(var.caller_cidrs) > 0 && !contains(var.caller_cidrs, "0.0.0.0/0")
    error_message = "List the callers' CIDRs; 0.0.0.0/0 is not allowed."
  }
}

variable "listener_port" {
  description = "NLB listener port (TCP, TLS passed through to the proxy)"
  type        = number
  default     = 443
}

variable "container_port" {
  description = "Port the proxy listens on with inbound TLS (PIXPROXY_LISTEN_PORT)"
  type        = number
  default     = 8443
}

variable "ops_port" {
  description = "Port of the proxy's operations listener (PIXPROXY_OPS_LISTEN_PORT, plain HTTP on the task's loopback: /healthz, /readyz, /metrics) for the container health check and the metrics sidecar; not opened in any security group or load balancer. Must differ from container_port"
  type        = number
  default     = 9464

  validation {
    condition     = var.ops_port >= 1 && var.ops_port <= 65535 && floor(var.ops_port) == var.ops_port
    error_message = "ops_port is a TCP port, 1 to 65535."
  }
}

variable "image" {
  description = "pix-proxy image (ECR URI with a version tag or a digest), built with the CloudHSM client (docs/operations.md)"
  type        = string

  validation {
    # A moving tag changes what a task runs without a deployment: a scaled-out task could run other code.
    condition     = can(regex("(:[A-Za-z0-9_][A-Za-z0-9_.-]*|@sha256:[0-9a-f]{64})$", var.image)) && !can(regex(":latest$", var.image))
    error_message = "Pin the image: a version tag or @sha256:digest, never :latest or no tag."
  }
}

variable "cloudwatch_agent_image" {
  description = "CloudWatch agent image in your ECR (mirror or pull-through cache of public.ecr.aws/cloudwatch-agent/cloudwatch-agent; the tasks have no route to the internet), pinned to a version tag or digest"
  type        = string

  validation {
    condition     = can(regex("(:[A-Za-z0-9_][A-Za-z0-9_.-]*|@sha256:[0-9a-f]{64})$", var.cloudwatch_agent_image)) && !can(regex(":latest$", var.cloudwatch_agent_image))
    error_message = "Pin the CloudWatch agent image: a version tag or @sha256:digest, never :latest or no tag."
  }
}

variable "ecr_repository_arns" {
  description = "ECR repositories the execution role may pull from: the proxy image and the CloudWatch agent image"
  type        = list(string)
}

variable "task_cpu" {
  description = "Task CPU units (1024 = 1 vCPU), shared by the proxy and its sidecars"
  type        = number
  default     = 1024
}

variable "task_memory" {
  description = "Task memory in MiB"
  type        = number
  default     = 2048
}

variable "autoscaling" {
  description = "Task count bounds and target-tracking targets (CPU percent; requests per task per minute from the proxy's EMF Requests metric)"
  type = object({
    min_capacity                 = number
    max_capacity                 = number
    cpu_target_percent           = optional(number, 60)
    requests_per_task_per_minute = optional(number, 6000)
    scale_in_cooldown_seconds    = optional(number, 300)
    scale_out_cooldown_seconds   = optional(number, 60)
  })
  default = {
    min_capacity = 2
    max_capacity = 3
  }

  validation {
    condition     = var.autoscaling.min_capacity >= 2 && var.autoscaling.max_capacity >= var.autoscaling.min_capacity
    error_message = "Run at least two tasks (one per AZ) and max_capacity >= min_capacity."
  }
}

variable "spi_participant_max_in_flight" {
  description = "BACEN's limit of concurrent ICOM requests per participant (6); each task gets floor(limit / max_capacity) as PIXPROXY_SPI_MAX_IN_FLIGHT"
  type        = number
  default     = 6
}

variable "kms_sign_rate_share" {
  description = "With signer = \"kms\": Sign calls per second this service may use of the account's KMS quota for RSA operations in the Region (500/s by default, shared by everything in the account that signs or verifies with RSA keys). Each task gets floor(share / max_capacity) as PIXPROXY_KMS_MAX_SIGNS_PER_SEC"
  type        = number
  default     = 450

  validation {
    condition     = var.kms_sign_rate_share >= 1
    error_message = "kms_sign_rate_share must be at least 1 Sign call per second."
  }
}

variable "shutdown_timeout_ms" {
  description = "PIXPROXY_SHUTDOWN_TIMEOUT_MS: drain deadline after SIGTERM"
  type        = number
  default     = 25000
}

variable "stop_timeout_seconds" {
  description = "ECS stopTimeout of the proxy container: SIGKILL this long after SIGTERM; at least the shutdown timeout + 5 s, at most 120 (Fargate)"
  type        = number
  default     = 60

  validation {
    condition     = var.stop_timeout_seconds >= 2 && var.stop_timeout_seconds <= 120
    error_message = "Fargate accepts a stopTimeout of 2 to 120 seconds."
  }
}

variable "deregistration_delay_seconds" {
  description = "How long the NLB keeps a deregistering task out of new connections before ECS sends SIGTERM"
  type        = number
  default     = 30

  validation {
    condition     = var.deregistration_delay_seconds >= 5 && var.deregistration_delay_seconds <= 120
    error_message = "Use 5 to 120 seconds: long enough for callers to stop opening connections, short enough for deployments."
  }
}

variable "health_check_grace_period_seconds" {
  description = "Time after a task starts before failed NLB health checks count (settings from SSM, HSM login, first BACEN handshakes)"
  type        = number
  default     = 120
}

variable "config_ssm_path" {
  description = "PIXPROXY_CONFIG_SSM_PATH (config module output ssm_path)"
  type        = string
}

variable "config_ssm_path_arn" {
  description = "ARN of the settings path (config module output ssm_path_arn)"
  type        = string
}

variable "config_kms_key_arn" {
  description = "KMS key of the SecureString settings and the PIN secret (config module)"
  type        = string
}

variable "signer" {
  description = "Where the signing key lives: \"cloudhsm\" (HSM inputs below) or \"kms\" (signing_kms_key_id, tls_key_secret_arn)"
  type        = string
  default     = "cloudhsm"

  validation {
    condition     = contains(["cloudhsm", "kms"], var.signer)
    error_message = "signer is \"cloudhsm\" or \"kms\"."
  }
}

variable "hsm_pin_secret_arn" {
  description = "Secrets Manager secret holding the HSM PIN (config module); signer = \"cloudhsm\" only"
  type        = string
  default     = null
}

variable "cloudhsm_customer_ca_parameter_arn" {
  description = "SSM parameter injected as CLOUDHSM_CUSTOMER_CA (config module); signer = \"cloudhsm\" only"
  type        = string
  default     = null
}

variable "signing_kms_key_id" {
  description = "PIXPROXY_SIGNING_KMS_KEY_ID: the signing key's alias ARN or key ARN (kms_signer module output alias_arn); signer = \"kms\" only"
  type        = string
  default     = null
}

variable "tls_key_secret_arn" {
  description = "Secrets Manager secret of the mTLS client key (config module output tls_key_secret_arn), which the task role may read; signer = \"kms\" only"
  type        = string
  default     = null
}

variable "infra_ssm_path" {
  description = "SSM path for the CloudWatch agent's configuration (config module output infra_ssm_path; not under config_ssm_path)"
  type        = string
}

variable "hsm_ip_addresses" {
  description = "ENI IPs of the HSMs (hsm module output), passed as CLOUDHSM_HSM_IPS; empty with signer = \"kms\""
  type        = list(string)
  default     = []
}

variable "audit_stream_names" {
  description = "Firehose delivery stream names (data_lake module output firehose_stream_names)"
  type = object({
    spi  = string
    dict = string
  })
}

variable "audit_stream_arns" {
  description = "Firehose delivery stream ARNs by system (data_lake module output firehose_stream_arns)"
  type        = map(string)
}

variable "efs_kms_key_arn" {
  description = "KMS key for the audit spool file system (the spool holds audit rows until shipped); null uses the AWS managed key"
  type        = string
  default     = null
}

variable "metric_namespace" {
  description = "CloudWatch namespace of the scraped and log-derived metrics; null = PixProxy/<name>"
  type        = string
  default     = null
}

variable "scrape_interval_seconds" {
  description = "How often the CloudWatch agent scrapes /metrics"
  type        = number
  default     = 30
}

variable "log_retention_days" {
  description = "Retention of the proxy and sidecar log groups"
  type        = number
  default     = 90
}

variable "metrics_log_retention_days" {
  description = "Retention of the EMF log group the scraped metrics are written to (the metrics themselves follow CloudWatch retention)"
  type        = number
  default     = 7
}

variable "deletion_protection" {
  description = "Deletion protection on the NLB"
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags added to every resource"
  type        = map(string)
  default     = {}
}
