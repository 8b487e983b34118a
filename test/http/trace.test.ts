// W3C traceparent parsing (https://www.w3.org/TR/trace-context/) and the trace context of a caller's request.
import t from 'tap'
import { formatTraceparent, parseTraceparent, traceFrom } from '../../src/http/trace.ts'

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736'
const PARENT = '00f067aa0ba902b7'
const VALID = `00-${TRACE}-${PARENT}-01`

t.test('a valid version-00 traceparent is parsed', async (t) => {
  t.same(parseTraceparent(VALID), { version: '00', traceId: TRACE, parentId: PARENT, flags: 1 })
  t.same(parseTraceparent(`00-${TRACE}-${PARENT}-00`)?.flags, 0)
})

t.test('a later version is read by its first four fields (the spec\'s forward compatibility)', async (t) => {
  t.same(parseTraceparent(`01-${TRACE}-${PARENT}-01`)?.traceId, TRACE)
  t.same(parseTraceparent(`cc-${TRACE}-${PARENT}-01-what-the-future-holds`)?.parentId, PARENT)
  t.equal(parseTraceparent(`cc-${TRACE}-${PARENT}-01what`), null, 'a longer later version needs a dash after the flags')
})

t.test('anything else is refused (and the request then starts a trace of its own)', async (t) => {
  const invalid: Record<string, string | string[] | undefined> = {
    absent: undefined,
    empty: '',
    'version ff': `ff-${TRACE}-${PARENT}-01`,
    'upper-case hex': `00-${TRACE.toUpperCase()}-${PARENT}-01`,
    'upper-case version': `0A-${TRACE}-${PARENT}-01`,
    'all-zero trace id': `00-${'0'.repeat(32)}-${PARENT}-01`,
    'all-zero parent id': `00-${TRACE}-${'0'.repeat(16)}-01`,
    'short trace id': `00-${TRACE.slice(1)}-${PARENT}-01`,
    'long trace id': `00-${TRACE}0-${PARENT}-01`,
    'short parent id': `00-${TRACE}-${PARENT.slice(1)}-01`,
    'one-digit flags': `00-${TRACE}-${PARENT}-1`,
    'version 00 with more after the flags': `${VALID}-extra`,
    'non-hex': `00-${TRACE.slice(0, 31)}g-${PARENT}-01`,
    'surrounding space': ` ${VALID}`,
    'several headers joined': `${VALID}, ${VALID}`,
    'an array': [VALID, VALID],
    'another separator': VALID.replace(/-/g, '_'),
    huge: `01-${TRACE}-${PARENT}-01-${'a'.repeat(1000)}`
  }
  for (const [what, value] of Object.entries(invalid)) t.equal(parseTraceparent(value), null, what)
})

t.test('the trace context: continued from a valid traceparent, else new; the proxy\'s span id always its own', async (t) => {
  const continued = traceFrom(VALID)
  t.equal(continued.traceId, TRACE)
  t.equal(continued.parentId, PARENT)
  t.equal(continued.flags, 1)
  t.match(continued.spanId, /^[0-9a-f]{16}$/)
  t.not(continued.spanId, PARENT)
  t.not(continued.spanId, '0'.repeat(16))
  t.equal(formatTraceparent(continued), `00-${TRACE}-${continued.spanId}-01`)
  t.equal(traceFrom(`00-${TRACE}-${PARENT}-ff`).flags, 1, 'only the sampled bit is passed on under version 00')

  const fresh = traceFrom(`00-${TRACE.toUpperCase()}-${PARENT}-01`)
  t.match(fresh.traceId, /^[0-9a-f]{32}$/)
  t.not(fresh.traceId, TRACE.toUpperCase().toLowerCase())
  t.not(fresh.traceId, '0'.repeat(32))
  t.equal(fresh.parentId, null)
  t.equal(fresh.flags, 0)
  t.equal(formatTraceparent(fresh), `00-${fresh.traceId}-${fresh.spanId}-00`)
  t.not(traceFrom(undefined).traceId, traceFrom(undefined).traceId, 'each new trace is its own')
  t.not(traceFrom(VALID).spanId, traceFrom(VALID).spanId, 'each request is its own span')
})

t.test('ids cut from the pool of random bytes: well-formed and never reused, across many refills', async (t) => {
  // 2,000 new traces take 48,000 random bytes: the 4 KiB pool is refilled ~12 times, at changing offsets.
  const seen = new Set<string>()
  let bad = 0
  for (let i = 0; i < 2_000; i++) {
    const c = traceFrom(undefined)
    if (!/^[0-9a-f]{32}$/.test(c.traceId) || !/^[0-9a-f]{16}$/.test(c.spanId)) bad++
    seen.add(c.traceId)
    seen.add(c.spanId)
  }
  t.equal(bad, 0, 'every id has its length in lower-case hex')
  t.equal(seen.size, 4_000, 'no trace id or span id repeats (no byte of the pool is handed out twice)')
})
