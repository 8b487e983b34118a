/**
 * RSA-2048 signing throughput through Pkcs11KeyStore on a throw-away SoftHSM2 token, by pool size, against
 * node:crypto signing the same way in the same run.
 *
 *   node bench/hsm.ts [--json] [--seconds 3] [--warmup 0.5]
 *
 * For each pool size (1, 2, 4) a fresh store runs `2 x poolSize` closed-loop callers for `seconds` after a
 * warm-up. The software baseline is SoftwareSigner (async node:crypto, libuv pool) at concurrency 8, plus
 * synchronous node:crypto on the main thread (one core). Prints one JSON object on stdout; with --json nothing
 * else, otherwise a human summary on stderr too.
 */
import { generateKeyPairSync, sign as rsaSign } from 'node:crypto'
import { cpus, tmpdir } from 'node:os'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { monitorEventLoopDelay, performance } from 'node:perf_hooks'
import { initSoftHsm } from '../tools/token/hsm-init.ts'
import { Pkcs11KeyStore } from '../src/hsm/pkcs11.ts'
import { SoftwareSigner } from '../core/signer.ts'
import type { Signer } from '../core/signer.ts'

const { values } = parseArgs({
  options: {
    json: { type: 'boolean', default: false },
    seconds: { type: 'string', default: '3' },
    warmup: { type: 'string', default: '0.5' }
  }
})
const seconds = Number(values.seconds)
const warmupSeconds = Number(values.warmup)
const POOL_SIZES = [1, 2, 4] as const
const data = Buffer.from('<ds:SignedInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#">bench</ds:SignedInfo>')

interface Run { perSec: number, maxEventLoopDelayMs: number }

/** `concurrency` closed-loop callers of `signer.sign` for `secs` seconds; signs/s and worst event-loop delay. */
async function drive (signer: Signer, concurrency: number, secs: number): Promise<Run> {
  const histogram = monitorEventLoopDelay({ resolution: 5 })
  histogram.enable()
  let n = 0
  const start = performance.now()
  const end = start + secs * 1000
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (performance.now() < end) {
      await signer.sign(data)
      n++
    }
  }))
  const elapsed = performance.now() - start
  histogram.disable()
  return { perSec: n / (elapsed / 1000), maxEventLoopDelayMs: histogram.max / 1e6 }
}

const dir = await mkdtemp(join(tmpdir(), 'pix-proxy-bench-hsm-'))
try {
  const hsm = await initSoftHsm({ dir: join(dir, 'hsm'), ...(process.env.PKCS11_MODULE_PATH === undefined ? {} : { modulePath: process.env.PKCS11_MODULE_PATH }) })
  // This script is an entry point: it owns the environment SoftHSM reads when the module initialises.
  process.env.SOFTHSM2_CONF = hsm.softhsmConf
  const pin = (await readFile(hsm.pinFile, 'utf8')).trim()

  const softhsmSignPerSec: Record<string, number> = {}
  const eventLoopMaxDelayMs: Record<string, number> = {}
  for (const poolSize of POOL_SIZES) {
    const store = await Pkcs11KeyStore.open({ modulePath: hsm.modulePath, tokenLabel: hsm.tokenLabel, pin, poolSize, acquireTimeoutMs: 60_000 })
    try {
      const signer = await store.signer(hsm.signing.keyLabel)
      await drive(signer, 2 * poolSize, warmupSeconds)
      const run = await drive(signer, 2 * poolSize, seconds)
      softhsmSignPerSec[String(poolSize)] = Math.round(run.perSec)
      eventLoopMaxDelayMs[String(poolSize)] = Number(run.maxEventLoopDelayMs.toFixed(2))
    } finally {
      await store.close()
    }
  }

  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const software = SoftwareSigner.fromKeyObject(privateKey)
  await drive(software, 8, warmupSeconds)
  const softwareRun = await drive(software, 8, seconds)
  const inThread: Signer = { publicKey: software.publicKey, description: 'in-thread', sign: async (d) => rsaSign('sha256', d, privateKey) }
  await drive(inThread, 1, warmupSeconds)
  const inThreadRun = await drive(inThread, 1, seconds)

  const result = {
    softhsmSignPerSec,
    softwareSignPerSec: Math.round(softwareRun.perSec),
    softwareSyncSignPerSec: Math.round(inThreadRun.perSec),
    eventLoopMaxDelayMs,
    node: process.versions.node,
    cpus: cpus().length,
    seconds
  }
  if (!values.json) {
    for (const p of POOL_SIZES) process.stderr.write(`SoftHSM pool ${p} (concurrency ${2 * p}): ${softhsmSignPerSec[String(p)]} signs/s, max event-loop delay ${eventLoopMaxDelayMs[String(p)]} ms\n`)
    process.stderr.write(`node:crypto async (concurrency 8): ${result.softwareSignPerSec} signs/s; in-thread: ${result.softwareSyncSignPerSec} signs/s\n`)
  }
  process.stdout.write(JSON.stringify(result) + '\n')
} finally {
  await rm(dir, { recursive: true, force: true })
}
