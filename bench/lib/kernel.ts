// What a real host's kernel holds for a weft network, read from outside weft:
// counts of the VXLAN device's FDB and permanent neighbour entries (iproute2
// in weft's per-network namespace), and the moment each entry appears or goes
// (`ip -ts monitor neigh` in that namespace: the kernel's notifications,
// stamped when iproute2 reads them).
import * as fs from 'node:fs';
import type { ChildProcess } from 'node:child_process';
import * as readline from 'node:readline';
import { run, type WeftProcess } from '../../test/lab/host';
import { spawnTracked, weftNetns } from './lab';

export interface PeerCounts {
  /** FDB entries with a destination and a MAC (remote endpoints) */
  fdb: number;
  /** all-zero FDB entries (flood to a host) */
  flood: number;
  /** permanent neighbours (remote endpoints' addresses) */
  neigh: number;
}

/** Counts of a host's entries for one network; undefined when its namespace or device is not there (yet). */
export async function peerCounts(w: WeftProcess, clusterId: string): Promise<PeerCounts | undefined> {
  const { ns, vx } = weftNetns(w, clusterId);
  if (!fs.existsSync(ns)) return undefined;
  const [f, n] = await Promise.all([
    run('nsenter', [`--net=${ns}`, 'bridge', 'fdb', 'show', 'dev', vx], { timeoutMs: 20_000 }),
    run('nsenter', [`--net=${ns}`, 'ip', 'neigh', 'show', 'dev', vx, 'nud', 'permanent'], { timeoutMs: 20_000 }),
  ]);
  if (f.code !== 0 || n.code !== 0) return undefined;
  let fdb = 0;
  let flood = 0;
  let i = 0;
  const out = f.stdout;
  // line by line without splitting 10,000 lines into an array
  while (i < out.length) {
    let j = out.indexOf('\n', i);
    if (j < 0) j = out.length;
    const l = out.slice(i, j);
    if (l.includes(' dst ')) {
      if (l.startsWith('00:00:00:00:00:00')) flood++;
      else fdb++;
    }
    i = j + 1;
  }
  let neigh = 0;
  for (let k = n.stdout.indexOf('lladdr'); k >= 0; k = n.stdout.indexOf('lladdr', k + 6)) neigh++;
  return { fdb, flood, neigh };
}

export const complete = (c: PeerCounts | undefined, want: PeerCounts): boolean =>
  !!c && c.fdb >= want.fdb && c.neigh >= want.neigh && c.flood >= want.flood;

function ipToInt(ip: string): number {
  const p = ip.split('.').map(Number);
  return ((p[0]! << 24) | (p[1]! << 16) | (p[2]! << 8) | p[3]!) >>> 0;
}

/** `2026-12-01T05:58:01.495044` (local time, as `ip -ts` prints it) -> epoch ms with the microseconds. */
export function parseIpTimestamp(ts: string): number {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?$/.exec(ts);
  if (!m) return NaN;
  const base = new Date(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6])).getTime();
  const frac = m[7] ? Number(`0.${m[7]}`) * 1000 : 0;
  return base + frac;
}

/**
 * The kernel's neighbour notifications in one weft network namespace
 * (`ip -ts monitor neigh` reports both tables): a neighbour is keyed by its
 * address (inside the network's subnet), an FDB entry by its MAC (its
 * destination, a VTEP, is outside it).
 */
export class NeighMonitor {
  private readonly c: ChildProcess;
  /** first time each entry was added / deleted: 'ip:10.96.0.5', 'mac:02:42:...' */
  readonly added = new Map<string, number>();
  readonly deleted = new Map<string, number>();
  /** notifications seen, by kind */
  readonly counts = { neighAdd: 0, neighDel: 0, fdbAdd: 0, fdbDel: 0, other: 0 };
  private readonly net: number;
  private readonly mask: number;
  private stopped = false;

  constructor(w: WeftProcess, clusterId: string, subnet: string) {
    const [addr, len] = subnet.split('/');
    this.mask = len === '0' ? 0 : (0xffffffff << (32 - Number(len))) >>> 0;
    this.net = (ipToInt(addr!) & this.mask) >>> 0;
    const { ns } = weftNetns(w, clusterId);
    this.c = spawnTracked('nsenter', [`--net=${ns}`, 'ip', '-ts', 'monitor', 'neigh']);
    readline.createInterface({ input: this.c.stdout! }).on('line', (l) => this.onLine(l));
    this.c.stderr!.resume();
  }

  private onLine(l: string): void {
    const m = /^\[([^\]]+)\] (Deleted )?(\d+\.\d+\.\d+\.\d+) dev \S+(?: lladdr ([0-9a-f:]{17}))?(.*)$/.exec(l);
    if (!m) {
      this.counts.other++;
      return;
    }
    const t = parseIpTimestamp(m[1]!);
    const del = !!m[2];
    const ip = m[3]!;
    const mac = m[4];
    const inNet = ((ipToInt(ip) & this.mask) >>> 0) === this.net;
    if (inNet) {
      // A permanent neighbour being deleted shows first as FAILED (no lladdr), then as Deleted.
      if (del) {
        this.counts.neighDel++;
        if (!this.deleted.has(`ip:${ip}`)) this.deleted.set(`ip:${ip}`, t);
      } else if (mac && /PERMANENT/.test(m[5] ?? '')) {
        this.counts.neighAdd++;
        if (!this.added.has(`ip:${ip}`)) this.added.set(`ip:${ip}`, t);
      } else this.counts.other++;
    } else if (mac) {
      if (del) {
        this.counts.fdbDel++;
        if (!this.deleted.has(`mac:${mac}`)) this.deleted.set(`mac:${mac}`, t);
      } else {
        this.counts.fdbAdd++;
        if (!this.added.has(`mac:${mac}`)) this.added.set(`mac:${mac}`, t);
      }
    } else this.counts.other++;
  }

  /** When both entries of an endpoint (neighbour and FDB) were there: the later of the two, or undefined. */
  arrival(ip: string, mac: string): number | undefined {
    const a = this.added.get(`ip:${ip}`);
    const b = this.added.get(`mac:${mac.toLowerCase()}`);
    return a === undefined || b === undefined ? undefined : Math.max(a, b);
  }

  /** When both entries of an endpoint were gone, or undefined. */
  removal(ip: string, mac: string): number | undefined {
    const a = this.deleted.get(`ip:${ip}`);
    const b = this.deleted.get(`mac:${mac.toLowerCase()}`);
    return a === undefined || b === undefined ? undefined : Math.max(a, b);
  }

  snapshot(): NeighMonitor['counts'] {
    return { ...this.counts };
  }

  get running(): boolean {
    return !this.stopped && this.c.exitCode === null && this.c.signalCode === null;
  }

  stop(): void {
    this.stopped = true;
    try {
      this.c.kill('SIGKILL');
    } catch {
      /* gone */
    }
  }
}

/**
 * A host's kernel state for a weft network gone, as after a reboot: the VXLAN
 * device deleted (which frees its VNI at once) and the namespace unpinned.
 * weft must not be running, and nothing may be left inside the namespace.
 */
export async function wipeWeftNetwork(w: WeftProcess, clusterId: string): Promise<void> {
  const { ns, vx } = weftNetns(w, clusterId);
  if (!fs.existsSync(ns)) return;
  await run('nsenter', [`--net=${ns}`, 'ip', 'link', 'del', vx], { timeoutMs: 30_000 });
  await run('umount', [ns], { timeoutMs: 10_000 });
  fs.rmSync(ns, { force: true });
}
