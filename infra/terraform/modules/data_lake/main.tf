# The audit data lake: the proxy ships one JSON record per transaction to a Firehose stream per system (spi, dict);
# Firehose converts them to Parquet using the Glue table as the schema and writes them under
# log/<system>/year=/month=/day=/hour=/ in an SSE-KMS, versioned bucket; Athena queries the tables through partition
# projection (no crawler, no MSCK REPAIR).
#
# The Firehose partitions are the hour the record ARRIVED at Firehose (!{timestamp:...} is the approximate arrival
# time, UTC), not request_date: rows replayed from the spool after an outage land in a later hour. Queries filter
# partitions with a margin and then on request_date (docs/operations.md).

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  systems = ["spi", "dict"]

  # The inbound Open Finance gateway (pix-proxy gateway, issue 17) ships its own rows to its own stream and table
  # when enable_gateway is set. Its row is not the PIX transaction's: columns below.
  gateway_systems = var.enable_gateway ? ["gateway"] : []
  streams         = concat(local.systems, local.gateway_systems)

  partition_keys = ["year", "month", "day", "hour"]

  # The audit row, in order: names and Glue (Hive) types of AUDIT_COLUMNS in src/audit/schema.ts, descriptions as
  # column comments. test/infra/terraform.test.ts fails when this list and the schema differ.
  audit_columns = [
    { name = "id", type = "string", comment = "Unique id of the transaction (UUID v7, time-ordered); delivery is at least once, so deduplicate on it" },
    { name = "request_date", type = "timestamp", comment = "When the proxy received the request (UTC, millisecond precision); partitions derive from it" },
    { name = "system", type = "string", comment = "spi or dict" },
    { name = "request_method", type = "string", comment = "HTTP method sent to BACEN" },
    { name = "request_path", type = "string", comment = "Path sent to BACEN, without the query string" },
    { name = "request_query", type = "string", comment = "Query string sent to BACEN, without the leading ?" },
    { name = "request_header", type = "string", comment = "JSON object of the request headers sent to BACEN (allowlisted; never credentials)" },
    { name = "request_body", type = "string", comment = "The request body exactly as sent to BACEN (the signed XML; multipart bodies whole)" },
    { name = "message_type", type = "string", comment = "SPI MsgDefIdr (e.g. pacs.008.spi.1.13) or DICT request root element (e.g. CreateEntryRequest); for an ICOM stream read, the types of the messages the page delivered (stream read, or stream end, when it delivered none); comma-separated when several" },
    { name = "biz_msg_id", type = "string", comment = "SPI AppHdr/BizMsgIdr of the messages sent, or delivered by a stream read; comma-separated when several" },
    { name = "end_to_end_ids", type = "string", comment = "SPI EndToEndIds and OrgnlEndToEndIds of the messages sent, or delivered by a stream read; comma-separated" },
    { name = "dict_request_id", type = "string", comment = "DICT RequestId (idempotency key) when the body has one" },
    { name = "dict_key", type = "string", comment = "DICT key the operation is about, when there is one" },
    { name = "response_status_code", type = "int", comment = "HTTP status from BACEN; null when no response arrived" },
    { name = "response_header", type = "string", comment = "JSON object of BACEN's response headers (allowlisted)" },
    { name = "response_body", type = "string", comment = "BACEN's response body after decompression" },
    { name = "response_signature_valid", type = "boolean", comment = "Whether BACEN's response signature verified; null when the body is unsigned" },
    { name = "response_signature_code", type = "string", comment = "Verification code (VALID, DIGEST_MISMATCH, CERT_EXPIRED, NOT_APPLICABLE when BACEN signs nothing in the answer, …)" },
    { name = "error_code", type = "string", comment = "PIXPROXY_ERR_* code when the call failed (timeout, unreachable, rejected signature); PIXPROXY_ERR_AUDIT_INCOMPLETE when the process died before the outcome was known" },
    { name = "upstream_latency_ms", type = "double", comment = "Time from sending to BACEN to the last byte of its response" },
    { name = "total_latency_ms", type = "double", comment = "Time from receiving the caller's request to answering it" },
    { name = "correlation_id", type = "string", comment = "The proxy's request id (x-request-id), also in its logs" },
    { name = "instance_id", type = "string", comment = "The proxy instance (ECS task) that handled the transaction" },
    { name = "trace_id", type = "string", comment = "Trace id (32 hex digits) of the W3C traceparent the caller sent, or of the trace the proxy started when it sent none or an invalid one; also in the proxy's logs (traceId). Null in rows from before it was recorded" },
  ]

  # The gateway's audit row, in order (GATEWAY_AUDIT_COLUMNS of src/gateway/audit.ts on the gateway's branch).
  gateway_audit_columns = [
    { name = "id", type = "string", comment = "Unique id of the call (x-request-id sent to the backend); deduplicate on it" },
    { name = "request_date", type = "timestamp", comment = "When the gateway received the request (UTC, millisecond precision)" },
    { name = "client_subject", type = "string", comment = "Subject DN of the client certificate" },
    { name = "client_serial", type = "string", comment = "Serial number of the client certificate" },
    { name = "client_thumbprint", type = "string", comment = "base64url SHA-256 of the client certificate's DER (RFC 8705 x5t#S256)" },
    { name = "client_cnpj", type = "string", comment = "CNPJ from the ICP-Brasil certificate" },
    { name = "client_organisation_id", type = "string", comment = "Open Finance organisation id from the certificate" },
    { name = "client_software_statement_id", type = "string", comment = "Open Finance software statement id from the certificate" },
    { name = "route", type = "string", comment = "The allowlist pattern that matched, or null" },
    { name = "method", type = "string", comment = "HTTP method" },
    { name = "path", type = "string", comment = "Request path" },
    { name = "status", type = "int", comment = "HTTP status answered to the client" },
    { name = "error_code", type = "string", comment = "Error code when the call was refused or failed" },
    { name = "latency_ms", type = "double", comment = "Time from request to response" },
    { name = "request_bytes", type = "bigint", comment = "Bytes of the request body" },
    { name = "response_bytes", type = "bigint", comment = "Bytes of the response body" },
    { name = "instance_id", type = "string", comment = "The gateway instance (ECS task)" },
  ]
  columns = merge({ for s in local.systems : s => local.audit_columns }, { for s in local.gateway_systems : s => local.gateway_audit_columns })

  bucket_arn         = aws_s3_bucket.audit.arn
  log_prefix         = "log/"
  error_prefix       = "errors/"
  athena_prefix      = "athena-results/"
  glue_catalog_arn   = "arn:${data.aws_partition.current.partition}:glue:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:catalog"
  glue_database_arn  = "arn:${data.aws_partition.current.partition}:glue:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:database/${aws_glue_catalog_database.audit.name}"
  glue_table_arns    = [for s in local.streams : "arn:${data.aws_partition.current.partition}:glue:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:table/${aws_glue_catalog_database.audit.name}/${s}"]
  firehose_log_group = "/aws/kinesisfirehose/${var.name}-audit"
}

# ---------------------------------------------------------------------------------------------------------------
# Encryption key and bucket
# ---------------------------------------------------------------------------------------------------------------

resource "aws_kms_key" "audit" {
  description             = "${var.name}: audit data lake (S3 objects, Firehose at rest, Athena results)"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_deletion_window_in_days
  tags                    = var.tags
}

resource "aws_kms_alias" "audit" {
  name          = "alias/${var.name}-audit"
  target_key_id = aws_kms_key.audit.key_id
}

resource "aws_s3_bucket" "audit" {
  bucket = var.bucket_name
  tags   = var.tags
}

resource "aws_s3_bucket_ownership_controls" "audit" {
  bucket = aws_s3_bucket.audit.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "audit" {
  bucket                  = aws_s3_bucket.audit.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "audit" {
  bucket = aws_s3_bucket.audit.id

  versioning_configuration {
    status = "Enabled"
  }
}

# S3 Object Lock (WORM) with a default retention, opt-in. What is NOT verified: that Amazon Data Firehose can deliver
# to a bucket with a default retention. S3 refuses a PUT that carries Object Lock parameters (a default retention
# counts) unless it has Content-MD5 or an x-amz-checksum-* header ("Content-MD5 HTTP header is required for Put
# Object requests with Object Lock parameters": kopia/kopia#711, aws/aws-sdk-php#1694, vectordotdev/vector#7936).
# AWS's Firehose documentation (developer guide: S3 destination, troubleshooting, retry) says nothing either way,
# and no AWS source was found saying Firehose sends such a header. If Firehose's PUTs were refused, DirectPut
# streams retry S3 for at most 24 hours and then drop the data (https://docs.aws.amazon.com/firehose/latest/dev/retry.html),
# after the proxy has already counted the rows as shipped. Hence the precondition: enable it only after a test
# delivery in a non-production account shows Parquet objects landing with the retention (s3api get-object-retention)
# and DeliveryToS3.Success = 1, and say so with object_lock_firehose_delivery_verified = true.
#
# Enabled here on the existing, versioned bucket (S3 and the provider allow it) rather than with
# aws_s3_bucket.object_lock_enabled, which forces a new bucket: the audit bucket is never replaced. Once enabled,
# Object Lock cannot be disabled nor versioning suspended. Athena query results (athena-results/) and Firehose
# error output (errors/) in this bucket get the same default retention: they stay, locked, beyond their lifecycle.
resource "aws_s3_bucket_object_lock_configuration" "audit" {
  count = var.object_lock_enabled ? 1 : 0

  bucket = aws_s3_bucket.audit.id

  rule {
    default_retention {
      mode = var.object_lock_mode
      days = var.object_lock_retention_days
    }
  }

  depends_on = [aws_s3_bucket_versioning.audit]

  lifecycle {
    precondition {
      condition     = var.object_lock_firehose_delivery_verified
      error_message = "Object Lock with a default retention needs Content-MD5 or an x-amz-checksum-* header on every PUT, and AWS does not document that Amazon Data Firehose sends one. Verify a delivery to a locked bucket in a non-production account (objects land with the retention; DeliveryToS3.Success = 1), then set object_lock_firehose_delivery_verified = true."
    }
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "audit" {
  bucket = aws_s3_bucket.audit.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.audit.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "audit" {
  bucket = aws_s3_bucket.audit.id

  # Parquet audit files: cheaper storage as they age, deleted after the retention period.
  rule {
    id     = "audit-log"
    status = "Enabled"

    filter {
      prefix = local.log_prefix
    }

    transition {
      days          = var.transition_to_ia_days
      storage_class = "STANDARD_IA"
    }

    transition {
      days          = var.transition_to_glacier_ir_days
      storage_class = "GLACIER_IR"
    }

    expiration {
      days = var.retention_days
    }

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_retention_days
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  # Records Firehose could not convert or deliver are audit rows too: same retention as the log.
  rule {
    id     = "audit-errors"
    status = "Enabled"

    filter {
      prefix = local.error_prefix
    }

    expiration {
      days = var.retention_days
    }

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_retention_days
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  # Athena query results are disposable.
  rule {
    id     = "athena-results"
    status = "Enabled"

    filter {
      prefix = local.athena_prefix
    }

    expiration {
      days = var.athena_results_retention_days
    }

    noncurrent_version_expiration {
      noncurrent_days = 1
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  depends_on = [aws_s3_bucket_versioning.audit]
}

data "aws_iam_policy_document" "bucket" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [local.bucket_arn, "${local.bucket_arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }

  statement {
    sid       = "DenyUnencryptedObjectUploads"
    effect    = "Deny"
    actions   = ["s3:PutObject"]
    resources = ["${local.bucket_arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "StringNotEqualsIfExists"
      variable = "s3:x-amz-server-side-encryption"
      values   = ["aws:kms"]
    }
  }
}

resource "aws_s3_bucket_policy" "audit" {
  bucket = aws_s3_bucket.audit.id
  policy = data.aws_iam_policy_document.bucket.json

  depends_on = [aws_s3_bucket_public_access_block.audit]
}

# ---------------------------------------------------------------------------------------------------------------
# Glue catalog: one table per system, partition projection over the Firehose prefixes
# ---------------------------------------------------------------------------------------------------------------

resource "aws_glue_catalog_database" "audit" {
  name        = var.glue_database_name
  description = "pix-proxy audit trail (one row per transaction with BACEN)"
}

resource "aws_glue_catalog_table" "audit" {
  for_each = toset(local.streams)

  name          = each.key
  database_name = aws_glue_catalog_database.audit.name
  description   = "pix-proxy audit rows for ${each.key}; partitions are the Firehose arrival hour (UTC)"
  table_type    = "EXTERNAL_TABLE"

  parameters = {
    EXTERNAL                    = "TRUE"
    "classification"            = "parquet"
    "parquet.compression"       = "SNAPPY"
    "projection.enabled"        = "true"
    "projection.year.type"      = "integer"
    "projection.year.range"     = "${var.first_audit_year},2099"
    "projection.month.type"     = "integer"
    "projection.month.range"    = "1,12"
    "projection.month.digits"   = "2"
    "projection.day.type"       = "integer"
    "projection.day.range"      = "1,31"
    "projection.day.digits"     = "2"
    "projection.hour.type"      = "integer"
    "projection.hour.range"     = "0,23"
    "projection.hour.digits"    = "2"
    "storage.location.template" = "s3://${aws_s3_bucket.audit.bucket}/${local.log_prefix}${each.key}/year=$${year}/month=$${month}/day=$${day}/hour=$${hour}/"
  }

  dynamic "partition_keys" {
    for_each = local.partition_keys
    content {
      name    = partition_keys.value
      type    = "string"
      comment = "Firehose arrival ${partition_keys.value} (UTC, zero-padded)"
    }
  }

  storage_descriptor {
    location      = "s3://${aws_s3_bucket.audit.bucket}/${local.log_prefix}${each.key}/"
    input_format  = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
    output_format = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"

    ser_de_info {
      name                  = "parquet"
      serialization_library = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
      parameters = {
        "serialization.format" = "1"
      }
    }

    dynamic "columns" {
      for_each = local.columns[each.key]
      content {
        name    = columns.value.name
        type    = columns.value.type
        comment = columns.value.comment
      }
    }
  }
}

# ---------------------------------------------------------------------------------------------------------------
# Firehose: JSON in, Parquet out
# ---------------------------------------------------------------------------------------------------------------

data "aws_iam_policy_document" "firehose_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["firehose.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

resource "aws_iam_role" "firehose" {
  name_prefix        = "${var.name}-firehose-"
  assume_role_policy = data.aws_iam_policy_document.firehose_assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "firehose" {
  statement {
    sid = "WriteAuditObjects"
    actions = [
      "s3:AbortMultipartUpload",
      "s3:GetBucketLocation",
      "s3:GetObject",
      "s3:ListBucket",
      "s3:ListBucketMultipartUploads",
      "s3:PutObject",
    ]
    resources = [local.bucket_arn, "${local.bucket_arn}/${local.log_prefix}*", "${local.bucket_arn}/${local.error_prefix}*"]
  }

  statement {
    sid       = "EncryptAuditObjects"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = [aws_kms_key.audit.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${data.aws_region.current.name}.amazonaws.com"]
    }
  }

  statement {
    sid       = "ReadParquetSchema"
    actions   = ["glue:GetTable", "glue:GetTableVersion", "glue:GetTableVersions"]
    resources = concat([local.glue_catalog_arn, local.glue_database_arn], local.glue_table_arns)
  }

  statement {
    sid       = "DeliveryErrorLogs"
    actions   = ["logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.firehose.arn}:log-stream:*"]
  }
}

resource "aws_iam_role_policy" "firehose" {
  name   = "deliver-audit"
  role   = aws_iam_role.firehose.id
  policy = data.aws_iam_policy_document.firehose.json
}

resource "aws_cloudwatch_log_group" "firehose" {
  name              = local.firehose_log_group
  retention_in_days = var.log_retention_days
  tags              = var.tags
}

resource "aws_cloudwatch_log_stream" "firehose" {
  for_each       = toset(local.streams)
  name           = "S3Delivery-${each.key}"
  log_group_name = aws_cloudwatch_log_group.firehose.name
}

resource "aws_kinesis_firehose_delivery_stream" "audit" {
  for_each = toset(local.streams)

  name        = "${var.name}-audit-${each.key}"
  destination = "extended_s3"
  tags        = var.tags

  # Records wait up to 24 h in Firehose when S3 is unavailable: encrypted at rest with our key.
  server_side_encryption {
    enabled  = true
    key_type = "CUSTOMER_MANAGED_CMK"
    key_arn  = aws_kms_key.audit.arn
  }

  extended_s3_configuration {
    role_arn    = aws_iam_role.firehose.arn
    bucket_arn  = aws_s3_bucket.audit.arn
    kms_key_arn = aws_kms_key.audit.arn

    prefix              = "${local.log_prefix}${each.key}/year=!{timestamp:yyyy}/month=!{timestamp:MM}/day=!{timestamp:dd}/hour=!{timestamp:HH}/"
    error_output_prefix = "${local.error_prefix}${each.key}/!{firehose:error-output-type}/year=!{timestamp:yyyy}/month=!{timestamp:MM}/day=!{timestamp:dd}/hour=!{timestamp:HH}/"

    # Parquet conversion requires at least 64 MiB; the interval bounds how late a quiet hour's rows appear.
    buffering_size     = var.firehose_buffering_size_mib
    buffering_interval = var.firehose_buffering_interval_seconds

    # Parquet compresses its own pages (SNAPPY below); the S3 object must be written uncompressed.
    compression_format = "UNCOMPRESSED"

    data_format_conversion_configuration {
      enabled = true

      input_format_configuration {
        deserializer {
          # OpenX parses request_date as sent (ISO-8601 UTC with milliseconds, 2026-11-23T10:15:30.123Z): it accepts
          # yyyy-MM-dd'T'HH:mm:ss[.S]'Z' with up to 9 fraction digits. The record keys are the column names.
          open_x_json_ser_de {
            case_insensitive                         = false
            convert_dots_in_json_keys_to_underscores = false
          }
        }
      }

      output_format_configuration {
        serializer {
          parquet_ser_de {
            compression = "SNAPPY"
          }
        }
      }

      schema_configuration {
        database_name = aws_glue_catalog_database.audit.name
        table_name    = aws_glue_catalog_table.audit[each.key].name
        role_arn      = aws_iam_role.firehose.arn
        region        = data.aws_region.current.name
        version_id    = "LATEST"
      }
    }

    cloudwatch_logging_options {
      enabled         = true
      log_group_name  = aws_cloudwatch_log_group.firehose.name
      log_stream_name = aws_cloudwatch_log_stream.firehose[each.key].name
    }
  }

  lifecycle {
    precondition {
      condition     = var.firehose_buffering_size_mib >= 64
      error_message = "Firehose Parquet conversion requires a buffer of at least 64 MiB."
    }
  }

  depends_on = [aws_iam_role_policy.firehose]
}

# ---------------------------------------------------------------------------------------------------------------
# Athena
# ---------------------------------------------------------------------------------------------------------------

resource "aws_athena_workgroup" "audit" {
  name        = "${var.name}-audit"
  description = "Queries over the pix-proxy audit trail; results encrypted with the audit key"
  state       = "ENABLED"
  tags        = var.tags

  configuration {
    enforce_workgroup_configuration    = true
    publish_cloudwatch_metrics_enabled = true
    bytes_scanned_cutoff_per_query     = var.athena_bytes_scanned_cutoff_per_query

    engine_version {
      selected_engine_version = "Athena engine version 3"
    }

    result_configuration {
      output_location       = "s3://${aws_s3_bucket.audit.bucket}/${local.athena_prefix}"
      expected_bucket_owner = data.aws_caller_identity.current.account_id

      encryption_configuration {
        encryption_option = "SSE_KMS"
        kms_key_arn       = aws_kms_key.audit.arn
      }
    }
  }
}

# For auditors and operators: run queries in the workgroup, read the audit objects, write results. Attach to the
# roles that need it; nothing here can write or delete audit rows.
data "aws_iam_policy_document" "query" {
  statement {
    sid = "UseWorkgroup"
    actions = [
      "athena:GetQueryExecution",
      "athena:GetQueryResults",
      "athena:GetWorkGroup",
      "athena:StartQueryExecution",
      "athena:StopQueryExecution",
    ]
    resources = [aws_athena_workgroup.audit.arn]
  }

  statement {
    sid       = "ReadCatalog"
    actions   = ["glue:GetDatabase", "glue:GetTable", "glue:GetTables", "glue:GetPartition", "glue:GetPartitions"]
    resources = concat([local.glue_catalog_arn, local.glue_database_arn], local.glue_table_arns)
  }

  statement {
    sid       = "ListAuditBucket"
    actions   = ["s3:GetBucketLocation", "s3:ListBucket"]
    resources = [local.bucket_arn]
  }

  statement {
    sid       = "ReadAuditObjects"
    actions   = ["s3:GetObject"]
    resources = ["${local.bucket_arn}/${local.log_prefix}*", "${local.bucket_arn}/${local.error_prefix}*"]
  }

  statement {
    sid       = "WriteQueryResults"
    actions   = ["s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"]
    resources = ["${local.bucket_arn}/${local.athena_prefix}*"]
  }

  statement {
    sid       = "UseAuditKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.audit.arn]
  }
}

resource "aws_iam_policy" "query" {
  name_prefix = "${var.name}-audit-query-"
  description = "Query the pix-proxy audit trail with Athena (read-only on audit rows)"
  policy      = data.aws_iam_policy_document.query.json
  tags        = var.tags
}
