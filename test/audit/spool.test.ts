import t from 'tap'
import type { Test } from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { appendFile, mkdir, readdir, readFile, rename, rm, stat, unlink, utimes, writeFile } from 'node:fs/promises'
import { hostname } from 'node:os'
import type { FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import { AUDIT_COLUMNS } from '../../src/audit/schema.ts'
import type { AuditRow } from '../../src/audit/schema.ts'
import { AuditSpool, encodeFrame, REQUIRED_REQUEST_COLUMNS, RESPONSE_COLUMNS, scanFrames, SPOOL_FRAME_HEADER_BYTES } from '../../src/audit/spool.ts'
import type { AuditSpoolOptions, SpoolRef } from '../../src/audit/spool.ts'
import type { PixProxyError } from '../../core/errors.ts'
import { damage, requestHalf, responseHalf, segmentFiles } from './fixtures/rows.ts'
import { rejection } from '../helpers/rejection.ts'
import { waitFor } from '../helpers/wait.ts'

const INCOMPLETE = 'PIXPROXY_ERR_AUDIT_INCOMPLETE'

async function openSpool (t: Test, opts: Partial<AuditSpoolOptions> & { dir: string }): Promise<AuditSpool> {
  const s = await AuditSpool.open({ maxBytes: 64 * 1024 * 1024, ...opts })
  t.teardown(() => s.close())
  return s
}

/** Every ready row, taken and loaded (they stay taken: not acked). */
async function drain (s: AuditSpool): Promise<Array<{ ref: SpoolRef, row: AuditRow }>> {
  const out: Array<{ ref: SpoolRef, row: AuditRow }> = []
  for (let ref = s.shift(); ref !== undefined; ref = s.shift()) out.push({ ref, row: await s.load(ref) })
  return out
}

t.test('rows kept in memory until they ship load exactly as the disk has them (bound, fallback, replay)', async (t) => {
  const ids = Array.from({ length: 40 }, (_v, i) => `m${i}`)
  const write = async (s: AuditSpool): Promise<void> => {
    for (const id of ids) {
      await s.begin(requestHalf(id))
      await s.end(id, responseHalf(id))
    }
  }
  const loaded: Record<string, AuditRow[]> = {}
  // 0: always read back; 30 KB: the first rows in memory, the rest from disk; default: all in memory.
  for (const [name, memoryBytes] of [['disk', 0], ['mixed', 30_000], ['memory', undefined]] as const) {
    const s = await openSpool(t, { dir: join(t.testdir(), name), ...(memoryBytes === undefined ? {} : { memoryBytes }) })
    await write(s)
    loaded[name] = (await drain(s)).map((x) => x.row)
  }
  t.same(loaded.disk?.map((r) => r.id), ids, 'every row, in order')
  t.same(loaded.disk?.filter((r) => damage(r) !== null), [], 'read back from disk intact')
  t.same(loaded.mixed, loaded.disk, 'partly from memory: the same rows, column for column')
  t.same(loaded.memory, loaded.disk, 'from memory: the same rows, column for column')

  // A row loaded from memory is a copy: changing it (the pipeline encodes bodies) changes nothing spooled.
  const dir = join(t.testdir(), 'copy')
  const s = await AuditSpool.open({ dir, maxBytes: 1 << 26 })
  await s.begin(requestHalf('c1'))
  await s.end('c1', responseHalf('c1'))
  const ref = s.shift() as SpoolRef
  const row = await s.load(ref)
  ;(row as { request_body: string | null }).request_body = 'changed'
  t.equal(damage(await s.load(ref)), null, 'a second load is untouched')
  s.unshift([ref])
  await s.close()
  const again = await openSpool(t, { dir })
  t.same((await drain(again)).map((x) => damage(x.row)), [null], 'and the disk, replayed, agrees')
  await t.rejects(AuditSpool.open({ dir: join(t.testdir(), 'bad'), maxBytes: 1 << 20, memoryBytes: -1 }), { code: 'PIXPROXY_ERR_CONFIG_INVALID' })
})

t.test('a spare segment is ready before it is needed; an empty one left behind replays as nothing; close removes it', async (t) => {
  const dir = t.testdir()
  const all = async (): Promise<string[]> => (await readdir(dir)).filter((n) => n.startsWith('spool-')).sort()
  const s = await AuditSpool.open({ dir, maxBytes: 1 << 26, segmentBytes: 64 * 1024 })
  // Prepared in the background after open: wait for it (however long a loaded machine takes), then count.
  await waitFor(async () => (await all()).length > 0)
  const spares = await all()
  t.equal(spares.length, 1, 'one empty segment prepared at open')
  t.same(await segmentFiles(dir), [], 'holding nothing')
  await s.begin(requestHalf('sp-1'))
  t.same(await segmentFiles(dir), spares, 'the first frame went into the prepared segment')
  // Past segmentBytes the next segment is the spare prepared meanwhile: every frame lands, in order.
  for (let i = 2; i <= 40; i++) await s.begin(requestHalf(`sp-${i}`, 3000))
  t.ok((await segmentFiles(dir)).length > 1, 'several segments used')
  t.ok((await all()).length === (await segmentFiles(dir)).length + 1, 'plus exactly one spare')
  // A crash (no close): the spare is left on disk, empty.
  const leftovers = await all()
  const copy = `${dir}-crashed`
  await mkdir(copy)
  t.teardown(async () => { await rm(copy, { recursive: true, force: true }) })
  for (const n of leftovers) await writeFile(join(copy, n), await readFile(join(dir, n)))
  const replayed = await AuditSpool.open({ dir: copy, maxBytes: 1 << 26 })
  t.equal(replayed.stats().replay.rows, 40, 'every begun row replays (as incomplete), the empty spare adds nothing')
  t.equal(replayed.stats().replay.tornBytes, 0, 'an empty segment is not a torn one')
  await replayed.close()
  await s.close()
  t.same(await segmentFiles(dir), await all(), 'close removed the spare: only segments with data remain')
})

t.test('the request and response halves split the schema exactly', async (t) => {
  const response = new Set<string>(RESPONSE_COLUMNS)
  for (const c of RESPONSE_COLUMNS) t.ok(AUDIT_COLUMNS.some((a) => a.name === c), `${c} is a schema column`)
  const requiredInSchema = AUDIT_COLUMNS.filter((c) => c.required).map((c) => c.name)
  t.same([...REQUIRED_REQUEST_COLUMNS].sort(), requiredInSchema.filter((n) => !response.has(n)).sort(), 'begin requires exactly the required columns')
  t.same(requiredInSchema.filter((n) => response.has(n)), [], 'no required column waits for the response')
})

t.test('begin then end gives one complete row, columns in schema order', async (t) => {
  const dir = t.testdir()
  const s = await openSpool(t, { dir })
  await s.begin(requestHalf('a1'))
  t.equal(s.stats().openRows, 1)
  t.equal(s.readyInfo().rows, 0, 'not shippable before its end')
  await s.end('a1', { ...responseHalf('a1'), error_code: null })
  const [got] = await drain(s)
  t.ok(got)
  t.same(Object.keys(got?.row ?? {}), AUDIT_COLUMNS.map((c) => c.name))
  t.equal(damage(got?.row as AuditRow), null)
  t.equal(got?.row.response_status_code, 201)
  t.equal(got?.row.error_code, null)
  t.same(s.stats().pendingRows, 1, 'pending until acked')
  await s.ack([got?.ref as SpoolRef])
  t.equal(s.stats().pendingRows, 0)
  t.equal(s.stats().shippedRows, 1)
})

t.test('rows spooled or parked before trace_id existed replay with trace_id null; rows with it keep it', async (t) => {
  const dir = t.testdir()
  // Frames and a parked file as the version before trace_id wrote them: no trace_id key at all.
  const old = (id: string): Record<string, unknown> => {
    const r = { ...requestHalf(id) } as Record<string, unknown>
    delete r.trace_id
    return r
  }
  const frame = (o: object): Buffer => encodeFrame(Buffer.from(JSON.stringify(o), 'utf8'))
  await writeFile(join(dir, 'spool-000000000001.log'), Buffer.concat([
    frame({ k: 'b', t: Date.now(), r: old('o1') }),
    frame({ k: 'e', id: 'o1', t: Date.now(), f: responseHalf('o1') }),
    frame({ k: 'b', t: Date.now(), r: old('o2') })
  ]), { mode: 0o600 })
  const parkedRow = { ...old('o3'), ...responseHalf('o3') }
  await writeFile(join(dir, 'parked-o3.json'), JSON.stringify({ t: Date.now(), row: parkedRow }), { mode: 0o600 })

  const s = await openSpool(t, { dir })
  t.equal(s.stats().replay.rows, 3)
  t.equal(s.stats().replay.incomplete, 1)
  await s.begin(requestHalf('n1'))
  await s.end('n1', responseHalf('n1'))
  const rows = new Map((await drain(s)).map(({ row }) => [row.id, row]))
  for (const id of ['o1', 'o2', 'o3']) {
    const row = rows.get(id)
    t.same(Object.keys(row ?? {}), AUDIT_COLUMNS.map((c) => c.name), `${id}: every column, in schema order`)
    t.equal(row?.trace_id, null, `${id}: trace_id null`)
    t.equal(row?.correlation_id, `req-${id}`, `${id}: the rest as written`)
  }
  t.equal(rows.get('o1')?.response_status_code, 201)
  t.equal(rows.get('o2')?.error_code, INCOMPLETE)
  t.equal(rows.get('n1')?.trace_id, requestHalf('n1').trace_id, 'a new row keeps its trace id')
  t.match(rows.get('n1')?.trace_id, /^[0-9a-f]{32}$/)
})

t.test('invalid rows and misuse are refused with stable codes, before anything is written', async (t) => {
  const dir = t.testdir()
  const s = await openSpool(t, { dir })
  const cases: Array<[string, unknown]> = [
    ['missing id', { ...requestHalf('x'), id: undefined }],
    ['id unsafe as a file name', { ...requestHalf('x'), id: '../etc/passwd' }],
    ['missing required column', { ...requestHalf('x1'), request_path: null }],
    ['wrong type', { ...requestHalf('x2'), request_header: { a: 1 } }],
    ['bad timestamp', { ...requestHalf('x3'), request_date: '2026-05-06 07:08:09' }],
    ['foreign column', { ...requestHalf('x4'), secret: 'pin' }],
    ['response column in the request half', { ...requestHalf('x5'), response_body: '<x/>' }],
    ['unknown system', { ...requestHalf('x6'), system: 'str' }]
  ]
  for (const [name, req] of cases) {
    const err = await rejection(s.begin(req as Parameters<AuditSpool['begin']>[0]))
    t.equal(err.code, 'PIXPROXY_ERR_AUDIT_ROW_INVALID', name)
  }
  t.equal(s.stats().bytes, 0, 'nothing written')
  await s.begin(requestHalf('ok'))
  t.equal((await rejection(s.begin(requestHalf('ok')))).code, 'PIXPROXY_ERR_AUDIT_ROW_INVALID', 'duplicate id')
  t.equal((await rejection(s.end('ok', { response_status_code: 2.5 }))).code, 'PIXPROXY_ERR_AUDIT_ROW_INVALID', 'status not an int')
  t.equal((await rejection(s.end('ok', { request_body: 'x' } as never))).code, 'PIXPROXY_ERR_AUDIT_ROW_INVALID', 'request column in the response half')
  t.equal((await rejection(s.end('nope', {}))).code, 'PIXPROXY_ERR_AUDIT_UNKNOWN_TRANSACTION')
  await s.end('ok', responseHalf('ok'))
  t.equal((await rejection(s.end('ok', {}))).code, 'PIXPROXY_ERR_AUDIT_UNKNOWN_TRANSACTION', 'ended twice')
})

t.test('group commit: 2,000 concurrent begins share a few fsyncs, and none resolves before one covered it', async (t) => {
  const base = t.testdir()
  const dir = join(base, 'spool')
  let synced = 0 // bytes of the segment known durable
  let syncs = 0
  const sync = async (fh: FileHandle): Promise<void> => {
    const size = (await fh.stat()).size
    await fh.datasync()
    syncs++
    synced = Math.max(synced, size)
  }
  const s = await openSpool(t, { dir, groupCommitMs: 2, sync })
  const coveredAtResolve = new Map<string, number>()
  const ids = Array.from({ length: 2000 }, (_, i) => `g-${i}`)
  await Promise.all(ids.map(async (id) => {
    await s.begin(requestHalf(id))
    coveredAtResolve.set(id, synced)
  }))
  t.ok(syncs >= 1 && syncs <= 10, `2,000 begins took ${syncs} fsyncs`)
  t.equal(s.stats().spooledRows, 2000)

  // Where each begin's frame ends in the file: each must be inside what was fsync'd when it resolved.
  const [file] = await segmentFiles(dir)
  const scan = scanFrames(await readFile(join(dir, file as string)))
  t.equal(scan.frames.length, 2000)
  let uncovered = 0
  for (const f of scan.frames) {
    const id = (JSON.parse(f.payload.toString('utf8')) as { r: { id: string } }).r.id
    if ((coveredAtResolve.get(id) ?? -1) < f.offset + f.length) uncovered++
  }
  t.equal(uncovered, 0, 'every begin resolved after an fsync that covered its frame')

  // Ends too; then a second open (the first never closed: as after a crash) sees every row complete.
  await Promise.all(ids.map(async (id) => { await s.end(id, responseHalf(id)) }))
  t.ok(syncs <= 20, `and 2,000 ends ${syncs} fsyncs in all`)
  const files = await readdir(dir)
  const copy = join(base, 'copy')
  await mkdir(copy)
  for (const f of files.filter((n) => n.startsWith('spool-'))) await writeFile(join(copy, f), await readFile(join(dir, f)))
  const again = await openSpool(t, { dir: copy })
  const rows = await drain(again)
  t.equal(rows.length, 2000)
  t.equal(rows.filter((r) => r.row.error_code === null && damage(r.row) === null).length, 2000)
})

t.test('sequential begins with groupCommitMs 0 each wait for their own fsync', async (t) => {
  const dir = t.testdir()
  let syncs = 0
  const s = await openSpool(t, { dir, groupCommitMs: 0, sync: async (fh) => { await fh.datasync(); syncs++ } })
  for (let i = 0; i < 20; i++) await s.begin(requestHalf(`s-${i}`))
  t.equal(syncs, 20)
})

t.test('torn tail: a segment cut anywhere in its last record replays every complete record and ignores the rest', async (t) => {
  const base = t.testdir({ src: {} })
  const src = join(base, 'src')
  const s = await AuditSpool.open({ dir: src, maxBytes: 64 * 1024 * 1024 })
  for (let i = 0; i < 10; i++) {
    await s.begin(requestHalf(`t-${i}`))
    await s.end(`t-${i}`, responseHalf(`t-${i}`))
  }
  await s.begin(requestHalf('t-last')) // the last record: a begin
  await s.close()
  const [file] = await segmentFiles(src)
  const bytes = await readFile(join(src, file as string))
  const frames = scanFrames(bytes).frames
  const last = frames[frames.length - 1] as (typeof frames)[number]
  const prevEnd = frames[frames.length - 2] as (typeof frames)[number]

  // Every cut inside the header, a few inside the payload, and one byte short of the end.
  const cuts = [...Array.from({ length: SPOOL_FRAME_HEADER_BYTES + 1 }, (_, i) => last.offset + i), last.offset + 50, last.offset + Math.floor(last.length / 2), last.offset + last.length - 1]
  for (const cut of cuts) {
    const dir = join(base, `cut-${cut}`)
    await mkdir(dir)
    await writeFile(join(dir, file as string), bytes.subarray(0, cut))
    const r = await AuditSpool.open({ dir, maxBytes: 64 * 1024 * 1024 })
    const rows = await drain(r)
    t.equal(rows.length, 10, `cut at ${cut}: the 10 complete rows`)
    t.equal(rows.filter((x) => x.row.error_code === null && damage(x.row) === null).length, 10)
    t.equal(r.stats().replay.tornBytes, cut - last.offset, 'the torn bytes are counted')
    t.equal(r.stats().replay.corruptBytes, 0)
    await r.close()
  }
  t.equal(prevEnd.offset + prevEnd.length, last.offset)

  // Cut inside an end record: that row comes back INCOMPLETE, not misread.
  const dir = join(base, 'cut-end')
  await mkdir(dir)
  await writeFile(join(dir, file as string), bytes.subarray(0, prevEnd.offset + 7))
  const r = await openSpool(t, { dir })
  const rows = await drain(r)
  t.equal(rows.length, 10)
  const t9 = rows.find((x) => x.row.id === 't-9')
  t.equal(t9?.row.error_code, INCOMPLETE)
  t.equal(damage(t9?.row as AuditRow), null)
})

t.test('a zero-filled tail (what ext4 can leave after a crash) is ignored, and new writes never follow a torn tail', async (t) => {
  const dir = t.testdir()
  const s = await AuditSpool.open({ dir, maxBytes: 64 * 1024 * 1024 })
  for (let i = 0; i < 3; i++) await s.begin(requestHalf(`z-${i}`))
  await s.close()
  const [file] = await segmentFiles(dir)
  await appendFile(join(dir, file as string), Buffer.alloc(4096))
  const s2 = await AuditSpool.open({ dir, maxBytes: 64 * 1024 * 1024 })
  t.equal(s2.stats().replay.tornBytes, 4096)
  await s2.begin(requestHalf('z-new'))
  await s2.end('z-new', responseHalf('z-new'))
  t.equal((await segmentFiles(dir)).length, 2, 'a new segment, not an append after the zeros')
  await s2.close()
  const s3 = await openSpool(t, { dir })
  const rows = await drain(s3)
  t.same(rows.map((r) => r.row.id).sort(), ['z-0', 'z-1', 'z-2', 'z-new'])
  t.equal(rows.find((r) => r.row.id === 'z-new')?.row.error_code, null)
})

t.test('corruption in the middle of a segment: good records after it are kept, the file is kept as corrupt-*.log', async (t) => {
  const dir = t.testdir()
  const s = await AuditSpool.open({ dir, maxBytes: 64 * 1024 * 1024 })
  for (let i = 0; i < 5; i++) {
    await s.begin(requestHalf(`c-${i}`))
    await s.end(`c-${i}`, responseHalf(`c-${i}`))
  }
  await s.close()
  const [file] = await segmentFiles(dir)
  const path = join(dir, file as string)
  const bytes = await readFile(path)
  const frames = scanFrames(bytes).frames
  const victim = frames[2] as (typeof frames)[number] // the begin of c-1
  const at = victim.offset + SPOOL_FRAME_HEADER_BYTES + 20
  bytes.writeUInt8(bytes.readUInt8(at) ^ 0x01, at)
  await writeFile(path, bytes)
  const lines: string[] = []
  const logger = { info: () => {}, warn: () => {}, error: (o: object) => { lines.push((o as { code: string }).code) } }
  const s2 = await openSpool(t, { dir, logger })
  t.equal(s2.stats().replay.corruptBytes, victim.length)
  t.same(lines, ['PIXPROXY_ERR_AUDIT_SPOOL_CORRUPT'])
  const rows = await drain(s2)
  t.same(rows.map((r) => r.row.id).sort(), ['c-0', 'c-2', 'c-3', 'c-4'], 'c-1 lost its begin: its end alone is not a row')
  for (const r of rows) t.equal(damage(r.row), null)
  await s2.ack(rows.map((r) => r.ref))
  t.same(await segmentFiles(dir), [])
  t.ok((await readdir(dir)).includes(`corrupt-${(file as string).slice(6)}`), 'kept for forensics, out of the spool')
})

t.test('segments go oldest first, and only when every row with a frame in them was acked', async (t) => {
  const dir = t.testdir()
  const s = await openSpool(t, { dir, segmentBytes: 8 * 1024, groupCommitMs: 0 })
  // r-0 begins in the first segment and stays open while the others fill several segments.
  await s.begin(requestHalf('r-0', 1000))
  for (let i = 1; i <= 30; i++) {
    await s.begin(requestHalf(`r-${i}`, 1000))
    await s.end(`r-${i}`, responseHalf(`r-${i}`))
  }
  const before = await segmentFiles(dir)
  t.ok(before.length >= 4, `${before.length} segments`)
  const rows = await drain(s)
  t.equal(rows.length, 30)
  await s.ack(rows.map((r) => r.ref))
  t.same(await segmentFiles(dir), before, 'r-0 is still open: nothing deleted')
  await s.end('r-0', responseHalf('r-0'))
  const [last] = await drain(s)
  t.equal(last?.row.id, 'r-0')
  t.equal(s.stats().bytes > 0, true)
  await s.ack([last?.ref as SpoolRef])
  t.same(await segmentFiles(dir), [], 'all shipped: all deleted, the idle active segment too')
  t.equal(s.stats().bytes, 0)
  t.equal(s.stats().segments, 0)
  // And the spool carries on in a new segment.
  await s.begin(requestHalf('r-31'))
  t.equal((await segmentFiles(dir)).length, 1)
})

t.test('rows acked while an older row holds their segment are not shipped again after a restart', async (t) => {
  const dir = t.testdir()
  const s = await AuditSpool.open({ dir, maxBytes: 64 * 1024 * 1024 })
  await s.begin(requestHalf('h-0'))
  for (let i = 1; i <= 5; i++) {
    await s.begin(requestHalf(`h-${i}`))
    await s.end(`h-${i}`, responseHalf(`h-${i}`))
  }
  await s.ack((await drain(s)).map((r) => r.ref))
  await s.close()
  const s2 = await openSpool(t, { dir })
  t.equal(s2.stats().replay.alreadyShipped, 5)
  const rows = await drain(s2)
  t.same(rows.map((r) => [r.row.id, r.row.error_code]), [['h-0', INCOMPLETE]], 'only the open one, as INCOMPLETE')
})

t.test('bounded: nearFull at 80 %, begin refused with AUDIT_SPOOL_FULL at the bound, end still accepted', async (t) => {
  const base = t.testdir()
  const dir = join(base, 'spool')
  const frame = (await (async () => {
    const probe = await AuditSpool.open({ dir: join(base, 'probe'), maxBytes: 1 << 30 })
    await probe.begin(requestHalf('probe', 1000))
    const b = probe.stats().bytes
    await probe.close()
    return b
  })())
  // Ids as long as 'probe', so every frame has the same size.
  const s = await openSpool(t, { dir, maxBytes: frame * 10 })
  let i = 0
  let sawNearFullAt = -1
  for (;;) {
    try {
      await s.begin(requestHalf(`f-${String(i).padStart(3, '0')}`, 1000))
    } catch (err) {
      t.equal((err as PixProxyError).code, 'PIXPROXY_ERR_AUDIT_SPOOL_FULL')
      t.equal((err as PixProxyError).statusCode, 503)
      break
    }
    if (sawNearFullAt < 0 && s.stats().nearFull) sawNearFullAt = i
    i++
  }
  t.equal(i, 10, 'exactly as many as fit')
  t.equal(sawNearFullAt, 7, 'nearFull rose at the 8th of 10 (80 %)')
  t.equal(s.stats().rejectedFull, 1)
  t.equal((await rejection(s.begin(requestHalf('f-more', 10)))).code, 'PIXPROXY_ERR_AUDIT_SPOOL_FULL')
  await s.end('f-000', responseHalf('f-000'))
  t.ok(s.stats().bytes > s.maxBytes, 'the response of a sent request is kept even past the bound')
})

t.test('a failed fsync stops the spool: that begin and every later one is refused with AUDIT_SPOOL_IO', async (t) => {
  const dir = t.testdir()
  let fail = false
  const s = await openSpool(t, { dir, sync: async (fh) => { if (fail) throw Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' }); await fh.datasync() } })
  await s.begin(requestHalf('io-0'))
  fail = true
  const err = await rejection(s.begin(requestHalf('io-1')))
  t.equal(err.code, 'PIXPROXY_ERR_AUDIT_SPOOL_IO')
  t.match(String((err.cause as Error).message), /EIO/)
  fail = false
  t.equal((await rejection(s.begin(requestHalf('io-2')))).code, 'PIXPROXY_ERR_AUDIT_SPOOL_IO', 'still stopped though fsync would work now')
  t.equal((await rejection(s.end('io-0', responseHalf('io-0')))).code, 'PIXPROXY_ERR_AUDIT_SPOOL_IO')
  t.equal(s.stats().failed, true)
  t.equal(s.failure?.code, 'PIXPROXY_ERR_AUDIT_SPOOL_IO')
})

t.test('close writes what is queued; later calls are refused; the next open finds the rows', async (t) => {
  const dir = t.testdir()
  const s = await AuditSpool.open({ dir, maxBytes: 1 << 26, groupCommitMs: 50 })
  const p = s.begin(requestHalf('q-0'))
  await s.close()
  await p
  t.equal((await rejection(s.begin(requestHalf('q-1')))).code, 'PIXPROXY_ERR_AUDIT_SPOOL_CLOSED')
  t.notOk((await readdir(dir)).includes('spool.lock'), 'lock released')
  const s2 = await openSpool(t, { dir })
  t.same((await drain(s2)).map((r) => r.row.id), ['q-0'])
})

t.test('one process per spool directory', async (t) => {
  const dir = t.testdir()
  const child = spawn(process.execPath, [join(import.meta.dirname, 'fixtures/holder.ts'), dir], { stdio: ['pipe', 'pipe', 'inherit'] })
  t.teardown(() => { child.kill('SIGKILL') })
  await once(child.stdout, 'data')
  const err = await rejection(AuditSpool.open({ dir, maxBytes: 1 << 20 }))
  t.equal(err.code, 'PIXPROXY_ERR_AUDIT_SPOOL_LOCKED')
  child.kill('SIGKILL')
  await once(child, 'exit')
  const s = await openSpool(t, { dir })
  t.equal(s.stats().pendingRows, 0, 'a dead holder\'s lock is taken over')
  const lock = JSON.parse(await readFile(join(dir, 'spool.lock'), 'utf8')) as { pid: number, host: string }
  t.equal(lock.pid, process.pid)
  t.equal(lock.host, hostname())
})

t.test('a lock held from another host (shared filesystem) is respected while it is touched, taken over after 30 s', async (t) => {
  const dir = t.testdir({ 'spool.lock': JSON.stringify({ pid: 1, host: 'task-elsewhere', token: 'x' }) })
  const err = await rejection(AuditSpool.open({ dir, maxBytes: 1 << 20 }))
  t.equal(err.code, 'PIXPROXY_ERR_AUDIT_SPOOL_LOCKED')
  t.match(err.message, /1 on task-elsewhere/)
  t.match(await readFile(join(dir, 'spool.lock'), 'utf8'), /task-elsewhere/, 'a refused open leaves the lock alone')
  const old = new Date(Date.now() - 31_000)
  await utimes(join(dir, 'spool.lock'), old, old)
  const s = await AuditSpool.open({ dir, maxBytes: 1 << 20 })
  t.match(await readFile(join(dir, 'spool.lock'), 'utf8'), hostname())
  await s.close()
  t.notOk((await readdir(dir)).includes('spool.lock'), 'released on close')
})

/** A pid that belonged to a process which has exited (and was reaped). */
function deadPid (): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'])
  return Number(r.stdout.toString())
}

/** A claimer's stop: `arrived` once it reached the step; it waits there until `open()`; later visits pass. */
function stop (): { wait: () => Promise<void>, arrived: Promise<void>, open: () => void } {
  let arrive = (): void => {}
  let open = (): void => {}
  const arrived = new Promise<void>((resolve) => { arrive = resolve })
  const opened = new Promise<void>((resolve) => { open = resolve })
  return { wait: async () => { arrive(); await opened }, arrived, open }
}

t.test('claimers racing for one stale lock: exactly one takes it over, every time', async (t) => {
  const base = t.testdir()
  const N = 5
  const dead = deadPid()
  for (let round = 0; round < 40; round++) {
    const dir = join(base, `round-${round}`)
    await mkdir(dir)
    // Stale two ways: a process of this host that is gone, or another host's lock untouched past the bound.
    const path = join(dir, 'spool.lock')
    if (round % 2 === 0) await writeFile(path, JSON.stringify({ pid: dead, host: hostname(), token: `dead-${round}` }))
    else {
      await writeFile(path, JSON.stringify({ pid: 1, host: 'task-elsewhere', token: `dead-${round}` }))
      const old = new Date(Date.now() - 60_000)
      await utimes(path, old, old)
    }
    // Every claimer first judges the lock stale and is held there, so all of them act on that judgment. Then
    // either all go on at once, or one at a time in a rotating order, each finishing before the next goes on (a
    // late claimer acting on its old judgment must not take the winner's lock).
    const stops = Array.from({ length: N }, stop)
    const beats: Array<() => Promise<void>> = []
    const opens = stops.map(async (st) => await AuditSpool.open({
      dir,
      maxBytes: 1 << 20,
      groupCommitMs: 0,
      lockHooks: { judgedStale: st.wait, heartbeat: (beat) => { beats.push(beat); return () => {} } }
    }))
    await Promise.all(stops.map(async (st) => { await st.arrived }))
    const sequential = round % 4 >= 2
    const results: Array<PromiseSettledResult<AuditSpool>> = []
    if (sequential) {
      for (let i = 0; i < N; i++) {
        const k = (i + round) % N
        stops[k]?.open()
        results.push(...await Promise.allSettled([opens[k] as Promise<AuditSpool>]))
      }
    } else {
      for (const st of stops) st.open()
      results.push(...await Promise.allSettled(opens))
    }
    const winners = results.flatMap((r) => r.status === 'fulfilled' ? [r.value] : [])
    const losers = results.flatMap((r) => r.status === 'rejected' ? [(r.reason as PixProxyError).code] : [])
    t.equal(winners.length, 1, `round ${round} (${sequential ? 'one at a time' : 'all at once'}): one winner`)
    t.same(losers, Array.from({ length: N - winners.length }, () => 'PIXPROXY_ERR_AUDIT_SPOOL_LOCKED'), 'the others are told it is locked')
    // The winner really holds it: its heartbeat finds its own lock, and it writes.
    for (const beat of beats) await beat()
    t.equal(winners.filter((w) => !w.stats().failed).length, 1, 'exactly one spool still believes it owns the directory')
    for (const w of winners) await w.begin(requestHalf(`w-${round}`)).catch(() => {})
    for (const w of winners) await w.close()
    t.same((await readdir(dir)).filter((n) => !n.startsWith('spool-')), [], 'no lock, marker or temporary file left behind')
  }
})

t.test('a takeover marker: a live claimer\'s is respected, a dead claimer\'s does not wedge the slot', async (t) => {
  const dir = t.testdir()
  const path = join(dir, 'spool.lock')
  await writeFile(path, JSON.stringify({ pid: deadPid(), host: hostname(), token: 'gone' }))
  // Another process (alive) is in the middle of taking this stale lock over.
  const claimer = spawn('sleep', ['120'], { stdio: 'ignore' })
  t.teardown(() => { claimer.kill('SIGKILL') })
  await writeFile(`${path}.takeover-gone-1`, JSON.stringify({ pid: claimer.pid, host: hostname(), token: 'claimer' }))
  const err = await rejection(AuditSpool.open({ dir, maxBytes: 1 << 20 }))
  t.equal(err.code, 'PIXPROXY_ERR_AUDIT_SPOOL_LOCKED', 'left to the claimer that got there first')
  t.match(err.message, /taking it over/)
  // That claimer died before it finished: its marker is passed, and removed with it after the takeover.
  claimer.kill('SIGKILL')
  await once(claimer, 'exit')
  const s = await AuditSpool.open({ dir, maxBytes: 1 << 20 })
  t.match(JSON.parse(await readFile(path, 'utf8')), { pid: process.pid, host: hostname() }, 'taken over')
  t.same((await readdir(dir)).filter((n) => n.startsWith('spool.lock')), ['spool.lock'], 'no marker left')
  await s.close()
})

t.test('a process whose lock was taken over notices at its next heartbeat and stops writing', async (t) => {
  const dir = t.testdir()
  const beats: Array<() => Promise<void>> = []
  const errors: Array<{ obj: object, msg: string }> = []
  const logger = { info: () => {}, warn: () => {}, error: (obj: object, msg: string) => { errors.push({ obj, msg }) } }
  const s = await AuditSpool.open({ dir, maxBytes: 1 << 20, groupCommitMs: 0, logger, lockHooks: { heartbeat: (beat) => { beats.push(beat); return () => {} } } })
  t.equal(beats.length, 1, 'one heartbeat scheduled')
  const beat = beats[0] as () => Promise<void>
  const path = join(dir, 'spool.lock')
  await s.begin(requestHalf('before'))

  // Its own lock: the beat refreshes it in place (never absent, never rewritten) and the spool goes on.
  const mine = await readFile(path, 'utf8')
  const old = new Date(Date.now() - 20_000)
  await utimes(path, old, old)
  await beat()
  t.ok((await stat(path)).mtimeMs > old.getTime() + 1_000, 'refreshed (well past the time it was set back to)')
  t.equal(await readFile(path, 'utf8'), mine, 'the same lock')
  await s.end('before', responseHalf('before'))

  // Presumed dead (paused past the stale bound): another process took the lock over, as a takeover leaves it.
  const theirs = JSON.stringify({ pid: 1, host: 'task-elsewhere', token: 'new-owner' })
  await writeFile(`${path}.new-owner`, theirs)
  await rename(`${path}.new-owner`, path)
  const files = (await readdir(dir)).sort()
  t.equal(s.stats().failed, false, 'not noticed before the heartbeat')
  await beat()
  t.equal(s.stats().failed, true, 'noticed at the next heartbeat')
  t.equal(s.failure?.code, 'PIXPROXY_ERR_AUDIT_SPOOL_LOCKED')
  t.match(s.failure?.message, /task-elsewhere/, 'naming the new owner')
  t.equal((await rejection(s.begin(requestHalf('after')))).code, 'PIXPROXY_ERR_AUDIT_SPOOL_LOCKED', 'begin refused')
  t.equal(errors.length, 1, 'logged once, as an error')
  t.match(errors[0]?.obj, { code: 'PIXPROXY_ERR_AUDIT_SPOOL_LOCKED', dir })
  await beat()
  t.equal(errors.length, 1, 'a later beat changes nothing')
  t.equal(await readFile(path, 'utf8'), theirs, 'the new owner\'s lock is not touched')

  await s.close()
  t.equal(await readFile(path, 'utf8'), theirs, 'close does not release the new owner\'s lock')
  t.same((await readdir(dir)).sort(), files, 'nor delete anything in the directory that is no longer ours')
})

t.test('a heartbeat that finds the lock gone stops the spool too', async (t) => {
  const dir = t.testdir()
  const beats: Array<() => Promise<void>> = []
  const s = await openSpool(t, { dir, lockHooks: { heartbeat: (beat) => { beats.push(beat); return () => {} } } })
  await unlink(join(dir, 'spool.lock'))
  await (beats[0] as () => Promise<void>)()
  t.equal((await rejection(s.begin(requestHalf('x')))).code, 'PIXPROXY_ERR_AUDIT_SPOOL_LOCKED', 'anyone could have taken the directory since')
})

t.test('stats: oldest unshipped age counts from begin, across a restart', async (t) => {
  const dir = t.testdir()
  const s = await AuditSpool.open({ dir, maxBytes: 1 << 26 })
  await s.begin(requestHalf('age-0'))
  await new Promise((resolve) => setTimeout(resolve, 120))
  t.ok(s.stats().oldestUnshippedAgeMs >= 100)
  await s.close()
  const s2 = await openSpool(t, { dir })
  t.ok(s2.stats().oldestUnshippedAgeMs >= 100, 'from the time in the frame, not the replay')
  t.equal(s2.stats().replay.incomplete, 1)
})

t.test('the spool is its owner\'s only, whatever the umask: files 0600, directory 0700 (rows hold names, tax ids, accounts)', async (t) => {
  const old = process.umask(0)
  t.teardown(() => { process.umask(old) })
  const dir = join(t.testdir(), 'spool')
  const s = await openSpool(t, { dir })
  await s.begin(requestHalf('m1'))
  await s.end('m1', responseHalf('m1'))
  const [taken] = await drain(s)
  await s.park((taken as { ref: SpoolRef }).ref, (taken as { row: AuditRow }).row)
  t.equal((await stat(dir)).mode & 0o777, 0o700, 'the directory')
  const names = await readdir(dir)
  t.ok(names.some((n) => n.startsWith('parked-')), 'a parked row among them')
  t.ok(names.includes('spool.lock'), 'and the lock')
  for (const n of names) t.equal((await stat(join(dir, n))).mode & 0o777, 0o600, n)
})
