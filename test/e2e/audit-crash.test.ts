// kill -9 of the proxy under load, then a restart: nothing BACEN accepted goes unaudited.
// The proxy runs as a child process (src/server.ts, configured from the environment as in production) against the
// simulator in this process; the simulator's accepted-message log is the ground truth.
import t from 'tap'
import { request } from 'undici'
import { spawnProxyProcess, startLocalStack, PROXY_ISPB } from '../../src/demo/stack.ts'
import type { LocalStack, ProxyProcess } from '../../src/demo/stack.ts'
import { queryAudit } from '../../src/audit/query.ts'
import { createEntryRequest, pacs008 } from '../../src/samples/messages.ts'
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

t.test('SIGKILL under load, restart: every accepted message has its audit row; acknowledged ones are complete', async (t) => {
  const first = startProxy()
  const url = await first.url
  const acknowledged: Array<{ kind: 'dict' | 'spi', id: string }> = []
  let sent = 0
  let killed = false
  const one = async (i: number): Promise<void> => {
    const dict = i % 2 === 0
    const msg = dict ? createEntryRequest() : pacs008({ amounts: [1.5] })
    const id = dict ? (msg as ReturnType<typeof createEntryRequest>).requestId : (msg as ReturnType<typeof pacs008>).msgId
    sent++
    try {
      const r = await request(url + (dict ? '/api/v2/entries/' : `/api/v1/in/${PROXY_ISPB}/msgs`), { method: 'POST', headers: { 'content-type': 'application/xml' }, body: msg.xml })
      await r.body.dump()
      if (r.statusCode === 201) acknowledged.push({ kind: dict ? 'dict' : 'spi', id })
    } catch {
      // the kill cut this one off
    }
  }
  // 8 concurrent callers; the proxy is killed once 60 answers came back, with requests still in flight.
  const workers = Array.from({ length: 8 }, async (_v, w) => {
    for (let i = w; i < 400 && !killed; i += 8) {
      await one(i)
      if (!killed && acknowledged.length >= 60) {
        killed = true
        first.child.kill('SIGKILL')
      }
    }
  })
  await Promise.all(workers)
  t.equal(await first.exited, 'SIGKILL')
  t.ok(acknowledged.length >= 60, `${acknowledged.length} acknowledged of ${sent} sent before the kill`)

  // Restart on the same spool: replay ships what the dead process had spooled.
  const second = startProxy()
  await second.url
  const accepted = stack.simulator.app.simulator.log.filter((m) => m.ispb === PROXY_ISPB)
  t.ok(accepted.length >= acknowledged.length, 'the simulator accepted at least what was acknowledged')
  const deadline = Date.now() + 20_000
  let rows: Array<Record<string, unknown>> = []
  const covered = (m: { system: string, requestId?: string, bizMsgIdr?: string }): boolean => m.system === 'dict'
    ? rows.some((r) => r.dict_request_id === m.requestId)
    : rows.some((r) => String(r.biz_msg_id).split(',').includes(m.bizMsgIdr as string))
  while (Date.now() < deadline) {
    rows = await audited()
    if (accepted.every((m) => covered(m as never))) break
    await new Promise((resolve) => setTimeout(resolve, 250))
  }
  const missing = accepted.filter((m) => !covered(m as never))
  t.same(missing, [], 'every message the simulator accepted has an audit row')
  for (const a of acknowledged) {
    const r = rows.find((x) => (a.kind === 'dict' ? x.dict_request_id === a.id : x.biz_msg_id === a.id))
    t.ok(r !== undefined && r.response_status_code === 201 && r.error_code === null, `acknowledged ${a.kind} ${a.id} has its complete row`)
  }
  const incomplete = rows.filter((r) => r.error_code === 'PIXPROXY_ERR_AUDIT_INCOMPLETE')
  t.ok(incomplete.every((r) => r.response_status_code === null), 'rows cut off by the kill are marked incomplete, never invented')
  const ids = rows.map((r) => r.id)
  t.comment(`${rows.length} rows, ${new Set(ids).size} distinct ids, ${incomplete.length} incomplete, ${accepted.length} accepted by the simulator, ${acknowledged.length} acknowledged`)
  second.child.kill('SIGTERM')
  t.equal(await second.exited, 0, 'the restarted proxy shuts down cleanly')
})
