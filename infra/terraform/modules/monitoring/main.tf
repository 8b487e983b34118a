# Alarms and a dashboard for pix-proxy. Signals come from three places:
# - the proxy's EMF records (src/plugins/emf.ts; dimension service): forwarding requests, latency, 5xx responses,
#   OUTCOME UNKNOWN answers and BACEN signature failures, because the CloudWatch agent drops Prometheus histograms and
#   an NLB (TLS passed through) sees no HTTP status or latency. No metric depends on the text of a log line;
# - the proxy's Prometheus metrics scraped by the CloudWatch agent sidecar (dimension service): HSM errors, audit
#   backlog and spool, ICOM in-flight/queue;
# - AWS metrics: NLB healthy and unhealthy targets, CloudHSM health, Firehose delivery freshness, ECS utilisation;
#   with signer = "kms", the account's KMS RSA request rate against its quota (AWS/Usage). The KMS Sign latency is
#   the proxy's own, from its EMF records (KMS publishes none per key).
#
# var.signer: the HSM alarms exist with "cloudhsm" only, the KMS alarms with "kms" only.

data "aws_region" "current" {}

locals {
  region = data.aws_region.current.name
  ns     = var.metric_namespace

  service_dimension = { service = var.service_name }
  m                 = var.request_metric_names

  common = {
    alarm_actions = var.alarm_actions
    ok_actions    = var.ok_actions
  }

  hsm = var.signer == "cloudhsm"
  kms = var.signer == "kms"
}

# ---------------------------------------------------------------------------------------------------------------
# The four signals the service is judged by
# ---------------------------------------------------------------------------------------------------------------

resource "aws_cloudwatch_metric_alarm" "http_5xx_rate" {
  alarm_name          = "${var.service_name}-5xx-rate"
  alarm_description   = "More than ${var.thresholds.error_rate_percent}% of responses to callers are 5xx (pix-proxy errors, BACEN unreachable, HSM down, spool full). Runbook: docs/operations.md#alarms"
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.thresholds.error_rate_percent
  evaluation_periods  = 5
  datapoints_to_alarm = 3
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.common.alarm_actions
  ok_actions          = local.common.ok_actions
  tags                = var.tags

  metric_query {
    id = "requests"

    metric {
      namespace   = local.ns
      metric_name = local.m.requests
      dimensions  = local.service_dimension
      period      = 60
      stat        = "Sum"
    }
  }

  metric_query {
    id = "errors"

    metric {
      namespace   = local.ns
      metric_name = local.m.responses_5xx
      dimensions  = local.service_dimension
      period      = 60
      stat        = "Sum"
    }
  }

  metric_query {
    id          = "rate"
    label       = "5xx responses (%)"
    expression  = "IF(requests >= ${var.thresholds.error_rate_min_requests}, 100 * FILL(errors, 0) / requests, 0)"
    return_data = true
  }
}

resource "aws_cloudwatch_metric_alarm" "latency_p99" {
  alarm_name          = "${var.service_name}-latency-p99"
  alarm_description   = "p99 of the time to answer callers is above ${var.thresholds.p99_latency_ms} ms (BACEN slow, ICOM queue, HSM saturated, CPU). Runbook: docs/operations.md#alarms"
  namespace           = local.ns
  metric_name         = local.m.latency
  dimensions          = local.service_dimension
  extended_statistic  = "p99"
  period              = 60
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.thresholds.p99_latency_ms
  evaluation_periods  = 5
  datapoints_to_alarm = 3
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.common.alarm_actions
  ok_actions          = local.common.ok_actions
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "bacen_signature_invalid" {
  alarm_name          = "${var.service_name}-bacen-signature-invalid"
  alarm_description   = "An answer from BACEN failed the signature check (pix-proxy-signature-code other than VALID; NOT_APPLICABLE, where BACEN signs nothing, is not a failure): rejected with 502 or, under the flag policy, relayed flagged. A wrong or rotated BACEN certificate bundle, a tampering path, or a BACEN fault. Runbook: docs/operations.md#alarms"
  namespace           = local.ns
  metric_name         = local.m.signature_invalid
  dimensions          = local.service_dimension
  statistic           = "Sum"
  period              = 60
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  evaluation_periods  = 1
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.common.alarm_actions
  ok_actions          = local.common.ok_actions
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "outcome_unknown_rate" {
  alarm_name          = "${var.service_name}-outcome-unknown-rate"
  alarm_description   = "More than ${var.outcome_unknown_rate_percent}% of forwarding requests ended OUTCOME UNKNOWN (sent to BACEN, no usable answer: timeouts, resets, an unreadable answer); bank cores must reconcile each before any new attempt. Runbook: docs/operations.md#alarms"
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.outcome_unknown_rate_percent
  evaluation_periods  = 5
  datapoints_to_alarm = 2
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.common.alarm_actions
  ok_actions          = local.common.ok_actions
  tags                = var.tags

  metric_query {
    id = "requests"

    metric {
      namespace   = local.ns
      metric_name = local.m.requests
      dimensions  = local.service_dimension
      period      = 60
      stat        = "Sum"
    }
  }

  metric_query {
    id = "unknown"

    metric {
      namespace   = local.ns
      metric_name = local.m.outcome_unknown
      dimensions  = local.service_dimension
      period      = 60
      stat        = "Sum"
    }
  }

  metric_query {
    id          = "rate"
    label       = "OUTCOME UNKNOWN (% of requests)"
    expression  = "IF(requests >= ${var.thresholds.error_rate_min_requests}, 100 * FILL(unknown, 0) / requests, 0)"
    return_data = true
  }
}

resource "aws_cloudwatch_metric_alarm" "hsm_errors" {
  count = local.hsm ? 1 : 0

  alarm_name          = "${var.service_name}-hsm-errors"
  alarm_description   = "Requests failed with PIXPROXY_ERR_HSM_* (session pool exhausted, HSM unreachable, login or key errors). Runbook: docs/operations.md#hsm-outage"
  namespace           = local.ns
  metric_name         = "pixproxy_errors_total"
  dimensions          = merge(local.service_dimension, { error_class = "hsm" })
  statistic           = "Sum"
  period              = 60
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.thresholds.hsm_errors_per_minute
  evaluation_periods  = 3
  datapoints_to_alarm = 2
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.common.alarm_actions
  ok_actions          = local.common.ok_actions
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "audit_backlog_age" {
  alarm_name          = "${var.service_name}-audit-backlog-age"
  alarm_description   = "The oldest audit row not yet accepted by Firehose is older than ${var.thresholds.audit_backlog_seconds} s (Firehose throttled or down, or no metrics at all). Runbook: docs/operations.md#firehose-outage"
  namespace           = local.ns
  metric_name         = "pixproxy_audit_oldest_unshipped_seconds"
  dimensions          = local.service_dimension
  statistic           = "Maximum"
  period              = 60
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.thresholds.audit_backlog_seconds
  evaluation_periods  = 3
  datapoints_to_alarm = 3
  # No data means the scrape is broken and the audit trail is unobserved: that is an alarm too.
  treat_missing_data = "breaching"
  alarm_actions      = local.common.alarm_actions
  ok_actions         = local.common.ok_actions
  tags               = var.tags
}

# ---------------------------------------------------------------------------------------------------------------
# The signing key in KMS (signer = "kms")
# ---------------------------------------------------------------------------------------------------------------

# KMS throttled a Sign: the request was answered NOT SENT (PIXPROXY_ERR_KMS_THROTTLED, src/kms/signer.ts), so a
# payment was refused. KMS counts requests per second against a quota shared by the account and Region
# ("Cryptographic operations (RSA) request rate", 500/s by default, adjustable:
# https://docs.aws.amazon.com/kms/latest/developerguide/requests-per-second.html, read 2026-12-05).
resource "aws_cloudwatch_metric_alarm" "kms_throttles" {
  count = local.kms ? 1 : 0

  alarm_name          = "${var.service_name}-kms-throttles"
  alarm_description   = "KMS throttled signatures (PIXPROXY_ERR_KMS_THROTTLED; the callers got NOT SENT). The account's RSA request quota is shared by every application in the Region. Runbook: docs/operations.md#choosing-between-cloudhsm-and-kms"
  namespace           = local.ns
  metric_name         = "pixproxy_errors_total"
  dimensions          = merge(local.service_dimension, { code = "PIXPROXY_ERR_KMS_THROTTLED" })
  statistic           = "Sum"
  period              = 60
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.thresholds.kms_throttles_per_minute
  evaluation_periods  = 3
  datapoints_to_alarm = 2
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.common.alarm_actions
  ok_actions          = local.common.ok_actions
  tags                = var.tags
}

# Every KMS failure of the signer (error_class = kms: throttled, unavailable or too slow, key disabled, access
# denied). A KMS that answers later than the signer's deadline ends here as PIXPROXY_ERR_KMS_UNAVAILABLE.
resource "aws_cloudwatch_metric_alarm" "kms_errors" {
  count = local.kms ? 1 : 0

  alarm_name          = "${var.service_name}-kms-errors"
  alarm_description   = "Signatures failed in KMS (PIXPROXY_ERR_KMS_*: throttled, unavailable or slower than the deadline, key disabled, access denied); every such request was answered NOT SENT. Runbook: docs/operations.md#choosing-between-cloudhsm-and-kms"
  namespace           = local.ns
  metric_name         = "pixproxy_errors_total"
  dimensions          = merge(local.service_dimension, { error_class = "kms" })
  statistic           = "Sum"
  period              = 60
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.thresholds.kms_errors_per_minute
  evaluation_periods  = 3
  datapoints_to_alarm = 2
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.common.alarm_actions
  ok_actions          = local.common.ok_actions
  tags                = var.tags
}

# The account's RSA cryptographic requests against their quota, before KMS starts throttling. KMS publishes its
# API usage in AWS/Usage (CallCount, per minute, dimensions Service, Type, Resource, Class:
# https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch-Usage-Metrics.html), and the KMS
# request quota page points at CloudWatch alarms on it. The Resource value of the RSA quota's usage metric,
# CryptographicOperationsRsa, is the one public Terraform and tools use for this alarm; confirm it in the account
# (aws cloudwatch list-metrics --namespace AWS/Usage --dimensions Name=Service,Value=KMS) before relying on it.
# SERVICE_QUOTA() returns the applied quota (per second), so a granted increase moves the threshold with it. The
# per-minute sum divided by 60 is an average: a burst above the quota inside one minute shows in kms_throttles.
# KMS publishes no per-key Sign latency to CloudWatch; latency is the proxy's (kms_sign_latency_p99 below).
resource "aws_cloudwatch_metric_alarm" "kms_rsa_quota_usage" {
  count = local.kms ? 1 : 0

  alarm_name          = "${var.service_name}-kms-rsa-quota-usage"
  alarm_description   = "The account's KMS RSA requests (Sign and every other RSA operation of any application in the Region) average above ${var.thresholds.kms_quota_usage_percent}% of the \"Cryptographic operations (RSA) request rate\" quota. Ask for an increase before KMS throttles (docs/operations.md#choosing-between-cloudhsm-and-kms)"
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.thresholds.kms_quota_usage_percent
  evaluation_periods  = 5
  datapoints_to_alarm = 3
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.common.alarm_actions
  ok_actions          = local.common.ok_actions
  tags                = var.tags

  metric_query {
    id = "calls"

    metric {
      namespace   = "AWS/Usage"
      metric_name = "CallCount"
      dimensions  = { Service = "KMS", Type = "API", Resource = "CryptographicOperationsRsa", Class = "None" }
      period      = 60
      stat        = "Sum"
    }
  }

  metric_query {
    id          = "usage"
    label       = "RSA requests per second (% of the quota)"
    expression  = "100 * (calls / 60) / SERVICE_QUOTA(calls)"
    return_data = true
  }
}

# KMS answering slowly, before it costs anything: the time of every Sign call (EMF KmsSignLatency, each call a
# sample, src/plugins/emf.ts), p99 across the tasks. A task keeps at most 63 Sign calls in flight (its KMS client's
# sockets less one, src/kms/client.ts), so at the default 150 signs/s per task a Sign slower than about 420 ms makes
# signatures wait, and those that wait past PIXPROXY_KMS_QUEUE_TIMEOUT_MS are refused NOT SENT
# (PIXPROXY_ERR_KMS_CONNECTIONS_BUSY, in kms_errors). The default threshold sits well above a healthy in-Region Sign
# (tens of ms) and below that knee.
resource "aws_cloudwatch_metric_alarm" "kms_sign_latency_p99" {
  count = local.kms ? 1 : 0

  alarm_name          = "${var.service_name}-kms-sign-latency-p99"
  alarm_description   = "p99 of the proxy's Sign calls to KMS is above ${var.thresholds.kms_sign_p99_ms} ms (KMS slow, or the path to it: the KMS VPC endpoint). Past about 420 ms a task's 63 calls in flight no longer carry 150 signs/s, and waiting signatures are refused NOT SENT. Runbook: docs/operations.md#alarms"
  namespace           = local.ns
  metric_name         = local.m.kms_sign_latency
  dimensions          = local.service_dimension
  extended_statistic  = "p99"
  period              = 60
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.thresholds.kms_sign_p99_ms
  evaluation_periods  = 5
  datapoints_to_alarm = 3
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.common.alarm_actions
  ok_actions          = local.common.ok_actions
  tags                = var.tags
}

# ---------------------------------------------------------------------------------------------------------------
# Supporting alarms
# ---------------------------------------------------------------------------------------------------------------

resource "aws_cloudwatch_metric_alarm" "cloudhsm_unhealthy" {
  count = local.hsm ? 1 : 0

  alarm_name          = "${var.service_name}-cloudhsm-unhealthy"
  alarm_description   = "CloudHSM reports an unhealthy HSM in the cluster (AWS replaces it; capacity is reduced meanwhile). Runbook: docs/operations.md#hsm-outage"
  namespace           = "AWS/CloudHSM"
  metric_name         = "HsmUnhealthy"
  dimensions          = { ClusterId = var.hsm_cluster_id }
  statistic           = "Maximum"
  period              = 60
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  evaluation_periods  = 2
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.common.alarm_actions
  ok_actions          = local.common.ok_actions
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "healthy_targets" {
  alarm_name          = "${var.service_name}-healthy-targets"
  alarm_description   = "Fewer than ${var.thresholds.min_healthy_targets} proxy tasks pass the NLB health check"
  namespace           = "AWS/NetworkELB"
  metric_name         = "HealthyHostCount"
  dimensions          = { LoadBalancer = var.nlb_arn_suffix, TargetGroup = var.target_group_arn_suffix }
  statistic           = "Minimum"
  period              = 60
  comparison_operator = "LessThanThreshold"
  threshold           = var.thresholds.min_healthy_targets
  evaluation_periods  = 3
  datapoints_to_alarm = 2
  treat_missing_data  = "breaching"
  alarm_actions       = local.common.alarm_actions
  ok_actions          = local.common.ok_actions
  tags                = var.tags
}

# Readiness: any target failing GET /readyz (HSM session or key lost, TLS key, audit writer, spool near full) for
# three minutes. healthy_targets above fires only when too few are left; this one names the unready task before
# capacity is short. Tasks starting up are in the "initial" state, not unhealthy, and draining ones are not counted.
resource "aws_cloudwatch_metric_alarm" "unhealthy_targets" {
  alarm_name          = "${var.service_name}-unhealthy-targets"
  alarm_description   = "At least one proxy task fails the NLB readiness check (GET /readyz on the operations listener); its /readyz body names the failing check. Runbook: docs/operations.md#alarms"
  namespace           = "AWS/NetworkELB"
  metric_name         = "UnHealthyHostCount"
  dimensions          = { LoadBalancer = var.nlb_arn_suffix, TargetGroup = var.target_group_arn_suffix }
  statistic           = "Maximum"
  period              = 60
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  evaluation_periods  = 3
  datapoints_to_alarm = 3
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.common.alarm_actions
  ok_actions          = local.common.ok_actions
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "audit_sink_failing" {
  alarm_name          = "${var.service_name}-audit-sink-failing"
  alarm_description   = "Firehose calls from the proxy keep failing (consecutive failures > 0 for 5 minutes); rows accumulate in the EFS spool. Runbook: docs/operations.md#firehose-outage"
  namespace           = local.ns
  metric_name         = "pixproxy_audit_sink_consecutive_failures"
  dimensions          = local.service_dimension
  statistic           = "Maximum"
  period              = 60
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  evaluation_periods  = 5
  datapoints_to_alarm = 5
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.common.alarm_actions
  ok_actions          = local.common.ok_actions
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "audit_spool_usage" {
  alarm_name          = "${var.service_name}-audit-spool-usage"
  alarm_description   = "A task's audit spool is above ${var.thresholds.spool_usage_percent}% of PIXPROXY_AUDIT_SPOOL_MAX_BYTES; at 100% the proxy refuses new transactions (503) rather than leave them unaudited. Runbook: docs/operations.md#firehose-outage"
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.thresholds.spool_usage_percent
  evaluation_periods  = 2
  datapoints_to_alarm = 2
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.common.alarm_actions
  ok_actions          = local.common.ok_actions
  tags                = var.tags

  metric_query {
    id = "bytes"

    metric {
      namespace   = local.ns
      metric_name = "pixproxy_audit_spool_bytes"
      dimensions  = local.service_dimension
      period      = 60
      stat        = "Maximum"
    }
  }

  metric_query {
    id = "max_bytes"

    metric {
      namespace   = local.ns
      metric_name = "pixproxy_audit_spool_max_bytes"
      dimensions  = local.service_dimension
      period      = 60
      stat        = "Minimum"
    }
  }

  metric_query {
    id          = "usage"
    label       = "Largest spool use (%)"
    expression  = "100 * bytes / max_bytes"
    return_data = true
  }
}

locals {
  # Our own certificates are one per role: any of them expiring counts (Minimum). BACEN's bundles keep the previous
  # certificate for a while after a rotation (docs/operations.md), so their oldest may well be expired: what matters
  # there is that a successor is present, i.e. the newest one (Maximum) is not about to expire.
  certificate_alarms = merge([
    for level, days in { warning = var.thresholds.certificate_warning_days, critical = var.thresholds.certificate_critical_days } : {
      for role, stat in { "signing" = "Minimum", "tls-client" = "Minimum", "bacen-signing" = "Maximum", "bacen-ca" = "Maximum" } :
      "${role}-${level}" => { role = role, stat = stat, days = days }
    }
  ]...)
}

resource "aws_cloudwatch_metric_alarm" "certificate_expiry" {
  for_each = local.certificate_alarms

  alarm_name          = "${var.service_name}-certificate-${each.key}"
  alarm_description   = "The ${each.value.stat == "Minimum" ? "" : "newest "}${each.value.role} certificate a task holds expires within ${each.value.days} days (pixproxy_certificate_expiry_seconds; its subject and serial are labels on /metrics). Runbook: docs/operations.md#rotate-certificates-keys-and-pins"
  namespace           = local.ns
  metric_name         = "pixproxy_certificate_expiry_seconds"
  dimensions          = merge(local.service_dimension, { role = each.value.role })
  statistic           = each.value.stat
  period              = 300
  comparison_operator = "LessThanThreshold"
  threshold           = each.value.days * 86400
  evaluation_periods  = 1
  # Missing scrapes already alarm (audit backlog age); a certificate does not expire between two of them.
  treat_missing_data = "notBreaching"
  alarm_actions      = local.common.alarm_actions
  ok_actions         = local.common.ok_actions
  tags               = var.tags
}

resource "aws_cloudwatch_metric_alarm" "firehose_freshness" {
  for_each = var.firehose_stream_names

  alarm_name          = "${var.service_name}-firehose-${each.key}-freshness"
  alarm_description   = "Firehose ${each.value} holds records older than ${var.thresholds.firehose_freshness_seconds} s (S3, KMS or Glue schema problem); see its error log group and the errors/ prefix"
  namespace           = "AWS/Firehose"
  metric_name         = "DeliveryToS3.DataFreshness"
  dimensions          = { DeliveryStreamName = each.value }
  statistic           = "Maximum"
  period              = 300
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.thresholds.firehose_freshness_seconds
  evaluation_periods  = 2
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.common.alarm_actions
  ok_actions          = local.common.ok_actions
  tags                = var.tags
}

# The signer's dashboard widget: an object indexed by the choice, because a conditional between the two metric lists
# (tuples of different shapes) has no common type.
locals {
  signer_widget_metrics = {
    cloudhsm = [
      [local.ns, "pixproxy_errors_total", "service", var.service_name, "error_class", "hsm", { stat = "Sum", label = "HSM errors" }],
      [local.ns, "pixproxy_hsm_sessions", "service", var.service_name, "state", "busy", { stat = "Maximum", label = "busy sessions (max task)" }],
      [local.ns, "pixproxy_hsm_queued", "service", var.service_name, { stat = "Maximum", label = "signs waiting (max task)" }],
      ["AWS/CloudHSM", "HsmUnhealthy", "ClusterId", var.hsm_cluster_id, { stat = "Maximum" }],
    ]
    kms = [
      [local.ns, "pixproxy_errors_total", "service", var.service_name, "error_class", "kms", { stat = "Sum", label = "KMS errors" }],
      [local.ns, "pixproxy_errors_total", "service", var.service_name, "code", "PIXPROXY_ERR_KMS_THROTTLED", { stat = "Sum", label = "KMS throttles" }],
      [local.ns, local.m.kms_sign_latency, "service", var.service_name, { stat = "p99", label = "KMS Sign p99 (ms)" }],
      ["AWS/Usage", "CallCount", "Service", "KMS", "Type", "API", "Resource", "CryptographicOperationsRsa", "Class", "None", { stat = "Sum", label = "account RSA requests per minute", yAxis = "right" }],
    ]
  }
}

# ---------------------------------------------------------------------------------------------------------------
# Dashboard
# ---------------------------------------------------------------------------------------------------------------

resource "aws_cloudwatch_dashboard" "this" {
  dashboard_name = var.service_name
  dashboard_body = jsonencode({
    widgets = [
      {
        type = "metric", x = 0, y = 0, width = 12, height = 6
        properties = {
          title  = "Forwarding requests, 5xx, OUTCOME UNKNOWN, BACEN signature failures (per minute)"
          region = local.region
          stat   = "Sum"
          period = 60
          metrics = [
            [local.ns, local.m.requests, "service", var.service_name],
            [local.ns, local.m.responses_5xx, "service", var.service_name],
            [local.ns, local.m.outcome_unknown, "service", var.service_name, { yAxis = "right" }],
            [local.ns, local.m.signature_invalid, "service", var.service_name, { yAxis = "right" }],
          ]
        }
      },
      {
        type = "metric", x = 12, y = 0, width = 12, height = 6
        properties = {
          title  = "Response time (ms)"
          region = local.region
          period = 60
          metrics = [
            [local.ns, local.m.latency, "service", var.service_name, { stat = "p50", label = "p50" }],
            [local.ns, local.m.latency, "service", var.service_name, { stat = "p99", label = "p99" }],
          ]
          annotations = { horizontal = [{ label = "p99 alarm", value = var.thresholds.p99_latency_ms }] }
        }
      },
      {
        type = "metric", x = 0, y = 6, width = 8, height = 6
        properties = {
          title  = local.hsm ? "HSM" : "KMS signing"
          region = local.region
          period = 60

          metrics = local.signer_widget_metrics[var.signer]
        }
      },
      {
        type = "metric", x = 8, y = 6, width = 8, height = 6
        properties = {
          title  = "Audit: backlog age (s) and spool"
          region = local.region
          period = 60
          metrics = [
            [local.ns, "pixproxy_audit_oldest_unshipped_seconds", "service", var.service_name, { stat = "Maximum", label = "oldest unshipped (s)" }],
            [local.ns, "pixproxy_audit_spool_rows", "service", var.service_name, "state", "pending", { stat = "Maximum", label = "pending rows (max task)", yAxis = "right" }],
            [local.ns, "pixproxy_audit_sink_consecutive_failures", "service", var.service_name, { stat = "Maximum", label = "consecutive sink failures", yAxis = "right" }],
          ]
          annotations = { horizontal = [{ label = "backlog alarm", value = var.thresholds.audit_backlog_seconds }] }
        }
      },
      {
        type = "metric", x = 16, y = 6, width = 8, height = 6
        properties = {
          title  = "ICOM (SPI) slots per task"
          region = local.region
          period = 60
          metrics = [
            [local.ns, "pixproxy_spi_in_flight", "service", var.service_name, { stat = "Maximum", label = "in flight (max task)" }],
            [local.ns, "pixproxy_spi_queued", "service", var.service_name, { stat = "Maximum", label = "queued (max task)" }],
            [local.ns, "pixproxy_spi_readers_in_flight", "service", var.service_name, { stat = "Maximum", label = "stream readers in flight (max task)" }],
            [local.ns, "pixproxy_spi_readers_queued", "service", var.service_name, { stat = "Maximum", label = "stream readers queued (max task)" }],
          ]
        }
      },
      {
        type = "metric", x = 0, y = 12, width = 12, height = 6
        properties = {
          title  = "Tasks: CPU, memory, running, healthy targets"
          region = local.region
          period = 60
          metrics = [
            ["AWS/ECS", "CPUUtilization", "ClusterName", var.cluster_name, "ServiceName", var.service_name, { stat = "Average" }],
            ["AWS/ECS", "MemoryUtilization", "ClusterName", var.cluster_name, "ServiceName", var.service_name, { stat = "Average" }],
            ["ECS/ContainerInsights", "RunningTaskCount", "ClusterName", var.cluster_name, "ServiceName", var.service_name, { stat = "Average", yAxis = "right" }],
            ["AWS/NetworkELB", "HealthyHostCount", "LoadBalancer", var.nlb_arn_suffix, "TargetGroup", var.target_group_arn_suffix, { stat = "Minimum", yAxis = "right" }],
            ["AWS/NetworkELB", "UnHealthyHostCount", "LoadBalancer", var.nlb_arn_suffix, "TargetGroup", var.target_group_arn_suffix, { stat = "Maximum", yAxis = "right" }],
          ]
        }
      },
      {
        type = "metric", x = 12, y = 12, width = 12, height = 6
        properties = {
          title   = "Firehose delivery freshness (s)"
          region  = local.region
          period  = 300
          stat    = "Maximum"
          metrics = [for k, v in var.firehose_stream_names : ["AWS/Firehose", "DeliveryToS3.DataFreshness", "DeliveryStreamName", v, { label = k }]]
        }
      },
      {
        type = "alarm", x = 0, y = 18, width = 24, height = 4
        properties = {
          title = "Alarms"
          alarms = concat(
            [
              aws_cloudwatch_metric_alarm.http_5xx_rate.arn,
              aws_cloudwatch_metric_alarm.latency_p99.arn,
              aws_cloudwatch_metric_alarm.bacen_signature_invalid.arn,
              aws_cloudwatch_metric_alarm.outcome_unknown_rate.arn,
              aws_cloudwatch_metric_alarm.audit_backlog_age.arn,
              aws_cloudwatch_metric_alarm.healthy_targets.arn,
              aws_cloudwatch_metric_alarm.unhealthy_targets.arn,
              aws_cloudwatch_metric_alarm.audit_sink_failing.arn,
              aws_cloudwatch_metric_alarm.audit_spool_usage.arn,
            ],
            [for a in aws_cloudwatch_metric_alarm.firehose_freshness : a.arn],
            aws_cloudwatch_metric_alarm.hsm_errors[*].arn,
            aws_cloudwatch_metric_alarm.cloudhsm_unhealthy[*].arn,
            aws_cloudwatch_metric_alarm.kms_throttles[*].arn,
            aws_cloudwatch_metric_alarm.kms_errors[*].arn,
            aws_cloudwatch_metric_alarm.kms_rsa_quota_usage[*].arn,
            aws_cloudwatch_metric_alarm.kms_sign_latency_p99[*].arn,
          )
        }
      },
    ]
  })
}
