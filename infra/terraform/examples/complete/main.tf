# The whole pix-proxy deployment in one root module: network inputs and endpoints, the CloudHSM cluster, the
# configuration in SSM and Secrets Manager, the audit data lake, the ECS service and its monitoring.
#
# Two phases (docs/operations.md): the HSM cluster must be initialised by hand before the service can start.
#   1. terraform apply -target=module.network -target=module.hsm
#   2. initialise the cluster, create the crypto user and the keys, put cloudhsm-customer-ca.pem in pem_dir
#   3. terraform apply
#   4. write the values Terraform never holds: the HSM PIN and the inbound TLS key

provider "aws" {
  region = var.region

  default_tags {
    tags = var.tags
  }
}

locals {
  # Every PEM this deployment reads from pem_dir. A missing one is null here and named by the check below (an index
  # into a map of what exists failed with "Invalid index", naming no file).
  pem_names   = ["signing-cert", "tls-cert", "bacen-tls-ca", "bacen-signing-certs", "inbound-tls-cert", "inbound-client-ca", "cloudhsm-customer-ca"]
  pem         = { for n in local.pem_names : n => fileexists("${var.pem_dir}/${n}.pem") ? file("${var.pem_dir}/${n}.pem") : null }
  missing_pem = [for n in local.pem_names : "${var.pem_dir}/${n}.pem" if local.pem[n] == null]
}

resource "terraform_data" "pem_files" {
  lifecycle {
    precondition {
      condition     = length(local.missing_pem) == 0
      error_message = "Missing PEM files (docs/operations.md, Secrets): ${join(", ", local.missing_pem)}"
    }
  }
}

module "network" {
  source = "../../modules/network"

  name                    = var.name
  vpc_id                  = var.vpc_id
  private_subnet_ids      = var.private_subnet_ids
  private_route_table_ids = var.private_route_table_ids
  rsfn_destinations       = var.rsfn_destinations
  tags                    = var.tags
}

module "hsm" {
  source = "../../modules/hsm"

  name                      = "${var.name}-hsm"
  subnet_ids                = var.private_subnet_ids
  client_security_group_ids = [module.network.task_security_group_id]
  tags                      = var.tags
}

module "config" {
  source = "../../modules/config"

  name              = var.name
  ssm_path          = var.ssm_path
  infra_ssm_path    = var.infra_ssm_path
  ispb              = var.ispb
  dict_url          = var.dict_url
  spi_url           = var.spi_url
  signing_key_label = var.signing_key_label
  tls_key_label     = var.tls_key_label

  certificates = {
    signing_cert_pem        = local.pem["signing-cert"]
    tls_cert_pem            = local.pem["tls-cert"]
    tls_ca_pem              = local.pem["bacen-tls-ca"]
    bacen_signing_certs_pem = local.pem["bacen-signing-certs"]
    inbound_tls_cert_pem    = local.pem["inbound-tls-cert"]
    inbound_client_ca_pem   = local.pem["inbound-client-ca"]
  }
  inbound_client_allowlist = var.inbound_client_allowlist

  cloudhsm_customer_ca_pem = local.pem["cloudhsm-customer-ca"]

  extra_settings = {
    PIXPROXY_LOG_LEVEL     = "info"
    PIXPROXY_HSM_POOL_SIZE = "8"
  }

  tags = var.tags
}

module "data_lake" {
  source = "../../modules/data_lake"

  name        = var.name
  bucket_name = var.audit_bucket_name
  tags        = var.tags
}

module "service" {
  source = "../../modules/service"

  name                   = var.name
  vpc_id                 = var.vpc_id
  private_subnet_ids     = module.network.private_subnet_ids
  task_security_group_id = module.network.task_security_group_id
  caller_cidrs           = var.caller_cidrs

  image                  = var.image
  cloudwatch_agent_image = var.cloudwatch_agent_image
  ecr_repository_arns    = var.ecr_repository_arns

  autoscaling = {
    min_capacity = 2
    max_capacity = 3
  }

  config_ssm_path                    = module.config.ssm_path
  config_ssm_path_arn                = module.config.ssm_path_arn
  config_kms_key_arn                 = module.config.kms_key_arn
  hsm_pin_secret_arn                 = module.config.hsm_pin_secret_arn
  cloudhsm_customer_ca_parameter_arn = module.config.cloudhsm_customer_ca_parameter_arn
  infra_ssm_path                     = module.config.infra_ssm_path

  hsm_ip_addresses   = module.hsm.hsm_ip_addresses
  audit_stream_names = module.data_lake.firehose_stream_names
  audit_stream_arns  = module.data_lake.firehose_stream_arns
  efs_kms_key_arn    = module.data_lake.kms_key_arn

  tags = var.tags
}

module "monitoring" {
  source = "../../modules/monitoring"

  service_name            = module.service.service_name
  cluster_name            = module.service.cluster_name
  metric_namespace        = module.service.metric_namespace
  request_metric_names    = module.service.request_metric_names
  nlb_arn_suffix          = module.service.nlb_arn_suffix
  target_group_arn_suffix = module.service.target_group_arn_suffix
  hsm_cluster_id          = module.hsm.cluster_id
  firehose_stream_names   = module.data_lake.firehose_stream_names
  alarm_actions           = var.alarm_actions
  ok_actions              = var.alarm_actions
  tags                    = var.tags
}
