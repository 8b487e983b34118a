/**
 * A latency histogram with log-linear buckets (the HdrHistogram layout): exact to the microsecond below 256 µs,
 * then 128 buckets per power of two, so a bucket spans at most 1/128 of its lower bound and the value reported for
 * it (its midpoint) is within 0.4% of any value recorded in it. Memory is fixed (3,328 counters, ~27 KB) whatever
 * the number of samples, so a run of hours keeps exact counts and bounded error.
 */

/** Sub-buckets per power of two above the linear range: relative bucket width ≤ 1/SUB. */
const SUB_BITS = 7
const SUB = 1 << SUB_BITS
/** Values below this (in µs) have a bucket each. */
const LINEAR = SUB * 2
/** Largest value kept, in µs (~71.6 minutes); larger ones are clamped to it (and counted as such in `max`). */
const MAX_US = 0xffffffff
const BUCKETS = LINEAR + (31 - SUB_BITS) * SUB

function bucketOf (us: number): number {
  if (us < LINEAR) return us
  const log2 = 31 - Math.clz32(us)
  const shift = log2 - SUB_BITS
  return LINEAR + (shift - 1) * SUB + ((us >>> shift) - SUB)
}

/** The value (µs) a bucket stands for: its midpoint (exact values below LINEAR). */
function valueOf (bucket: number): number {
  if (bucket < LINEAR) return bucket
  const i = bucket - LINEAR
  const shift = Math.floor(i / SUB) + 1
  const lower = ((i % SUB) + SUB) * 2 ** shift
  return lower + (2 ** shift - 1) / 2
}

export interface LatencySummary {
  readonly count: number
  readonly min: number
  readonly mean: number
  readonly p50: number
  readonly p90: number
  readonly p99: number
  readonly max: number
}

/** Records latencies in milliseconds; percentiles come back in milliseconds. */
export class LatencyHistogram {
  private readonly counts = new Float64Array(BUCKETS)
  private n = 0
  private sumUs = 0
  private minUs = Infinity
  private maxUs = 0

  get count (): number {
    return this.n
  }

  /** Records one latency (ms). Negative values (a clock step) count as 0. */
  record (ms: number): void {
    const us = Math.min(MAX_US, Math.max(0, Math.round(ms * 1000)))
    const b = bucketOf(us)
    this.counts[b] = (this.counts[b] as number) + 1
    this.n++
    this.sumUs += us
    if (us < this.minUs) this.minUs = us
    if (us > this.maxUs) this.maxUs = us
  }

  /** Adds every sample of `other` (e.g. per-second histograms into a run total). */
  add (other: LatencyHistogram): void {
    if (other.n === 0) return
    for (let i = 0; i < BUCKETS; i++) {
      const c = other.counts[i] as number
      if (c !== 0) this.counts[i] = (this.counts[i] as number) + c
    }
    this.n += other.n
    this.sumUs += other.sumUs
    if (other.minUs < this.minUs) this.minUs = other.minUs
    if (other.maxUs > this.maxUs) this.maxUs = other.maxUs
  }

  reset (): void {
    this.counts.fill(0)
    this.n = 0
    this.sumUs = 0
    this.minUs = Infinity
    this.maxUs = 0
  }

  /**
   * The nearest-rank percentile (the value at rank ⌈p/100·n⌉ of the sorted samples), in ms, within 0.4% (or 1 µs)
   * of the exact one; NaN without samples. `percentile(100)` is the exact maximum.
   */
  percentile (p: number): number {
    if (this.n === 0) return NaN
    if (p >= 100) return this.maxUs / 1000
    const rank = Math.max(1, Math.ceil((p / 100) * this.n))
    let seen = 0
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.counts[i] as number
      if (seen >= rank) return Math.min(this.maxUs, Math.max(this.minUs, valueOf(i))) / 1000
    }
    return this.maxUs / 1000
  }

  summary (): LatencySummary {
    if (this.n === 0) return { count: 0, min: NaN, mean: NaN, p50: NaN, p90: NaN, p99: NaN, max: NaN }
    return {
      count: this.n,
      min: this.minUs / 1000,
      mean: this.sumUs / this.n / 1000,
      p50: this.percentile(50),
      p90: this.percentile(90),
      p99: this.percentile(99),
      max: this.maxUs / 1000
    }
  }
}
