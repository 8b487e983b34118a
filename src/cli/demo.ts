/**
 * `pix-proxy demo [--dir DIR] [--once]`: the README's main job. Until the proxy and simulator exist (issue 3) it
 * runs the signing core end to end on a SoftHSM2 token: creates the token and test PKI when missing, signs sample
 * SPI and DICT messages with the non-extractable HSM key, verifies each, shows that tampering is caught with the
 * right code, writes the signed files, and prints a JSON summary as its last line. Exit 0 only if every flow did
 * what it should.
 */
import { existsSync } from 'node:fs'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { performance } from 'node:perf_hooks'
import { initSoftHsm } from '../hsm/init.ts'
import type { HsmInitResult } from '../hsm/init.ts'
import { Pkcs11KeyStore } from '../hsm/pkcs11.ts'
import { readPin } from '../hsm/uri.ts'
import { parseCertificate } from '../pki/x509.ts'
import { XmlSigner } from '../xmldsig/sign.ts'
import { verifyXml } from '../xmldsig/verify.ts'
import type { VerifyCode } from '../xmldsig/verify.ts'
import { TrustStore } from '../xmldsig/truststore.ts'
import type { Profile } from '../xmldsig/profile.ts'
import { createClaimRequest, createEntryRequest, pacs008, pibr001 } from '../samples/messages.ts'
import type { CliIo } from './io.ts'

interface FlowResult {
  readonly name: string
  readonly profile: Profile
  readonly ok: boolean
  readonly code: VerifyCode
  readonly expected: VerifyCode
  readonly signMs: number
  readonly file?: string
}

export async function demoCommand (argv: string[], io: CliIo): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { dir: { type: 'string', default: '.local/demo' }, once: { type: 'boolean', default: true } },
    strict: true
  })
  const dir = resolve(values.dir)
  const log = (msg: string): void => { io.stderr.write(`[demo] ${msg}\n`) }
  const hsmDir = join(dir, 'hsm')
  let hsm: HsmInitResult
  if (existsSync(join(hsmDir, 'hsm.json'))) {
    hsm = JSON.parse(await readFile(join(hsmDir, 'hsm.json'), 'utf8')) as HsmInitResult
    log(`reusing SoftHSM token ${hsm.tokenLabel} in ${hsmDir}`)
  } else {
    log(`creating a SoftHSM token with non-extractable keys and a test CA in ${hsmDir}`)
    hsm = await initSoftHsm({ dir: hsmDir, ...(io.env.PKCS11_MODULE_PATH === undefined ? {} : { modulePath: io.env.PKCS11_MODULE_PATH }) })
  }
  // SoftHSM2 reads its configuration from the environment when the module initialises: this entry point owns
  // the process environment, the library code never reads it.
  process.env.SOFTHSM2_CONF = hsm.softhsmConf

  const certificate = parseCertificate(await readFile(hsm.signing.certFile))
  const store = await Pkcs11KeyStore.open({
    modulePath: hsm.modulePath,
    tokenLabel: hsm.tokenLabel,
    pin: await readPin({ pinSource: `file:${hsm.pinFile}` }),
    poolSize: 2
  })
  const results: FlowResult[] = []
  try {
    const signer = new XmlSigner({ signer: await store.signer(hsm.signing.keyLabel), certificate })
    const trust = new TrustStore([certificate])
    const outDir = join(dir, 'signed')
    await mkdir(outDir, { recursive: true })

    const flows: Array<{ name: string, profile: Profile, xml: string, tamper?: (s: string) => string, expected: VerifyCode }> = [
      { name: 'pacs.008', profile: 'spi', xml: pacs008({ amounts: [150.75, 32.1] }).xml, expected: 'VALID' },
      { name: 'pibr.001', profile: 'spi', xml: pibr001().xml, expected: 'VALID' },
      { name: 'CreateEntryRequest', profile: 'dict', xml: createEntryRequest().xml, expected: 'VALID' },
      { name: 'CreateClaimRequest', profile: 'dict', xml: createClaimRequest().xml, expected: 'VALID' },
      {
        name: 'pacs.008 with the amount altered after signing',
        profile: 'spi',
        xml: pacs008({ amounts: [10] }).xml,
        tamper: (s) => s.replace('>10.00<', '>10000.00<'),
        expected: 'DIGEST_MISMATCH'
      }
    ]
    for (const f of flows) {
      const t0 = performance.now()
      const signed = await signer.sign(f.xml, f.profile)
      const signMs = performance.now() - t0
      const final = f.tamper === undefined ? signed : f.tamper(signed)
      const r = verifyXml(final, { profile: f.profile, trustStore: trust })
      const file = join(outDir, `${f.name.replace(/[^A-Za-z0-9.]+/g, '-')}.xml`)
      await writeFile(file, final)
      const ok = r.code === f.expected
      results.push({ name: f.name, profile: f.profile, ok, code: r.code, expected: f.expected, signMs: Math.round(signMs * 100) / 100, file })
      log(`${ok ? 'ok  ' : 'FAIL'} ${f.name} (${f.profile}): ${r.code}${ok ? '' : ` (expected ${f.expected}: ${r.message})`}`)
    }
  } finally {
    await store.close()
  }
  const ok = results.every((r) => r.ok)
  io.stdout.write(JSON.stringify({
    ok,
    token: hsm.tokenLabel,
    signingKey: hsm.signing.uri,
    certificate: { subject: certificate.subjectString, issuer: certificate.issuerString, serial: certificate.serialDecimal },
    flows: results
  }) + '\n')
  return ok ? 0 : 1
}
