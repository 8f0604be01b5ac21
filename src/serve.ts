// `weft serve`: wires the parts together and owns the process lifecycle.
//
// Order matters at start-up: Docker gives a plugin about 10 s (managed) or
// ~15 s of retries (v1) to answer on its socket, and a daemon at boot waits on
// it. So the socket is served as soon as the store object exists (etcd is
// connected to lazily), and the agent's slower work (reconcile, registration,
// watches) starts only afterwards, never in front of a driver call.

import * as fs from 'fs';
import * as net from 'net';
import * as path from 'path';
import type { Logger } from 'pino';
import { Agent } from './agent/agent';
import { engineSocketStale } from './agent/docker';
import { buildServer } from './api/server';
import { Config, driverName, isClusterStore, redacted } from './config';
import { DataPlane } from './dataplane/dataplane';
import { Driver } from './driver/driver';
import { LocalNetworks } from './cluster/local-networks';
import { Ipam } from './ipam/ipam';
import { createLogger } from './log';
import { startDns } from './dns';
import { createOps } from './ops/serve-hooks';
import { MemoryReturner } from './util/memory';
import { CompilerTiers } from './util/tiering';
import { openStore } from './store';
import { RUNTIME, runtimeWarning, VERSION } from './version';
import { checkHostName, DuplicateHostError, IDENTITY_PROBE_MS } from './agent/identity';
import { checkMountNamespace } from './mountns';
import { Prober } from './ops/probe';
import { createWireGuard } from './wireguard/serve-hooks';

export async function serve(cfg: Config): Promise<void> {
  const log = createLogger(cfg.logLevel);
  log.info({ version: VERSION, runtime: RUNTIME, config: redacted(cfg) }, 'weft starting');
  const oldRuntime = runtimeWarning();
  if (oldRuntime) log.warn(oldRuntime);

  fs.mkdirSync(cfg.stateDir, { recursive: true, mode: 0o700 });
  fs.mkdirSync(cfg.runDir, { recursive: true, mode: 0o700 });
  const mountWarning = checkMountNamespace(cfg.runDir);
  if (mountWarning) log.warn({ runDir: cfg.runDir }, mountWarning);
  const cluster = isClusterStore(cfg.store);
  const rawStore = await openStore(cfg.store, {
    stateDir: cfg.stateDir,
    requestTimeoutMs: cfg.storeTimeout,
    ...(cfg.etcdCa || cfg.etcdCert ? { tls: { ca: cfg.etcdCa || undefined, cert: cfg.etcdCert || undefined, key: cfg.etcdKey || undefined } } : {}),
    ...(cfg.etcdUser ? { auth: { username: cfg.etcdUser, password: cfg.etcdPassword } } : {}),
    logger: log.child({ part: 'store' }),
    // Serve the socket even while etcd is unreachable: dockerd waits on the
    // plugin at boot, and calls that need etcd fail on their own timeout.
    verifyConnection: false,
  });
  // Operator side (src/ops): store metrics, admin routes, --metrics-addr, doctor probes.
  const ops = createOps(cfg, rawStore);
  const store = ops.store;
  // Probes to other wefts over the underlay: is a host whose lease expired still there, who holds a host name.
  const prober = cluster && cfg.advertiseAddr && cfg.probePort > 0 ? new Prober(cfg.advertiseAddr, cfg.probePort) : undefined;
  const ask = prober ? (address: string, timeoutMs: number) => prober.ask(address, timeoutMs) : undefined;
  if (cluster) await refuseTakenName(cfg, store, ask, log);
  const dataplane = new DataPlane({ runDir: cfg.runDir, logger: log.child({ part: 'dataplane' }) });
  // [wireguard] Encrypted networks: this host's WireGuard (started by the agent, before its first reconcile).
  const { wireguard, encryption } = createWireGuard(cfg, store, log.child({ part: 'wireguard' }));
  const ipam = new Ipam(store, {
    host: cfg.hostName, defaultPool: cfg.defaultPool, defaultPoolSize: cfg.defaultPoolSize, defaultPoolV6: cfg.defaultPoolV6, logger: log.child({ part: 'ipam' }),
  });
  const networks = new LocalNetworks(store, ipam, dataplane, {
    host: cfg.hostName, cluster, advertiseAddr: cfg.advertiseAddr || undefined, runDir: cfg.runDir,
    defaultMtu: cfg.mtu, vxlanPort: cfg.vxlanPort, logger: log.child({ part: 'networks' }), encryption,
  });
  const driver = new Driver(store, ipam, dataplane, {
    host: cfg.hostName, cluster, advertiseAddr: cfg.advertiseAddr || undefined, runDir: cfg.runDir,
    defaultMtu: cfg.mtu, vxlanPort: cfg.vxlanPort, driverName: driverName(cfg), logger: log.child({ part: 'driver' }),
  }, networks);
  const app = buildServer({ driver, ipam }, { bodyLimit: cfg.bodyLimit, logger: log.child({ part: 'api' }), onCall: ops.onCall });
  ops.register(app, { networks, dataplane, ...(wireguard ? { wireguard } : {}) });

  await listenUnix(app, cfg.socket, log);
  log.info({ socket: cfg.socket, store: store.description, driver: driverName(cfg) }, 'serving the plugin API');

  let fatal = false;
  let stopNow: ((signal: string, code?: number) => Promise<void>) | undefined;
  const agent = new Agent({
    store, networks, ipam, dataplane, cfg, logger: log.child({ part: 'agent' }), ask,
    ...(wireguard ? { wireguard } : {}),
    onFatal: (err) => {
      process.stderr.write(`weft: ${err.message}\n`);
      fatal = true;
      if (stopNow) void stopNow('fatal', 1);
    },
  });
  // DNS for container names across hosts (--dns-addr): fed by the agent's mirror, so set up before it starts.
  const dns = startDns({ cfg, store, agent, view: agent.view, networks, logger: log.child({ part: 'dns' }) });
  ops.observeDns(() => (dns?.server ? { ...dns.server.stats } : undefined));
  // A container's name goes to the store right after its Join, before its start ends.
  if (dns) driver.onJoined((localId, endpointId) => dns.learner.endpointJoined(localId, endpointId));
  agent.start();
  await ops.start(agent, log);
  // V8 keeps freed heap pages resident: give them back after a burst (a big list or fill).
  const memory = new MemoryReturner({ logger: log.child({ part: 'memory' }) });
  ops.observeMemory(() => memory.stats);
  memory.start();
  // Launched with the optimizing compilers off (start-up's one-shot work would page their code in): on at the first busy second.
  const tiers = new CompilerTiers({ logger: log.child({ part: 'memory' }) });
  tiers.start();

  let stopping = false;
  const stop = async (signal: string, code = 0) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'weft stopping; kernel state stays so running containers keep their network');
    const force = setTimeout(() => process.exit(1), 10_000);
    force.unref();
    try {
      memory.stop();
      tiers.stop();
      await app.close();
      await ops.close();
      await dns?.close();
      await agent.stop();
      prober?.close();
      wireguard?.close();
      await dataplane.close();
      await store.close();
    } catch (err) {
      log.error({ err }, 'error while stopping');
    }
    try {
      fs.unlinkSync(cfg.socket);
    } catch {
      // already gone
    }
    process.exit(code);
  };
  stopNow = stop;
  if (fatal) void stop('fatal', 1);
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  // A managed plugin outlives a live-restore restart of dockerd, but its
  // mount of the Engine socket still holds the old, removed socket file:
  // exit, and Docker (which restarts a live-restored plugin that exits)
  // starts it again with the new one. Running containers keep their network.
  const socketWatch = setInterval(() => {
    if (!engineSocketStale(cfg.dockerHost)) return;
    clearInterval(socketWatch);
    log.error({ dockerHost: cfg.dockerHost },
      'the Docker Engine socket was replaced (dockerd restarted with live-restore while weft kept running as a managed plugin); exiting so that Docker restarts weft with the new socket');
    void stop('docker socket replaced', 75);
  }, 2_000);
  socketWatch.unref();
}

/**
 * Refuses to start when a live host already holds this host's name (see
 * agent/identity.ts). Bounded: when the store does not answer, the agent
 * makes the same check before it acts on the name.
 */
async function refuseTakenName(cfg: Config, store: Parameters<typeof checkHostName>[0], ask: Parameters<typeof checkHostName>[2], log: Logger): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  // A record with this host's own address is most likely its previous run (a
  // restart): not worth a probe's wait before serving. The agent checks it
  // before it acts on the name.
  const askOthers: typeof ask = ask ? (address, ms) => (address === cfg.advertiseAddr ? Promise.resolve(undefined) : ask(address, ms)) : undefined;
  try {
    await Promise.race([
      checkHostName(store, cfg.hostName, askOthers),
      // never long: the socket must be served soon (dockerd waits on it at boot)
      new Promise((resolve) => { timer = setTimeout(resolve, Math.min(cfg.storeTimeout, 2000) + IDENTITY_PROBE_MS); }),
    ]);
  } catch (err) {
    if (err instanceof DuplicateHostError) {
      log.fatal({ code: err.code, host: cfg.hostName }, err.message);
      throw err;
    }
    log.debug({ err: (err as Error).message }, 'could not check the host name at start; the agent checks it before registering');
  } finally {
    clearTimeout(timer);
  }
}

/** Listen on the plugin socket, root-only (0600); refuse to steal the socket of a weft that is still running. */
async function listenUnix(app: ReturnType<typeof buildServer>, socket: string, log: Logger): Promise<void> {
  fs.mkdirSync(path.dirname(socket), { recursive: true });
  if (fs.existsSync(socket)) {
    if (await answers(socket)) {
      throw new Error(`another process is already serving ${socket}: stop it first, or give this weft another --socket`);
    }
    log.info({ socket }, 'removing a stale socket left by a previous run');
    fs.unlinkSync(socket);
  }
  const old = process.umask(0o177);
  try {
    await app.listen({ path: socket });
  } finally {
    process.umask(old);
  }
  fs.chmodSync(socket, 0o600);
}

function answers(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(socket);
    const done = (ok: boolean) => {
      c.destroy();
      resolve(ok);
    };
    c.once('connect', () => done(true));
    c.once('error', () => done(false));
    setTimeout(() => done(false), 1000).unref();
  });
}
