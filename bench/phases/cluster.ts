// 8. Cluster scale (issue 16): a cluster of 100 hosts without 100 dockerds.
//
// A lab of its own (made after the shared lab is gone, removed at the end,
// also on failure): an underlay with etcd, three real hosts (dockerd + weft,
// with --metrics-addr), and a simulator process (bench/lib/sim.ts) on the
// underlay whose 97 simulated hosts register under leases, bind both
// networks and write their containers' records as weft does. Two weft
// networks, made with `docker network create` on host 1 and propagated by
// weft to the others; endpoints are spread evenly over the simulated hosts
// and the networks.
//
// For each cluster size (1,000 then 10,000 endpoints by default):
//   - fill: the simulator writes the new endpoints (bulk transactions), and
//     every real host's kernel is counted until it has them all;
//   - at rest: over a window, each real weft's store requests and answer
//     bytes (its /metrics), its underlay bytes (its etcd traffic on the
//     wire), its CPU and memory (/proc), and the FDB/neighbour entries its
//     reconcile reads back;
//   - latency: endpoints written one at a time on random simulated hosts, as
//     weft writes them; from the endpoint record's put to the moment both its
//     FDB and neighbour entries are in every real host's kernel (the kernel's
//     notifications, `ip -ts monitor neigh` in weft's per-network namespace);
//     then their deletion;
//   - cost of one change: FDB and neighbour netlink requests that one
//     endpoint's creation or deletion makes each real weft send
//     (weft_netlink_requests_total), with the /metrics scrape's own dumps
//     taken out, and the kernel notifications it causes;
//   - a starting host: the last real host's weft is stopped, its kernel state
//     wiped as by a reboot, and started: time until every entry is back.
// Figures are printed side by side per size with the growth between the
// first and the last size, and go to latest.json.
import * as fs from 'node:fs';
import type { EtcdHandle } from '../../test/lab/etcd';
import { startEtcd } from '../../test/lab/etcd';
import {
  cleanupLabLeftovers, createUnderlay, startHost, startWeft, waitFor,
  type LabHost, type Underlay, type WeftProcess,
} from '../../test/lab/host';
import type { Bench } from '../lib/context';
import { keys } from '../../src/store/keys';
import { complete, NeighMonitor, peerCounts, wipeWeftNetwork, type PeerCounts } from '../lib/kernel';
import { clusterArgs, ensureWeftCliLink, log, networkId, PREFIX, weftEnv, weftLogLevel, weftVersion } from '../lib/lab';
import { SimClient } from '../lib/sim-client';
import { percentile, median, fmt, round, type Goal } from '../lib/stats';
import { linkBytes, parseProm, procStats, promLabelValues, promSum, scrape, type Samples } from '../lib/weft-stats';

const P = `${PREFIX}s-`;
const NETS = [
  { name: `${PREFIX.slice(0, -1)}sc1`, subnet: '10.96.0.0/18' },
  { name: `${PREFIX.slice(0, -1)}sc2`, subnet: '10.96.64.0/18' },
];
const METRICS_ADDR = '127.0.0.1:9464';
const LEASE_TTL = 10; // weft's default --lease-ttl
const FILL_TIMEOUT_MS = 300_000;
const START_TIMEOUT_MS = 180_000;
const PROBE_TIMEOUT_MS = 10_000;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const nowMs = (): number => performance.timeOrigin + performance.now();

interface ClusterLab {
  ul?: Underlay;
  etcd?: EtcdHandle;
  etcdUrl: string;
  etcdHttp: string;
  hosts: LabHost[];
  wefts: WeftProcess[];
  simHost?: LabHost;
  sim?: SimClient;
  monitors: NeighMonitor[];
}

interface Net { name: string; subnet: string; clusterId: string }

// ------------------------------------------------------------ lab

async function setupClusterLab(real: number): Promise<ClusterLab> {
  ensureWeftCliLink();
  await cleanupLabLeftovers(P);
  const lab: ClusterLab = { etcdUrl: '', etcdHttp: '', hosts: [], wefts: [], monitors: [] };
  try {
    lab.ul = await createUnderlay(`${P}ul`, '192.0.2.0/24');
    const etcdIp = lab.ul.bridgeAddress.split('/')[0]!;
    lab.etcd = await startEtcd({ name: `${P}etcd`, netns: lab.ul.name, clientHost: etcdIp });
    lab.etcdHttp = `http://${etcdIp}:${lab.etcd.clientPort}`;
    lab.etcdUrl = `etcd://${etcdIp}:${lab.etcd.clientPort}`;
    log(`cluster: starting ${real} real hosts and the simulator's host`);
    const started = await Promise.allSettled(Array.from({ length: real }, (_, i) =>
      startHost({ name: `${P}h${i + 1}`, underlay: lab.ul, address: `192.0.2.${11 + i}/24` })));
    for (const s of started) if (s.status === 'fulfilled') lab.hosts.push(s.value);
    const failed = started.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) throw failed.reason;
    lab.simHost = await startHost({ name: `${P}sim`, underlay: lab.ul, address: '192.0.2.30/24', dockerd: false });
    for (const h of lab.hosts) {
      lab.wefts.push(await startWeft(h, {
        args: clusterArgs(lab, h, ['--metrics-addr', METRICS_ADDR]), logLevel: weftLogLevel('info'), env: weftEnv(),
      }));
    }
    return lab;
  } catch (e) {
    await destroyClusterLab(lab);
    throw e;
  }
}

async function destroyClusterLab(lab: ClusterLab): Promise<void> {
  for (const m of lab.monitors) m.stop();
  await lab.sim?.close().catch(() => undefined);
  for (const h of [...lab.hosts, ...(lab.simHost ? [lab.simHost] : [])]) await h.destroy().catch(() => undefined);
  await lab.etcd?.stop().catch(() => undefined);
  await lab.ul?.destroy().catch(() => undefined);
  await cleanupLabLeftovers(P);
}

// ------------------------------------------------------------ results

interface RestResult {
  seconds: number;
  storeRequestsPerMin: number;
  storeRequestsByOp: Record<string, number>;
  answerBytesPerMin: number;
  answerBytesByArea: Record<string, number>;
  bytesPerList: number;
  linkBytesPerMin: number;
  cpuPercent: number;
  rssMiB: number;
  /** anonymous (private) resident memory; RSS minus this is mostly the node binary's shared pages */
  anonMiB: number;
  /** V8 heap in use, reserved, and buffers outside it, from weft's own /metrics */
  heapMiB: number;
  heapTotalMiB: number;
  externalMiB: number;
  hwmMiB: number;
  netlinkDumpsPerMin: number;
  entriesReadPerMin: number;
}

interface OpCost {
  kind: 'create' | 'delete';
  /** per real host: FDB requests (add+del+dump), neighbour requests, entries read back, kernel notifications */
  fdb: number[];
  neigh: number[];
  fdbByKind: Array<Record<string, number>>;
  neighByKind: Array<Record<string, number>>;
  entriesRead: number[];
  notifications: number[];
  attempts: number;
}

interface SizeResult {
  size: number;
  perNetwork: number;
  fill: { writeSec: number; txns: number; doneAfterWriteSec: Array<number | null>; cpuMsPer1000: number[] };
  rest: RestResult[];
  probe: {
    latencyMs: number[]; perHostMs: number[][]; missed: number; deleteMs: number[]; deleteMissed: number;
    /** put -> a watch on the underlay sees it (etcd's share), and that -> in every kernel (weft's share) */
    watchMs: number[]; afterWatchMs: number[];
  };
  ops: OpCost[];
  start: { servingSec: number; programmedSec: number | null; rssMiB: number; hwmMiB: number };
  etcd: Record<string, number>;
  want: PeerCounts;
}

// ------------------------------------------------------------ helpers

const wantFor = (perNetwork: number, sim: number): PeerCounts => ({ fdb: perNetwork, neigh: perNetwork, flood: Math.min(sim, perNetwork) });

/** Polls every host's kernel until each has `want` on every network (or the bound). Returns when each got there (epoch ms). */
async function waitKernel(wefts: WeftProcess[], nets: Net[], want: PeerCounts, timeoutMs: number, intervalMs: number): Promise<{ doneAt: Array<number | undefined>; last: Array<Array<PeerCounts | undefined>> }> {
  const doneAt: Array<number | undefined> = wefts.map(() => undefined);
  let last: Array<Array<PeerCounts | undefined>> = [];
  const deadline = Date.now() + timeoutMs;
  for (let i = 0; i < 100_000 && doneAt.some((d) => d === undefined) && Date.now() < deadline; i++) {
    const t = nowMs();
    last = await Promise.all(wefts.map((w, k) => (doneAt[k] !== undefined ? Promise.resolve([]) : Promise.all(nets.map((n) => peerCounts(w, n.clusterId))))));
    last.forEach((counts, k) => {
      if (doneAt[k] === undefined && counts.length === nets.length && counts.every((c) => complete(c, want))) doneAt[k] = t;
    });
    await sleep(intervalMs);
  }
  return { doneAt, last };
}

async function scrapeAll(hosts: LabHost[]): Promise<Samples[]> {
  return Promise.all(hosts.map((h) => scrape(h, METRICS_ADDR)));
}

const reconcileAt = (s: Samples): number => promSum(s, 'weft_reconcile_last_timestamp_seconds');

/**
 * Whether a reconcile ran (even in part) between fromMs and toMs (epoch),
 * judged from a scrape taken before the window and one taken after it, long
 * enough after for a reconcile that started inside to have finished.
 */
function reconcileOverlaps(before: Samples, after: Samples, toMs: number): boolean {
  const end = reconcileAt(after) * 1000;
  if (end === reconcileAt(before) * 1000) return false;
  return end - promSum(after, 'weft_reconcile_duration_seconds') * 1000 < toMs;
}

/** Waits out a reconcile that may be running (twice the last one's length, at least 1.5 s), then scrapes. */
async function scrapeAfterReconcile(hosts: LabHost[], last: Samples[]): Promise<Samples[]> {
  const longest = Math.max(...last.map((s) => promSum(s, 'weft_reconcile_duration_seconds') * 1000));
  await sleep(Math.min(15_000, Math.max(1_500, 2 * longest)));
  return scrapeAll(hosts);
}

interface NetlinkCounts { fdb: Record<string, number>; neigh: Record<string, number>; entries: number }
function netlinkCounts(s: Samples): NetlinkCounts {
  const of = (table: string) => Object.fromEntries(['add', 'del', 'dump'].map((op) => [op, promSum(s, 'weft_netlink_requests_total', { table, op })]));
  return { fdb: of('fdb'), neigh: of('neigh'), entries: promSum(s, 'weft_netlink_dump_entries_total') };
}
function subCounts(a: NetlinkCounts, b: NetlinkCounts): NetlinkCounts {
  const sub = (x: Record<string, number>, y: Record<string, number>) => Object.fromEntries(Object.keys(x).map((k) => [k, x[k]! - (y[k] ?? 0)]));
  return { fdb: sub(a.fdb, b.fdb), neigh: sub(a.neigh, b.neigh), entries: a.entries - b.entries };
}
const total = (r: Record<string, number>): number => Object.values(r).reduce((x, y) => x + y, 0);

/**
 * What one /metrics scrape itself costs in netlink requests (it dumps each
 * network's tables for weft_peer_entries): two scrapes back to back, with no
 * reconcile between them. Per host.
 */
async function scrapeOverhead(hosts: LabHost[]): Promise<NetlinkCounts[]> {
  let last: NetlinkCounts[] = [];
  for (let attempt = 0; attempt < 5; attempt++) {
    const a = await scrapeAll(hosts);
    const b = await scrapeAll(hosts);
    const until = nowMs();
    last = b.map((s, i) => subCounts(netlinkCounts(s), netlinkCounts(a[i]!)));
    const d = await scrapeAfterReconcile(hosts, b);
    if (a.every((s, i) => !reconcileOverlaps(s, d[i]!, until))) return last;
  }
  return last;
}

async function etcdMetrics(lab: ClusterLab): Promise<Samples> {
  const r = await lab.ul!.exec(['curl', '-sS', '-m', '10', `${lab.etcdHttp}/metrics`], { timeoutMs: 20_000 });
  return r.code === 0 ? parseProm(r.stdout) : new Map();
}

// ------------------------------------------------------------ steps

async function atRest(lab: ClusterLab, seconds: number): Promise<{ rest: RestResult[]; etcdPerMin: Record<string, number> }> {
  const hosts = lab.hosts;
  const overhead = await scrapeOverhead(hosts);
  log(`cluster: one /metrics scrape reads ${overhead.map((o) => o.entries).join(', ')} FDB and neighbour entries back (per host)`);
  const e0 = await etcdMetrics(lab);
  const s0 = await scrapeAll(hosts);
  const p0 = lab.wefts.map((w) => procStats(w.pid));
  const l0 = await Promise.all(hosts.map((h) => linkBytes(h)));
  const t0 = nowMs();
  await sleep(seconds * 1000);
  const t1 = nowMs();
  const p1 = lab.wefts.map((w) => procStats(w.pid));
  const l1 = await Promise.all(hosts.map((h) => linkBytes(h)));
  const s1 = await scrapeAll(hosts);
  const e1 = await etcdMetrics(lab);
  const min = (t1 - t0) / 60_000;
  const rest = hosts.map((_, i): RestResult => {
    const a = s0[i]!;
    const b = s1[i]!;
    const byOp: Record<string, number> = {};
    for (const op of promLabelValues(b, 'weft_store_requests_total', 'op')) {
      byOp[op] = (promSum(b, 'weft_store_requests_total', { op }) - promSum(a, 'weft_store_requests_total', { op })) / min;
    }
    // the second scrape's own lease check (a get of this host's key) is not at rest
    byOp.get = ((byOp.get ?? 0) * min - 1) / min;
    const byArea: Record<string, number> = {};
    for (const op of ['get', 'list']) {
      for (const area of promLabelValues(b, 'weft_store_response_bytes_total', 'area')) {
        const d = promSum(b, 'weft_store_response_bytes_total', { op, area }) - promSum(a, 'weft_store_response_bytes_total', { op, area });
        if (d) byArea[`${op} ${area}`] = d / min;
      }
    }
    const lists = promSum(b, 'weft_store_requests_total', { op: 'list' }) - promSum(a, 'weft_store_requests_total', { op: 'list' });
    const listBytes = promSum(b, 'weft_store_response_bytes_total', { op: 'list' }) - promSum(a, 'weft_store_response_bytes_total', { op: 'list' });
    const nl = subCounts(subCounts(netlinkCounts(b), netlinkCounts(a)), overhead[i]!);
    return {
      seconds: (t1 - t0) / 1000,
      storeRequestsPerMin: total(byOp),
      storeRequestsByOp: byOp,
      answerBytesPerMin: total(byArea),
      answerBytesByArea: byArea,
      bytesPerList: lists > 0 ? listBytes / lists : 0,
      linkBytesPerMin: (l1[i]!.rx - l0[i]!.rx + l1[i]!.tx - l0[i]!.tx) / min,
      cpuPercent: ((p1[i]!.cpuMs - p0[i]!.cpuMs) / (t1 - t0)) * 100,
      rssMiB: p1[i]!.rssMiB,
      anonMiB: p1[i]!.anonMiB,
      heapMiB: promSum(b, 'nodejs_heap_size_used_bytes', {}) / 1048576,
      heapTotalMiB: promSum(b, 'nodejs_heap_size_total_bytes', {}) / 1048576,
      externalMiB: promSum(b, 'nodejs_external_memory_bytes', {}) / 1048576,
      hwmMiB: p1[i]!.hwmMiB,
      netlinkDumpsPerMin: (nl.fdb.dump! + nl.neigh.dump!) / min,
      entriesReadPerMin: nl.entries / min,
    };
  });
  const etcdPerMin: Record<string, number> = {};
  for (const m of promLabelValues(e1, 'grpc_server_msg_received_total', 'grpc_method')) {
    const d = promSum(e1, 'grpc_server_msg_received_total', { grpc_method: m }) - promSum(e0, 'grpc_server_msg_received_total', { grpc_method: m });
    if (d) etcdPerMin[m] = d / min;
  }
  return { rest, etcdPerMin };
}

async function probes(b: Bench, lab: ClusterLab, nets: Net[], n: number): Promise<SizeResult['probe']> {
  const sim = lab.sim!;
  const byNet = nets.map((net) => lab.wefts.map((w) => new NeighMonitor(w, net.clusterId, net.subnet)));
  lab.monitors.push(...byNet.flat());
  await sleep(500); // the monitors subscribe
  const latencyMs: number[] = [];
  const perHostMs: number[][] = lab.wefts.map(() => []);
  const deleteMs: number[] = [];
  let missed = 0;
  let deleteMissed = 0;
  const made: Array<{ network: number; endpointId: string; ip: string; mac: string }> = [];
  const timed: Array<{ key: string; sentAt: number; inKernel: number }> = [];
  try {
    for (let i = 0; i < n; i++) {
      const network = i % nets.length;
      const r = await sim.probe(network);
      made.push({ network, endpointId: r.endpointId, ip: r.ip, mac: r.mac });
      const mons = byNet[network]!;
      const deadline = Date.now() + PROBE_TIMEOUT_MS;
      while (Date.now() < deadline && mons.some((m) => m.arrival(r.ip, r.mac) === undefined)) await sleep(5);
      const at = mons.map((m) => m.arrival(r.ip, r.mac));
      if (at.some((t) => t === undefined)) missed++;
      else {
        at.forEach((t, k) => perHostMs[k]!.push(t! - r.sentAt));
        latencyMs.push(Math.max(...(at as number[])) - r.sentAt);
        timed.push({ key: keys.endpoint(r.clusterId, r.endpointId), sentAt: r.sentAt, inKernel: Math.max(...(at as number[])) });
      }
      await sleep(50);
    }
    for (const p of made.splice(0)) {
      const r = await sim.unprobe(p.network, p.endpointId);
      const mons = byNet[p.network]!;
      const deadline = Date.now() + PROBE_TIMEOUT_MS;
      while (Date.now() < deadline && mons.some((m) => m.removal(p.ip, p.mac) === undefined)) await sleep(5);
      const at = mons.map((m) => m.removal(p.ip, p.mac));
      if (at.some((t) => t === undefined)) deleteMissed++;
      else deleteMs.push(Math.max(...(at as number[])) - r.sentAt);
      await sleep(50);
    }
  } finally {
    // whatever failed, the probe endpoints go (the counts of the next steps assume so)
    for (const p of made) await sim.unprobe(p.network, p.endpointId).catch(() => undefined);
    if (!byNet.flat().every((m) => m.running)) b.notes.push('cluster: an ip monitor exited during the latency probes');
    for (const m of byNet.flat()) m.stop();
    lab.monitors = lab.monitors.filter((m) => !byNet.flat().includes(m));
  }
  const seen = await sim.watchTimes();
  const watchMs: number[] = [];
  const afterWatchMs: number[] = [];
  for (const t of timed) {
    const w = seen.put[t.key];
    if (w === undefined) continue;
    watchMs.push(w - t.sentAt);
    afterWatchMs.push(t.inKernel - w);
  }
  return { latencyMs, perHostMs, missed, deleteMs, deleteMissed, watchMs, afterWatchMs };
}

/** The netlink requests one endpoint's creation, then one's deletion, costs each real host. */
async function opCosts(lab: ClusterLab, nets: Net[]): Promise<OpCost[]> {
  const sim = lab.sim!;
  const net = 0;
  const mons = lab.wefts.map((w) => new NeighMonitor(w, nets[net]!.clusterId, nets[net]!.subnet));
  lab.monitors.push(...mons);
  await sleep(500);
  const out: OpCost[] = [];
  let live: { endpointId: string; ip: string; mac: string } | undefined;
  try {
    for (const kind of ['create', 'delete'] as const) {
      let cost: OpCost | undefined;
      for (let attempt = 1; attempt <= 6 && !cost; attempt++) {
        const a = await scrapeAll(lab.hosts);
        const k0 = mons.map((m) => m.snapshot());
        if (kind === 'create') {
          const r = await sim.probe(net);
          live = { endpointId: r.endpointId, ip: r.ip, mac: r.mac };
          const deadline = Date.now() + PROBE_TIMEOUT_MS;
          while (Date.now() < deadline && mons.some((m) => m.arrival(r.ip, r.mac) === undefined)) await sleep(5);
        } else {
          const p = live!;
          await sim.unprobe(net, p.endpointId);
          live = undefined;
          const deadline = Date.now() + PROBE_TIMEOUT_MS;
          while (Date.now() < deadline && mons.some((m) => m.removal(p.ip, p.mac) === undefined)) await sleep(5);
        }
        await sleep(300); // anything the change set off
        const bb = await scrapeAll(lab.hosts);
        const k1 = mons.map((m) => m.snapshot());
        await sleep(300);
        const c = await scrapeAll(lab.hosts);
        const until = nowMs();
        const d = await scrapeAfterReconcile(lab.hosts, c);
        const quiet = a.every((s, i) => !reconcileOverlaps(s, d[i]!, until));
        if (!quiet) {
          // a reconcile ran in the window: its dumps would count. Undo a create and try again.
          if (kind === 'create' && live) {
            await sim.unprobe(net, live.endpointId);
            const p = live;
            live = undefined;
            const deadline = Date.now() + PROBE_TIMEOUT_MS;
            while (Date.now() < deadline && mons.some((m) => m.removal(p.ip, p.mac) === undefined)) await sleep(5);
            for (const m of mons) {
              m.added.delete(`ip:${p.ip}`);
              m.added.delete(`mac:${p.mac}`);
              m.deleted.delete(`ip:${p.ip}`);
              m.deleted.delete(`mac:${p.mac}`);
            }
          } else if (kind === 'delete') {
            // the endpoint is gone already: make another one to delete
            const r = await sim.probe(net);
            live = { endpointId: r.endpointId, ip: r.ip, mac: r.mac };
            const deadline = Date.now() + PROBE_TIMEOUT_MS;
            while (Date.now() < deadline && mons.some((m) => m.arrival(r.ip, r.mac) === undefined)) await sleep(5);
            await sleep(300);
          }
          await sleep(1000);
          continue;
        }
        const per = lab.hosts.map((_, i) => subCounts(subCounts(netlinkCounts(bb[i]!), netlinkCounts(a[i]!)), subCounts(netlinkCounts(c[i]!), netlinkCounts(bb[i]!))));
        cost = {
          kind, attempts: attempt,
          fdb: per.map((x) => total(x.fdb)), neigh: per.map((x) => total(x.neigh)),
          fdbByKind: per.map((x) => x.fdb), neighByKind: per.map((x) => x.neigh),
          entriesRead: per.map((x) => x.entries),
          notifications: mons.map((_, i) => {
            const s0 = k0[i]!;
            const s1 = k1[i]!;
            return s1.neighAdd - s0.neighAdd + s1.neighDel - s0.neighDel + s1.fdbAdd - s0.fdbAdd + s1.fdbDel - s0.fdbDel;
          }),
        };
      }
      if (cost) out.push(cost);
    }
  } finally {
    if (live) await sim.unprobe(net, live.endpointId).catch(() => undefined);
    for (const m of mons) m.stop();
    lab.monitors = lab.monitors.filter((m) => !mons.includes(m));
  }
  return out;
}

async function coldStart(lab: ClusterLab, nets: Net[], want: PeerCounts): Promise<SizeResult['start']> {
  const w = lab.wefts[lab.wefts.length - 1]!;
  await w.stop();
  for (const n of nets) await wipeWeftNetwork(w, n.clusterId);
  const t0 = nowMs();
  await w.start();
  const serving = nowMs();
  const { doneAt } = await waitKernel([w], nets, want, START_TIMEOUT_MS, 100);
  const p = procStats(w.pid);
  return { servingSec: (serving - t0) / 1000, programmedSec: doneAt[0] === undefined ? null : (doneAt[0] - t0) / 1000, rssMiB: p.rssMiB, hwmMiB: p.hwmMiB };
}

/** Warnings and errors in a weft's log (pino: level 40 and up), with the last few messages. */
function weftWarnings(file: string): { count: number; last: string[] } {
  let text = '';
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return { count: 0, last: [] };
  }
  let count = 0;
  const last: string[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const j = JSON.parse(line) as { level?: number; msg?: string; err?: string };
      if ((j.level ?? 0) < 40) continue;
      count++;
      last.push(`${j.msg ?? ''}${j.err ? `: ${j.err}` : ''}`.slice(0, 300));
      if (last.length > 5) last.shift();
    } catch {
      /* not a log line */
    }
  }
  return { count, last };
}

// ------------------------------------------------------------ the phase

export async function cluster(b: Bench): Promise<void> {
  const { cfg } = b;
  const real = cfg.clusterReal;
  const simulated = cfg.clusterHosts - real;
  const sizes = cfg.clusterSizes;
  log(`cluster: ${cfg.clusterHosts} hosts (${real} real, ${simulated} simulated), ${NETS.length} networks, sizes ${sizes.join(', ')} endpoints`);
  const lab = await setupClusterLab(real);
  try {
    const h1 = lab.hosts[0]!;
    const nets: Net[] = [];
    for (const n of NETS) {
      await h1.dockerOk(['network', 'create', '-d', 'weft', '--ipam-driver', 'weft', '--subnet', n.subnet, n.name]);
      nets.push({ ...n, clusterId: await networkId(h1, n.name) });
    }
    // every real host has both networks, in Docker and in its kernel
    for (const [k, w] of lab.wefts.entries()) {
      for (const n of nets) {
        await waitFor(async () => (await peerCounts(w, n.clusterId)) !== undefined, { timeoutMs: 60_000, intervalMs: 100, what: `network ${n.name} in ${lab.hosts[k]!.name}'s kernel` });
      }
    }
    lab.sim = new SimClient(lab.simHost!);
    const t0 = nowMs();
    const init = await lab.sim.init({
      etcd: `http://${lab.etcdUrl.slice('etcd://'.length)}`, hosts: simulated, version: weftVersion(), leaseTtl: LEASE_TTL,
      networks: nets.map((n) => ({ clusterId: n.clusterId, name: n.name, subnet: n.subnet })),
    });
    log(`cluster: ${init.hosts} simulated hosts registered in ${((nowMs() - t0) / 1000).toFixed(1)} s`);
    await sleep(5_000);
    // Idle means at rest, as for the sizes: the wefts started seconds ago, and
    // what their start-up left is given back by weft's memory returner within
    // its first looks (README, "Memory"). The figure right after start-up is
    // kept beside it (log, notes, details).
    const justStarted = lab.wefts.map((w) => procStats(w.pid));
    log(`cluster: weft memory right after start-up ${justStarted.map((p) => `${p.rssMiB.toFixed(1)} (anon ${p.anonMiB.toFixed(1)})`).join(', ')} MiB; idle at rest for ${cfg.clusterRestSeconds} s`);
    await sleep(cfg.clusterRestSeconds * 1000);
    const idle = lab.wefts.map((w) => procStats(w.pid));
    log(`cluster: idle weft memory ${idle.map((p) => `${p.rssMiB.toFixed(1)} (anon ${p.anonMiB.toFixed(1)})`).join(', ')} MiB`);
    b.notes.push(`cluster: the idle figures are taken after ${cfg.clusterRestSeconds} s at rest; 5 s after the simulated hosts registered (seconds after weft started) the wefts held ${justStarted.map((p) => p.rssMiB.toFixed(1)).join(', ')} MiB (anon ${justStarted.map((p) => p.anonMiB.toFixed(1)).join(', ')})`);
    b.details.clusterIdleJustStarted = justStarted;

    const results: SizeResult[] = [];
    for (const size of sizes) {
      const perNetwork = Math.floor(size / nets.length);
      const want = wantFor(perNetwork, simulated);
      log(`cluster: growing to ${size} endpoints (${perNetwork} per network)`);
      const cpu0 = lab.wefts.map((w) => procStats(w.pid).cpuMs);
      const before = results.length ? results[results.length - 1]!.size : 0;
      const filling = lab.sim.fill(perNetwork);
      const fill = await filling;
      const written = nowMs();
      log(`cluster: ${fill.endpoints} endpoints written in ${(fill.ms / 1000).toFixed(1)} s (${fill.txns} transactions); waiting for every real host's kernel`);
      const { doneAt, last } = await waitKernel(lab.wefts, nets, want, FILL_TIMEOUT_MS, 500);
      const cpu1 = lab.wefts.map((w) => procStats(w.pid).cpuMs);
      if (doneAt.some((d) => d === undefined)) b.notes.push(`cluster ${size}: not every real host had every peer within ${FILL_TIMEOUT_MS / 1000} s: ${JSON.stringify(last)} (want ${JSON.stringify(want)} per network)`);
      const fillRes: SizeResult['fill'] = {
        writeSec: fill.ms / 1000, txns: fill.txns,
        doneAfterWriteSec: doneAt.map((d) => (d === undefined ? null : Math.max(0, d - written) / 1000)),
        cpuMsPer1000: cpu1.map((c, i) => ((c - cpu0[i]!) / (size - before)) * 1000),
      };
      log(`cluster: kernels complete ${fillRes.doneAfterWriteSec.map((d) => (d === null ? 'n/a' : d.toFixed(1))).join(', ')} s after the last write`);

      await sleep(3_000);
      log(`cluster: at rest for ${cfg.clusterRestSeconds} s`);
      const { rest, etcdPerMin } = await atRest(lab, cfg.clusterRestSeconds);
      log(`cluster: weft memory at rest ${rest.map((r) => `${r.rssMiB.toFixed(1)} (anon ${r.anonMiB.toFixed(1)}, heap ${r.heapMiB.toFixed(1)} of ${r.heapTotalMiB.toFixed(1)}, external ${r.externalMiB.toFixed(1)})`).join(', ')} MiB`);
      log(`cluster: latency, ${cfg.clusterProbes} endpoints one at a time`);
      const probe = await probes(b, lab, nets, cfg.clusterProbes);
      log(`cluster: cost of one endpoint change`);
      const ops = await opCosts(lab, nets);
      // the probes are gone: the kernel holds `want` again
      await waitKernel(lab.wefts, nets, want, 30_000, 200);
      log(`cluster: a starting host (${lab.hosts[lab.hosts.length - 1]!.name}: weft restarted, kernel state wiped)`);
      const start = await coldStart(lab, nets, want);
      log(`cluster: started host serving after ${start.servingSec.toFixed(2)} s, programmed after ${start.programmedSec?.toFixed(2) ?? 'n/a'} s`);
      const e = await etcdMetrics(lab);
      const etcd = {
        dbBytes: promSum(e, 'etcd_mvcc_db_total_size_in_bytes'),
        keys: promSum(e, 'etcd_debugging_mvcc_keys_total'),
        ...Object.fromEntries(Object.entries(etcdPerMin).map(([k, v]) => [`restMsgsPerMin.${k}`, Math.round(v)])),
      };
      results.push({ size, perNetwork, fill: fillRes, rest, probe, ops, start, etcd, want });
    }
    const logs = lab.wefts.map((w) => weftWarnings(w.logFile));
    for (const [i, l] of logs.entries()) {
      if (l.count) b.notes.push(`cluster: ${lab.hosts[i]!.name}'s weft logged ${l.count} warnings or errors, e.g. ${JSON.stringify(l.last[l.last.length - 1])}`);
    }
    b.details.clusterWeftWarnings = logs;
    const simStats = await lab.sim.stats();
    if (simStats.leasesLost) b.notes.push(`cluster: ${simStats.leasesLost} simulated hosts lost their lease during the run: the figures are suspect`);
    report(b, { hosts: cfg.clusterHosts, real, simulated, idle, results, simStats });
  } finally {
    await destroyClusterLab(lab);
  }
}

// ------------------------------------------------------------ report

interface Row {
  key: string;
  label: string;
  unit: string;
  /** one value per size (median over the real hosts where there are several) */
  get: (r: SizeResult) => number;
  /** samples for the figure of one size (per host, per probe, ...) */
  samples?: (r: SizeResult) => number[];
  idle?: number;
  goal?: Goal;
  goalText?: string;
  /** goal on the idle value rather than the last size */
  idleGoal?: Goal;
}

function report(b: Bench, run: { hosts: number; real: number; simulated: number; idle: ReturnType<typeof procStats>[]; results: SizeResult[]; simStats: unknown }): void {
  const { results } = run;
  const med = (xs: number[]) => median(xs.filter((x) => Number.isFinite(x)));
  const opOf = (r: SizeResult, kind: 'create' | 'delete') => r.ops.find((o) => o.kind === kind);
  const nn = (xs: Array<number | null>) => xs.map((x) => (x === null ? NaN : x));
  const rows: Row[] = [
    { key: 'latency.p50', label: 'endpoint written -> in every real host\'s kernel (FDB + neighbour), p50', unit: 'ms', get: (r) => percentile(r.probe.latencyMs, 50) },
    { key: 'latency.p99', label: 'endpoint written -> in every real host\'s kernel, p99', unit: 'ms', get: (r) => percentile(r.probe.latencyMs, 99), goal: { of: 'median', op: '<=', value: 1000 } },
    { key: 'latency.etcd.p50', label: '... of which: written -> seen by a watch of endpoints/ (etcd), p50', unit: 'ms', get: (r) => percentile(r.probe.watchMs, 50) },
    { key: 'latency.etcd.p99', label: '... of which: written -> seen by a watch of endpoints/ (etcd), p99', unit: 'ms', get: (r) => percentile(r.probe.watchMs, 99) },
    { key: 'latency.weft.p50', label: '... of which: seen by a watch -> in every real host\'s kernel (weft), p50', unit: 'ms', get: (r) => percentile(r.probe.afterWatchMs, 50) },
    { key: 'latency.weft.p99', label: '... of which: seen by a watch -> in every real host\'s kernel (weft), p99', unit: 'ms', get: (r) => percentile(r.probe.afterWatchMs, 99) },
    { key: 'delete.p50', label: 'endpoint deleted -> gone from every real host\'s kernel, p50', unit: 'ms', get: (r) => percentile(r.probe.deleteMs, 50) },
    { key: 'delete.p99', label: 'endpoint deleted -> gone from every real host\'s kernel, p99', unit: 'ms', get: (r) => percentile(r.probe.deleteMs, 99) },
    { key: 'start.programmed', label: 'starting host: weft started -> every entry in its kernel', unit: 's', get: (r) => r.start.programmedSec ?? NaN, goal: { of: 'median', op: '<=', value: 5 } },
    { key: 'start.serving', label: 'starting host: weft started -> plugin socket answers', unit: 's', get: (r) => r.start.servingSec },
    { key: 'fill.done', label: 'bulk fill: last write -> every real host has every peer', unit: 's', get: (r) => med(nn(r.fill.doneAfterWriteSec)), samples: (r) => nn(r.fill.doneAfterWriteSec) },
    { key: 'fill.cpu', label: 'bulk fill: weft CPU per 1,000 new endpoints', unit: 'CPU s', get: (r) => med(r.fill.cpuMsPer1000) / 1000, samples: (r) => r.fill.cpuMsPer1000.map((x) => x / 1000) },
    {
      key: 'rest.rss', label: 'weft resident memory at rest', unit: 'MiB', get: (r) => med(r.rest.map((x) => x.rssMiB)), samples: (r) => r.rest.map((x) => x.rssMiB),
      idle: med(run.idle.map((p) => p.rssMiB)), goal: { of: 'median', op: '<', value: 150 }, idleGoal: { of: 'median', op: '<', value: 90 }, goalText: '< 90 idle, < 150',
    },
    { key: 'rest.hwm', label: 'weft peak resident memory so far (VmHWM)', unit: 'MiB', get: (r) => med(r.rest.map((x) => x.hwmMiB)), samples: (r) => r.rest.map((x) => x.hwmMiB), idle: med(run.idle.map((p) => p.hwmMiB)) },
    { key: 'start.hwm', label: 'starting host: weft peak resident memory', unit: 'MiB', get: (r) => r.start.hwmMiB },
    { key: 'rest.cpu', label: 'weft CPU at rest', unit: '% core', get: (r) => med(r.rest.map((x) => x.cpuPercent)), samples: (r) => r.rest.map((x) => x.cpuPercent) },
    { key: 'rest.requests', label: 'weft store requests at rest', unit: '/min', get: (r) => med(r.rest.map((x) => x.storeRequestsPerMin)), samples: (r) => r.rest.map((x) => x.storeRequestsPerMin) },
    {
      key: 'rest.answer_bytes', label: 'weft store answer bytes at rest (keys + values)', unit: 'KiB/min', get: (r) => med(r.rest.map((x) => x.answerBytesPerMin)) / 1024, samples: (r) => r.rest.map((x) => x.answerBytesPerMin / 1024),
      goalText: 'no growth',
    },
    { key: 'rest.bytes_per_list', label: 'weft store: bytes per list request at rest', unit: 'KiB', get: (r) => med(r.rest.map((x) => x.bytesPerList)) / 1024, samples: (r) => r.rest.map((x) => x.bytesPerList / 1024), goalText: 'no growth' },
    { key: 'rest.link_bytes', label: 'weft underlay traffic at rest (etcd, both ways, on the wire)', unit: 'KiB/min', get: (r) => med(r.rest.map((x) => x.linkBytesPerMin)) / 1024, samples: (r) => r.rest.map((x) => x.linkBytesPerMin / 1024), goalText: 'no growth' },
    { key: 'rest.entries_read', label: 'weft FDB + neighbour entries read back from the kernel at rest', unit: '/min', get: (r) => med(r.rest.map((x) => x.entriesReadPerMin)), samples: (r) => r.rest.map((x) => x.entriesReadPerMin) },
    {
      key: 'change.fdb', label: 'one endpoint created: FDB requests on each other host (add, del, dump)', unit: 'count', get: (r) => med(opOf(r, 'create')?.fdb ?? []), samples: (r) => opOf(r, 'create')?.fdb ?? [],
      goal: { of: 'median', op: '=', value: 1 },
    },
    {
      key: 'change.neigh', label: 'one endpoint created: neighbour requests on each other host', unit: 'count', get: (r) => med(opOf(r, 'create')?.neigh ?? []), samples: (r) => opOf(r, 'create')?.neigh ?? [],
      goal: { of: 'median', op: '=', value: 1 },
    },
    { key: 'change.entries', label: 'one endpoint created: entries read back by dumps, each other host', unit: 'count', get: (r) => med(opOf(r, 'create')?.entriesRead ?? []), samples: (r) => opOf(r, 'create')?.entriesRead ?? [] },
    { key: 'change.del.fdb', label: 'one endpoint deleted: FDB requests on each other host', unit: 'count', get: (r) => med(opOf(r, 'delete')?.fdb ?? []), samples: (r) => opOf(r, 'delete')?.fdb ?? [], goal: { of: 'median', op: '=', value: 1 } },
    { key: 'change.del.neigh', label: 'one endpoint deleted: neighbour requests on each other host', unit: 'count', get: (r) => med(opOf(r, 'delete')?.neigh ?? []), samples: (r) => opOf(r, 'delete')?.neigh ?? [], goal: { of: 'median', op: '=', value: 1 } },
    { key: 'change.notifications', label: 'one endpoint created: kernel FDB + neighbour notifications, each host', unit: 'count', get: (r) => med(opOf(r, 'create')?.notifications ?? []) },
  ];

  // figures, one per row and size (the goal only on the last size), and the idle ones
  for (const row of rows) {
    if (row.idle !== undefined) b.figure(`cluster.idle.${row.key}`, 'cluster, idle (no endpoints)', row.label, row.unit, [row.idle], row.idleGoal);
  }
  for (const r of results) {
    const last = r === results[results.length - 1];
    for (const row of rows) {
      const samples = row.samples ? row.samples(r) : [row.get(r)];
      b.figure(`cluster.${r.size}.${row.key}`, `cluster, ${r.size} endpoints`, row.label, row.unit, samples.length ? samples : [NaN], last ? row.goal : undefined);
    }
  }
  // the sizes side by side
  const first = results[0]!;
  const lastR = results[results.length - 1]!;
  const growthHead = results.length > 1 ? `x (${first.size} -> ${lastR.size})` : 'x';
  const head = ['figure', 'unit', 'idle', ...results.map((r) => String(r.size)), growthHead, 'goal', 'met'];
  const table: string[][] = [head];
  const structured: Array<Record<string, unknown>> = [];
  for (const row of rows) {
    const vals = results.map((r) => row.get(r));
    const growth = results.length > 1 && Number.isFinite(vals[0]!) && vals[0] !== 0 ? vals[vals.length - 1]! / vals[0]! : NaN;
    let met: boolean | undefined;
    if (row.goal) met = checkGoal(row.goal, vals[vals.length - 1]!);
    if (row.idleGoal && row.idle !== undefined) met = (met ?? true) && checkGoal(row.idleGoal, row.idle);
    if (row.goalText === 'no growth' && Number.isFinite(growth)) met = growth <= 1.1;
    const goalText = row.goalText ?? (row.goal ? `${row.goal.op} ${fmt(row.goal.value)}${row.unit === 'count' ? '' : ` ${row.unit}`}` : '');
    table.push([row.label, row.unit, row.idle === undefined ? '' : fmt(row.idle), ...vals.map(fmt), Number.isFinite(growth) ? `${fmt(growth)}x` : '', goalText, met === undefined ? '' : met ? 'yes' : 'NO']);
    structured.push({ key: row.key, label: row.label, unit: row.unit, idle: row.idle, values: Object.fromEntries(results.map((r, i) => [r.size, round(vals[i]!)])), growth: round(growth), goal: goalText || undefined, met });
  }
  const widths = head.map((_, i) => Math.max(...table.map((r) => r[i]!.length)));
  const left = (i: number) => i === 0 || i === 1 || i === head.length - 2;
  const line = (r: string[]) => `| ${r.map((c, i) => (left(i) ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ')} |`;
  const sep = `|${widths.map((w, i) => (left(i) ? '-'.repeat(w + 2) : '-'.repeat(w + 1) + ':')).join('|')}|`;
  b.tables.push({
    title: `Cluster scale: ${run.hosts} hosts (${run.real} real with dockerd and weft, ${run.simulated} simulated), 2 networks; goals apply to the largest size`,
    text: [line(table[0]!), sep, ...table.slice(1).map(line)].join('\n'),
  });
  b.details.cluster = {
    hosts: run.hosts, real: run.real, simulated: run.simulated, networks: NETS,
    idle: run.idle, rows: structured, sim: run.simStats,
    sizes: results.map((r) => ({
      ...r,
      probe: {
        ...r.probe, latencyMs: r.probe.latencyMs.map((x) => round(x)), deleteMs: r.probe.deleteMs.map((x) => round(x)),
        perHostMs: r.probe.perHostMs.map((h) => h.map((x) => round(x))), watchMs: r.probe.watchMs.map((x) => round(x)), afterWatchMs: r.probe.afterWatchMs.map((x) => round(x)),
      },
    })),
  };
  for (const r of results) {
    if (r.probe.missed || r.probe.deleteMissed) b.notes.push(`cluster ${r.size}: ${r.probe.missed} probe endpoints (and ${r.probe.deleteMissed} deletions) did not reach every real host's kernel within ${PROBE_TIMEOUT_MS / 1000} s; left out of the percentiles`);
    if (r.ops.length < 2) b.notes.push(`cluster ${r.size}: a reconcile fell into every attempt at counting one change's netlink requests; that figure is missing`);
  }
}

function checkGoal(g: Goal, v: number): boolean {
  if (!Number.isFinite(v)) return false;
  switch (g.op) {
    case '<': return v < g.value;
    case '<=': return v <= g.value;
    case '>=': return v >= g.value;
    case '=': return v === g.value;
  }
}
