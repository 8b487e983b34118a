/**
 * The files `pix-proxy load --pki DIR` reads, in the layout of a simulator PKI directory (`pix-proxy simulator
 * --dir`, tools/simulator/pki.ts): `ca.pem` (the CA of the simulator's TLS certificate), `bcb-signing.pem` and
 * `bcb-signing-expired.pem` (BACEN's signing certificates, to verify answers) and `participants/<ISPB>/` with
 * `tls.pem`, `tls.key`, `signing.pem`, `signing.key` (a participant's mTLS and signing identities).
 *
 * The demo (tools/demo/stack.ts) keeps its simulator's PKI in memory and writes these files into `<demo dir>/bacen/`
 * (the directory docker/local-init.sh fills the same way), so `--pki` also takes a demo directory.
 * Private keys are written 0600; they are test keys made at run time and never committed (.local/ is ignored).
 */
import { existsSync } from 'node:fs'
import { chmod, mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { SimulatorPki } from '../simulator/pki.ts'

/** Where a demo directory keeps the simulator PKI files (tools/demo/stack.ts). */
const DEMO_PKI_SUBDIR = 'bacen'

async function writeKey (file: string, pem: string): Promise<void> {
  await writeFile(file, pem, { mode: 0o600 })
  // writeFile's mode applies only when it creates the file.
  await chmod(file, 0o600)
}

/**
 * Writes what `load --pki` needs of `pki` into `dir`: the CA and BACEN signing certificates, and the identities of
 * `ispbs` (each a participant of `pki`). Rewrites the files when they exist: they describe the running simulator.
 */
export async function writeLoadPki (dir: string, pki: SimulatorPki, ispbs: readonly string[]): Promise<void> {
  await mkdir(dir, { recursive: true })
  await writeFile(join(dir, 'ca.pem'), pki.ca.certPem)
  await writeFile(join(dir, 'bcb-signing.pem'), pki.bcbSigning.certPem)
  await writeFile(join(dir, 'bcb-signing-expired.pem'), pki.bcbExpired.certPem)
  for (const ispb of ispbs) {
    const id = pki.participant(ispb)
    const p = join(dir, 'participants', ispb)
    await mkdir(p, { recursive: true, mode: 0o700 })
    await writeFile(join(p, 'tls.pem'), id.tls.certPem)
    await writeKey(join(p, 'tls.key'), id.tls.keyPem)
    await writeFile(join(p, 'signing.pem'), id.signing.certPem)
    await writeKey(join(p, 'signing.key'), id.signing.keyPem)
  }
}

/** `--pki DIR`: DIR itself when it is a simulator PKI directory, its `bacen/` when it is a demo directory. */
export function resolvePkiDir (dir: string): string | undefined {
  if (existsSync(join(dir, 'ca.pem'))) return dir
  const demo = join(dir, DEMO_PKI_SUBDIR)
  if (existsSync(join(demo, 'ca.pem'))) return demo
  return undefined
}
