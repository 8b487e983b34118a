# A write-ahead audit spool on EFS, shared by every task of one ECS service (PIXPROXY_AUDIT_SPOOL_SHARED,
# PIXGW_AUDIT_SPOOL_SHARED): the tasks mount one access point and each process claims a slot-NNN directory inside it,
# so rows made durable by a task that is replaced or dies are adopted and shipped by another. The proxy's service and
# the gateway each call this module for a file system of their own: the two spools never mix.
#
# - The file system is encrypted at rest (var.kms_key_arn, or the AWS managed key), with elastic throughput.
# - Mount targets in the tasks' subnets, behind a security group of their own: NFS (2049) from the tasks' security
#   group only, and the matching egress rule on that group.
# - The file system policy refuses any access without TLS and allows the task role to mount and write through the
#   access point only; the task role's own statement (client_policy_json) says the same, and the task definition
#   mounts it with transit encryption and IAM authorisation (task_volume), the only way that policy lets it in.
#
# The callers had these resources themselves before this module: their moved {} blocks carry the state here. A file
# system that Terraform replaced would be a new, empty one: the rows spooled and not yet shipped would be lost.

resource "aws_efs_file_system" "this" {
  # Changing the creation token replaces the file system (and loses the spool): it stays what it was.
  creation_token   = var.name
  encrypted        = true
  kms_key_id       = var.kms_key_arn
  performance_mode = "generalPurpose"
  throughput_mode  = "elastic"
  tags             = merge(var.tags, { Name = var.name })
}

resource "aws_security_group" "mount_targets" {
  name_prefix = var.security_group.name_prefix
  description = var.security_group.description
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = var.security_group.name })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "nfs_from_clients" {
  security_group_id            = aws_security_group.mount_targets.id
  referenced_security_group_id = var.client_security_group_id
  ip_protocol                  = "tcp"
  from_port                    = 2049
  to_port                      = 2049
  description                  = var.security_group.ingress_description
}

resource "aws_vpc_security_group_egress_rule" "clients_to_nfs" {
  security_group_id            = var.client_security_group_id
  referenced_security_group_id = aws_security_group.mount_targets.id
  ip_protocol                  = "tcp"
  from_port                    = 2049
  to_port                      = 2049
  description                  = var.security_group.egress_description
}

resource "aws_efs_mount_target" "this" {
  count = length(var.subnet_ids)

  file_system_id  = aws_efs_file_system.this.id
  subnet_id       = var.subnet_ids[count.index]
  security_groups = [aws_security_group.mount_targets.id]
}

# Every task mounts this access point: it is the spool root, owned by the container's uid/gid, and each process
# claims a slot-NNN directory inside it.
resource "aws_efs_access_point" "this" {
  file_system_id = aws_efs_file_system.this.id
  tags           = merge(var.tags, { Name = var.name })

  posix_user {
    uid = var.uid
    gid = var.gid
  }

  root_directory {
    path = var.access_point_path

    creation_info {
      owner_uid   = var.uid
      owner_gid   = var.gid
      permissions = "0750"
    }
  }
}

data "aws_iam_policy_document" "file_system" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["elasticfilesystem:*"]
    resources = [aws_efs_file_system.this.arn]

    principals {
      type        = "AWS"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }

  statement {
    sid       = "TasksThroughAccessPoint"
    actions   = ["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"]
    resources = [aws_efs_file_system.this.arn]

    principals {
      type        = "AWS"
      identifiers = [var.client_role_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "elasticfilesystem:AccessPointArn"
      values   = [aws_efs_access_point.this.arn]
    }
  }
}

resource "aws_efs_file_system_policy" "this" {
  file_system_id = aws_efs_file_system.this.id
  policy         = data.aws_iam_policy_document.file_system.json
}

# The task role's side (output client_policy_json, a source document of the caller's task policy): mount and write
# through the access point only, no root access.
data "aws_iam_policy_document" "client" {
  statement {
    sid       = "MountAuditSpool"
    actions   = ["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"]
    resources = [aws_efs_file_system.this.arn]

    condition {
      test     = "StringEquals"
      variable = "elasticfilesystem:AccessPointArn"
      values   = [aws_efs_access_point.this.arn]
    }
  }
}
