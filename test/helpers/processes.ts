/** Child processes for the tests that run this checkout's CLI and scripts as separate programs. */
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
/** A path in the checkout. */
export const at = (...p: string[]): string => join(ROOT, ...p)
export const MAIN_TS = at('tools/cli/main.ts')

export interface Ran { code: number | null, signal: NodeJS.Signals | null, stdout: string, stderr: string }

/** Runs a command to its end (killed after `timeoutMs`, default 120 s) and collects its output. */
export async function run (cmd: string, args: readonly string[], opts: { env?: NodeJS.ProcessEnv, cwd?: string, timeoutMs?: number } = {}): Promise<Ran> {
  return await new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd ?? ROOT, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'], timeout: opts.timeoutMs ?? 120_000 })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (c: Buffer) => { stdout += c.toString() })
    child.stderr.on('data', (c: Buffer) => { stderr += c.toString() })
    child.once('error', reject)
    child.once('close', (code, signal) => resolve({ code, signal, stdout, stderr }))
  })
}

export interface Service {
  readonly child: ChildProcess
  readonly exited: Promise<{ code: number | null, signal: NodeJS.Signals | null }>
  readonly stdout: () => string
  readonly stderr: () => string
  /** Resolves with the first match of `re` in stdout (rejects if the process exits first, or after `ms`). */
  waitFor (re: RegExp, ms?: number): Promise<RegExpExecArray>
  /** SIGTERM, then its exit. */
  stop (): Promise<{ code: number | null, signal: NodeJS.Signals | null }>
  /** SIGKILL if still running, then its exit (for teardowns). */
  kill (): Promise<void>
}

/**
 * Resolves when the streams (a child's pipes, after its exit) have ended, or when they are evidently held open by
 * someone else. Once the child has exited, whatever it wrote and the end of its pipes are already there to read:
 * the loop reads them at its next turns, however busy the machine. Only a grandchild that inherited the pipes keeps
 * them open, so giving up is allowed only after both many loop turns and a couple of seconds have passed: a stalled
 * loop (wall time without turns) cannot cut the output short.
 */
async function pipesEnded (streams: ReadonlyArray<NodeJS.ReadableStream & { readableEnded: boolean } | null>): Promise<void> {
  let done = false
  const all = Promise.all(streams.map(async (s) => { if (s !== null && !s.readableEnded) await once(s, 'end').catch(() => {}) })).then(() => { done = true })
  const deadline = Date.now() + 2_000
  // eslint-disable-next-line no-unmodified-loop-condition -- `all` sets done while the loop awaits
  for (let turns = 0; !done && (turns < 100 || Date.now() < deadline); turns++) {
    await Promise.race([all, sleep(10, undefined, { ref: false })])
  }
}

/** Starts a long-running process. The caller stops or kills it (in its teardown). */
export function spawnService (cmd: string, args: readonly string[], env: NodeJS.ProcessEnv): Service {
  const child = spawn(cmd, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] })
  // At 'exit' the last output may still be in the pipes: wait for them to end too, but not for ever ('close' would
  // wait on a grandchild that inherited them).
  const exited = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      void pipesEnded([child.stdout, child.stderr]).then(() => { resolve({ code, signal }) })
    })
  })
  let out = ''
  let err = ''
  child.stdout?.on('data', (c: Buffer) => { out += c.toString() })
  child.stderr?.on('data', (c: Buffer) => { err += c.toString() })
  return {
    child,
    exited,
    stdout: () => out,
    stderr: () => err,
    waitFor: async (re, ms = 60_000) => await new Promise<RegExpExecArray>((resolve, reject) => {
      const deadline = Date.now() + ms
      const check = (): void => {
        const m = re.exec(out)
        if (m !== null) { resolve(m); return }
        if (child.exitCode !== null || child.signalCode !== null) { reject(new Error(`${args.join(' ')} exited before printing ${String(re)}: ${err}`)); return }
        if (Date.now() > deadline) { reject(new Error(`no ${String(re)} within ${ms} ms: ${err}`)); return }
        setTimeout(check, 50)
      }
      check()
    }),
    stop: async () => {
      child.kill('SIGTERM')
      return await exited
    },
    kill: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
      await exited
    }
  }
}

/**
 * An APP_DIR whose dist/tools/cli/main.js runs this checkout's CLI from source: the image's scripts (entrypoint.sh,
 * local-init.sh) then run unchanged against the code under test.
 */
export async function sourceAppDir (dir: string): Promise<string> {
  await mkdir(join(dir, 'dist/tools/cli'), { recursive: true })
  await writeFile(join(dir, 'package.json'), '{ "type": "module" }\n')
  await writeFile(join(dir, 'dist/tools/cli/main.js'), [
    `const { main } = await import(${JSON.stringify(MAIN_TS)})`,
    'process.exitCode = await main(process.argv.slice(2), { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr, env: process.env })',
    ''
  ].join('\n'))
  return dir
}
