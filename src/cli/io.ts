import { readFile as fsReadFile } from 'node:fs/promises'
import { Errors, PixProxyError } from '../../core/errors.ts'

/** What a command may touch of its process: passed in, so commands run in tests without a child process. */
export interface CliIo {
  readonly stdin: NodeJS.ReadableStream
  readonly stdout: NodeJS.WritableStream
  readonly stderr: NodeJS.WritableStream
  readonly env: NodeJS.ProcessEnv
}

export function usageError (message: string): PixProxyError {
  return new PixProxyError(Errors.USAGE, [message])
}

export async function readStdin (stdin: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const c of stdin) chunks.push(typeof c === 'string' ? Buffer.from(c) : c)
  return Buffer.concat(chunks)
}

/** Reads a file named on the command line; a missing or unreadable file is a coded error, not a crash. */
export async function readInputFile (path: string): Promise<Buffer> {
  try {
    return await fsReadFile(path)
  } catch (err) {
    throw new PixProxyError(Errors.FILE_READ, [path, (err as NodeJS.ErrnoException).code ?? (err as Error).message], { cause: err })
  }
}
