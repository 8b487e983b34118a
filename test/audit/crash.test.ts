import t from 'tap'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { join } from 'node:path'
import { AuditSpool } from '../../src/audit/spool.ts'
import type { AuditRow } from '../../src/audit/schema.ts'
import { readFileSink } from './fixtures/file-sink.ts'
import { damage } from './fixtures/rows.ts'

const WRITER = join(import.meta.dirname, 'fixtures/writer.ts')
const CYCLES = 5

/**
 * Runs the writer until it is killed with SIGKILL at a random moment; returns the ids it reported durable.
 */
async function runAndKill (dir: string, sinkFile: string, tag: string, teardown: (fn: () => void) => void): Promise<{ begun: string[], ended: string[], replayed: number }> {
  const child = spawn(process.execPath, [WRITER, dir, sinkFile, tag], { stdio: ['ignore', 'pipe', 'inherit'] })
  teardown(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  const begun: string[] = []
  const ended: string[] = []
  let replayed = -1
  let rest = ''
  let ready: () => void = () => {}
  const isReady = new Promise<void>((resolve) => { ready = resolve })
  child.stdout.setEncoding('utf8')
  child.stdout.on('data', (chunk: string) => {
    const lines = (rest + chunk).split('\n')
    rest = lines.pop() as string
    for (const l of lines) {
      if (l.startsWith('B ')) begun.push(l.slice(2))
      else if (l.startsWith('E ')) ended.push(l.slice(2))
      else if (l.startsWith('ready ')) {
        replayed = Number(l.slice(6))
        ready()
      }
    }
  })
  const closed = once(child, 'close')
  await isReady
  // Under load first (at least 120 acknowledged begins, however slow the machine is), then at a random moment.
  const deadline = Date.now() + 60_000
  while (begun.length < 120 && child.exitCode === null && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10))
  await new Promise((resolve) => setTimeout(resolve, Math.random() * 1000))
  child.kill('SIGKILL')
  const [code, signal] = await closed as [number | null, string | null]
  if (signal !== 'SIGKILL') throw new Error(`the writer ended by itself (code ${code}, signal ${signal})`)
  return { begun, ended, replayed }
}

t.test('kill -9 under load, repeatedly on one spool: every acknowledged begin and end is there, nothing damaged', async (t) => {
  const base = t.testdir()
  const dir = join(base, 'spool')
  const sinkFile = join(base, 'shipped.jsonl')
  const begun = new Set<string>()
  const ended = new Set<string>()
  for (let c = 1; c <= CYCLES; c++) {
    const r = await runAndKill(dir, sinkFile, `c${c}`, (fn) => t.teardown(fn))
    t.ok(r.begun.length > 100, `cycle ${c}: ${r.begun.length} begins and ${r.ended.length} ends acknowledged before kill -9; ${r.replayed} rows replayed at start`)
    if (c > 1) t.ok(r.replayed >= 0, 'the restarted writer replayed the spool')
    for (const id of r.begun) begun.add(id)
    for (const id of r.ended) ended.add(id)
  }

  // What survived: rows the writers shipped (a sink that fsyncs before acknowledging) and rows still spooled.
  const spool = await AuditSpool.open({ dir, maxBytes: 256 * 1024 * 1024 })
  t.teardown(() => spool.close())
  t.equal(spool.stats().replay.corruptBytes, 0, 'torn tails only, never corruption')
  const spooled: AuditRow[] = []
  for (let ref = spool.shift(); ref !== undefined; ref = spool.shift()) spooled.push(await spool.load(ref))
  const shipped = await readFileSink(sinkFile)
  const all = [...shipped, ...spooled]

  const damaged = all.filter((r) => damage(r) !== null || !/^c[1-5]-\d+$/.test(r.id))
  t.same(damaged.map((r) => `${r.id}: ${damage(r) ?? 'unknown id'}`), [], 'no row damaged or invented')
  const present = new Set(all.map((r) => r.id))
  const complete = new Set(all.filter((r) => r.error_code === null).map((r) => r.id))
  t.same([...begun].filter((id) => !present.has(id)), [], `all ${begun.size} acknowledged begins have a row`)
  t.same([...ended].filter((id) => !complete.has(id)), [], `all ${ended.size} acknowledged ends have a complete row`)
  t.same(all.filter((r) => r.error_code !== null && ended.has(r.id)).map((r) => r.id), [], 'no row whose end was acknowledged comes back INCOMPLETE')
  const incompleteIds = new Set(all.filter((r) => r.error_code !== null).map((r) => r.id))
  t.same([...complete].filter((id) => incompleteIds.has(id)), [], 'a row delivered twice is the same row: never complete once and INCOMPLETE once')
  const incomplete = all.filter((r) => r.error_code === 'PIXPROXY_ERR_AUDIT_INCOMPLETE').length
  const duplicates = all.length - present.size
  t.ok(incompleteIds.size <= CYCLES * 20, `${incompleteIds.size} transactions INCOMPLETE (at most the 20 in flight per kill)`)
  t.comment(`${shipped.length} rows shipped, ${spooled.length} still spooled, ${duplicates} delivered twice, ${incomplete} INCOMPLETE`)
})
