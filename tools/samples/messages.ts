/**
 * Builders of realistic, synthetic PIX messages with fresh identifiers, for the demo, the simulator's answers and
 * load tests. Field layout follows docs/bacen.md §1.4 (DICT) and §2.7–2.8 (SPI); names and documents are made up.
 */
import { randomBytes, randomUUID } from 'node:crypto'
import { alnum, BCB_ISPB, escapeXml, newEndToEndId, newMessageId, spiDateTime } from '../../core/pix/ids.ts'

function appHdr (from: string, to: string, msgId: string, msgDef: string, at: Date): string {
  return `  <AppHdr>
    <Fr><FIId><FinInstnId><Othr><Id>${from}</Id></Othr></FinInstnId></FIId></Fr>
    <To><FIId><FinInstnId><Othr><Id>${to}</Id></Othr></FinInstnId></FIId></To>
    <BizMsgIdr>${msgId}</BizMsgIdr>
    <MsgDefIdr>${msgDef}</MsgDefIdr>
    <CreDt>${spiDateTime(at)}</CreDt>
    <Sgntr/>
  </AppHdr>
`
}

export interface Party {
  readonly name: string
  /** CPF (11 digits) or CNPJ (14). */
  readonly taxId: string
  readonly ispb: string
  readonly branch: string
  readonly account: string
  readonly accountType?: 'CACC' | 'SVGS' | 'TRAN' | 'SLRY'
}

export const SAMPLE_PAYER: Party = { name: 'Maria da Conceição Souza', taxId: '52998224725', ispb: '99999004', branch: '0001', account: '123456789', accountType: 'CACC' }
export const SAMPLE_PAYEE: Party = { name: 'João Pedro Araújo', taxId: '11144477735', ispb: '99999010', branch: '0042', account: '987654321', accountType: 'CACC' }

export interface Pacs008Options {
  readonly from?: string
  readonly payer?: Party
  readonly payee?: Party
  /** Amounts in BRL, one credit transfer each (1–10). */
  readonly amounts?: readonly number[]
  readonly remittance?: string
  readonly at?: Date
  readonly version?: string
}

export interface BuiltSpiMessage {
  readonly xml: string
  readonly msgId: string
  readonly endToEndIds: readonly string[]
}

/** An unsigned pacs.008 (FIToFICstmrCdtTrf) from `from` to SPI, `<Sgntr/>` ready for the signer. */
export function pacs008 (o: Pacs008Options = {}): BuiltSpiMessage {
  const payer = o.payer ?? SAMPLE_PAYER
  const payee = o.payee ?? SAMPLE_PAYEE
  const from = o.from ?? payer.ispb
  const at = o.at ?? new Date()
  const amounts = o.amounts ?? [150.75]
  const version = o.version ?? '1.13'
  const msgId = newMessageId(from)
  const e2e = amounts.map(() => newEndToEndId(from, at))
  const txs = amounts.map((amount, i) => `      <CdtTrfTxInf>
        <PmtId><EndToEndId>${e2e[i] as string}</EndToEndId></PmtId>
        <IntrBkSttlmAmt Ccy="BRL">${amount.toFixed(2)}</IntrBkSttlmAmt>
        <AccptncDtTm>${spiDateTime(at)}</AccptncDtTm>
        <ChrgBr>SLEV</ChrgBr>
        <MndtRltdInf><Tp><LclInstrm><Prtry>MANU</Prtry></LclInstrm></Tp></MndtRltdInf>
        <Dbtr><Nm>${escapeXml(payer.name)}</Nm><Id><PrvtId><Othr><Id>${payer.taxId}</Id></Othr></PrvtId></Id></Dbtr>
        <DbtrAcct><Id><Othr><Id>${payer.account}</Id><Issr>${payer.branch}</Issr></Othr></Id><Tp><Cd>${payer.accountType ?? 'CACC'}</Cd></Tp></DbtrAcct>
        <DbtrAgt><FinInstnId><ClrSysMmbId><MmbId>${payer.ispb}</MmbId></ClrSysMmbId></FinInstnId></DbtrAgt>
        <CdtrAgt><FinInstnId><ClrSysMmbId><MmbId>${payee.ispb}</MmbId></ClrSysMmbId></FinInstnId></CdtrAgt>
        <Cdtr><Id><PrvtId><Othr><Id>${payee.taxId}</Id></Othr></PrvtId></Id></Cdtr>
        <CdtrAcct><Id><Othr><Id>${payee.account}</Id><Issr>${payee.branch}</Issr></Othr></Id><Tp><Cd>${payee.accountType ?? 'CACC'}</Cd></Tp></CdtrAcct>
        <Purp><Cd>IPAY</Cd></Purp>
        <RmtInf><Ustrd>${escapeXml(o.remittance ?? 'Pagamento de aluguel — São Paulo')}</Ustrd></RmtInf>
      </CdtTrfTxInf>
`).join('')
  const xml = `<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="https://www.bcb.gov.br/pi/pacs.008/${version}">
${appHdr(from, BCB_ISPB, msgId, `pacs.008.spi.${version}`, at)}  <Document>
    <FIToFICstmrCdtTrf>
      <GrpHdr>
        <MsgId>${msgId}</MsgId>
        <CreDtTm>${spiDateTime(at)}</CreDtTm>
        <NbOfTxs>${amounts.length}</NbOfTxs>
        <SttlmInf><SttlmMtd>CLRG</SttlmMtd></SttlmInf>
        <PmtTpInf><InstrPrty>HIGH</InstrPrty><SvcLvl><Prtry>PAGPRI</Prtry></SvcLvl></PmtTpInf>
      </GrpHdr>
${txs}    </FIToFICstmrCdtTrf>
  </Document>
</Envelope>
`
  return { xml, msgId, endToEndIds: e2e }
}

/** An unsigned pibr.001 echo request (the connectivity test). */
export function pibr001 (o: { from?: string, data?: string, at?: Date } = {}): BuiltSpiMessage {
  const from = o.from ?? SAMPLE_PAYER.ispb
  const at = o.at ?? new Date()
  const msgId = newMessageId(from)
  const xml = `<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="https://www.bcb.gov.br/pi/pibr.001/1.3">
${appHdr(from, BCB_ISPB, msgId, 'pibr.001.spi.1.3', at)}  <Document>
    <EchoReq>
      <GrpHdr><MsgId>${msgId}</MsgId><CreDtTm>${spiDateTime(at)}</CreDtTm></GrpHdr>
      <EchoTxInf><Data>${escapeXml(o.data ?? 'ping')}</Data></EchoTxInf>
    </EchoReq>
  </Document>
</Envelope>
`
  return { xml, msgId, endToEndIds: [] }
}

export interface EntryOptions {
  readonly key?: string
  readonly keyType?: 'CPF' | 'CNPJ' | 'PHONE' | 'EMAIL' | 'EVP'
  readonly owner?: Party
  readonly requestId?: string
  readonly openingDate?: Date
}

export interface BuiltDictMessage {
  readonly xml: string
  readonly requestId: string
  readonly key: string
}

/** An unsigned DICT CreateEntryRequest (the signer inserts ds:Signature as the first child). */
export function createEntryRequest (o: EntryOptions = {}): BuiltDictMessage {
  const owner = o.owner ?? SAMPLE_PAYER
  const keyType = o.keyType ?? 'EMAIL'
  const key = o.key ?? `cliente.${alnum(10).toLowerCase()}@example.com.br`
  const requestId = o.requestId ?? randomUUID()
  const opening = (o.openingDate ?? new Date('2020-11-03T03:00:00.000Z')).toISOString()
  const xml = `<?xml version="1.0" encoding="UTF-8"?>
<CreateEntryRequest>
  <Entry>
    <Key>${escapeXml(key)}</Key>
    <KeyType>${keyType}</KeyType>
    <Account>
      <Participant>${owner.ispb}</Participant>
      <Branch>${owner.branch}</Branch>
      <AccountNumber>${owner.account}</AccountNumber>
      <AccountType>${owner.accountType ?? 'CACC'}</AccountType>
      <OpeningDate>${opening}</OpeningDate>
    </Account>
    <Owner>
      <Type>${owner.taxId.length === 11 ? 'NATURAL_PERSON' : 'LEGAL_PERSON'}</Type>
      <TaxIdNumber>${owner.taxId}</TaxIdNumber>
      <Name>${escapeXml(owner.name)}</Name>
    </Owner>
  </Entry>
  <Reason>USER_REQUESTED</Reason>
  <RequestId>${requestId}</RequestId>
</CreateEntryRequest>
`
  return { xml, requestId, key }
}

/** An unsigned DICT CreateClaimRequest (portability by default). */
export function createClaimRequest (o: EntryOptions & { type?: 'OWNERSHIP' | 'PORTABILITY' } = {}): BuiltDictMessage {
  const claimer = o.owner ?? SAMPLE_PAYEE
  const key = o.key ?? `+5511${(10_000_000 + (randomBytes(4).readUInt32BE() % 89_999_999)).toString()}`
  const requestId = o.requestId ?? randomUUID()
  const xml = `<?xml version="1.0" encoding="UTF-8"?>
<CreateClaimRequest>
  <Claim>
    <Type>${o.type ?? 'PORTABILITY'}</Type>
    <Key>${escapeXml(key)}</Key>
    <KeyType>${o.keyType ?? 'PHONE'}</KeyType>
    <ClaimerAccount>
      <Participant>${claimer.ispb}</Participant>
      <Branch>${claimer.branch}</Branch>
      <AccountNumber>${claimer.account}</AccountNumber>
      <AccountType>${claimer.accountType ?? 'CACC'}</AccountType>
      <OpeningDate>2021-01-04T03:00:00.000Z</OpeningDate>
    </ClaimerAccount>
    <Claimer>
      <Type>${claimer.taxId.length === 11 ? 'NATURAL_PERSON' : 'LEGAL_PERSON'}</Type>
      <TaxIdNumber>${claimer.taxId}</TaxIdNumber>
      <Name>${escapeXml(claimer.name)}</Name>
    </Claimer>
  </Claim>
  <RequestId>${requestId}</RequestId>
</CreateClaimRequest>
`
  return { xml, requestId, key }
}
