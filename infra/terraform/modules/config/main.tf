# The proxy's configuration in AWS: one SSM parameter per setting under var.ssm_path (read at start-up with
# GetParametersByPath, SecureStrings decrypted), the HSM PIN in Secrets Manager, and the value the container platform
# needs (the CloudHSM CA) under a separate path the proxy never reads: the proxy refuses any parameter under its path
# that is not one of its settings.
#
# var.signer chooses where the keys live. "cloudhsm": both keys in the HSM (token and key labels, the PIN secret,
# the cluster CA). "kms": the signing key in AWS KMS (kms_signer module; PIXPROXY_SIGNING_KMS_KEY_ID is set by the
# service module) and the mTLS client key in a Secrets Manager secret created here (PIXPROXY_TLS_KEY_SECRET_ID;
# KMS cannot take part in a TLS handshake): no HSM setting, PIN secret or CloudHSM parameter exists. (Metrics need no identity: the CloudWatch agent scrapes the proxy's operations
# listener inside the task, service module.)
#
# Parameter names follow ssmParameterName() in src/config.ts (PIXPROXY_DICT_URL -> <ssm_path>dict-url);
# test/infra/terraform.test.ts checks the expression below and every key against CONFIG_KEYS.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  placeholder = "REPLACE-ME: set with aws ssm put-parameter --overwrite (see docs/operations.md); this is not a path"

  hsm = var.signer == "cloudhsm"

  # Settings whose values are short strings.
  plain_settings = {
    PIXPROXY_ISPB                     = var.ispb
    PIXPROXY_DICT_URL                 = var.dict_url
    PIXPROXY_SPI_URL                  = var.spi_url
    PIXPROXY_HSM_TOKEN_LABEL          = local.hsm ? var.hsm_token_label : null
    PIXPROXY_SIGNING_KEY_LABEL        = local.hsm ? var.signing_key_label : null
    PIXPROXY_TLS_KEY_LABEL            = local.hsm ? var.tls_key_label : null
    PIXPROXY_INBOUND_CLIENT_ALLOWLIST = join(",", var.inbound_client_allowlist)
  }

  # Certificates and CA bundles: the PEM text itself (the proxy takes PEM or a path in these settings). Bundles can
  # exceed the 4 KB of a standard parameter, so these use Intelligent-Tiering (advanced when needed, up to 8 KB).
  pem_settings = {
    PIXPROXY_SIGNING_CERT_FILE        = var.certificates.signing_cert_pem
    PIXPROXY_TLS_CERT_FILE            = var.certificates.tls_cert_pem
    PIXPROXY_TLS_CA_FILE              = var.certificates.tls_ca_pem
    PIXPROXY_BACEN_SIGNING_CERTS_FILE = var.certificates.bacen_signing_certs_pem
    PIXPROXY_INBOUND_TLS_CERT_FILE    = var.certificates.inbound_tls_cert_pem
    PIXPROXY_INBOUND_CLIENT_CA_FILE   = var.certificates.inbound_client_ca_pem
  }

  settings = merge(
    { for k, v in local.plain_settings : k => { value = v, tier = "Standard" } if v != null },
    { for k, v in local.pem_settings : k => { value = v, tier = "Intelligent-Tiering" } if v != null },
    { for k, v in var.extra_settings : k => { value = v, tier = "Intelligent-Tiering" } },
  )

  ssm_path_arn = "arn:${data.aws_partition.current.partition}:ssm:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:parameter${trimsuffix(var.ssm_path, "/")}"
}

resource "aws_kms_key" "config" {
  description             = "${var.name}: SecureString settings and the HSM PIN secret"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_deletion_window_in_days
  tags                    = var.tags

  lifecycle {
    precondition {
      condition     = !local.hsm || (var.signing_key_label != null && var.tls_key_label != null && var.cloudhsm_customer_ca_pem != null)
      error_message = "signer = \"cloudhsm\" needs signing_key_label, tls_key_label and cloudhsm_customer_ca_pem."
    }
  }
}

resource "aws_kms_alias" "config" {
  name          = "alias/${var.name}-config"
  target_key_id = aws_kms_key.config.key_id
}

resource "aws_ssm_parameter" "setting" {
  for_each = local.settings

  name        = "${var.ssm_path}${replace(lower(trimprefix(each.key, "PIXPROXY_")), "_", "-")}"
  description = "pix-proxy setting ${each.key}"
  type        = "String"
  tier        = each.value.tier
  value       = each.value.value
  tags        = var.tags

  lifecycle {
    precondition {
      condition     = !startswith(var.infra_ssm_path, var.ssm_path)
      error_message = "infra_ssm_path must not be under ssm_path: the proxy refuses parameters under its path that are not settings."
    }
  }
}

# The inbound TLS private key: a SecureString whose value never passes through Terraform state. Terraform creates it
# with a placeholder; the operator writes the PEM (docs/operations.md). Until then the proxy fails at start-up,
# naming the setting.
resource "aws_ssm_parameter" "inbound_tls_key" {
  name        = "${var.ssm_path}inbound-tls-key-file"
  description = "pix-proxy setting PIXPROXY_INBOUND_TLS_KEY_FILE (PEM private key of the inbound TLS certificate)"
  type        = "SecureString"
  key_id      = aws_kms_key.config.arn
  tier        = "Intelligent-Tiering"
  value       = local.placeholder
  tags        = var.tags

  lifecycle {
    ignore_changes = [value]
  }
}

# The HSM PIN (CloudHSM: "<crypto user>:<password>"). The secret is created without a value: the operator sets it
# with put-secret-value, so the PIN is never in Terraform state.
resource "aws_secretsmanager_secret" "hsm_pin" {
  count = local.hsm ? 1 : 0

  name                    = "${var.name}/hsm-pin"
  description             = "CloudHSM crypto-user PIN for pix-proxy, as <CU user>:<password>; set outside Terraform"
  kms_key_id              = aws_kms_key.config.arn
  recovery_window_in_days = var.secret_recovery_window_in_days
  tags                    = var.tags
}

resource "aws_ssm_parameter" "hsm_pin_secret_id" {
  count = local.hsm ? 1 : 0

  name        = "${var.ssm_path}hsm-pin-secret-id"
  description = "pix-proxy setting PIXPROXY_HSM_PIN_SECRET_ID"
  type        = "String"
  value       = aws_secretsmanager_secret.hsm_pin[0].arn
  tags        = var.tags
}

# Platform values outside the proxy's path, injected as container secrets by ECS.
resource "aws_ssm_parameter" "cloudhsm_customer_ca" {
  count = local.hsm ? 1 : 0

  name        = "${var.infra_ssm_path}cloudhsm-customer-ca"
  description = "PEM of the CA that signed the CloudHSM cluster certificate (CLOUDHSM_CUSTOMER_CA for configure-pkcs11)"
  type        = "String"
  tier        = "Intelligent-Tiering"
  value       = var.cloudhsm_customer_ca_pem
  tags        = var.tags
}

# signer = "kms": the mTLS client key (KMS keys cannot be used in a TLS handshake). The secret holds the JSON
# {"key": "<PEM private key>", "certificate": "<PEM certificate>"}; Terraform creates it without a value (the
# operator writes it with put-secret-value, docs/operations.md), so the key is never in Terraform state. The proxy
# holds it in memory only and re-reads it to rotate.
resource "aws_secretsmanager_secret" "tls_key" {
  count = local.hsm ? 0 : 1

  name                    = "${var.name}/tls-client-key"
  description             = "mTLS client key and certificate of pix-proxy towards BACEN (JSON: key, certificate, both PEM); set outside Terraform"
  kms_key_id              = aws_kms_key.config.arn
  recovery_window_in_days = var.secret_recovery_window_in_days
  tags                    = var.tags
}

resource "aws_ssm_parameter" "tls_key_secret_id" {
  count = local.hsm ? 0 : 1

  name        = "${var.ssm_path}tls-key-secret-id"
  description = "pix-proxy setting PIXPROXY_TLS_KEY_SECRET_ID"
  type        = "String"
  value       = aws_secretsmanager_secret.tls_key[0].arn
  tags        = var.tags
}
