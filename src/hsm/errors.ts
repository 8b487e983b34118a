/**
 * PKCS#11 failures in pix-proxy's terms: the CKR_* code of an error thrown by pkcs11js or graphene, its name, and
 * the catalogue error it maps to. Matched by code, never by message text.
 */
import pkcs11js from 'pkcs11js'
import { Errors, PixProxyError } from '../../core/errors.ts'

const { CKR_PIN_INCORRECT, CKR_PIN_LOCKED } = pkcs11js

const CKR_NAMES = new Map<number, string>()
for (const [name, value] of Object.entries(pkcs11js)) {
  if (name.startsWith('CKR_') && typeof value === 'number' && !CKR_NAMES.has(value)) CKR_NAMES.set(value, name)
}

/** The CKR_* code carried by an error from pkcs11js/graphene (`Pkcs11Error#code`), or undefined for any other error. */
export function ckrCode (err: unknown): number | undefined {
  return err instanceof pkcs11js.Pkcs11Error ? err.code : undefined
}

/** The symbolic name of a CKR_* code, e.g. `CKR_PIN_INCORRECT`. */
export function ckrName (code: number): string {
  return CKR_NAMES.get(code) ?? `CKR_0x${code.toString(16).padStart(8, '0')}`
}

/** Maps an error thrown by a PKCS#11 call to the pix-proxy catalogue, by CKR_* code. */
export function hsmError (err: unknown, op: string, tokenLabel: string): PixProxyError {
  if (err instanceof PixProxyError) return err
  const code = ckrCode(err)
  if (code === CKR_PIN_INCORRECT) return new PixProxyError(Errors.HSM_PIN_INCORRECT, [tokenLabel], { cause: err })
  if (code === CKR_PIN_LOCKED) return new PixProxyError(Errors.HSM_PIN_LOCKED, [tokenLabel], { cause: err })
  const reason = code !== undefined ? ckrName(code) : err instanceof Error ? err.message : String(err)
  return new PixProxyError(Errors.HSM_OPERATION, [op, reason], { cause: err })
}
