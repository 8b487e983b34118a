/** CPU time and memory of a process and its children, from /proc (Linux): what a server costs per request. */
import { readFile } from 'node:fs/promises'

const CLK_TCK = 100 // USER_HZ: /proc/<pid>/stat counts CPU time in 1/100 s

async function ownCpuSeconds (pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => null)
  if (stat === null) return 0
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(f[11]) + Number(f[12])) / CLK_TCK // utime, stime
}

/** The live child processes of `pid`. */
export async function children (pid: number): Promise<number[]> {
  const text = await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => '')
  return text.split(' ').filter((s) => s !== '').map(Number)
}

/** User + system CPU seconds of `pid` and its live descendants (nginx: master and workers). */
export async function treeCpuSeconds (pid: number): Promise<number> {
  let total = await ownCpuSeconds(pid)
  for (const c of await children(pid)) total += await treeCpuSeconds(c)
  return total
}

/** Resident set size (MiB) of `pid` and its live descendants. */
export async function treeRssMiB (pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '')
  let kb = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0)
  for (const c of await children(pid)) kb += (await treeRssMiB(c)) * 1024
  return Math.round(kb / 1024 * 10) / 10
}

/** CPU seconds of `pid` by thread name (Node's main thread, libuv's pool, V8's workers, DuckDB's…). */
export async function threadCpuSeconds (pid: number): Promise<Record<string, number>> {
  const out: Record<string, number> = {}
  const tids = await import('node:fs/promises').then(async (fs) => await fs.readdir(`/proc/${pid}/task`)).catch(() => [] as string[])
  for (const tid of tids) {
    const stat = await readFile(`/proc/${pid}/task/${tid}/stat`, 'utf8').catch(() => null)
    if (stat === null) continue
    const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')).replace(/\d+$/, '').trim() || 'thread'
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    out[name] = (out[name] ?? 0) + (Number(f[11]) + Number(f[12])) / CLK_TCK
  }
  return out
}

/** Peak resident set size (VmHWM, MiB) of `pid` since it started. */
export async function peakRssMiB (pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '')
  return Math.round(Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? 0) / 1024)
}

/**
 * CPU seconds of `pid` and its live descendants by thread, from /proc/<pid>/task/<tid>/schedstat (nanoseconds, not
 * the 10 ms ticks of stat: precise enough for a few hundred requests). Keys: `main` for each process's own thread
 * (Node's event loop; nginx's master and worker), else the thread's name with its number dropped (libuv-worker,
 * V8 DefaultWorke[r], a worker thread's name…).
 */
export async function threadCpuSecondsPrecise (pid: number, out: Record<string, number> = {}): Promise<Record<string, number>> {
  const { readdir } = await import('node:fs/promises')
  const tids = await readdir(`/proc/${pid}/task`).catch(() => [] as string[])
  for (const tid of tids) {
    const [sched, comm] = await Promise.all([
      readFile(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').catch(() => null),
      readFile(`/proc/${pid}/task/${tid}/comm`, 'utf8').catch(() => '')
    ])
    if (sched === null) continue
    const name = tid === String(pid) ? 'main' : (comm.trim().replace(/[\d.]+$/, '').trim() || 'thread')
    out[name] = (out[name] ?? 0) + Number(sched.split(' ')[0]) / 1e9
  }
  for (const c of await children(pid)) await threadCpuSecondsPrecise(c, out)
  return out
}

/**
 * Voluntary context switches of `pid` by thread (same keys as threadCpuSecondsPrecise), from
 * /proc/<pid>/task/<tid>/status: each is a time the thread blocked (went idle in epoll, waited on a lock or a disk)
 * and had to be woken again. Per request, the count of an event loop's wake-ups.
 */
export async function threadWakeups (pid: number, out: Record<string, number> = {}): Promise<Record<string, number>> {
  const { readdir } = await import('node:fs/promises')
  const tids = await readdir(`/proc/${pid}/task`).catch(() => [] as string[])
  for (const tid of tids) {
    const [status, comm] = await Promise.all([
      readFile(`/proc/${pid}/task/${tid}/status`, 'utf8').catch(() => null),
      readFile(`/proc/${pid}/task/${tid}/comm`, 'utf8').catch(() => '')
    ])
    if (status === null) continue
    const name = tid === String(pid) ? 'main' : (comm.trim().replace(/[\d.]+$/, '').trim() || 'thread')
    out[name] = (out[name] ?? 0) + Number(/voluntary_ctxt_switches:\s+(\d+)/.exec(status)?.[1] ?? 0)
  }
  for (const c of await children(pid)) await threadWakeups(c, out)
  return out
}

/**
 * System (kernel) CPU seconds of `pid` and its live descendants by thread (same keys as threadCpuSecondsPrecise),
 * from the stime of /proc/<pid>/task/<tid>/stat: 10 ms ticks, so only a point of thousands of requests reads it
 * well. What a thread's CPU spends in system calls and the kernel's work for it (epoll, eventfd and futex wake-ups,
 * socket writes, fdatasync) against its own code.
 */
export async function threadSysSeconds (pid: number, out: Record<string, number> = {}): Promise<Record<string, number>> {
  const { readdir } = await import('node:fs/promises')
  const tids = await readdir(`/proc/${pid}/task`).catch(() => [] as string[])
  for (const tid of tids) {
    const [stat, comm] = await Promise.all([
      readFile(`/proc/${pid}/task/${tid}/stat`, 'utf8').catch(() => null),
      readFile(`/proc/${pid}/task/${tid}/comm`, 'utf8').catch(() => '')
    ])
    if (stat === null) continue
    const name = tid === String(pid) ? 'main' : (comm.trim().replace(/[\d.]+$/, '').trim() || 'thread')
    out[name] = (out[name] ?? 0) + Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[12]) / CLK_TCK
  }
  for (const c of await children(pid)) await threadSysSeconds(c, out)
  return out
}

/** The ids of `pid`'s threads whose name (comm) is `name`: a worker thread started with that name, for instance. */
export async function threadIdsNamed (pid: number, name: string): Promise<number[]> {
  const { readdir } = await import('node:fs/promises')
  const out: number[] = []
  for (const tid of await readdir(`/proc/${pid}/task`).catch(() => [] as string[])) {
    if ((await readFile(`/proc/${pid}/task/${tid}/comm`, 'utf8').catch(() => '')).trim() === name) out.push(Number(tid))
  }
  return out
}
