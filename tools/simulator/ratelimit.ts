/**
 * DICT rate limiting: token buckets per policy (API-DICT 2.12.1 "Limitação de requisições", docs/bacen.md
 * §1.7). Participant-scope buckets are keyed by ISPB; the getEntry user-scope buckets by PI-PayerId, sized by
 * whether the payer is a person (CPF, 11 digits) or a company (CNPJ, 14).
 *
 * Refill is continuous (tokens accrue fractionally with time) and a bucket answers 429 when it holds less than one
 * token; a charge may take it below zero (a 404 getEntry costs 20), so a scan is paid for in waiting time.
 */

export interface BucketSpec {
  readonly capacity: number
  readonly refillTokens: number
  readonly refillPeriodSec: number
}

/** What callers may override per policy name: capacity and a per-minute refill. */
export interface PolicyOverride {
  capacity: number
  refillPerMinute: number
}

const perMinute = (refill: number, capacity: number): BucketSpec => ({ capacity, refillTokens: refill, refillPeriodSec: 60 })

/** Participant-scope policies of API-DICT 2.12.1 (the table BACEN lists on GET /policies/). */
const PARTICIPANT_POLICIES: Readonly<Record<string, BucketSpec>> = Object.freeze({
  ENTRIES_WRITE: perMinute(1200, 36000),
  ENTRIES_UPDATE: perMinute(600, 600),
  CLAIMS_READ: perMinute(600, 18000),
  CLAIMS_WRITE: perMinute(1200, 36000),
  CLAIMS_LIST_WITH_ROLE: perMinute(40, 200),
  CLAIMS_LIST_WITHOUT_ROLE: perMinute(10, 50),
  SYNC_VERIFICATIONS_WRITE: perMinute(10, 50),
  CIDS_FILES_WRITE: { capacity: 200, refillTokens: 40, refillPeriodSec: 86400 },
  CIDS_FILES_READ: perMinute(10, 50),
  CIDS_EVENTS_LIST: perMinute(20, 100),
  CIDS_ENTRIES_READ: perMinute(1200, 36000),
  INFRACTION_REPORTS_READ: perMinute(600, 18000),
  INFRACTION_REPORTS_WRITE: perMinute(1200, 36000),
  INFRACTION_REPORTS_LIST_WITH_ROLE: perMinute(40, 200),
  INFRACTION_REPORTS_LIST_WITHOUT_ROLE: perMinute(10, 50),
  KEYS_CHECK: perMinute(70, 70),
  REFUNDS_READ: perMinute(1200, 36000),
  REFUNDS_WRITE: perMinute(2400, 72000),
  REFUND_LIST_WITH_ROLE: perMinute(40, 200),
  REFUND_LIST_WITHOUT_ROLE: perMinute(10, 50),
  FRAUD_MARKERS_READ: perMinute(600, 18000),
  FRAUD_MARKERS_WRITE: perMinute(1200, 36000),
  FRAUD_MARKERS_LIST: perMinute(600, 18000),
  PERSONS_STATISTICS_READ: perMinute(12000, 36000),
  POLICIES_READ: perMinute(60, 200),
  POLICIES_LIST: perMinute(6, 20),
  EVENT_LIST: perMinute(40, 200)
})

/** ENTRIES_READ_PARTICIPANT_ANTISCAN by participant category (2.12.1). */
const ANTISCAN_CATEGORIES: Readonly<Record<string, BucketSpec>> = Object.freeze({
  A: perMinute(25000, 50000),
  B: perMinute(20000, 40000),
  C: perMinute(15000, 30000),
  D: perMinute(8000, 16000),
  E: perMinute(2500, 5000),
  F: perMinute(250, 500),
  G: perMinute(25, 250),
  H: perMinute(2, 50)
})

/** ENTRIES_READ_USER_ANTISCAN(_V2) by payer kind. */
const USER_ANTISCAN: Readonly<Record<'PF' | 'PJ', BucketSpec>> = Object.freeze({
  PF: perMinute(2, 100),
  PJ: perMinute(20, 1000)
})

export class TokenBucket {
  readonly spec: BucketSpec
  private tokens: number
  private last: number

  constructor (spec: BucketSpec, now: number) {
    this.spec = spec
    this.tokens = spec.capacity
    this.last = now
  }

  private refill (now: number): void {
    const elapsed = Math.max(0, now - this.last) / 1000
    this.tokens = Math.min(this.spec.capacity, this.tokens + elapsed * this.spec.refillTokens / this.spec.refillPeriodSec)
    this.last = now
  }

  available (now: number): number {
    this.refill(now)
    return this.tokens
  }

  charge (cost: number, now: number): void {
    this.refill(now)
    this.tokens -= cost
  }
}

export class RateLimiter {
  private readonly buckets = new Map<string, TokenBucket>()
  private readonly overrides: Partial<Record<string, PolicyOverride>>
  /**
   * Milliseconds since the epoch, read at every check and charge. Replaceable at run time (a test seam): a test that
   * counts a bucket down freezes it, so that no refill can land while the requests are on their way.
   */
  clock: () => number
  readonly category: string

  constructor (opts: { overrides?: Partial<Record<string, PolicyOverride>>, category?: string, clock?: () => number } = {}) {
    this.overrides = opts.overrides ?? {}
    this.category = opts.category ?? 'A'
    this.clock = opts.clock ?? Date.now
  }

  /** The spec in force for a policy: an override, else BACEN's value. Undefined for an unknown name. */
  spec (policy: string, userKind?: 'PF' | 'PJ'): BucketSpec | undefined {
    const o = this.overrides[policy]
    if (o !== undefined) return { capacity: o.capacity, refillTokens: o.refillPerMinute, refillPeriodSec: 60 }
    if (policy === 'ENTRIES_READ_PARTICIPANT_ANTISCAN') return ANTISCAN_CATEGORIES[this.category]
    if (policy === 'ENTRIES_READ_USER_ANTISCAN' || policy === 'ENTRIES_READ_USER_ANTISCAN_V2') return USER_ANTISCAN[userKind ?? 'PF']
    return PARTICIPANT_POLICIES[policy]
  }

  /** Participant-scope policy names, in BACEN's table order, with the anti-scan one first. */
  participantPolicies (): string[] {
    return ['ENTRIES_READ_PARTICIPANT_ANTISCAN', ...Object.keys(PARTICIPANT_POLICIES)]
  }

  bucket (policy: string, scope: string, userKind?: 'PF' | 'PJ'): TokenBucket {
    const id = `${policy}\u0000${scope}`
    let b = this.buckets.get(id)
    if (b === undefined) {
      const spec = this.spec(policy, userKind)
      if (spec === undefined) throw new Error(`unknown DICT policy ${policy}`)
      b = new TokenBucket(spec, this.clock())
      this.buckets.set(id, b)
    }
    return b
  }

  /** True when the bucket holds at least one token (the request may proceed). */
  allows (policy: string, scope: string, userKind?: 'PF' | 'PJ'): boolean {
    return this.bucket(policy, scope, userKind).available(this.clock()) >= 1
  }

  charge (policy: string, scope: string, cost: number, userKind?: 'PF' | 'PJ'): void {
    this.bucket(policy, scope, userKind).charge(cost, this.clock())
  }

  /** The bucket state BACEN reports on /policies (AvailableTokens floored, never negative). */
  state (policy: string, scope: string): { available: number, spec: BucketSpec } {
    const b = this.bucket(policy, scope)
    return { available: Math.max(0, Math.floor(b.available(this.clock()))), spec: b.spec }
  }
}
