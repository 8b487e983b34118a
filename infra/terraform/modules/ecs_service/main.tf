# One way an ECS service runs here: the Fargate service behind an NLB target group, its task-count autoscaling
# (target tracking on CPU), and the two roles its tasks run with. The proxy (service module) and the gateway
# (gateway module) both call it; what differs between them (containers, volumes, the task role's permissions, the
# load balancer and the security groups) stays in the calling module.
#
# - The task definition stays with the caller: its containers, volumes and preconditions are the caller's own, and
#   it needs this module's role ARNs (execution_role_arn, task_role_arn), this module its ARN (task_definition_arn).
# - Both roles trust ecs-tasks.amazonaws.com from this account's ECS only (aws:SourceAccount, aws:SourceArn): the
#   confused-deputy guard AWS recommends for task roles.
# - The execution role (the ECS agent starting a task) may pull from the given ECR repositories, write to the given
#   log groups and read the given SSM parameters (container secrets): nothing else, no decryption.
# - The task role's permissions are the caller's policy document (task_policy_json), attached inline.
# - Deployments never drop below the running count (100 %/200 %), with the circuit breaker rolling back a deployment
#   whose tasks do not become healthy; Application Auto Scaling owns desired_count after creation (ignore_changes).

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  region     = data.aws_region.current.name
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
}

# ---------------------------------------------------------------------------------------------------------------
# IAM: execution role (ECS agent: image, logs, container secrets) and task role (the containers)
# ---------------------------------------------------------------------------------------------------------------

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }

    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:${local.partition}:ecs:${local.region}:${local.account_id}:*"]
    }
  }
}

resource "aws_iam_role" "execution" {
  name_prefix        = "${var.role_name_prefix}-exec-"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "execution" {
  # GetAuthorizationToken has no resource-level permissions: AWS requires "*".
  statement {
    sid       = "EcrToken"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }

  statement {
    sid       = "PullImages"
    actions   = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
    resources = var.ecr_repository_arns
  }

  statement {
    sid       = "ContainerLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = [for arn in var.log_group_arns : "${arn}:log-stream:*"]
  }

  statement {
    sid       = "ContainerSecrets"
    actions   = ["ssm:GetParameters"]
    resources = var.container_secret_arns
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = var.execution_policy_name
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

resource "aws_iam_role" "task" {
  name_prefix        = "${var.role_name_prefix}-task-"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy" "task" {
  name   = var.task_policy_name
  role   = aws_iam_role.task.id
  policy = var.task_policy_json
}

# ---------------------------------------------------------------------------------------------------------------
# Service and autoscaling
# ---------------------------------------------------------------------------------------------------------------

resource "aws_ecs_service" "this" {
  name                               = var.name
  cluster                            = var.cluster_arn
  task_definition                    = var.task_definition_arn
  desired_count                      = var.autoscaling.min_capacity
  launch_type                        = "FARGATE"
  platform_version                   = "LATEST"
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  health_check_grace_period_seconds  = var.health_check_grace_period_seconds
  enable_ecs_managed_tags            = true
  propagate_tags                     = "SERVICE"
  enable_execute_command             = false
  tags                               = var.tags

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = var.security_group_ids
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = var.target_group_arn
    container_name   = var.container_name
    container_port   = var.container_port
  }

  # Application Auto Scaling owns the task count after creation.
  lifecycle {
    ignore_changes = [desired_count]
  }

  # A dependency on the variable itself: whatever the caller's expression for it references (its listener, its EFS
  # mount targets) exists before the service does.
  depends_on = [aws_iam_role_policy.task, var.service_depends_on]
}

resource "aws_appautoscaling_target" "this" {
  service_namespace  = "ecs"
  scalable_dimension = "ecs:service:DesiredCount"
  resource_id        = "service/${var.cluster_name}/${aws_ecs_service.this.name}"
  min_capacity       = var.autoscaling.min_capacity
  max_capacity       = var.autoscaling.max_capacity
}

resource "aws_appautoscaling_policy" "cpu" {
  name               = "${var.name}-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.this.service_namespace
  scalable_dimension = aws_appautoscaling_target.this.scalable_dimension
  resource_id        = aws_appautoscaling_target.this.resource_id

  target_tracking_scaling_policy_configuration {
    target_value       = var.autoscaling.cpu_target_percent
    scale_in_cooldown  = var.autoscaling.scale_in_cooldown_seconds
    scale_out_cooldown = var.autoscaling.scale_out_cooldown_seconds

    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
  }
}
