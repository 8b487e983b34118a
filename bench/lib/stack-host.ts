/**
 * A local stack's SoftHSM token and BACEN simulator in a process of their own, for the benches (bench/lib/stack-
 * process.ts starts it). Prints one JSON line (the proxy settings, the simulator's URL, the counterparty's and BACEN's
 * public material and the counterparty's test keys) and serves until SIGTERM.
 *
 *   node bench/lib/stack-host.ts DIR [LONG_POLL_MS]
 */
import { COUNTERPARTY_ISPB, startLocalStack } from '../../tools/demo/stack.ts'

const [dir, longPoll] = process.argv.slice(2)
if (dir === undefined) throw new Error('usage: stack-host.ts DIR [LONG_POLL_MS]')
// Nothing reads the simulator's messages from this process: its log file is enough (a soak would otherwise keep them all).
const stack = await startLocalStack({ dir, longPollMs: Number(longPoll ?? 300), simulatorLogInMemory: false })
await stack.proxy.close() // the proxy under measurement runs in a process of its own
const pki = stack.simulatorPki
const cp = pki.participant(COUNTERPARTY_ISPB)
process.stdout.write(JSON.stringify({
  settings: stack.settings,
  dictUrl: stack.simulator.dictUrl,
  softhsmConf: stack.hsm.softhsmConf,
  hsmCaCertFile: stack.hsm.caCertFile,
  caPem: pki.ca.certPem,
  bcbSigningCertPem: pki.bcbSigning.certPem,
  bcbSigningKeyPem: pki.bcbSigning.keyPem,
  bcbTls: { certPem: pki.bcbTls.certPem, keyPem: pki.bcbTls.keyPem },
  counterparty: { tls: { certPem: cp.tls.certPem, keyPem: cp.tls.keyPem }, signing: { certPem: cp.signing.certPem, keyPem: cp.signing.keyPem } }
}) + '\n')
process.once('SIGTERM', () => {
  stack.close().then(() => process.exit(0), (err: unknown) => {
    process.stderr.write(`stack-host: ${(err as Error).message}\n`)
    process.exit(1)
  })
})
