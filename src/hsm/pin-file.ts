/**
 * The HSM PIN as a file, for the one reader that takes it no other way: libp11's OpenSSL engine (`pin-source=file:`),
 * which loads the mutual-TLS key inside Node's TLS. The file lives in a private directory (0700, the file 0600,
 * whatever the umask) named after the process, and is removed when the process closes. A process killed with
 * SIGKILL cannot remove it; the next start on the same host removes every such directory whose process is gone, so a
 * PIN outlives its process only until the next start (in a container, /tmp is the task's own volume).
 */
import { chmod, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { alive } from '../process.ts'

const PREFIX = 'pix-proxy-pin-'

export interface PinFile {
  readonly dir: string
  readonly file: string
}

export async function createPinFile (pin: string, root: string = tmpdir()): Promise<PinFile> {
  const dir = await mkdtemp(join(root, `${PREFIX}${process.pid}-`))
  // mkdtemp creates 0700 and writeFile's mode is masked by the umask: set both explicitly.
  await chmod(dir, 0o700)
  const file = join(dir, 'pin')
  await writeFile(file, pin, { mode: 0o600, flag: 'wx' })
  await chmod(file, 0o600)
  return { dir, file }
}

/** Removes the PIN directories of processes that are gone; returns those removed. */
export async function sweepStalePinDirs (root: string = tmpdir()): Promise<string[]> {
  let names: string[]
  try {
    names = await readdir(root)
  } catch {
    return []
  }
  const removed: string[] = []
  for (const name of names) {
    const m = /^pix-proxy-pin-(\d+)-[A-Za-z0-9]+$/.exec(name)
    if (m === null) continue
    const pid = Number(m[1])
    if (pid === process.pid || alive(pid)) continue
    await rm(join(root, name), { recursive: true, force: true })
    removed.push(join(root, name))
  }
  return removed
}
