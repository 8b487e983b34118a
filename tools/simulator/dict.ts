/**
 * DICT v2 (`/api/v2/`): entries, claims with their state machine, and rate-limit policies, following API-DICT
 * 2.12.1 (docs/bacen.md §1). Writes must carry a valid DICT-profile signature by one of the caller's signing
 * certificates; every answer, problems included, is signed with the BCB key (context.ts `sendDict`).
 *
 * Simplifications, on purpose: no reconciliation (CIDs), infraction reports, refunds, funds recovery or fraud
 * markers; no statistics (IncludeStatistics is accepted and ignored); list results are consistent immediately
 * (BACEN warns of up to 5 s lag).
 */
import { createHash, randomUUID } from 'node:crypto'
import { readFile, rename, writeFile } from 'node:fs/promises'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { canonicalizeDocument } from '../../core/xmldsig/c14n.ts'
import { parseXml, XmlError } from '../../core/xmldsig/xml.ts'
import type { XmlDocument, XmlElement } from '../../core/xmldsig/xml.ts'
import { verifyDocument } from '../../core/xmldsig/verify.ts'
import type { VerifyCode } from '../../core/xmldsig/verify.ts'
import { Errors, PixProxyError } from '../../core/errors.ts'
import {
  correlationId, participantOfSigner, requestState, sendDict, sendDictProblem
} from './context.ts'
import type { SimulatorContext } from './context.ts'
import type { AcceptedMessage } from './log.ts'
import { DictProblem, dictError } from './problem.ts'
import type { Violation } from './problem.ts'
import { RateLimiter } from './ratelimit.ts'
import type { PolicyOverride } from './ratelimit.ts'
import { child, text, xmlDocument } from './xml.ts'
import type { XmlTree } from './xml.ts'

const DAY_MS = 86_400_000

export interface DictOptions {
  /** Overrides of BACEN's bucket sizes by policy name (e.g. { ENTRIES_WRITE: { capacity: 5, refillPerMinute: 0 } }). */
  policies?: Partial<Record<string, PolicyOverride>>
  /** The participants' ENTRIES_READ_PARTICIPANT_ANTISCAN category, A–H. Default A. */
  category?: string
  /** Claim resolution period (BACEN: 7 days). */
  resolutionPeriodMs?: number
  /** Ownership-claim completion period after the resolution period (BACEN: 7 days). */
  completionPeriodMs?: number
  /** Keys per account: natural person 5, legal person 20 (DICT operational manual). */
  entryLimits?: { naturalPerson: number, legalPerson: number }
  /** JSON file the entries, claims and request ids are loaded from at start and saved to on change and close. */
  stateFile?: string
  /**
   * Answered RequestIds remembered for idempotent replay, oldest forgotten first. Default 100,000 (about 17 minutes
   * of writes at 100/s). BACEN publishes no window; unbounded, every answer (about 1 KB) was kept for as long as the
   * simulator ran: 360,000 of them after an hour of load at 100 writes/s.
   */
  rememberedRequests?: number
}

interface Account {
  participant: string
  branch?: string
  accountNumber: string
  accountType: string
  openingDate: string
}

interface Person {
  type: string
  taxIdNumber: string
  name: string
  tradeName?: string
}

interface Entry {
  key: string
  keyType: string
  account: Account
  owner: Person
  creationDate: string
  keyOwnershipDate: string
  requestId: string
  openClaimCreationDate?: string
}

type ClaimStatus = 'OPEN' | 'WAITING_RESOLUTION' | 'CONFIRMED' | 'CANCELLED' | 'COMPLETED'

interface Claim {
  id: string
  type: 'OWNERSHIP' | 'PORTABILITY'
  key: string
  keyType: string
  claimerAccount: Account
  claimer: Person
  donorParticipant: string
  status: ClaimStatus
  resolutionPeriodEnd: string
  completionPeriodEnd: string
  lastModified: string
  /** Ownership date of the donor's entry, carried over to the claimer's entry on a portability. */
  donorKeyOwnershipDate: string
  confirmReason?: string
  cancelReason?: string
  cancelledBy?: 'DONOR' | 'CLAIMER'
  completeRequestId?: string
  entryCreationDate?: string
  keyOwnershipDate?: string
}

/** An idempotent request already answered: same content → same answer. */
interface StoredAnswer {
  fingerprint: string
  status: number
  xml: string
}

interface PersistedState {
  version: 1
  entries: Entry[]
  claims: Claim[]
  answers: Array<[string, StoredAnswer]>
}

/** The account an entry points at, with its owner: API-DICT limits the keys per (account, owner). */
function accountOwnerKey (account: Account, owner: Person): string {
  return `${account.participant}|${account.branch ?? ''}|${account.accountNumber}|${owner.taxIdNumber}`
}

const isActive = (c: Claim): boolean => c.status !== 'COMPLETED' && c.status !== 'CANCELLED'

/**
 * The directory's data. In memory; optionally mirrored to a JSON file. Entries and claims change only through the
 * methods below, which keep two indexes: keys per (account, owner) and the active claim per key. A load test
 * creates tens of thousands of entries, and scanning them all on every create made the simulator slower by the
 * minute.
 */
export class DictStore {
  readonly #entries = new Map<string, Entry>()
  readonly #claims = new Map<string, Claim>()
  readonly #keysPerAccount = new Map<string, number>()
  readonly #activeClaimByKey = new Map<string, Claim>()
  readonly #answers = new Map<string, StoredAnswer>()
  readonly #maxAnswers: number
  private readonly file: string | undefined
  private saveTimer: NodeJS.Timeout | undefined
  private saving: Promise<void> = Promise.resolve()

  constructor (file?: string, maxAnswers = 100_000) {
    this.file = file
    this.#maxAnswers = maxAnswers
  }

  /** The stored answer to a RequestId (scoped by caller and operation), if still remembered. */
  answer (scope: string): StoredAnswer | undefined {
    return this.#answers.get(scope)
  }

  /** Remembers an answer; past the bound, the oldest is forgotten (a Map iterates in insertion order). */
  rememberAnswer (scope: string, answer: StoredAnswer): void {
    this.#answers.set(scope, answer)
    while (this.#answers.size > this.#maxAnswers) {
      const oldest = this.#answers.keys().next().value as string
      this.#answers.delete(oldest)
    }
  }

  get rememberedAnswers (): number { return this.#answers.size }

  async load (): Promise<void> {
    if (this.file === undefined) return
    let raw: string
    try {
      raw = await readFile(this.file, 'utf8')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
      throw new PixProxyError(Errors.SIMULATOR_STATE, [this.file, (err as Error).message], { cause: err })
    }
    let state: PersistedState
    try {
      state = JSON.parse(raw) as PersistedState
      if (state.version !== 1 || !Array.isArray(state.entries) || !Array.isArray(state.claims) || !Array.isArray(state.answers)) throw new Error('not a version 1 simulator state')
    } catch (err) {
      throw new PixProxyError(Errors.SIMULATOR_STATE, [this.file, (err as Error).message], { cause: err })
    }
    for (const e of state.entries) this.putEntry(e)
    for (const c of state.claims) this.putClaim(c)
    // Files written before fingerprints became the signature's base64 digest hold hex (the same SHA-256).
    for (const [k, v] of state.answers) this.rememberAnswer(k, /^[0-9a-f]{64}$/.test(v.fingerprint) ? { ...v, fingerprint: Buffer.from(v.fingerprint, 'hex').toString('base64') } : v)
  }

  /** Schedules a save (batched: at most one write per 200 ms). */
  changed (): void {
    if (this.file === undefined || this.saveTimer !== undefined) return
    this.saveTimer = setTimeout(() => {
      this.saveTimer = undefined
      this.saving = this.saving.then(async () => { await this.save() })
    }, 200)
    this.saveTimer.unref()
  }

  private async save (): Promise<void> {
    if (this.file === undefined) return
    const state: PersistedState = { version: 1, entries: [...this.entries.values()], claims: [...this.claims.values()], answers: [...this.#answers] }
    // write-then-rename: a crash mid-write leaves the previous state, never half a file
    await writeFile(this.file + '.tmp', JSON.stringify(state))
    await rename(this.file + '.tmp', this.file)
  }

  async close (): Promise<void> {
    if (this.saveTimer !== undefined) {
      clearTimeout(this.saveTimer)
      this.saveTimer = undefined
    }
    await this.saving
    await this.save()
  }

  get entries (): ReadonlyMap<string, Entry> { return this.#entries }
  get claims (): ReadonlyMap<string, Claim> { return this.#claims }

  /** Adds or replaces the entry under its key. */
  putEntry (entry: Entry): void {
    this.deleteEntry(entry.key)
    this.#entries.set(entry.key, entry)
    const k = accountOwnerKey(entry.account, entry.owner)
    this.#keysPerAccount.set(k, (this.#keysPerAccount.get(k) ?? 0) + 1)
  }

  deleteEntry (key: string): void {
    const entry = this.#entries.get(key)
    if (entry === undefined) return
    this.#entries.delete(key)
    const k = accountOwnerKey(entry.account, entry.owner)
    const n = (this.#keysPerAccount.get(k) ?? 1) - 1
    if (n === 0) this.#keysPerAccount.delete(k)
    else this.#keysPerAccount.set(k, n)
  }

  /** Moves an entry to another account or owner data (an update keeps key, participant and tax id). */
  updateEntry (entry: Entry, account: Account, owner: Person): void {
    this.deleteEntry(entry.key)
    entry.account = account
    entry.owner = owner
    this.putEntry(entry)
  }

  /** How many keys point at this account for this owner. */
  keysOnAccount (account: Account, owner: Person): number {
    return this.#keysPerAccount.get(accountOwnerKey(account, owner)) ?? 0
  }

  putClaim (claim: Claim): void {
    this.#claims.set(claim.id, claim)
    if (isActive(claim)) this.#activeClaimByKey.set(claim.key, claim)
  }

  setClaimStatus (claim: Claim, status: ClaimStatus): void {
    claim.status = status
    if (isActive(claim)) this.#activeClaimByKey.set(claim.key, claim)
    else if (this.#activeClaimByKey.get(claim.key) === claim) this.#activeClaimByKey.delete(claim.key)
  }

  /** The claim on this key that is neither completed nor cancelled, if any. */
  activeClaim (key: string): Claim | undefined {
    return this.#activeClaimByKey.get(key)
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Validation (patterns from API-DICT 2.12.1 components/schemas)

const KEY_PATTERNS: Readonly<Record<string, RegExp>> = {
  CPF: /^[0-9]{11}$/,
  CNPJ: /^[a-zA-Z0-9]{14}$/,
  PHONE: /^\+[1-9]\d{1,14}$/,
  EMAIL: /^[a-z0-9.!#$'*+/=?^_`{|}~-]+@[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/,
  EVP: /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
}
const ISPB_RE = /^[a-zA-Z0-9]{8}$/
const BRANCH_RE = /^[0-9]{1,4}$/
const ACCOUNT_RE = /^[a-zA-Z0-9]{1,20}$/
const ACCOUNT_TYPES = ['CACC', 'TRAN', 'SLRY', 'SVGS', 'OTHR']
const UUID_RE = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/
const PAYER_ID_RE = /^([0-9]{11}|[0-9]{14})$/

/** The key type a key's form implies (for the anti-scan bucket of a key that does not exist). */
function inferKeyType (key: string): string {
  if (KEY_PATTERNS.CPF?.test(key) === true) return 'CPF'
  if (KEY_PATTERNS.EVP?.test(key) === true) return 'EVP'
  if (KEY_PATTERNS.CNPJ?.test(key) === true) return 'CNPJ'
  if (key.startsWith('+')) return 'PHONE'
  return 'EMAIL'
}

class Checker {
  readonly violations: Violation[] = []
  private readonly prefix: string

  constructor (prefix: string) {
    this.prefix = prefix
  }

  require (value: string | undefined, property: string): value is string {
    if (value === undefined || value === '') {
      this.violations.push({ reason: 'Value is required', property: `${this.prefix}.${property}` })
      return false
    }
    return true
  }

  regex (value: string | undefined, re: RegExp, property: string, display = re.source): void {
    if (!this.require(value, property)) return
    if (!re.test(value)) this.violations.push({ reason: `Value does not match regex '${display}'`, value, property: `${this.prefix}.${property}` })
  }

  oneOf (value: string | undefined, allowed: readonly string[], property: string): void {
    if (!this.require(value, property)) return
    if (!allowed.includes(value)) this.violations.push({ reason: `Value must be one of ${allowed.join(', ')}`, value, property: `${this.prefix}.${property}` })
  }

  date (value: string | undefined, property: string): void {
    if (!this.require(value, property)) return
    if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/.test(value) || Number.isNaN(Date.parse(value))) {
      this.violations.push({ reason: 'Value is not a date-time', value, property: `${this.prefix}.${property}` })
    }
  }

  maxLength (value: string | undefined, max: number, property: string): void {
    if (value !== undefined && value.length > max) this.violations.push({ reason: `Value is longer than ${max} characters`, value, property: `${this.prefix}.${property}` })
  }

  fail (reason: string, property: string, value?: string): void {
    this.violations.push({ reason, property: `${this.prefix}.${property}`, ...(value === undefined ? {} : { value }) })
  }
}

function readAccount (el: XmlElement | undefined, c: Checker, name: string): Account {
  const account: Account = {
    participant: text(el, 'Participant') ?? '',
    accountNumber: text(el, 'AccountNumber') ?? '',
    accountType: text(el, 'AccountType') ?? '',
    openingDate: text(el, 'OpeningDate') ?? ''
  }
  const branch = text(el, 'Branch')
  if (branch !== undefined) account.branch = branch
  if (el === undefined) {
    c.fail('Value is required', name)
    return account
  }
  c.regex(account.participant, ISPB_RE, `${name}.participant`, '^(?i)[a-z0-9]{8}')
  if (branch !== undefined) c.regex(branch, BRANCH_RE, `${name}.branch`)
  c.regex(account.accountNumber, ACCOUNT_RE, `${name}.accountNumber`, '^(?i)[a-z0-9]{1,20}$')
  c.oneOf(account.accountType, ACCOUNT_TYPES, `${name}.accountType`)
  c.date(account.openingDate, `${name}.openingDate`)
  if (account.openingDate !== '' && !Number.isNaN(Date.parse(account.openingDate))) account.openingDate = new Date(account.openingDate).toISOString()
  return account
}

function readPerson (el: XmlElement | undefined, c: Checker, name: string): Person {
  const person: Person = { type: text(el, 'Type') ?? '', taxIdNumber: text(el, 'TaxIdNumber') ?? '', name: text(el, 'Name') ?? '' }
  const tradeName = text(el, 'TradeName')
  if (tradeName !== undefined && tradeName !== '') person.tradeName = tradeName
  if (el === undefined) {
    c.fail('Value is required', name)
    return person
  }
  c.oneOf(person.type, ['NATURAL_PERSON', 'LEGAL_PERSON'], `${name}.type`)
  if (person.type === 'LEGAL_PERSON') c.regex(person.taxIdNumber, /^[0-9]{14}$/, `${name}.taxIdNumber`, '[0-9]{14}')
  else c.regex(person.taxIdNumber, /^[0-9]{11}$/, `${name}.taxIdNumber`, '^[0-9]{11}$')
  c.require(person.name, `${name}.name`)
  c.maxLength(person.name, 150, `${name}.name`)
  c.maxLength(person.tradeName, 100, `${name}.tradeName`)
  return person
}

function checkKey (c: Checker, key: string | undefined, keyType: string | undefined, property: string): void {
  c.oneOf(keyType, Object.keys(KEY_PATTERNS), `${property}Type`)
  const re = keyType === undefined ? undefined : KEY_PATTERNS[keyType]
  if (re !== undefined) c.regex(key, re, property)
  c.maxLength(key, 77, property)
}

// ---------------------------------------------------------------------------------------------------------------
// XML of the answers

function accountTree (a: Account, name: string): readonly [string, XmlTree] {
  return [name, [['Participant', a.participant], ['Branch', a.branch], ['AccountNumber', a.accountNumber], ['AccountType', a.accountType], ['OpeningDate', a.openingDate]]]
}

function personTree (p: Person, name: string): readonly [string, XmlTree] {
  return [name, [['Type', p.type], ['TaxIdNumber', p.taxIdNumber], ['Name', p.name], ['TradeName', p.tradeName]]]
}

function entryTree (e: Entry): readonly [string, XmlTree] {
  return ['Entry', [
    ['Key', e.key], ['KeyType', e.keyType], accountTree(e.account, 'Account'), personTree(e.owner, 'Owner'),
    ['CreationDate', e.creationDate], ['KeyOwnershipDate', e.keyOwnershipDate], ['OpenClaimCreationDate', e.openClaimCreationDate]
  ]]
}

function claimTree (c: Claim): readonly [string, XmlTree] {
  return ['Claim', [
    ['Type', c.type], ['Key', c.key], ['KeyType', c.keyType], accountTree(c.claimerAccount, 'ClaimerAccount'),
    personTree(c.claimer, 'Claimer'), ['DonorParticipant', c.donorParticipant], ['Id', c.id], ['Status', c.status],
    ['ResolutionPeriodEnd', c.resolutionPeriodEnd], ['CompletionPeriodEnd', c.completionPeriodEnd],
    ['LastModified', c.lastModified], ['ConfirmReason', c.confirmReason], ['CancelReason', c.cancelReason],
    ['CancelledBy', c.cancelledBy]
  ]]
}

function responseXml (root: string, body: XmlTree, now: Date): string {
  return xmlDocument(root, [['ResponseTime', now.toISOString()], ['CorrelationId', correlationId()], ...body])
}

// ---------------------------------------------------------------------------------------------------------------
// Request handling

interface DictCall {
  readonly request: FastifyRequest
  readonly caller: string
  readonly root: XmlElement | undefined
  readonly doc: XmlDocument | undefined
  /** The verified digest of the whole request without its signature (the DICT profile's URI="" reference). */
  readonly contentDigest: string | undefined
  readonly now: Date
}

interface DictAnswer {
  readonly status: number
  readonly xml: string
  readonly log?: Partial<Pick<AcceptedMessage, 'requestId' | 'key' | 'claimId'>>
  /** Rate-limit charges to apply after answering (policy, scope, cost, user kind). */
  readonly charges?: ReadonlyArray<readonly [string, string, number, ('PF' | 'PJ')?]>
}

interface Operation {
  readonly name: string
  /** Root element of the signed request body; absent for reads. */
  readonly request?: string
  /** Participant-scope policy charged 1 per request, checked before the operation. */
  readonly policy?: (req: FastifyRequest) => string
  readonly handle: (call: DictCall) => DictAnswer | Promise<DictAnswer>
}

const BCB_SIGNATURE_DETAIL = 'XML signature does not match digests or certificate'

export class DictService {
  readonly store: DictStore
  readonly limiter: RateLimiter
  private readonly ctx: SimulatorContext
  private readonly resolutionMs: number
  private readonly completionMs: number
  private readonly limits: { naturalPerson: number, legalPerson: number }

  constructor (ctx: SimulatorContext, opts: DictOptions = {}) {
    this.ctx = ctx
    this.store = new DictStore(opts.stateFile, opts.rememberedRequests)
    this.limiter = new RateLimiter({ ...(opts.policies === undefined ? {} : { overrides: opts.policies }), ...(opts.category === undefined ? {} : { category: opts.category }) })
    this.resolutionMs = opts.resolutionPeriodMs ?? 7 * DAY_MS
    this.completionMs = opts.completionPeriodMs ?? 7 * DAY_MS
    this.limits = opts.entryLimits ?? { naturalPerson: 5, legalPerson: 20 }
  }

  register (app: FastifyInstance): void {
    const route = (method: 'GET' | 'POST' | 'PUT', url: string, op: Operation): void => {
      app.route({ method, url, handler: async (request, reply) => await this.run(op, request, reply) })
    }
    route('POST', '/api/v2/entries/', { name: 'createEntry', request: 'CreateEntryRequest', policy: () => 'ENTRIES_WRITE', handle: (c) => this.createEntry(c) })
    route('GET', '/api/v2/entries/:Key', { name: 'getEntry', handle: (c) => this.getEntry(c) })
    route('PUT', '/api/v2/entries/:Key', { name: 'updateEntry', request: 'UpdateEntryRequest', policy: () => 'ENTRIES_UPDATE', handle: (c) => this.updateEntry(c) })
    route('POST', '/api/v2/entries/:Key/delete', { name: 'deleteEntry', request: 'DeleteEntryRequest', policy: () => 'ENTRIES_WRITE', handle: (c) => this.deleteEntry(c) })
    route('POST', '/api/v2/claims/', { name: 'createClaim', request: 'CreateClaimRequest', policy: () => 'CLAIMS_WRITE', handle: (c) => this.createClaim(c) })
    route('GET', '/api/v2/claims/', {
      name: 'listClaims',
      policy: (r) => {
        const q = r.query as Record<string, unknown>
        return q.IsDonor !== undefined || q.IsClaimer !== undefined ? 'CLAIMS_LIST_WITH_ROLE' : 'CLAIMS_LIST_WITHOUT_ROLE'
      },
      handle: (c) => this.listClaims(c)
    })
    route('GET', '/api/v2/claims/:ClaimId', { name: 'getClaim', policy: () => 'CLAIMS_READ', handle: (c) => this.getClaim(c) })
    for (const action of ['acknowledge', 'confirm', 'cancel', 'complete'] as const) {
      const root = `${action[0]?.toUpperCase() ?? ''}${action.slice(1)}ClaimRequest`
      route('POST', `/api/v2/claims/:ClaimId/${action}`, { name: `${action}Claim`, request: root, policy: () => 'CLAIMS_WRITE', handle: (c) => this.claimAction(action, c) })
    }
    route('GET', '/api/v2/policies/', { name: 'listPolicies', policy: () => 'POLICIES_LIST', handle: (c) => this.listPolicies(c) })
    route('GET', '/api/v2/policies/:Policy', { name: 'getPolicy', policy: () => 'POLICIES_READ', handle: (c) => this.getPolicy(c) })
  }

  private async run (op: Operation, request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
    const ctx = this.ctx
    const now = new Date()
    let caller = requestState(ctx, request).tlsIspb
    let signature: VerifyCode | 'UNSIGNED' = 'UNSIGNED'
    let doc: XmlDocument | undefined
    let contentDigest: string | undefined
    try {
      if (op.request !== undefined) {
        const encoding = headerValue(request, 'content-encoding')
        if (encoding !== undefined && encoding.toLowerCase() !== 'identity') {
          // API-DICT: "O envio de requisições com compressão não é suportado"
          throw dictError('BadRequest', 'Compressed requests are not supported')
        }
        doc = this.parseBody(request.body, op.request)
        const trust = caller === undefined ? ctx.allTrust : ctx.participants.get(caller)?.trust
        const result = verifyDocument(doc, { profile: 'dict', ...(trust === undefined ? {} : { trustStore: trust }), now })
        signature = result.code
        if (!result.valid) {
          throw dictError('RequestSignatureInvalid', BCB_SIGNATURE_DETAIL, [{ reason: `${result.code}: ${result.message}` }])
        }
        contentDigest = result.references.find((r) => r.uri === '')?.digest
        caller ??= participantOfSigner(ctx, result.signer?.fingerprint256)
        if (caller === undefined) throw dictError('Forbidden', 'Participant is not allowed to access this resource')
      } else {
        const requesting = headerValue(request, 'pi-requestingparticipant')
        // listClaims names the participant in its query; every other read requires the header (API-DICT 2.12.1)
        if (requesting === undefined && op.name !== 'listClaims') throw dictError('BadRequest', 'Header PI-RequestingParticipant is required')
        if (caller === undefined) {
          const named = requesting ?? firstQuery(request, 'Participant')
          if (named === undefined || !ctx.participants.has(named)) throw dictError('Forbidden', 'Participant is not allowed to access this resource')
          caller = named
        } else if (requesting !== undefined && requesting !== caller) {
          throw dictError('Forbidden', 'PI-RequestingParticipant is not the authenticated participant')
        }
      }
      const policy = op.policy?.(request)
      if (policy !== undefined && !this.limiter.allows(policy, caller)) throw dictError('RateLimited')
      const answer = await op.handle({ request, caller, root: doc?.root, doc, contentDigest, now })
      if (policy !== undefined) this.limiter.charge(policy, caller, 1)
      for (const [p, scope, cost, kind] of answer.charges ?? []) this.limiter.charge(p, scope, cost, kind)
      this.logAccepted(op.name, caller, signature, answer.status, answer.log)
      return await sendDict(ctx, request, reply, answer.status, answer.xml)
    } catch (err) {
      if (!(err instanceof DictProblem)) throw err
      // A business error is still an accepted request (it reached the operation); transport-level refusals are not.
      if (caller !== undefined && err.type !== 'RequestSignatureInvalid' && err.type !== 'RateLimited' && err.type !== 'BadRequest') {
        this.logAccepted(op.name, caller, signature, err.status, this.logFields(request, doc))
        const policy = op.policy?.(request)
        if (policy !== undefined && err.status !== 500) this.limiter.charge(policy, caller, 1)
      }
      return await sendDictProblem(ctx, request, reply, err)
    }
  }

  private logFields (request: FastifyRequest, doc: XmlDocument | undefined): DictAnswer['log'] {
    const params = request.params as Record<string, string | undefined>
    const key = params.Key ?? (doc === undefined ? undefined : text(doc.root, 'Entry', 'Key') ?? text(doc.root, 'Claim', 'Key') ?? text(doc.root, 'Key'))
    const requestId = doc === undefined ? undefined : text(doc.root, 'RequestId')
    const claimId = params.ClaimId
    return { ...(key === undefined ? {} : { key }), ...(requestId === undefined ? {} : { requestId }), ...(claimId === undefined ? {} : { claimId }) }
  }

  private logAccepted (operation: string, ispb: string, signature: VerifyCode | 'UNSIGNED', status: number, fields: DictAnswer['log']): void {
    this.ctx.log.add({ ts: new Date().toISOString(), system: 'dict', ispb, operation, ...fields, signature, status })
  }

  private parseBody (body: unknown, rootName: string): XmlDocument {
    if (!Buffer.isBuffer(body) || body.length === 0) throw dictError('BadRequest', 'Could not parse request body')
    let doc: XmlDocument
    try {
      doc = parseXml(body)
    } catch (err) {
      if (err instanceof XmlError) throw dictError('BadRequest', 'Could not parse request body', [{ reason: err.message }])
      throw err
    }
    if (doc.root.local !== rootName || doc.root.ns !== '') {
      throw dictError('BadRequest', 'Could not parse request body', [{ reason: `expected <${rootName}>, got <${doc.root.name}>` }])
    }
    return doc
  }

  /**
   * What "same request" means for idempotency: SHA-256 of the request's canonical form without its signature. A
   * verified DICT signature's URI="" reference is exactly that digest, already computed; the fallback canonicalises.
   */
  private fingerprint (call: DictCall): string {
    if (call.contentDigest !== undefined) return call.contentDigest
    const doc = call.doc as XmlDocument
    return createHash('sha256').update(canonicalizeDocument(doc, { exclude: doc.signatures[0] ?? null })).digest('base64')
  }

  private idempotent (scope: string, call: DictCall, produce: () => DictAnswer): DictAnswer {
    const fp = this.fingerprint(call)
    const stored = this.store.answer(scope)
    if (stored !== undefined) {
      if (stored.fingerprint !== fp) throw dictError('RequestIdAlreadyUsed', 'RequestId was already used in a request with different parameters')
      return { status: stored.status, xml: stored.xml }
    }
    const answer = produce()
    this.store.rememberAnswer(scope, { fingerprint: fp, status: answer.status, xml: answer.xml })
    this.store.changed()
    return answer
  }

  // ----- entries -----------------------------------------------------------------------------------------------

  private createEntry (call: DictCall): DictAnswer {
    const root = call.root as XmlElement
    const c = new Checker('entry')
    const entryEl = child(root, 'Entry')
    const keyType = text(entryEl, 'KeyType')
    let key = text(entryEl, 'Key')
    if (keyType === 'EVP') {
      if (key !== undefined && key !== '') c.fail('Key must be empty for EVP: DICT generates it', 'key', key)
    } else {
      checkKey(c, key, keyType, 'key')
    }
    const account = readAccount(child(entryEl, 'Account'), c, 'account')
    const owner = readPerson(child(entryEl, 'Owner'), c, 'owner')
    const reason = text(root, 'Reason')
    const requestId = text(root, 'RequestId')
    c.regex(requestId, UUID_RE, 'requestId')
    if (keyType === 'CPF' || keyType === 'CNPJ') {
      if (key !== undefined && key !== owner.taxIdNumber) c.fail('Key must be the owner\'s TaxIdNumber', 'key', key)
    }
    if (c.violations.length > 0) throw dictError('EntryInvalid', 'Entry has invalid fields', c.violations)
    if (reason !== 'USER_REQUESTED' && reason !== 'RECONCILIATION') throw dictError('InvalidReason', `Reason ${reason ?? '(none)'} is not valid to create an entry`)
    if (account.participant !== call.caller) throw dictError('Forbidden', 'Entry.Account.Participant is not the authenticated participant')
    return this.idempotent(`${call.caller}|entry|${requestId as string}`, call, () => {
      if (keyType === 'EVP') key = randomUUID()
      const k = key as string
      const existing = this.store.entries.get(k)
      if (existing !== undefined) {
        if (existing.owner.taxIdNumber !== owner.taxIdNumber) throw dictError('EntryKeyOwnedByDifferentPerson', 'Key is owned by a different person: an ownership claim is required')
        if (existing.account.participant !== account.participant) throw dictError('EntryKeyInCustodyOfDifferentParticipant', 'Key is held by another participant: a portability claim is required')
        throw dictError('EntryAlreadyExists', 'Entry already exists for this key, participant and owner')
      }
      const limit = owner.type === 'LEGAL_PERSON' ? this.limits.legalPerson : this.limits.naturalPerson
      if (this.store.keysOnAccount(account, owner) >= limit) throw dictError('EntryLimitExceeded', `The account already has ${limit} keys`)
      const ts = call.now.toISOString()
      const entry: Entry = { key: k, keyType: keyType as string, account, owner, creationDate: ts, keyOwnershipDate: ts, requestId: requestId as string }
      this.store.putEntry(entry)
      this.store.changed()
      return { status: 201, xml: responseXml('CreateEntryResponse', [entryTree(entry)], call.now), log: { key: k, requestId: requestId as string } }
    })
  }

  private getEntry (call: DictCall): DictAnswer {
    const { request, caller } = call
    const key = (request.params as { Key: string }).Key
    const payerId = headerValue(request, 'pi-payerid')
    const e2e = headerValue(request, 'pi-endtoendid')
    const missing = [['PI-PayerId', payerId], ['PI-EndToEndId', e2e]].filter(([, v]) => v === undefined).map(([n]) => n as string)
    if (missing.length > 0) throw dictError('BadRequest', `Missing required header ${missing.join(', ')}`)
    if (!PAYER_ID_RE.test(payerId as string)) throw dictError('BadRequest', 'PI-PayerId must be a CPF (11 digits) or CNPJ (14 digits)')
    const entry = this.store.entries.get(key)
    const keyType = entry?.keyType ?? inferKeyType(key)
    const userPolicy = keyType === 'EMAIL' || keyType === 'PHONE' ? 'ENTRIES_READ_USER_ANTISCAN' : 'ENTRIES_READ_USER_ANTISCAN_V2'
    const kind = (payerId as string).length === 11 ? 'PF' : 'PJ'
    if (!this.limiter.allows('ENTRIES_READ_PARTICIPANT_ANTISCAN', caller) || !this.limiter.allows(userPolicy, payerId as string, kind)) {
      throw dictError('RateLimited')
    }
    if (entry === undefined) {
      this.limiter.charge('ENTRIES_READ_PARTICIPANT_ANTISCAN', caller, 3)
      this.limiter.charge(userPolicy, payerId as string, 20, kind)
      throw dictError('NotFound', 'Entry associated with given key does not exist')
    }
    if (entry.account.participant === caller) {
      throw dictError('EntryCannotBeQueriedForBookTransfer', 'Payer and payee are at the same participant: no DICT query is needed')
    }
    return {
      status: 200,
      xml: responseXml('GetEntryResponse', [entryTree(entry)], call.now),
      log: { key },
      charges: [['ENTRIES_READ_PARTICIPANT_ANTISCAN', caller, 1], [userPolicy, payerId as string, 1, kind]]
    }
  }

  private ownEntry (key: string, caller: string): Entry {
    const entry = this.store.entries.get(key)
    if (entry === undefined) throw dictError('NotFound', 'Entry associated with given key does not exist')
    if (entry.account.participant !== caller) throw dictError('Forbidden', 'Participant is not allowed to access this resource')
    return entry
  }

  private updateEntry (call: DictCall): DictAnswer {
    const root = call.root as XmlElement
    const key = (call.request.params as { Key: string }).Key
    if (text(root, 'Key') !== key) throw dictError('BadRequest', 'Key in the body differs from the key in the path')
    const entry = this.ownEntry(key, call.caller)
    const c = new Checker('entry')
    const accountEl = child(root, 'Account')
    const ownerEl = child(root, 'Owner')
    const account = accountEl === undefined ? entry.account : readAccount(accountEl, c, 'account')
    const owner = ownerEl === undefined ? entry.owner : readPerson(ownerEl, c, 'owner')
    if (c.violations.length > 0) throw dictError('EntryInvalid', 'Entry has invalid fields', c.violations)
    const reason = text(root, 'Reason') ?? ''
    const allowed = entry.keyType === 'EVP' ? ['BRANCH_TRANSFER', 'RECONCILIATION', 'RFB_VALIDATION'] : ['USER_REQUESTED', 'BRANCH_TRANSFER', 'RECONCILIATION', 'RFB_VALIDATION']
    if (!allowed.includes(reason)) throw dictError('InvalidReason', `Reason ${reason} is not valid to update a ${entry.keyType} entry`)
    if (account.participant !== entry.account.participant) throw dictError('EntryInvalid', 'Only account data, name and trade name may change', [{ reason: 'Participant cannot change', property: 'entry.account.participant', value: account.participant }])
    if (owner.taxIdNumber !== entry.owner.taxIdNumber || owner.type !== entry.owner.type) {
      throw dictError('EntryTaxIdNumberByDifferentOwner', 'The owner\'s TaxIdNumber cannot change')
    }
    this.store.updateEntry(entry, account, owner)
    this.store.changed()
    return { status: 200, xml: responseXml('UpdateEntryResponse', [entryTree(entry)], call.now), log: { key } }
  }

  private deleteEntry (call: DictCall): DictAnswer {
    const root = call.root as XmlElement
    const key = (call.request.params as { Key: string }).Key
    if (text(root, 'Key') !== key) throw dictError('BadRequest', 'Key in the body differs from the key in the path')
    if (text(root, 'Participant') !== call.caller) throw dictError('Forbidden', 'Participant is not the authenticated participant')
    const reason = text(root, 'Reason') ?? ''
    if (!['USER_REQUESTED', 'ACCOUNT_CLOSURE', 'RECONCILIATION', 'FRAUD', 'RFB_VALIDATION'].includes(reason)) {
      throw dictError('InvalidReason', `Reason ${reason} is not valid to delete an entry`)
    }
    this.ownEntry(key, call.caller)
    if (this.store.activeClaim(key) !== undefined) throw dictError('EntryLockedByClaim', 'The key has a claim that is neither completed nor cancelled')
    this.store.deleteEntry(key)
    this.store.changed()
    return { status: 200, xml: responseXml('DeleteEntryResponse', [['Key', key]], call.now), log: { key } }
  }

  // ----- claims ------------------------------------------------------------------------------------------------

  private createClaim (call: DictCall): DictAnswer {
    const root = call.root as XmlElement
    const claimEl = child(root, 'Claim')
    const c = new Checker('claim')
    const type = text(claimEl, 'Type')
    const key = text(claimEl, 'Key')
    const keyType = text(claimEl, 'KeyType')
    c.oneOf(type, ['OWNERSHIP', 'PORTABILITY'], 'type')
    checkKey(c, key, keyType, 'key')
    const claimerAccount = readAccount(child(claimEl, 'ClaimerAccount'), c, 'claimerAccount')
    const claimer = readPerson(child(claimEl, 'Claimer'), c, 'claimer')
    // v2's CreateClaimRequest has no RequestId; one sent anyway (older clients, the samples) keys idempotency.
    const requestId = text(root, 'RequestId')
    if (requestId !== undefined) c.regex(requestId, UUID_RE, 'requestId')
    if (keyType === 'EVP' || (type === 'OWNERSHIP' && keyType !== 'PHONE')) {
      c.fail(`A ${keyType ?? ''} key cannot be claimed by ${type ?? ''}`, 'type', type)
    }
    if (c.violations.length > 0) throw dictError('ClaimInvalid', 'Claim has invalid fields', c.violations)
    if (claimerAccount.participant !== call.caller) throw dictError('Forbidden', 'Claim.ClaimerAccount.Participant is not the authenticated participant')
    const produce = (): DictAnswer => {
      const k = key as string
      const entry = this.store.entries.get(k)
      if (entry === undefined) throw dictError('ClaimKeyNotFound', 'There is no entry with the claimed key')
      if (this.store.activeClaim(k) !== undefined) throw dictError('ClaimAlreadyExistsForKey', 'The key already has a claim that is neither completed nor cancelled')
      const sameOwner = entry.owner.taxIdNumber === claimer.taxIdNumber
      if (type === 'OWNERSHIP' && sameOwner) throw dictError('ClaimTypeInconsistent', 'Ownership claim, but the entry already belongs to the claimer')
      if (type === 'PORTABILITY' && !sameOwner) throw dictError('ClaimTypeInconsistent', 'Portability claim, but the entry belongs to another person')
      if (type === 'PORTABILITY' && entry.account.participant === claimerAccount.participant) {
        throw dictError('ClaimResultingEntryAlreadyExists', 'The entry already exists with this key, participant and owner')
      }
      const ts = call.now.toISOString()
      const claim: Claim = {
        id: randomUUID(),
        type: type as Claim['type'],
        key: k,
        keyType: keyType as string,
        claimerAccount,
        claimer,
        donorParticipant: entry.account.participant,
        status: 'OPEN',
        resolutionPeriodEnd: new Date(call.now.getTime() + this.resolutionMs).toISOString(),
        completionPeriodEnd: new Date(call.now.getTime() + this.resolutionMs + (type === 'OWNERSHIP' ? this.completionMs : 0)).toISOString(),
        lastModified: ts,
        donorKeyOwnershipDate: entry.keyOwnershipDate
      }
      this.store.putClaim(claim)
      entry.openClaimCreationDate = ts
      this.store.changed()
      return { status: 201, xml: responseXml('CreateClaimResponse', [claimTree(claim)], call.now), log: { key: k, claimId: claim.id, ...(requestId === undefined ? {} : { requestId }) } }
    }
    return requestId === undefined ? produce() : this.idempotent(`${call.caller}|claim|${requestId}`, call, produce)
  }

  private claimFor (call: DictCall): Claim {
    const id = (call.request.params as { ClaimId: string }).ClaimId
    const claim = this.store.claims.get(id)
    if (claim === undefined) throw dictError('NotFound', 'Claim does not exist')
    if (claim.donorParticipant !== call.caller && claim.claimerAccount.participant !== call.caller) {
      throw dictError('Forbidden', 'Participant is not allowed to access this resource')
    }
    return claim
  }

  private getClaim (call: DictCall): DictAnswer {
    const claim = this.claimFor(call)
    return { status: 200, xml: responseXml('GetClaimResponse', [claimTree(claim)], call.now), log: { claimId: claim.id, key: claim.key } }
  }

  private listClaims (call: DictCall): DictAnswer {
    const q = call.request.query as Record<string, string | string[] | undefined>
    const one = (name: string): string | undefined => {
      const v = q[name]
      return Array.isArray(v) ? v[0] : v
    }
    const participant = one('Participant')
    if (participant === undefined) throw dictError('BadRequest', 'Query parameter Participant is required')
    if (participant !== call.caller) throw dictError('Forbidden', 'Participant is not the authenticated participant')
    const bool = (name: string): boolean | undefined => {
      const v = one(name)
      if (v === undefined) return undefined
      if (v !== 'true' && v !== 'false') throw dictError('BadRequest', `${name} must be true or false`)
      return v === 'true'
    }
    const isDonor = bool('IsDonor')
    const isClaimer = bool('IsClaimer')
    const statusParam = q.Status
    const statuses = statusParam === undefined ? undefined : (Array.isArray(statusParam) ? statusParam : [statusParam]).flatMap((s) => s.split(','))
    const type = one('Type')
    const date = (name: string): number | undefined => {
      const v = one(name)
      if (v === undefined) return undefined
      const t = Date.parse(v)
      if (Number.isNaN(t)) throw dictError('BadRequest', `${name} is not a date-time`)
      return t
    }
    const after = date('ModifiedAfter')
    const before = date('ModifiedBefore')
    const limitText = one('Limit')
    const limit = limitText === undefined ? 20 : Number(limitText)
    if (!Number.isInteger(limit) || limit < 1 || limit > 200) throw dictError('BadRequest', 'Limit must be an integer from 1 to 200')
    // BACEN: equal IsDonor/IsClaimer values are disjunctive (donor OR claimer)
    const asDonor = isDonor === undefined && isClaimer === undefined ? true : isDonor === isClaimer ? true : isDonor === true
    const asClaimer = isDonor === undefined && isClaimer === undefined ? true : isDonor === isClaimer ? true : isClaimer === true
    const hits = [...this.store.claims.values()].filter((c) =>
      ((asDonor && c.donorParticipant === participant) || (asClaimer && c.claimerAccount.participant === participant)) &&
      (statuses === undefined || statuses.includes(c.status)) &&
      (type === undefined || c.type === type) &&
      (after === undefined || Date.parse(c.lastModified) >= after) &&
      (before === undefined || Date.parse(c.lastModified) <= before)
    ).sort((a, b) => Date.parse(a.lastModified) - Date.parse(b.lastModified) || (a.id < b.id ? -1 : 1))
    const page = hits.slice(0, limit)
    return {
      status: 200,
      xml: responseXml('ListClaimsResponse', [['HasMoreElements', hits.length > limit], ['Claims', page.length === 0 ? undefined : page.map(claimTree)]], call.now)
    }
  }

  private claimAction (action: 'acknowledge' | 'confirm' | 'cancel' | 'complete', call: DictCall): DictAnswer {
    const root = call.root as XmlElement
    const claim = this.claimFor(call)
    if (text(root, 'ClaimId') !== claim.id) throw dictError('BadRequest', 'ClaimId in the body differs from the claim in the path')
    if (text(root, 'Participant') !== call.caller) throw dictError('Forbidden', 'Participant is not the authenticated participant')
    const isDonor = claim.donorParticipant === call.caller
    const isClaimer = claim.claimerAccount.participant === call.caller
    const now = call.now
    const invalid = (why: string): DictProblem => dictError('ClaimOperationInvalid', `Claim is ${claim.status}: ${why}`)
    const answer = (root: string, extra: XmlTree = []): DictAnswer =>
      ({ status: 200, xml: responseXml(root, [claimTree(claim), ...extra], now), log: { claimId: claim.id, key: claim.key } })
    const touch = (status: ClaimStatus): void => {
      this.store.setClaimStatus(claim, status)
      claim.lastModified = now.toISOString()
      this.store.changed()
    }
    const reason = text(root, 'Reason') ?? ''

    if (action === 'acknowledge') {
      if (!isDonor) throw dictError('Forbidden', 'Only the donor participant acknowledges a claim')
      if (claim.status === 'WAITING_RESOLUTION') return answer('AcknowledgeClaimResponse')
      if (claim.status !== 'OPEN') throw invalid('only an OPEN claim can be acknowledged')
      touch('WAITING_RESOLUTION')
      return answer('AcknowledgeClaimResponse')
    }

    if (action === 'confirm') {
      if (!isDonor) throw dictError('Forbidden', 'Only the donor participant confirms a claim')
      const allowed = claim.type === 'OWNERSHIP' ? ['USER_REQUESTED', 'DEFAULT_OPERATION'] : ['USER_REQUESTED', 'ACCOUNT_CLOSURE']
      if (!allowed.includes(reason)) throw dictError('InvalidReason', `Reason ${reason} cannot confirm a ${claim.type} claim`)
      if (claim.status === 'CONFIRMED') {
        if (claim.confirmReason === reason) return answer('ConfirmClaimResponse')
        throw invalid(`already confirmed with reason ${claim.confirmReason ?? ''}`)
      }
      if (claim.status !== 'WAITING_RESOLUTION') throw invalid('only a WAITING_RESOLUTION claim can be confirmed')
      if (claim.type === 'OWNERSHIP' && reason === 'DEFAULT_OPERATION' && now.getTime() < Date.parse(claim.resolutionPeriodEnd)) {
        throw dictError('ClaimResolutionPeriodNotEnded', 'The resolution period has not ended')
      }
      if (claim.type === 'OWNERSHIP' && reason === 'USER_REQUESTED') claim.completionPeriodEnd = now.toISOString()
      claim.confirmReason = reason
      // Confirming removes the donor's entry (API-DICT: "implica a remoção da chave do DICT")
      this.store.deleteEntry(claim.key)
      touch('CONFIRMED')
      return answer('ConfirmClaimResponse')
    }

    if (action === 'cancel') {
      const by: 'DONOR' | 'CLAIMER' | undefined = isClaimer ? 'CLAIMER' : isDonor ? 'DONOR' : undefined
      if (claim.status === 'CANCELLED') {
        if (claim.cancelReason === reason && claim.cancelledBy === by) return answer('CancelClaimResponse')
        throw invalid('already cancelled')
      }
      if (claim.status === 'COMPLETED') throw invalid('a completed claim cannot be cancelled')
      const portability = claim.type === 'PORTABILITY'
      const who: Readonly<Record<string, readonly string[]>> = portability
        ? { USER_REQUESTED: ['DONOR', 'CLAIMER'], ACCOUNT_CLOSURE: ['CLAIMER'], DEFAULT_OPERATION: ['DONOR'], FRAUD: ['DONOR', 'CLAIMER'], RECONCILIATION: ['CLAIMER'], RFB_VALIDATION: ['CLAIMER'] }
        : { USER_REQUESTED: ['CLAIMER'], ACCOUNT_CLOSURE: ['CLAIMER'], DEFAULT_OPERATION: ['CLAIMER'], FRAUD: ['DONOR', 'CLAIMER'], RECONCILIATION: ['CLAIMER'], RFB_VALIDATION: ['CLAIMER'] }
      const parties = who[reason]
      if (parties === undefined) throw dictError('InvalidReason', `Reason ${reason} cannot cancel a claim`)
      if (by === undefined || !parties.includes(by)) throw dictError('Forbidden', `${by ?? 'This participant'} cannot cancel a ${claim.type} claim with reason ${reason}`)
      if (portability) {
        const fromConfirmed = claim.status === 'CONFIRMED' && by === 'CLAIMER' && ['FRAUD', 'RECONCILIATION', 'RFB_VALIDATION'].includes(reason)
        if (claim.status === 'CONFIRMED' && !fromConfirmed) throw invalid('a portability can be cancelled when CONFIRMED only by the claimer for FRAUD, RECONCILIATION or RFB_VALIDATION')
        if (claim.status === 'WAITING_RESOLUTION' && reason === 'RECONCILIATION') throw invalid('RECONCILIATION cannot cancel a claim waiting resolution')
      }
      if (reason === 'DEFAULT_OPERATION' && now.getTime() < Date.parse(claim.resolutionPeriodEnd)) {
        throw dictError('ClaimResolutionPeriodNotEnded', 'The resolution period has not ended')
      }
      claim.cancelReason = reason
      claim.cancelledBy = by
      const entry = this.store.entries.get(claim.key)
      if (entry !== undefined) delete entry.openClaimCreationDate
      touch('CANCELLED')
      return answer('CancelClaimResponse')
    }

    // complete
    if (!isClaimer) throw dictError('Forbidden', 'Only the claimer participant completes a claim')
    const requestId = text(root, 'RequestId')
    if (requestId === undefined || !UUID_RE.test(requestId)) throw dictError('BadRequest', 'RequestId must be a UUID', [{ reason: 'Value is required', property: 'requestId' }])
    return this.idempotent(`${call.caller}|complete|${requestId}`, call, () => {
      if (claim.status !== 'CONFIRMED') throw invalid('only a CONFIRMED claim can be completed')
      if (claim.type === 'OWNERSHIP' && now.getTime() < Date.parse(claim.completionPeriodEnd)) {
        throw dictError('ClaimCompletionPeriodNotEnded', 'The completion period has not ended')
      }
      const ts = now.toISOString()
      const ownership = claim.type === 'PORTABILITY' ? claim.donorKeyOwnershipDate : ts
      this.store.putEntry({
        key: claim.key,
        keyType: claim.keyType,
        account: claim.claimerAccount,
        owner: claim.claimer,
        creationDate: ts,
        keyOwnershipDate: ownership,
        requestId
      })
      claim.completeRequestId = requestId
      claim.entryCreationDate = ts
      claim.keyOwnershipDate = ownership
      touch('COMPLETED')
      const a = answer('CompleteClaimResponse', [['EntryCreationDate', ts], ['KeyOwnershipDate', ownership]])
      return { ...a, log: { ...a.log, requestId } }
    })
  }

  // ----- policies ----------------------------------------------------------------------------------------------

  private policyTree (name: string, scope: string): readonly [string, XmlTree] {
    const { available, spec } = this.limiter.state(name, scope)
    return ['Policy', [['AvailableTokens', available], ['Capacity', spec.capacity], ['RefillTokens', spec.refillTokens], ['RefillPeriodSec', spec.refillPeriodSec], ['Name', name]]]
  }

  private listPolicies (call: DictCall): DictAnswer {
    const policies = this.limiter.participantPolicies().map((n) => this.policyTree(n, call.caller))
    return { status: 200, xml: responseXml('ListPoliciesResponse', [['Category', this.limiter.category], ['Policies', policies]], call.now) }
  }

  private getPolicy (call: DictCall): DictAnswer {
    const name = (call.request.params as { Policy: string }).Policy
    if (!this.limiter.participantPolicies().includes(name)) throw dictError('NotFound', `Policy ${name} does not exist`)
    return { status: 200, xml: responseXml('GetPolicyResponse', [['Category', this.limiter.category], this.policyTree(name, call.caller)], call.now) }
  }
}

function firstQuery (request: FastifyRequest, name: string): string | undefined {
  const v = (request.query as Record<string, string | string[] | undefined>)[name]
  return Array.isArray(v) ? v[0] : v
}

function headerValue (request: FastifyRequest, name: string): string | undefined {
  const v = request.headers[name]
  const s = Array.isArray(v) ? v[0] : v
  return s === undefined || s === '' ? undefined : s
}
