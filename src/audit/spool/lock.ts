/**
 * The spool directory's lock (`spool.lock`): taking it, taking over a stale one, the heartbeat that keeps it and
 * notices when it was lost, and releasing it. See ../spool.ts for what the lock promises.
 */
import { createHash, randomUUID } from 'node:crypto'
import { link, open, readdir, rename, stat, unlink, writeFile } from 'node:fs/promises'
import type { FileHandle } from 'node:fs/promises'
import { hostname } from 'node:os'
import { join } from 'node:path'
import { Errors, PixProxyError } from '../../../core/errors.ts'
import { alive } from '../../process.ts'
import type { AuditLogger } from '../logger.ts'
import { FILE_MODE } from './files.ts'

/**
 * Lets a test put the lock's steps in the order it wants instead of racing timers: hold claimers at a step, run
 * the heartbeat by hand.
 */
export interface SpoolLockHooks {
  /**
   * Schedules the heartbeat: `beat` (which never rejects) every `intervalMs` until the returned function is
   * called. Default: setInterval, unref'd.
   */
  readonly heartbeat?: (beat: () => Promise<void>, intervalMs: number) => () => void
  /** Awaited once a claimer judged the lock in place stale (its holder gone), before it starts taking it over. */
  readonly judgedStale?: () => Promise<void>
}

const LOCK_HEARTBEAT_MS = 5_000
const LOCK_STALE_MS = 30_000

const LOCK_NAME = 'spool.lock'
/**
 * Tokens of the spools of this thread that are claiming or holding a lock. A lock or takeover marker naming our
 * own pid is live only when its token is one of them; otherwise it is a previous container's (pid namespaces
 * restart at 1), not ours.
 */
const OWN_TOKENS = new Set<string>()
const TOKEN_RE = /^[0-9A-Za-z-]{1,64}$/

interface LockView {
  readonly holder: { readonly pid?: unknown, readonly host?: unknown, readonly token?: unknown }
  readonly mtimeMs: number
  /** Names this lock in takeover markers: its token, or for a lock without one a hash of its bytes. */
  readonly key: string
}

function parseLock (text: string, mtimeMs: number): LockView {
  let holder: LockView['holder'] = {}
  try {
    const v = JSON.parse(text) as unknown
    if (typeof v === 'object' && v !== null) holder = v as LockView['holder']
  } catch {
    // Torn by a crash while it was written (a lock of a version that wrote it in place): nobody holds it.
  }
  const key = typeof holder.token === 'string' && TOKEN_RE.test(holder.token)
    ? holder.token
    : `h${createHash('sha256').update(text).digest('hex').slice(0, 32)}`
  return { holder, mtimeMs, key }
}

/** A lock (or marker) as it is now, or null when there is none (ESTALE: replaced while we read it, on NFS). */
async function readLock (path: string): Promise<LockView | null> {
  let fh: FileHandle | undefined
  try {
    fh = await open(path, 'r')
    const text = await fh.readFile('utf8')
    const { mtimeMs } = await fh.stat()
    return parseLock(text, mtimeMs)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ESTALE') return null
    throw err
  } finally {
    await fh?.close().catch(() => {})
  }
}

/** Held by a process that is running (this host) or that touched it within LOCK_STALE_MS (another host). */
function isLive ({ holder, mtimeMs }: LockView): boolean {
  const pid = typeof holder.pid === 'number' ? holder.pid : 0
  if (holder.host !== hostname()) return typeof holder.host === 'string' && Date.now() - mtimeMs < LOCK_STALE_MS
  if (pid === process.pid) return typeof holder.token === 'string' && OWN_TOKENS.has(holder.token)
  return pid > 0 && alive(pid)
}

function everyInterval (beat: () => Promise<void>, intervalMs: number): () => void {
  const t = setInterval(() => { void beat() }, intervalMs).unref()
  return () => { clearInterval(t) }
}

/** Holds one spool directory's lock for an AuditSpool. */
export class SpoolLock {
  readonly dir: string
  readonly #logger: AuditLogger | undefined
  readonly #hooks: SpoolLockHooks | undefined
  /** Stops the spool once the lock is lost: the directory is someone else's now. */
  readonly #onLost: (err: PixProxyError) => void
  readonly #lockToken = randomUUID()
  /** Cancels the lock heartbeat; null when not holding the lock. */
  #heartbeat: (() => void) | null = null
  /** The lock was taken over (or removed) under us: the directory is someone else's now. */
  #lost = false

  constructor (dir: string, logger: AuditLogger | undefined, hooks: SpoolLockHooks | undefined, onLost: (err: PixProxyError) => void) {
    this.dir = dir
    this.#logger = logger
    this.#hooks = hooks
    this.#onLost = onLost
  }

  /** The lock was taken over (or removed) under us: the directory is someone else's now. */
  get lost (): boolean {
    return this.#lost
  }

  /**
   * Takes `spool.lock`. Why it is done this way, on a local disk and on NFSv4 (EFS) alike:
   *
   * - The lock appears with its content already in it: written to a file of our own, then hard-linked into place
   *   (link fails with EEXIST if the lock exists, atomically). Creating spool.lock with O_EXCL and then writing it
   *   let a process claiming the same slot read it empty in between, take it for a torn (dead) lock and take it
   *   over, so two live processes shared one slot (test/audit/slots.test.ts "claims race across processes").
   * - A stale lock (its holder gone) is taken over by one claimer only. Judging it stale and replacing it are two
   *   steps, so claimers that judged it at the same time all replaced it, one after another, and all believed they
   *   owned the directory. Now a claimer must first create `spool.lock.takeover-<stale token>-1`, exclusively
   *   (link again): of the claimers acting on one judgment exactly one gets it, the others are told the spool is
   *   locked. The winner checks that the lock is still the one it judged (a claimer with an old judgment may
   *   arrive after the takeover, when the marker is gone again) and then renames its own over it: one atomic
   *   replace, so the lock is never absent and nobody can link a third one in meanwhile.
   * - Not "rename the stale lock aside, check it, link ours": rename cannot be made conditional, so a claimer with
   *   an old judgment moves the NEW owner's lock aside; putting it back leaves the name empty for a moment, a third
   *   claimer links its own in, and two processes own the directory again.
   * - A claimer that dies holding a marker must not wedge the slot for ever: a marker is judged like a lock (pid
   *   gone on this host, untouched for LOCK_STALE_MS elsewhere) and a stale one is passed by taking marker n+1,
   *   again exclusively. After a takeover the winner removes the markers of the lock it replaced.
   * - Why this holds on NFSv4: LINK and RENAME are single operations the server performs atomically in the
   *   directory, and NFSv4.1 sessions (EFS) give them exactly-once semantics, so a retransmitted LINK does not
   *   report EEXIST for its own success (the NFSv2/3 hazard that made O_EXCL and link locks unreliable there).
   *   Content and mtime are read through one open handle: opening revalidates the attributes (close-to-open
   *   consistency), where stat() of a name may answer from the client's attribute cache, and both come from the
   *   same file even if the name is replaced meanwhile.
   * - What no lock of this kind can prevent: a holder on another host that is paused for longer than
   *   LOCK_STALE_MS is presumed dead and taken over while it still believes it holds the lock. Its heartbeat
   *   checks the token and stops it (#beat); until then (at most LOCK_HEARTBEAT_MS after it resumes) it may
   *   still append.
   */
  async lock (): Promise<void> {
    const path = join(this.dir, LOCK_NAME)
    const token = this.#lockToken
    const tmp = `${path}.${token}`
    OWN_TOKENS.add(token)
    try {
      await writeFile(tmp, JSON.stringify({ pid: process.pid, host: hostname(), token }), { mode: FILE_MODE })
      for (;;) {
        try {
          await link(tmp, path)
          break
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
        }
        const held = await readLock(path)
        if (held === null) continue // released meanwhile: try again
        if (isLive(held)) throw this.#locked(held, '')
        await this.#hooks?.judgedStale?.()
        if (await this.#takeOver(path, tmp, held)) {
          this.#logger?.warn({ dir: this.dir, previous: held.holder }, 'took over the audit spool lock of a process that is gone')
          break
        }
        // The lock changed since we judged it (taken over by another claimer, or released): judge it again.
      }
    } catch (err) {
      OWN_TOKENS.delete(token)
      throw err
    } finally {
      await unlink(tmp).catch(() => {}) // gone already after a takeover (renamed into place)
    }
    this.#heartbeat = (this.#hooks?.heartbeat ?? everyInterval)(async () => { await this.#beat(path) }, LOCK_HEARTBEAT_MS)
  }

  /** True once our own lock (`tmp`) replaced the stale `held`; false when the lock is no longer `held`. */
  async #takeOver (path: string, tmp: string, held: LockView): Promise<boolean> {
    const prefix = `${LOCK_NAME}.takeover-${held.key}-`
    for (let n = 1; ; n++) {
      const marker = join(this.dir, `${prefix}${n}`)
      try {
        await link(tmp, marker)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
        const m = await readLock(marker)
        if (m === null) n-- // its claimer finished (or gave up) meanwhile: try this one again
        else if (isLive(m)) throw this.#locked(m, ' (taking it over)')
        continue // its claimer died in the middle of the takeover: the next marker
      }
      try {
        const now = await readLock(path)
        if (now === null || now.key !== held.key) return false
        await rename(tmp, path)
      } finally {
        await unlink(marker).catch(() => {})
      }
      // Markers of claimers that died holding one, and that no live claimer can need any more (the lock is ours).
      const names = await readdir(this.dir).catch(() => [] as string[])
      for (const name of names) if (name.startsWith(prefix)) await unlink(join(this.dir, name)).catch(() => {})
      return true
    }
  }

  #locked (held: LockView, how: string): PixProxyError {
    return new PixProxyError(Errors.AUDIT_SPOOL_LOCKED, [this.dir, `${String(held.holder.pid)} on ${String(held.holder.host)}${how}`])
  }

  /**
   * The heartbeat: touches the lock so that other hosts see its holder alive, but first reads it. A lock that is
   * no longer ours (taken over while this process was presumed dead, e.g. paused past LOCK_STALE_MS), is gone, or
   * is being taken over stops the spool: the directory belongs to someone else, who replays and ships its rows.
   * The lock is refreshed in place (its mtime, through the handle it was read from), never rewritten or replaced,
   * so no one ever sees it absent or half-written because of a refresh.
   */
  async #beat (path: string): Promise<void> {
    if (this.#lost) return
    let fh: FileHandle | undefined
    try {
      fh = await open(path, 'r')
      const held = parseLock(await fh.readFile('utf8'), 0)
      if (held.holder.token !== this.#lockToken) {
        this.#lose(this.#locked(held, ''))
        return
      }
      // A claimer that judged us dead holds the marker for our token and will replace the lock: stop now rather
      // than at the next beat.
      const marker = join(this.dir, `${LOCK_NAME}.takeover-${held.key}-1`)
      if (await stat(marker).then(() => true, () => false)) {
        this.#lose(new PixProxyError(Errors.AUDIT_SPOOL_LOCKED, [this.dir, 'another process taking over its lock']))
        return
      }
      const now = new Date()
      await fh.utimes(now, now)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ENOENT' || code === 'ESTALE') this.#lose(new PixProxyError(Errors.AUDIT_SPOOL_LOCKED, [this.dir, 'nobody: its lock was removed']))
      else this.#logger?.warn({ code: Errors.AUDIT_SPOOL_IO.code, err, path }, 'cannot refresh the audit spool lock')
    } finally {
      await fh?.close().catch(() => {})
    }
  }

  /** The directory is no longer ours: write, delete and ship nothing more from it. */
  #lose (err: PixProxyError): void {
    if (this.#lost) return
    this.#lost = true
    this.#heartbeat?.()
    this.#heartbeat = null
    OWN_TOKENS.delete(this.#lockToken)
    this.#logger?.error({ code: err.code, dir: this.dir, err }, 'audit spool lock lost to another process: this one stops writing to the directory')
    this.#onLost(err)
  }

  async unlock (): Promise<void> {
    this.#heartbeat?.()
    this.#heartbeat = null
    const token = this.#lockToken
    if (!OWN_TOKENS.has(token)) return // never held, or lost
    try {
      await this.#releaseLock(token)
    } finally {
      OWN_TOKENS.delete(token) // only now: until the lock is gone, claimers in this thread must see it live
    }
  }

  async #releaseLock (token: string): Promise<void> {
    const path = join(this.dir, LOCK_NAME)
    // Only our own, and not while someone takes it over: we hold the takeover marker for our token while we check
    // and remove it, so a claimer that judged us dead (we may have been paused) cannot replace the lock between our
    // check and our unlink and then lose its lock to that unlink.
    const tmp = `${path}.${token}`
    const marker = join(this.dir, `${LOCK_NAME}.takeover-${token}-1`)
    try {
      await writeFile(tmp, JSON.stringify({ pid: process.pid, host: hostname(), token }), { mode: FILE_MODE })
      await link(tmp, marker)
    } catch {
      return // being taken over (or we cannot write): the lock is left to whoever replaces it
    } finally {
      await unlink(tmp).catch(() => {})
    }
    try {
      const held = await readLock(path)
      if (held?.holder.token === token) await unlink(path)
    } catch {
      // Left in place: it names this process, which is gone by then, so the next claimer takes it over.
    } finally {
      await unlink(marker).catch(() => {})
    }
  }
}
