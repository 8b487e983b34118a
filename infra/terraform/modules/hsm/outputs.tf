output "cluster_id" {
  description = "CloudHSM cluster ID"
  value       = aws_cloudhsm_v2_cluster.this.cluster_id
}

output "cluster_state" {
  description = "Cluster state (UNINITIALIZED until the manual initialisation in docs/operations.md)"
  value       = aws_cloudhsm_v2_cluster.this.cluster_state
}

output "security_group_id" {
  description = "Security group AWS created for the cluster"
  value       = aws_cloudhsm_v2_cluster.this.security_group_id
}

output "hsm_ip_addresses" {
  description = "ENI IP addresses of the HSMs, for CLOUDHSM_HSM_IPS (configure-pkcs11 -a)"
  value       = [for h in aws_cloudhsm_v2_hsm.this : h.ip_address]
}

output "hsm_availability_zones" {
  description = "Availability Zone of each HSM"
  value       = [for s in data.aws_subnet.hsm : s.availability_zone]
}

output "cluster_csr" {
  description = "Cluster CSR to sign with your issuing CA during initialisation (available while UNINITIALIZED)"
  value       = try(aws_cloudhsm_v2_cluster.this.cluster_certificates[0].cluster_csr, null)
}
