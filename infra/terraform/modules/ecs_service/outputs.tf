output "service_name" {
  description = "ECS service name"
  value       = aws_ecs_service.this.name
}

output "execution_role_arn" {
  description = "Execution role (ECS agent: image pull, logs, container secrets) for the caller's task definition"
  value       = aws_iam_role.execution.arn
}

output "task_role_arn" {
  description = "Task role (the containers) for the caller's task definition, key policies and file system policies"
  value       = aws_iam_role.task.arn
}

output "autoscaling_resource_id" {
  description = "Application Auto Scaling resource id of the service (service/<cluster>/<service>), for further scaling policies"
  value       = aws_appautoscaling_target.this.resource_id
}

output "autoscaling_scalable_dimension" {
  description = "Scalable dimension of the service's autoscaling target (ecs:service:DesiredCount)"
  value       = aws_appautoscaling_target.this.scalable_dimension
}

output "autoscaling_service_namespace" {
  description = "Service namespace of the service's autoscaling target (ecs)"
  value       = aws_appautoscaling_target.this.service_namespace
}
