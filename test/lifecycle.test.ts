/**
 * src/lifecycle.ts, closeThenExit: the one shutdown of both entry points (the proxy's and the gateway's, for a signal
 * and for a lost audit trail alike), in a real process (test/audit/fixtures/shutdown.ts: the close and the audit
 * worker each entry point passes) with a real audit thread. process.exit() joins every worker thread, so a process
 * whose audit thread is stuck in a system call (AUDIT_WORKER_UNRESPONSIVE: an fdatasync on a file system that stopped
 * answering; here a thread blocked in read(2) on a FIFO) would never end, closed and deaf to SIGTERM: it kills itself
 * at the deadline instead, with its reason on stderr. And only then: a close that fails exits 1 with its own error,
 * without waiting for the deadline. No timing is raced: the deadline is short only where nothing else can end the
 * process (a thread that never ends), and elsewhere far beyond any shutdown, so that waiting for it would show as its
 * SIGKILL and line; tap's timeout is only a hang guard.
 */
import { execFileSync, spawn } from 'node:child_process'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import t from 'tap'
import type { Test } from 'tap'

const fixture = join(import.meta.dirname, 'audit', 'fixtures', 'shutdown.ts')

interface Ended {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly out: readonly string[]
  /** stderr's JSON lines (the coded ones: exitOrKill's, the close's error). */
  readonly errors: ReadonlyArray<{ msg?: string, error?: string, message?: string }>
}

/** Runs the fixture in `mode` until it ends (each stream read to its end). */
async function run (t: Test, mode: string): Promise<Ended> {
  const dir = t.testdir()
  if (mode.startsWith('stuck')) execFileSync('mkfifo', [join(dir, 'fifo')])
  const child = spawn(process.execPath, [fixture, dir, mode], { stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  const out: string[] = []
  const err: string[] = []
  createInterface({ input: child.stdout }).on('line', (l) => out.push(l))
  createInterface({ input: child.stderr }).on('line', (l) => err.push(l))
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => {
    child.once('close', (code, signal) => { resolve([code, signal]) })
  })
  const errors = err.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Ended['errors'][number])
  t.comment(`${mode}: ${JSON.stringify({ code, signal, out, err })}`)
  return { code, signal, out, errors }
}

const UNRESPONSIVE = 'PIXPROXY_ERR_AUDIT_WORKER_UNRESPONSIVE'

for (const [mode, when] of [
  ['stuck-failed', 'declared stuck while the service ran (a lost audit trail\'s shutdown): the close ends, the thread never does'],
  ['stuck-closing', 'stuck when a signal\'s drain starts: the close, waiting for it, never ends']
] as const) {
  t.test(`regression: a thread stuck in a system call never holds the exit: killed at the deadline (137), one coded line saying why; ${when}`, async (t) => {
    const p = await run(t, mode)
    t.ok(p.out.includes('stuck'), 'the thread was in its read')
    t.same([p.code, p.signal], [null, 'SIGKILL'], 'the process killed itself (process.exit would have waited forever)')
    t.ok(p.out.includes('late'), 'past the deadline')
    t.match(p.errors.find((e) => e.error === UNRESPONSIVE), { message: /stuck in a system call/ }, 'one JSON line with a stable code says why')
  })
}

t.test('a close that fails (before it closed the audit trail): its own error and exit 1, without waiting for the deadline: the audit thread is closed, not blamed', async (t) => {
  const p = await run(t, 'close-fails')
  t.same([p.code, p.signal], [1, null], 'exit 1, not killed: the audit thread ended (process.exit joined it) well before the deadline')
  t.same(p.errors, [{ msg: 'shutdown failed', error: 'FIXTURE_CLOSE_FAILED', message: 'the listener did not close' }], 'the close\'s own error, and no line blaming a stuck thread')
  t.notOk(p.out.includes('late'), 'the deadline never passed')
})

t.test('regression: a drain that outlives the deadline (before it reached the audit trail): exit 1, the healthy audit thread told to end, not blamed as stuck', async (t) => {
  const p = await run(t, 'drain-overruns')
  t.ok(p.out.includes('late'), 'past the deadline')
  t.same([p.code, p.signal], [1, null], 'exit 1, not killed: the thread ended once told (process.exit joined it)')
  t.same(p.errors, [], 'no line blaming a stuck thread')
})

t.test('the audit trail lost (its thread died) while the service ran: the close ends, exit 1 for the orchestrator to replace the task', async (t) => {
  const p = await run(t, 'lost')
  t.same([p.code, p.signal], [1, null])
  t.same(p.errors, [], 'no close error, no stuck thread')
})

t.test('a clean shutdown: the close ends the audit thread, exit 0', async (t) => {
  const p = await run(t, 'clean')
  t.same([p.code, p.signal], [0, null])
  t.same(p.errors, [])
  t.notOk(p.out.includes('late'))
})
