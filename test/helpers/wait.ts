/** Polling for observable state, so tests wait on what happened rather than on how long things usually take. */

/** Resolves true once `check` holds (it may be async), false after `timeoutMs`. */
export async function waitFor (check: () => boolean | Promise<boolean>, timeoutMs = 5_000, intervalMs = 20): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  while (!await check()) {
    if (Date.now() > deadline) return false
    await new Promise((resolve) => setTimeout(resolve, intervalMs).unref())
  }
  return true
}
