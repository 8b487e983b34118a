/**
 * Regression: SoftHSM2 initialised without CKF_OS_LOCKING_OK crashes the process (SIGSEGV/SIGABRT) under
 * concurrent signs on several sessions; measured 6 crashes in 6 runs of this file with the flag removed from
 * Pkcs11SessionPool.open (src/hsm/session-pool.ts). With the flag, 2000 signs on 4 sessions complete and verify. A crash fails this file.
 */
import t from 'tap'
import { verify } from 'node:crypto'
import { Pkcs11KeyStore } from '../../src/hsm/pkcs11.ts'
import { setupSoftHsm } from '../helpers/softhsm.ts'

const hsm = await setupSoftHsm(t, { keyLabels: ['pix-sign'] })

t.test('2000 signs, 400 at a time, on a pool of 4 sessions', async (t) => {
  const store = await Pkcs11KeyStore.open({ modulePath: hsm.modulePath, tokenLabel: hsm.tokenLabel, pin: hsm.pin, poolSize: 4, schedule: () => () => {} })
  // No acquire deadline is ever armed (schedule is a no-op): 400 queued signs wait as long as a loaded machine needs.
  t.teardown(() => store.close())
  const signer = await store.signer('pix-sign')
  for (let wave = 0; wave < 5; wave++) {
    const inputs = Array.from({ length: 400 }, (_, i) => Buffer.from(`wave ${wave} message ${i}`))
    const sigs = await Promise.all(inputs.map((d) => signer.sign(d)))
    t.ok(sigs.every((s, i) => verify('sha256', inputs[i] as Buffer, signer.publicKey, s)), `wave ${wave}: 400 signatures verify`)
  }
  t.same(store.stats(), { size: 4, idle: 4, busy: 0, waiting: 0, replaced: 0 })
})
