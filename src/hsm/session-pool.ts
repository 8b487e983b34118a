/**
 * The PKCS#11 side of the key store: the module (C_Initialize/C_Finalize), the token, the login and a bounded pool of
 * sessions that PKCS#11 operations run on. What runs on a session (finding keys, signing) is the key store's
 * (pkcs11.ts).
 */
import { Module, SessionFlag, UserType } from 'graphene-pk11'
import type { Session, Slot } from 'graphene-pk11'
import pkcs11js from 'pkcs11js'
import { Errors, PixProxyError } from '../../core/errors.ts'
import { ckrCode, ckrName, hsmError } from './errors.ts'

/** The logger subset the pool (and the key store) uses; a pino logger fits. Never receives the PIN. */
export interface Pkcs11Logger {
  warn (obj: object, msg: string): void
  info (obj: object, msg: string): void
}

export interface Pkcs11Options {
  /** Path of the PKCS#11 module, e.g. `/usr/lib/softhsm/libsofthsm2.so`. */
  modulePath: string
  /** CKA_LABEL of the token; it must match exactly one token. */
  tokenLabel: string
  /** User PIN. Kept in memory only to log in again after the token drops the login. */
  pin: string
  /** Sessions in the pool, each running one operation at a time. Default 4. */
  poolSize?: number
  /** How long an operation may wait for a free session before failing with HSM_POOL_TIMEOUT. Default 5000. */
  acquireTimeoutMs?: number
  /** How long close() waits for running operations before giving up on a clean shutdown. Default 5000. */
  closeTimeoutMs?: number
  log?: Pkcs11Logger
  /**
   * Test seam: arms the acquire and close deadlines (`fn` after `ms`) and returns a function that disarms it.
   * Default: an unref'd setTimeout. Tests pass a manual clock to decide exactly when a deadline passes instead
   * of racing real HSM calls against a few milliseconds.
   */
  schedule?: Pkcs11Schedule
}

/** Arms `fn` to run after `ms` milliseconds; the returned function disarms it (a no-op once it ran). */
export type Pkcs11Schedule = (fn: () => void, ms: number) => () => void

function realTimer (fn: () => void, ms: number): () => void {
  const timer = setTimeout(fn, ms)
  timer.unref()
  return () => { clearTimeout(timer) }
}

export interface Pkcs11PoolStats {
  /** Live sessions (idle + busy). */
  size: number
  idle: number
  busy: number
  /** Operations queued for a session. */
  waiting: number
  /**
   * Sessions discarded after a PKCS#11 failure (closed, device error, logged out, or left in an unknown
   * operation state); each place is refilled with a fresh session.
   */
  replaced: number
}

export interface Pkcs11TokenInfo {
  label: string
  manufacturer: string
  model: string
  serial: string
  userPinLocked: boolean
  userPinCountLow: boolean
  userPinFinalTry: boolean
}

// pkcs11js 2.1.7 exports no CKS_* constants; values from PKCS#11 v2.40 §5.7 (CK_STATE).
const CKS_RO_USER_FUNCTIONS = 1
const CKS_RW_USER_FUNCTIONS = 3
// CK_TOKEN_INFO flags (PKCS#11 v2.40 §5.5).
const CKF_USER_PIN_COUNT_LOW = 0x00010000
const CKF_USER_PIN_FINAL_TRY = 0x00020000
const CKF_USER_PIN_LOCKED = 0x00040000

const {
  CKR_CRYPTOKI_ALREADY_INITIALIZED, CKR_CRYPTOKI_NOT_INITIALIZED, CKR_USER_ALREADY_LOGGED_IN, CKR_USER_NOT_LOGGED_IN,
  CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED, CKR_DEVICE_ERROR, CKR_DEVICE_REMOVED, CKR_TOKEN_NOT_PRESENT,
  CKR_OPERATION_ACTIVE, CKR_KEY_HANDLE_INVALID, CKR_OBJECT_HANDLE_INVALID
} = pkcs11js

/**
 * Errors after which the session cannot be trusted any more: it is discarded and the operation retried once on
 * a fresh session (logged in again if the token dropped the login). CKR_OPERATION_ACTIVE is here because a
 * session whose operation state is unknown is cheaper to replace than to reason about.
 */
const SESSION_LOST = new Set([
  CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED, CKR_DEVICE_ERROR, CKR_DEVICE_REMOVED, CKR_TOKEN_NOT_PRESENT,
  CKR_USER_NOT_LOGGED_IN, CKR_OPERATION_ACTIVE
])
/** Object handles die with the login (SoftHSM invalidates private-object handles on logout): look keys up again. */
const KEY_STALE = new Set([CKR_KEY_HANDLE_INVALID, CKR_OBJECT_HANDLE_INVALID])

function positiveInt (value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback
  if (!Number.isSafeInteger(value) || value < 1) throw new PixProxyError(Errors.CONFIG_INVALID, [`${name} must be a positive integer, got ${value}`])
  return value
}

function closeModule (module: Module, finalize: boolean): void {
  // Best effort on a failed open: the error being thrown already says what went wrong.
  if (finalize) {
    try { module.finalize() } catch { /* the open error matters more */ }
  }
  try { module.close() } catch { /* the open error matters more */ }
}

interface Waiter {
  resolve (session: Session): void
  reject (err: Error): void
  cancel: () => void
}

interface PoolInit {
  module: Module
  slot: Slot
  ownsModule: boolean
  opts: Pkcs11Options
}

/**
 * A bounded pool of logged-in sessions on one PKCS#11 token.
 *
 * A PKCS#11 session runs one operation at a time (CKR_OPERATION_ACTIVE otherwise), so each pooled session
 * serves one caller at a time and callers queue FIFO with a deadline. The user logs in once; PKCS#11 login
 * state is per application, so every session opened afterwards is already logged in.
 *
 * PKCS#11 module state is process-wide: C_Initialize/C_Finalize and the login are shared by everything in the
 * process that loads the same module (another pool, the OpenSSL pkcs11 engine). Open one pool (one key store)
 * per module; a pool that finds the module already initialised or the user already logged in leaves finalising
 * and logging out to whoever did it.
 */
export class Pkcs11SessionPool {
  readonly #module: Module
  readonly #slot: Slot
  readonly #tokenLabel: string
  readonly #pin: string
  readonly #ownsModule: boolean
  #ownsLogin = false
  readonly #acquireTimeoutMs: number
  readonly #closeTimeoutMs: number
  readonly #log: Pkcs11Logger | undefined
  readonly #schedule: Pkcs11Schedule
  readonly #idle: Session[] = []
  readonly #busy = new Set<Session>()
  readonly #waiters: Waiter[] = []
  /** Pool places with no session (not yet opened, or whose session died and could not be replaced yet). */
  #vacant: number
  /** Administrative operations (key generation) running outside the pool; close() waits for them too. */
  #admin = 0
  #replaced = 0
  /** Bumped on every login: object handles found before it may be stale. */
  #generation = 0
  #closed = false
  #closing: Promise<void> | undefined
  #onDrained: (() => void) | undefined

  private constructor (init: PoolInit) {
    this.#module = init.module
    this.#slot = init.slot
    this.#ownsModule = init.ownsModule
    this.#tokenLabel = init.opts.tokenLabel
    this.#pin = init.opts.pin
    this.#vacant = positiveInt(init.opts.poolSize, 4, 'poolSize')
    this.#acquireTimeoutMs = positiveInt(init.opts.acquireTimeoutMs, 5000, 'acquireTimeoutMs')
    this.#closeTimeoutMs = positiveInt(init.opts.closeTimeoutMs, 5000, 'closeTimeoutMs')
    this.#log = init.opts.log
    this.#schedule = init.opts.schedule ?? realTimer
  }

  /**
   * Loads the module, initialises it with CKF_OS_LOCKING_OK, finds the token by label, opens the pool and
   * logs in. Fails with HSM_MODULE_LOAD, HSM_TOKEN_NOT_FOUND, HSM_TOKEN_AMBIGUOUS, HSM_PIN_INCORRECT,
   * HSM_PIN_LOCKED or HSM_OPERATION; nothing stays loaded after a failure.
   */
  static async open (opts: Pkcs11Options): Promise<Pkcs11SessionPool> {
    for (const name of ['modulePath', 'tokenLabel', 'pin'] as const) {
      if (typeof opts[name] !== 'string' || opts[name] === '') throw new PixProxyError(Errors.CONFIG_INVALID, [`${name} must be a non-empty string`])
    }
    positiveInt(opts.poolSize, 4, 'poolSize')
    positiveInt(opts.acquireTimeoutMs, 5000, 'acquireTimeoutMs')
    positiveInt(opts.closeTimeoutMs, 5000, 'closeTimeoutMs')

    let module: Module
    try {
      module = Module.load(opts.modulePath)
    } catch (err) {
      throw new PixProxyError(Errors.HSM_MODULE_LOAD, [opts.modulePath, err instanceof Error ? err.message : String(err)], { cause: err })
    }
    let ownsModule = true
    try {
      // Equivalent to graphene's module.initialize({ flags: CKF_OS_LOCKING_OK }), which however hides
      // CKR_CRYPTOKI_ALREADY_INITIALIZED: we need to know whether finalising is ours to do. The flag is what
      // makes concurrent signs on several sessions safe (without it SoftHSM crashed the process in 7 of 10 runs).
      module.lib.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK })
    } catch (err) {
      if (ckrCode(err) !== CKR_CRYPTOKI_ALREADY_INITIALIZED) {
        closeModule(module, false)
        const reason = ckrCode(err) !== undefined ? `C_Initialize returned ${ckrName(ckrCode(err) as number)}` : String(err)
        throw new PixProxyError(Errors.HSM_MODULE_LOAD, [opts.modulePath, reason], { cause: err })
      }
      ownsModule = false
      opts.log?.warn({ module: opts.modulePath }, 'PKCS#11 module already initialised in this process; sharing it and leaving C_Finalize to its owner')
    }

    let pool: Pkcs11SessionPool
    try {
      pool = new Pkcs11SessionPool({ module, slot: findSlot(module, opts.tokenLabel), ownsModule, opts })
    } catch (err) {
      closeModule(module, ownsModule)
      throw hsmError(err, 'C_GetSlotList', opts.tokenLabel)
    }
    const opened: Session[] = []
    try {
      // The first session logs in; the others inherit the login.
      while (pool.#vacant > 0) opened.push(pool.#openSession())
    } catch (err) {
      for (const session of opened) pool.#release(session)
      await pool.close().catch(() => { /* the open error matters more */ })
      throw err
    }
    for (const session of opened) pool.#release(session)
    return pool
  }

  /** The token's label (errors, logs). */
  get tokenLabel (): string {
    return this.#tokenLabel
  }

  /**
   * Bumped on every login and whenever an object handle turned out stale: a handle found on a session of this
   * pool is good only while the generation it was found in lasts.
   */
  get generation (): number {
    return this.#generation
  }

  /**
   * Runs `fn` on a pooled session. When the session turns out dead, it is discarded and `fn` runs once more on
   * a fresh session; when an object handle turned stale, the generation is bumped (so keys are looked up again)
   * and `fn` runs once more. Only for operations that are safe to repeat (signing is: it has no effect on the
   * token). Failures are mapped to the catalogue (hsmError) under the name `op`.
   */
  async run<T> (op: string, fn: (session: Session) => Promise<T> | T): Promise<T> {
    const first = await this.#acquire()
    let held: Session | undefined = first
    try {
      try {
        return await fn(first)
      } catch (err) {
        const code = ckrCode(err)
        if (code === undefined || !(SESSION_LOST.has(code) || KEY_STALE.has(code))) throw err
        if (SESSION_LOST.has(code)) {
          held = undefined
          this.#discard(first, op, code)
          held = this.#openSession()
        } else {
          this.#ensureLoggedIn(first)
          this.#generation++
        }
        return await fn(held)
      }
    } catch (err) {
      const code = ckrCode(err)
      // After a failed PKCS#11 call the session's operation state is unknown (SoftHSM keeps a sign operation
      // active after C_Sign returns CKR_ARGUMENTS_BAD): never hand such a session to the next caller.
      if (held !== undefined && code !== undefined) {
        this.#discard(held, op, code)
        held = undefined
        this.#refill()
      }
      throw hsmError(err, op, this.#tokenLabel)
    } finally {
      if (held !== undefined) this.#release(held)
    }
  }

  /**
   * Readiness probe: a session can be taken, is logged in (logging in again if needed), the token answers and its
   * user PIN is not locked; then `probe` runs on the same session (the key store checks its keys there).
   */
  async check (probe: (session: Session) => void = () => {}): Promise<void> {
    await this.run('check', (session) => {
      this.#ensureLoggedIn(session)
      const info = this.#module.lib.C_GetTokenInfo(this.#slot.handle)
      if ((info.flags & CKF_USER_PIN_LOCKED) !== 0) throw new PixProxyError(Errors.HSM_PIN_LOCKED, [this.#tokenLabel])
      probe(session)
    })
  }

  /** CK_TOKEN_INFO of the token, as plain facts. */
  tokenInfo (): Pkcs11TokenInfo {
    if (this.#closed) throw new PixProxyError(Errors.HSM_POOL_CLOSED)
    try {
      const token = this.#slot.getToken()
      return {
        label: token.label,
        manufacturer: token.manufacturerID,
        model: token.model,
        serial: token.serialNumber,
        userPinLocked: (token.flags & CKF_USER_PIN_LOCKED) !== 0,
        userPinCountLow: (token.flags & CKF_USER_PIN_COUNT_LOW) !== 0,
        userPinFinalTry: (token.flags & CKF_USER_PIN_FINAL_TRY) !== 0
      }
    } catch (err) {
      throw hsmError(err, 'C_GetTokenInfo', this.#tokenLabel)
    }
  }

  /**
   * Runs an administrative operation (key generation by `pix-proxy hsm init`, tests) on a read/write session of its
   * own, logged in, outside the signing pool; close() waits for it like for a sign. Not for the request path.
   */
  async adminSession<T> (op: string, fn: (session: Session) => Promise<T>): Promise<T> {
    if (this.#closed) throw new PixProxyError(Errors.HSM_POOL_CLOSED)
    this.#admin++
    let session: Session | undefined
    try {
      // Creating token objects needs a read/write session; the pool's are read-only.
      session = this.#slot.open(SessionFlag.RW_SESSION | SessionFlag.SERIAL_SESSION)
      this.#ensureLoggedIn(session)
      return await fn(session)
    } catch (err) {
      throw hsmError(err, op, this.#tokenLabel)
    } finally {
      if (session !== undefined) {
        try { session.close() } catch (err) { this.#log?.warn({ token: this.#tokenLabel, ckr: ckrName(ckrCode(err) ?? 0) }, `closing the ${op} session failed`) }
      }
      this.#admin--
      this.#checkDrained()
    }
  }

  stats (): Pkcs11PoolStats {
    return {
      size: this.#idle.length + this.#busy.size,
      idle: this.#idle.length,
      busy: this.#busy.size,
      waiting: this.#waiters.length,
      replaced: this.#replaced
    }
  }

  /**
   * Stops the pool: queued operations fail with HSM_POOL_CLOSED at once, running ones may finish (up to
   * closeTimeoutMs), then logout, close the sessions and finalize. Idempotent: every call returns the same
   * promise. If operations are still running at the deadline the promise rejects with HSM_OPERATION and the
   * shutdown completes when the last of them ends (finalising under a running C_Sign is undefined behaviour).
   */
  close (): Promise<void> {
    this.#closing ??= this.#shutdown()
    return this.#closing
  }

  async #shutdown (): Promise<void> {
    this.#closed = true
    for (const waiter of this.#waiters.splice(0)) {
      waiter.cancel()
      waiter.reject(new PixProxyError(Errors.HSM_POOL_CLOSED))
    }
    if (this.#busy.size + this.#admin > 0) {
      const drained = await new Promise<boolean>((resolve) => {
        const cancel = this.#schedule(() => resolve(false), this.#closeTimeoutMs)
        this.#onDrained = () => { cancel(); resolve(true) }
      })
      this.#onDrained = undefined
      if (!drained) {
        const running = this.#busy.size + this.#admin
        this.#log?.warn({ token: this.#tokenLabel, running }, 'HSM operations still running at close; the shutdown finishes when they end')
        // Finalising under a running C_Sign is undefined behaviour: finish the shutdown once they are done.
        this.#onDrained = () => {
          this.#onDrained = undefined
          try {
            this.#teardown()
          } catch (err) {
            this.#log?.warn({ token: this.#tokenLabel, err: String(err) }, 'late HSM shutdown failed')
          }
        }
        throw new PixProxyError(Errors.HSM_OPERATION, ['close', `${running} operations still running after ${this.#closeTimeoutMs} ms`])
      }
    }
    this.#teardown()
  }

  /** Logout (if this pool logged in), close the sessions, finalize (if this pool initialised the module). */
  #teardown (): void {
    const failures: Array<{ op: string, err: unknown }> = []
    const first = this.#idle[0]
    if (this.#ownsLogin && first !== undefined) {
      try { first.logout() } catch (err) {
        const code = ckrCode(err)
        if (code !== CKR_USER_NOT_LOGGED_IN && (code === undefined || !SESSION_LOST.has(code))) failures.push({ op: 'C_Logout', err })
      }
    }
    for (const session of this.#idle.splice(0)) {
      try { session.close() } catch (err) {
        const code = ckrCode(err)
        if (code === undefined || !SESSION_LOST.has(code)) failures.push({ op: 'C_CloseSession', err })
      }
    }
    if (this.#ownsModule) {
      try { this.#module.finalize() } catch (err) {
        if (ckrCode(err) !== CKR_CRYPTOKI_NOT_INITIALIZED) failures.push({ op: 'C_Finalize', err })
      }
    }
    try { this.#module.close() } catch (err) { failures.push({ op: 'dlclose', err }) }
    for (const f of failures) this.#log?.warn({ token: this.#tokenLabel, op: f.op, err: String(f.err) }, 'HSM close step failed')
    const failure = failures[0]
    if (failure !== undefined) throw hsmError(failure.err, failure.op, this.#tokenLabel)
    this.#log?.info({ token: this.#tokenLabel }, 'PKCS#11 key store closed')
  }

  #acquire (): Promise<Session> {
    if (this.#closed) return Promise.reject(new PixProxyError(Errors.HSM_POOL_CLOSED))
    const idle = this.#idle.shift()
    if (idle !== undefined) {
      this.#busy.add(idle)
      return Promise.resolve(idle)
    }
    if (this.#vacant > 0) {
      try {
        return Promise.resolve(this.#openSession())
      } catch (err) {
        return Promise.reject(err)
      }
    }
    return new Promise<Session>((resolve, reject) => {
      const waiter: Waiter = { resolve, reject, cancel: () => {} }
      waiter.cancel = this.#schedule(() => {
        const i = this.#waiters.indexOf(waiter)
        if (i !== -1) this.#waiters.splice(i, 1)
        reject(new PixProxyError(Errors.HSM_POOL_TIMEOUT, [this.#acquireTimeoutMs]))
      }, this.#acquireTimeoutMs)
      this.#waiters.push(waiter)
    })
  }

  #release (session: Session): void {
    const waiter = this.#waiters.shift()
    if (waiter !== undefined) {
      // Handed over still busy: FIFO order, no idle window for a newcomer to jump the queue.
      waiter.cancel()
      waiter.resolve(session)
      return
    }
    this.#busy.delete(session)
    this.#idle.push(session)
    this.#checkDrained()
  }

  /** Fills one vacant place with a new, logged-in session, returned busy. */
  #openSession (): Session {
    this.#vacant--
    let session: Session | undefined
    try {
      session = this.#slot.open(SessionFlag.SERIAL_SESSION)
      this.#ensureLoggedIn(session)
    } catch (err) {
      if (session !== undefined) {
        try { session.close() } catch { /* the open error is the one to report */ }
      }
      this.#vacant++
      const code = ckrCode(err)
      if (code === CKR_TOKEN_NOT_PRESENT || code === CKR_DEVICE_REMOVED) throw new PixProxyError(Errors.HSM_TOKEN_NOT_FOUND, [this.#tokenLabel], { cause: err })
      throw hsmError(err, 'C_OpenSession', this.#tokenLabel)
    }
    this.#busy.add(session)
    return session
  }

  #discard (session: Session, op: string, code: number): void {
    this.#busy.delete(session)
    this.#vacant++
    this.#replaced++
    try {
      session.close()
    } catch (err) {
      const closeCode = ckrCode(err)
      // A dead session refuses to close; anything else is worth a line in the log.
      if (closeCode === undefined || !SESSION_LOST.has(closeCode)) this.#log?.warn({ token: this.#tokenLabel, err: String(err) }, 'closing a dead HSM session failed')
    }
    this.#log?.warn({ token: this.#tokenLabel, op, ckr: ckrName(code) }, 'HSM session discarded after a failure; it will be replaced')
    this.#checkDrained()
  }

  /**
   * Refills vacant places right away (best effort: a token that is gone is retried by the next acquire), so
   * that queued operations do not wait out their deadline and the pool keeps its size.
   */
  #refill (): void {
    while (this.#vacant > 0 && !this.#closed) {
      let session: Session
      try {
        session = this.#openSession()
      } catch (err) {
        this.#log?.warn({ token: this.#tokenLabel, err: String(err) }, 'cannot replace a lost HSM session yet')
        return
      }
      this.#release(session)
    }
  }

  #ensureLoggedIn (session: Session): void {
    const { state } = this.#module.lib.C_GetSessionInfo(session.handle)
    if (state === CKS_RO_USER_FUNCTIONS || state === CKS_RW_USER_FUNCTIONS) return
    try {
      session.login(this.#pin, UserType.USER)
    } catch (err) {
      if (ckrCode(err) === CKR_USER_ALREADY_LOGGED_IN) return
      throw hsmError(err, 'C_Login', this.#tokenLabel)
    }
    this.#ownsLogin = true
    this.#generation++
  }

  #checkDrained (): void {
    if (this.#busy.size + this.#admin === 0) this.#onDrained?.()
  }
}

function findSlot (module: Module, tokenLabel: string): Slot {
  const slots = module.getSlots(true)
  const matches: Slot[] = []
  for (let i = 0; i < slots.length; i++) {
    const slot = slots.items(i)
    if (slot.getToken().label === tokenLabel) matches.push(slot)
  }
  const slot = matches[0]
  if (slot === undefined) throw new PixProxyError(Errors.HSM_TOKEN_NOT_FOUND, [tokenLabel])
  if (matches.length > 1) throw new PixProxyError(Errors.HSM_TOKEN_AMBIGUOUS, [matches.length, tokenLabel])
  return slot
}
