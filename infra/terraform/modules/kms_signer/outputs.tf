output "key_arn" {
  description = "ARN of the signing key (CSR and certificate issuance, CloudTrail)"
  value       = aws_kms_key.signing.arn
}

output "key_id" {
  description = "Key id of the signing key"
  value       = aws_kms_key.signing.key_id
}

output "alias_arn" {
  description = "ARN of the alias: PIXPROXY_SIGNING_KMS_KEY_ID (the proxy resolves it to the key ARN at start-up and signs by the key ARN)"
  value       = aws_kms_alias.signing.arn
}

output "alias_name" {
  description = "Alias name (alias/<name>-signing)"
  value       = aws_kms_alias.signing.name
}
