variable "name" {
  description = "Deployment name (resources are <name>-gateway, <name>-gw; at most 25 characters for the load balancer names)"
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,24}$", var.name))
    error_message = "name is 2-25 lower-case letters, digits or hyphens, starting with a letter."
  }
}

variable "vpc_id" {
  description = "VPC of the gateway"
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets for the tasks and the execute-api endpoint (one per Availability Zone)"
  type        = list(string)

  validation {
    condition     = length(var.private_subnet_ids) >= 2
    error_message = "Run across at least two Availability Zones."
  }
}

variable "nlb_subnet_ids" {
  description = "Subnets of the NLB (public subnets when internal = false); null uses private_subnet_ids"
  type        = list(string)
  default     = null
}

variable "internal" {
  description = "Whether the NLB is internal (clients reach it over private links) or internet-facing"
  type        = bool
  default     = true
}

variable "client_cidrs" {
  description = "CIDRs of the Open Finance institutions allowed to reach the NLB listener"
  type        = list(string)

  validation {
    condition     = length(var.client_cidrs) > 0 && !contains(var.client_cidrs, "0.0.0.0/0")
    error_message = "List the clients' CIDRs; 0.0.0.0/0 is not allowed."
  }
}

variable "listener_port" {
  description = "NLB listener port (TCP, TLS passed through to the gateway)"
  type        = number
  default     = 443
}

variable "container_port" {
  description = "Port of the gateway's mutual-TLS listener (PIXGW_LISTEN_PORT)"
  type        = number
  default     = 8443
}

variable "ops_port" {
  description = "Port of the gateway's operations listener (PIXGW_OPS_LISTEN_PORT, plain HTTP: /healthz, /readyz, /metrics), the NLB's health check; reachable from the NLB's security group only"
  type        = number
  default     = 8081
}

variable "cluster_arn" {
  description = "ECS cluster (service module output cluster_arn)"
  type        = string
}

variable "cluster_name" {
  description = "ECS cluster name (service module output cluster_name), for the autoscaling resource id"
  type        = string
}

variable "image" {
  description = "pix-proxy image (the same as the proxy's; the gateway is its \"gateway\" command), pinned to a version tag or digest"
  type        = string

  validation {
    condition     = can(regex("(:[A-Za-z0-9_][A-Za-z0-9_.-]*|@sha256:[0-9a-f]{64})$", var.image)) && !can(regex(":latest$", var.image))
    error_message = "Pin the image: a version tag or @sha256:digest, never :latest or no tag."
  }
}

variable "ecr_repository_arns" {
  description = "ECR repositories the execution role may pull from"
  type        = list(string)
}

variable "task_cpu" {
  description = "Task CPU units (1024 = 1 vCPU)"
  type        = number
  default     = 1024
}

variable "task_memory" {
  description = "Task memory in MiB"
  type        = number
  default     = 2048
}

variable "autoscaling" {
  description = "Task count bounds and the CPU target of target tracking"
  type = object({
    min_capacity               = number
    max_capacity               = number
    cpu_target_percent         = optional(number, 60)
    scale_in_cooldown_seconds  = optional(number, 300)
    scale_out_cooldown_seconds = optional(number, 60)
  })
  default = {
    min_capacity = 2
    max_capacity = 6
  }

  validation {
    condition     = var.autoscaling.min_capacity >= 2 && var.autoscaling.max_capacity >= var.autoscaling.min_capacity
    error_message = "Run at least two tasks (one per AZ) and max_capacity >= min_capacity."
  }
}

variable "stop_timeout_seconds" {
  description = "ECS stopTimeout: SIGKILL this long after SIGTERM (the gateway drains within PIXGW_SHUTDOWN_TIMEOUT_MS, 25 s by default); at most 120 (Fargate)"
  type        = number
  default     = 60
}

variable "deregistration_delay_seconds" {
  description = "How long the NLB keeps a deregistering task out of new connections before ECS sends SIGTERM"
  type        = number
  default     = 30
}

variable "health_check_grace_period_seconds" {
  description = "Time after a task starts before failed NLB health checks count (HSM login, truststore and CRLs from S3)"
  type        = number
  default     = 120
}

variable "server_cert_pem" {
  description = "PEM server certificate the gateway presents (chain allowed, leaf first); its key is server_key_label in the HSM"
  type        = string

  validation {
    condition     = can(regex("^\\s*-----BEGIN ", var.server_cert_pem))
    error_message = "server_cert_pem is PEM text."
  }
}

variable "server_key_label" {
  description = "CKA_LABEL of the server key in the HSM (PIXGW_SERVER_KEY_LABEL)"
  type        = string
}

variable "hsm_token_label" {
  description = "PKCS#11 token label (PIXPROXY_HSM_TOKEN_LABEL), as for the proxy"
  type        = string
  default     = "hsm1"
}

variable "hsm_ip_addresses" {
  description = "ENI IPs of the HSMs (hsm module output), passed as CLOUDHSM_HSM_IPS"
  type        = list(string)
}

variable "hsm_security_group_id" {
  description = "Security group of the CloudHSM cluster (hsm module output security_group_id); this module adds the gateway's client rules"
  type        = string
}

variable "hsm_pin_secret_arn" {
  description = "Secrets Manager secret holding the HSM PIN (config module), PIXPROXY_HSM_PIN_SECRET_ID"
  type        = string
}

variable "cloudhsm_customer_ca_parameter_arn" {
  description = "SSM parameter injected as CLOUDHSM_CUSTOMER_CA (config module)"
  type        = string
}

variable "infra_ssm_path" {
  description = "SSM path for platform values (config module output infra_ssm_path): the server certificate goes there"
  type        = string
}

variable "kms_key_arn" {
  description = "KMS key of the truststore bucket and of the PIN secret (config module output kms_key_arn)"
  type        = string
}

variable "efs_kms_key_arn" {
  description = "KMS key for the gateway's audit spool file system (the spool holds audit rows until shipped); null uses the AWS managed key"
  type        = string
  default     = null
}

variable "truststore_bucket_name" {
  description = "Name of the bucket holding the truststore bundle (truststore/) and the CRLs (crls/) (globally unique)"
  type        = string
}

variable "truststore_object_name" {
  description = "Object name of the truststore bundle under truststore/ (PEM: ICP-Brasil roots and intermediates)"
  type        = string
  default     = "ca-bundle.pem"
}

variable "crl_object_names" {
  description = "Object names of the CRLs under crls/, one per CA of the truststore (PIXGW_CRLS)"
  type        = list(string)

  validation {
    condition     = length(var.crl_object_names) > 0
    error_message = "List at least one CRL: revocation is checked for every client chain."
  }
}

variable "routes" {
  description = "PIXGW_ROUTES: the allowlist of \"METHOD /path\" patterns forwarded to the backend, a trailing * matching any rest of the path (docs/gateway.md). The default is every Open Finance Brasil API (all under /open-banking/<family>/v<n>/) with the methods their specifications use; narrow it to the families the institution serves (e.g. \"POST /open-banking/payments/v4/*\"). Anything else is refused before it reaches the backend."
  type        = list(string)
  default = [
    "GET /open-banking/*",
    "POST /open-banking/*",
    "PUT /open-banking/*",
    "PATCH /open-banking/*",
    "DELETE /open-banking/*",
  ]

  validation {
    condition     = length(var.routes) > 0 && alltrue([for r in var.routes : can(regex("^(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS) /[^\\s?#*,]*\\*?$", r))])
    error_message = "routes: at least one \"METHOD /path\" or \"METHOD /prefix/*\" (no commas, no query)."
  }
}

variable "backend_url" {
  description = "PIXGW_BACKEND_URL: the private API Gateway's origin, https://<api-id>.execute-api.<region>.amazonaws.com (resolved to the execute-api endpoint by private DNS)"
  type        = string

  validation {
    condition     = can(regex("^https://[^/?#]+/?$", var.backend_url))
    error_message = "backend_url is an https origin."
  }
}

variable "endpoint_security_group_id" {
  description = "Security group of the VPC interface endpoints (network module output endpoint_security_group_id)"
  type        = string
}

variable "s3_prefix_list_id" {
  description = "Prefix list of the S3 gateway endpoint (network module output s3_prefix_list_id)"
  type        = string
}

variable "audit_stream_name" {
  description = "The gateway's Firehose delivery stream (data_lake output gateway_firehose_stream_name), PIXGW_AUDIT_FIREHOSE_STREAM"
  type        = string
}

variable "audit_stream_arn" {
  description = "ARN of the gateway's delivery stream (data_lake output gateway_firehose_stream_arn)"
  type        = string
}

variable "log_retention_days" {
  description = "Retention of the gateway's log group"
  type        = number
  default     = 90
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
