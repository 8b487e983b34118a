/**
 * src/lifecycle.ts, exitOrKill: process.exit() joins every worker thread, so a process whose audit thread is stuck in
 * a system call (AUDIT_WORKER_UNRESPONSIVE: an fdatasync on a file system that stopped answering) would never end,
 * closed and deaf to SIGTERM. exitOrKill kills it instead, with its reason on stderr. A real process and a real thread
 * blocked in read(2) on a FIFO; the only bound is tap's timeout, a hang guard.
 */
import { spawn } from 'node:child_process'
import { execFileSync } from 'node:child_process'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import t from 'tap'

const fixture = join(import.meta.dirname, 'audit', 'fixtures', 'stuck-exit.ts')

t.test('regression: a thread stuck in a system call no longer holds the process\'s exit forever', async (t) => {
  const dir = t.testdir()
  execFileSync('mkfifo', [join(dir, 'fifo')])
  const child = spawn(process.execPath, [fixture, dir], { stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  const lines: string[] = []
  createInterface({ input: child.stdout }).on('line', (l) => lines.push(l))
  createInterface({ input: child.stderr }).on('line', (l) => lines.push(l))
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => {
    child.once('close', (code, signal) => { resolve([code, signal]) })
  })
  t.equal(lines[0], 'stuck', 'the thread was in its read when the process exited')
  t.same([code, signal], [null, 'SIGKILL'], 'the process killed itself (process.exit would have waited forever)')
  const why = JSON.parse(lines.find((l) => l.startsWith('{')) ?? '{}') as { error?: string, message?: string }
  t.equal(why.error, 'PIXPROXY_ERR_AUDIT_WORKER_UNRESPONSIVE', 'one JSON line with a stable code says why')
  t.match(why.message, /stuck in a system call/)
})
