# CloudHSM v2 cluster for the proxy's signing and mTLS keys: one HSM per subnet, the subnets in distinct
# Availability Zones (at least two), so losing one AZ keeps signing up and no key created after the last backup is
# lost. The cluster's security group is created by AWS; this module only adds the client rules to it.
#
# Terraform creates the cluster UNINITIALIZED. Initialising it (signing the cluster CSR with your own issuing CA,
# activating it, creating the crypto user and the keys) is manual by design: see docs/operations.md.

data "aws_subnet" "hsm" {
  count = length(var.subnet_ids)
  id    = var.subnet_ids[count.index]
}

locals {
  # CloudHSM client ports: 2223-2225 (Client SDK 5 uses 2223; the range is what AWS documents for the cluster SG).
  hsm_ports = { from = 2223, to = 2225 }
}

resource "aws_cloudhsm_v2_cluster" "this" {
  hsm_type                 = var.hsm_type
  mode                     = var.mode
  subnet_ids               = var.subnet_ids
  source_backup_identifier = var.source_backup_identifier
  tags                     = merge(var.tags, { Name = var.name })

  lifecycle {
    precondition {
      condition     = length(distinct([for s in data.aws_subnet.hsm : s.availability_zone])) == length(var.subnet_ids)
      error_message = "Each HSM subnet must be in a different Availability Zone."
    }
  }
}

# One HSM per subnet, hence per Availability Zone.
resource "aws_cloudhsm_v2_hsm" "this" {
  count = length(var.subnet_ids)

  cluster_id = aws_cloudhsm_v2_cluster.this.cluster_id
  subnet_id  = var.subnet_ids[count.index]
}

resource "aws_vpc_security_group_ingress_rule" "hsm_from_clients" {
  for_each = toset(var.client_security_group_ids)

  security_group_id            = aws_cloudhsm_v2_cluster.this.security_group_id
  referenced_security_group_id = each.value
  ip_protocol                  = "tcp"
  from_port                    = local.hsm_ports.from
  to_port                      = local.hsm_ports.to
  description                  = "CloudHSM client traffic from pix-proxy"
}

resource "aws_vpc_security_group_egress_rule" "clients_to_hsm" {
  for_each = toset(var.client_security_group_ids)

  security_group_id            = each.value
  referenced_security_group_id = aws_cloudhsm_v2_cluster.this.security_group_id
  ip_protocol                  = "tcp"
  from_port                    = local.hsm_ports.from
  to_port                      = local.hsm_ports.to
  description                  = "CloudHSM client traffic to the HSMs"
}
