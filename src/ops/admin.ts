// The local admin routes, on the plugin's own unix socket (root-only, 0600).
// Docker only POSTs /<Interface>.<Method>, so GETs under /weft/ cannot clash
// with a plugin call.
//
//   GET /weft/v1/status    this host's view (StatusReport, types.ts)
//   GET /weft/v1/cluster   every key under /weft/v1/ as the running weft
//                          sees it: lets the operator commands read an
//                          embedded store that this weft holds locked
import { networkMode } from '../driver/options';
import type { FastifyInstance } from 'fastify';
import type { Agent } from '../agent/agent';
import { DockerClient } from '../agent/docker';
import { Config, isClusterStore } from '../config';
import type { DataPlaneApi, PeerState } from '../dataplane/types';
import type { LocalNetworks } from '../cluster/local-networks';
import { EndpointRecord, keys, leaf, ROOT } from '../store/keys';
import type { Store } from '../store/store';
import { RUNTIME, VERSION } from '../version';
import type { WireGuard } from '../wireguard';
import { WIREGUARD_PATH } from '../wireguard/ops';
import type { LocalEndpointReport, NetworkReport, PeerEntry, PeerReport, StatusReport } from './types';

export const STATUS_PATH = '/weft/v1/status';
export const CLUSTER_PATH = '/weft/v1/cluster';
/** [wireguard] POST: give this host a new WireGuard key pair. */
export const ROTATE_KEY_PATH = '/weft/v1/wireguard/rotate-key';

export interface AdminDeps {
  cfg: Config;
  store: Store;
  networks: LocalNetworks;
  dataplane: DataPlaneApi;
  /** The agent starts after the socket serves: undefined until then. */
  agent: () => Agent | undefined;
  startedAt: Date;
  /** [wireguard] This host's WireGuard, when it takes part in encrypted networks. */
  wireguard?: WireGuard;
}

export function registerAdminRoutes(app: FastifyInstance, deps: AdminDeps): void {
  app.get(STATUS_PATH, async () => collectStatus(deps));
  // [wireguard] The private key never leaves this process: the answer has the new public key only.
  app.post(ROTATE_KEY_PATH, async (_req, reply) => {
    if (!deps.wireguard) {
      reply.code(409);
      return { Err: `this host has no WireGuard to rotate: ${isClusterStore(deps.cfg.store) ? 'weft serve runs with --encryption off' : 'one host (embedded store), nothing is encrypted between hosts'}` };
    }
    try {
      // The store must answer, or peers could not learn the new key.
      await deps.store.get(keys.host(deps.cfg.hostName));
    } catch (err) {
      reply.code(503);
      return { Err: `the store does not answer (${(err as Error).message}): peers could not learn a new key, so the key was not rotated; retry once the store is reachable` };
    }
    try {
      const r = await deps.wireguard.rotateKey();
      return { host: deps.cfg.hostName, ...r };
    } catch (err) {
      reply.code(503);
      return { Err: (err as Error).message };
    }
  });
  // [wireguard] This host's WireGuard: implementation, peers, handshakes, bytes (never the private key).
  app.get(WIREGUARD_PATH, async (_req, reply) => {
    if (!deps.wireguard) {
      reply.code(409);
      return { Err: 'this host has no WireGuard (--encryption off, or one host)' };
    }
    return deps.wireguard.status();
  });
  app.get(CLUSTER_PATH, async () => {
    const list = await deps.store.list(ROOT);
    return { revision: list.revision, kvs: list.kvs.map((kv) => ({ key: kv.key, value: kv.value })) };
  });
}

const entryKey = (e: PeerEntry) => `${e.kind}|${e.ip ?? ''}|${e.ip6 ?? ''}|${(e.mac ?? '').toLowerCase()}|${e.vtep}`;

function entries(p: PeerState): PeerEntry[] {
  return [
    ...p.endpoints.map((e): PeerEntry => ({ kind: 'endpoint', ip: e.ip, ...(e.ip6 ? { ip6: e.ip6 } : {}), mac: e.mac.toLowerCase(), vtep: e.vtep })),
    ...p.floodVteps.map((v): PeerEntry => ({ kind: 'flood', vtep: v })),
    ...(p.routed?.local ?? []).map((ip): PeerEntry => ({ kind: 'route', ip, vtep: '' })),
    ...(p.routed?.proxies ?? []).map((ip): PeerEntry => ({ kind: 'proxy', ip, vtep: '' })),
  ];
}

/** Kernel against store for one network: what is missing, what is extra. */
export function comparePeers(programmed: PeerState, expected: PeerState): PeerReport {
  const have = entries(programmed);
  const want = entries(expected);
  const haveKeys = new Set(have.map(entryKey));
  const wantKeys = new Set(want.map(entryKey));
  let missing = want.filter((e) => !haveKeys.has(entryKey(e)));
  let extra = have.filter((e) => !wantKeys.has(entryKey(e)));
  // An endpoint programmed in halves reads back as a neighbour without FDB
  // entry (no VTEP) or the reverse (no IP): one missing half, not two drifts.
  const halves: PeerEntry[] = [];
  for (const m of missing) {
    if (m.kind !== 'endpoint') continue;
    const x = extra.find((e) => e.kind === 'endpoint' && e.mac === m.mac &&
      ((!e.vtep && e.ip === m.ip && e.ip6 === m.ip6) || (!e.ip && !e.ip6 && e.vtep === m.vtep)));
    if (!x) continue;
    extra = extra.filter((e) => e !== x);
    halves.push({ ...m, part: x.vtep ? 'neighbour' : 'fdb' });
  }
  missing = [...missing.filter((m) => !halves.some((h) => h.mac === m.mac && h.ip === m.ip && h.ip6 === m.ip6 && h.vtep === m.vtep)), ...halves];
  // Entries programmed in full: a half-programmed endpoint is not counted (it shows as missing its half).
  const full = have.filter((e) => e.kind !== 'endpoint' || ((e.ip || e.ip6) && e.mac && e.vtep)).length;
  return { programmed: full, expected: want.length, missing, extra, drift: missing.length + extra.length };
}

async function timed<T>(fn: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const t0 = process.hrtime.bigint();
  const value = await fn();
  return { value, ms: Number(process.hrtime.bigint() - t0) / 1e6 };
}

/** Per local network: the peers in the kernel against the peers the store asks for. */
export async function networkPeers(deps: Pick<AdminDeps, 'networks' | 'dataplane' | 'agent'>): Promise<{ clusterId: string; name?: string; peers: PeerReport }[]> {
  const agent = deps.agent();
  return Promise.all(deps.networks.list().map(async (local) => {
    const expected: PeerState = agent ? agent.desiredPeers(local.clusterId) : { endpoints: [], floodVteps: [] };
    let peers: PeerReport;
    try {
      const programmed = await deps.dataplane.readPeers(deps.networks.spec(local.clusterId, local.record));
      peers = comparePeers(programmed, expected);
    } catch (err) {
      peers = { ...comparePeers({ endpoints: [], floodVteps: [] }, expected), error: (err as Error).message };
    }
    return { clusterId: local.clusterId, ...(local.record.name ? { name: local.record.name } : {}), peers };
  }));
}

export async function collectStatus(deps: AdminDeps): Promise<StatusReport> {
  const { cfg, store } = deps;
  const cluster = isClusterStore(cfg.store);
  const agent = deps.agent();

  // One timed read answers both "is the store there" and "is our lease alive":
  // the host key is attached to the lease and vanishes when it expires.
  let storeReport: StatusReport['store'];
  let lease: StatusReport['lease'] = { alive: null, ttlSeconds: cfg.leaseTtl };
  try {
    const { value: kv, ms } = await timed(() => store.get(keys.host(cfg.hostName)));
    storeReport = { description: store.description, reachable: true, latencyMs: Math.round(ms * 100) / 100 };
    if (cluster) {
      lease = kv
        ? { alive: true, ttlSeconds: cfg.leaseTtl }
        : { alive: false, ttlSeconds: cfg.leaseTtl, detail: `${keys.host(cfg.hostName)} is not in the store: weft registers again as soon as the store answers` };
    }
  } catch (err) {
    storeReport = { description: store.description, reachable: false, error: (err as Error).message };
    if (cluster) lease = { alive: false, ttlSeconds: cfg.leaseTtl, detail: 'unknown: the store does not answer' };
  }

  // Make sure the local networks are known even before the first reconcile ran.
  if (storeReport.reachable) await deps.networks.loadLocalNetworks().catch(() => undefined);
  const locals = deps.networks.list();
  const peerReports = new Map((await networkPeers(deps)).map((p) => [p.clusterId, p.peers]));

  const docker = new DockerClient(cfg.dockerHost, 2000);
  let dockerError: string | undefined;
  const networks: NetworkReport[] = await Promise.all(locals.map(async (local): Promise<NetworkReport> => {
    const endpoints: LocalEndpointReport[] = [];
    if (storeReport.reachable) {
      try {
        const list = await store.list(keys.endpointsOf(local.clusterId));
        for (const kv of list.kvs) {
          const rec = JSON.parse(kv.value) as EndpointRecord & { container?: string };
          if (rec.host !== cfg.hostName) continue;
          endpoints.push({ id: leaf(kv.key), ...(rec.container ? { container: rec.container } : {}), ip: rec.ip, ...(rec.ip6 ? { ip6: rec.ip6 } : {}), mac: rec.mac });
        }
      } catch {
        // reported through store.reachable
      }
    }
    if (endpoints.length) {
      try {
        const net = await docker.inspectNetwork(local.localId);
        const byEndpoint = new Map(Object.values(net.Containers ?? {}).map((c) => [c.EndpointID ?? '', c.Name ?? '']));
        for (const e of endpoints) if (!e.container && byEndpoint.get(e.id)) e.container = byEndpoint.get(e.id);
      } catch (err) {
        dockerError = `${cfg.dockerHost}: ${(err as Error).message}`;
      }
    }
    endpoints.sort((a, b) => a.ip.localeCompare(b.ip, undefined, { numeric: true }));
    const r = local.record;
    return {
      clusterId: local.clusterId, localId: local.localId, ...(r.name ? { name: r.name } : {}), vni: r.vni,
      ...(r.subnet ? { subnet: r.subnet } : {}), ...(r.gateway ? { gateway: r.gateway } : {}),
      ...(r.subnet6 ? { subnet6: r.subnet6 } : {}), ...(r.gateway6 ? { gateway6: r.gateway6 } : {}), mtu: r.mtu,
      ...(r.deleting ? { deleting: true } : {}),
      ...(r.encrypted ? { encrypted: true } : {}),
      ...(networkMode(r.options) === 'routed' ? { mode: 'routed' as const, paths: agent?.routedPaths(local.clusterId) ?? [] } : {}),
      endpoints,
      peers: peerReports.get(local.clusterId) ?? comparePeers({ endpoints: [], floodVteps: [] }, { endpoints: [], floodVteps: [] }),
    };
  }));
  networks.sort((a, b) => (a.name ?? a.clusterId).localeCompare(b.name ?? b.clusterId));

  return {
    host: cfg.hostName,
    version: VERSION,
    runtime: RUNTIME,
    pid: process.pid,
    startedAt: deps.startedAt.toISOString(),
    cluster,
    ...(cfg.advertiseAddr ? { advertiseAddr: cfg.advertiseAddr } : {}),
    store: storeReport,
    lease,
    agent: agent ? { ...agent.stats } : { corrections: 0, peersProgrammed: 0, storeErrors: 0, synced: false, invalidRecords: 0 },
    reconcileIntervalSeconds: cfg.reconcileInterval,
    ...(dockerError ? { docker: { error: dockerError } } : {}),
    networks,
    drift: networks.reduce((n, x) => n + x.peers.drift, 0),
    ...(deps.wireguard ? { wireguard: await deps.wireguard.status() } : {}),
  };
}
