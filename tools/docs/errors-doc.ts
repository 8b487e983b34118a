import { Errors } from '../../core/errors.ts'
import type { Outcome } from '../../core/errors.ts'
import { VerifyCodes } from '../../core/xmldsig/verify.ts'

const OUTCOME: Record<Outcome, string> = { 'not-sent': 'not sent', unknown: 'unknown (reason)', answered: 'answered' }

/** docs/errors.md, rendered from the catalogue so that the two cannot drift (test/errors.test.ts checks). */
export function renderErrorsDoc (): string {
  const rows = Object.values(Errors).map((e) => `| \`${e.code}\` | ${e.statusCode} | ${e === Errors.UPSTREAM_OUTCOME_UNKNOWN ? '**unknown**' : OUTCOME[e.outcome]} | ${e.message.replace(/\|/g, '\\|').replace(/%s/g, '…')} |`)
  return `# Error codes

Every error pix-proxy reports carries one of these stable codes: in RFC 9457 problem+json answers to callers
(\`code\`, and \`type\` = \`urn:pix-proxy:problem:<code>\`), in the command line's JSON error line, and in logs.
Codes are never renamed or reused; callers branch on the code, never on the message. HTTP status is what a caller
sees when the error ends a request (the command line exits 2 for \`PIXPROXY_ERR_USAGE\`, 1 otherwise).

The outcome column says what a bank core may conclude when the code ends its request (docs/outcomes.md): **not
sent** (nothing left the proxy: safe to send again), **unknown** (the message may have reached BACEN: never send it
again blindly) or **answered** (BACEN answered: its status and the verdict on its signature are in the problem).
Every answer from a forwarding route also says its class in the \`pix-proxy-outcome\` header and the problem's
\`outcome\` member. Codes marked *unknown (reason)* are never a request's code: the forwarding pipeline answers
\`PIXPROXY_ERR_UPSTREAM_OUTCOME_UNKNOWN\` with them as its \`reason\`.

This file is generated from \`core/errors.ts\` by \`npm run docs:errors\`; a test fails when they differ.

| code | HTTP | outcome | message |
| --- | --- | --- | --- |
${rows.join('\n')}

## Signature verification results

Verifying a signed message is not an error: it returns one of these codes (\`verifyXml\`, \`pix-proxy xml verify\`,
and the \`pix-proxy-signature-code\` response header). Their meaning is in docs/xmldsig.md.

${Object.values(VerifyCodes).map((c) => `- \`${c}\``).join('\n')}

The \`pix-proxy-signature-code\` header (and the audit row's \`response_signature_code\`) has one more value,
\`NOT_APPLICABLE\`, for answers BACEN signs nothing in (any answer to an ICOM post, ICOM's error documents, an
empty answer). \`pix-proxy-signature-valid\` is \`true\` only with \`VALID\`. Where BACEN signs (every DICT answer
with a body, every stream page and part) the body is verified whatever its Content-Type: an unsigned answer sent
as text/plain, application/octet-stream or with no type is \`SIGNATURE_MISSING\` or \`XML_MALFORMED\`, refused
with 502 \`PIXPROXY_ERR_UPSTREAM_SIGNATURE_INVALID\` under the reject policy (a stream page so refused carries no
PI-Pull-Next and is not acknowledged) and delivered flagged \`false\` under the flag policy (docs/xmldsig.md).
`
}
