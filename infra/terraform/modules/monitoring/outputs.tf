output "alarm_arns" {
  description = "Alarm ARNs by signal"
  value = merge(
    {
      http_5xx_rate           = aws_cloudwatch_metric_alarm.http_5xx_rate.arn
      latency_p99             = aws_cloudwatch_metric_alarm.latency_p99.arn
      bacen_signature_invalid = aws_cloudwatch_metric_alarm.bacen_signature_invalid.arn
      outcome_unknown_rate    = aws_cloudwatch_metric_alarm.outcome_unknown_rate.arn
      audit_backlog_age       = aws_cloudwatch_metric_alarm.audit_backlog_age.arn
      healthy_targets         = aws_cloudwatch_metric_alarm.healthy_targets.arn
      unhealthy_targets       = aws_cloudwatch_metric_alarm.unhealthy_targets.arn
      audit_sink_failing      = aws_cloudwatch_metric_alarm.audit_sink_failing.arn
      audit_spool_usage       = aws_cloudwatch_metric_alarm.audit_spool_usage.arn
    },
    { for k, a in aws_cloudwatch_metric_alarm.firehose_freshness : "firehose_${k}_freshness" => a.arn },
    # Only the signer's own alarms exist (var.signer).
    { for a in aws_cloudwatch_metric_alarm.hsm_errors : "hsm_errors" => a.arn },
    { for a in aws_cloudwatch_metric_alarm.cloudhsm_unhealthy : "cloudhsm_unhealthy" => a.arn },
    { for a in aws_cloudwatch_metric_alarm.kms_throttles : "kms_throttles" => a.arn },
    { for a in aws_cloudwatch_metric_alarm.kms_errors : "kms_errors" => a.arn },
    { for a in aws_cloudwatch_metric_alarm.kms_rsa_quota_usage : "kms_rsa_quota_usage" => a.arn },
    { for a in aws_cloudwatch_metric_alarm.kms_sign_latency_p99 : "kms_sign_latency_p99" => a.arn },
  )
}

output "dashboard_name" {
  description = "CloudWatch dashboard"
  value       = aws_cloudwatch_dashboard.this.dashboard_name
}
