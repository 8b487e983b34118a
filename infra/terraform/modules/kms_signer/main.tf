# The XMLDSig signing key in AWS KMS, the serverless alternative to the CloudHSM cluster (signer = "kms"): an
# asymmetric RSA_2048 SIGN_VERIFY key whose private half never leaves KMS, and an alias the proxy is configured
# with (PIXPROXY_SIGNING_KMS_KEY_ID). src/kms/signer.ts calls DescribeKey and GetPublicKey at start-up (key state,
# usage, spec, and that the public key is the signing certificate's) and Sign per message.
#
# Who may use the key is decided by this key policy alone: the ECS task role is named here for kms:Sign,
# kms:GetPublicKey and kms:DescribeKey, and the account statement grants key administration only, never a
# cryptographic operation, so no IAM policy in the account can give another principal kms:Sign on this key.
# https://docs.aws.amazon.com/kms/latest/developerguide/key-policy-default.html: without a statement for the
# account, IAM policies cannot grant access and the key becomes unmanageable if its principals are deleted; AWS
# also refuses a key policy that would lock out the principal that sets it (the lockout safety check), which the
# administration statement below avoids because it includes kms:PutKeyPolicy. The read actions in it are what
# Terraform refreshes the key with.
#
# Only the task role can sign, so the signing certificate's CSR is made by the task role too: a one-off task of the
# service's task definition with the command overridden to `csr --key <alias ARN> --subject ...` (docs/operations.md).

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  account_root = "arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"

  # Key administration for the account (delegated to IAM): lifecycle, policy, aliases, tags. No Sign, Verify or
  # GetPublicKey: those belong to the task role only.
  admin_actions = [
    "kms:CancelKeyDeletion",
    "kms:CreateAlias",
    "kms:DeleteAlias",
    "kms:DescribeKey",
    "kms:DisableKey",
    "kms:EnableKey",
    "kms:GetKeyPolicy",
    "kms:GetKeyRotationStatus",
    "kms:ListResourceTags",
    "kms:PutKeyPolicy",
    "kms:ScheduleKeyDeletion",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:UpdateAlias",
    "kms:UpdateKeyDescription",
  ]

  # What the proxy calls (src/kms/signer.ts: DescribeKeyCommand, GetPublicKeyCommand, SignCommand).
  signer_actions = ["kms:DescribeKey", "kms:GetPublicKey", "kms:Sign"]
}

data "aws_iam_policy_document" "key" {
  statement {
    sid       = "AccountAdministersTheKey"
    actions   = local.admin_actions
    resources = ["*"] # In a key policy, "*" is this key.

    principals {
      type        = "AWS"
      identifiers = [local.account_root]
    }
  }

  statement {
    sid       = "ProxyTasksSign"
    actions   = local.signer_actions
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = [var.task_role_arn]
    }
  }
}

resource "aws_kms_key" "signing" {
  description              = "${var.name}: XMLDSig signing key of the PIX messages (RSA_2048, SIGN_VERIFY)"
  customer_master_key_spec = "RSA_2048"
  key_usage                = "SIGN_VERIFY"
  deletion_window_in_days  = var.deletion_window_in_days
  # Asymmetric keys cannot rotate automatically: a new key means a new certificate (docs/operations.md).
  enable_key_rotation = false
  policy              = data.aws_iam_policy_document.key.json
  tags                = var.tags

  # The key signs for the participant's ICP-Brasil certificate: replacing it silently would break every signature
  # until a new certificate is issued.
  lifecycle {
    prevent_destroy = true
  }
}

resource "aws_kms_alias" "signing" {
  name          = "alias/${var.name}-signing"
  target_key_id = aws_kms_key.signing.key_id
}
