variable "name" {
  description = "Name prefix (streams are <name>-audit-spi and <name>-audit-dict)"
  type        = string
}

variable "enable_gateway" {
  description = "Also create the inbound gateway's audit stream (<name>-audit-gateway, PIXGW_AUDIT_FIREHOSE_STREAM) and its Glue table (gateway), with the gateway's own columns"
  type        = bool
  default     = false
}

variable "bucket_name" {
  description = "Name of the audit bucket (globally unique)"
  type        = string
}

variable "glue_database_name" {
  description = "Glue database holding the spi and dict tables (letters, digits and underscores)"
  type        = string
  default     = "pix_proxy_audit"

  validation {
    condition     = can(regex("^[a-z0-9_]+$", var.glue_database_name))
    error_message = "Use lower-case letters, digits and underscores (Athena-friendly)."
  }
}

variable "first_audit_year" {
  description = "First year of partition projection (the year audit rows start)"
  type        = number
  default     = 2026
}

variable "retention_days" {
  description = "Days audit rows are kept before they expire. Confirm the period with compliance (BACEN rules and your own policy); 0 is not allowed"
  type        = number
  default     = 1825

  validation {
    condition     = var.retention_days >= 365
    error_message = "Keep audit rows at least one year."
  }
}

variable "object_lock_enabled" {
  description = "Turn on S3 Object Lock (WORM) with a default retention on the audit bucket, so no one (COMPLIANCE: not even the root user) can delete or overwrite an audit object before the retention ends. Irreversible. Opt-in: Firehose delivery to a locked bucket is not documented by AWS (see object_lock_firehose_delivery_verified)"
  type        = bool
  default     = false
}

variable "object_lock_firehose_delivery_verified" {
  description = "Set true only after checking, in a non-production account, that Amazon Data Firehose delivers to a bucket with Object Lock default retention (S3 requires Content-MD5 or an x-amz-checksum-* header on those PUTs; AWS does not document whether Firehose sends one). Required when object_lock_enabled"
  type        = bool
  default     = false
}

variable "object_lock_mode" {
  description = "Default retention mode: COMPLIANCE (no one can shorten or remove it, root included) or GOVERNANCE (principals with s3:BypassGovernanceRetention can)"
  type        = string
  default     = "COMPLIANCE"

  validation {
    condition     = contains(["COMPLIANCE", "GOVERNANCE"], var.object_lock_mode)
    error_message = "object_lock_mode is COMPLIANCE or GOVERNANCE."
  }
}

variable "object_lock_retention_days" {
  description = "Default retention of each audit object, in days. 1826 = five years (with a leap day): Lei 9.613/1998 art. 10 §2º requires the records of transactions to be kept for at least five years (from the end of the relationship or the conclusion of the transaction); BCB rules may require longer (confirm with compliance)"
  type        = number
  default     = 1826

  validation {
    condition     = var.object_lock_retention_days >= 1 && floor(var.object_lock_retention_days) == var.object_lock_retention_days
    error_message = "object_lock_retention_days is a whole number of days, at least 1."
  }
}

variable "transition_to_ia_days" {
  description = "Days before audit objects move to S3 Standard-IA"
  type        = number
  default     = 30
}

variable "transition_to_glacier_ir_days" {
  description = "Days before audit objects move to S3 Glacier Instant Retrieval (still queryable by Athena)"
  type        = number
  default     = 180
}

variable "noncurrent_version_retention_days" {
  description = "Days a replaced or deleted object version is kept (versioning protects against overwrite and deletion)"
  type        = number
  default     = 90
}

variable "athena_results_retention_days" {
  description = "Days Athena query results are kept"
  type        = number
  default     = 30
}

variable "athena_bytes_scanned_cutoff_per_query" {
  description = "Athena cancels queries scanning more than this many bytes (guards against queries without partition filters)"
  type        = number
  default     = 107374182400
}

variable "firehose_buffering_size_mib" {
  description = "Firehose buffer size in MiB before a Parquet file is written (at least 64 with format conversion)"
  type        = number
  default     = 128

  validation {
    condition     = var.firehose_buffering_size_mib >= 64 && var.firehose_buffering_size_mib <= 128
    error_message = "Parquet conversion needs 64 to 128 MiB."
  }
}

variable "firehose_buffering_interval_seconds" {
  description = "Longest time Firehose buffers before writing (60-900 s): how late rows can appear in Athena"
  type        = number
  default     = 300

  validation {
    condition     = var.firehose_buffering_interval_seconds >= 60 && var.firehose_buffering_interval_seconds <= 900
    error_message = "Firehose accepts 60 to 900 seconds."
  }
}

variable "log_retention_days" {
  description = "Retention of the Firehose delivery error log group"
  type        = number
  default     = 90
}

variable "kms_deletion_window_in_days" {
  description = "Waiting period before the audit KMS key is deleted"
  type        = number
  default     = 30
}

variable "tags" {
  description = "Tags added to every resource"
  type        = map(string)
  default     = {}
}
