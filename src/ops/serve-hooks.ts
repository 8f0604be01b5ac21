// What `weft serve` runs for operators, kept out of serve.ts: the metrics,
// the instrumented store, the admin routes on the plugin socket, the
// --metrics-addr listener and the probe responder for `weft doctor`.
import type { FastifyInstance } from 'fastify';
import type * as http from 'http';
import type { Logger } from 'pino';
import type { Agent } from '../agent/agent';
import { Config, isClusterStore } from '../config';
import { peerRequestCounts } from '../dataplane/netlink';
import type { DataPlaneApi } from '../dataplane/types';
import type { LocalNetworks } from '../cluster/local-networks';
import type { Store } from '../store/store';
import { VERSION } from '../version';
import { INSTANCE, STARTED_AT } from '../instance';
import { hostPort } from '../util/ip';
import type { WireGuard } from '../wireguard';
import { registerWireGuardMetrics } from '../wireguard/ops';
import { registerAdminRoutes } from './admin';
import { InstrumentedStore } from './instrumented-store';
import { WeftMetrics } from './metrics';
import { checkHealth, startMetricsServer } from './metrics-server';
import { Responder, startProbeResponder } from './probe';

export interface Ops {
  metrics: WeftMetrics;
  /** Use this store everywhere: it feeds the store metrics and /healthz. */
  store: InstrumentedStore;
  /** For buildServer's onCall. */
  onCall: (method: string, outcome: string, ms: number) => void;
  /** Adds the admin routes; call before the server listens. */
  register(app: FastifyInstance, d: { networks: LocalNetworks; dataplane: DataPlaneApi; wireguard?: WireGuard }): void;
  /** Once the socket serves: the metrics listener (fails when --metrics-addr cannot be used) and the probe responder. */
  start(agent: Agent, log: Logger): Promise<void>;
  /** Counters of the DNS server (--dns-addr), copied into /metrics at each scrape. */
  observeDns(stats: () => Record<string, number> | undefined): void;
  /** Counters of the memory returner (src/util/memory.ts), copied into /metrics at each scrape. */
  observeMemory(stats: () => { releases: number; releasedBytes: number }): void;
  close(): Promise<void>;
}

export function createOps(cfg: Config, store: Store): Ops {
  const metrics = new WeftMetrics();
  const istore = new InstrumentedStore(store, metrics);
  const startedAt = new Date();
  let agent: Agent | undefined;
  let deps: { networks: LocalNetworks; dataplane: DataPlaneApi; wireguard?: WireGuard } | undefined;
  let server: http.Server | undefined;
  let responder: Responder | undefined;
  const cluster = isClusterStore(cfg.store);

  metrics.info.set({ version: VERSION, host: cfg.hostName }, 1);
  // FDB and neighbour requests sent to the kernel (a scrape itself sends none).
  metrics.registry.onCollect(() => {
    for (const table of ['fdb', 'neigh', 'route'] as const) {
      const c = peerRequestCounts[table];
      for (const op of ['add', 'del', 'dump'] as const) metrics.netlinkRequests.setTotal({ table, op }, c[op]);
      metrics.netlinkDumpEntries.setTotal({ table }, c.dumpEntries);
    }
  });
  registerWireGuardMetrics(metrics.registry, () => deps?.wireguard); // [wireguard]
  let dnsStats: (() => Record<string, number> | undefined) | undefined;
  metrics.registry.onCollect(() => {
    for (const [event, n] of Object.entries(dnsStats?.() ?? {})) metrics.dns.setTotal({ event }, n);
  });
  metrics.registry.onCollect(() => {
    if (!agent) return;
    const s = agent.stats;
    metrics.peersProgrammed.setTotal({}, s.peersProgrammed);
    metrics.corrections.setTotal({}, s.corrections);
    metrics.agentStoreErrors.setTotal({}, s.storeErrors);
    if (s.lastReconcile) metrics.lastReconcile.set({}, Date.parse(s.lastReconcile) / 1000);
    if (s.reconcileMs !== undefined) metrics.reconcileSeconds.set({}, s.reconcileMs / 1000);
  });
  metrics.registry.onCollect(() => {
    const ops = deps?.dataplane.peerOps?.();
    if (!ops) return;
    metrics.peerOps.setTotal({ table: 'fdb' }, ops.fdb);
    metrics.peerOps.setTotal({ table: 'neighbour' }, ops.neighbour);
    metrics.peerOps.setTotal({ table: 'route' }, ops.route ?? 0);
  });
  // A scrape reads no kernel table: a dump waits in the same per-network
  // queue as Join, and at 10,000 endpoints each one is 20,000 entries of
  // garbage. The agent's own bookkeeping (what it programmed, and what the
  // reconcile's full compare with the kernel repaired) is the answer.
  metrics.registry.onCollect(() => {
    metrics.peers.reset();
    metrics.drift.reset();
    if (!agent || !deps) return;
    const names = new Map(deps.networks.list().map((l) => [l.clusterId, l.record.name]));
    for (const n of agent.peerReport()) {
      const network = names.get(n.clusterId) ?? n.clusterId.slice(0, 12);
      metrics.peers.set({ network, state: 'programmed' }, n.programmed);
      metrics.peers.set({ network, state: 'expected' }, n.expected);
      metrics.drift.set({ network }, n.drift);
    }
  });
  let memoryStats: (() => { releases: number; releasedBytes: number }) | undefined;
  metrics.registry.onCollect(() => {
    const r = memoryStats?.();
    if (r) {
      metrics.memoryReleases.setTotal({}, r.releases);
      metrics.memoryReleased.setTotal({}, r.releasedBytes);
    }
    const m = process.memoryUsage();
    metrics.residentMemory.set({}, m.rss);
    metrics.heapUsed.set({}, m.heapUsed);
    metrics.heapTotal.set({}, m.heapTotal);
    metrics.externalMemory.set({}, m.external);
  });
  metrics.registry.onCollect(() => {
    if (!agent) return;
    metrics.endpointAddresses.reset();
    for (const [cid, eps] of agent.view.endpoints) {
      const network = agent.view.networks.get(cid)?.name ?? cid.slice(0, 12);
      let v4 = 0;
      let v6 = 0;
      for (const e of eps.values()) {
        if (e.ip) v4++;
        if (e.ip6) v6++;
      }
      metrics.endpointAddresses.set({ network, family: 'ipv4' }, v4);
      metrics.endpointAddresses.set({ network, family: 'ipv6' }, v6);
    }
    for (const [kind, n] of agent.invalid.byKind) metrics.invalidRecords.setTotal({ kind }, n);
    metrics.suspects.set({}, agent.liveness.report().length);
    // From the agent's mirror of the store (its watch), not a store request per scrape.
    if (cluster) metrics.leaseAlive.set({}, agent.registered() ? 1 : 0);
  });

  return {
    metrics,
    store: istore,
    onCall: metrics.onCall,
    observeMemory(stats) {
      memoryStats = stats;
    },
    observeDns(stats) {
      dnsStats = stats;
    },
    register(app, d) {
      deps = d;
      registerAdminRoutes(app, { cfg, store: istore, networks: d.networks, dataplane: d.dataplane, agent: () => agent, startedAt, ...(d.wireguard ? { wireguard: d.wireguard } : {}) });
    },
    async start(a, log) {
      agent = a;
      if (cfg.metricsAddr) {
        server = await startMetricsServer(cfg.metricsAddr, metrics.registry, () => checkHealth({
          socket: cfg.socket, store: istore, hostName: cfg.hostName,
          freshMs: Math.max(15_000, 2 * cfg.reconcileInterval * 1000),
          probeTimeoutMs: Math.min(cfg.storeTimeout, 2000),
        }), log.child({ part: 'metrics' }));
      }
      if (cluster && cfg.probePort > 0 && cfg.advertiseAddr) {
        try {
          responder = await startProbeResponder({
            address: cfg.advertiseAddr, port: cfg.probePort, vxlanPort: cfg.vxlanPort, host: cfg.hostName, logger: log.child({ part: 'probe' }),
            instance: INSTANCE, startedAt: STARTED_AT,
          });
        } catch (err) {
          log.warn({ err: (err as Error).message, probePort: cfg.probePort },
            `cannot answer probes (other hosts' liveness checks, weft doctor) on UDP ${hostPort(cfg.advertiseAddr, cfg.probePort)}: give --probe-port a free port (the same on every host), or 0 to turn the probes off`);
        }
      }
    },
    async close() {
      await responder?.close().catch(() => undefined);
      if (server) {
        const closed = new Promise<void>((resolve) => server!.close(() => resolve()));
        server.closeAllConnections();
        await closed;
      }
    },
  };
}
