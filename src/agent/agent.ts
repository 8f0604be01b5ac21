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
import { routedBridgeMac } from '../dataplane/names';
import { networkMode } from '../driver/options';
import type { LocalNetworks } from '../cluster/local-networks';
import { CLUSTER_NETWORK_OPTION } from '../driver/options';
import { Label } from '../driver/labels';
import { HostRecord, keys, NetworkRecord } from '../store/keys';
import { Lease, LeaseId, Store } from '../store/store';
import { InvalidRecords } from '../store/records';
import { contains, parseSubnet, parseSubnet6, Subnet } from '../ipam/cidr';
import { INSTANCE } from '../instance';
import { Ask, checkHostName, DuplicateHostError } from './identity';
import { checkUnderlayFamily, sameFamily, UnderlayFamilyError } from './underlay';
import { Liveness } from './liveness';
import { ClusterView, type ViewChange } from '../cluster/view';
import { VERSION } from '../version';
import { DockerClient, DockerError, type EventStream } from './docker';
import { collectGarbage } from './gc';
import type { Ipam } from '../ipam/ipam';
import type { WireGuard } from '../wireguard';
import * as path from 'path';

export interface AgentDeps {
  store: Store;
  networks: LocalNetworks;
  /** This host's view of the cluster; made here when not given. */
  view?: ClusterView;
  ipam: Ipam;
  dataplane: DataPlaneApi;
  cfg: Config;
  logger: Logger;
  /** Asks the weft at an address who it is, over --probe-port (undefined: no probes). */
  ask?: Ask;
  /** Called when weft must not go on (another live host holds this host's name). */
  onFatal?: (err: Error) => void;
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
  /** Records skipped because they are not valid (each counted once per value seen). */
  invalidRecords: number;
}

export class Agent {
  /** This host's view of the cluster (one list + watch of the store). */
  readonly view: ClusterView;
  readonly liveness: Liveness;
  private readonly dirty = new Set<string>();
  private readonly retryAt = new Map<string, { at: number; attempt: number }>();
  private readonly inflight = new Set<string>();
  /** Per network, the ip -> mac last announced to local containers. */
  private readonly announced = new Map<string, Map<string, { mac: string; gone?: number }>>();
  /** Per network, the peers last programmed into the kernel, and the kernel generation they went into. */
  private readonly programmed = new Map<string, { generation: number; state: PeerState }>();
  /** Per network, the entries the last full compare with the kernel found wrong and repaired, and when it ran. */
  private readonly lastDrift = new Map<string, number>();
  private readonly lastAudit = new Map<string, number>();
  private flushScheduled = false;
  /** [routed] This host's underlay segment (the on-link prefix of --advertise-addr), published in its host record. */
  private underlay?: string;
  /** [wireguard] The host records changed since WireGuard's peers were last programmed. */
  private wgDirty = false;
  private flushing: Promise<void> = Promise.resolve();
  private lease?: Lease;
  private timer?: NodeJS.Timeout;
  private stopped = false;
  private readonly cluster: boolean;
  private readonly me: string;
  private readonly docker: DockerClient;
  private events?: EventStream;
  private eventsAttempt = 0;
  private readonly registeredListeners: ((lease: LeaseId) => void)[] = [];
  readonly stats: AgentStats = { corrections: 0, peersProgrammed: 0, storeErrors: 0, synced: false, invalidRecords: 0 };

  constructor(private readonly d: AgentDeps) {
    this.cluster = isClusterStore(d.cfg.store);
    this.me = d.cfg.hostName;
    this.docker = new DockerClient(d.cfg.dockerHost);
    this.view = d.view ?? new ClusterView({ store: d.store, host: d.cfg.hostName, logger: d.logger, onInvalid: () => { this.stats.invalidRecords++; } });
    this.view.subscribe((changes) => this.onChanges(changes));
    this.liveness = new Liveness({
      ask: (address, timeoutMs) => (d.ask ? d.ask(address, timeoutMs) : Promise.resolve(undefined)),
      peerTimeoutMs: (d.cfg.peerTimeout ?? 5) * 1000,
      onGone: () => {
        this.wgDirty = true;
        for (const cid of this.view.networks.keys()) this.dirty.add(cid);
        this.scheduleFlush();
      },
      logger: d.logger,
    });
  }

  start(): void {
    void this.run();
  }

  /** Whether this host's registration is in the store, as the mirror sees it. */
  registered(): boolean {
    return this.lease !== undefined && this.view.hosts.has(this.me);
  }

  /**
   * [wireguard] The hosts to keep WireGuard peers with: the registered ones,
   * and those whose lease expired but that still answer probes over the
   * underlay (the same rule as the forwarding tables: a host cut off from
   * the store only keeps its encrypted path too), with their last record.
   */
  private wireGuardHosts(): Map<string, HostRecord> {
    const out = new Map(this.view.hosts);
    for (const [host, rec] of this.view.lastHostRecord) {
      if (!out.has(host) && host !== this.me && this.liveness.keeps(host)) out.set(host, rec);
    }
    return out;
  }

  /** Records of the store skipped as not valid (from the view). */
  get invalid(): InvalidRecords {
    return this.view.invalid;
  }

  /** `cb` is called with the lease each time this host registers (again) in cluster mode. */
  onRegistered(cb: (lease: LeaseId) => void): void {
    this.registeredListeners.push(cb);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.liveness.stop();
    this.events?.close();
    await this.view.close();
    // The lease is not revoked: a stopped weft and a crashed one look alike to
    // the cluster, and a quick restart keeps the host's peers in place.
  }

  private async run(): Promise<void> {
    // Before anything acts on this host's name (the reconcile releases what
    // "this host" holds and Docker no longer knows), make sure no live host holds it.
    if (this.cluster) await this.retry('checking that this host name is free', () => this.waitForName());
    if (this.stopped) return;
    // One underlay family per cluster (VXLAN over IPv4 or over IPv6, not both).
    if (this.cluster && this.d.cfg.advertiseAddr) {
      await this.retry('checking the underlay address family', () => checkUnderlayFamily(this.d.store, this.me, this.d.cfg.advertiseAddr));
    }
    if (this.stopped) return;
    // [wireguard] Up before the first reconcile, which makes encrypted networks' VXLAN devices in its namespace.
    if (this.d.wireguard) {
      this.d.wireguard.onChange(() => void this.republish());
      await this.d.wireguard.start();
    }
    if (this.cluster) await this.findUnderlay();
    await this.retry('initial reconcile', async () => { await this.reconcile(); });
    if (this.cluster) await this.retry('registering this host', () => this.register());
    await this.retry('watching the store', () => this.sync());
    if (this.cluster) this.followNetworkCreates();
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
        if (err instanceof DuplicateHostError || err instanceof UnderlayFamilyError) {
          this.d.logger.fatal({ code: err.code }, err.message);
          this.stopped = true;
          if (this.d.onFatal) this.d.onFatal(err);
          return;
        }
        this.stats.storeErrors++;
        const wait = Math.min(5000, 200 * 2 ** attempt);
        this.d.logger.warn({ err: (err as Error).message, retryInMs: wait }, `${what} failed; retrying`);
        await sleep(wait);
      }
    }
  }

  // ------------------------------------------------------------ membership

  /**
   * Waits until no other weft holds this host's name: refuses (DuplicateHostError)
   * when a live host answers under it, waits while the record of an earlier,
   * silent weft (this host's previous run) is still under its lease.
   */
  private async waitForName(): Promise<void> {
    let said = false;
    for (;;) {
      if (this.stopped) return;
      const c = await checkHostName(this.d.store, this.me, this.d.ask, this.d.cfg.advertiseAddr);
      if (c.state !== 'held') return;
      if (!said) {
        said = true;
        this.d.logger.warn({ host: this.me, holder: c.holder },
          `the name ${this.me} is still registered by ${c.holder}, which does not answer probes: waiting for its lease to expire (at most its --lease-ttl) before registering. ` +
          'If that weft still runs on another machine, stop it or give this host another --host-name');
      }
      await sleep(1000);
    }
  }

  private async register(): Promise<void> {
    const key = keys.host(this.me);
    const lease = await this.d.store.grantLease(this.d.cfg.leaseTtl);
    const rec = this.hostRecord();
    try {
      for (;;) {
        // Create only if absent (or ours): never overwrite another weft's registration.
        const c = await checkHostName(this.d.store, this.me, this.d.ask, this.d.cfg.advertiseAddr);
        if (c.state === 'held') {
          await this.waitForName();
          if (this.stopped) throw new Error('stopped');
          continue;
        }
        const guard = c.state === 'mine' ? c.kv.modRevision : 0;
        const r = await this.d.store.txn([{ key, modRevision: guard }], [{ type: 'put', key, value: JSON.stringify(rec), lease: lease.id }]);
        if (r.succeeded) break;
      }
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

  /** [routed] Which segment this host is on: routed networks go unencapsulated to hosts that publish the same one. */
  private async findUnderlay(): Promise<void> {
    const addr = this.d.cfg.advertiseAddr;
    if (!addr) return;
    try {
      const u = await this.d.dataplane.underlayOf(addr);
      this.underlay = u?.cidr;
      if (u) this.d.logger.info({ link: u.link, underlay: u.cidr }, 'underlay segment found (routed networks go unencapsulated to hosts on it)');
      else this.d.logger.warn({ address: addr }, 'no link of this host holds --advertise-addr: containers of routed networks cannot start on this host');
    } catch (err) {
      this.d.logger.warn({ err: (err as Error).message }, 'cannot read this host\'s links: routed networks reach every other host through VXLAN, and their containers may not start here');
    }
  }

  /**
   * [routed] How a routed network reaches `host`: unencapsulated when both
   * publish the same underlay segment and its address lies in it, else VXLAN.
   */
  pathTo(host: string, rec: HostRecord | undefined): 'routed' | 'vxlan' {
    if (!this.underlay || !rec?.underlay || rec.underlay !== this.underlay || host === this.me) return 'vxlan';
    try {
      return contains(parseSubnet(this.underlay), rec.address) ? 'routed' : 'vxlan';
    } catch {
      return 'vxlan';
    }
  }

  /** [routed] The path to each other host with endpoints on a network (`weft status`, `weft doctor`). */
  routedPaths(cid: string): { host: string; address: string; path: 'routed' | 'vxlan'; underlay?: string }[] {
    const hosts = new Set<string>();
    for (const ep of this.view.endpoints.get(cid)?.values() ?? []) if (ep.host !== this.me) hosts.add(ep.host);
    return [...hosts].sort().map((host) => {
      const rec = this.view.hosts.get(host) ?? this.view.lastHostRecord.get(host);
      return { host, address: rec?.address ?? this.view.lastAddress.get(host) ?? '', path: this.pathTo(host, rec), ...(rec?.underlay ? { underlay: rec.underlay } : {}) };
    });
  }

  /** [routed] This host's underlay segment, as published. */
  underlaySegment(): string | undefined {
    return this.underlay;
  }

  private readonly startedAt = new Date().toISOString();
  /** host|vtep pairs of another underlay family, already logged (see desiredPeers). */
  private readonly otherFamily = new Set<string>();

  private hostRecord(): HostRecord {
    const wg = this.d.wireguard?.hostInfo(); // [wireguard] public key, endpoint, tunnel address
    return { address: this.d.cfg.advertiseAddr, version: VERSION, startedAt: this.startedAt, instance: INSTANCE, ...(wg ? { wg } : {}), ...(this.underlay ? { underlay: this.underlay } : {}) };
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
    await this.view.sync(() => void this.retry('watching the store', () => this.sync()));
    this.wgDirty = true;
    this.stats.synced = true;
    this.scheduleFlush();
  }

  /** What the view says changed: which networks to program again, and whether this host must register again. */
  private onChanges(changes: ViewChange[]): void {
    for (const c of changes) {
      switch (c.kind) {
        case 'host':
          if (c.gone && c.host === this.me && this.cluster && !this.stopped && this.lease) {
            // Our own registration vanished (lease expired during an outage).
            this.lease = undefined;
            void this.retry('registering this host again', () => this.register());
          }
          for (const cid of this.view.networks.keys()) this.dirty.add(cid);
          this.wgDirty = true;
          break;
        case 'network':
          if (c.gone) this.announced.delete(c.network);
          else this.d.networks.updateRecord(c.network, this.view.networks.get(c.network)!);
          this.dirty.add(c.network);
          break;
        case 'binding':
        case 'endpoint':
          this.dirty.add(c.network);
          break;
        default:
          break;
      }
    }
    this.scheduleFlush();
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
    // Suspects first: a host whose lease just expired but that has endpoints
    // stays a peer (WireGuard's and the tables') while it answers probes.
    // Decided after WireGuard's peers, it was taken off the device and put
    // back a moment later, each time a lease expired.
    if (this.cluster && this.stats.synced) this.refreshLiveness();
    if (this.wgDirty && this.d.wireguard) {
      // [wireguard] Peers first: an encrypted network's VTEPs are reachable only through them.
      this.wgDirty = false;
      await this.d.wireguard.setHosts(this.wireGuardHosts());
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

  /** Hosts with endpoints but no registration, with the address to probe them at. */
  private refreshLiveness(): void {
    const unregistered = new Map<string, string>();
    for (const eps of this.view.endpoints.values()) {
      for (const ep of eps.values()) {
        if (ep.host === this.me || this.view.hosts.has(ep.host) || unregistered.has(ep.host)) continue;
        const address = this.view.lastAddress.get(ep.host) || ep.vtep;
        if (address) unregistered.set(ep.host, address);
      }
    }
    this.liveness.update(unregistered);
  }

  /**
   * What a local network's VXLAN device should forward to: endpoints of other
   * hosts that are registered, or unregistered but still answering probes
   * (see liveness.ts). Endpoints whose address is not in the network's subnet
   * are skipped (and counted), like every other invalid record.
   */
  desiredPeers(cid: string): PeerState {
    const out: PeerState = { endpoints: [], floodVteps: [] };
    const vteps = new Set<string>();
    const rec = this.view.networks.get(cid);
    const encrypted = rec?.encrypted === true;
    // [routed] Containers of hosts on this host's segment need nothing (reached straight on the underlay);
    // those of other segments get a proxy entry and a VXLAN neighbour at their host's bridge MAC; this
    // host's own containers get a /32 route on the routed link.
    const routed = !encrypted && rec !== undefined && networkMode(rec.options) === 'routed' && !!rec.gateway && !!rec.subnet;
    const local: string[] = [];
    const proxies: string[] = [];
    let subnet: Subnet | undefined;
    let subnet6: Subnet | undefined;
    try {
      subnet = rec?.subnet ? parseSubnet(rec.subnet) : undefined;
    } catch {
      subnet = undefined;
    }
    try {
      subnet6 = rec?.subnet6 ? parseSubnet6(rec.subnet6) : undefined;
    } catch {
      subnet6 = undefined;
    }
    for (const [id, ep] of this.view.endpoints.get(cid) ?? []) {
      if (ep.host === this.me) {
        if (routed && ep.ip && subnet && contains(subnet, ep.ip)) local.push(ep.ip);
        continue;
      }
      const registered = this.view.hosts.get(ep.host);
      if (!registered && !this.liveness.keeps(ep.host)) continue;
      if (subnet && ep.ip && !contains(subnet, ep.ip)) {
        this.invalid.skip('endpoint', keys.endpoint(cid, id), JSON.stringify(ep), `ip ${ep.ip} is not in the network's subnet ${subnet.cidr}`);
        continue;
      }
      if (ep.ip6 && (!subnet6 || !contains(subnet6, ep.ip6))) {
        this.invalid.skip('endpoint', keys.endpoint(cid, id), JSON.stringify(ep), `ip6 ${ep.ip6} is not in the network's IPv6 subnet ${subnet6?.cidr ?? '(none)'}`);
        continue;
      }
      // The host's current address: it may have come back with another --advertise-addr.
      // [wireguard] Encrypted: its tunnel address, reached only through WireGuard; none, no peer.
      const vtep = encrypted ? (registered ?? this.view.lastHostRecord.get(ep.host))?.wg?.tunnel : registered?.address || this.view.lastAddress.get(ep.host) || ep.vtep;
      if (!vtep) continue;
      // Checked at registration; two hosts of different families starting at once could still meet here.
      if (!encrypted && !sameFamily(this.d.cfg.advertiseAddr, vtep)) {
        if (!this.otherFamily.has(`${ep.host}|${vtep}`)) {
          this.otherFamily.add(`${ep.host}|${vtep}`);
          this.d.logger.error({ host: ep.host, vtep, advertiseAddr: this.d.cfg.advertiseAddr, code: 'WEFT_UNDERLAY_FAMILY_MISMATCH' },
            `host ${ep.host} advertises ${vtep}, of another address family than this host's --advertise-addr: VXLAN cannot reach it, so its endpoints are left out. Give every host of the cluster an --advertise-addr of one family`);
        }
        continue;
      }
      if (routed) {
        if (!ep.ip || this.pathTo(ep.host, registered ?? this.view.lastHostRecord.get(ep.host)) === 'routed') continue;
        proxies.push(ep.ip);
        out.endpoints.push({ ip: ep.ip, mac: routedBridgeMac(vtep, rec.vni), vtep });
        continue;
      }
      out.endpoints.push({ ip: ep.ip, ...(ep.ip6 ? { ip6: ep.ip6 } : {}), mac: ep.mac, vtep });
      vteps.add(vtep);
    }
    // [routed] No flood entries: broadcast and multicast reach the containers of this segment (on the underlay itself), not other segments (README, Routed mode).
    out.floodVteps = routed ? [] : [...vteps].sort();
    if (routed) out.routed = { local: local.sort(), proxies: proxies.sort() };
    return out;
  }

  /**
   * Programs a local network's peers. On a change (`full` false) only what
   * changed since the last programming, as remembered here: one FDB and one
   * neighbour operation per endpoint that changed, with no dump of the
   * kernel's tables. The reconcile, a restart, and a network whose kernel
   * objects were made anew (kernelGeneration) compare with the kernel itself.
   */
  private async programNetwork(cid: string, full = false): Promise<number> {
    if (!this.cluster) return 0;
    const local = this.d.networks.list().find((n) => n.clusterId === cid);
    if (!local) {
      this.programmed.delete(cid);
      this.lastDrift.delete(cid);
      this.lastAudit.delete(cid);
      return 0;
    }
    await this.d.networks.ensureKernel(local);
    const spec = this.d.networks.spec(cid, local.record);
    const desired = this.desiredPeers(cid);
    const gen = this.d.networks.kernelGeneration(cid);
    const last = this.programmed.get(cid);
    // Forget first: if programming fails half-way, the next attempt reads the kernel.
    this.programmed.delete(cid);
    const compared = !(!full && last && last.generation === gen);
    const diff = compared
      ? await this.d.dataplane.programPeers(spec, desired)
      : await this.d.dataplane.changePeers(spec, last!.state, desired);
    this.programmed.set(cid, { generation: gen, state: desired });
    if (compared) {
      this.lastDrift.set(cid, diff.added + diff.removed);
      this.lastAudit.set(cid, Date.now());
    }
    await this.announceChanges(cid, spec, desired);
    const changed = diff.added + diff.removed;
    this.stats.peersProgrammed += diff.added;
    if (changed) this.d.logger.debug({ network: cid.slice(0, 12), ...diff }, 'peers programmed');
    return changed;
  }

  /**
   * Per local network, for /metrics (which reads no kernel table of its
   * own): the peer entries programmed (as this agent last left them: a
   * failed programming leaves none counted until it works), the entries the
   * store asks for, and what the last full compare with the kernel (every
   * reconcile) found wrong and repaired.
   */
  peerReport(): { clusterId: string; programmed: number; expected: number; drift: number }[] {
    return this.d.networks.list().map((local) => {
      const cid = local.clusterId;
      const last = this.programmed.get(cid);
      const count = (p: PeerState) => p.endpoints.length + p.floodVteps.length + (p.routed ? p.routed.local.length + p.routed.proxies.length : 0);
      const programmed = last ? count(last.state) : 0;
      return { clusterId: cid, programmed, expected: last ? programmed : count(this.desiredPeers(cid)), drift: this.lastDrift.get(cid) ?? 0 };
    });
  }

  /**
   * Tell this host's containers about remote endpoints that moved to another
   * MAC (or came back with one), with a gratuitous ARP on the local bridge
   * (an unsolicited neighbour advertisement for an IPv6 address).
   * Docker gives a restarted container a new random MAC but often its old
   * IP, and a container that cached the old MAC would not re-resolve it for
   * up to a minute. The announcement cannot come from the endpoint's own
   * host: in proxy mode the VXLAN device answers or drops every ARP frame it
   * is given and never sends one across. An address never seen before is not
   * announced: nobody can have cached it, and each announcement makes the
   * bridge learn the remote MAC (at 10,000 endpoints, as many extra entries).
   * Addresses that left are remembered for 10 minutes, for when they return.
   */
  private async announceChanges(cid: string, spec: ReturnType<LocalNetworks['spec']>, desired: PeerState): Promise<void> {
    const now = Date.now();
    const seen = this.announced.get(cid);
    const next = new Map<string, { mac: string; gone?: number }>();
    if (desired.routed) {
      // [routed] This host's containers see a remote address at one of two MACs: its container's own (same
      // segment, reached straight) or the routed link's (other segments, through the proxy entry). One that
      // moved from the first to the second is announced to them, unicast to each (a broadcast would reach
      // other hosts' containers too, and send theirs here). The reverse needs nothing from here: the
      // container announces itself from its new interface (createEndpoint).
      const proxied = new Set(desired.routed.proxies);
      const to: string[] = [];
      for (const ep of this.view.endpoints.get(cid)?.values() ?? []) {
        if (ep.host === this.me) { if (ep.mac) to.push(ep.mac); } else if (ep.ip && !proxied.has(ep.ip)) next.set(ep.ip, { mac: DIRECT });
      }
      for (const ip of desired.routed.proxies) {
        next.set(ip, { mac: ROUTED });
        const before = seen?.get(ip);
        if (!before || before.mac === ROUTED || !to.length) continue;
        await this.d.dataplane.announceRouted(spec, ip, to).catch((err: Error) =>
          this.d.logger.debug({ ip, err: err.message }, 'gratuitous ARP failed'));
      }
    } else {
      for (const ep of desired.endpoints) {
        // IPv4 by gratuitous ARP, IPv6 by unsolicited neighbour advertisement.
        for (const ip of [ep.ip, ep.ip6]) {
          if (!ip) continue;
          next.set(ip, { mac: ep.mac });
          const before = seen?.get(ip);
          if (!before || before.mac === ep.mac) continue;
          await this.d.dataplane.announce(spec, ip, ep.mac).catch((err: Error) =>
            this.d.logger.debug({ ip, err: err.message }, 'gratuitous ARP / unsolicited NA failed'));
        }
      }
    }
    for (const [ip, e] of seen ?? []) {
      if (next.has(ip)) continue;
      const gone = e.gone ?? now;
      if (now - gone < 600_000) next.set(ip, { mac: e.mac, gone });
    }
    this.announced.set(cid, next);
  }

  // ------------------------------------------------------------ propagation

  private propagate(cid: string): void {
    if (this.view.unreadableNetworks.has(cid)) return;
    if (this.inflight.has(cid) || (this.retryAt.get(cid)?.at ?? 0) > Date.now()) return;
    const rec = this.view.networks.get(cid);
    const localId = this.view.bindings.get(cid)?.get(this.me);
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

  /**
   * Docker reports a network's creation once it has saved it, i.e. as soon as
   * its name can be read: learn it then rather than on the next retry (the
   * first attempt, right after CreateNetwork, comes before Docker saved it).
   */
  private followNetworkCreates(): void {
    if (this.stopped) return;
    const driver = driverName(this.d.cfg);
    this.events = this.docker.streamEvents({ type: ['network'], event: ['create'] }, (ev) => {
      this.eventsAttempt = 0;
      const localId = ev.Actor?.ID;
      if (!localId || ev.Actor?.Attributes?.type !== driver) return;
      for (const [cid, hosts] of this.view.bindings) {
        if (hosts.get(this.me) !== localId) continue;
        this.retryAt.delete(cid);
        this.propagate(cid);
      }
    }, (err) => {
      if (this.stopped) return;
      // Only a shortcut: the retries of propagate() learn the name without it.
      const wait = Math.min(5000, 100 * 2 ** this.eventsAttempt++);
      this.d.logger.debug({ err: err.message, retryInMs: wait }, 'Docker events stream (network creates) ended; reconnecting');
      setTimeout(() => this.followNetworkCreates(), wait).unref();
    });
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
    // Docker lists the IPv4 and IPv6 configs of a dual-stack network in no set order.
    const cfgs = net.IPAM?.Config ?? [];
    const cfg = cfgs.find((c) => c.Subnet && !c.Subnet.includes(':'));
    const cfg6 = cfgs.find((c) => c.Subnet?.includes(':'));
    if (cfg?.Gateway && !next.gateway) next.gateway = cfg.Gateway;
    if (cfg?.IPRange) next.ipRange = cfg.IPRange;
    if (cfg6?.Gateway && !next.gateway6) next.gateway6 = cfg6.Gateway;
    if (cfg6?.IPRange) next.ipRange6 = cfg6.IPRange;
    await this.d.store.txn([{ key: kv.key, modRevision: kv.modRevision }], [{ type: 'put', key: kv.key, value: JSON.stringify(next) }]);
    this.d.logger.info({ network: net.Name, cluster: cid.slice(0, 12) }, 'network name learned');
  }

  private async createLocalCopy(cid: string, rec: NetworkRecord): Promise<void> {
    if ((!rec.subnet && !rec.subnet6) || !rec.name) return;
    const name = driverName(this.d.cfg);
    // Dual-stack: a second IPAM config and EnableIPv6. IPv6-only (Docker 28): no IPv4 config, and
    // enable_ipv4=false as the option Docker 28 reads (the API version weft speaks predates EnableIPv4).
    const config: { Subnet: string; Gateway?: string; IPRange?: string }[] = [];
    if (rec.subnet) config.push({ Subnet: rec.subnet, ...(rec.gateway ? { Gateway: rec.gateway } : {}), ...(rec.ipRange ? { IPRange: rec.ipRange } : {}) });
    if (rec.subnet6) config.push({ Subnet: rec.subnet6, ...(rec.gateway6 ? { Gateway: rec.gateway6 } : {}), ...(rec.ipRange6 ? { IPRange: rec.ipRange6 } : {}) });
    try {
      const res = await this.docker.createNetwork({
        Name: rec.name, Driver: name, Internal: rec.internal,
        ...(rec.subnet6 ? { EnableIPv6: true } : {}),
        ...(rec.attachable ? { Attachable: true } : {}),
        ...(rec.labels ? { Labels: rec.labels } : {}),
        Options: { ...rec.options, [CLUSTER_NETWORK_OPTION]: cid, ...(rec.ipv4 === false ? { [Label.enableIPv4]: 'false' } : {}) },
        IPAM: { Driver: name, ...(rec.ipamOptions ? { Options: rec.ipamOptions } : {}), Config: config },
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
      this.d.logger.info({ network: this.view.networks.get(cid)?.name, cluster: cid.slice(0, 12) }, 'network removed on this host (removed elsewhere)');
    } catch (err) {
      if (err instanceof DockerError && err.status === 404) {
        // Docker no longer has it (removed while weft was down): drop the binding ourselves.
        await this.d.networks.remove(localId);
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
    if (this.view.synced) {
      // This host's copies, from the view: no list of the store at rest.
      for (const [cid, hosts] of this.view.bindings) {
        const localId = hosts.get(this.me);
        const rec = this.view.networks.get(cid);
        if (localId && rec) this.d.networks.adopt(localId, cid, rec);
      }
    } else {
      await this.d.networks.loadLocalNetworks();
    }
    const locals = this.d.networks.list();
    const wanted = new Set<string>();
    // Suspects first, as in flush(), for WireGuard's peers and the tables below alike:
    // a flush still queued behind another has not told liveness of the latest lease expiry.
    if (this.cluster && this.stats.synced) this.refreshLiveness();
    // [wireguard] Peers drifted (a peer removed by hand, a device restarted), or the interface
    // lost its address or state: put back. A WireGuard that cannot come up is logged by its manager.
    if (this.d.wireguard && this.stats.synced) corrections += await this.d.wireguard.setHosts(this.wireGuardHosts());
    if (this.d.wireguard) corrections += await this.d.wireguard.ensure().catch(() => 0);
    for (const local of locals) {
      wanted.add(this.d.networks.spec(local.clusterId, local.record).id);
      try {
        await this.d.networks.ensureKernel(local, true);
        // The tables are read back from the kernel every --peer-audit-interval (at 10,000
        // endpoints a read is 20,000 entries); in between, from what was programmed.
        const audit = Date.now() - (this.lastAudit.get(local.clusterId) ?? 0) >= this.d.cfg.peerAuditInterval * 1000;
        if (this.stats.synced) corrections += await this.programNetwork(local.clusterId, audit);
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
    for (const local of this.d.networks.list()) wanted.add(this.d.networks.spec(local.clusterId, local.record).id);
    for (const id of present) {
      if (wanted.has(id)) continue;
      const nsPath = path.join(this.d.cfg.runDir, 'netns', NETNS_PREFIX + id);
      if (networkIdFromNetnsName(path.basename(nsPath)) !== id) continue;
      await this.d.dataplane.deleteNetwork({ id, nsPath, bridge: `br-${id}`, mtu: 1500 });
      corrections++;
      this.d.logger.info({ netns: nsPath }, 'removed the namespace of a network that no longer exists');
    }
    for (const cid of new Set([...this.view.networks.keys(), ...this.view.bindings.keys()])) this.propagate(cid);
    corrections += await collectGarbage({
      store: this.d.store, view: this.view, networks: this.d.networks, ipam: this.d.ipam, docker: this.docker, host: this.me,
      graceMs: this.d.cfg.gcGrace * 1000, logger: this.d.logger,
    });
    this.stats.corrections += corrections;
    this.stats.lastReconcile = new Date().toISOString();
    this.stats.reconcileMs = Date.now() - started;
    if (corrections) this.d.logger.info({ corrections }, 'reconcile repaired drift');
    return corrections;
  }
}

/** [routed] What announceChanges remembers for a remote address of a routed network: behind the routed link's proxy entry, or reached straight. */
const ROUTED = 'routed';
const DIRECT = 'direct';

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}
