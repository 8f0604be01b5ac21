// The bench's lab: an underlay bridge (192.0.2.0/24) in a namespace of its
// own with etcd on it, three Docker hosts (wbn-h1..3) each with its weft on
// etcd, and one bare host (wbn-api, no dockerd) where the plugin API is
// driven directly. Everything is named wbn-* (WEFT_BENCH_PREFIX) and removed
// by teardown(), on failure and on SIGINT/SIGTERM too.
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { startEtcd, type EtcdHandle } from '../../test/lab/etcd';
import {
  cleanupLabLeftovers, cleanupLabLeftoversSync, createUnderlay, ensureBusyboxImage, run, startHost, startWeft,
  type LabHost, type Underlay, type WeftProcess,
} from '../../test/lab/host';
import { REPO_ROOT, WEFT_CLI } from '../../test/lab/weft';

/**
 * Names of everything the bench makes start with this (WEFT_BENCH_PREFIX,
 * default wbn-): two benches, or a bench and a test lab, can share a machine
 * when their prefixes differ (and WEFT_LAB_ROOT, WEFT_LAB_CGROUP).
 */
export const PREFIX = benchPrefix();

function benchPrefix(): string {
  const p = process.env.WEFT_BENCH_PREFIX || 'wbn-';
  if (!/^[a-z][a-z0-9]{1,8}-$/.test(p)) throw new Error(`WEFT_BENCH_PREFIX=${p}: 2 to 9 lower-case letters or digits (a letter first), then '-'`);
  return p;
}
export const UNDERLAY_CIDR = '192.0.2.0/24';

export interface Lab {
  ul: Underlay;
  etcd: EtcdHandle;
  etcdUrl: string;
  /** wbn-h1..3: dockerd + weft on etcd */
  hosts: LabHost[];
  wefts: WeftProcess[];
  /** wbn-api: no dockerd; its weft is started per store by the API phase */
  api: LabHost;
}

export function log(msg: string): void {
  const t = new Date().toISOString().slice(11, 23);
  process.stderr.write(`[bench ${t}] ${msg}\n`);
}

/** weft's CLI as the lab starts it: <lab root>/dist/cli.js, where the lab root is two levels above the compiled lab. */
export function ensureWeftCliLink(): void {
  const real = path.resolve(__dirname, '..', '..', '..', '..', 'dist', 'cli.js');
  if (!fs.existsSync(real)) throw new Error(`${real} does not exist: run 'npm run build' first`);
  if (fs.existsSync(WEFT_CLI) && fs.realpathSync(WEFT_CLI) === fs.realpathSync(real)) return;
  // The compiled lab (bench/build/test/lab) computes the repository root from
  // its own location (bench/build): point bench/build/dist at the real dist/.
  const link = path.join(REPO_ROOT, 'dist');
  fs.rmSync(link, { recursive: true, force: true });
  fs.symlinkSync(path.relative(REPO_ROOT, path.dirname(real)), link);
  if (fs.realpathSync(WEFT_CLI) !== fs.realpathSync(real)) throw new Error(`cannot point ${WEFT_CLI} at ${real}`);
}

/**
 * weft's log level: WEFT_BENCH_LOG_LEVEL, else `dflt`. The API figure's weft
 * logs at info (a log line per call would be part of what is timed); the
 * hosts' wefts log at debug, which logs every plugin call with its duration:
 * the docker run figure reads weft's share from there.
 */
export const weftLogLevel = (dflt = 'info'): string => process.env.WEFT_BENCH_LOG_LEVEL || dflt;

/** WEFT_BENCH_NODE_OPTIONS: NODE_OPTIONS for the wefts (profiling: --cpu-prof, --heapsnapshot-signal=SIGUSR2). */
export const weftEnv = (): Record<string, string> =>
  process.env.WEFT_BENCH_NODE_OPTIONS ? { NODE_OPTIONS: process.env.WEFT_BENCH_NODE_OPTIONS } : {};

export const ipOf = (h: LabHost): string => h.ip!;

export function clusterArgs(lab: Pick<Lab, 'etcdUrl'>, h: LabHost, extra: string[] = []): string[] {
  // gc-grace: endpoints made through the plugin API are unknown to Docker and must survive the bench
  return ['--store', lab.etcdUrl, '--advertise-addr', ipOf(h), '--gc-grace', '3600', ...extra];
}

let current: Partial<Lab> = {};

export async function setupLab(): Promise<Lab> {
  ensureWeftCliLink();
  await cleanupLabLeftovers(PREFIX);
  const lab: Partial<Lab> = { hosts: [], wefts: [] };
  current = lab;
  lab.ul = await createUnderlay(`${PREFIX}ul`, UNDERLAY_CIDR);
  const etcdIp = lab.ul.bridgeAddress.split('/')[0]!;
  log('starting etcd');
  lab.etcd = await startEtcd({ name: PREFIX.slice(0, -1), netns: lab.ul.name, clientHost: etcdIp });
  lab.etcdUrl = `etcd://${etcdIp}:${new URL(lab.etcd.endpoint).port}`;
  log('starting hosts');
  const hs = await Promise.all([1, 2, 3].map((i) => startHost({ name: `${PREFIX}h${i}`, underlay: lab.ul, address: `192.0.2.${10 + i}/24` })));
  lab.hosts!.push(...hs);
  lab.api = await startHost({ name: `${PREFIX}api`, underlay: lab.ul, address: '192.0.2.20/24', dockerd: false });
  await Promise.all(hs.map((h) => ensureBusyboxImage(h)));
  log('starting weft on each host');
  // metrics on each host's own loopback (the scrape phase polls host 1's from inside its namespace)
  for (const h of hs) {
    lab.wefts!.push(await startWeft(h, { args: clusterArgs(lab as Lab, h, ['--metrics-addr', '127.0.0.1:9464']), logLevel: weftLogLevel('debug'), env: weftEnv() }));
  }
  return lab as Lab;
}

export async function teardown(): Promise<void> {
  killChildren();
  const lab = current;
  current = {};
  for (const h of [...(lab.hosts ?? []), ...(lab.api ? [lab.api] : [])]) await h.destroy().catch(() => undefined);
  await lab.etcd?.stop().catch(() => undefined);
  await lab.ul?.destroy().catch(() => undefined);
  await cleanupLabLeftovers(PREFIX);
}

// ------------------------------------------------------------ processes

const children = new Set<ChildProcess>();

/** Spawns a long-running helper (pinger, iperf3 server, the cluster simulator); killed by teardown and on exit. */
export function spawnTracked(cmd: string, args: string[], opts: { stdin?: boolean } = {}): ChildProcess {
  const c = spawn(cmd, args, { stdio: [opts.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'] });
  children.add(c);
  c.on('exit', () => children.delete(c));
  c.on('error', () => children.delete(c));
  return c;
}

export function killChildren(): void {
  for (const c of children) {
    try {
      c.kill('SIGKILL');
    } catch {
      /* gone */
    }
  }
  children.clear();
}

/** Synchronous last resort (signal handlers). */
export function emergencyCleanup(): void {
  killChildren();
  try {
    cleanupLabLeftoversSync(PREFIX);
  } catch {
    /* best effort */
  }
}

// ------------------------------------------------------------ Docker and kernel helpers

/** GET on a host's Docker API (unix socket): much quicker than the CLI, for polling. */
export function dockerApi(h: LabHost, urlPath: string, timeoutMs = 5_000): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: h.dockerSock, path: urlPath, method: 'GET', timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${urlPath}: no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

export async function containerPid(h: LabHost, name: string): Promise<number> {
  return Number((await h.dockerOk(['inspect', '-f', '{{.State.Pid}}', name])).stdout.trim());
}

export async function networkId(h: LabHost, name: string): Promise<string> {
  return (await h.dockerOk(['network', 'inspect', '-f', '{{.Id}}', name])).stdout.trim();
}

/** Runs a command in a container's network namespace (host tools: iputils ping, iperf3). */
export function inNetns(pid: number, cmd: string[], timeoutMs = 30_000) {
  return run('nsenter', [`--net=/proc/${pid}/ns/net`, ...cmd], { timeoutMs });
}

/** weft's per-network namespace and VXLAN device on a host, for a cluster network id. */
export function weftNetns(w: WeftProcess, clusterId: string): { ns: string; vx: string } {
  const id = clusterId.slice(0, 10);
  return { ns: `${w.runDir}/netns/weft-${id}`, vx: `vx-${id}` };
}

/** Resident memory of a process in MiB (VmRSS). */
export function rssMiB(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

/** Durations of the plugin calls weft logged (debug level) in its log file from byte `from` on. */
export function pluginCallsSince(w: WeftProcess, from: number): Array<{ call: string; ms: number }> {
  let text = '';
  try {
    const fd = fs.openSync(w.logFile, 'r');
    try {
      const size = fs.fstatSync(fd).size;
      const buf = Buffer.alloc(Math.max(0, size - from));
      fs.readSync(fd, buf, 0, buf.length, from);
      text = buf.toString('utf8');
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return [];
  }
  const out: Array<{ call: string; ms: number }> = [];
  for (const line of text.split('\n')) {
    if (!line.includes('"plugin call"')) continue;
    try {
      const j = JSON.parse(line) as { call?: string; ms?: number };
      if (j.call && typeof j.ms === 'number') out.push({ call: j.call, ms: j.ms });
    } catch {
      /* not a log line */
    }
  }
  return out;
}

export function logSize(w: WeftProcess): number {
  try {
    return fs.statSync(w.logFile).size;
  } catch {
    return 0;
  }
}

export function weftVersion(): string {
  try {
    return (JSON.parse(fs.readFileSync(path.resolve(__dirname, '..', '..', '..', '..', 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}
