# The whole pix-proxy deployment in one root module: network inputs and endpoints, the CloudHSM cluster, the
# configuration in SSM and Secrets Manager, the audit data lake, the ECS service and its monitoring.
#
# var.signer chooses where the signing key lives (docs/operations.md "Choosing between CloudHSM and KMS"):
#
# "cloudhsm", two phases: the HSM cluster must be initialised by hand before the service can start.
#   1. terraform apply -target=module.network -target=module.hsm
#   2. initialise the cluster, create the crypto user and the keys, put cloudhsm-customer-ca.pem in pem_dir
#   3. terraform apply
#   4. write the values Terraform never holds: the HSM PIN and the inbound TLS key
#
# "kms": no HSM cluster, no HSM security group rules, no PIN. The signing key is created in KMS (kms_signer) and
# only the task role may sign with it; the mTLS client key goes in a Secrets Manager secret.
#   1. terraform apply (the service starts only once the certificates and the TLS key secret are in place)
#   2. the signing certificate's CSR from a one-off task (only the task role may sign: docs/operations.md); put
#      signing-cert.pem in pem_dir, apply again
#   3. write the values Terraform never holds: the TLS client key secret ({"key", "certificate"}) and the inbound
#      TLS key

provider "aws" {
  region = var.region

  default_tags {
    tags = var.tags
  }
}

locals {
  # Every PEM this deployment reads from pem_dir. A missing one is null here and named by the check below (an index
  # into a map of what exists failed with "Invalid index", naming no file).
  hsm         = var.signer == "cloudhsm"
  pem_names   = concat(["signing-cert", "tls-cert", "bacen-tls-ca", "bacen-signing-certs", "inbound-tls-cert", "inbound-client-ca"], local.hsm ? ["cloudhsm-customer-ca"] : [], var.enable_gateway ? ["gateway-server-cert"] : [])
  pem         = { for n in local.pem_names : n => fileexists("${var.pem_dir}/${n}.pem") ? file("${var.pem_dir}/${n}.pem") : null }
  missing_pem = [for n in local.pem_names : "${var.pem_dir}/${n}.pem" if local.pem[n] == null]
}

resource "terraform_data" "pem_files" {
  lifecycle {
    precondition {
      condition     = length(local.missing_pem) == 0
      error_message = "Missing PEM files (docs/operations.md, Secrets): ${join(", ", local.missing_pem)}"
    }

    # The gateway's server key is in the HSM.
    precondition {
      condition     = !var.enable_gateway || local.hsm
      error_message = "enable_gateway needs signer = \"cloudhsm\": the gateway's server key lives in the HSM."
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
  create_kms_endpoint     = !local.hsm
  tags                    = var.tags
}

# signer = "cloudhsm" only: with "kms" there is no cluster, no HSM and no HSM security group rule.
module "hsm" {
  source = "../../modules/hsm"
  count  = local.hsm ? 1 : 0

  name                      = "${var.name}-hsm"
  subnet_ids                = var.private_subnet_ids
  client_security_group_ids = [module.network.task_security_group_id]
  tags                      = var.tags
}

# signer = "kms" only: the signing key, which the service's task role alone may use.
module "kms_signer" {
  source = "../../modules/kms_signer"
  count  = local.hsm ? 0 : 1

  name                    = var.name
  task_role_arn           = module.service.task_role_arn
  deletion_window_in_days = var.kms_deletion_window_in_days
  tags                    = var.tags
}

module "config" {
  source = "../../modules/config"

  name              = var.name
  signer            = var.signer
  ssm_path          = var.ssm_path
  infra_ssm_path    = var.infra_ssm_path
  ispb              = var.ispb
  dict_url          = var.dict_url
  spi_url           = var.spi_url
  signing_key_label = local.hsm ? var.signing_key_label : null
  tls_key_label     = local.hsm ? var.tls_key_label : null

  certificates = {
    signing_cert_pem        = local.pem["signing-cert"]
    tls_cert_pem            = local.pem["tls-cert"]
    tls_ca_pem              = local.pem["bacen-tls-ca"]
    bacen_signing_certs_pem = local.pem["bacen-signing-certs"]
    inbound_tls_cert_pem    = local.pem["inbound-tls-cert"]
    inbound_client_ca_pem   = local.pem["inbound-client-ca"]
  }
  inbound_client_allowlist = var.inbound_client_allowlist

  cloudhsm_customer_ca_pem = local.hsm ? local.pem["cloudhsm-customer-ca"] : null

  # The HSM session pool only with the HSM (a for expression: a conditional between two object literals of different
  # attributes has no common type).
  extra_settings = merge(
    { PIXPROXY_LOG_LEVEL = "info" },
    { for k, v in { PIXPROXY_HSM_POOL_SIZE = "8" } : k => v if local.hsm },
  )

  tags = var.tags
}

module "data_lake" {
  source = "../../modules/data_lake"

  name           = var.name
  bucket_name    = var.audit_bucket_name
  enable_gateway = var.enable_gateway
  tags           = var.tags
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

  config_ssm_path     = module.config.ssm_path
  config_ssm_path_arn = module.config.ssm_path_arn
  config_kms_key_arn  = module.config.kms_key_arn
  infra_ssm_path      = module.config.infra_ssm_path

  signer                             = var.signer
  hsm_pin_secret_arn                 = module.config.hsm_pin_secret_arn
  cloudhsm_customer_ca_parameter_arn = module.config.cloudhsm_customer_ca_parameter_arn
  hsm_ip_addresses                   = local.hsm ? module.hsm[0].hsm_ip_addresses : []
  signing_kms_key_id                 = local.hsm ? null : module.kms_signer[0].alias_arn
  tls_key_secret_arn                 = module.config.tls_key_secret_arn

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
  signer                  = var.signer
  hsm_cluster_id          = local.hsm ? module.hsm[0].cluster_id : null
  firehose_stream_names   = module.data_lake.firehose_stream_names
  alarm_actions           = var.alarm_actions
  ok_actions              = var.alarm_actions
  tags                    = var.tags
}

# The inbound Open Finance gateway (issue 17), optional: the same image with its own entry point, in the proxy's
# cluster, with its own NLB, truststore bucket, private API endpoint and audit stream; its server key in the HSM.
module "gateway" {
  source = "../../modules/gateway"
  count  = var.enable_gateway ? 1 : 0

  name               = var.name
  vpc_id             = var.vpc_id
  private_subnet_ids = module.network.private_subnet_ids
  client_cidrs       = var.gateway_client_cidrs

  cluster_arn         = module.service.cluster_arn
  cluster_name        = module.service.cluster_name
  image               = var.image
  ecr_repository_arns = var.ecr_repository_arns

  server_cert_pem                    = local.pem["gateway-server-cert"]
  server_key_label                   = var.gateway_server_key_label
  hsm_ip_addresses                   = module.hsm[0].hsm_ip_addresses
  hsm_security_group_id              = module.hsm[0].security_group_id
  hsm_pin_secret_arn                 = module.config.hsm_pin_secret_arn
  cloudhsm_customer_ca_parameter_arn = module.config.cloudhsm_customer_ca_parameter_arn
  infra_ssm_path                     = module.config.infra_ssm_path
  kms_key_arn                        = module.config.kms_key_arn

  truststore_bucket_name = var.gateway_truststore_bucket_name
  crl_object_names       = var.gateway_crl_object_names
  backend_url            = var.gateway_backend_url

  endpoint_security_group_id = module.network.endpoint_security_group_id
  s3_prefix_list_id          = module.network.s3_prefix_list_id

  audit_stream_name = module.data_lake.gateway_firehose_stream_name
  audit_stream_arn  = module.data_lake.gateway_firehose_stream_arn
  # The gateway's audit spool file system, encrypted with the audit key, as the proxy's.
  efs_kms_key_arn = module.data_lake.kms_key_arn

  tags = var.tags
}
