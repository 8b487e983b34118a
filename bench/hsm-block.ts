/**
 * How long the event loop is held per signature by the PKCS#11 calls made on it (C_SignInit, and starting the
 * asynchronous C_Sign), as opposed to the RSA work on libuv's pool: event-loop active time (performance
 * .eventLoopUtilization(), which counts time blocked in a call) minus the main thread's own CPU time and its time
 * waiting for a CPU (/proc/self/task/<pid>/schedstat: on a shared machine other tenants' work), per signature, with `concurrency` closed-loop callers on a pool of sessions.
 *
 *   taskset -c 0 node bench/hsm-block.ts [--json] [--seconds 3] [--pool 4] [--concurrency 8]
 *
 * Run it pinned to one core and to two: a lock the pool thread holds while signing shows as blocked time that grows
 * when the two threads share a core.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { performance } from 'node:perf_hooks'
import { initSoftHsm } from '../tools/token/hsm-init.ts'
import { Pkcs11KeyStore } from '../src/hsm/pkcs11.ts'
import type { Signer } from '../core/signer.ts'

const { values } = parseArgs({ options: { json: { type: 'boolean', default: false }, seconds: { type: 'string', default: '3' }, pool: { type: 'string', default: '4' }, concurrency: { type: 'string', default: '8' } } })
const data = Buffer.from('<ds:SignedInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#">bench</ds:SignedInfo>')

/** The main thread's time on a CPU and waiting for one (runnable, other threads or tenants running), ms. */
async function mainThreadSched (): Promise<{ cpuMs: number, queuedMs: number }> {
  const s = (await readFile(`/proc/self/task/${process.pid}/schedstat`, 'utf8')).split(' ')
  return { cpuMs: Number(s[0]) / 1e6, queuedMs: Number(s[1]) / 1e6 }
}

async function drive (signer: Signer, concurrency: number, secs: number): Promise<{ signs: number, activeMs: number, cpuMs: number, queuedMs: number, wallMs: number }> {
  let n = 0
  const s0 = await mainThreadSched()
  const elu0 = performance.eventLoopUtilization()
  const start = performance.now()
  const end = start + secs * 1000
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (performance.now() < end) {
      await signer.sign(data)
      n++
    }
  }))
  const elu = performance.eventLoopUtilization(elu0)
  const s1 = await mainThreadSched()
  return { signs: n, activeMs: elu.active, cpuMs: s1.cpuMs - s0.cpuMs, queuedMs: s1.queuedMs - s0.queuedMs, wallMs: performance.now() - start }
}

const dir = await mkdtemp(join(tmpdir(), 'pix-proxy-bench-hsm-block-'))
try {
  const hsm = await initSoftHsm({ dir: join(dir, 'hsm'), ...(process.env.PKCS11_MODULE_PATH === undefined ? {} : { modulePath: process.env.PKCS11_MODULE_PATH }) })
  // This script is an entry point: it owns the environment SoftHSM reads when the module initialises.
  process.env.SOFTHSM2_CONF = hsm.softhsmConf
  const pin = (await readFile(hsm.pinFile, 'utf8')).trim()
  const store = await Pkcs11KeyStore.open({ modulePath: hsm.modulePath, tokenLabel: hsm.tokenLabel, pin, poolSize: Number(values.pool), acquireTimeoutMs: 60_000 })
  try {
    const signer = await store.signer(hsm.signing.keyLabel)
    await drive(signer, Number(values.concurrency), 0.5)
    const r = await drive(signer, Number(values.concurrency), Number(values.seconds))
    const per = (x: number): number => Math.round(x / r.signs * 1000) / 1000
    process.stdout.write(JSON.stringify({ bench: 'hsm-block', pool: Number(values.pool), concurrency: Number(values.concurrency), signs: r.signs, signsPerSec: Math.round(r.signs / r.wallMs * 1000), eventLoopActiveMsPerSign: per(r.activeMs), mainThreadCpuMsPerSign: per(r.cpuMs), runQueueMsPerSign: per(r.queuedMs), blockedMsPerSign: per(Math.max(0, r.activeMs - r.cpuMs - r.queuedMs)) }) + '\n')
  } finally {
    await store.close()
  }
} finally {
  await rm(dir, { recursive: true, force: true })
}
