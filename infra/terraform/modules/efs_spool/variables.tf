variable "name" {
  description = "Name of the spool: the file system's creation token and the Name tag of the file system and its access point (e.g. <service>-audit-spool). A new name replaces the file system, and the rows it holds are lost"
  type        = string
}

variable "vpc_id" {
  description = "VPC of the tasks and of the mount targets' security group"
  type        = string
}

variable "subnet_ids" {
  description = "Subnets of the mount targets: the tasks' private subnets, one per Availability Zone"
  type        = list(string)
}

variable "kms_key_arn" {
  description = "KMS key of the file system (the spool holds audit rows until shipped); null uses the AWS managed key"
  type        = string
  default     = null
}

variable "client_security_group_id" {
  description = "Security group of the tasks that mount the spool: the only one NFS may come from; this module adds its egress rule to the mount targets"
  type        = string
}

variable "client_role_arn" {
  description = "Task role the file system policy lets mount and write through the access point (ecs_service output task_role_arn)"
  type        = string
}

variable "access_point_path" {
  description = "Root directory of the access point in the file system (the spool root every task mounts), e.g. /audit-spool"
  type        = string
}

variable "uid" {
  description = "The container's uid: the access point's POSIX user and the owner of its root directory"
  type        = number
}

variable "gid" {
  description = "The container's gid: the access point's POSIX group and the group of its root directory"
  type        = number
}

variable "security_group" {
  description = "The mount targets' security group: its name_prefix, Name tag (name) and description, and the descriptions of the NFS ingress rule (from the tasks) and egress rule (on the tasks' group). A new name_prefix or description replaces the group"
  type = object({
    name_prefix         = string
    name                = string
    description         = string
    ingress_description = string
    egress_description  = string
  })
}

variable "tags" {
  description = "Tags added to every resource"
  type        = map(string)
  default     = {}
}
