variable "region" {
  description = "AWS region (BACEN's RSFN is reached from Brazil: typically sa-east-1)"
  type        = string
  default     = "sa-east-1"
}

variable "name" {
  description = "Name of the deployment, prefix of every resource"
  type        = string
  default     = "pix-proxy"
}

variable "signer" {
  description = "Where the XMLDSig signing key lives: \"cloudhsm\" (a CloudHSM cluster; the mTLS key in the HSM too) or \"kms\" (an AWS KMS RSA_2048 key; the mTLS client key in Secrets Manager). docs/operations.md compares them"
  type        = string
  default     = "cloudhsm"

  validation {
    condition     = contains(["cloudhsm", "kms"], var.signer)
    error_message = "signer is \"cloudhsm\" or \"kms\"."
  }
}

variable "kms_deletion_window_in_days" {
  description = "signer = \"kms\": days (7-30) a signing key scheduled for deletion can still be recovered"
  type        = number
  default     = 30
}

variable "vpc_id" {
  description = "Existing VPC with the RSFN link (Direct Connect or VPN) routed to its private subnets"
  type        = string
}

variable "private_subnet_ids" {
  description = "Existing private subnets in at least two Availability Zones (tasks, HSMs, EFS, endpoints, NLB)"
  type        = list(string)
}

variable "private_route_table_ids" {
  description = "Route tables of the private subnets (S3 gateway endpoint)"
  type        = list(string)
}

variable "rsfn_destinations" {
  description = "BACEN endpoints on the RSFN the tasks may connect to"
  type = list(object({
    cidr        = string
    from_port   = number
    to_port     = number
    description = string
  }))
}

variable "caller_cidrs" {
  description = "CIDRs of the bank core systems that call the proxy"
  type        = list(string)
}

variable "image" {
  description = "pix-proxy image URI in ECR, built with the CloudHSM client"
  type        = string
}

variable "cloudwatch_agent_image" {
  description = "CloudWatch agent image URI in ECR (mirror or pull-through cache)"
  type        = string
}

variable "ecr_repository_arns" {
  description = "ECR repositories of the two images"
  type        = list(string)
}

variable "ssm_path" {
  description = "SSM path of the proxy's settings"
  type        = string
  default     = "/pix/proxy/"
}

variable "infra_ssm_path" {
  description = "SSM path of the platform parameters (not under ssm_path)"
  type        = string
  default     = "/pix/infra/proxy/"
}

variable "ispb" {
  description = "ISPB of the participant"
  type        = string
}

variable "dict_url" {
  description = "DICT origin (homologation: https://dict-h.pi.rsfn.net.br:16522)"
  type        = string
  default     = "https://dict-h.pi.rsfn.net.br:16522"
}

variable "spi_url" {
  description = "ICOM origin (homologation: https://icom-h.pi.rsfn.net.br:16522)"
  type        = string
  default     = "https://icom-h.pi.rsfn.net.br:16522"
}

variable "signing_key_label" {
  description = "Label of the XMLDSig signing key in CloudHSM"
  type        = string
  default     = "pix-sign"
}

variable "tls_key_label" {
  description = "Label of the RSFN mTLS client key in CloudHSM"
  type        = string
  default     = "pix-tls"
}

variable "pem_dir" {
  description = "Directory (outside version control) with the PEM files: signing-cert, tls-cert, bacen-tls-ca, bacen-signing-certs, inbound-tls-cert, inbound-client-ca, cloudhsm-customer-ca (each <name>.pem)"
  type        = string
}

variable "inbound_client_allowlist" {
  description = "SHA-256 fingerprints of the client certificates allowed to call (the bank core systems); at least one"
  type        = list(string)
}

variable "audit_bucket_name" {
  description = "Name of the audit bucket (globally unique)"
  type        = string
}

variable "alarm_actions" {
  description = "SNS topics (or other actions) notified by the alarms"
  type        = list(string)
  default     = []
}

variable "enable_gateway" {
  description = "Also deploy the inbound Open Finance gateway (pix-proxy gateway, issue 17); needs signer = \"cloudhsm\" and gateway-server-cert.pem in pem_dir"
  type        = bool
  default     = false
}

variable "gateway_client_cidrs" {
  description = "enable_gateway: CIDRs of the Open Finance institutions allowed to reach the gateway"
  type        = list(string)
  default     = []
}

variable "gateway_server_key_label" {
  description = "enable_gateway: CKA_LABEL of the gateway's server key in the HSM"
  type        = string
  default     = "pix-gateway-tls"
}

variable "gateway_truststore_bucket_name" {
  description = "enable_gateway: name of the truststore and CRL bucket (globally unique)"
  type        = string
  default     = null
}

variable "gateway_crl_object_names" {
  description = "enable_gateway: CRL object names under crls/ in the truststore bucket, one per CA of the bundle"
  type        = list(string)
  default     = []
}

variable "gateway_backend_url" {
  description = "enable_gateway: the private API Gateway's origin (https://<api-id>.execute-api.<region>.amazonaws.com)"
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags on every resource"
  type        = map(string)
  default = {
    Application = "pix-proxy"
    ManagedBy   = "terraform"
  }
}
