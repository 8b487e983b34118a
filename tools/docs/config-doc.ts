import { CONFIG_KEYS, ConfigSchema, ssmParameterName } from '../../src/config.ts'

/** docs/configuration.md, rendered from the schema so that the two cannot drift (test/config.test.ts checks). */
export function renderConfigDoc (): string {
  const required = new Set<string>((ConfigSchema as { required?: string[] }).required ?? [])
  const rows = CONFIG_KEYS.map((k) => {
    const p = ConfigSchema.properties[k] as { description?: string, default?: unknown, anyOf?: Array<{ const: string }>, minimum?: number, maximum?: number, pattern?: string }
    const allowed = p.anyOf !== undefined ? ` One of ${p.anyOf.map((a) => `\`${a.const}\``).join(', ')}.` : ''
    const range = p.minimum !== undefined ? ` ${p.minimum}–${p.maximum}.` : ''
    const def = p.default !== undefined ? `\`${String(p.default)}\`` : (required.has(k) ? '**required**' : '')
    return `| \`${k}\` | \`${ssmParameterName(k)}\` | ${def} | ${(p.description ?? '').replace(/\|/g, '\\|')}.${allowed}${range} |`
  })
  return `# Configuration

pix-proxy reads its configuration once, at start-up, from environment variables; every value is validated against
one schema (\`src/config.ts\`) and start-up stops with every problem listed at once (exit code 78) when a value is
wrong or a \`PIXPROXY_*\` name is unknown. In production each setting is an SSM parameter whose name follows
mechanically from the variable name (\`PIXPROXY_DICT_URL\` ↔ \`/pix/proxy/dict-url\`). The HSM PIN is never a value in
the environment: it is read from Secrets Manager (\`PIXPROXY_HSM_PIN_SECRET_ID\`; the AWS SDK takes region and
credentials from the task role) or from a file (\`PIXPROXY_HSM_PIN_FILE\`). The libp11 engine reads PINs only from
files, so a PIN fetched from Secrets Manager is written to a private (0600) temporary file removed at shutdown.

Besides these, the process environment must let the libp11 OpenSSL engine find its module: \`OPENSSL_ENGINES\`
(Debian: \`/usr/lib/x86_64-linux-gnu/engines-3\`) and \`PKCS11_MODULE_PATH\` (the same module as
\`PIXPROXY_HSM_MODULE_PATH\`; the proxy sets it from the configuration when absent and refuses a contradiction), and
for SoftHSM2 \`SOFTHSM2_CONF\`.

This file is generated from the schema by \`npm run docs:config\`; a test fails when they differ.

| variable | SSM parameter | default | meaning |
| --- | --- | --- | --- |
${rows.join('\n')}
`
}
