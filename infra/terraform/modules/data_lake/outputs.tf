output "bucket_name" {
  description = "Audit bucket"
  value       = aws_s3_bucket.audit.bucket
}

output "bucket_arn" {
  description = "ARN of the audit bucket"
  value       = aws_s3_bucket.audit.arn
}

output "kms_key_arn" {
  description = "KMS key of the audit bucket, the Firehose streams and Athena results"
  value       = aws_kms_key.audit.arn
}

output "firehose_stream_names" {
  description = "Delivery stream name by system (spi, dict): PIXPROXY_AUDIT_FIREHOSE_SPI_STREAM / _DICT_STREAM"
  value       = { for k, s in aws_kinesis_firehose_delivery_stream.audit : k => s.name if contains(local.systems, k) }
}

output "firehose_stream_arns" {
  description = "Delivery stream ARN by system, for firehose:PutRecordBatch"
  value       = { for k, s in aws_kinesis_firehose_delivery_stream.audit : k => s.arn if contains(local.systems, k) }
}

output "gateway_firehose_stream_name" {
  description = "The gateway's audit delivery stream (PIXGW_AUDIT_FIREHOSE_STREAM); null unless enable_gateway"
  value       = try(aws_kinesis_firehose_delivery_stream.audit["gateway"].name, null)
}

output "gateway_firehose_stream_arn" {
  description = "ARN of the gateway's audit delivery stream; null unless enable_gateway"
  value       = try(aws_kinesis_firehose_delivery_stream.audit["gateway"].arn, null)
}

output "glue_database_name" {
  description = "Glue database of the audit tables"
  value       = aws_glue_catalog_database.audit.name
}

output "glue_table_names" {
  description = "Audit table by system"
  value       = { for k, t in aws_glue_catalog_table.audit : k => t.name }
}

output "athena_workgroup_name" {
  description = "Athena workgroup for audit queries"
  value       = aws_athena_workgroup.audit.name
}

output "query_policy_arn" {
  description = "IAM policy granting read-only audit queries in the workgroup; attach it to auditor roles"
  value       = aws_iam_policy.query.arn
}

output "firehose_log_group_name" {
  description = "Log group of Firehose delivery errors"
  value       = aws_cloudwatch_log_group.firehose.name
}
