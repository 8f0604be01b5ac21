// This host's view of the cluster: one list and one watch of /weft/v1/, kept
// in memory as typed records (hosts, networks, bindings, endpoints, and this
// host's own addresses), each validated at the edge (an invalid record is
// skipped, counted and logged once: nothing written to the store can stop the
// others). Everyone who needs the cluster reads it here instead of asking the
// store again: the agent (peers, propagation, collector), DNS (through the raw
// events it mirrors itself) and the operator routes. It says when it is
// ready (synced) and tells its subscribers what changed.

import type { Logger } from 'pino';
import { AddressRecord, EndpointRecord, HostRecord, NetworkRecord, parseKey, ParsedKey, PoolRecord, ROOT } from '../store/keys';
import { InvalidRecords, readAddress, readBinding, readEndpoint, readHost, readNetwork } from '../store/records';
import type { Store, Watcher, WatchEvent } from '../store/store';

/** A subscriber to the raw events (DNS keeps its own tables of names and askers). */
export interface MirrorListener {
  /** The view is about to list the store again: forget everything. */
  reset(): void;
  apply(ev: WatchEvent): void;
}

/** What changed, typed: the parsed key, and whether the record is now absent (deleted or not valid). */
export type ViewChange = ParsedKey & { gone: boolean };

export interface ClusterViewOptions {
  store: Store;
  /** This host's name: its own address records are kept (the collector's input). */
  host: string;
  logger: Logger;
  /** Called for each record skipped as not valid (counted by the caller). */
  onInvalid?: () => void;
}

export class ClusterView {
  /** Registered hosts (records under a live lease), by name. */
  readonly hosts = new Map<string, HostRecord>();
  /** Last address each host registered with, kept after its registration is gone (to probe it). */
  readonly lastAddress = new Map<string, string>();
  /** Last record of each host, kept after its registration is gone (a host cut off from the store keeps its WireGuard peer). */
  readonly lastHostRecord = new Map<string, HostRecord>();
  /** Valid network records, by cluster id. */
  readonly networks = new Map<string, NetworkRecord>();
  /** Networks whose record is not valid: left as they are, never taken for removed. */
  readonly unreadableNetworks = new Set<string>();
  /** Per cluster network: host -> Docker's local network id on that host. */
  readonly bindings = new Map<string, Map<string, string>>();
  /** Per cluster network: endpoint id -> record. */
  readonly endpoints = new Map<string, Map<string, EndpointRecord>>();
  /** This host's address records: "<pool>/<ip>" -> record. */
  readonly myAddresses = new Map<string, AddressRecord>();
  /** Pools this host created: pool id -> record (the collector's input). */
  readonly myPools = new Map<string, PoolRecord>();
  /** VNI claims: vni -> the cluster network that claims it. */
  readonly vnis = new Map<string, string>();
  readonly invalid: InvalidRecords;
  /** True once the first list is in and the watch runs. */
  synced = false;

  private watcher?: Watcher;
  private readonly listeners: MirrorListener[] = [];
  private readonly subscribers: ((changes: ViewChange[]) => void)[] = [];

  constructor(private readonly o: ClusterViewOptions) {
    this.invalid = new InvalidRecords((obj, msg) => {
      o.onInvalid?.();
      o.logger.warn(obj, msg);
    });
  }

  /** `l` gets every raw event, and a reset before every re-list. Add it before the first sync. */
  addListener(l: MirrorListener): void {
    this.listeners.push(l);
  }

  /** `fn` gets the typed changes of each batch (after the view applied them), and every record after a (re-)list. */
  subscribe(fn: (changes: ViewChange[]) => void): void {
    this.subscribers.push(fn);
  }

  /** Endpoints of one network, or of every network (the cluster's, from memory). */
  endpointsOf(clusterId: string): Map<string, EndpointRecord> {
    return this.endpoints.get(clusterId) ?? new Map();
  }

  /**
   * Lists the store and follows it from that revision on. `onLost` is called
   * when the watch lost its place (compaction, a long outage): the caller
   * syncs again (with its own back-off).
   */
  async sync(onLost: (err: Error) => void): Promise<void> {
    await this.watcher?.close().catch(() => undefined);
    const list = await this.o.store.list(ROOT);
    this.hosts.clear();
    this.networks.clear();
    this.bindings.clear();
    this.endpoints.clear();
    this.myAddresses.clear();
    this.myPools.clear();
    this.vnis.clear();
    for (const l of this.listeners) l.reset();
    const changes: ViewChange[] = [];
    for (const kv of list.kvs) {
      const c = this.apply({ type: 'put', key: kv.key, value: kv.value, revision: kv.modRevision });
      if (c) changes.push(c);
    }
    this.watcher = await this.o.store.watch(ROOT, {
      fromRevision: list.revision + 1,
      onEvents: (events) => {
        const batch: ViewChange[] = [];
        for (const ev of events) {
          const c = this.apply(ev);
          if (c) batch.push(c);
        }
        this.emit(batch);
      },
      onReset: (err) => {
        this.o.logger.warn({ err: err.message }, 'store watch lost its place; listing again');
        onLost(err);
      },
    });
    this.synced = true;
    this.emit(changes);
  }

  async close(): Promise<void> {
    await this.watcher?.close().catch(() => undefined);
  }

  private emit(changes: ViewChange[]): void {
    for (const fn of this.subscribers) {
      try {
        fn(changes);
      } catch (err) {
        this.o.logger.warn({ err: (err as Error).message }, 'a subscriber of the cluster view failed');
      }
    }
  }

  /** Applies one event to the view; returns the typed change, undefined for keys the view does not keep. */
  private apply(ev: WatchEvent): ViewChange | undefined {
    for (const l of this.listeners) l.apply(ev);
    const k = parseKey(ev.key);
    if (!k) return undefined;
    const put = ev.type === 'put' && ev.value !== undefined;
    try {
      switch (k.kind) {
        case 'host': {
          const h = put ? readHost(ev.value) : undefined;
          if (h?.ok) {
            this.hosts.set(k.host, h.value);
            this.lastAddress.set(k.host, h.value.address);
            this.lastHostRecord.set(k.host, h.value);
            this.invalid.clear(ev.key);
            return { ...k, gone: false };
          }
          // Not a usable registration: the host counts as unregistered (and is probed).
          if (h && !h.ok) this.invalid.skip('host', ev.key, ev.value, h.why);
          else this.invalid.clear(ev.key);
          this.hosts.delete(k.host);
          return { ...k, gone: true };
        }
        case 'network': {
          if (put) {
            const r = readNetwork(ev.value);
            if (!r.ok) {
              // Keep what was known of it, and never take an unreadable record for a removed network.
              this.invalid.skip('network', ev.key, ev.value, r.why);
              this.unreadableNetworks.add(k.network);
              return undefined;
            }
            this.invalid.clear(ev.key);
            this.unreadableNetworks.delete(k.network);
            this.networks.set(k.network, r.value);
            return { ...k, gone: false };
          }
          this.invalid.clear(ev.key);
          this.unreadableNetworks.delete(k.network);
          this.networks.delete(k.network);
          return { ...k, gone: true };
        }
        case 'binding': {
          const m = this.bindings.get(k.network) ?? new Map<string, string>();
          let gone = true;
          if (put) {
            const r = readBinding(ev.value);
            if (!r.ok) {
              this.invalid.skip('binding', ev.key, ev.value, r.why);
              return undefined;
            }
            this.invalid.clear(ev.key);
            m.set(k.host, r.value.localId);
            gone = false;
          } else {
            this.invalid.clear(ev.key);
            m.delete(k.host);
          }
          if (m.size) this.bindings.set(k.network, m);
          else this.bindings.delete(k.network);
          return { ...k, gone };
        }
        case 'endpoint': {
          const m = this.endpoints.get(k.network) ?? new Map<string, EndpointRecord>();
          const r = put ? readEndpoint(ev.value) : undefined;
          let gone = true;
          if (r?.ok) {
            this.invalid.clear(ev.key);
            m.set(k.endpoint, r.value);
            gone = false;
          } else {
            // Deleted, or not valid: not programmed anywhere.
            if (r && !r.ok) this.invalid.skip('endpoint', ev.key, ev.value, r.why);
            else this.invalid.clear(ev.key);
            m.delete(k.endpoint);
          }
          if (m.size) this.endpoints.set(k.network, m);
          else this.endpoints.delete(k.network);
          return { ...k, gone };
        }
        case 'addr': {
          // Only this host's: the collector compares them with Docker's view, from memory.
          const id = `${k.pool}/${k.ip}`;
          const rec = put ? readAddress(ev.value!) : undefined;
          if (rec && rec.host === this.o.host) this.myAddresses.set(id, rec);
          else this.myAddresses.delete(id);
          return undefined;
        }
        case 'pool': {
          let rec: PoolRecord | undefined;
          try {
            rec = put ? (JSON.parse(ev.value!) as PoolRecord) : undefined;
          } catch {
            rec = undefined;
          }
          if (rec && typeof rec === 'object' && rec.createdBy === this.o.host) this.myPools.set(k.pool, rec);
          else this.myPools.delete(k.pool);
          return undefined;
        }
        case 'vni': {
          let network: unknown;
          try {
            network = put ? (JSON.parse(ev.value!) as { network?: unknown }).network : undefined;
          } catch {
            network = undefined;
          }
          if (typeof network === 'string') this.vnis.set(k.vni, network);
          else this.vnis.delete(k.vni);
          return undefined;
        }
        default:
          return undefined;
      }
    } catch (err) {
      this.o.logger.warn({ key: ev.key, err: (err as Error).message }, 'ignoring an unreadable store record');
      return undefined;
    }
  }
}
