output "task_security_group_id" {
  description = "Security group for the pix-proxy tasks (egress: VPC endpoints, S3, RSFN; other modules add HSM, EFS and NLB rules)"
  value       = aws_security_group.tasks.id
}

output "endpoint_security_group_id" {
  description = "Security group of the interface endpoints"
  value       = aws_security_group.endpoints.id
}

output "interface_endpoint_ids" {
  description = "Interface endpoint IDs by service"
  value       = { for k, v in aws_vpc_endpoint.interface : k => v.id }
}

output "s3_gateway_endpoint_id" {
  description = "ID of the S3 gateway endpoint, or null when not created"
  value       = var.create_s3_gateway_endpoint ? aws_vpc_endpoint.s3[0].id : null
}

output "s3_prefix_list_id" {
  description = "Prefix list of the S3 gateway endpoint (egress rules to S3), or null when not created"
  value       = var.create_s3_gateway_endpoint ? aws_vpc_endpoint.s3[0].prefix_list_id : null
}

output "vpc_id" {
  description = "The VPC (passed through for the other modules)"
  value       = var.vpc_id
}

output "private_subnet_ids" {
  description = "The private subnets (passed through for the other modules)"
  value       = var.private_subnet_ids
}
