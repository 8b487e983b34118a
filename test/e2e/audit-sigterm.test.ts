// SIGTERM of the proxy under load: in-flight requests finish, the audit pipeline flushes within the deadline, and
// whatever it could not ship is replayed by the next start. Nothing BACEN accepted goes unaudited.
// The proxy runs as a child process (src/server.ts, configured from the environment as in production) against the
// simulator in this process; the simulator's accepted-message log is the ground truth.
import t from 'tap'
import { request } from 'undici'
import { spawnProxyProcess, startLocalStack, PROXY_ISPB } from '../../tools/demo/stack.ts'
import type { LocalStack, ProxyProcess } from '../../tools/demo/stack.ts'
import { queryAudit } from '../../tools/audit/query.ts'
import { createEntryRequest, SAMPLE_PAYER } from '../../tools/samples/messages.ts'
import { scratchDir } from '../helpers/scratch.ts'

const scratch = scratchDir()

let stack: LocalStack
t.before(async () => {
  stack = await startLocalStack({ dir: scratch.dir, longPollMs: 300 })
  // Only BACEN's side (and the token) stays in this process: the proxy under test runs as a child.
  await stack.proxy.close()
})
t.teardown(async () => {
  await stack?.close()
  await scratch.remove() // only after the stack stopped writing there
})

function startProxy (): ProxyProcess {
  const p = spawnProxyProcess(stack)
  t.teardown(() => { if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL') })
  return p
}

async function audited (): Promise<Array<Record<string, unknown>>> {
  const out: Array<Record<string, unknown>> = []
  for await (const r of queryAudit(stack.config.audit.parquetDir, 'SELECT * FROM audit')) out.push(r)
  return out
}

t.test('SIGTERM under load: clean exit, rows flushed, nothing accepted goes unaudited', async (t) => {
  const first = startProxy()
  const url = await first.url
  const acknowledged: string[] = []
  let stop = false
  const one = async (): Promise<void> => {
    const e = createEntryRequest({ owner: { ...SAMPLE_PAYER, account: String(100_000_000 + Math.floor(Math.random() * 899_999_999)) } })
    try {
      const r = await request(url + '/api/v2/entries/', { method: 'POST', headers: { 'content-type': 'application/xml' }, body: e.xml })
      await r.body.dump()
      if (r.statusCode === 201) acknowledged.push(e.requestId)
    } catch {
      stop = true // the listener closed: the proxy is draining
    }
  }
  const workers = Array.from({ length: 6 }, async () => {
    while (!stop) {
      await one()
      if (acknowledged.length >= 40 && first.child.exitCode === null && first.child.signalCode === null && !stop) {
        stop = true
        first.child.kill('SIGTERM')
      }
    }
  })
  await Promise.all(workers)
  t.equal(await first.exited, 0, 'the proxy drained and exited 0')
  // Before any restart: what the draining proxy flushed is already in the store.
  const accepted = stack.simulator.app.simulator.log.filter((m) => m.ispb === PROXY_ISPB && m.system === 'dict')
  const flushed = await audited()
  const has = (rows: Array<Record<string, unknown>>, id: unknown): boolean => rows.some((r) => r.dict_request_id === id && r.error_code === null && r.response_status_code === 201)
  t.ok(acknowledged.every((id) => has(flushed, id)), `every acknowledged request flushed before exit (${acknowledged.length})`)
  t.ok(accepted.every((m) => flushed.some((r) => r.dict_request_id === m.requestId)), `every accepted message audited (${accepted.length})`)
  t.equal(flushed.filter((r) => r.error_code === 'PIXPROXY_ERR_AUDIT_INCOMPLETE').length, 0, 'a graceful stop leaves no incomplete row')
})
