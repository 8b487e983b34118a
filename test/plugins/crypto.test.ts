// The HSM PIN from Secrets Manager (production's path), against the local AWS endpoint with the real SDK client.
import t from 'tap'
import { existsSync, statSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { request } from 'undici'
import { startLocalStack, PROXY_ISPB } from '../../tools/demo/stack.ts'
import { initSoftHsm } from '../../tools/token/hsm-init.ts'
import { startLocalAwsEndpoint } from '../../tools/aws-local/endpoint.ts'

t.test('PIN from Secrets Manager: signing and the TLS engine both use it; the temporary PIN file is private and removed', async (t) => {
  const dir = t.testdir()
  // The token first, so its PIN can be stored as the secret.
  const hsm = await initSoftHsm({ dir: join(dir, 'hsm'), ispb: PROXY_ISPB })
  const aws = await startLocalAwsEndpoint({ port: 0 })
  t.teardown(async () => { await aws.close() })
  const arn = aws.putSecret({ name: 'pix/proxy/hsm-pin', string: (await readFile(hsm.pinFile, 'utf8')) + '\n' })
  Object.assign(process.env, { AWS_ENDPOINT_URL: aws.url, AWS_REGION: 'sa-east-1', AWS_ACCESS_KEY_ID: 'AKIDLOCAL', AWS_SECRET_ACCESS_KEY: 'local' })

  const stack = await startLocalStack({ dir, settings: { PIXPROXY_HSM_PIN_FILE: '', PIXPROXY_HSM_PIN_SECRET_ID: arn } })
  let closed = false
  t.teardown(async () => { if (!closed) await stack.close() })
  const pinFile = stack.proxy.crypto.pinFile as string
  t.not(pinFile, hsm.pinFile, 'a temporary copy, not the token\'s file')
  t.equal(statSync(pinFile).mode & 0o777, 0o600, 'readable by the owner only')
  const r = await request(`${stack.proxyUrl}/api/v2/policies/ENTRIES_WRITE`, { headers: { 'pi-requestingparticipant': PROXY_ISPB } })
  t.equal(r.statusCode, 200, 'mTLS through the engine works with the fetched PIN')
  t.equal(r.headers['pix-proxy-signature-code'], 'VALID')
  await r.body.dump()
  t.ok(aws.calls.some((c) => c.target === 'secretsmanager.GetSecretValue'), 'the secret was read through the SDK')
  await stack.close()
  closed = true
  t.notOk(existsSync(pinFile), 'the temporary PIN file is gone after close')
})

t.test('a missing secret stops start-up with its own code', async (t) => {
  const dir = t.testdir()
  const aws = await startLocalAwsEndpoint({ port: 0 })
  t.teardown(async () => { await aws.close() })
  process.env.AWS_ENDPOINT_URL = aws.url
  await t.rejects(startLocalStack({ dir, settings: { PIXPROXY_HSM_PIN_FILE: '', PIXPROXY_HSM_PIN_SECRET_ID: 'pix/proxy/does-not-exist' } }), { code: 'PIXPROXY_ERR_AWS_SECRET_NOT_FOUND' })
})
