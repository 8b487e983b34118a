output "alarm_arns" {
  description = "Alarm ARNs by signal"
  value = merge(
    {
      http_5xx_rate           = aws_cloudwatch_metric_alarm.http_5xx_rate.arn
      latency_p99             = aws_cloudwatch_metric_alarm.latency_p99.arn
      bacen_signature_invalid = aws_cloudwatch_metric_alarm.bacen_signature_invalid.arn
      outcome_unknown_rate    = aws_cloudwatch_metric_alarm.outcome_unknown_rate.arn
      hsm_errors              = aws_cloudwatch_metric_alarm.hsm_errors.arn
      audit_backlog_age       = aws_cloudwatch_metric_alarm.audit_backlog_age.arn
      cloudhsm_unhealthy      = aws_cloudwatch_metric_alarm.cloudhsm_unhealthy.arn
      healthy_targets         = aws_cloudwatch_metric_alarm.healthy_targets.arn
      unhealthy_targets       = aws_cloudwatch_metric_alarm.unhealthy_targets.arn
      audit_sink_failing      = aws_cloudwatch_metric_alarm.audit_sink_failing.arn
      audit_spool_usage       = aws_cloudwatch_metric_alarm.audit_spool_usage.arn
    },
    { for k, a in aws_cloudwatch_metric_alarm.firehose_freshness : "firehose_${k}_freshness" => a.arn },
  )
}

output "dashboard_name" {
  description = "CloudWatch dashboard"
  value       = aws_cloudwatch_dashboard.this.dashboard_name
}
