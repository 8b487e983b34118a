/** Small statistics shared by the benches. */

/** Least-squares slope of ys over xs (seconds), per minute, to two decimals; null with fewer than two distinct xs. */
export function slopePerMinute (xs: readonly number[], ys: readonly number[]): number | null {
  const n = xs.length
  if (n < 2) return null
  const mx = xs.reduce((a, b) => a + b, 0) / n
  const my = ys.reduce((a, b) => a + b, 0) / n
  let num = 0
  let den = 0
  for (let i = 0; i < n; i++) {
    num += ((xs[i] as number) - mx) * ((ys[i] as number) - my)
    den += ((xs[i] as number) - mx) ** 2
  }
  return den === 0 ? null : Math.round(num / den * 60 * 100) / 100
}
