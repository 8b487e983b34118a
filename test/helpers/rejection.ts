import { PixProxyError } from '../../core/errors.ts'

/** The PixProxyError `p` rejects with; anything else (another error, or no rejection at all) fails the test. */
export async function rejection (p: Promise<unknown>): Promise<PixProxyError> {
  try {
    await p
  } catch (err) {
    if (err instanceof PixProxyError) return err
    throw err
  }
  throw new Error('expected a rejection')
}
