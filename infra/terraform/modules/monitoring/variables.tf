variable "service_name" {
  description = "ECS service name (service module output service_name); also the value of the service dimension of the scraped metrics"
  type        = string
}

variable "cluster_name" {
  description = "ECS cluster name (service module output cluster_name)"
  type        = string
}

variable "metric_namespace" {
  description = "Namespace of the proxy's metrics (service module output metric_namespace)"
  type        = string
}

variable "request_metric_names" {
  description = "Names of the metrics the proxy writes as EMF, in metric_namespace with dimension service = service_name (service module output request_metric_names): the request metrics, and kms_sign_latency (every KMS Sign call, with signer = \"kms\")"
  type = object({
    latency           = string
    requests          = string
    outcome_unknown   = string
    signature_invalid = string
    responses_5xx     = string
    kms_sign_latency  = string
  })
}

variable "outcome_unknown_rate_percent" {
  description = "Alarm when more than this percent of forwarding requests in a minute end OUTCOME UNKNOWN (pix-proxy-outcome: unknown: the request may have reached BACEN and no usable answer came back; each one is a message a bank core must reconcile before any new attempt, docs/outcomes.md). Evaluated only in minutes with at least thresholds.error_rate_min_requests requests"
  type        = number
  default     = 1

  validation {
    condition     = var.outcome_unknown_rate_percent >= 0 && var.outcome_unknown_rate_percent < 100
    error_message = "outcome_unknown_rate_percent is a percentage: at least 0 and below 100."
  }
}

variable "nlb_arn_suffix" {
  description = "NLB ARN suffix (service module output nlb_arn_suffix)"
  type        = string
}

variable "target_group_arn_suffix" {
  description = "Target group ARN suffix (service module output target_group_arn_suffix)"
  type        = string
}

variable "signer" {
  description = "Where the signing key lives (as in the service module): \"cloudhsm\" (HSM alarms) or \"kms\" (KMS alarms)"
  type        = string
  default     = "cloudhsm"

  validation {
    condition     = contains(["cloudhsm", "kms"], var.signer)
    error_message = "signer is \"cloudhsm\" or \"kms\"."
  }
}

variable "hsm_cluster_id" {
  description = "CloudHSM cluster ID (hsm module output cluster_id); null with signer = \"kms\""
  type        = string
  default     = null
}

variable "firehose_stream_names" {
  description = "Audit delivery stream names by system (data_lake module output firehose_stream_names)"
  type        = map(string)
}

variable "thresholds" {
  description = "Alarm thresholds"
  type = object({
    error_rate_percent         = optional(number, 1)
    error_rate_min_requests    = optional(number, 20)
    p99_latency_ms             = optional(number, 2000)
    hsm_errors_per_minute      = optional(number, 0)
    audit_backlog_seconds      = optional(number, 300)
    spool_usage_percent        = optional(number, 50)
    min_healthy_targets        = optional(number, 2)
    firehose_freshness_seconds = optional(number, 1200)
    certificate_warning_days   = optional(number, 30)
    certificate_critical_days  = optional(number, 7)
    kms_throttles_per_minute   = optional(number, 0)
    kms_errors_per_minute      = optional(number, 0)
    kms_quota_usage_percent    = optional(number, 70)
    kms_sign_p99_ms            = optional(number, 250)
  })
  default = {}
}

variable "alarm_actions" {
  description = "ARNs notified when an alarm fires (e.g. an SNS topic)"
  type        = list(string)
  default     = []
}

variable "ok_actions" {
  description = "ARNs notified when an alarm recovers"
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags added to every resource"
  type        = map(string)
  default     = {}
}
