/**
 * A throw-away SoftHSM2 token for a test file.
 *
 * SoftHSM reads SOFTHSM2_CONF once, in C_Initialize, and PKCS#11 state is process-wide: one configuration per
 * process. tap runs each test file in its own process, so each file calls setupSoftHsm() once, at the top,
 * before anything initialises the module; a second call in the same process throws instead of silently using
 * the first token directory.
 */
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import type { KeyObject } from 'node:crypto'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pkcs11js from 'pkcs11js'
import { Pkcs11KeyStore } from '../../src/hsm/pkcs11.ts'
import { generateRsaKeyPair } from '../../tools/token/keygen.ts'

export interface SoftHsmKey {
  readonly label: string
  readonly id: Buffer
  readonly publicKey: KeyObject
}

export interface SoftHsmFixture {
  readonly dir: string
  readonly conf: string
  readonly tokenDir: string
  readonly modulePath: string
  readonly tokenLabel: string
  readonly pin: string
  readonly soPin: string
  /** Keys generated on the token, by label: RSA-2048, CKA_SENSITIVE, not extractable, CKA_SIGN. */
  readonly keys: ReadonlyMap<string, SoftHsmKey>
}

let claimed: string | undefined

function run (cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { env, timeout: 60_000 }, (err, stdout, stderr) => {
      if (err !== null) reject(new Error(`${cmd} failed: ${stderr || err.message}`))
      else resolve(stdout)
    })
  })
}

/**
 * Creates a temporary token directory and softhsm2.conf, points SOFTHSM2_CONF at it, initialises a token
 * with random PINs through softhsm2-util and generates `keyLabels` on it through the project's own
 * Pkcs11KeyStore (graphene). Removes everything at teardown.
 */
export async function setupSoftHsm (
  t: { teardown (fn: () => unknown): void },
  opts: { tokenLabel?: string, keyLabels?: readonly string[] } = {}
): Promise<SoftHsmFixture> {
  if (claimed !== undefined) {
    throw new Error(`setupSoftHsm() already ran in this process (${claimed}): SoftHSM reads SOFTHSM2_CONF once per process`)
  }
  const dir = await mkdtemp(join(tmpdir(), 'pix-proxy-softhsm-'))
  claimed = dir
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const tokenDir = join(dir, 'tokens')
  await mkdir(tokenDir, { mode: 0o700 })
  const conf = join(dir, 'softhsm2.conf')
  await writeFile(conf, [
    `directories.tokendir = ${tokenDir}`,
    'objectstore.backend = file',
    'log.level = ERROR',
    'slots.removable = false',
    ''
  ].join('\n'), { mode: 0o600 })
  process.env.SOFTHSM2_CONF = conf

  const tokenLabel = opts.tokenLabel ?? 'pix-proxy-test'
  const pin = randomBytes(12).toString('hex')
  const soPin = randomBytes(12).toString('hex')
  await run('softhsm2-util', ['--init-token', '--free', '--label', tokenLabel, '--pin', pin, '--so-pin', soPin],
    { ...process.env, SOFTHSM2_CONF: conf })
  const modulePath = process.env.PKCS11_MODULE_PATH ?? '/usr/lib/softhsm/libsofthsm2.so'

  const keys = new Map<string, SoftHsmKey>()
  if (opts.keyLabels !== undefined && opts.keyLabels.length > 0) {
    const store = await Pkcs11KeyStore.open({ modulePath, tokenLabel, pin, poolSize: 1 })
    try {
      for (const [i, label] of opts.keyLabels.entries()) {
        const { id, publicKey } = await generateRsaKeyPair(store, label, { id: Buffer.from([0x50, i + 1]) })
        keys.set(label, { label, id, publicKey })
      }
    } finally {
      await store.close()
    }
  }
  return { dir, conf, tokenDir, modulePath, tokenLabel, pin, soPin, keys }
}

/**
 * A second, raw handle on the PKCS#11 module (pkcs11js), sharing the process's SoftHSM state with whatever store
 * is open: lets a test reach under a pool and break its sessions the way a device or another component would.
 * It neither initialises nor finalises the module: calls fail with CKR_CRYPTOKI_NOT_INITIALIZED when no store
 * holds it initialised, which is itself what a test of close() wants to see.
 */
export interface RawModule {
  readonly lib: pkcs11js.PKCS11
  /** Handles of the sessions currently open in this process (SoftHSM numbers them from 1). */
  sessions (): Buffer[]
  /** The slot holding the token labelled `label`. */
  slotOf (label: string): Buffer
  close (): void
}

export function openRawModule (modulePath: string): RawModule {
  const lib = new pkcs11js.PKCS11()
  lib.load(modulePath)
  return {
    lib,
    sessions () {
      const live: Buffer[] = []
      for (let n = 1; n <= 256; n++) {
        const handle = Buffer.alloc(8)
        handle.writeBigUInt64LE(BigInt(n))
        try {
          lib.C_GetSessionInfo(handle)
          live.push(handle)
        } catch (err) {
          if (!(err instanceof pkcs11js.Pkcs11Error) || err.code !== pkcs11js.CKR_SESSION_HANDLE_INVALID) throw err
        }
      }
      return live
    },
    slotOf (label: string) {
      for (const slot of lib.C_GetSlotList(true)) {
        if (lib.C_GetTokenInfo(slot).label.trim() === label) return slot
      }
      throw new Error(`no token ${label}`)
    },
    close () { lib.close() }
  }
}
