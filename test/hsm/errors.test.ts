import t from 'tap'
import pkcs11js from 'pkcs11js'
import { Errors, PixProxyError } from '../../core/errors.ts'
import { ckrCode, ckrName, hsmError } from '../../src/hsm/errors.ts'

t.test('PKCS#11 errors map to the catalogue by CKR_* code', async (t) => {
  const e = (name: string): Error => new pkcs11js.Pkcs11Error(name, (pkcs11js as unknown as Record<string, number>)[name], 'C_Test')
  t.equal(hsmError(e('CKR_PIN_INCORRECT'), 'C_Login', 'tok').code, Errors.HSM_PIN_INCORRECT.code)
  t.equal(hsmError(e('CKR_PIN_LOCKED'), 'C_Login', 'tok').code, Errors.HSM_PIN_LOCKED.code)
  const other = hsmError(e('CKR_DEVICE_ERROR'), 'C_Sign', 'tok')
  t.equal(other.code, Errors.HSM_OPERATION.code)
  t.equal(other.message, 'HSM operation C_Sign failed: CKR_DEVICE_ERROR')
  // The code decides, not the message text.
  t.equal(hsmError(new pkcs11js.Pkcs11Error('CKR_DEVICE_ERROR', pkcs11js.CKR_PIN_LOCKED), 'C_Login', 'tok').code, Errors.HSM_PIN_LOCKED.code)
  t.equal(ckrCode(new Error('CKR_PIN_INCORRECT')), undefined, 'a plain error mentioning a CKR name is not a PKCS#11 error')
  t.equal(ckrName(pkcs11js.CKR_SESSION_HANDLE_INVALID), 'CKR_SESSION_HANDLE_INVALID')
  t.equal(ckrName(0x8ffffff1), 'CKR_0x8ffffff1')
  const keep = new PixProxyError(Errors.HSM_POOL_CLOSED)
  t.equal(hsmError(keep, 'x', 'tok'), keep)
})
