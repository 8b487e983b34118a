variable "name" {
  description = "ECS service name; also the prefix of the CPU scaling policy's name (<name>-cpu)"
  type        = string
}

variable "role_name_prefix" {
  description = "Prefix of the two roles' names: <prefix>-exec-… (execution role) and <prefix>-task-… (task role)"
  type        = string
}

variable "cluster_arn" {
  description = "ECS cluster the service runs in"
  type        = string
}

variable "cluster_name" {
  description = "Name of that cluster, for the autoscaling resource id (service/<cluster>/<service>)"
  type        = string
}

variable "task_definition_arn" {
  description = "The caller's task definition (it runs with execution_role_arn and task_role_arn)"
  type        = string
}

variable "container_name" {
  description = "Container of the task definition the target group sends traffic to"
  type        = string
}

variable "container_port" {
  description = "That container's port registered in the target group"
  type        = number
}

variable "target_group_arn" {
  description = "NLB target group (target_type = ip) the tasks register in"
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets the tasks run in (no public IP)"
  type        = list(string)
}

variable "security_group_ids" {
  description = "Security groups of the tasks"
  type        = list(string)
}

variable "health_check_grace_period_seconds" {
  description = "Time after a task starts before failed NLB health checks count"
  type        = number
}

variable "autoscaling" {
  description = "Task count bounds (desired_count starts at min_capacity) and the CPU target tracking; the caller applies its defaults. Other attributes of the caller's object are ignored"
  type = object({
    min_capacity               = number
    max_capacity               = number
    cpu_target_percent         = number
    scale_in_cooldown_seconds  = number
    scale_out_cooldown_seconds = number
  })
}

variable "ecr_repository_arns" {
  description = "ECR repositories the execution role may pull the task's images from"
  type        = list(string)
}

variable "log_group_arns" {
  description = "Log groups the execution role may write the containers' logs to (awslogs driver)"
  type        = list(string)
}

variable "container_secret_arns" {
  description = "SSM parameters the execution role may read as container secrets (String parameters: no decryption is granted)"
  type        = list(string)
}

variable "execution_policy_name" {
  description = "Name of the execution role's inline policy"
  type        = string
}

variable "task_policy_name" {
  description = "Name of the task role's inline policy"
  type        = string
}

variable "task_policy_json" {
  description = "The task role's permissions: the caller's aws_iam_policy_document JSON, attached inline"
  type        = string
}

variable "service_depends_on" {
  description = "Values whose resources must exist before the service is created (the caller's listener, EFS mount targets); only the references count, not the values"
  type        = any
  default     = []
}

variable "tags" {
  description = "Tags added to every resource"
  type        = map(string)
  default     = {}
}
