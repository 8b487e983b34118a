/**
 * hsm/pin-file.ts: the PIN file the libp11 engine reads is private whatever the umask, and does not survive its
 * process for longer than the next start, even when the process is killed with SIGKILL.
 */
import { spawn } from 'node:child_process'
import { mkdir, readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import t from 'tap'
import { createPinFile, sweepStalePinDirs } from '../../src/hsm/pin-file.ts'

const MODULE = new URL('../../src/hsm/pin-file.ts', import.meta.url).href

/** A process that writes a PIN file through the real code, prints its directory, and waits to be killed. */
async function holder (root: string): Promise<{ dir: string, kill: () => Promise<void> }> {
  const code = `const { createPinFile } = await import(${JSON.stringify(MODULE)}); const f = await createPinFile('1234', ${JSON.stringify(root)}); console.log(f.dir); setInterval(() => {}, 1000)`
  const child = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] })
  const exited = new Promise<void>((resolve) => child.once('exit', () => { resolve() }))
  t.teardown(() => { child.kill('SIGKILL') })
  const dir = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout }).once('line', resolve)
    child.once('exit', (c) => { reject(new Error(`holder exited ${String(c)} before printing`)) })
  })
  return { dir, kill: async () => { child.kill('SIGKILL'); await exited } }
}

t.test('private whatever the umask: the directory 0700, the file 0600', async (t) => {
  const root = t.testdir()
  const old = process.umask(0)
  try {
    const f = await createPinFile('123456', root)
    t.equal((await stat(f.dir)).mode & 0o777, 0o700)
    t.equal((await stat(f.file)).mode & 0o777, 0o600)
    t.equal(await readFile(f.file, 'utf8'), '123456')
    t.match(f.dir, new RegExp(`pix-proxy-pin-${process.pid}-`), 'named after its process')
  } finally {
    process.umask(old)
  }
})

t.test('kill -9 leaves the PIN behind; the next start removes it, and only the dead process\'s', async (t) => {
  const root = t.testdir()
  const killed = await holder(root)
  const living = await holder(root)
  const own = await createPinFile('mine', root)
  await mkdir(join(root, 'pix-proxy-pin-not-ours'))
  await killed.kill()
  t.ok(await stat(join(killed.dir, 'pin')), 'SIGKILL gives no chance to clean up: the PIN is still there')
  const removed = await sweepStalePinDirs(root)
  t.same(removed, [killed.dir], 'the sweep at start removes the dead process\'s directory')
  await t.rejects(stat(killed.dir), { code: 'ENOENT' })
  t.ok(await stat(join(living.dir, 'pin')), 'a live process keeps its PIN')
  t.ok(await stat(own.file), 'and so does this one')
  t.ok(await stat(join(root, 'pix-proxy-pin-not-ours')), 'a name that is not ours is left alone')
  await living.kill()
})
