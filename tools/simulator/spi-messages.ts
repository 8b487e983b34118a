/**
 * The SPI messages the simulator emits as BCB (Fr 00038166): pacs.002 status reports, admi.002 rejections,
 * pibr.002 echo replies, and pacs.008 forwarded to the payee. Layout per docs/bacen.md §2.7–2.8 and the
 * BCB catalog examples; unsigned here, signed in the SPI profile by the caller.
 */
import { BCB_ISPB, escapeXml, newMessageId, spiDateTime } from '../../core/pix/ids.ts'

/** Catalog versions the simulator writes (docs/bacen.md §2.8). */
const SPI_VERSIONS = Object.freeze({ 'pacs.002': '1.17', 'admi.002': '1.5', 'pibr.002': '1.3' })

export interface BuiltBcbMessage {
  readonly xml: string
  readonly msgId: string
  readonly msgDefIdr: string
}

function envelope (msg: string, version: string, to: string, document: (msgId: string) => string, at: Date): BuiltBcbMessage {
  const msgId = newMessageId(BCB_ISPB)
  const msgDefIdr = `${msg}.spi.${version}`
  const xml = `<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="https://www.bcb.gov.br/pi/${msg}/${version}">
  <AppHdr>
    <Fr><FIId><FinInstnId><Othr><Id>${BCB_ISPB}</Id></Othr></FinInstnId></FIId></Fr>
    <To><FIId><FinInstnId><Othr><Id>${escapeXml(to)}</Id></Othr></FinInstnId></FIId></To>
    <BizMsgIdr>${msgId}</BizMsgIdr>
    <MsgDefIdr>${msgDefIdr}</MsgDefIdr>
    <CreDt>${spiDateTime(at)}</CreDt>
    <Sgntr/>
  </AppHdr>
  <Document>
${document(msgId)}
  </Document>
</Envelope>
`
  return { xml, msgId, msgDefIdr }
}

export interface TxStatus {
  readonly endToEndId: string
  /** ACSC (settled, to the payer), ACCC (credited, to the payee), RJCT. */
  readonly status: 'ACSC' | 'ACCC' | 'RJCT'
  /** ISO reason code for RJCT (e.g. AM05 duplication). */
  readonly reason?: string
}

/** pacs.002 FIToFIPmtStsRpt answering one transaction of a pacs.008. */
export function pacs002 (o: { to: string, originalMsgId: string, originalMsgDefIdr: string, tx: TxStatus, at?: Date }): BuiltBcbMessage {
  const at = o.at ?? new Date()
  const settled = o.tx.status === 'RJCT'
    ? `        <StsRsnInf><Rsn><Cd>${escapeXml(o.tx.reason ?? 'NARR')}</Cd></Rsn></StsRsnInf>\n`
    : `        <FctvIntrBkSttlmDt><DtTm>${spiDateTime(at)}</DtTm></FctvIntrBkSttlmDt>\n`
  return envelope('pacs.002', SPI_VERSIONS['pacs.002'], o.to, (msgId) => `    <FIToFIPmtStsRpt>
      <GrpHdr><MsgId>${msgId}</MsgId><CreDtTm>${spiDateTime(at)}</CreDtTm></GrpHdr>
      <OrgnlGrpInfAndSts><OrgnlMsgId>${escapeXml(o.originalMsgId)}</OrgnlMsgId><OrgnlMsgNmId>${escapeXml(o.originalMsgDefIdr)}</OrgnlMsgNmId></OrgnlGrpInfAndSts>
      <TxInfAndSts>
        <OrgnlEndToEndId>${escapeXml(o.tx.endToEndId)}</OrgnlEndToEndId>
        <TxSts>${o.tx.status}</TxSts>
${settled}        <OrgnlTxRef><IntrBkSttlmDt>${spiDateTime(at).slice(0, 10)}</IntrBkSttlmDt></OrgnlTxRef>
      </TxInfAndSts>
    </FIToFIPmtStsRpt>`, at)
}

export interface Rejection {
  /** RjctgPtyRsn, e.g. "Assinatura XML inválida". */
  readonly reason: string
  /** ErrLctn, e.g. "SignatureValue". */
  readonly location?: string
  /** RsnDesc. */
  readonly description?: string
}

/** BACEN's wording for the rejections the simulator issues (docs/bacen.md §2.6). */
export const REJECTIONS = Object.freeze({
  signature: { reason: 'Assinatura XML inválida', location: 'SignatureValue', description: 'Assinatura não confere com digests ou certificado' },
  senderMismatch: { reason: 'O ISPB do remetente não é o mesmo da Assinatura XML', location: 'AppHdr/Fr' },
  malformed: { reason: 'XML mal formado', location: 'Envelope' }
} satisfies Record<string, Rejection>)

/** admi.002 MessageReject for a message the SPI refused before processing. */
export function admi002 (o: { to: string, reference: string, rejection: Rejection, at?: Date }): BuiltBcbMessage {
  const at = o.at ?? new Date()
  const r = o.rejection
  return envelope('admi.002', SPI_VERSIONS['admi.002'], o.to, () => `    <admi.002.001.01>
      <RltdRef><Ref>${escapeXml(o.reference)}</Ref></RltdRef>
      <Rsn>
        <RjctgPtyRsn>${escapeXml(r.reason)}</RjctgPtyRsn>
        <RjctnDtTm>${spiDateTime(at)}</RjctnDtTm>
${r.location === undefined ? '' : `        <ErrLctn>${escapeXml(r.location)}</ErrLctn>\n`}${r.description === undefined ? '' : `        <RsnDesc>${escapeXml(r.description)}</RsnDesc>\n`}      </Rsn>
    </admi.002.001.01>`, at)
}

/** pibr.002 EchoRpt answering a pibr.001. */
export function pibr002 (o: { to: string, originalMsgId: string, data: string, at?: Date }): BuiltBcbMessage {
  const at = o.at ?? new Date()
  return envelope('pibr.002', SPI_VERSIONS['pibr.002'], o.to, (msgId) => `    <EchoRpt>
      <GrpHdr><MsgId>${msgId}</MsgId><CreDtTm>${spiDateTime(at)}</CreDtTm></GrpHdr>
      <OrgnlGrpInf><OrgnlMsgId>${escapeXml(o.originalMsgId)}</OrgnlMsgId></OrgnlGrpInf>
      <EchoTxInf><OrgnlData>${escapeXml(o.data)}</OrgnlData></EchoTxInf>
    </EchoRpt>`, at)
}

/**
 * A pacs.008 as the SPI forwards it to the payee: the payer's Document unchanged, under a new AppHdr from BCB.
 * `documentXml` is the Document element's source text and `namespace` the Envelope's default namespace.
 */
export function forwardedPacs008 (o: { to: string, namespace: string, msgDefIdr: string, documentXml: string, at?: Date }): BuiltBcbMessage {
  const at = o.at ?? new Date()
  const msgId = newMessageId(BCB_ISPB)
  const xml = `<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="${escapeXml(o.namespace)}">
  <AppHdr>
    <Fr><FIId><FinInstnId><Othr><Id>${BCB_ISPB}</Id></Othr></FinInstnId></FIId></Fr>
    <To><FIId><FinInstnId><Othr><Id>${escapeXml(o.to)}</Id></Othr></FinInstnId></FIId></To>
    <BizMsgIdr>${msgId}</BizMsgIdr>
    <MsgDefIdr>${escapeXml(o.msgDefIdr)}</MsgDefIdr>
    <CreDt>${spiDateTime(at)}</CreDt>
    <Sgntr/>
  </AppHdr>
  ${o.documentXml}
</Envelope>
`
  return { xml, msgId, msgDefIdr: o.msgDefIdr }
}
