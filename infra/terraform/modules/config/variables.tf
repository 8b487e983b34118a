variable "name" {
  description = "Name prefix (KMS alias, secret name)"
  type        = string
}

variable "signer" {
  description = "Where the keys live: \"cloudhsm\" (signing and mTLS keys in the HSM: labels, PIN secret, cluster CA) or \"kms\" (signing key in AWS KMS, mTLS client key in a Secrets Manager secret this module creates)"
  type        = string
  default     = "cloudhsm"

  validation {
    condition     = contains(["cloudhsm", "kms"], var.signer)
    error_message = "signer is \"cloudhsm\" or \"kms\"."
  }
}

variable "ssm_path" {
  description = "SSM path the proxy reads its settings from (PIXPROXY_CONFIG_SSM_PATH); starts and ends with /"
  type        = string
  default     = "/pix/proxy/"

  validation {
    condition     = can(regex("^/([a-zA-Z0-9_.-]+/)+$", var.ssm_path))
    error_message = "ssm_path starts and ends with / and has at least one level, e.g. /pix/proxy/."
  }
}

variable "infra_ssm_path" {
  description = "SSM path for platform values the proxy does not read (the CloudHSM CA; the service module adds the CloudWatch agent configuration); must not be under ssm_path"
  type        = string
  default     = "/pix/infra/proxy/"

  validation {
    condition     = can(regex("^/([a-zA-Z0-9_.-]+/)+$", var.infra_ssm_path))
    error_message = "infra_ssm_path starts and ends with /, e.g. /pix/infra/proxy/."
  }
}

variable "ispb" {
  description = "ISPB of the participant the proxy signs for (PIXPROXY_ISPB)"
  type        = string

  validation {
    condition     = can(regex("^[0-9A-Z]{8}$", var.ispb))
    error_message = "ISPB is 8 characters, digits or capital letters."
  }
}

variable "dict_url" {
  description = "DICT origin on the RSFN (PIXPROXY_DICT_URL), e.g. https://dict.pi.rsfn.net.br:16422 in production (homologation: https://dict-h.pi.rsfn.net.br:16522)"
  type        = string

  validation {
    condition     = can(regex("^https://[^/?#]+$", var.dict_url))
    error_message = "dict_url is an https origin without a path."
  }
}

variable "spi_url" {
  description = "SPI/ICOM origin on the RSFN (PIXPROXY_SPI_URL), e.g. https://icom.pi.rsfn.net.br:16422 in production (homologation: https://icom-h.pi.rsfn.net.br:16522)"
  type        = string

  validation {
    condition     = can(regex("^https://[^/?#]+$", var.spi_url))
    error_message = "spi_url is an https origin without a path."
  }
}

variable "hsm_token_label" {
  description = "PKCS#11 token label (PIXPROXY_HSM_TOKEN_LABEL); CloudHSM Client SDK 5 exposes one token, check its label with pkcs11-tool -L"
  type        = string
  default     = "hsm1"
}

variable "signing_key_label" {
  description = "CKA_LABEL of the XMLDSig signing key in the HSM (PIXPROXY_SIGNING_KEY_LABEL); required with signer = \"cloudhsm\", unused with \"kms\""
  type        = string
  default     = null
}

variable "tls_key_label" {
  description = "CKA_LABEL of the mTLS client key in the HSM (PIXPROXY_TLS_KEY_LABEL); required with signer = \"cloudhsm\", unused with \"kms\""
  type        = string
  default     = null
}

variable "certificates" {
  description = "PEM text of the certificates and CA bundles (or an absolute path to a file inside the image for a bundle too large for SSM's 8 KB). inbound_client_ca_pem issues the bank core systems' client certificates (required: the proxy refuses to start on a non-loopback address without it)"
  type = object({
    signing_cert_pem        = string
    tls_cert_pem            = string
    tls_ca_pem              = string
    bacen_signing_certs_pem = string
    inbound_tls_cert_pem    = string
    inbound_client_ca_pem   = string
  })

  validation {
    # A value that is not PEM is read by the proxy as a path: catch a pasted DER or base64 blob here.
    condition     = alltrue([for v in values(var.certificates) : v == null || can(regex("^(\\s*-----BEGIN |/)", v))])
    error_message = "Each certificate value is PEM text (starting with -----BEGIN) or an absolute path."
  }
}

variable "inbound_client_allowlist" {
  description = "SHA-256 fingerprints (AA:BB:...) of the client certificates allowed to call the proxy (PIXPROXY_INBOUND_CLIENT_ALLOWLIST): the bank core systems. Required: the proxy refuses to start on a non-loopback address without one"
  type        = list(string)

  validation {
    condition     = length(var.inbound_client_allowlist) > 0
    error_message = "List at least one client certificate fingerprint: without an allowlist the proxy would sign for any holder of a certificate the client CA issued, and it refuses to start."
  }

  validation {
    condition     = alltrue([for f in var.inbound_client_allowlist : can(regex("^([0-9A-Fa-f]{2}:){31}[0-9A-Fa-f]{2}$", f))])
    error_message = "Fingerprints are SHA-256, 32 bytes as AA:BB:..."
  }
}

variable "extra_settings" {
  description = "Further settings by environment name (e.g. PIXPROXY_LOG_LEVEL = \"info\"), stored under ssm_path. Names the task definition sets in the environment win over these (see the service module)"
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k in keys(var.extra_settings) : can(regex("^PIXPROXY_[A-Z0-9_]+$", k))])
    error_message = "Setting names are PIXPROXY_* environment names."
  }

  validation {
    condition = length(setintersection(keys(var.extra_settings), [
      "PIXPROXY_ISPB", "PIXPROXY_DICT_URL", "PIXPROXY_SPI_URL", "PIXPROXY_HSM_TOKEN_LABEL", "PIXPROXY_SIGNING_KEY_LABEL",
      "PIXPROXY_TLS_KEY_LABEL", "PIXPROXY_INBOUND_CLIENT_ALLOWLIST", "PIXPROXY_SIGNING_CERT_FILE", "PIXPROXY_TLS_CERT_FILE",
      "PIXPROXY_TLS_CA_FILE", "PIXPROXY_BACEN_SIGNING_CERTS_FILE", "PIXPROXY_INBOUND_TLS_CERT_FILE",
      "PIXPROXY_INBOUND_CLIENT_CA_FILE", "PIXPROXY_INBOUND_TLS_KEY_FILE", "PIXPROXY_HSM_PIN_SECRET_ID",
      "PIXPROXY_TLS_KEY_SECRET_ID", "PIXPROXY_SIGNING_KMS_KEY_ID",
    ])) == 0
    error_message = "extra_settings must not repeat a setting this module manages."
  }
}

variable "cloudhsm_customer_ca_pem" {
  description = "PEM of the issuing CA you signed the CloudHSM cluster CSR with (known after initialisation; see docs/operations.md); required with signer = \"cloudhsm\", null with \"kms\""
  type        = string
  default     = null

  validation {
    condition     = var.cloudhsm_customer_ca_pem == null || can(regex("^\\s*-----BEGIN ", var.cloudhsm_customer_ca_pem))
    error_message = "cloudhsm_customer_ca_pem is PEM text."
  }
}

variable "kms_deletion_window_in_days" {
  description = "Waiting period before the config KMS key is deleted"
  type        = number
  default     = 30
}

variable "secret_recovery_window_in_days" {
  description = "Days a deleted HSM PIN secret (or, with signer = \"kms\", TLS client key secret) can be restored"
  type        = number
  default     = 30
}

variable "tags" {
  description = "Tags added to every resource"
  type        = map(string)
  default     = {}
}
