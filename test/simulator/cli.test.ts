import { existsSync, statSync } from 'node:fs'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import t from 'tap'
import { simulatorCommand } from '../../tools/cli/simulator.ts'
import type { CliIo } from '../../src/cli/io.ts'
import { ParticipantClient } from '../../tools/simulator/client.ts'
import { createEntryRequest, SAMPLE_PAYER } from '../../tools/samples/messages.ts'
import { SoftwareSigner } from '../../core/signer.ts'
import { parseCertificate } from '../../core/pki/x509.ts'
import { TrustStore, verifyXml, XmlSigner } from '../../core/xmldsig/index.ts'

interface Started {
  line: Record<string, any>
  stop: () => Promise<number>
}

async function start (argv: string[]): Promise<Started> {
  const stdout = new PassThrough()
  const stderr = new PassThrough()
  stderr.resume()
  const io: CliIo = { stdin: new PassThrough(), stdout, stderr, env: {} }
  const abort = new AbortController()
  const done = simulatorCommand(argv, io, { signal: abort.signal })
  const line = await new Promise<string>((resolve, reject) => {
    let buf = ''
    stdout.on('data', (c: Buffer) => {
      buf += c.toString()
      const nl = buf.indexOf('\n')
      if (nl >= 0) resolve(buf.slice(0, nl))
    })
    done.then(() => { reject(new Error('the command ended before printing')) }, reject)
  })
  return { line: JSON.parse(line), stop: async () => { abort.abort(); return await done } }
}

t.test('pix-proxy simulator: generates the PKI, prints the URLs and files, serves, reuses the PKI', async (t) => {
  const dir = t.testdir()
  const first = await start(['--dir', dir, '--port', '0', '--long-poll-ms', '200'])
  let stopped = false
  t.teardown(async () => { if (!stopped) await first.stop() })
  const { line } = first
  t.match(line.dictUrl, /^https:\/\/127\.0\.0\.1:\d+$/)
  t.equal(line.spiUrl, line.dictUrl, 'DICT and ICOM share the port, as in homologação')
  t.same(Object.keys(line.participants).sort(), ['99999004', '99999010'])
  t.equal(line.identifiedBy, 'tls-fingerprint')
  for (const f of [line.caCert, line.bcb.tlsCert, line.bcb.signingCert, line.participants['99999004'].tlsKey]) t.ok(existsSync(f), f)
  t.equal(statSync(line.participants['99999004'].signingKey).mode & 0o777, 0o600, 'keys are private to the user')

  const p = line.participants['99999004']
  const client = new ParticipantClient({ url: line.dictUrl, ca: await readFile(line.caCert, 'utf8'), certPem: await readFile(p.tlsCert, 'utf8'), keyPem: await readFile(p.tlsKey, 'utf8') })
  t.teardown(async () => { await client.close() })
  const signer = new XmlSigner({ signer: SoftwareSigner.fromPem(await readFile(p.signingKey)), certificate: parseCertificate(await readFile(p.signingCert)) })
  const res = await client.request('POST', '/api/v2/entries/', { body: await signer.sign(createEntryRequest({ owner: SAMPLE_PAYER }).xml, 'dict') })
  t.equal(res.status, 201)
  const bcb = new TrustStore([parseCertificate(await readFile(line.bcb.signingCert))])
  t.equal(verifyXml(res.text, { profile: 'dict', trustStore: bcb }).code, 'VALID')
  await client.close()

  t.equal(await first.stop(), 0)
  stopped = true
  const log = (await readFile(line.logFile, 'utf8')).trim().split('\n')
  t.equal(log.length, 1)
  t.match(JSON.parse(log[0] as string), { operation: 'createEntry', status: 201 })

  const caBefore = await readFile(line.caCert, 'utf8')
  const participantsFile = join(dir, 'participants.json')
  await writeFile(participantsFile, JSON.stringify(['99999004', { ispb: '12345678' }]))
  const second = await start(['--dir', dir, '--port', '0', '--participants', participantsFile, '--open'])
  t.teardown(async () => { await second.stop() })
  t.equal(await readFile(second.line.caCert, 'utf8'), caBefore, 'the CA is reused')
  t.same(Object.keys(second.line.participants).sort(), ['12345678', '99999004'])
  t.equal(second.line.identifiedBy, 'request')
})

t.test('usage errors', async (t) => {
  const io: CliIo = { stdin: new PassThrough(), stdout: new PassThrough(), stderr: new PassThrough(), env: {} }
  await t.rejects(simulatorCommand([], io), { code: 'PIXPROXY_ERR_USAGE' })
  await t.rejects(simulatorCommand(['--dir', t.testdir(), '--port', 'x'], io), { code: 'PIXPROXY_ERR_USAGE' })
})
