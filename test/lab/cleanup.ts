// Removal of everything the lab makes: processes, container cgroups, mounts,
// network namespaces and directories. Synchronous on purpose, so that it can
// also run from a signal handler. Every step tolerates things that are
// already gone, and every wait is bounded.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { processAlive, runSync, sleepSync } from './proc';

/** Every lab host keeps its files under LAB_ROOT/<host name>. */
export const LAB_ROOT = process.env.WEFT_LAB_ROOT ?? '/tmp/weft-lab';

/** Parent cgroup (under every hierarchy) of the containers of lab hosts. */
export const LAB_CGROUP = process.env.WEFT_LAB_CGROUP ?? 'weftlab';

export function hostDirOf(name: string): string {
  return path.join(LAB_ROOT, name);
}

interface MountInfo {
  mountPoint: string;
  mountOpts: string;
  fsType: string;
  source: string;
  superOpts: string;
}

function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
}

export function readMountInfo(file = '/proc/self/mountinfo'): MountInfo[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  const out: MountInfo[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const [pre, post] = line.split(' - ');
    if (!pre || !post) continue;
    const f = pre.split(' ');
    const g = post.split(' ');
    out.push({
      mountPoint: unescapeMount(f[4] ?? ''),
      mountOpts: f[5] ?? '',
      fsType: g[0] ?? '',
      source: unescapeMount(g[1] ?? ''),
      superOpts: g[2] ?? '',
    });
  }
  return out;
}

/** Mount points of the cgroup hierarchies (v1 and v2) in this mount namespace. */
export function cgroupMounts(): MountInfo[] {
  return readMountInfo().filter((m) => m.fsType === 'cgroup' || m.fsType === 'cgroup2');
}

function listProcs(): number[] {
  let entries: string[] = [];
  try {
    entries = fs.readdirSync('/proc');
  } catch {
    return [];
  }
  return entries.filter((e) => /^\d+$/.test(e)).map(Number);
}

function cmdlineOf(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
  } catch {
    return '';
  }
}

function protectedPids(): Set<number> {
  const s = new Set<number>([1, process.pid, process.ppid]);
  // never kill an ancestor of ours (the test runner)
  let pid = process.ppid;
  for (let i = 0; i < 64 && pid > 1; i++) {
    s.add(pid);
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      pid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    } catch {
      break;
    }
  }
  return s;
}

/** Pids whose command line contains one of the given strings. */
export function pidsByCmdline(needles: string[]): number[] {
  if (needles.length === 0) return [];
  const skip = protectedPids();
  return listProcs().filter((pid) => {
    if (skip.has(pid)) return false;
    const c = cmdlineOf(pid);
    return c !== '' && needles.some((n) => c.includes(n));
  });
}

/** Pids whose network namespace is the named one. */
export function pidsInNetns(name: string): number[] {
  const r = runSync('ip', ['netns', 'pids', name], 5_000);
  if (r.code !== 0) return [];
  const skip = protectedPids();
  return r.stdout.split(/\s+/).filter(Boolean).map(Number).filter((p) => !skip.has(p));
}

/** Lab container cgroup directories (`<hierarchy>/weftlab/<host>`) whose host name matches. */
function labCgroupDirs(match: (host: string) => boolean): string[] {
  const dirs: string[] = [];
  for (const m of cgroupMounts()) {
    const base = path.join(m.mountPoint, LAB_CGROUP);
    let names: string[] = [];
    try {
      names = fs.readdirSync(base);
    } catch {
      continue;
    }
    for (const n of names) {
      const d = path.join(base, n);
      if (match(n) && isDir(d)) dirs.push(d);
    }
  }
  return dirs;
}

function isDir(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

function walkDirsDepthFirst(dir: string, out: string[] = [], depth = 0): string[] {
  if (depth > 16) return out;
  let entries: fs.Dirent[] = [];
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true });
  } catch {
    return out;
  }
  for (const e of entries) if (e.isDirectory()) walkDirsDepthFirst(path.join(dir, e.name), out, depth + 1);
  out.push(dir);
  return out;
}

function cgroupPids(dirs: string[]): number[] {
  const pids = new Set<number>();
  for (const d of dirs) {
    for (const sub of walkDirsDepthFirst(d)) {
      try {
        for (const l of fs.readFileSync(path.join(sub, 'cgroup.procs'), 'utf8').split('\n')) if (l) pids.add(Number(l));
      } catch {
        /* gone */
      }
    }
  }
  const skip = protectedPids();
  return [...pids].filter((p) => !skip.has(p));
}

function removeCgroupDirs(dirs: string[]): void {
  for (const d of dirs) {
    for (const sub of walkDirsDepthFirst(d)) {
      try {
        fs.rmdirSync(sub);
      } catch {
        /* busy or gone */
      }
    }
  }
  // drop the weftlab parents when they are empty
  for (const m of cgroupMounts()) {
    try {
      fs.rmdirSync(path.join(m.mountPoint, LAB_CGROUP));
    } catch {
      /* not empty or gone */
    }
  }
}

/** SIGKILLs the pids and waits (bounded) until they are gone. Returns those still alive. */
export function killAndWaitSync(pids: number[], timeoutMs = 5_000): number[] {
  for (const p of pids) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  const deadline = Date.now() + timeoutMs;
  let alive = pids.filter(processAlive);
  while (alive.length > 0 && Date.now() < deadline) {
    sleepSync(50);
    alive = alive.filter(processAlive);
  }
  return alive;
}

/** Lazily unmounts every mount at or below `dir` (deepest first). */
export function unmountUnder(dir: string): void {
  const d = dir.replace(/\/+$/, '');
  for (let round = 0; round < 4; round++) {
    const mps = readMountInfo()
      .map((m) => m.mountPoint)
      .filter((mp) => mp === d || mp.startsWith(d + '/'))
      .sort((a, b) => b.length - a.length);
    if (mps.length === 0) return;
    for (const mp of mps) runSync('umount', ['-l', mp], 5_000);
  }
}

export function netnsNames(): string[] {
  try {
    return fs.readdirSync('/run/netns');
  } catch {
    return [];
  }
}

export function deleteNetnsSync(name: string): void {
  const p = path.join('/run/netns', name);
  if (!fs.existsSync(p)) return;
  runSync('ip', ['netns', 'del', name], 5_000);
  if (fs.existsSync(p)) {
    runSync('umount', ['-l', p], 5_000);
    try {
      fs.unlinkSync(p);
    } catch {
      /* gone */
    }
  }
}

export function removeDirSync(dir: string): void {
  for (let i = 0; i < 5; i++) {
    try {
      fs.rmSync(dir, { recursive: true, force: true, maxRetries: 2 });
      return;
    } catch {
      unmountUnder(dir);
      sleepSync(100);
    }
  }
}

export interface SweepReport {
  netns: string[];
  killed: number[];
  stubborn: number[];
  dirs: string[];
}

/**
 * Removes every trace of lab hosts whose name matches: processes (by command
 * line mentioning the host dir, by network namespace, by container cgroup),
 * mounts under the host dirs, cgroups, namespaces and directories.
 */
export function sweepSync(match: (name: string) => boolean, cmdlineNeedles: string[]): SweepReport {
  const report: SweepReport = { netns: [], killed: [], stubborn: [], dirs: [] };
  const nsNames = netnsNames().filter(match);
  let dirNames: string[] = [];
  try {
    dirNames = fs.readdirSync(LAB_ROOT).filter(match);
  } catch {
    /* no lab root */
  }
  const cgDirs = labCgroupDirs(match);

  for (let round = 0; round < 3; round++) {
    const pids = new Set<number>([
      ...pidsByCmdline(cmdlineNeedles),
      ...nsNames.flatMap(pidsInNetns),
      ...cgroupPids(cgDirs),
    ]);
    if (pids.size === 0) break;
    report.killed.push(...pids);
    report.stubborn = killAndWaitSync([...pids]);
  }
  for (const d of dirNames) unmountUnder(path.join(LAB_ROOT, d));
  removeCgroupDirs(cgDirs);
  for (const n of nsNames) deleteNetnsSync(n);
  for (const d of dirNames) removeDirSync(path.join(LAB_ROOT, d));
  report.netns = nsNames;
  report.dirs = dirNames;
  return report;
}

/** Sweeps exactly one host (its namespace, processes, cgroups, mounts and dir). */
export function sweepHostSync(name: string): SweepReport {
  const dir = hostDirOf(name);
  return sweepSync((n) => n === name, [dir + '/', dir + ' ']);
}

/**
 * The global safety net: removes namespaces whose name starts with `prefix`
 * and kills processes (dockerd, containerd, shims, weft, etcd...) whose
 * command line mentions a lab dir of that prefix, processes inside those
 * namespaces and containers of those hosts. Call it in beforeAll (leftovers of
 * a crashed run) and afterAll.
 */
export function cleanupLabLeftoversSync(prefix: string): SweepReport {
  if (!prefix || prefix.length < 3) throw new Error(`cleanupLabLeftovers: refusing a short prefix ${JSON.stringify(prefix)}`);
  return sweepSync((n) => n.startsWith(prefix), [path.join(LAB_ROOT, prefix)]);
}

export async function cleanupLabLeftovers(prefix: string): Promise<SweepReport> {
  return cleanupLabLeftoversSync(prefix);
}
