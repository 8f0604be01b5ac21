// Learns this host's containers' names from its Docker engine and writes them
// to the store, where every host's DNS finds them:
//   names/<clusterId>/<endpointId>  {name, aliases, ip, ip6?, host, network, container}
//   askers/<host>/<ip>              {networks, container, name}
// The asker addresses are the container's docker_gwbridge address (where its
// queries to weft come from: Docker's embedded resolver forwards them from
// inside the container's namespace, whose default route is on that bridge)
// and its addresses on other non-weft networks (a container also on a bridge
// network routes through that one instead).
//
// Sources: the events stream (network connect/disconnect, container
// start/die/destroy/rename), a full resync from GET /containers/json plus
// inspects at start, on every reconnect of the stream and every resyncMs.
// A container's name is written early, before its start finishes: right
// after the driver answers Join (endpointJoined), GET /networks/ID lists the
// new endpoint with its container, address and endpoint name, which is the
// container's name; an inspect would wait for the start to end (Docker 20.10)
// or say "created" (Docker 28). That record (no aliases yet) is written at
// once; the inspect once the start is over completes it with the aliases and
// the asker addresses, or deletes it if the container did not come up. The
// `network connect` event, a little later, is a second chance.
// Never inside a driver call: this runs on its own, in the background, with
// retries. In cluster mode the records are attached to the host's lease (so a
// dead host's names vanish with it) and rewritten under each new lease.

import type { Logger } from 'pino';
import type { DockerClient, DockerContainer, DockerNetwork, EventStream } from '../agent/docker';
import { DockerError } from '../agent/docker';
import type { LocalNetwork } from '../cluster/local-networks';
import { AskerRecord, keys, NameRecord, parseKey } from '../store/keys';
import type { LeaseId, Store } from '../store/store';
import { NameTable } from './table';
import { canonicalIPv6, isIPv4, isIPv6 } from '../ipam/cidr';

export interface LearnerDeps {
  store: Store;
  /** This host's weft networks (local Docker id -> cluster id). */
  localNetworks: () => LocalNetwork[];
  docker: Pick<DockerClient, 'listContainers' | 'inspectContainer' | 'inspectNetwork' | 'streamEvents'>;
  host: string;
  /** Cluster mode: records wait for the host's lease and are attached to it. */
  cluster: boolean;
  table: NameTable;
  logger: Logger;
  /** Full resync period (default 30 s). */
  resyncMs?: number;
  /**
   * Whether this host's weft networks are known yet (the agent's first
   * reconcile and store list are done). Until then nothing is written: a
   * pass that saw no weft networks would delete this host's records.
   */
  ready?: () => boolean;
}

const GWBRIDGE = 'docker_gwbridge';
/**
 * After a Join, GET /networks/ID until it lists the endpoint under its
 * container: waits before each attempt (ms), about half a second in all
 * (Docker 28 ties them together some 80 ms after the Join).
 */
const JOINED_RETRIES_MS = [0, 10, ...Array.from({ length: 24 }, () => 20)] as const;
type NetworkEndpoint = NonNullable<DockerNetwork['Containers']>[string];
const CONTAINER_ID = /^[0-9a-f]{64}$/;
/** An early record whose container's start has not ended after this long is checked like any other. */
const EARLY_MAX_MS = 60_000;
const EVENTS = ['start', 'die', 'destroy', 'rename', 'connect', 'disconnect'];

export class NameLearner {
  /** Per running container: the records it should have (key -> JSON). */
  private byContainer = new Map<string, Map<string, string>>();
  /** What this agent put under the current lease (key -> JSON). */
  private written = new Map<string, string>();
  /** The next full resync also compares with the store (this host's records), not only with what was written. */
  private storeCheckDue = true;
  private lease?: LeaseId;
  private readonly dirty = new Set<string>();
  private batchTimer?: NodeJS.Timeout;
  private resyncTimer?: NodeJS.Timeout;
  private retryTimer?: NodeJS.Timeout;
  private chain: Promise<void> = Promise.resolve();
  private stream?: EventStream;
  private streamAttempt = 0;
  private stopped = false;
  private lastRefresh = 0;
  /**
   * Records written early (on network connect), outside the queue. Each waits
   * for an inspect of its container issued after it was written (`decided`),
   * then the next write() checks it against what Docker says.
   */
  private readonly early = new Map<string, { value: string; container: string; endpoint: string; seq: number; at: number; decided: boolean }>();
  private earlySeq = 0;
  private fullPending = false;
  private failures = 0;
  readonly stats = { resyncs: 0, events: 0, writes: 0, errors: 0, early: 0 };

  constructor(private readonly d: LearnerDeps) {}

  start(): void {
    this.follow();
    this.resyncTimer = setInterval(() => this.requestFull(), this.d.resyncMs ?? 30_000);
    this.resyncTimer.unref();
  }

  stop(): void {
    this.stopped = true;
    this.stream?.close();
    clearTimeout(this.batchTimer);
    clearTimeout(this.retryTimer);
    clearInterval(this.resyncTimer);
  }

  /** The host registered (again) under `lease`: what was written under an older one is gone or going, so write it all again. */
  setLease(lease: LeaseId): void {
    this.lease = lease;
    this.written.clear();
    this.storeCheckDue = true;
    this.requestFull();
  }

  /** A query came from an address weft does not know: look at Docker again soon (at most once a second). */
  refreshSoon(): void {
    const now = Date.now();
    if (now - this.lastRefresh < 1000) return;
    this.lastRefresh = now;
    this.requestFull();
  }

  /** Resolves once the work queued so far is done (for tests). */
  idle(): Promise<void> {
    return this.chain;
  }

  // ------------------------------------------------------------ Docker

  private follow(): void {
    if (this.stopped) return;
    this.stream = this.d.docker.streamEvents({ type: ['container', 'network'], event: EVENTS }, (ev) => {
      this.stats.events++;
      const id = ev.Type === 'network' ? ev.Actor?.Attributes?.container : ev.Actor?.ID;
      if (!id) return;
      if (this.streamAttempt) this.streamAttempt = 0;
      if (ev.Type === 'network' && ev.Action === 'connect' && ev.Actor?.ID) this.connected(ev.Actor.ID, id);
      this.markDirty(id);
    }, (err) => {
      if (this.stopped) return;
      const wait = Math.min(5000, 100 * 2 ** this.streamAttempt++);
      const level = this.streamAttempt <= 3 ? 'debug' : 'warn';
      this.d.logger[level]({ err: err.message, retryInMs: wait }, 'Docker events stream ended (is dockerd running?); reconnecting, then resyncing names');
      setTimeout(() => this.follow(), wait).unref();
    });
    // Events before this point were not seen: resync (also the first sync).
    this.requestFull();
  }

  private markDirty(id: string): void {
    this.dirty.add(id);
    this.batchTimer ??= setTimeout(() => {
      this.batchTimer = undefined;
      this.enqueue(() => this.processDirty());
    }, 50);
  }

  /**
   * Inspects issued when the early sequence was at `seq` have been read
   * (`seen`: container id -> what Docker said, undefined if it is gone): an
   * early record written before is decided once Docker has the last word on
   * its container and endpoint (see settles()), or after EARLY_MAX_MS
   * whatever it says; until then it stays as written. (A name whose endpoint
   * is gone resolves nowhere meanwhile: the name table counts a name only
   * while its endpoint exists.)
   */
  private settleEarly(seen: Map<string, DockerContainer | undefined>, seq: number): void {
    if (!this.early.size) return;
    const now = Date.now();
    for (const e of this.early.values()) {
      if (e.decided || e.seq > seq || !seen.has(e.container)) continue;
      if (settles(seen.get(e.container), e.endpoint) || now - e.at > EARLY_MAX_MS) e.decided = true;
    }
  }

  /**
   * Endpoint `endpointId` of this host just joined Docker network
   * `networkId` (the driver's Join answered): write its container's name now,
   * well before the start ends. Docker lists the endpoint in GET /networks/ID
   * (with its container, address and name, the container's) shortly after
   * Join; asking there needs no lock on the container, unlike an inspect.
   */
  endpointJoined(networkId: string, endpointId: string): void {
    this.writeEarly(networkId, (id, ep) => ep.EndpointID === endpointId, JOINED_RETRIES_MS);
  }

  /** Container `containerId` was just connected to Docker network `networkId` (the event): the same, if the Join's attempt did not do it. */
  private connected(networkId: string, containerId: string): void {
    this.writeEarly(networkId, (id) => id === containerId, [0]);
  }

  private writeEarly(networkId: string, match: (containerId: string, ep: NetworkEndpoint) => boolean, retriesMs: readonly number[]): void {
    if (this.stopped) return;
    const cid = this.weftNetworks().get(networkId);
    if (!cid || (this.d.cluster && !this.lease) || (this.d.ready && !this.d.ready())) return;
    const lease = this.d.cluster ? this.lease : undefined;
    const t0 = Date.now();
    void (async () => {
      let found: [string, NetworkEndpoint] | undefined;
      let netName = '';
      for (const wait of retriesMs) {
        if (wait) await new Promise((r) => setTimeout(r, wait));
        if (this.stopped) return;
        const net = await this.d.docker.inspectNetwork(networkId);
        netName = net.Name;
        // Until Docker has tied the endpoint to its container, it lists it under "ep-<endpoint id>": wait for the container's id.
        found = Object.entries(net.Containers ?? {}).find(([id, ep]) => CONTAINER_ID.test(id) && match(id, ep));
        if (found) break;
      }
      if (!found) return; // not listed (yet, or any more): the inspect after the start writes it
      const [containerId, ep] = found;
      const name = ep.Name;
      const ip = ep.IPv4Address?.split('/')[0];
      if (!ep.EndpointID || !name || !ip || !isIPv4(ip)) return;
      const key = keys.name(cid, ep.EndpointID);
      if (this.written.has(key) || this.early.has(key)) return; // written already
      const rec: NameRecord = { name, aliases: [], ip, host: this.d.host, network: netName, container: containerId };
      const value = JSON.stringify(rec);
      this.early.set(key, { value, container: containerId, endpoint: ep.EndpointID, seq: ++this.earlySeq, at: Date.now(), decided: false });
      await this.d.store.put(key, value, lease);
      this.stats.early++;
      this.stats.writes++;
      this.d.logger.debug({ name, network: netName, ms: Date.now() - t0 }, 'container name written before its start ended');
      // An inspect issued from now on (it returns once the start is over) completes or removes it.
      this.markDirty(containerId);
    })().catch((err: Error) => {
      this.d.logger.debug({ err: err.message, network: networkId.slice(0, 12) }, 'writing a name early failed; the regular pass writes it');
    });
  }

  private requestFull(): void {
    if (this.stopped || this.fullPending) return;
    this.fullPending = true;
    this.enqueue(async () => {
      this.fullPending = false;
      await this.fullResync();
    });
  }

  private enqueue(job: () => Promise<void>): void {
    this.chain = this.chain.then(job).then(() => { this.failures = 0; }, (err: Error) => {
      this.stats.errors++;
      // Loud once, then quiet while it lasts (dockerd down, store down): every 30th failure.
      const level = this.failures++ % 30 === 0 ? 'warn' : 'debug';
      if (/lease/i.test(err.message)) {
        // The host's lease was lost: the agent registers again, and setLease() rewrites everything under the new one.
        this.d.logger.info({ err: err.message }, 'names for DNS wait for this host to register again (its lease was lost)');
      } else {
        this.d.logger[level]({ err: err.message, failures: this.failures }, 'learning container names for DNS failed (Docker engine or store unreachable?); retrying every 2 s');
      }
      clearTimeout(this.retryTimer);
      this.retryTimer = setTimeout(() => this.requestFull(), 2000);
      this.retryTimer.unref();
    });
  }

  private weftNetworks(): Map<string, string> {
    return new Map(this.d.localNetworks().map((n) => [n.localId, n.clusterId]));
  }

  /** Container id -> its docker_gwbridge address. */
  private async gwbridge(): Promise<Map<string, string>> {
    try {
      const net = await this.d.docker.inspectNetwork(GWBRIDGE);
      const out = new Map<string, string>();
      for (const [id, c] of Object.entries(net.Containers ?? {})) {
        const ip = c.IPv4Address?.split('/')[0];
        if (ip && isIPv4(ip)) out.set(id, ip);
      }
      return out;
    } catch (e) {
      if (e instanceof DockerError && e.status === 404) return new Map(); // no container has needed it yet
      throw e;
    }
  }

  private async inspect(id: string): Promise<DockerContainer | undefined> {
    try {
      return await this.d.docker.inspectContainer(id);
    } catch (e) {
      if (e instanceof DockerError && e.status === 404) return undefined;
      throw e;
    }
  }

  private async processDirty(): Promise<void> {
    const ids = [...this.dirty];
    this.dirty.clear();
    if (!ids.length) return;
    const seq = this.earlySeq;
    const [gw, containers] = await Promise.all([this.gwbridge(), Promise.all(ids.map((id) => this.inspect(id)))]);
    this.settleEarly(new Map(ids.map((id, i) => [id, containers[i]])), seq);
    const nets = this.weftNetworks();
    ids.forEach((id, i) => {
      const recs = recordsOf(containers[i], gw.get(id), nets, this.d.host);
      if (recs.size) this.byContainer.set(id, recs);
      else this.byContainer.delete(id);
    });
    this.publishAskers();
    await this.write(false);
  }

  private async fullResync(): Promise<void> {
    if (this.stopped) return;
    const seq = this.earlySeq;
    const list = await this.d.docker.listContainers();
    const gw = await this.gwbridge();
    const nets = this.weftNetworks();
    const next = new Map<string, Map<string, string>>();
    const ids = list.map((c) => c.Id);
    const seen = new Map<string, DockerContainer | undefined>();
    for (let i = 0; i < ids.length; i += 8) {
      const batch = ids.slice(i, i + 8);
      const got = await Promise.all(batch.map((id) => this.inspect(id)));
      batch.forEach((id, j) => {
        seen.set(id, got[j]);
        const recs = recordsOf(got[j], gw.get(id), nets, this.d.host);
        if (recs.size) next.set(id, recs);
      });
    }
    this.byContainer = next;
    // The list holds running containers only: ask about the others with an early record (starting, or gone).
    for (const c of new Set([...this.early.values()].map((e) => e.container))) if (!seen.has(c)) seen.set(c, await this.inspect(c));
    this.settleEarly(seen, seq);
    this.publishAskers();
    // Docker is read in full every time; the store only when this host's records
    // there may differ from what was written (at start, after registering again):
    // at rest a resync asks the store nothing, whatever the cluster's size.
    const checkStore = this.storeCheckDue;
    await this.write(checkStore);
    if (checkStore) this.storeCheckDue = false;
    this.stats.resyncs++;
  }

  private desired(): Map<string, string> {
    const out = new Map<string, string>();
    for (const recs of this.byContainer.values()) for (const [k, v] of recs) out.set(k, v);
    return out;
  }

  /** Hands this host's askers to the DNS table at once (the store copy follows). */
  private publishAskers(): void {
    const askers = new Map<string, AskerRecord>();
    for (const [key, v] of this.desired()) {
      const k = parseKey(key);
      if (k?.kind === 'asker' && k.host === this.d.host) askers.set(k.ip, JSON.parse(v) as AskerRecord);
    }
    this.d.table.setLocalAskers(askers);
  }

  // ------------------------------------------------------------ store

  /**
   * Brings the store in line with what Docker says. Incremental: against what
   * was written under this lease. Full: against the store itself (this host's
   * records only), which also removes records a previous run left.
   */
  private async write(full: boolean): Promise<void> {
    if (this.d.cluster && !this.lease) return; // not registered yet: setLease() brings a full pass
    if (this.d.ready && !this.d.ready()) {
      clearTimeout(this.retryTimer);
      this.retryTimer = setTimeout(() => this.requestFull(), 500);
      this.retryTimer.unref();
      return;
    }
    const lease = this.d.cluster ? this.lease : undefined;
    const want = this.desired();
    let have: Map<string, string>;
    if (full) {
      have = new Map();
      const [names, askers] = await Promise.all([this.d.store.list(keys.names()), this.d.store.list(keys.askersOf(this.d.host))]);
      for (const kv of names.kvs) {
        let host: string | undefined;
        try {
          host = (JSON.parse(kv.value) as Partial<NameRecord>).host;
        } catch {
          host = undefined;
        }
        if (host !== this.d.host) continue;
        // A record under another lease is rewritten: that lease may expire and take it along.
        if (!lease || kv.lease === lease) have.set(kv.key, kv.value);
        else have.set(kv.key, '');
      }
      for (const kv of askers.kvs) have.set(kv.key, !lease || kv.lease === lease ? kv.value : '');
    } else have = new Map(this.written);
    // Written early, outside the queue: once Docker has been asked about the
    // container since, as written (kept, completed or deleted below); until
    // then left alone, neither wanted nor deleted.
    const early = new Map<string, string>();
    for (const [k, e] of this.early) {
      if (e.decided) {
        early.set(k, e.value);
        have.set(k, e.value);
      } else {
        have.delete(k);
        want.delete(k);
      }
    }
    const puts = [...want].filter(([k, v]) => have.get(k) !== v);
    const dels = [...have.keys()].filter((k) => !want.has(k));
    for (const [k, v] of puts) {
      await this.d.store.put(k, v, lease);
      this.stats.writes++;
    }
    for (const k of dels) {
      await this.d.store.delete(k);
      this.stats.writes++;
    }
    for (const [k, v] of early) if (this.early.get(k)?.value === v) this.early.delete(k);
    if (puts.length || dels.length) this.d.logger.debug({ put: puts.length, deleted: dels.length, full }, 'container names written to the store');
    this.written = want;
  }
}

/** Whether Docker has the last word on a container's start: it runs, ended, failed to start, or is gone. */
export function startOver(c: DockerContainer | undefined): boolean {
  const s = c?.State;
  if (!c || !s || s.Running) return true;
  return s.Status !== 'created' || !!s.Error || (s.ExitCode ?? 0) !== 0;
}

/**
 * Whether an inspect is Docker's last word on an early record: the container
 * is gone, or its start is over and failed or ended (startOver), or it runs
 * and lists the record's endpoint with its address. A running container
 * whose inspect lacks them is not (Docker 28 reports a container running a
 * moment before its network settings are complete).
 */
export function settles(c: DockerContainer | undefined, endpointId: string): boolean {
  if (!startOver(c)) return false;
  if (!c?.State?.Running) return true;
  // as recordsOf() needs it: the endpoint with its address (Docker 28 fills them in one after the other)
  return Object.values(c.NetworkSettings?.Networks ?? {}).some((n) => n.EndpointID === endpointId && !!n.IPAddress && isIPv4(n.IPAddress));
}

/** The store records of one container (none unless it runs and is on a weft network). */
export function recordsOf(c: DockerContainer | undefined, gwIp: string | undefined, weftNets: Map<string, string>, host: string): Map<string, string> {
  const out = new Map<string, string>();
  if (!c || !c.State?.Running) return out;
  const name = (c.Name ?? '').replace(/^\//, '');
  const networks = new Set<string>();
  const askerIps = new Set<string>();
  if (gwIp) askerIps.add(gwIp);
  // IPv6 off in the container: Docker 28 reserves no IPv6 address for it, 20.10 still does (one nothing answers on).
  const sysctls = c.HostConfig?.Sysctls ?? {};
  const ipv6Off = ['net.ipv6.conf.all.disable_ipv6', 'net.ipv6.conf.eth0.disable_ipv6'].some((k) => sysctls[k] === '1');
  for (const [netName, n] of Object.entries(c.NetworkSettings?.Networks ?? {})) {
    const cid = n.NetworkID ? weftNets.get(n.NetworkID) : undefined;
    if (!cid) {
      if (n.IPAddress && isIPv4(n.IPAddress)) askerIps.add(n.IPAddress);
      continue;
    }
    networks.add(cid);
    // Dual-stack: both addresses; IPv6-only (Docker 28): no IPv4 address.
    const ip4 = n.IPAddress && isIPv4(n.IPAddress) ? n.IPAddress : '';
    const ip6 = !ipv6Off && n.GlobalIPv6Address && isIPv6(n.GlobalIPv6Address) ? canonicalIPv6(n.GlobalIPv6Address) : undefined;
    if (!n.EndpointID || (!ip4 && !ip6)) continue;
    const aliases = [...new Set((n.Aliases ?? []).filter((a) => typeof a === 'string' && a && a !== name))].sort();
    const rec: NameRecord = { name, aliases, ip: ip4, ...(ip6 ? { ip6 } : {}), ...(ipv6Off ? { ipv6Off: true } : {}), host, network: netName, container: c.Id };
    out.set(keys.name(cid, n.EndpointID), JSON.stringify(rec));
  }
  if (!networks.size) return out;
  const asker: AskerRecord = { networks: [...networks].sort(), container: c.Id, name };
  for (const ip of askerIps) out.set(keys.asker(host, ip), JSON.stringify(asker));
  return out;
}
