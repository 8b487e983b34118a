# Network inputs for pix-proxy: an existing VPC and its private subnets. This module adds only what the proxy needs
# inside them: the tasks' security group with an egress allowlist, and the VPC endpoints that let tasks in subnets
# without a NAT gateway reach AWS APIs. Nothing here opens 0.0.0.0/0: AWS APIs are reached through the endpoints,
# BACEN only through the RSFN destinations given in var.rsfn_destinations.

data "aws_region" "current" {}

locals {
  # Interface endpoints the tasks (and the Fargate agent pulling images and secrets for them) call.
  # kinesis-firehose: audit rows; logs: awslogs driver and the CloudWatch agent's EMF; ecr.api + ecr.dkr: image
  # pulls (layers come from S3 through the gateway endpoint); ssm: settings and container secrets; secretsmanager:
  # the HSM PIN (or, with the signing key in KMS, the mTLS client key); kms: Sign, GetPublicKey and DescribeKey
  # when the signing key is in KMS (create_kms_endpoint), so each signature's round trip stays inside the VPC
  # (https://docs.aws.amazon.com/kms/latest/developerguide/kms-vpc-endpoint.html: with private DNS the SDK's
  # default kms.<region>.amazonaws.com resolves to the endpoint, no endpoint override in the proxy).
  interface_endpoint_services = toset(concat(var.interface_endpoint_services, var.create_kms_endpoint ? ["kms"] : []))
}

resource "aws_security_group" "tasks" {
  name_prefix = "${var.name}-tasks-"
  description = "pix-proxy ECS tasks: callers in through the NLB, out only to VPC endpoints, the HSMs, EFS and the RSFN"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-tasks" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_security_group" "endpoints" {
  name_prefix = "${var.name}-endpoints-"
  description = "VPC interface endpoints used by pix-proxy: HTTPS from the proxy tasks only"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-endpoints" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "endpoints_from_tasks" {
  security_group_id            = aws_security_group.endpoints.id
  referenced_security_group_id = aws_security_group.tasks.id
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  description                  = "HTTPS from pix-proxy tasks"
}

resource "aws_vpc_security_group_egress_rule" "tasks_to_endpoints" {
  security_group_id            = aws_security_group.tasks.id
  referenced_security_group_id = aws_security_group.endpoints.id
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  description                  = "HTTPS to the VPC interface endpoints (SSM, Secrets Manager, Firehose, Logs, ECR, KMS)"
}

resource "aws_vpc_security_group_egress_rule" "tasks_to_s3" {
  count = var.create_s3_gateway_endpoint ? 1 : 0

  security_group_id = aws_security_group.tasks.id
  prefix_list_id    = aws_vpc_endpoint.s3[0].prefix_list_id
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  description       = "HTTPS to S3 through the gateway endpoint (ECR image layers)"
}

resource "aws_vpc_security_group_egress_rule" "tasks_to_rsfn" {
  for_each = { for d in var.rsfn_destinations : "${d.cidr}:${d.from_port}-${d.to_port}" => d }

  security_group_id = aws_security_group.tasks.id
  cidr_ipv4         = each.value.cidr
  ip_protocol       = "tcp"
  from_port         = each.value.from_port
  to_port           = each.value.to_port
  description       = each.value.description
}

resource "aws_vpc_security_group_egress_rule" "tasks_to_https_cidrs" {
  for_each = toset(var.additional_https_egress_cidrs)

  security_group_id = aws_security_group.tasks.id
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  description       = "HTTPS to VPC endpoints that exist outside this module"
}

resource "aws_vpc_endpoint" "interface" {
  for_each = local.interface_endpoint_services

  vpc_id              = var.vpc_id
  service_name        = "com.amazonaws.${data.aws_region.current.name}.${each.value}"
  vpc_endpoint_type   = "Interface"
  subnet_ids          = var.endpoint_subnet_ids != null ? var.endpoint_subnet_ids : var.private_subnet_ids
  security_group_ids  = [aws_security_group.endpoints.id]
  private_dns_enabled = true
  tags                = merge(var.tags, { Name = "${var.name}-${each.value}" })
}

resource "aws_vpc_endpoint" "s3" {
  count = var.create_s3_gateway_endpoint ? 1 : 0

  vpc_id            = var.vpc_id
  service_name      = "com.amazonaws.${data.aws_region.current.name}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = var.private_route_table_ids
  tags              = merge(var.tags, { Name = "${var.name}-s3" })

  lifecycle {
    precondition {
      condition     = length(var.private_route_table_ids) > 0
      error_message = "create_s3_gateway_endpoint needs private_route_table_ids."
    }
  }
}
