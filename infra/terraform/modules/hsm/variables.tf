variable "name" {
  description = "Name of the cluster (Name tag)"
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets for the HSMs, each in a different Availability Zone; one HSM is created in each"
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 2 && length(distinct(var.subnet_ids)) == length(var.subnet_ids)
    error_message = "Give at least two distinct subnets (in different Availability Zones): one HSM per AZ."
  }
}

variable "hsm_type" {
  description = "HSM instance type (hsm2m.medium; AWS has deprecated hsm1.medium)"
  type        = string
  default     = "hsm2m.medium"
}

variable "mode" {
  description = "Cluster mode for hsm2m.medium: FIPS or NON_FIPS (fixed at creation)"
  type        = string
  default     = "FIPS"

  validation {
    condition     = contains(["FIPS", "NON_FIPS"], var.mode)
    error_message = "mode is FIPS or NON_FIPS."
  }
}

variable "source_backup_identifier" {
  description = "CloudHSM backup to restore the cluster from (disaster recovery); null creates an empty cluster"
  type        = string
  default     = null
}

variable "client_security_group_ids" {
  description = "Security groups of the CloudHSM clients (the pix-proxy tasks); they get TCP 2223-2225 to the cluster and the cluster accepts it from them"
  type        = list(string)
}

variable "tags" {
  description = "Tags added to every resource"
  type        = map(string)
  default     = {}
}
