output "service_name" {
  description = "ECS service of the gateway"
  value       = module.ecs_service.service_name
}

output "nlb_dns_name" {
  description = "DNS name of the gateway's NLB; point the name in the server certificate at it"
  value       = aws_lb.this.dns_name
}

output "nlb_arn_suffix" {
  description = "NLB ARN suffix (CloudWatch dimension LoadBalancer)"
  value       = aws_lb.this.arn_suffix
}

output "target_group_arn_suffix" {
  description = "Target group ARN suffix (CloudWatch dimension TargetGroup)"
  value       = aws_lb_target_group.this.arn_suffix
}

output "task_role_arn" {
  description = "Task role of the gateway"
  value       = module.ecs_service.task_role_arn
}

output "security_group_id" {
  description = "Security group of the gateway tasks"
  value       = aws_security_group.tasks.id
}

output "truststore_bucket_name" {
  description = "Bucket of the truststore bundle (truststore/) and the CRLs (crls/)"
  value       = aws_s3_bucket.truststore.bucket
}

output "execute_api_endpoint_id" {
  description = "The execute-api VPC endpoint the private API must accept (aws:SourceVpce)"
  value       = aws_vpc_endpoint.execute_api.id
}

output "private_api_resource_policy_json" {
  description = "Resource policy to attach to the private API: invoke only through execute_api_endpoint_id"
  value       = data.aws_iam_policy_document.private_api.json
}
