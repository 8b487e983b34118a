# The inbound Open Finance Brasil gateway (`pix-proxy gateway`, issue 17): the same image as the proxy with its own
# entry point (container command ["gateway"]), as its own ECS service in the proxy's cluster.
#
# - A Network Load Balancer passes TCP through (listener 443 -> task 8443): the gateway terminates mutual TLS itself,
#   with its server key in the HSM (libp11 engine) and client certificates checked against the ICP-Brasil
#   truststore, so no load balancer ever holds the key or sees the client certificate.
# - The target group's health check is HTTP GET /readyz on the operations listener (PIXGW_OPS_LISTEN_PORT = 8081):
#   the TLS port requires a client certificate, which an NLB check does not present.
# - The truststore bundle and the CRLs are objects in a versioned S3 bucket (PIXGW_TRUSTSTORE, PIXGW_CRLS as
#   s3:// URIs); the gateway reloads them when their version changes. The task role may read those two prefixes only.
# - Accepted requests go to a private API Gateway through an execute-api interface endpoint created here; the
#   API's resource policy (output private_api_resource_policy_json) accepts calls through that endpoint only.
# - The server key is in the same CloudHSM cluster as the proxy's keys, with the same PKCS#11 settings
#   (PIXPROXY_HSM_MODULE_PATH, PIXPROXY_HSM_TOKEN_LABEL, PIXPROXY_HSM_PIN_SECRET_ID) and the CloudHSM client
#   configured by the image's entrypoint from CLOUDHSM_HSM_IPS and CLOUDHSM_CUSTOMER_CA.
# - Audit rows go to the gateway's own Firehose stream (data_lake module, enable_gateway), from a write-ahead spool on
#   an EFS file system of the gateway's own (efs_spool module, as the proxy's): every task mounts the same access
#   point and claims its own slot directory (PIXGW_AUDIT_SPOOL_SHARED), and adopts and ships the slots of tasks that
#   are gone, so rows made durable by a task that dies (or whose shutdown deadline passes during a Firehose outage)
#   are shipped by another.

data "aws_region" "current" {}

locals {
  region = data.aws_region.current.name

  container = "pix-gateway"

  truststore_prefix = "truststore/"
  crl_prefix        = "crls/"
  bucket_arn        = aws_s3_bucket.truststore.arn

  hsm_ports = { from = 2223, to = 2225 }

  # The gateway's environment (settings of src/gateway/config.ts on the gateway's branch, and the proxy's HSM
  # settings for the server key). test/infra/terraform.test.ts checks the names.
  environment = {
    PIXGW_LISTEN_HOST           = "0.0.0.0"
    PIXGW_LISTEN_PORT           = tostring(var.container_port)
    PIXGW_OPS_LISTEN_HOST       = "0.0.0.0"
    PIXGW_OPS_LISTEN_PORT       = tostring(var.ops_port)
    PIXGW_SERVER_KEY_LABEL      = var.server_key_label
    PIXGW_TRUSTSTORE            = "s3://${aws_s3_bucket.truststore.bucket}/${local.truststore_prefix}${var.truststore_object_name}"
    PIXGW_CRLS                  = join(",", [for c in var.crl_object_names : "s3://${aws_s3_bucket.truststore.bucket}/${local.crl_prefix}${c}"])
    PIXGW_BACKEND_URL           = var.backend_url
    PIXGW_ROUTES                = join(",", var.routes)
    PIXGW_AUDIT_FIREHOSE_STREAM = var.audit_stream_name
    # Rows leave the task through Firehose, from the spool on the gateway's EFS access point, shared by every task.
    PIXGW_AUDIT_SINK           = "firehose"
    PIXGW_AUDIT_SPOOL_DIR      = local.spool_dir
    PIXGW_AUDIT_SPOOL_SHARED   = "true"
    PIXPROXY_HSM_MODULE_PATH   = "/opt/cloudhsm/lib/libcloudhsm_pkcs11.so"
    PIXPROXY_HSM_TOKEN_LABEL   = var.hsm_token_label
    PIXPROXY_HSM_PIN_SECRET_ID = var.hsm_pin_secret_arn
    # Consumed by the image's entrypoint (configure-pkcs11 -a), not by the gateway.
    CLOUDHSM_HSM_IPS = join(",", var.hsm_ip_addresses)
  }

  # Values ECS reads from SSM when it starts the container (execution role): the server certificate (PEM) and the
  # CloudHSM cluster's CA.
  secrets = {
    PIXGW_SERVER_CERT_FILE = aws_ssm_parameter.server_cert.arn
    CLOUDHSM_CUSTOMER_CA   = var.cloudhsm_customer_ca_parameter_arn
  }

  container_definitions = [
    {
      name                   = local.container
      image                  = var.image
      essential              = true
      command                = ["gateway"]
      user                   = "10001:10001"
      readonlyRootFilesystem = true
      stopTimeout            = var.stop_timeout_seconds
      portMappings           = [{ containerPort = var.container_port, protocol = "tcp" }]
      environment            = [for k in sort(keys(local.environment)) : { name = k, value = local.environment[k] }]
      secrets                = [for k in sort(keys(local.secrets)) : { name = k, valueFrom = local.secrets[k] }]
      mountPoints = concat(
        [{ sourceVolume = "audit-spool", containerPath = local.spool_dir, readOnly = false }],
        [for v, path in local.scratch_volumes : { sourceVolume = v, containerPath = path, readOnly = false }],
      )
      # The image's HEALTHCHECK checks the proxy's operations port (PIXPROXY_OPS_LISTEN_PORT): the gateway's is
      # PIXGW_OPS_LISTEN_PORT, named by a full URL (plain HTTP, reachable on loopback as the listener is on 0.0.0.0).
      healthCheck = {
        command     = ["CMD", "node", "/app/docker/healthcheck.mjs", "http://127.0.0.1:${var.ops_port}/healthz"]
        interval    = 10
        timeout     = 5
        retries     = 3
        startPeriod = 60
      }
      linuxParameters = {
        initProcessEnabled = true
        capabilities       = { drop = ["ALL"] }
      }
      ulimits = [{ name = "nofile", softLimit = 65536, hardLimit = 65536 }]
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.gateway.name
          awslogs-region        = local.region
          awslogs-stream-prefix = "gateway"
          mode                  = "non-blocking"
          max-buffer-size       = "25m"
        }
      }
    },
  ]

  # The audit spool: the gateway's EFS access point, mounted where the image declares its spool VOLUME (owned by the
  # container's uid 10001). The file system is the gateway's own, never the proxy's: the two spools never mix.
  spool_dir = "/var/spool/pix-proxy"

  # As the proxy: the PKCS#11 engine's PIN file and the CloudHSM client configuration, task-local.
  scratch_volumes = {
    tmp      = "/tmp"
    cloudhsm = "/run/cloudhsm"
  }
}

resource "aws_cloudwatch_log_group" "gateway" {
  name              = "/ecs/${var.name}/gateway"
  retention_in_days = var.log_retention_days
  tags              = var.tags
}

# The server certificate (PEM, chain allowed, leaf first) outside the proxy's settings path.
resource "aws_ssm_parameter" "server_cert" {
  name        = "${var.infra_ssm_path}gateway-server-cert"
  description = "PEM server certificate of the ${var.name} gateway (PIXGW_SERVER_CERT_FILE)"
  type        = "String"
  tier        = "Intelligent-Tiering"
  value       = var.server_cert_pem
  tags        = var.tags
}

# ---------------------------------------------------------------------------------------------------------------
# Truststore and CRL bucket
# ---------------------------------------------------------------------------------------------------------------

resource "aws_s3_bucket" "truststore" {
  bucket = var.truststore_bucket_name
  tags   = var.tags
}

resource "aws_s3_bucket_ownership_controls" "truststore" {
  bucket = aws_s3_bucket.truststore.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "truststore" {
  bucket                  = aws_s3_bucket.truststore.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

# Versioned: the gateway reloads a bundle when its version changes, and a bad bundle is rolled back by restoring
# the previous version.
resource "aws_s3_bucket_versioning" "truststore" {
  bucket = aws_s3_bucket.truststore.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "truststore" {
  bucket = aws_s3_bucket.truststore.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = true
  }
}

data "aws_iam_policy_document" "truststore_bucket" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [local.bucket_arn, "${local.bucket_arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "truststore" {
  bucket = aws_s3_bucket.truststore.id
  policy = data.aws_iam_policy_document.truststore_bucket.json

  depends_on = [aws_s3_bucket_public_access_block.truststore]
}

# ---------------------------------------------------------------------------------------------------------------
# Security groups: callers -> NLB -> gateway tasks -> (VPC endpoints, S3, the private API's endpoint, the HSMs)
# ---------------------------------------------------------------------------------------------------------------

resource "aws_security_group" "tasks" {
  name_prefix = "${var.name}-gw-tasks-"
  description = "pix-proxy gateway tasks: clients in through the NLB; out to VPC endpoints, S3, the private API and the HSMs"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-gateway-tasks" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_security_group" "nlb" {
  name_prefix = "${var.name}-gw-nlb-"
  description = "pix-proxy gateway NLB: Open Finance clients in, gateway tasks out"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-gateway-nlb" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_security_group" "execute_api" {
  name_prefix = "${var.name}-gw-execute-api-"
  description = "execute-api interface endpoint of the private API: HTTPS from the gateway tasks only"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-gateway-execute-api" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "nlb_from_clients" {
  for_each = toset(var.client_cidrs)

  security_group_id = aws_security_group.nlb.id
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = var.listener_port
  to_port           = var.listener_port
  description       = "Open Finance clients"
}

resource "aws_vpc_security_group_egress_rule" "nlb_to_tasks" {
  for_each = toset([tostring(var.container_port), tostring(var.ops_port)])

  security_group_id            = aws_security_group.nlb.id
  referenced_security_group_id = aws_security_group.tasks.id
  ip_protocol                  = "tcp"
  from_port                    = tonumber(each.value)
  to_port                      = tonumber(each.value)
  description                  = "Traffic and readiness checks to the gateway tasks"
}

resource "aws_vpc_security_group_ingress_rule" "tasks_from_nlb" {
  for_each = toset([tostring(var.container_port), tostring(var.ops_port)])

  security_group_id            = aws_security_group.tasks.id
  referenced_security_group_id = aws_security_group.nlb.id
  ip_protocol                  = "tcp"
  from_port                    = tonumber(each.value)
  to_port                      = tonumber(each.value)
  description                  = "From the gateway NLB (mutual TLS, and the readiness check on the operations port)"
}

resource "aws_vpc_security_group_egress_rule" "tasks_to_endpoints" {
  security_group_id            = aws_security_group.tasks.id
  referenced_security_group_id = var.endpoint_security_group_id
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  description                  = "HTTPS to the VPC interface endpoints (Secrets Manager, Firehose, Logs, ECR)"
}

resource "aws_vpc_security_group_ingress_rule" "endpoints_from_tasks" {
  security_group_id            = var.endpoint_security_group_id
  referenced_security_group_id = aws_security_group.tasks.id
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  description                  = "HTTPS from the pix-proxy gateway tasks"
}

resource "aws_vpc_security_group_egress_rule" "tasks_to_s3" {
  security_group_id = aws_security_group.tasks.id
  prefix_list_id    = var.s3_prefix_list_id
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  description       = "HTTPS to S3 through the gateway endpoint (truststore, CRLs, image layers)"
}

resource "aws_vpc_security_group_egress_rule" "tasks_to_execute_api" {
  security_group_id            = aws_security_group.tasks.id
  referenced_security_group_id = aws_security_group.execute_api.id
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  description                  = "HTTPS to the private API Gateway's endpoint"
}

resource "aws_vpc_security_group_ingress_rule" "execute_api_from_tasks" {
  security_group_id            = aws_security_group.execute_api.id
  referenced_security_group_id = aws_security_group.tasks.id
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  description                  = "HTTPS from the pix-proxy gateway tasks"
}

# The HSM client rules, as the hsm module adds them for the proxy's tasks.
resource "aws_vpc_security_group_ingress_rule" "hsm_from_tasks" {
  security_group_id            = var.hsm_security_group_id
  referenced_security_group_id = aws_security_group.tasks.id
  ip_protocol                  = "tcp"
  from_port                    = local.hsm_ports.from
  to_port                      = local.hsm_ports.to
  description                  = "CloudHSM client traffic from the pix-proxy gateway"
}

resource "aws_vpc_security_group_egress_rule" "tasks_to_hsm" {
  security_group_id            = aws_security_group.tasks.id
  referenced_security_group_id = var.hsm_security_group_id
  ip_protocol                  = "tcp"
  from_port                    = local.hsm_ports.from
  to_port                      = local.hsm_ports.to
  description                  = "CloudHSM client traffic to the HSMs"
}

# ---------------------------------------------------------------------------------------------------------------
# The private API Gateway's VPC endpoint and the resource policy its API should carry
# ---------------------------------------------------------------------------------------------------------------

# Private DNS: the gateway calls https://<api-id>.execute-api.<region>.amazonaws.com/<stage> (PIXGW_BACKEND_URL) and
# it resolves to this endpoint. With private DNS on, public (edge or regional) APIs are no longer reachable from
# this VPC by their default names: https://docs.aws.amazon.com/apigateway/latest/developerguide/apigateway-private-apis.html
resource "aws_vpc_endpoint" "execute_api" {
  vpc_id              = var.vpc_id
  service_name        = "com.amazonaws.${local.region}.execute-api"
  vpc_endpoint_type   = "Interface"
  subnet_ids          = var.private_subnet_ids
  security_group_ids  = [aws_security_group.execute_api.id]
  private_dns_enabled = true
  tags                = merge(var.tags, { Name = "${var.name}-execute-api" })
}

# Resource policy for the private API (attach it to the API, which this module does not manage): calls are allowed
# only through this endpoint. AWS's pattern for private APIs: an Allow on execute-api:/* and a Deny for any other
# aws:SourceVpce (https://docs.aws.amazon.com/apigateway/latest/developerguide/apigateway-resource-policies-examples.html).
data "aws_iam_policy_document" "private_api" {
  statement {
    sid       = "InvokeThroughTheGatewayEndpoint"
    actions   = ["execute-api:Invoke"]
    resources = ["execute-api:/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }
  }

  statement {
    sid       = "DenyOtherEndpoints"
    effect    = "Deny"
    actions   = ["execute-api:Invoke"]
    resources = ["execute-api:/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "StringNotEquals"
      variable = "aws:SourceVpce"
      values   = [aws_vpc_endpoint.execute_api.id]
    }
  }
}

# ---------------------------------------------------------------------------------------------------------------
# Audit spool on EFS (as the proxy's, in a file system of the gateway's own)
# ---------------------------------------------------------------------------------------------------------------

module "audit_spool" {
  source = "../efs_spool"

  name                     = "${var.name}-gateway-audit-spool"
  vpc_id                   = var.vpc_id
  subnet_ids               = var.private_subnet_ids
  kms_key_arn              = var.efs_kms_key_arn
  client_security_group_id = aws_security_group.tasks.id
  client_role_arn          = module.ecs_service.task_role_arn
  # The container's user (10001:10001) owns the spool root; each gateway process claims a slot-NNN directory in it.
  access_point_path = "/gateway-audit-spool"
  uid               = 10001
  gid               = 10001
  security_group = {
    name_prefix         = "${var.name}-gw-efs-"
    name                = "${var.name}-gateway-efs"
    description         = "EFS mount targets of the pix-proxy gateway audit spool: NFS from the gateway tasks only"
    ingress_description = "NFS from the pix-proxy gateway tasks"
    egress_description  = "NFS to the gateway audit spool"
  }
  tags = var.tags
}

# Where these resources were before the efs_spool module: Terraform moves them in the state instead of destroying and
# re-creating them. A re-created file system would be a new, empty one: every row spooled and not yet shipped (a
# Firehose outage, a task that died) would be lost with the old one.
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
# IAM: the task role's permissions (the roles themselves are the ecs_service module's)
# ---------------------------------------------------------------------------------------------------------------

data "aws_iam_policy_document" "task" {
  # The audit spool: mount and write through its access point only (the efs_spool module's statement).
  source_policy_documents = [module.audit_spool.client_policy_json]

  # The truststore bundle and the CRLs, by version (the gateway reloads on a new version): those two prefixes only,
  # no listing, no writing.
  statement {
    sid       = "ReadTruststoreAndCrls"
    actions   = ["s3:GetObject", "s3:GetObjectVersion"]
    resources = ["${local.bucket_arn}/${local.truststore_prefix}*", "${local.bucket_arn}/${local.crl_prefix}*"]
  }

  statement {
    sid       = "DecryptTruststore"
    actions   = ["kms:Decrypt"]
    resources = [var.kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${local.region}.amazonaws.com", "secretsmanager.${local.region}.amazonaws.com"]
    }
  }

  statement {
    sid       = "ReadHsmPin"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.hsm_pin_secret_arn]
  }

  statement {
    sid       = "ShipAuditRows"
    actions   = ["firehose:PutRecord", "firehose:PutRecordBatch"]
    resources = [var.audit_stream_arn]
  }

}

# ---------------------------------------------------------------------------------------------------------------
# Task definition, NLB, and the service (ecs_service module)
# ---------------------------------------------------------------------------------------------------------------

resource "aws_ecs_task_definition" "this" {
  family                   = "${var.name}-gateway"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.task_cpu
  memory                   = var.task_memory
  execution_role_arn       = module.ecs_service.execution_role_arn
  task_role_arn            = module.ecs_service.task_role_arn
  container_definitions    = jsonencode(local.container_definitions)
  tags                     = var.tags

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
      condition     = var.ops_port != var.container_port
      error_message = "ops_port must differ from container_port (the gateway refuses the same one)."
    }
  }
}

resource "aws_lb" "this" {
  name                             = "${var.name}-gw"
  internal                         = var.internal
  load_balancer_type               = "network"
  subnets                          = var.nlb_subnet_ids != null ? var.nlb_subnet_ids : var.private_subnet_ids
  security_groups                  = [aws_security_group.nlb.id]
  enable_cross_zone_load_balancing = true
  enable_deletion_protection       = var.deletion_protection
  tags                             = var.tags
}

resource "aws_lb_target_group" "this" {
  name                   = "${var.name}-gw"
  port                   = var.container_port
  protocol               = "TCP"
  target_type            = "ip"
  vpc_id                 = var.vpc_id
  deregistration_delay   = var.deregistration_delay_seconds
  connection_termination = false
  preserve_client_ip     = "false"
  tags                   = var.tags

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

# The service, its autoscaling (target tracking on CPU: TLS handshakes, the server key's RSA operation in the HSM, and
# forwarding are CPU-bound on the gateway's side) and its two roles, run the way the proxy's are.
module "ecs_service" {
  source = "../ecs_service"

  name                              = "${var.name}-gateway"
  role_name_prefix                  = "${var.name}-gw"
  cluster_arn                       = var.cluster_arn
  cluster_name                      = var.cluster_name
  task_definition_arn               = aws_ecs_task_definition.this.arn
  container_name                    = local.container
  container_port                    = var.container_port
  target_group_arn                  = aws_lb_target_group.this.arn
  subnet_ids                        = var.private_subnet_ids
  security_group_ids                = [aws_security_group.tasks.id]
  health_check_grace_period_seconds = var.health_check_grace_period_seconds
  autoscaling                       = var.autoscaling
  ecr_repository_arns               = var.ecr_repository_arns
  log_group_arns                    = [aws_cloudwatch_log_group.gateway.arn]
  container_secret_arns             = values(local.secrets)
  execution_policy_name             = "start-gateway-tasks"
  task_policy_name                  = "run-gateway"
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
