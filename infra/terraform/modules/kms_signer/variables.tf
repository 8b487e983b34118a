variable "name" {
  description = "Name prefix (the alias is alias/<name>-signing)"
  type        = string
}

variable "task_role_arn" {
  description = "ECS task role of the proxy (service module output task_role_arn): the only principal the key policy lets sign"
  type        = string
}

variable "deletion_window_in_days" {
  description = "Waiting period (7 to 30 days) before a key scheduled for deletion is deleted; a deleted signing key cannot be recovered and its certificate becomes useless"
  type        = number
  default     = 30

  validation {
    condition     = var.deletion_window_in_days >= 7 && var.deletion_window_in_days <= 30 && floor(var.deletion_window_in_days) == var.deletion_window_in_days
    error_message = "deletion_window_in_days is a whole number from 7 to 30 (what KMS accepts)."
  }
}

variable "tags" {
  description = "Tags added to every resource"
  type        = map(string)
  default     = {}
}
