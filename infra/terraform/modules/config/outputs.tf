output "ssm_path" {
  description = "Path of the proxy's settings (PIXPROXY_CONFIG_SSM_PATH)"
  value       = var.ssm_path
}

output "ssm_path_arn" {
  description = "ARN of the settings path, for ssm:GetParametersByPath"
  value       = local.ssm_path_arn
}

output "ssm_parameter_arns" {
  description = "ARNs of the parameters under the settings path (for ssm:GetParametersByPath on the path and its parameters)"
  value       = concat([for p in aws_ssm_parameter.setting : p.arn], [aws_ssm_parameter.inbound_tls_key.arn], aws_ssm_parameter.hsm_pin_secret_id[*].arn, aws_ssm_parameter.tls_key_secret_id[*].arn)
}

output "setting_parameter_names" {
  description = "Parameter name by setting name"
  value = merge(
    { for k, p in aws_ssm_parameter.setting : k => p.name },
    { PIXPROXY_INBOUND_TLS_KEY_FILE = aws_ssm_parameter.inbound_tls_key.name },
    { for p in aws_ssm_parameter.hsm_pin_secret_id : "PIXPROXY_HSM_PIN_SECRET_ID" => p.name },
    { for p in aws_ssm_parameter.tls_key_secret_id : "PIXPROXY_TLS_KEY_SECRET_ID" => p.name },
  )
}

output "kms_key_arn" {
  description = "KMS key of the SecureStrings and the PIN secret (the task and execution roles decrypt with it)"
  value       = aws_kms_key.config.arn
}

output "hsm_pin_secret_arn" {
  description = "Secrets Manager secret holding the HSM PIN (set its value with put-secret-value); null with signer = \"kms\""
  value       = one(aws_secretsmanager_secret.hsm_pin[*].arn)
}

output "tls_key_secret_arn" {
  description = "Secrets Manager secret of the mTLS client key and certificate (JSON {\"key\", \"certificate\"}, set with put-secret-value); null with signer = \"cloudhsm\""
  value       = one(aws_secretsmanager_secret.tls_key[*].arn)
}

output "inbound_tls_key_parameter_name" {
  description = "SecureString to write the inbound TLS private key into"
  value       = aws_ssm_parameter.inbound_tls_key.name
}

output "cloudhsm_customer_ca_parameter_arn" {
  description = "Parameter injected as CLOUDHSM_CUSTOMER_CA; null with signer = \"kms\""
  value       = one(aws_ssm_parameter.cloudhsm_customer_ca[*].arn)
}

output "infra_ssm_path" {
  description = "Path of the platform parameters"
  value       = var.infra_ssm_path
}
