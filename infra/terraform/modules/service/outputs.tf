output "cluster_name" {
  description = "ECS cluster"
  value       = aws_ecs_cluster.this.name
}

output "cluster_arn" {
  description = "ECS cluster ARN (the gateway module runs its service in the same cluster)"
  value       = aws_ecs_cluster.this.arn
}

output "service_name" {
  description = "ECS service"
  value       = module.ecs_service.service_name
}

output "task_definition_arn" {
  description = "Current task definition"
  value       = aws_ecs_task_definition.this.arn
}

output "task_role_arn" {
  description = "Task role of the proxy and its sidecars"
  value       = module.ecs_service.task_role_arn
}

output "execution_role_arn" {
  description = "Execution role (image pulls, logs, container secrets)"
  value       = module.ecs_service.execution_role_arn
}

output "nlb_arn" {
  description = "Internal NLB"
  value       = aws_lb.this.arn
}

output "nlb_arn_suffix" {
  description = "NLB ARN suffix (CloudWatch dimension LoadBalancer)"
  value       = aws_lb.this.arn_suffix
}

output "nlb_dns_name" {
  description = "DNS name of the NLB; point the name in the inbound certificate at it"
  value       = aws_lb.this.dns_name
}

output "target_group_arn_suffix" {
  description = "Target group ARN suffix (CloudWatch dimension TargetGroup)"
  value       = aws_lb_target_group.this.arn_suffix
}

output "efs_file_system_id" {
  description = "File system of the audit spool"
  value       = module.audit_spool.file_system_id
}

output "log_group_name" {
  description = "Log group of the proxy's JSON logs"
  value       = aws_cloudwatch_log_group.proxy.name
}

output "metric_namespace" {
  description = "CloudWatch namespace of the proxy's metrics"
  value       = local.metric_namespace
}

output "request_metric_names" {
  description = "Metrics the proxy writes as EMF (namespace metric_namespace, dimension service = service_name): per request latency (ms), requests, outcome_unknown, signature_invalid, responses_5xx; with signer = \"kms\" kms_sign_latency (ms, every Sign call)"
  value       = local.emf_metrics
}

output "spi_max_in_flight_per_task" {
  description = "PIXPROXY_SPI_MAX_IN_FLIGHT given to each task"
  value       = local.spi_max_in_flight_per_task
}

output "kms_signs_per_sec_per_task" {
  description = "PIXPROXY_KMS_MAX_SIGNS_PER_SEC given to each task with signer = \"kms\""
  value       = local.kms_signs_per_sec_per_task
}
