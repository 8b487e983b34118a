/**
 * Only loopback targets unless --allow-remote: every address a name resolves to must be loopback, both before
 * the run (a usage error) and at connect time (a name that starts resolving elsewhere is refused).
 */
import t from 'tap'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { assertLoopbackUrl, isLoopbackAddress, loopbackOnlyLookup } from '../../tools/load/loopback.ts'
import type { ResolveAll } from '../../tools/load/loopback.ts'
import { createProxyTransport } from '../../tools/load/transport.ts'

const fakeDns = (table: Record<string, string[]>): ResolveAll => async (host) => {
  const a = table[host]
  if (a === undefined) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' })
  return a.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }))
}

t.test('loopback addresses', async (t) => {
  for (const a of ['127.0.0.1', '127.1.2.3', '::1', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1']) t.ok(isLoopbackAddress(a), a)
  for (const a of ['10.0.0.1', '192.168.1.1', '0.0.0.0', '::', '::ffff:10.0.0.1', 'fe80::1', '128.0.0.1', 'localhost', '']) t.notOk(isLoopbackAddress(a), a)
})

t.test('URLs: IP literals checked as is, names resolved, every address must be loopback', async (t) => {
  const dns = fakeDns({ localhost: ['127.0.0.1', '::1'], 'mixed.example': ['127.0.0.1', '10.1.2.3'], 'remote.example': ['203.0.113.7'], 'empty.example': [] })
  await t.resolves(assertLoopbackUrl('http://127.0.0.1:8080', { resolve: dns }))
  await t.resolves(assertLoopbackUrl('https://[::1]:16522', { resolve: dns }))
  await t.resolves(assertLoopbackUrl('http://localhost:8080', { resolve: dns }))
  await t.rejects(assertLoopbackUrl('http://10.0.0.5:8080', { resolve: dns }), { code: 'PIXPROXY_ERR_USAGE', message: /10\.0\.0\.5.*--allow-remote/ })
  await t.rejects(assertLoopbackUrl('https://mixed.example', { resolve: dns }), { code: 'PIXPROXY_ERR_USAGE', message: /10\.1\.2\.3/ }, 'one remote address is enough to refuse')
  await t.rejects(assertLoopbackUrl('https://remote.example', { resolve: dns }), { code: 'PIXPROXY_ERR_USAGE' })
  await t.rejects(assertLoopbackUrl('https://empty.example', { resolve: dns }), { code: 'PIXPROXY_ERR_USAGE', message: /nothing/ })
  await t.rejects(assertLoopbackUrl('https://nowhere.example', { resolve: dns }), { code: 'PIXPROXY_ERR_USAGE', message: /ENOTFOUND/ })
  await t.rejects(assertLoopbackUrl('ftp://127.0.0.1/'), { code: 'PIXPROXY_ERR_USAGE' })
  await t.rejects(assertLoopbackUrl('not a url'), { code: 'PIXPROXY_ERR_USAGE' })
  // The real resolver: localhost is loopback on any sane machine.
  await t.resolves(assertLoopbackUrl('http://localhost:1'))
})

t.test('transports refuse remote targets unless allowRemote', async (t) => {
  const dns = fakeDns({ 'bacen.example': ['200.218.66.10'] })
  await t.rejects(createProxyTransport({ url: 'http://bacen.example:8080', ispb: '99999004', resolve: dns }), { code: 'PIXPROXY_ERR_USAGE' })
  const allowed = await createProxyTransport({ url: 'http://bacen.example:8080', ispb: '99999004', resolve: dns, allowRemote: true })
  await allowed.close()
})

t.test('at connect time: a name that resolves elsewhere later is refused (ENOTLOOPBACK)', async (t) => {
  const server = createServer((_req, res) => { res.end('ok') })
  await new Promise<void>((resolve) => { server.listen(0, '127.0.0.1', resolve) })
  t.teardown(() => { server.close() })
  const port = (server.address() as AddressInfo).port
  let answer = ['127.0.0.1']
  const dns: ResolveAll = async () => answer.map((address) => ({ address, family: 4 }))
  const transport = await createProxyTransport({ url: `http://switcher.test:${port}`, ispb: '99999004', resolve: dns })
  t.teardown(async () => { await transport.close() })
  const ok = await transport.request({ method: 'GET', path: '/', answerProfile: 'dict' })
  t.equal(ok.status, 200, 'loopback: connected')
  // A second transport passes the start-up check, then the name moves before its first connection.
  const late = await createProxyTransport({ url: `http://switcher.test:${port}`, ispb: '99999004', resolve: dns })
  t.teardown(async () => { await late.close() })
  answer = ['198.51.100.1']
  await t.rejects(late.request({ method: 'GET', path: '/', answerProfile: 'dict' }), { code: 'ENOTLOOPBACK' }, 'the connection is refused')
  const lookup = loopbackOnlyLookup(dns)
  const err = await new Promise<NodeJS.ErrnoException | null>((resolve) => { lookup('switcher.test', {}, (e) => { resolve(e) }) })
  t.equal(err?.code, 'ENOTLOOPBACK', 'the lookup itself says why')
})
