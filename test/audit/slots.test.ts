// Spool slots for a spool root shared by several processes (ECS tasks on one EFS file system).
import t from 'tap'
import type { Test } from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { mkdir, readdir, writeFile } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { hostname } from 'node:os'
import { join } from 'node:path'
import { AuditSpool } from '../../src/audit/spool.ts'
import { claimSpoolSlot, serialSink, slotName, SlotSweeper } from '../../src/audit/slots.ts'
import type { AuditRow } from '../../src/audit/schema.ts'
import { damage, MemorySink, requestHalf, responseHalf, sampleRow, segmentFiles } from './fixtures/rows.ts'
import { ManualClock } from './fixtures/clock.ts'
import { waitFor } from '../helpers/wait.ts'

const OPTS = { maxBytes: 64 * 1024 * 1024, groupCommitMs: 0 }

async function until (what: string, cond: () => boolean): Promise<void> {
  if (!await waitFor(cond)) throw new Error(`timed out waiting for ${what}`)
}
/** A few turns of the event loop: a chance for something that must not happen (a manual clock stands still meanwhile). */
const turns = async (): Promise<void> => { for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve)) }

/** A pid that belonged to a process which has exited (and was reaped). */
function deadPid (): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'])
  return Number(r.stdout.toString())
}

/** A live process to name in a lock: held until the test ends. */
function livePid (t: Test): number {
  const child = spawn('sleep', ['120'], { stdio: 'ignore' })
  t.teardown(() => { child.kill('SIGKILL') })
  return child.pid as number
}

async function lockAs (dir: string, pid: number): Promise<void> {
  await mkdir(dir, { recursive: true })
  await writeFile(join(dir, 'spool.lock'), JSON.stringify({ pid, host: hostname(), token: 'other' }))
}

/** A slot left behind by a process that died: `complete` finished rows and `inFlight` begun-only rows. */
async function orphan (dir: string, prefix: string, complete: number, inFlight: number): Promise<string[]> {
  const s = await AuditSpool.open({ ...OPTS, dir })
  const ids: string[] = []
  for (let i = 0; i < complete + inFlight; i++) {
    const id = `${prefix}-${i}`
    ids.push(id)
    await s.begin(requestHalf(id))
    if (i < complete) await s.end(id, responseHalf(id))
  }
  await s.close()
  await lockAs(dir, deadPid()) // as if it had been killed: its lock names a process that is gone
  return ids
}

t.test('a process claims the lowest slot it can lock; live holders are skipped, dead ones taken over', async (t) => {
  const root = t.testdir()
  const first = await claimSpoolSlot(root, OPTS)
  t.equal(first.dir, join(root, slotName(0)), 'an empty root: slot-000')
  await first.close()

  await lockAs(join(root, slotName(0)), livePid(t))
  await lockAs(join(root, slotName(1)), deadPid())
  const second = await claimSpoolSlot(root, OPTS)
  t.equal(second.dir, join(root, slotName(1)), 'slot-000 is held by a live process; slot-001 by a dead one: taken')
  await second.close()

  // (Within one process a lock naming our own pid counts as a previous container's: hold them from other pids.)
  await lockAs(join(root, slotName(1)), livePid(t))
  await lockAs(join(root, slotName(2)), livePid(t))
  const third = await claimSpoolSlot(join(root), OPTS).catch((err: unknown) => err)
  t.ok(third instanceof AuditSpool, 'a new slot is created when every existing one is live')
  if (third instanceof AuditSpool) {
    t.equal(third.dir, join(root, slotName(3)))
    await third.close()
  }
})

t.test('claims race across processes: each gets a different slot', async (t) => {
  const root = t.testdir()
  const script = `
    const { claimSpoolSlot } = await import(${JSON.stringify(new URL('../../src/audit/slots.ts', import.meta.url).href)})
    const s = await claimSpoolSlot(${JSON.stringify(root)}, { maxBytes: 1 << 26, groupCommitMs: 0 })
    process.stdout.write(s.dir + '\\n')
    process.stdin.resume()
    process.stdin.on('end', async () => { await s.close(); process.exit(0) })
  `
  const children = Array.from({ length: 4 }, () => spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['pipe', 'pipe', 'inherit'] }))
  t.teardown(() => { for (const c of children) c.kill('SIGKILL') })
  const dirs = await Promise.all(children.map(async (c) => await new Promise<string>((resolve, reject) => {
    let out = ''
    c.stdout.on('data', (b: Buffer) => {
      out += b.toString()
      if (out.endsWith('\n')) resolve(out.trim())
    })
    c.once('exit', (code) => reject(new Error(`claimer exited ${String(code)}: ${out}`)))
  })))
  t.same([...dirs].sort(), [0, 1, 2, 3].map((n) => join(root, slotName(n))), 'four live processes, four distinct slots')
  await Promise.all(children.map(async (c) => {
    const exited = new Promise((resolve) => c.once('exit', resolve))
    c.stdin.end()
    await exited
  }))
})

t.test('the sweeper ships the rows of dead processes\' slots, marks their in-flight rows incomplete, leaves live ones alone', async (t) => {
  const root = t.testdir()
  const own = await claimSpoolSlot(root, OPTS)
  t.teardown(async () => { await own.close() })
  t.equal(own.dir, join(root, slotName(0)))
  const orphanIds = await orphan(join(root, slotName(1)), 'dead', 7, 2)
  const liveDir = join(root, slotName(2))
  await orphan(liveDir, 'live', 3, 0)
  await lockAs(liveDir, livePid(t)) // same rows, but its owner is running: not ours to ship
  const idle = join(root, slotName(3))
  await mkdir(idle) // an empty slot released earlier

  const sink = new MemorySink()
  const sweeper = SlotSweeper.start({ root, own, sink, spoolOptions: OPTS, intervalMs: 3_600_000 })
  t.teardown(async () => { await sweeper.close() })
  const results = await sweeper.sweep()
  const bySlot = Object.fromEntries(results.map((r) => [r.slot, r]))
  t.same(bySlot[slotName(1)], { slot: slotName(1), replayedRows: 9, shipped: 9, left: 0 }, 'the dead slot shipped in full')
  t.notOk(slotName(2) in bySlot, 'the live slot was not touched')
  t.notOk(slotName(0) in bySlot, 'nor our own')
  const shipped = sink.accepted as AuditRow[]
  t.same(shipped.map((r) => r.id).sort(), [...orphanIds].sort(), 'exactly the dead slot\'s rows')
  t.same(shipped.filter((r) => damage(r) !== null).map((r) => `${r.id}: ${String(damage(r))}`), [], 'rows intact')
  t.same(shipped.filter((r) => r.error_code === 'PIXPROXY_ERR_AUDIT_INCOMPLETE').map((r) => r.id).sort(), ['dead-7', 'dead-8'], 'rows begun but never ended are incomplete')
  t.same(sweeper.stats(), { adoptedSlots: 1, adoptedRows: 9 })
  t.notOk(existsSync(join(root, slotName(1), 'spool.lock')), 'the adopted slot was released for the next claim')

  const again = await sweeper.sweep()
  t.same(again.find((r) => r.slot === slotName(1)), { slot: slotName(1), replayedRows: 0, shipped: 0, left: 0 }, 'a second sweep finds it empty: nothing ships twice')
  t.equal(sink.accepted.length, 9)
  t.ok((await readdir(liveDir)).includes('spool.lock'), 'the live slot keeps its owner\'s lock')
})

t.test('serialSink: calls from the live pipeline and the sweeper never overlap, failures pass through', async (t) => {
  const inner = new MemorySink()
  inner.delayMs = 20
  let active = 0
  let most = 0
  const write = inner.write.bind(inner)
  inner.write = async (rows) => {
    active++
    most = Math.max(most, active)
    try { return await write(rows) } finally { active-- }
  }
  const sink = serialSink(inner)
  inner.policy = (_rows, call) => call === 1 ? 'throw' : []
  const results = await Promise.allSettled([1, 2, 3, 4].map(async (i) => await sink.write([sampleRow(i)])))
  t.equal(most, 1, 'one call at a time')
  t.same(results.map((r) => r.status), ['fulfilled', 'rejected', 'fulfilled', 'fulfilled'], 'a failed call rejects its caller only')
  t.equal(sink.maxBatchRows, inner.maxBatchRows)
  await sink.close()
  t.ok(inner.closed)
})

t.test('an adoption whose sink call outlives its deadline keeps the slot open and locked until the call returns (regression: the slot was closed and released under it)', async (t) => {
  const root = t.testdir()
  const clock = new ManualClock()
  const opts = { ...OPTS, clock }
  const own = await claimSpoolSlot(root, opts)
  t.teardown(async () => { await own.close() })
  const slot = join(root, slotName(1))
  const orphanIds = await orphan(slot, 'late', 5, 0)
  const sink = new MemorySink()
  sink.hold = true // the call takes as long as the test says
  t.teardown(() => { for (const h of sink.held.splice(0)) h.release() })
  // Each close of the adopted slot, with how many sink calls were still running at that moment.
  const closes: number[] = []
  const close = AuditSpool.prototype.close
  AuditSpool.prototype.close = async function (this: AuditSpool): Promise<void> {
    if (this.dir === slot) closes.push(sink.held.length)
    await close.call(this)
  }
  t.teardown(() => { AuditSpool.prototype.close = close })

  const sweeper = SlotSweeper.start({ root, own, sink, spoolOptions: opts, clock, intervalMs: 3_600_000, shipDeadlineMs: 1_000 })
  t.teardown(async () => { await sweeper.close() })
  const sweeping = sweeper.sweep() // joins the first sweep, started at once
  await until('the adoption\'s call in the sink', () => sink.held.length === 1)
  await clock.until('the adoption\'s deadline', 1_000)
  clock.advance(1_000) // the deadline passes while the call is in the sink: pipeline.close returns
  await turns()
  t.same(closes, [], 'the slot is not closed while a call on its rows runs')
  sink.held.shift()?.release() // the call returns, its rows accepted
  const results = await sweeping
  t.same(closes, [0], 'closed once the call had returned')
  t.same(results.find((r) => r.slot === slotName(1)), { slot: slotName(1), replayedRows: 5, shipped: 5, left: 0 }, 'the rows accepted after the deadline count as shipped')
  t.same(sink.acceptedIds().sort(), [...orphanIds].sort())
  t.same(await segmentFiles(slot), [], 'acknowledged while the slot was still ours: they do not ship again')
  t.notOk(existsSync(join(slot, 'spool.lock')), 'then released for the next claim')
  t.same(sweeper.stats(), { adoptedSlots: 1, adoptedRows: 5 })
})
