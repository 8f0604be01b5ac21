// One real weft's costs, read from outside: its /metrics (served inside its
// lab host's namespace), its process (/proc: CPU time, resident memory) and
// the bytes on its host's underlay link (at rest that is weft's etcd traffic:
// requests, watch, lease keepalives, gRPC pings; nothing else on that host
// talks over the underlay when no container sends).
import * as fs from 'node:fs';
import { run, type LabHost } from '../../test/lab/host';

/** Samples of a Prometheus text exposition, by series as written (`name{a="x"}`). */
export type Samples = Map<string, number>;

export function parseProm(text: string): Samples {
  const out: Samples = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const sp = line.lastIndexOf(' ');
    if (sp < 0) continue;
    out.set(line.slice(0, sp), Number(line.slice(sp + 1)));
  }
  return out;
}

/** Sum of a metric's series whose labels include every given one. */
export function promSum(s: Samples, name: string, labels: Record<string, string> = {}): number {
  let total = 0;
  for (const [series, v] of s) {
    const brace = series.indexOf('{');
    const n = brace < 0 ? series : series.slice(0, brace);
    if (n !== name) continue;
    if (Object.entries(labels).every(([k, val]) => series.includes(`${k}="${val}"`))) total += v;
  }
  return total;
}

/** Label values of a metric's series, e.g. every `op` of weft_store_requests_total. */
export function promLabelValues(s: Samples, name: string, label: string): string[] {
  const out = new Set<string>();
  for (const series of s.keys()) {
    if (!series.startsWith(`${name}{`)) continue;
    const m = new RegExp(`[{,]${label}="([^"]*)"`).exec(series);
    if (m) out.add(m[1]!);
  }
  return [...out].sort();
}

/** GET http://addr/metrics from inside the host's namespace. */
export async function scrape(h: LabHost, addr: string): Promise<Samples> {
  const r = await h.exec(['curl', '-sS', '-m', '20', `http://${addr}/metrics`], { timeoutMs: 30_000 });
  if (r.code !== 0) throw new Error(`scraping ${h.name}'s weft at ${addr}: ${r.stderr.trim().slice(-300)}`);
  return parseProm(r.stdout);
}

export interface ProcStats {
  /** user + system CPU time, ms */
  cpuMs: number;
  rssMiB: number;
  /** of which anonymous (private) memory; the rest is mostly the node binary's pages, shared */
  anonMiB: number;
  /** peak resident memory since the process started */
  hwmMiB: number;
}

const TICK_MS = 10; // USER_HZ is 100 on Linux

export function procStats(pid: number): ProcStats {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields 14 and 15 (utime, stime) are 11 and 12 after the command
    const cpuMs = (Number(f[11]) + Number(f[12])) * TICK_MS;
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (k: string): number => Number(new RegExp(`${k}:\\s+(\\d+) kB`).exec(status)?.[1] ?? NaN);
    return { cpuMs, rssMiB: kb('VmRSS') / 1024, anonMiB: kb('RssAnon') / 1024, hwmMiB: kb('VmHWM') / 1024 };
  } catch {
    return { cpuMs: NaN, rssMiB: NaN, anonMiB: NaN, hwmMiB: NaN };
  }
}

/** Bytes received and sent on a host's underlay link. */
export async function linkBytes(h: LabHost): Promise<{ rx: number; tx: number }> {
  const r = await run('ip', ['-n', h.name, '-j', '-s', 'link', 'show', h.underlayIf ?? 'eth0'], { timeoutMs: 10_000 });
  try {
    const j = JSON.parse(r.stdout) as Array<{ stats64?: { rx?: { bytes?: number }; tx?: { bytes?: number } } }>;
    return { rx: j[0]?.stats64?.rx?.bytes ?? NaN, tx: j[0]?.stats64?.tx?.bytes ?? NaN };
  } catch {
    return { rx: NaN, tx: NaN };
  }
}
