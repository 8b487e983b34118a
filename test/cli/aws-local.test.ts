// `pix-proxy aws-local` as a process, called with the real AWS SDK v3 clients the proxy uses, and its error cases
// in-process.
import t from 'tap'
import type { Test } from 'tap'
import { spawn } from 'node:child_process'
import { createServer } from 'node:net'
import type { AddressInfo } from 'node:net'
import { readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import { fileURLToPath } from 'node:url'
import { PutRecordBatchCommand } from '@aws-sdk/client-firehose'
import { GetParametersByPathCommand } from '@aws-sdk/client-ssm'
import type { Parameter } from '@aws-sdk/client-ssm'
import { GetSecretValueCommand } from '@aws-sdk/client-secrets-manager'
import { GetPublicKeyCommand, SignCommand } from '@aws-sdk/client-kms'
import { createHash, generateKeyPairSync, verify as cryptoVerify } from 'node:crypto'
import { createSecretsManagerClient, createSsmClient } from '../../src/aws/clients.ts'
import { createFirehoseClient } from '../../src/aws/firehose-client.ts'
import { createKmsClient } from '../../src/kms/client.ts'
import type { AwsClientOptions } from '../../src/aws/config.ts'
import { loadConfigSources, fetchPin } from '../../src/config-sources.ts'
import { awsLocalCommand, readAwsLocalSeed } from '../../tools/cli/aws-local.ts'
import { main } from '../../tools/cli/main.ts'
import type { CliIo } from '../../src/cli/io.ts'
import { Errors } from '../../core/errors.ts'

const MAIN = fileURLToPath(new URL('../../tools/cli/main.ts', import.meta.url))
const CREDS = { accessKeyId: 'AKIDAWSLOCALTEST', secretAccessKey: 'aws-local-test-secret' }

interface Child {
  readonly line: Record<string, any>
  readonly stderr: () => string
  readonly exited: Promise<{ code: number | null, signal: NodeJS.Signals | null }>
  readonly pid: number
}

/** Starts `pix-proxy aws-local ARGS` and resolves once it printed its JSON line; the test's teardown stops it. */
async function spawnAwsLocal (t: Test, args: string[], env: Record<string, string> = {}): Promise<Child> {
  const child = spawn(process.execPath, [MAIN, 'aws-local', ...args], {
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  const exited = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>((resolve) => {
    child.once('close', (code, signal) => resolve({ code, signal })) // after the pipes drain
  })
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    await exited
  })
  let err = ''
  child.stderr.on('data', (c: Buffer) => { err += c.toString() })
  const line = await new Promise<string>((resolve, reject) => {
    let out = ''
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString()
      const nl = out.indexOf('\n')
      if (nl >= 0) resolve(out.slice(0, nl))
    })
    exited.then(({ code }) => reject(new Error(`aws-local exited (${String(code)}) before printing: ${err}`)), () => {})
  })
  return { line: JSON.parse(line) as Record<string, any>, stderr: () => err, exited, pid: child.pid as number }
}

function io (env: NodeJS.ProcessEnv = {}): CliIo & { out: () => string, err: () => string } {
  const stdout = new PassThrough()
  const stderr = new PassThrough()
  let out = ''
  let err = ''
  stdout.on('data', (c: Buffer) => { out += c.toString() })
  stderr.on('data', (c: Buffer) => { err += c.toString() })
  return { stdin: new PassThrough(), stdout, stderr, env, out: () => out, err: () => err }
}

async function rejection (p: Promise<unknown>): Promise<Error & { code?: string, name: string }> {
  try {
    await p
  } catch (err) {
    return err as Error & { code?: string }
  }
  throw new Error('expected a rejection')
}

async function busyPort (t: Test): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  return (server.address() as AddressInfo).port
}

t.test('serves SSM, Secrets Manager and Firehose to the real SDK clients, seeded from a file; SIGTERM ends it with 0', async (t) => {
  const dir = t.testdir({
    pki: { 'tls.pem': '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n', pin: 'S3cr3t-PIN\n' }
  })
  // Thirteen parameters: more than one page of GetParametersByPath (10), as the proxy's start-up pages through them.
  const parameters: Array<Record<string, string>> = [
    { name: '/pix/proxy/ispb', value: '99999004' },
    { name: '/pix/proxy/tls-cert-file', valueFile: 'pki/tls.pem' },
    { name: '/pix/proxy/hsm-pin-secret-id', value: 'pix/proxy/hsm-pin' },
    { name: '/pix/proxy/log-level', value: 'info', type: 'SecureString' }
  ]
  for (let i = 0; i < 9; i++) parameters.push({ name: `/other/p${i}`, value: String(i) })
  await writeFile(join(dir, 'seed.json'), JSON.stringify({ parameters, secrets: [{ name: 'pix/proxy/hsm-pin', stringFile: 'pki/pin' }] }))
  const lake = join(dir, 'lake')
  const ep = await spawnAwsLocal(t, [
    '--port', '0', '--region', 'sa-east-1', '--dir', lake, '--seed', join(dir, 'seed.json'),
    '--parameter', '/pix/proxy/log-level=debug', '--parameter', '/pix/proxy/audit-sink=firehose', '--credentials-from-env'
  ], { AWS_ACCESS_KEY_ID: CREDS.accessKeyId, AWS_SECRET_ACCESS_KEY: CREDS.secretAccessKey })

  t.match(ep.line, { url: /^http:\/\/127\.0\.0\.1:\d+$/, region: 'sa-east-1', dataDir: lake, signatures: 'verified' })
  t.same(ep.line.deliveryStreams, ['pix-proxy-audit-spi', 'pix-proxy-audit-dict'])
  t.equal(ep.line.parameters.length, 14, 'the seed and the flags, by name')
  t.same(ep.line.secrets, ['pix/proxy/hsm-pin'])
  t.notMatch(JSON.stringify(ep.line), /S3cr3t|BEGIN CERTIFICATE/, 'values are never printed')

  const o: AwsClientOptions = { endpoint: ep.line.url, region: 'sa-east-1', credentials: CREDS, maxAttempts: 1 }
  const ssm = createSsmClient(o)
  const sm = createSecretsManagerClient(o)
  const firehose = createFirehoseClient(o)
  t.teardown(() => { ssm.destroy(); sm.destroy(); firehose.destroy() })

  const all: Parameter[] = []
  let token: string | undefined
  let pages = 0
  do {
    const page = await ssm.send(new GetParametersByPathCommand({ Path: '/', Recursive: true, WithDecryption: true, ...(token === undefined ? {} : { NextToken: token }) }))
    all.push(...(page.Parameters ?? []))
    token = page.NextToken
    pages++
  } while (token !== undefined)
  t.equal(pages, 2, 'paged as SSM pages')
  t.equal(all.length, 14)
  const byName = new Map(all.map((p) => [p.Name, p]))
  t.equal(byName.get('/pix/proxy/tls-cert-file')?.Value, '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n', 'valueFile: the file content, read relative to the seed')
  t.match(byName.get('/pix/proxy/log-level'), { Value: 'debug', Type: 'String' }, '--parameter overrides the seed')

  // What the proxy's start-up does with them (src/server.ts → loadConfigSources, then the PIN from Secrets Manager).
  const { source, origins } = await loadConfigSources({ env: { PIXPROXY_ISPB: '12345678' }, ssm: { client: ssm, path: '/pix/proxy/' } })
  t.equal(source.PIXPROXY_ISPB, '12345678', 'the environment wins')
  t.equal(origins.PIXPROXY_AUDIT_SINK, 'ssm')
  t.equal(source.PIXPROXY_HSM_PIN_SECRET_ID, 'pix/proxy/hsm-pin')
  t.equal(await fetchPin(source.PIXPROXY_HSM_PIN_SECRET_ID as string, sm), 'S3cr3t-PIN', 'stringFile: the PIN file, one trailing newline dropped by fetchPin')
  const secret = await sm.send(new GetSecretValueCommand({ SecretId: 'pix/proxy/hsm-pin' }))
  t.equal(secret.SecretString, 'S3cr3t-PIN\n', 'the secret holds the file verbatim')

  const put = await firehose.send(new PutRecordBatchCommand({
    DeliveryStreamName: 'pix-proxy-audit-dict',
    Records: [{ Data: Buffer.from('{"n":1}\n') }, { Data: Buffer.from('{"n":2}\n') }]
  }))
  t.equal(put.FailedPutCount, 0)
  const now = new Date()
  const partition = join(lake, 'log', 'dict', `year=${now.getUTCFullYear()}`, `month=${String(now.getUTCMonth() + 1).padStart(2, '0')}`)
  const days = await readdir(partition)
  t.equal(days.length, 1)
  const hours = await readdir(join(partition, days[0] as string))
  const objects = await readdir(join(partition, days[0] as string, hours[0] as string))
  t.match(objects, [/^pix-proxy-audit-dict-1-\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}-[0-9a-f-]{36}\.json$/])
  t.equal(await readFile(join(partition, days[0] as string, hours[0] as string, objects[0] as string), 'utf8'), '{"n":1}\n{"n":2}\n', 'delivered as one object, in the S3 layout')

  // --credentials-from-env: a client signing with another secret is refused.
  const wrong = createSsmClient({ ...o, credentials: { accessKeyId: CREDS.accessKeyId, secretAccessKey: 'not-it' } })
  t.teardown(() => wrong.destroy())
  const refused = await rejection(wrong.send(new GetParametersByPathCommand({ Path: '/pix/proxy' })))
  t.equal(refused.name, 'InvalidSignatureException')
  t.match(refused.message, /signature we calculated does not match/)

  process.kill(ep.pid, 'SIGTERM')
  t.same(await ep.exited, { code: 0, signal: null }, 'SIGTERM: clean exit 0')
  t.match(ep.stderr(), /\[aws-local\] shutting down/)
})

t.test('serves KMS signing keys from the seed: one read from a PEM file, one generated at start', async (t) => {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const dir = t.testdir({ pki: { 'kms.key': privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() } })
  const KEY_ID = '1234abcd-12ab-34cd-56ef-1234567890ab'
  await writeFile(join(dir, 'seed.json'), JSON.stringify({ kmsKeys: [{ keyId: KEY_ID, aliases: ['alias/pix-proxy-signing'], privateKeyFile: 'pki/kms.key' }, { aliases: ['alias/other'], enabled: false }] }))
  const ep = await spawnAwsLocal(t, ['--port', '0', '--region', 'sa-east-1', '--seed', join(dir, 'seed.json')])
  t.match(ep.line.kmsKeys, [
    { arn: `arn:aws:kms:sa-east-1:000000000000:key/${KEY_ID}`, aliases: ['alias/pix-proxy-signing'] },
    { arn: /^arn:aws:kms:sa-east-1:000000000000:key\/[0-9a-f-]{36}$/, aliases: ['alias/other'] }
  ])
  t.notMatch(JSON.stringify(ep.line), /PRIVATE KEY/, 'key material is never printed')
  const kms = createKmsClient({ endpoint: ep.line.url, region: 'sa-east-1', credentials: CREDS, maxAttempts: 1 })
  t.teardown(() => kms.destroy())
  const pub = await kms.send(new GetPublicKeyCommand({ KeyId: 'alias/pix-proxy-signing' }))
  t.ok(Buffer.from(pub.PublicKey as Uint8Array).equals(publicKey.export({ type: 'spki', format: 'der' })), 'the key of the PEM file')
  const message = Buffer.from('signed in the aws-local process')
  const signed = await kms.send(new SignCommand({ KeyId: 'alias/pix-proxy-signing', Message: createHash('sha256').update(message).digest(), MessageType: 'DIGEST', SigningAlgorithm: 'RSASSA_PKCS1_V1_5_SHA_256' }))
  t.ok(cryptoVerify('sha256', message, publicKey, Buffer.from(signed.Signature as Uint8Array)))
  t.equal((await rejection(kms.send(new GetPublicKeyCommand({ KeyId: 'alias/other' })))).name, 'DisabledException', '"enabled": false')
  process.kill(ep.pid, 'SIGTERM')
  t.same(await ep.exited, { code: 0, signal: null })
})

t.test('listens on 0.0.0.0 for other containers and prints a URL a local client can use', async (t) => {
  const ep = await spawnAwsLocal(t, ['--host', '0.0.0.0', '--port', '0'])
  t.match(ep.line, { host: '0.0.0.0', url: /^http:\/\/127\.0\.0\.1:\d+$/, signatures: 'shape', dataDir: null })
  process.kill(ep.pid, 'SIGINT')
  t.same(await ep.exited, { code: 0, signal: null })
})

t.test('seed files: every malformed entry is refused with a coded error', async (t) => {
  const dir = t.testdir({ 'pem.txt': 'x' })
  const bad = async (seed: unknown): Promise<Error & { code?: string }> => {
    const file = join(dir, `seed-${Math.random()}.json`)
    await writeFile(file, typeof seed === 'string' ? seed : JSON.stringify(seed))
    return await rejection(readAwsLocalSeed(file))
  }
  t.match(await bad('{nope'), { code: Errors.AWS_LOCAL_ENDPOINT.code, message: /is not JSON/ })
  t.match(await bad([]), { code: Errors.AWS_LOCAL_ENDPOINT.code, message: /must be a JSON object/ })
  t.match(await bad({ parameters: [], extra: 1 }), { message: /unknown keys extra/ })
  t.match(await bad({ parameters: {} }), { message: /"parameters" must be an array of objects/ })
  t.match(await bad({ parameters: [{ value: 'x' }] }), { message: /every parameter needs a "name"/ })
  t.match(await bad({ parameters: [{ name: '/a', value: 'x', valueFile: 'pem.txt' }] }), { message: /\/a needs exactly one of "value" and "valueFile"/ })
  t.match(await bad({ parameters: [{ name: '/a' }] }), { message: /exactly one of/ })
  t.match(await bad({ parameters: [{ name: '/a', value: 3 }] }), { message: /"value" must be a string/ })
  t.match(await bad({ parameters: [{ name: '/a', value: 'x', type: 'Text' }] }), { message: /"type" must be one of String, StringList, SecureString/ })
  t.match(await bad({ secrets: [{ name: 's' }] }), { message: /s needs exactly one of "string" and "stringFile"/ })
  t.match(await bad({ secrets: [{ name: 's', stringFile: 'missing.pin' }] }), { code: Errors.FILE_READ.code, message: /missing\.pin: ENOENT/ })
  t.match(await rejection(readAwsLocalSeed(join(dir, 'absent.json'))), { code: Errors.FILE_READ.code })
  t.match(await bad({ kmsKeys: [{ alias: 'alias/x' }] }), { message: /kmsKeys\[0\]: unknown keys alias/ })
  t.match(await bad({ kmsKeys: [{ aliases: 'alias/x' }] }), { message: /"aliases" must be an array of strings/ })
  t.match(await bad({ kmsKeys: [{ enabled: 'no' }] }), { message: /"enabled" must be true or false/ })
  t.match(await bad({ kmsKeys: [{ privateKeyFile: 'missing.key' }] }), { code: Errors.FILE_READ.code })

  const good = join(dir, 'good.json')
  await writeFile(good, JSON.stringify({ parameters: [{ name: '/a', valueFile: 'pem.txt' }], secrets: [{ name: 's', string: 'v' }] }))
  t.same(await readAwsLocalSeed(good), { parameters: [{ name: '/a', value: 'x', type: 'String' }], secrets: [{ name: 's', string: 'v' }], kmsKeys: [] })
})

t.test('command line errors: usage (exit 2) and start-up failures (exit 1), each with its code', async (t) => {
  const dir = t.testdir({ 'aws.json': JSON.stringify({ parameters: [{ name: '/aws/reserved', value: 'x' }] }) })
  const run = async (argv: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number, err: Record<string, string> | null, out: string }> => {
    const i = io(env)
    const code = await main(['aws-local', ...argv], i)
    const line = i.err().trim().split('\n')[0] ?? ''
    return { code, err: line === '' ? null : JSON.parse(line) as Record<string, string>, out: i.out() }
  }
  const help = await run(['--help'])
  t.equal(help.code, 0)
  for (const flag of ['--port', '--host', '--region', '--dir', '--seed', '--parameter', '--credentials-from-env', '--retain']) t.match(help.out, flag)
  t.match(await run(['--bogus']), { code: 2, err: { error: Errors.USAGE.code } })
  t.match(await run(['--port', '70000']), { code: 2, err: { error: Errors.USAGE.code, message: /--port must be an integer/ } })
  t.match(await run(['--parameter', 'novalue']), { code: 2, err: { error: Errors.USAGE.code, message: /NAME=VALUE/ } })
  t.match(await run(['--credentials-from-env'], { AWS_ACCESS_KEY_ID: 'x' }), { code: 2, err: { message: /AWS_SECRET_ACCESS_KEY/ } })
  t.match(await run(['--port', '0', '--seed', join(dir, 'aws.json')]), { code: 1, err: { error: Errors.AWS_LOCAL_ENDPOINT.code, message: /invalid parameter name/ } })
  const port = await busyPort(t)
  t.match(await run(['--port', String(port)]), { code: 1, err: { error: Errors.AWS_LOCAL_ENDPOINT.code, message: new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port}`) } })
})

t.test('in-process: stops when its signal aborts and resolves 0', async (t) => {
  const i = io()
  const abort = new AbortController()
  const done = awsLocalCommand(['--port', '0'], i, { signal: abort.signal })
  while (!i.out().includes('\n')) await new Promise((resolve) => setTimeout(resolve, 10))
  const { url } = JSON.parse(i.out()) as { url: string }
  const ssm = createSsmClient({ endpoint: url, region: 'us-east-1', credentials: CREDS, maxAttempts: 1 })
  t.teardown(() => ssm.destroy())
  t.same((await ssm.send(new GetParametersByPathCommand({ Path: '/pix' }))).Parameters, [])
  abort.abort()
  t.equal(await done, 0)
  t.match(i.err(), /shutting down/)
})
