/** Polling for observable state, so tests wait on what happened rather than on how long things usually take. */

/**
 * Resolves true once `check` holds (it may be async), false after `timeoutMs`. The default bound is generous on
 * purpose: it only decides how long a test that is already failing takes to say so, never whether a slow (loaded)
 * machine passes. Do not use it to show that something does NOT happen.
 */
export async function waitFor (check: () => boolean | Promise<boolean>, timeoutMs = 30_000, intervalMs = 20): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  while (!await check()) {
    if (Date.now() > deadline) return false
    // Not unref'd: a wait is pending work; with nothing else keeping the loop alive an unref'd timer let the test
    // process exit in the middle of it (tap then reports the test as never finished).
    await new Promise((resolve) => setTimeout(resolve, intervalMs))
  }
  return true
}
