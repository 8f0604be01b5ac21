// The agent: everything weft does on its own initiative rather than in answer
// to a driver call. It
//   - registers this host in the store under a lease (cluster mode);
//   - mirrors the cluster state (hosts, networks, bindings, endpoints) through
//     one list + watch, and from it decides each local network's peers: FDB
//     and neighbour entries for endpoints on live hosts, flood entries for
//     their hosts; a host whose lease expires drops out of every table;
//   - propagates networks: creates, through this host's Docker engine, the
//     networks made on other hosts, removes the ones removed elsewhere, and
//     learns the Docker name of networks made here (CreateNetwork lacks it);
//   - reconciles periodically: recreates missing kernel objects, puts back
//     drifted forwarding entries, removes namespaces of networks that are gone.
// All of it is asynchronous with retries; none of it ever runs in front of a
// driver call, so dockerd is never kept waiting on the Docker API or etcd.

import type { Logger } from 'pino';
import { Config, driverName, isClusterStore } from '../config';
import { networkIdFromNetnsName, NETNS_PREFIX } from '../dataplane/names';
import { DataPlaneApi, PeerState } from '../dataplane/types';
import { Driver } from '../driver/driver';
import { CLUSTER_NETWORK_OPTION } from '../driver/options';
import { BindingRecord, EndpointRecord, HostRecord, keys, NetworkRecord, ROOT } from '../store/keys';
import { Lease, LeaseId, Store, Watcher, WatchEvent } from '../store/store';
import type { MirrorListener } from '../dns/table';
import { VERSION } from '../version';
import { DockerClient, DockerError } from './docker';
import { collectGarbage } from './gc';
import type { Ipam } from '../ipam/ipam';
import type { WireGuard } from '../wireguard';
import * as path from 'path';

export interface AgentDeps {
  store: Store;
  driver: Driver;
  ipam: Ipam;
  dataplane: DataPlaneApi;
  cfg: Config;
  logger: Logger;
  /** [wireguard] This host's WireGuard (encrypted networks); absent with --encryption off or one host. */
  wireguard?: WireGuard;
}

export interface AgentStats {
  lastReconcile?: string;
  reconcileMs?: number;
  corrections: number;
  peersProgrammed: number;
  storeErrors: number;
  synced: boolean;
}

export class Agent {
  private readonly hosts = new Map<string, HostRecord>();
  private readonly networks = new Map<string, NetworkRecord>();
  private readonly bindings = new Map<string, Map<string, string>>();
  private readonly endpoints = new Map<string, Map<string, EndpointRecord>>();
  private readonly dirty = new Set<string>();
  private readonly retryAt = new Map<string, { at: number; attempt: number }>();
  private readonly inflight = new Set<string>();
  /** Per network, the ip -> mac last announced to local containers. */
  private readonly announced = new Map<string, Map<string, string>>();
  private flushScheduled = false;
  /** [wireguard] The host records changed since WireGuard's peers were last programmed. */
  private wgDirty = false;
  private flushing: Promise<void> = Promise.resolve();
  private watcher?: Watcher;
  private lease?: Lease;
  private timer?: NodeJS.Timeout;
  private stopped = false;
  private readonly cluster: boolean;
  private readonly me: string;
  private readonly docker: DockerClient;
  /** Other parts that keep their own view of the mirror (the DNS name table). */
  private readonly mirrorListeners: MirrorListener[] = [];
  private readonly registeredListeners: ((lease: LeaseId) => void)[] = [];
  readonly stats: AgentStats = { corrections: 0, peersProgrammed: 0, storeErrors: 0, synced: false };

  constructor(private readonly d: AgentDeps) {
    this.cluster = isClusterStore(d.cfg.store);
    this.me = d.cfg.hostName;
    this.docker = new DockerClient(d.cfg.dockerHost);
  }

  start(): void {
    void this.run();
  }

  /** `l` is told of every record the mirror sees, and of every re-list (reset first). Add it before start(). */
  addMirrorListener(l: MirrorListener): void {
    this.mirrorListeners.push(l);
  }

  /** `cb` is called with the lease each time this host registers (again) in cluster mode. */
  onRegistered(cb: (lease: LeaseId) => void): void {
    this.registeredListeners.push(cb);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    await this.watcher?.close().catch(() => undefined);
    // The lease is not revoked: a stopped weft and a crashed one look alike to
    // the cluster, and a quick restart keeps the host's peers in place.
  }

  private async run(): Promise<void> {
    // [wireguard] Up before the first reconcile, which makes encrypted networks' VXLAN devices in its namespace.
    if (this.d.wireguard) {
      this.d.wireguard.onChange(() => void this.republish());
      await this.d.wireguard.start();
    }
    await this.retry('initial reconcile', async () => { await this.reconcile(); });
    if (this.cluster) await this.retry('registering this host', () => this.register());
    await this.retry('watching the store', () => this.sync());
    this.timer = setInterval(() => void this.periodic(), this.d.cfg.reconcileInterval * 1000);
    this.timer.unref();
  }

  /** Retry an operation with capped exponential back-off until it works or the agent stops. */
  private async retry(what: string, fn: () => Promise<void>): Promise<void> {
    for (let attempt = 0; !this.stopped; attempt++) {
      try {
        await fn();
        return;
      } catch (err) {
        this.stats.storeErrors++;
        const wait = Math.min(5000, 200 * 2 ** attempt);
        this.d.logger.warn({ err: (err as Error).message, retryInMs: wait }, `${what} failed; retrying`);
        await sleep(wait);
      }
    }
  }

  // ------------------------------------------------------------ membership

  private async register(): Promise<void> {
    const lease = await this.d.store.grantLease(this.d.cfg.leaseTtl);
    const rec = this.hostRecord();
    try {
      await this.d.store.put(keys.host(this.me), JSON.stringify(rec), lease.id);
    } catch (err) {
      // Do not leave a kept-alive lease behind for every failed attempt.
      await lease.revoke().catch(() => undefined);
      throw err;
    }
    this.lease = lease;
    lease.onLost((err) => {
      if (this.stopped || this.lease !== lease) return;
      this.d.logger.warn({ err: err.message }, 'lease lost (store unreachable for longer than the TTL?); registering again');
      this.lease = undefined;
      void this.retry('registering this host again', () => this.register());
    });
    this.d.logger.info({ host: this.me, address: rec.address, ttl: this.d.cfg.leaseTtl }, 'host registered');
    for (const cb of this.registeredListeners) cb(lease.id);
  }

  private readonly startedAt = new Date().toISOString();

  private hostRecord(): HostRecord {
    const wg = this.d.wireguard?.hostInfo(); // [wireguard] public key, endpoint, tunnel address
    return { address: this.d.cfg.advertiseAddr, version: VERSION, startedAt: this.startedAt, ...(wg ? { wg } : {}) };
  }

  /** [wireguard] Writes the host record again (same lease) when what it publishes changed: WireGuard came up, the key was rotated. */
  private async republish(): Promise<void> {
    if (!this.cluster || this.stopped) return;
    await this.retry('publishing this host\'s WireGuard key', async () => {
      const lease = this.lease;
      if (!lease) return; // register() writes the current record when it runs
      await this.d.store.put(keys.host(this.me), JSON.stringify(this.hostRecord()), lease.id);
      this.d.logger.info({ publicKey: this.d.wireguard?.hostInfo()?.publicKey }, 'host record updated (WireGuard)');
    });
  }

  // ------------------------------------------------------------ mirror

  private async sync(): Promise<void> {
    await this.watcher?.close().catch(() => undefined);
    const list = await this.d.store.list(ROOT);
    this.hosts.clear();
    this.networks.clear();
    this.bindings.clear();
    this.endpoints.clear();
    for (const l of this.mirrorListeners) l.reset();
    for (const kv of list.kvs) this.apply({ type: 'put', key: kv.key, value: kv.value, revision: kv.modRevision });
    for (const cid of this.networks.keys()) this.dirty.add(cid);
    for (const cid of this.bindings.keys()) this.dirty.add(cid);
    this.wgDirty = true;
    this.watcher = await this.d.store.watch(ROOT, {
      fromRevision: list.revision + 1,
      onEvents: (events) => {
        for (const ev of events) this.apply(ev);
        this.scheduleFlush();
      },
      onReset: (err) => {
        this.d.logger.warn({ err: err.message }, 'store watch lost its place; listing again');
        void this.retry('watching the store', () => this.sync());
      },
    });
    this.stats.synced = true;
    this.scheduleFlush();
  }

  private apply(ev: WatchEvent): void {
    for (const l of this.mirrorListeners) l.apply(ev);
    const rest = ev.key.slice(ROOT.length).split('/');
    const put = ev.type === 'put' && ev.value !== undefined;
    try {
      switch (rest[0]) {
        case 'hosts': {
          if (put) this.hosts.set(rest[1], JSON.parse(ev.value!) as HostRecord);
          else {
            this.hosts.delete(rest[1]);
            if (rest[1] === this.me && this.cluster && !this.stopped && this.lease) {
              // Our own registration vanished (lease expired during an outage).
              this.lease = undefined;
              void this.retry('registering this host again', () => this.register());
            }
          }
          for (const cid of this.networks.keys()) this.dirty.add(cid);
          this.wgDirty = true;
          break;
        }
        case 'networks': {
          if (rest.length !== 2) break;
          if (put) {
            const rec = JSON.parse(ev.value!) as NetworkRecord;
            this.networks.set(rest[1], rec);
            this.d.driver.updateRecord(rest[1], rec);
          } else {
            this.networks.delete(rest[1]);
            this.announced.delete(rest[1]);
          }
          this.dirty.add(rest[1]);
          break;
        }
        case 'bindings': {
          if (rest.length !== 3) break;
          const m = this.bindings.get(rest[1]) ?? new Map<string, string>();
          if (put) m.set(rest[2], (JSON.parse(ev.value!) as BindingRecord).localId);
          else m.delete(rest[2]);
          if (m.size) this.bindings.set(rest[1], m);
          else this.bindings.delete(rest[1]);
          this.dirty.add(rest[1]);
          break;
        }
        case 'endpoints': {
          if (rest.length !== 3) break;
          const m = this.endpoints.get(rest[1]) ?? new Map<string, EndpointRecord>();
          if (put) m.set(rest[2], JSON.parse(ev.value!) as EndpointRecord);
          else m.delete(rest[2]);
          if (m.size) this.endpoints.set(rest[1], m);
          else this.endpoints.delete(rest[1]);
          this.dirty.add(rest[1]);
          break;
        }
        default:
          break;
      }
    } catch (err) {
      this.d.logger.warn({ key: ev.key, err: (err as Error).message }, 'ignoring an unreadable store record');
    }
  }

  private scheduleFlush(): void {
    if (this.flushScheduled || this.stopped) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      this.flushing = this.flushing.then(() => this.flush()).catch((err) => {
        this.d.logger.warn({ err: (err as Error).message }, 'applying cluster changes failed; the reconcile will retry');
      });
    });
  }

  private async flush(): Promise<void> {
    if (this.wgDirty && this.d.wireguard) {
      // [wireguard] Peers first: an encrypted network's VTEPs are reachable only through them.
      this.wgDirty = false;
      await this.d.wireguard.setHosts(this.hosts);
    }
    const cids = [...this.dirty];
    this.dirty.clear();
    await Promise.all(cids.map(async (cid) => {
      try {
        await this.programNetwork(cid);
      } catch (err) {
        this.d.logger.warn({ network: cid.slice(0, 12), err: (err as Error).message }, 'programming peers failed; will retry');
        this.dirty.add(cid);
      }
      this.propagate(cid);
    }));
  }

  // ------------------------------------------------------------ peers

  /** What a local network's VXLAN device should forward to: endpoints of other, live hosts. */
  desiredPeers(cid: string): PeerState {
    const out: PeerState = { endpoints: [], floodVteps: [] };
    const vteps = new Set<string>();
    const encrypted = this.networks.get(cid)?.encrypted === true;
    for (const ep of this.endpoints.get(cid)?.values() ?? []) {
      if (ep.host === this.me || !this.hosts.has(ep.host) || !ep.vtep) continue;
      // The host's current address: it may have come back with another --advertise-addr.
      // [wireguard] Encrypted: its tunnel address, reached only through WireGuard; none, no peer.
      const vtep = encrypted ? this.hosts.get(ep.host)?.wg?.tunnel : this.hosts.get(ep.host)?.address || ep.vtep;
      if (!vtep) continue;
      out.endpoints.push({ ip: ep.ip, mac: ep.mac, vtep });
      vteps.add(vtep);
    }
    out.floodVteps = [...vteps].sort();
    return out;
  }

  private async programNetwork(cid: string): Promise<number> {
    if (!this.cluster) return 0;
    const local = this.d.driver.localNetworks().find((n) => n.clusterId === cid);
    if (!local) return 0;
    await this.d.driver.ensureKernel(local);
    const spec = this.d.driver.spec(cid, local.record);
    const desired = this.desiredPeers(cid);
    const diff = await this.d.dataplane.programPeers(spec, desired);
    await this.announceChanges(cid, spec, desired);
    const changed = diff.added + diff.removed;
    this.stats.peersProgrammed += diff.added;
    if (changed) this.d.logger.debug({ network: cid.slice(0, 12), ...diff }, 'peers programmed');
    return changed;
  }

  /**
   * Tell this host's containers about remote endpoints that are new or moved
   * to another MAC, with a gratuitous ARP on the local bridge. Docker gives a
   * restarted container a new random MAC but often its old IP, and a
   * container that cached the old MAC would not re-resolve it for up to a
   * minute. The announcement cannot come from the endpoint's own host: in
   * proxy mode the VXLAN device answers or drops every ARP frame it is given
   * and never sends one across.
   */
  private async announceChanges(cid: string, spec: ReturnType<Driver['spec']>, desired: PeerState): Promise<void> {
    const seen = this.announced.get(cid) ?? new Map<string, string>();
    const next = new Map<string, string>();
    for (const ep of desired.endpoints) {
      next.set(ep.ip, ep.mac);
      if (seen.get(ep.ip) === ep.mac) continue;
      await this.d.dataplane.announce(spec, ep.ip, ep.mac).catch((err: Error) =>
        this.d.logger.debug({ ip: ep.ip, err: err.message }, 'gratuitous ARP failed'));
    }
    this.announced.set(cid, next);
  }

  // ------------------------------------------------------------ propagation

  private propagate(cid: string): void {
    if (this.inflight.has(cid) || (this.retryAt.get(cid)?.at ?? 0) > Date.now()) return;
    const rec = this.networks.get(cid);
    const localId = this.bindings.get(cid)?.get(this.me);
    let job: (() => Promise<void>) | undefined;
    if (rec && !rec.name && localId && rec.createdBy === this.me) job = () => this.learnName(cid, localId);
    else if (this.cluster && rec && !rec.deleting && rec.name && !localId) job = () => this.createLocalCopy(cid, rec);
    else if (this.cluster && rec?.deleting && localId) job = () => this.removeLocalCopy(cid, localId);
    // The network was removed from the cluster while this host was away.
    else if (this.cluster && !rec && localId && this.stats.synced) job = () => this.removeLocalCopy(cid, localId);
    if (!job) return;
    this.inflight.add(cid);
    const attempt = this.retryAt.get(cid)?.attempt ?? 0;
    job().then(
      () => this.retryAt.delete(cid),
      (err: Error) => {
        // Quick first retries: the usual failure is a race with Docker (the
        // network is not visible in its API until CreateNetwork returned).
        const wait = Math.min(10_000, 25 * 2 ** attempt);
        this.retryAt.set(cid, { at: Date.now() + wait, attempt: attempt + 1 });
        const level = attempt < 4 ? 'debug' : 'warn';
        this.d.logger[level]({ network: cid.slice(0, 12), err: err.message, retryInMs: wait }, 'network propagation failed; will retry');
        setTimeout(() => { this.dirty.add(cid); this.scheduleFlush(); }, wait).unref();
      },
    ).finally(() => this.inflight.delete(cid));
  }

  /** CreateNetwork carries no name: ask this host's Docker engine for it, after the create finished. */
  private async learnName(cid: string, localId: string): Promise<void> {
    const net = await this.docker.inspectNetwork(localId);
    const kv = await this.d.store.get(keys.network(cid));
    if (!kv) return;
    const rec = JSON.parse(kv.value) as NetworkRecord;
    if (rec.name) return;
    const next: NetworkRecord = { ...rec, name: net.Name };
    // Compose (and anyone who filters on them) looks for the original's labels on every host.
    if (net.Labels && Object.keys(net.Labels).length > 0) next.labels = { ...net.Labels };
    if (net.Attachable) next.attachable = true;
    if (net.IPAM?.Options && Object.keys(net.IPAM.Options).length > 0) next.ipamOptions = { ...net.IPAM.Options };
    const cfg = net.IPAM?.Config?.[0];
    if (cfg?.Gateway && !next.gateway) next.gateway = cfg.Gateway;
    if (cfg?.IPRange) next.ipRange = cfg.IPRange;
    await this.d.store.txn([{ key: kv.key, modRevision: kv.modRevision }], [{ type: 'put', key: kv.key, value: JSON.stringify(next) }]);
    this.d.logger.info({ network: net.Name, cluster: cid.slice(0, 12) }, 'network name learned');
  }

  private async createLocalCopy(cid: string, rec: NetworkRecord): Promise<void> {
    if (!rec.subnet || !rec.name) return;
    const name = driverName(this.d.cfg);
    try {
      const res = await this.docker.createNetwork({
        Name: rec.name, Driver: name, Internal: rec.internal,
        ...(rec.attachable ? { Attachable: true } : {}),
        ...(rec.labels ? { Labels: rec.labels } : {}),
        Options: { ...rec.options, [CLUSTER_NETWORK_OPTION]: cid },
        IPAM: { Driver: name, ...(rec.ipamOptions ? { Options: rec.ipamOptions } : {}), Config: [{ Subnet: rec.subnet, ...(rec.gateway ? { Gateway: rec.gateway } : {}), ...(rec.ipRange ? { IPRange: rec.ipRange } : {}) }] },
      });
      this.d.logger.info({ network: rec.name, cluster: cid.slice(0, 12), localId: res.Id.slice(0, 12) }, 'network created on this host (made elsewhere)');
    } catch (err) {
      if (err instanceof DockerError && err.status === 409) {
        throw new Error(`a different network named "${rec.name}" already exists on this host; rename or remove it so weft can create the cluster network`);
      }
      throw err;
    }
  }

  private async removeLocalCopy(cid: string, localId: string): Promise<void> {
    try {
      await this.docker.removeNetwork(localId);
      this.d.logger.info({ network: this.networks.get(cid)?.name, cluster: cid.slice(0, 12) }, 'network removed on this host (removed elsewhere)');
    } catch (err) {
      if (err instanceof DockerError && err.status === 404) {
        // Docker no longer has it (removed while weft was down): drop the binding ourselves.
        await this.d.driver.deleteNetwork(localId);
        return;
      }
      throw err;
    }
  }

  // ------------------------------------------------------------ reconcile

  private reconciling = false;

  private async periodic(): Promise<void> {
    // A reconcile slower than the interval (a hung dockerd, a slow etcd) is not run twice at once.
    if (this.reconciling) return;
    this.reconciling = true;
    try {
      await this.reconcile();
    } catch (err) {
      this.stats.storeErrors++;
      this.d.logger.warn({ err: (err as Error).message }, 'reconcile failed; will retry');
    } finally {
      this.reconciling = false;
    }
  }

  /** Compare the kernel with the store and repair: networks, peers, leftovers. Returns corrections made. */
  async reconcile(): Promise<number> {
    const started = Date.now();
    let corrections = 0;
    await this.d.driver.loadLocalNetworks();
    const locals = this.d.driver.localNetworks();
    const wanted = new Set<string>();
    // [wireguard] Peers drifted (a peer removed by hand, a device restarted), or the interface
    // lost its address or state: put back. A WireGuard that cannot come up is logged by its manager.
    if (this.d.wireguard && this.stats.synced) corrections += await this.d.wireguard.setHosts(this.hosts);
    if (this.d.wireguard) corrections += await this.d.wireguard.ensure().catch(() => 0);
    for (const local of locals) {
      wanted.add(this.d.driver.spec(local.clusterId, local.record).id);
      try {
        await this.d.driver.ensureKernel(local, true);
        if (this.stats.synced) corrections += await this.programNetwork(local.clusterId);
      } catch (err) {
        // One network that cannot be set up (an encrypted one while WireGuard is down) does not hold up the others.
        this.stats.storeErrors++;
        this.d.logger.warn({ network: local.record.name ?? local.clusterId.slice(0, 12), err: (err as Error).message }, 'reconciling a network failed; will retry');
      }
    }
    // Namespaces of networks this host no longer has (removed while weft was down).
    // The list of networks is read again after the namespaces: one created
    // while this reconcile ran must not be taken for a leftover.
    const present = await this.d.dataplane.listNetworkIds();
    for (const local of this.d.driver.localNetworks()) wanted.add(this.d.driver.spec(local.clusterId, local.record).id);
    for (const id of present) {
      if (wanted.has(id)) continue;
      const nsPath = path.join(this.d.cfg.runDir, 'netns', NETNS_PREFIX + id);
      if (networkIdFromNetnsName(path.basename(nsPath)) !== id) continue;
      await this.d.dataplane.deleteNetwork({ id, nsPath, bridge: `br-${id}`, mtu: 1500 });
      corrections++;
      this.d.logger.info({ netns: nsPath }, 'removed the namespace of a network that no longer exists');
    }
    for (const cid of new Set([...this.networks.keys(), ...this.bindings.keys()])) this.propagate(cid);
    corrections += await collectGarbage({
      store: this.d.store, driver: this.d.driver, ipam: this.d.ipam, docker: this.docker, host: this.me,
      graceMs: this.d.cfg.gcGrace * 1000, logger: this.d.logger,
    });
    this.stats.corrections += corrections;
    this.stats.lastReconcile = new Date().toISOString();
    this.stats.reconcileMs = Date.now() - started;
    if (corrections) this.d.logger.info({ corrections }, 'reconcile repaired drift');
    return corrections;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}
