output "file_system_id" {
  description = "File system of the spool"
  value       = aws_efs_file_system.this.id
}

output "mount_target_ids" {
  description = "Mount targets, one per subnet: the service must wait for them (ecs_service service_depends_on) so its first tasks can mount"
  value       = aws_efs_mount_target.this[*].id
}

output "client_policy_json" {
  description = "Policy document for the task role: mount and write the file system through the access point only (a source document of the caller's task policy)"
  value       = data.aws_iam_policy_document.client.json
}

# The file system policy refuses requests without TLS and lets the task role in through the access point only, so
# the task definition's volume must mount with both: they are decided here, next to that policy.
output "task_volume" {
  description = "What the task definition's EFS volume mounts: file_system_id and access_point_id, with transit_encryption and iam (authorisation by the task role) both ENABLED, as the file system policy requires"
  value = {
    file_system_id     = aws_efs_file_system.this.id
    access_point_id    = aws_efs_access_point.this.id
    transit_encryption = "ENABLED"
    iam                = "ENABLED"
  }
}
