import t from 'tap'
import { createTestPki } from '../../core/pki/ca.ts'
import { SoftwareSigner } from '../../core/signer.ts'
import { XmlSigner } from '../../core/xmldsig/sign.ts'
import { pacs008 } from '../../tools/samples/messages.ts'

const pki = createTestPki()
const day = 86_400_000
const expired = pki.issue('CN=expired signer, O=Banco Exemplo S.A., C=BR', { notBefore: new Date(Date.now() - 10 * day), notAfter: new Date(Date.now() - day) })
const future = pki.issue('CN=future signer, O=Banco Exemplo S.A., C=BR', { notBefore: new Date(Date.now() + day), notAfter: new Date(Date.now() + 10 * day) })

t.test('the signer refuses a certificate outside its validity window, with its own code', async (t) => {
  for (const id of [expired, future]) {
    const s = new XmlSigner({ signer: SoftwareSigner.fromKeyObject(id.key!), certificate: id.certificate })
    await t.rejects(s.sign(pacs008().xml, 'spi'), { code: 'PIXPROXY_ERR_SIGNING_CERT_NOT_VALID', statusCode: 503 })
    t.throws(() => s.assertCertificateValid(), { code: 'PIXPROXY_ERR_SIGNING_CERT_NOT_VALID' })
  }
})

t.test('the validity check follows the injected clock, and an invalid clock is refused', async (t) => {
  const at = (ms: number): XmlSigner => new XmlSigner({ signer: SoftwareSigner.fromKeyObject(expired.key!), certificate: expired.certificate, clock: () => new Date(ms) })
  const inside = (expired.certificate.notBefore.getTime() + expired.certificate.notAfter.getTime()) / 2
  t.match(await at(inside).sign(pacs008().xml, 'spi'), /<ds:SignatureValue>/)
  await t.rejects(at(expired.certificate.notAfter.getTime() + 1).sign(pacs008().xml, 'spi'), { code: 'PIXPROXY_ERR_SIGNING_CERT_NOT_VALID' })
  await t.rejects(at(NaN).sign(pacs008().xml, 'spi'), { code: 'PIXPROXY_ERR_SIGNING_CERT_NOT_VALID', message: /invalid date/ })
})
