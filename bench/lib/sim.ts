// Simulated weft hosts against a real etcd: what a cluster of 100 hosts
// looks like to the few real wefts of the cluster phase, without 100 dockerds.
//
// Each simulated host has its own etcd client (one connection, as a weft
// has), registers under its own lease and keeps it alive, binds every
// network (bindings/<network>/<host>), and writes its containers' records
// with the key layout and record shapes of src/store/keys.ts:
//   addrs/<pool>/<ip>          what RequestAddress writes (create-if-absent)
//   endpoints/<network>/<id>   what CreateEndpoint writes: the record the
//                              other hosts program into their kernels
//   names/<network>/<id>       and askers/<host>/<ip>: what the DNS learner
//                              writes from Docker, under the host's lease.
// The bulk fill writes these in transactions of many records (a fill is not
// a figure); a probe writes one endpoint exactly as weft does, one request
// after the other, and says when it sent the endpoint record.
//
// Simulated hosts' VTEPs are in 198.51.100.0/24 and 203.0.113.0/24: FDB
// entries on the real hosts point there, and nothing on the lab's underlay
// answers or routes them.
//
// This module runs in the simulator's process (bench/lib/sim-main.ts), inside
// a lab namespace on the underlay; the bench drives it through sim-client.ts.
import { randomBytes } from 'node:crypto';
import { Etcd3, type IRequestOp, type Lease } from 'etcd3';
import {
  keys, type AddressRecord, type AskerRecord, type BindingRecord, type EndpointRecord, type HostRecord, type NameRecord,
} from '../../src/store/keys';

export interface SimNetwork {
  clusterId: string;
  /** Docker name (the same on every host) */
  name: string;
  /** e.g. 10.96.0.0/18 */
  subnet: string;
}

export interface SimInit {
  /** http://192.0.2.1:2379 */
  etcd: string;
  hosts: number;
  /** weft's version, for the host records */
  version: string;
  leaseTtl: number;
  networks: SimNetwork[];
}

export interface ProbeResult {
  network: number;
  clusterId: string;
  endpointId: string;
  host: string;
  vtep: string;
  ip: string;
  mac: string;
  /** epoch ms: the endpoint record's put sent, and answered */
  sentAt: number;
  ackAt: number;
}

/** When the simulator's own watch of endpoints/ saw each probe's put and delete (epoch ms): etcd's share of the latency. */
export interface WatchTimes { put: Record<string, number>; delete: Record<string, number> }

/** A fill writes this many keys per transaction (etcd's default --max-txn-ops is 128). */
const OPS_PER_TXN = 100;
const KEYS_PER_ENDPOINT = 4;
const TXN_IN_FLIGHT = 8;
/** Probe endpoints take addresses from this offset up (fill endpoints from FIRST_OFFSET). */
const FIRST_OFFSET = 16;
const PROBE_OFFSET = 15_000;
export const MAX_PER_NETWORK = PROBE_OFFSET - FIRST_OFFSET;

export const nowMs = (): number => performance.timeOrigin + performance.now();
const hex = (bytes: number): string => randomBytes(bytes).toString('hex');

function ipToInt(ip: string): number {
  const p = ip.split('.').map(Number);
  return ((p[0]! << 24) | (p[1]! << 16) | (p[2]! << 8) | p[3]!) >>> 0;
}
const intToIp = (n: number): string => [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
/** Docker's MAC for an address when none is given: 02:42 and the four bytes of the IP. */
const macOf = (ip: string): string => ['02', '42', ...ip.split('.').map((x) => Number(x).toString(16).padStart(2, '0'))].join(':');
/** weft's pool key: the subnet with '_' for '/'. */
export const poolKeyOf = (subnet: string): string => subnet.replace('/', '_');

/** Simulated host i's VTEP (i from 0): 198.51.100.10.. then 203.0.113.10.. */
export function simVtep(i: number): string {
  if (i < 240) return `198.51.100.${10 + i}`;
  if (i < 480) return `203.0.113.${10 + i - 240}`;
  throw new Error(`simulated host ${i}: only 480 test-range VTEPs`);
}
export const simHostName = (i: number): string => `sim-${String(i + 1).padStart(3, '0')}`;

interface SimHost {
  index: number;
  name: string;
  vtep: string;
  client: Etcd3;
  lease?: Lease;
  leaseId?: string;
  /** per network: this host's Docker id of the network */
  localIds: string[];
  /** containers so far (their docker_gwbridge addresses) */
  containers: number;
}

/** The endpoints written so far, per network (fill and probes). */
interface NetState {
  net: SimNetwork;
  base: number;
  poolKey: string;
  filled: number;
  probes: number;
  /** probe endpoints still in the store: endpoint id -> {host index, ip} */
  live: Map<string, { host: number; ip: string }>;
}

export class SimCluster {
  private hosts: SimHost[] = [];
  private nets: NetState[] = [];
  private readonly cfg: SimInit;
  leasesLost = 0;
  keysWritten = 0;
  /** a watch of endpoints/ on a connection of its own, as a weft has: when it sees the probes' keys */
  private watchClient?: Etcd3;
  private readonly watched = new Set<string>();
  private readonly seen: WatchTimes = { put: {}, delete: {} };

  constructor(cfg: SimInit) {
    if (cfg.hosts < 1 || cfg.hosts > 480) throw new Error(`simulated hosts: 1 to 480, not ${cfg.hosts}`);
    this.cfg = cfg;
    for (const net of cfg.networks) {
      const [addr, len] = net.subnet.split('/');
      if (Number(len) > 18) throw new Error(`network ${net.name}: the simulator needs a /18 or larger (${net.subnet})`);
      this.nets.push({ net, base: ipToInt(addr!), poolKey: poolKeyOf(net.subnet), filled: 0, probes: 0, live: new Map() });
    }
  }

  /** Every simulated host registers under its lease and binds every network. */
  async start(): Promise<void> {
    this.watchClient = new Etcd3({ hosts: this.cfg.etcd, grpcOptions: { 'grpc.max_receive_message_length': -1 } });
    const w = await this.watchClient.watch().prefix(keys.endpoints()).create();
    w.on('put', (kv) => {
      const k = kv.key.toString();
      if (this.watched.has(k)) this.seen.put[k] ??= nowMs();
    });
    w.on('delete', (kv) => {
      const k = kv.key.toString();
      if (this.watched.has(k)) this.seen.delete[k] ??= nowMs();
    });
    for (let i = 0; i < this.cfg.hosts; i++) {
      this.hosts.push({
        index: i, name: simHostName(i), vtep: simVtep(i), containers: 0,
        client: new Etcd3({ hosts: this.cfg.etcd, grpcOptions: { 'grpc.max_receive_message_length': -1 } }),
        localIds: this.nets.map(() => hex(32)),
      });
    }
    await pool(this.hosts, 16, async (h) => {
      const lease = h.client.lease(this.cfg.leaseTtl);
      lease.on('lost', (err: Error) => {
        this.leasesLost++;
        process.stderr.write(`[sim] ${h.name}: lease lost: ${err.message}\n`);
      });
      h.leaseId = String(await lease.grant());
      h.lease = lease;
      const rec: HostRecord = { address: h.vtep, version: this.cfg.version, startedAt: new Date().toISOString() };
      await h.client.put(keys.host(h.name)).value(JSON.stringify(rec)).lease(h.leaseId).exec();
      for (const [n, s] of this.nets.entries()) {
        const b: BindingRecord = { localId: h.localIds[n]! };
        await h.client.put(keys.binding(s.net.clusterId, h.name)).value(JSON.stringify(b)).exec();
      }
      this.keysWritten += 1 + this.nets.length;
    });
  }

  /** The records of one container on network n, endpoint number k (its address comes from k). */
  private records(h: SimHost, n: number, offset: number): { ops: IRequestOp[]; ip: string; mac: string; endpointId: string } {
    const s = this.nets[n]!;
    const ip = intToIp(s.base + offset);
    const mac = macOf(ip);
    const endpointId = hex(32);
    const container = hex(32);
    const at = new Date().toISOString();
    const name = `${h.name}-c${h.containers}`;
    // docker_gwbridge addresses of this host's containers: 172.18.0.2 up
    const gw = intToIp(ipToInt('172.18.0.2') + h.containers);
    h.containers++;
    const addr: AddressRecord = { host: h.name, kind: 'endpoint', mac, at };
    const ep: EndpointRecord = { host: h.name, vtep: h.vtep, ip, mac, localNetwork: h.localIds[n]!, createdAt: at };
    const nameRec: NameRecord = { name, aliases: [container.slice(0, 12)], ip, host: h.name, network: s.net.name, container };
    const asker: AskerRecord = { networks: [s.net.clusterId], container, name };
    const put = (key: string, value: unknown, lease?: string): IRequestOp => ({
      request_put: { key: Buffer.from(key), value: Buffer.from(JSON.stringify(value)), ...(lease ? { lease } : {}) },
    });
    return {
      ip, mac, endpointId,
      ops: [
        put(keys.addr(s.poolKey, ip), addr),
        put(keys.endpoint(s.net.clusterId, endpointId), ep),
        put(keys.name(s.net.clusterId, endpointId), nameRec, h.leaseId),
        put(keys.asker(h.name, gw), asker, h.leaseId),
      ],
    };
  }

  /** Grows every network to `perNetwork` endpoints, spread evenly over the simulated hosts. */
  async fill(perNetwork: number): Promise<{ endpoints: number; txns: number; ms: number }> {
    if (perNetwork > MAX_PER_NETWORK) throw new Error(`at most ${MAX_PER_NETWORK} endpoints per network`);
    const t0 = nowMs();
    // per host, its new endpoints' records, in transactions of OPS_PER_TXN keys
    const perHost = new Map<number, IRequestOp[]>();
    let endpoints = 0;
    for (const [n, s] of this.nets.entries()) {
      for (let k = s.filled; k < perNetwork; k++) {
        const h = this.hosts[(k + n) % this.hosts.length]!;
        const r = this.records(h, n, FIRST_OFFSET + k);
        const ops = perHost.get(h.index) ?? [];
        ops.push(...r.ops);
        perHost.set(h.index, ops);
        endpoints++;
      }
      s.filled = Math.max(s.filled, perNetwork);
    }
    const txns: Array<{ h: SimHost; ops: IRequestOp[]; turn: number }> = [];
    const per = Math.floor(OPS_PER_TXN / KEYS_PER_ENDPOINT) * KEYS_PER_ENDPOINT;
    for (const [i, ops] of perHost) {
      for (let j = 0; j < ops.length; j += per) txns.push({ h: this.hosts[i]!, ops: ops.slice(j, j + per), turn: j / per });
    }
    // hosts take turns, so that every host's endpoints arrive throughout the fill
    txns.sort((a, b) => a.turn - b.turn || a.h.index - b.h.index);
    await pool(txns, TXN_IN_FLIGHT, async ({ h, ops }) => {
      await h.client.kv.txn({ compare: [], success: ops, failure: [] });
      this.keysWritten += ops.length;
    });
    return { endpoints, txns: txns.length, ms: nowMs() - t0 };
  }

  /**
   * One new endpoint on network n, on a random simulated host, written as
   * weft writes it: RequestAddress (create the address key if absent), then
   * CreateEndpoint (put the endpoint record). sentAt is when that put went out.
   */
  async probe(n: number): Promise<ProbeResult> {
    const s = this.nets[n];
    if (!s) throw new Error(`no network ${n}`);
    const h = this.hosts[Math.floor(Math.random() * this.hosts.length)]!;
    const ip = intToIp(s.base + PROBE_OFFSET + (s.probes++ % 1000));
    const mac = macOf(ip);
    const endpointId = hex(32);
    const at = new Date().toISOString();
    const addrKey = keys.addr(s.poolKey, ip);
    const addr: AddressRecord = { host: h.name, kind: 'endpoint', mac, at };
    const claimed = await h.client.if(addrKey, 'Version', '==', 0).then(h.client.put(addrKey).value(JSON.stringify(addr))).commit();
    if (!claimed.succeeded) throw new Error(`probe address ${ip} is taken`);
    const ep: EndpointRecord = { host: h.name, vtep: h.vtep, ip, mac, localNetwork: h.localIds[n]!, createdAt: at };
    this.watched.add(keys.endpoint(s.net.clusterId, endpointId));
    const sentAt = nowMs();
    await h.client.put(keys.endpoint(s.net.clusterId, endpointId)).value(JSON.stringify(ep)).exec();
    const ackAt = nowMs();
    this.keysWritten += 2;
    s.live.set(endpointId, { host: h.index, ip });
    return { network: n, clusterId: s.net.clusterId, endpointId, host: h.name, vtep: h.vtep, ip, mac, sentAt, ackAt };
  }

  /** DeleteEndpoint then ReleaseAddress of a probe endpoint, as weft does them. sentAt is when the delete went out. */
  async unprobe(n: number, endpointId: string): Promise<{ sentAt: number; ackAt: number }> {
    const s = this.nets[n];
    const live = s?.live.get(endpointId);
    if (!s || !live) throw new Error(`no probe endpoint ${endpointId} on network ${n}`);
    const h = this.hosts[live.host]!;
    const sentAt = nowMs();
    await h.client.delete().key(keys.endpoint(s.net.clusterId, endpointId)).exec();
    const ackAt = nowMs();
    await h.client.delete().key(keys.addr(s.poolKey, live.ip)).exec();
    s.live.delete(endpointId);
    return { sentAt, ackAt };
  }

  /** What the watch saw of the probes so far; forgets it. */
  watchTimes(): WatchTimes {
    const out = { put: { ...this.seen.put }, delete: { ...this.seen.delete } };
    for (const k of Object.keys(this.seen.delete)) this.watched.delete(k);
    this.seen.put = {};
    this.seen.delete = {};
    return out;
  }

  stats(): { hosts: number; leasesLost: number; keysWritten: number; endpoints: number[] } {
    return { hosts: this.hosts.length, leasesLost: this.leasesLost, keysWritten: this.keysWritten, endpoints: this.nets.map((s) => s.filled + s.live.size) };
  }

  /** Closes the clients without revoking: the leases (and names) expire with etcd, which the bench stops. */
  close(): void {
    try {
      this.watchClient?.close();
    } catch {
      /* closing anyway */
    }
    for (const h of this.hosts) {
      try {
        h.lease?.release();
        h.client.close();
      } catch {
        /* closing anyway */
      }
    }
  }
}

/** Runs fn over items with at most `n` at a time; the first failure fails the whole (after the others settle). */
export async function pool<T>(items: readonly T[], n: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failed: unknown;
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, async () => {
    for (let i = next++; i < items.length && failed === undefined; i = next++) {
      try {
        await fn(items[i]!);
      } catch (e) {
        failed ??= e;
      }
    }
  }));
  if (failed !== undefined) throw failed;
}
