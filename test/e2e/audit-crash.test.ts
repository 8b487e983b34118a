// kill -9 of the proxy under load, then a restart: nothing BACEN accepted goes unaudited.
// The proxy runs as a child process (src/server.ts, configured from the environment as in production) against the
// simulator in this process; the simulator's accepted-message log is the ground truth.
import t from 'tap'
import { readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { request } from 'undici'
import { spawnProxyProcess, startLocalStack, PROXY_ISPB } from '../../tools/demo/stack.ts'
import type { LocalStack, ProxyProcess } from '../../tools/demo/stack.ts'
import { queryAudit } from '../../tools/audit/query.ts'
import { createEntryRequest, pacs008 } from '../../tools/samples/messages.ts'
import { scratchDir } from '../helpers/scratch.ts'
import { waitFor } from '../helpers/wait.ts'

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

function startProxy (settings: Record<string, string> = {}): ProxyProcess {
  const p = spawnProxyProcess(stack, settings)
  t.teardown(() => { if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL') })
  return p
}

async function audited (): Promise<Array<Record<string, unknown>>> {
  const out: Array<Record<string, unknown>> = []
  for await (const r of queryAudit(stack.config.audit.parquetDir, 'SELECT * FROM audit')) out.push(r)
  return out
}

interface Sent { kind: 'dict' | 'spi', id: string }

/** 8 concurrent callers through `url`; the proxy is SIGKILLed once `killAt` answers came back, requests in flight. */
async function loadThenKill (url: string, proxy: ProxyProcess, killAt: number): Promise<{ acknowledged: Sent[], sent: Sent[] }> {
  const acknowledged: Sent[] = []
  const sent: Sent[] = []
  let killed = false
  const one = async (i: number): Promise<void> => {
    const dict = i % 2 === 0
    const msg = dict ? createEntryRequest() : pacs008({ amounts: [1.5] })
    const s: Sent = { kind: dict ? 'dict' : 'spi', id: dict ? (msg as ReturnType<typeof createEntryRequest>).requestId : (msg as ReturnType<typeof pacs008>).msgId }
    sent.push(s)
    try {
      const r = await request(url + (dict ? '/api/v2/entries/' : `/api/v1/in/${PROXY_ISPB}/msgs`), { method: 'POST', headers: { 'content-type': 'application/xml' }, body: msg.xml })
      await r.body.dump()
      if (r.statusCode === 201) acknowledged.push(s)
    } catch {
      // the kill cut this one off
    }
  }
  const workers = Array.from({ length: 8 }, async (_v, w) => {
    for (let i = w; i < 400 && !killed; i += 8) {
      await one(i)
      if (!killed && acknowledged.length >= killAt) {
        killed = true
        proxy.child.kill('SIGKILL')
      }
    }
  })
  await Promise.all(workers)
  return { acknowledged, sent }
}

type Accepted = { system: string, requestId?: string, bizMsgIdr?: string }
const idOf = (m: Accepted): string => (m.system === 'dict' ? m.requestId : m.bizMsgIdr) as string

/** Polls the Parquet store until every accepted message has its row (or 90 s pass: the bound only ends a failing test); returns the rows. */
async function awaitRows (accepted: Accepted[]): Promise<{ rows: Array<Record<string, unknown>>, missing: Accepted[] }> {
  const deadline = Date.now() + 90_000
  let rows: Array<Record<string, unknown>> = []
  const covered = (m: Accepted): boolean => m.system === 'dict'
    ? rows.some((r) => r.dict_request_id === m.requestId)
    : rows.some((r) => String(r.biz_msg_id).split(',').includes(m.bizMsgIdr as string))
  while (Date.now() < deadline) {
    rows = await audited()
    if (accepted.every(covered)) break
    await new Promise((resolve) => setTimeout(resolve, 250))
  }
  return { rows, missing: accepted.filter((m) => !covered(m)) }
}

t.test('SIGKILL under load, restart: every accepted message has its audit row; acknowledged ones are complete', async (t) => {
  const first = startProxy()
  const { acknowledged, sent } = await loadThenKill(await first.url, first, 60)
  t.equal(await first.exited, 'SIGKILL')
  t.ok(acknowledged.length >= 60, `${acknowledged.length} acknowledged of ${sent.length} sent before the kill`)

  // Restart on the same spool: replay ships what the dead process had spooled.
  const second = startProxy()
  await second.url
  const accepted = stack.simulator.app.simulator.log.filter((m) => m.ispb === PROXY_ISPB) as Accepted[]
  t.ok(accepted.length >= acknowledged.length, 'the simulator accepted at least what was acknowledged')
  const { rows, missing } = await awaitRows(accepted)
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

t.test('ECS shape: tasks share one spool root (EFS); a task killed under load is adopted by another task', async (t) => {
  const shared = { PIXPROXY_AUDIT_SPOOL_SHARED: 'true', PIXPROXY_AUDIT_SPOOL_DIR: join(scratch.dir, 'efs-spool') }
  const before = new Set(stack.simulator.app.simulator.log.map((m) => idOf(m as Accepted)))
  const a = startProxy(shared)
  await a.url
  const b = startProxy(shared) // second task: slot-000 is a's, so it claims slot-001
  const { acknowledged } = await loadThenKill(await b.url, b, 40)
  t.equal(await b.exited, 'SIGKILL')
  t.same((await readdir(shared.PIXPROXY_AUDIT_SPOOL_DIR)).sort(), ['slot-000', 'slot-001'], 'one slot per live task')

  // a restarts (a deployment): it takes slot-000 again and its sweeper adopts the dead task's slot-001.
  a.child.kill('SIGTERM')
  t.equal(await a.exited, 0)
  const a2 = startProxy(shared)
  const url = await a2.url
  const accepted = (stack.simulator.app.simulator.log as Accepted[]).filter((m) => !before.has(idOf(m)))
  t.ok(accepted.length >= acknowledged.length && acknowledged.length >= 40, `${accepted.length} accepted through the killed task`)
  const { rows, missing } = await awaitRows(accepted)
  t.same(missing, [], 'every message accepted through the killed task has its audit row')
  for (const s of acknowledged) {
    const r = rows.find((x) => (s.kind === 'dict' ? x.dict_request_id === s.id : x.biz_msg_id === s.id))
    t.ok(r !== undefined && r.response_status_code === 201 && r.error_code === null, `acknowledged ${s.kind} ${s.id} is complete`)
  }
  // The sweeper counts adopted rows once the slot's pipeline has closed, a moment after the rows become queryable.
  const adoptedNow = async (): Promise<number> => {
    const metrics = await (await request(url + '/metrics')).body.text()
    return Number(/pixproxy_audit_rows_total\{state="adopted"\} (\d+)/.exec(metrics)?.[1] ?? 0)
  }
  await waitFor(async () => (await adoptedNow()) > 0)
  const adopted = await adoptedNow()
  // (Rows the killed task had shipped itself before the kill are not in its slot any more: adopted <= accepted.)
  t.ok(adopted > 0 && adopted <= accepted.length + 8, `the restarted task's sweeper shipped what the dead task left (${adopted} rows adopted)`)
  a2.child.kill('SIGTERM')
  t.equal(await a2.exited, 0)
})
