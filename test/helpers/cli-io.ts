import { PassThrough } from 'node:stream'

export interface Captured { stdout: string, stderr: string }
export interface CapturedIo { stdin: PassThrough, stdout: PassThrough, stderr: PassThrough, env: NodeJS.ProcessEnv }

/** Streams for a CLI command run in-process, and what it wrote to them so far. */
export function captureIo (env: NodeJS.ProcessEnv = {}): { io: CapturedIo, text (): Captured } {
  const stdout = new PassThrough()
  const stderr = new PassThrough()
  const out: Buffer[] = []
  const err: Buffer[] = []
  stdout.on('data', (c: Buffer) => out.push(c))
  stderr.on('data', (c: Buffer) => err.push(c))
  return {
    io: { stdin: new PassThrough(), stdout, stderr, env },
    text: () => ({ stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') })
  }
}
