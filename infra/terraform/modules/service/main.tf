# pix-proxy on ECS Fargate behind an internal Network Load Balancer.
#
# - TLS passes through the NLB (TCP listener): the proxy terminates it, so inbound mTLS (client certificates and the
#   fingerprint allowlist) stays end to end between the bank's core systems and the proxy.
# - The target group's health check is HTTP GET /readyz on the operations listener (PIXPROXY_OPS_LISTEN_PORT =
#   var.ops_port): a task that lost its HSM session or key, its TLS key, its audit writer, or whose spool is near
#   full leaves rotation. BACEN's reachability is not part of readiness (docs/operations.md "What readiness means"),
#   so one BACEN outage does not mark every target unhealthy; and when every target is unhealthy the NLB fails open.
#   The callers' port cannot be the check: it requires a client certificate, which an NLB check does not present.
# - The operations listener is plain HTTP serving only GET /healthz, /readyz and /metrics: nothing that signs or
#   forwards. It listens on the task's address so the NLB can ask it, and only the NLB's security group may reach
#   that port; the container health check (GET /healthz) and the metrics sidecar ask it on loopback.
# - The audit spool lives on EFS (efs_spool module, as the gateway's) so rows written before a task is replaced are
#   shipped by the next one: every task mounts the same access point and claims its own slot directory
#   (PIXPROXY_AUDIT_SPOOL_SHARED).
# - Application Auto Scaling owns desired_count (ignore_changes), scaling on CPU and on requests per task.
# - A CloudWatch agent sidecar scrapes /metrics from the operations listener into CloudWatch (EMF): no TLS and no
#   client certificate, so no scrape identity to issue, store, allow-list and rotate.
# - Request metrics (count, latency, 5xx, OUTCOME UNKNOWN, BACEN signature failures) come from the proxy itself: one
#   CloudWatch embedded metric format record per forwarding request on stdout (PIXPROXY_METRICS_EMF, src/plugins/emf.ts),
#   which the awslogs driver carries to the proxy's log group and CloudWatch Logs turns into metrics. No metric filter
#   depends on the text of a log line.
# - var.signer: "cloudhsm" (both keys in the HSM: the CloudHSM client configured by the image's entrypoint, the PIN
#   from Secrets Manager) or "kms" (the signing key in AWS KMS, PIXPROXY_SIGNING_KMS_KEY_ID in the environment; the
#   mTLS client key in Secrets Manager, PIXPROXY_TLS_KEY_SECRET_ID in SSM from the config module): then the task has
#   no HSM setting, no CloudHSM client configuration and no PIN; the key policy (kms_signer module) is what lets the
#   task role sign.

data "aws_region" "current" {}

locals {
  region = data.aws_region.current.name

  metric_namespace = coalesce(var.metric_namespace, "PixProxy/${var.name}")

  proxy_container = "pix-proxy"
  agent_container = "cloudwatch-agent"

  # The operations listener: on every address of the task (the NLB's health check comes to the task's IP; only the
  # NLB's security group may reach the port), and the agent's scrape target on loopback (the container health check,
  # docker/healthcheck.mjs, asks 127.0.0.1 too).
  ops_listen_host = "0.0.0.0"
  ops_host        = "127.0.0.1"

  # Mount points inside the proxy container. The image runs as uid/gid 10001 with a read-only root file system and
  # writes only to the audit spool (EFS here), /tmp (the PKCS#11 engine's 0600 PIN file) and /run/cloudhsm (the
  # CloudHSM client configuration the entrypoint writes; /opt/cloudhsm/etc links there). Fargate has no tmpfs, so
  # the last two are task-local bind mounts; ECS creates them root-owned unless the image declares the same paths
  # as VOLUMEs owned by 10001 (then it copies them with that owner).
  spool_dir = "/var/spool/pix-proxy"
  scratch_volumes = {
    tmp      = "/tmp"
    cloudhsm = "/run/cloudhsm"
  }

  # SIGTERM drains in-flight requests and ships audit rows within PIXPROXY_SHUTDOWN_TIMEOUT_MS; ECS sends SIGKILL
  # stop_timeout_seconds after SIGTERM (Fargate allows at most 120 s).
  shutdown_timeout_ms = var.shutdown_timeout_ms

  # BACEN allows 6 requests in flight to ICOM per participant, not per task: with up to max_capacity tasks each may
  # use floor(limit / max_capacity) slots, so the participant never exceeds the limit (BACEN answers 429 beyond it).
  spi_max_in_flight_per_task = floor(var.spi_participant_max_in_flight / var.autoscaling.max_capacity)

  # KMS's quota for RSA signing (500/s by default) is per account and Region, not per task: with up to max_capacity
  # tasks each may make floor(share / max_capacity) Sign calls a second (the proxy's own rate limit, retries
  # included), so the service never exceeds its share however far it scales. A share below max_capacity would give
  # 0, which the proxy refuses at start (its minimum is 1).
  kms_signs_per_sec_per_task = floor(var.kms_sign_rate_share / var.autoscaling.max_capacity)

  # The proxy's environment. Only settings that follow from this infrastructure are here; everything deployment
  # specific (ISPB, URLs, labels, certificates, the PIN secret id) is in SSM under PIXPROXY_CONFIG_SSM_PATH and the
  # environment wins over SSM for the names below. test/infra/terraform.test.ts checks every PIXPROXY_* name against
  # CONFIG_KEYS in src/config.ts and allows no other names than CLOUDHSM_HSM_IPS (and NODE_OPTIONS). The container
  # gets these plus local.signer_settings[var.signer].environment.
  proxy_environment = {
    PIXPROXY_CONFIG_SSM_PATH            = var.config_ssm_path
    PIXPROXY_LISTEN_HOST                = "0.0.0.0"
    PIXPROXY_LISTEN_PORT                = tostring(var.container_port)
    PIXPROXY_OPS_LISTEN_HOST            = local.ops_listen_host
    PIXPROXY_OPS_LISTEN_PORT            = tostring(var.ops_port)
    PIXPROXY_AUDIT_SINK                 = "firehose"
    PIXPROXY_AUDIT_SPOOL_DIR            = local.spool_dir
    PIXPROXY_AUDIT_SPOOL_SHARED         = "true"
    PIXPROXY_AUDIT_FIREHOSE_SPI_STREAM  = var.audit_stream_names.spi
    PIXPROXY_AUDIT_FIREHOSE_DICT_STREAM = var.audit_stream_names.dict
    PIXPROXY_SHUTDOWN_TIMEOUT_MS        = tostring(local.shutdown_timeout_ms)
    PIXPROXY_SPI_MAX_IN_FLIGHT          = tostring(local.spi_max_in_flight_per_task)
    PIXPROXY_METRICS_EMF                = "true"
    PIXPROXY_METRICS_EMF_NAMESPACE      = local.metric_namespace
    PIXPROXY_METRICS_EMF_SERVICE        = var.name
  }

  # What each signer adds: environment, and values ECS reads from SSM when it starts the container (execution role).
  signer_settings = {
    cloudhsm = {
      environment = {
        PIXPROXY_HSM_MODULE_PATH = "/opt/cloudhsm/lib/libcloudhsm_pkcs11.so"
        # Consumed by the image's entrypoint (configure-pkcs11 -a), not by the proxy.
        CLOUDHSM_HSM_IPS = join(",", var.hsm_ip_addresses)
      }
      secrets = {
        CLOUDHSM_CUSTOMER_CA = var.cloudhsm_customer_ca_parameter_arn
      }
    }
    kms = {
      environment = {
        # The alias ARN: the proxy resolves it with DescribeKey at start and signs by the key ARN it resolved.
        PIXPROXY_SIGNING_KMS_KEY_ID    = var.signing_kms_key_id
        PIXPROXY_KMS_MAX_SIGNS_PER_SEC = tostring(local.kms_signs_per_sec_per_task)
      }
      secrets = {}
    }
  }

  container_environment = merge(local.proxy_environment, local.signer_settings[var.signer].environment)
  proxy_secrets         = local.signer_settings[var.signer].secrets

  # Secrets Manager secrets the proxy reads itself: the HSM PIN, or the mTLS client key.
  proxy_secret_arns = var.signer == "cloudhsm" ? [var.hsm_pin_secret_arn] : [var.tls_key_secret_arn]

  agent_secrets = {
    CW_CONFIG_CONTENT         = aws_ssm_parameter.cloudwatch_agent_config.arn
    PROMETHEUS_CONFIG_CONTENT = aws_ssm_parameter.prometheus_scrape_config.arn
  }

  awslogs = {
    logDriver = "awslogs"
    options = {
      awslogs-group         = aws_cloudwatch_log_group.proxy.name
      awslogs-region        = local.region
      awslogs-stream-prefix = "proxy"
      # A slow CloudWatch Logs must not block the event loop (pino writes stdout synchronously); under sustained
      # pressure lines beyond the buffer are dropped, EMF records included, and the request metrics undercount.
      mode            = "non-blocking"
      max-buffer-size = "25m"
    }
  }

  sidecar_logs = {
    logDriver = "awslogs"
    options = {
      awslogs-group         = aws_cloudwatch_log_group.sidecars.name
      awslogs-region        = local.region
      awslogs-stream-prefix = "sidecar"
    }
  }

  container_definitions = [
    {
      name                   = local.proxy_container
      image                  = var.image
      essential              = true
      user                   = "10001:10001"
      readonlyRootFilesystem = true
      stopTimeout            = var.stop_timeout_seconds
      portMappings           = [{ containerPort = var.container_port, protocol = "tcp" }]
      environment            = [for k in sort(keys(local.container_environment)) : { name = k, value = local.container_environment[k] }]
      secrets                = [for k in sort(keys(local.proxy_secrets)) : { name = k, valueFrom = local.proxy_secrets[k] }]
      mountPoints = concat(
        [{ sourceVolume = "audit-spool", containerPath = local.spool_dir, readOnly = false }],
        [for v, path in local.scratch_volumes : { sourceVolume = v, containerPath = path, readOnly = false }],
      )
      linuxParameters = {
        initProcessEnabled = true
        capabilities       = { drop = ["ALL"] }
      }
      # The image's checker: a path is a GET on the operations listener (PIXPROXY_OPS_LISTEN_PORT, in this
      # container's environment), so this is a real HTTP verdict although the callers' port demands a client
      # certificate. Liveness only: readiness (/readyz) is the NLB's check, which routes around an unready task
      # instead of replacing it (a spool filled by a Firehose outage is every task's).
      healthCheck = {
        command     = ["CMD", "node", "/app/docker/healthcheck.mjs", "/healthz"]
        interval    = 10
        timeout     = 5
        retries     = 3
        startPeriod = 60
      }
      ulimits          = [{ name = "nofile", softLimit = 65536, hardLimit = 65536 }]
      logConfiguration = local.awslogs
    },
    {
      name      = local.agent_container
      image     = var.cloudwatch_agent_image
      essential = false
      # The agent writes its translated configuration at start-up, so its root file system stays writable.
      readonlyRootFilesystem = false
      secrets                = [for k in sort(keys(local.agent_secrets)) : { name = k, valueFrom = local.agent_secrets[k] }]
      logConfiguration       = local.sidecar_logs
    },
  ]

  # Prometheus scrape configuration for the agent (PROMETHEUS_CONFIG_CONTENT). The agent shares the task's network
  # namespace, so it scrapes the proxy's operations listener on the loopback address it listens on, in plain HTTP.
  prometheus_scrape_config = {
    global = {
      scrape_interval = "${var.scrape_interval_seconds}s"
      scrape_timeout  = "10s"
    }
    scrape_configs = [
      {
        job_name       = "pix-proxy"
        scheme         = "http"
        metrics_path   = "/metrics"
        static_configs = [{ targets = ["${local.ops_host}:${var.ops_port}"], labels = { service = var.name } }]
        # HSM failures are PIXPROXY_ERR_HSM_* codes of pixproxy_errors_total; an error_class label lets one
        # CloudWatch metric sum them for the alarm (an alarm cannot SEARCH across codes).
        metric_relabel_configs = [
          {
            source_labels = ["code"]
            regex         = "PIXPROXY_ERR_HSM_.*"
            target_label  = "error_class"
            replacement   = "hsm"
            action        = "replace"
          },
          # Likewise the KMS signer's failures (PIXPROXY_ERR_KMS_*: throttled, unavailable, key disabled, denied).
          {
            source_labels = ["code"]
            regex         = "PIXPROXY_ERR_KMS_.*"
            target_label  = "error_class"
            replacement   = "kms"
            action        = "replace"
          },
        ]
      },
    ]
  }

  # Which scraped series become CloudWatch metrics (namespace local.metric_namespace, dimension service). The agent
  # drops Prometheus histograms, so latency percentiles come from the proxy's EMF records (emf_metrics below).
  emf_service_matcher = "^${var.name}$"
  cloudwatch_agent_config = {
    logs = {
      force_flush_interval = 5
      metrics_collected = {
        prometheus = {
          log_group_name         = aws_cloudwatch_log_group.prometheus.name
          prometheus_config_path = "env:PROMETHEUS_CONFIG_CONTENT"
          emf_processor = {
            metric_namespace = local.metric_namespace
            metric_unit = {
              pixproxy_audit_oldest_unshipped_seconds    = "Seconds"
              pixproxy_audit_spool_bytes                 = "Bytes"
              pixproxy_audit_spool_max_bytes             = "Bytes"
              pixproxy_audit_spool_rows                  = "Count"
              pixproxy_audit_rows_total                  = "Count"
              pixproxy_audit_sink_failed_calls_total     = "Count"
              pixproxy_audit_sink_partial_failures_total = "Count"
              pixproxy_errors_total                      = "Count"
              pixproxy_upstream_requests_total           = "Count"
              pixproxy_response_signatures_total         = "Count"
              pixproxy_certificate_expiry_seconds        = "Seconds"
            }
            # Counters (*_total) reach CloudWatch as their increase since the previous scrape: read them by Sum.
            metric_declaration = [
              {
                source_labels    = ["service"]
                label_matcher    = local.emf_service_matcher
                dimensions       = [["service"]]
                metric_selectors = ["^pixproxy_audit_oldest_unshipped_seconds$", "^pixproxy_spi_in_flight$", "^pixproxy_spi_queued$", "^pixproxy_spi_readers_in_flight$", "^pixproxy_spi_readers_queued$", "^pixproxy_hsm_queued$"]
              },
              {
                source_labels    = ["service"]
                label_matcher    = local.emf_service_matcher
                dimensions       = [["service"]]
                metric_selectors = ["^pixproxy_audit_spool_bytes$", "^pixproxy_audit_spool_max_bytes$", "^pixproxy_audit_sink_consecutive_failures$", "^pixproxy_audit_sink_retrying_rows$", "^pixproxy_audit_sink_failed_calls_total$", "^pixproxy_audit_sink_partial_failures_total$"]
              },
              {
                source_labels    = ["service"]
                label_matcher    = local.emf_service_matcher
                dimensions       = [["service", "state"]]
                metric_selectors = ["^pixproxy_audit_spool_rows$", "^pixproxy_audit_rows_total$", "^pixproxy_hsm_sessions$"]
              },
              {
                source_labels    = ["service", "error_class"]
                label_matcher    = "^${var.name};(hsm|kms)$"
                dimensions       = [["service", "error_class"]]
                metric_selectors = ["^pixproxy_errors_total$"]
              },
              {
                source_labels    = ["service"]
                label_matcher    = local.emf_service_matcher
                dimensions       = [["service", "code"]]
                metric_selectors = ["^pixproxy_errors_total$"]
              },
              {
                source_labels    = ["service"]
                label_matcher    = local.emf_service_matcher
                dimensions       = [["service", "upstream", "status"]]
                metric_selectors = ["^pixproxy_upstream_requests_total$"]
              },
              {
                source_labels    = ["service"]
                label_matcher    = local.emf_service_matcher
                dimensions       = [["service", "upstream", "code"]]
                metric_selectors = ["^pixproxy_response_signatures_total$"]
              },
              {
                # By role only: subject and serial would make a new metric at every rotation. Several certificates
                # of one role (BACEN's bundle) are several data points of one metric, read by Minimum or Maximum.
                source_labels    = ["service"]
                label_matcher    = local.emf_service_matcher
                dimensions       = [["service", "role"]]
                metric_selectors = ["^pixproxy_certificate_expiry_seconds$"]
              },
              {
                source_labels    = ["service"]
                label_matcher    = local.emf_service_matcher
                dimensions       = [["service", "upstream"]]
                metric_selectors = ["^pixproxy_upstream_reachable$"]
              },
            ]
          }
        }
      }
    }
  }

  # The request metrics the proxy writes as EMF (src/plugins/emf.ts EMF_METRICS; test/infra/terraform.test.ts checks
  # these names against it), in local.metric_namespace. Each is published with the dimension set [service] (what the
  # alarms and the scaling policy read) and Latency and Requests also by [service, operation] and
  # [service, outcome, statusClass]. Requests, OutcomeUnknown, SignatureInvalid and Responses5xx are 1 or 0 per
  # request: read them by Sum (or Average for a ratio); Latency (ms) by percentile.
  emf_metrics = {
    latency           = "Latency"
    requests          = "Requests"
    outcome_unknown   = "OutcomeUnknown"
    signature_invalid = "SignatureInvalid"
    responses_5xx     = "Responses5xx"
    # Only with the signing key in KMS: every Sign call's time (ms), by service, in records of its own.
    kms_sign_latency = "KmsSignLatency"
  }
}

# ---------------------------------------------------------------------------------------------------------------
# Cluster and logs
# ---------------------------------------------------------------------------------------------------------------

resource "aws_ecs_cluster" "this" {
  name = var.name
  tags = var.tags

  # Container Insights publishes RunningTaskCount, which the requests-per-task scaling policy divides by.
  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

resource "aws_cloudwatch_log_group" "proxy" {
  name              = "/ecs/${var.name}/proxy"
  retention_in_days = var.log_retention_days
  tags              = var.tags
}

resource "aws_cloudwatch_log_group" "sidecars" {
  name              = "/ecs/${var.name}/sidecars"
  retention_in_days = var.log_retention_days
  tags              = var.tags
}

resource "aws_cloudwatch_log_group" "prometheus" {
  name              = "/ecs/${var.name}/prometheus"
  retention_in_days = var.metrics_log_retention_days
  tags              = var.tags
}

# ---------------------------------------------------------------------------------------------------------------
# CloudWatch agent configuration (outside the proxy's SSM path: the proxy refuses parameters that are not settings)
# ---------------------------------------------------------------------------------------------------------------

resource "aws_ssm_parameter" "cloudwatch_agent_config" {
  name        = "${var.infra_ssm_path}cloudwatch-agent-config"
  description = "CloudWatch agent configuration for the ${var.name} metrics sidecar (CW_CONFIG_CONTENT)"
  type        = "String"
  tier        = "Intelligent-Tiering"
  value       = jsonencode(local.cloudwatch_agent_config)
  tags        = var.tags
}

resource "aws_ssm_parameter" "prometheus_scrape_config" {
  name        = "${var.infra_ssm_path}prometheus-scrape-config"
  description = "Prometheus scrape configuration for the ${var.name} metrics sidecar (PROMETHEUS_CONFIG_CONTENT)"
  type        = "String"
  tier        = "Intelligent-Tiering"
  value       = yamlencode(local.prometheus_scrape_config)
  tags        = var.tags
}

# ---------------------------------------------------------------------------------------------------------------
# Audit spool on EFS
# ---------------------------------------------------------------------------------------------------------------

module "audit_spool" {
  source = "../efs_spool"

  name                     = "${var.name}-audit-spool"
  vpc_id                   = var.vpc_id
  subnet_ids               = var.private_subnet_ids
  kms_key_arn              = var.efs_kms_key_arn
  client_security_group_id = var.task_security_group_id
  client_role_arn          = module.ecs_service.task_role_arn
  # The proxy's uid/gid (10001) owns the spool root; each process claims a slot-NNN directory in it.
  access_point_path = "/audit-spool"
  uid               = 10001
  gid               = 10001
  security_group = {
    name_prefix         = "${var.name}-efs-"
    name                = "${var.name}-efs"
    description         = "EFS mount targets of the pix-proxy audit spool: NFS from the proxy tasks only"
    ingress_description = "NFS from pix-proxy tasks"
    egress_description  = "NFS to the audit spool"
  }
  tags = var.tags
}

# Where these resources were before the efs_spool module: Terraform moves them in the state instead of destroying and
# re-creating them. A re-created file system would be a new, empty one: every row spooled and not yet shipped (a
# Firehose outage, a task that was replaced) would be lost with the old one.
moved {
  from = aws_efs_file_system.spool
  to   = module.audit_spool.aws_efs_file_system.this
}

moved {
  from = aws_security_group.efs
  to   = module.audit_spool.aws_security_group.mount_targets
}

moved {
  from = aws_vpc_security_group_ingress_rule.efs_from_tasks
  to   = module.audit_spool.aws_vpc_security_group_ingress_rule.nfs_from_clients
}

moved {
  from = aws_vpc_security_group_egress_rule.tasks_to_efs
  to   = module.audit_spool.aws_vpc_security_group_egress_rule.clients_to_nfs
}

moved {
  from = aws_efs_mount_target.spool
  to   = module.audit_spool.aws_efs_mount_target.this
}

moved {
  from = aws_efs_access_point.spool
  to   = module.audit_spool.aws_efs_access_point.this
}

moved {
  from = aws_efs_file_system_policy.spool
  to   = module.audit_spool.aws_efs_file_system_policy.this
}

# ---------------------------------------------------------------------------------------------------------------
# IAM: what the task role may do (the proxy and its sidecars); the roles are the ecs_service module's
# ---------------------------------------------------------------------------------------------------------------

data "aws_iam_policy_document" "task" {
  # The audit spool: mount and write through its access point only (the efs_spool module's statement).
  source_policy_documents = [module.audit_spool.client_policy_json]

  # Settings: GetParametersByPath on the path (the proxy sends it without the trailing slash) and its parameters.
  statement {
    sid       = "ReadSettings"
    actions   = ["ssm:GetParametersByPath"]
    resources = [var.config_ssm_path_arn, "${var.config_ssm_path_arn}/*"]
  }

  # The HSM PIN (cloudhsm) or the mTLS client key (kms); nothing else in Secrets Manager.
  statement {
    sid       = "ReadSignerSecret"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = local.proxy_secret_arns
  }

  statement {
    sid       = "DecryptSettingsAndPin"
    actions   = ["kms:Decrypt"]
    resources = [var.config_kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["ssm.${local.region}.amazonaws.com", "secretsmanager.${local.region}.amazonaws.com"]
    }
  }

  statement {
    sid       = "ShipAuditRows"
    actions   = ["firehose:PutRecordBatch", "firehose:PutRecord"]
    resources = values(var.audit_stream_arns)
  }

  # The CloudWatch agent sidecar writes the scraped metrics as EMF log events.
  statement {
    sid       = "PublishScrapedMetrics"
    actions   = ["logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"]
    resources = [aws_cloudwatch_log_group.prometheus.arn, "${aws_cloudwatch_log_group.prometheus.arn}:log-stream:*"]
  }
}

# ---------------------------------------------------------------------------------------------------------------
# Task definition
# ---------------------------------------------------------------------------------------------------------------

resource "aws_ecs_task_definition" "this" {
  family                   = var.name
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.task_cpu
  memory                   = var.task_memory
  execution_role_arn       = module.ecs_service.execution_role_arn
  task_role_arn            = module.ecs_service.task_role_arn
  container_definitions    = jsonencode(local.container_definitions)
  tags                     = var.tags

  # The CloudHSM client SDK packages are built for x86_64 (the image is the same with either signer).
  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  # The audit spool, mounted as efs_spool says (task_volume): with TLS and IAM authorisation, which its file system
  # policy requires.
  volume {
    name = "audit-spool"

    efs_volume_configuration {
      file_system_id     = module.audit_spool.task_volume.file_system_id
      transit_encryption = module.audit_spool.task_volume.transit_encryption

      authorization_config {
        access_point_id = module.audit_spool.task_volume.access_point_id
        iam             = module.audit_spool.task_volume.iam
      }
    }
  }

  dynamic "volume" {
    for_each = local.scratch_volumes
    content {
      name = volume.key
    }
  }

  lifecycle {
    precondition {
      condition     = var.stop_timeout_seconds * 1000 >= local.shutdown_timeout_ms + 5000 && var.stop_timeout_seconds <= 120
      error_message = "stop_timeout_seconds must leave 5 s beyond PIXPROXY_SHUTDOWN_TIMEOUT_MS for the audit flush, and Fargate allows at most 120."
    }

    precondition {
      condition     = var.ops_port != var.container_port
      error_message = "ops_port must differ from container_port: the operations listener needs its own port (the proxy refuses the same one)."
    }

    precondition {
      condition = (var.signer == "cloudhsm"
        ? length(var.hsm_ip_addresses) > 0 && var.cloudhsm_customer_ca_parameter_arn != null && var.hsm_pin_secret_arn != null && var.signing_kms_key_id == null && var.tls_key_secret_arn == null
      : var.signing_kms_key_id != null && var.tls_key_secret_arn != null && length(var.hsm_ip_addresses) == 0 && var.hsm_pin_secret_arn == null)
      error_message = "signer = \"cloudhsm\" needs hsm_ip_addresses, cloudhsm_customer_ca_parameter_arn and hsm_pin_secret_arn (and no KMS inputs); signer = \"kms\" needs signing_kms_key_id and tls_key_secret_arn (and no HSM inputs)."
    }

    precondition {
      condition     = var.autoscaling.max_capacity <= var.spi_participant_max_in_flight
      error_message = "More tasks than BACEN's in-flight limit per participant: each task needs at least one ICOM slot."
    }
  }
}

# ---------------------------------------------------------------------------------------------------------------
# Internal NLB, TLS passed through
# ---------------------------------------------------------------------------------------------------------------

resource "aws_security_group" "nlb" {
  name_prefix = "${var.name}-nlb-"
  description = "pix-proxy internal NLB: bank core systems in, proxy tasks out"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-nlb" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "nlb_from_callers" {
  for_each = toset(var.caller_cidrs)

  security_group_id = aws_security_group.nlb.id
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = var.listener_port
  to_port           = var.listener_port
  description       = "Bank core systems"
}

resource "aws_vpc_security_group_egress_rule" "nlb_to_tasks" {
  security_group_id            = aws_security_group.nlb.id
  referenced_security_group_id = var.task_security_group_id
  ip_protocol                  = "tcp"
  from_port                    = var.container_port
  to_port                      = var.container_port
  description                  = "Traffic and health checks to the proxy tasks"
}

resource "aws_vpc_security_group_ingress_rule" "tasks_from_nlb" {
  security_group_id            = var.task_security_group_id
  referenced_security_group_id = aws_security_group.nlb.id
  ip_protocol                  = "tcp"
  from_port                    = var.container_port
  to_port                      = var.container_port
  description                  = "From the internal NLB"
}

# The NLB's readiness checks to the operations listener (GET /readyz); nothing else may reach that port.
resource "aws_vpc_security_group_egress_rule" "nlb_to_tasks_ops" {
  security_group_id            = aws_security_group.nlb.id
  referenced_security_group_id = var.task_security_group_id
  ip_protocol                  = "tcp"
  from_port                    = var.ops_port
  to_port                      = var.ops_port
  description                  = "Readiness checks to the proxy's operations listener"
}

resource "aws_vpc_security_group_ingress_rule" "tasks_ops_from_nlb" {
  security_group_id            = var.task_security_group_id
  referenced_security_group_id = aws_security_group.nlb.id
  ip_protocol                  = "tcp"
  from_port                    = var.ops_port
  to_port                      = var.ops_port
  description                  = "Readiness checks from the internal NLB"
}

resource "aws_lb" "this" {
  name                             = var.name
  internal                         = true
  load_balancer_type               = "network"
  subnets                          = var.nlb_subnet_ids != null ? var.nlb_subnet_ids : var.private_subnet_ids
  security_groups                  = [aws_security_group.nlb.id]
  enable_cross_zone_load_balancing = true
  enable_deletion_protection       = var.deletion_protection
  tags                             = var.tags
}

resource "aws_lb_target_group" "this" {
  name        = var.name
  port        = var.container_port
  protocol    = "TCP"
  target_type = "ip"
  vpc_id      = var.vpc_id
  tags        = var.tags

  # On scale-in or deployment ECS first deregisters the task: the NLB stops opening new connections to it for this
  # long, then ECS sends SIGTERM and the proxy drains (503 + Connection: close on kept-alive sockets, so callers
  # reconnect to another task) within PIXPROXY_SHUTDOWN_TIMEOUT_MS. Existing connections are not reset by the NLB.
  deregistration_delay   = var.deregistration_delay_seconds
  connection_termination = false
  # IP targets behind an NLB with security groups: the proxy sees the NLB's address; callers are identified by their
  # client certificate, not their IP.
  preserve_client_ip = "false"

  health_check {
    enabled             = true
    protocol            = "HTTP"
    port                = tostring(var.ops_port)
    path                = "/readyz"
    matcher             = "200"
    interval            = 10
    timeout             = 6
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }
}

resource "aws_lb_listener" "this" {
  load_balancer_arn = aws_lb.this.arn
  port              = var.listener_port
  protocol          = "TCP"
  tags              = var.tags

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.this.arn
  }
}

# ---------------------------------------------------------------------------------------------------------------
# Service and autoscaling
# ---------------------------------------------------------------------------------------------------------------

# The service, its CPU target tracking and its two roles (ecs_service module, as the gateway's); the requests-per-task
# policy below is the proxy's own.
module "ecs_service" {
  source = "../ecs_service"

  name                              = var.name
  role_name_prefix                  = var.name
  cluster_arn                       = aws_ecs_cluster.this.id
  cluster_name                      = aws_ecs_cluster.this.name
  task_definition_arn               = aws_ecs_task_definition.this.arn
  container_name                    = local.proxy_container
  container_port                    = var.container_port
  target_group_arn                  = aws_lb_target_group.this.arn
  subnet_ids                        = var.private_subnet_ids
  security_group_ids                = [var.task_security_group_id]
  health_check_grace_period_seconds = var.health_check_grace_period_seconds
  autoscaling                       = var.autoscaling
  ecr_repository_arns               = var.ecr_repository_arns
  log_group_arns                    = [aws_cloudwatch_log_group.proxy.arn, aws_cloudwatch_log_group.sidecars.arn]
  container_secret_arns             = concat(values(local.proxy_secrets), [aws_ssm_parameter.cloudwatch_agent_config.arn, aws_ssm_parameter.prometheus_scrape_config.arn])
  execution_policy_name             = "start-tasks"
  task_policy_name                  = "run-proxy"
  task_policy_json                  = data.aws_iam_policy_document.task.json
  # Tasks start with the spool mountable in every subnet.
  service_depends_on = [aws_lb_listener.this.arn, module.audit_spool.mount_target_ids]
  tags               = var.tags
}

# Where these resources were before the ecs_service module: Terraform moves them in the state instead of destroying
# and re-creating them (a replaced service or role would be an outage).
moved {
  from = aws_iam_role.execution
  to   = module.ecs_service.aws_iam_role.execution
}

moved {
  from = aws_iam_role_policy.execution
  to   = module.ecs_service.aws_iam_role_policy.execution
}

moved {
  from = aws_iam_role.task
  to   = module.ecs_service.aws_iam_role.task
}

moved {
  from = aws_iam_role_policy.task
  to   = module.ecs_service.aws_iam_role_policy.task
}

moved {
  from = aws_ecs_service.this
  to   = module.ecs_service.aws_ecs_service.this
}

moved {
  from = aws_appautoscaling_target.this
  to   = module.ecs_service.aws_appautoscaling_target.this
}

moved {
  from = aws_appautoscaling_policy.cpu
  to   = module.ecs_service.aws_appautoscaling_policy.cpu
}

# Requests per task per minute. ALBRequestCountPerTarget exists only for ALBs; behind an NLB the request count comes
# from the proxy's EMF records (Requests, dimension service) divided by the running task count (Container Insights).
resource "aws_appautoscaling_policy" "requests" {
  name               = "${var.name}-requests"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = module.ecs_service.autoscaling_service_namespace
  scalable_dimension = module.ecs_service.autoscaling_scalable_dimension
  resource_id        = module.ecs_service.autoscaling_resource_id

  target_tracking_scaling_policy_configuration {
    target_value       = var.autoscaling.requests_per_task_per_minute
    scale_in_cooldown  = var.autoscaling.scale_in_cooldown_seconds
    scale_out_cooldown = var.autoscaling.scale_out_cooldown_seconds

    customized_metric_specification {
      metrics {
        id          = "requests"
        label       = "Forwarding requests answered by the service (EMF)"
        return_data = false

        metric_stat {
          stat = "Sum"

          metric {
            namespace   = local.metric_namespace
            metric_name = local.emf_metrics.requests

            dimensions {
              name  = "service"
              value = var.name
            }
          }
        }
      }

      metrics {
        id          = "tasks"
        label       = "Running tasks"
        return_data = false

        metric_stat {
          stat = "Average"

          metric {
            namespace   = "ECS/ContainerInsights"
            metric_name = "RunningTaskCount"

            dimensions {
              name  = "ClusterName"
              value = aws_ecs_cluster.this.name
            }

            dimensions {
              name  = "ServiceName"
              value = module.ecs_service.service_name
            }
          }
        }
      }

      metrics {
        id          = "requests_per_task"
        label       = "Requests per task"
        expression  = "requests / tasks"
        return_data = true
      }
    }
  }
}
