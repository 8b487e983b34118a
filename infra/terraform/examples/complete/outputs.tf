output "nlb_dns_name" {
  description = "Point the inbound certificate's DNS name at this"
  value       = module.service.nlb_dns_name
}

output "hsm_cluster_id" {
  description = "CloudHSM cluster to initialise (signer = \"cloudhsm\"; null with \"kms\")"
  value       = one(module.hsm[*].cluster_id)
}

output "hsm_cluster_csr" {
  description = "CSR to sign with your issuing CA during initialisation (signer = \"cloudhsm\")"
  value       = one(module.hsm[*].cluster_csr)
}

output "hsm_pin_secret_arn" {
  description = "Set the PIN here (put-secret-value), as <CU user>:<password> (signer = \"cloudhsm\")"
  value       = module.config.hsm_pin_secret_arn
}

output "signing_kms_key_alias_arn" {
  description = "The signing key in KMS (signer = \"kms\"): pix-proxy csr --key <this> for the signing certificate"
  value       = one(module.kms_signer[*].alias_arn)
}

output "tls_key_secret_arn" {
  description = "Write the mTLS client key and certificate here (signer = \"kms\"): put-secret-value with {\"key\": PEM, \"certificate\": PEM}"
  value       = module.config.tls_key_secret_arn
}

output "inbound_tls_key_parameter_name" {
  description = "Write the inbound TLS private key here (SecureString)"
  value       = module.config.inbound_tls_key_parameter_name
}

output "athena_workgroup" {
  description = "Workgroup for audit queries"
  value       = module.data_lake.athena_workgroup_name
}

output "audit_query_policy_arn" {
  description = "Attach to auditor roles"
  value       = module.data_lake.query_policy_arn
}

output "dashboard_name" {
  description = "CloudWatch dashboard"
  value       = module.monitoring.dashboard_name
}

output "gateway_nlb_dns_name" {
  description = "enable_gateway: point the gateway's server certificate name at this"
  value       = one(module.gateway[*].nlb_dns_name)
}

output "gateway_truststore_bucket_name" {
  description = "enable_gateway: upload truststore/ca-bundle.pem and the CRLs under crls/ here"
  value       = one(module.gateway[*].truststore_bucket_name)
}

output "private_api_resource_policy_json" {
  description = "enable_gateway: attach to the private API so it accepts calls through the gateway's execute-api endpoint only"
  value       = one(module.gateway[*].private_api_resource_policy_json)
}
