/** The subset of a pino logger the audit code logs through. */
export interface AuditLogger {
  info (obj: object, msg: string): void
  warn (obj: object, msg: string): void
  error (obj: object, msg: string): void
}
