/**
 * Key generation on a PKCS#11 token: an administrative operation (`pix-proxy hsm init`, tests), never the request
 * path, so it lives with the token set-up rather than in the runtime key store (src/hsm/pkcs11.ts), which lends it a
 * logged-in read/write session (adminSession).
 */
import { randomBytes } from 'node:crypto'
import type { KeyObject } from 'node:crypto'
import { KeyGenMechanism, KeyType } from 'graphene-pk11'
import type { ITemplate, SessionObject } from 'graphene-pk11'
import { Errors, PixProxyError } from '../../core/errors.ts'
import { readRsaPublic } from '../../src/hsm/pkcs11.ts'
import type { Pkcs11KeyStore } from '../../src/hsm/pkcs11.ts'

/**
 * Generates an RSA key pair as token objects: the private key sensitive, never extractable, for signing only; both
 * halves share `label` and CKA_ID (`id`, default 16 random bytes). Refuses a label already in use.
 */
export async function generateRsaKeyPair (store: Pkcs11KeyStore, label: string, opts: { id?: Buffer, modulusBits?: number } = {}): Promise<{ id: Buffer, publicKey: KeyObject }> {
  const id = opts.id ?? randomBytes(16)
  const modulusBits = opts.modulusBits ?? 2048
  if (!Number.isSafeInteger(modulusBits) || modulusBits < 2048) throw new PixProxyError(Errors.CONFIG_INVALID, [`modulusBits must be at least 2048, got ${modulusBits}`])
  return await store.adminSession('C_GenerateKeyPair', async (session) => {
    if (session.find({ label }).length > 0) throw new PixProxyError(Errors.HSM_KEY_EXISTS, [label, store.tokenLabel])
    const publicTemplate: ITemplate = {
      keyType: KeyType.RSA,
      token: true,
      private: false,
      label,
      id,
      verify: true,
      encrypt: false,
      wrap: false,
      modulusBits,
      publicExponent: Buffer.from([1, 0, 1])
    }
    const privateTemplate: ITemplate = {
      keyType: KeyType.RSA,
      token: true,
      private: true,
      label,
      id,
      sign: true,
      decrypt: false,
      unwrap: false,
      derive: false,
      sensitive: true,
      extractable: false
    }
    const pair = await new Promise<{ publicKey: SessionObject }>((resolve, reject) => {
      session.generateKeyPair(KeyGenMechanism.RSA, publicTemplate, privateTemplate, (err, keys) => {
        if (err !== null || keys === null) reject(err ?? new Error('C_GenerateKeyPair returned no keys'))
        else resolve(keys)
      })
    })
    const publicKey = readRsaPublic(pair.publicKey)
    if (publicKey === undefined) throw new PixProxyError(Errors.HSM_KEY_UNSUPPORTED, [label, store.tokenLabel, 'the new public key has no readable modulus'])
    return { id, publicKey }
  })
}
