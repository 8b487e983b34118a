variable "name" {
  description = "Name prefix for every resource (e.g. pix-proxy-prod)"
  type        = string
}

variable "vpc_id" {
  description = "ID of the existing VPC the proxy runs in"
  type        = string
}

variable "private_subnet_ids" {
  description = "Existing private subnets (one per Availability Zone) for the tasks and, unless endpoint_subnet_ids is set, the interface endpoints"
  type        = list(string)

  validation {
    condition     = length(var.private_subnet_ids) >= 2
    error_message = "Give at least two private subnets in different Availability Zones."
  }
}

variable "endpoint_subnet_ids" {
  description = "Subnets for the interface endpoints when they differ from private_subnet_ids; null uses private_subnet_ids"
  type        = list(string)
  default     = null
}

variable "private_route_table_ids" {
  description = "Route tables of the private subnets, for the S3 gateway endpoint"
  type        = list(string)
  default     = []
}

variable "interface_endpoint_services" {
  description = "AWS services to create interface endpoints for (the part after com.amazonaws.<region>.). Remove a service only when the VPC already has an endpoint for it (then add its subnets to additional_https_egress_cidrs)"
  type        = list(string)
  default     = ["secretsmanager", "ssm", "kinesis-firehose", "logs", "ecr.api", "ecr.dkr"]
}

variable "create_kms_endpoint" {
  description = "Add an interface endpoint for KMS (com.amazonaws.<region>.kms, private DNS, the endpoints' security group: HTTPS from the tasks only). Set true when the signing key is in KMS (signer = \"kms\")"
  type        = bool
  default     = false
}

variable "create_s3_gateway_endpoint" {
  description = "Create an S3 gateway endpoint on private_route_table_ids (ECR stores image layers in S3). Set false when the route tables already have one"
  type        = bool
  default     = true
}

variable "additional_https_egress_cidrs" {
  description = "Extra CIDRs the tasks may reach on TCP 443, for VPC endpoints that exist outside this module"
  type        = list(string)
  default     = []
}

variable "rsfn_destinations" {
  description = "BACEN endpoints on the RSFN (reached over Direct Connect or VPN): the only non-AWS destinations the tasks may open connections to"
  type = list(object({
    cidr        = string
    from_port   = number
    to_port     = number
    description = string
  }))

  validation {
    condition     = length(var.rsfn_destinations) > 0 && alltrue([for d in var.rsfn_destinations : d.cidr != "0.0.0.0/0"])
    error_message = "List the RSFN CIDRs explicitly; 0.0.0.0/0 is not an RSFN destination."
  }
}

variable "tags" {
  description = "Tags added to every resource"
  type        = map(string)
  default     = {}
}
