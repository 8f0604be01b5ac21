// This host's copies of cluster networks: the registry that maps Docker's
// local network ids to cluster networks (and their records), the kernel
// objects each one needs (spec derived here and nowhere else), and the
// network's life in the store: creation with its VNI, the fenced removal from
// the cluster, and the one way to tear a local copy down. The driver's CNM
// handlers (src/driver), the agent and the collector all go through it;
// none of them calls another's handlers.

import type { Logger } from 'pino';
import { endpointNames, networkNames, routedBridgeMac, routedMac } from '../dataplane/names';
import { DataPlaneApi, EndpointSpec, NetworkSpec } from '../dataplane/types';
import { errors } from '../errors';
import { parseSubnet, parseSubnet6, poolKey } from '../ipam/cidr';
import { Ipam } from '../ipam/ipam';
import { BindingRecord, EndpointRecord, keys, leaf, NetworkRecord, parseKey } from '../store/keys';
import { readEndpoint, readNetwork } from '../store/records';
import type { Compare, Store } from '../store/store';
import { faultPoint } from '../util/fault';
import { KeyedMutex } from '../util/mutex';
import { CLUSTER_NETWORK_OPTION, ENCRYPTED_OPTION, networkMode, type NetworkOptions } from '../driver/options';

/** [wireguard] What an encrypted network needs of this host's WireGuard (src/wireguard). */
export interface EncryptedPath {
  mode: 'on-request' | 'all' | 'off';
  /** Subtracted from --mtu for the default MTU of an encrypted network: WireGuard's overhead. */
  mtuOverhead: number;
  wireguard?: { isReady(): boolean; notReadyReason(): string; tunnelAddress(): string | undefined; readonly cryptoNetns: string };
}

export interface LocalNetworksOptions {
  /** [wireguard] Encrypted networks; absent: none (-o encrypted is refused as --encryption off). */
  encryption?: EncryptedPath;
  host: string;
  /** Cluster mode (etcd): VXLAN devices. */
  cluster: boolean;
  advertiseAddr?: string;
  runDir: string;
  defaultMtu: number;
  vxlanPort: number;
  logger: Logger;
}

export interface LocalNetwork {
  localId: string;
  clusterId: string;
  record: NetworkRecord;
  /** When this process learned of it (ms): Docker lists a network only after CreateNetwork returned. */
  since: number;
}

export interface LocalEndpoint {
  clusterId: string;
  record: EndpointRecord;
}

/** The IPv4 pool Docker hands to CreateNetwork. */
export interface Ipv4Pool { AddressSpace?: string; Pool: string; Gateway?: string }
/** The IPv6 pool Docker hands to CreateNetwork (IPv6Data[0]), same shape. */
export type Ipv6Pool = Ipv4Pool;

/**
 * Deletes a cluster network from the store: its record, its VNI claim and its
 * endpoints in one transaction under `compares`, then its pool. The one
 * place this is written; `weft host rm` uses it too.
 */
export async function deleteNetworkFromStore(
  store: Store, ipam: Ipam, clusterId: string, rec: { vni: number; poolId?: string; poolId6?: string }, compares: Compare[],
): Promise<boolean> {
  const r = await store.txn(compares, [
    { type: 'delete', key: keys.network(clusterId) },
    { type: 'delete', key: keys.vni(rec.vni) },
    { type: 'deletePrefix', prefix: keys.endpointsOf(clusterId) },
  ]);
  if (r.succeeded && rec.poolId) await ipam.deletePool(rec.poolId);
  if (r.succeeded && rec.poolId6) await ipam.deletePool(rec.poolId6);
  return r.succeeded;
}

const VNI_MIN = 4096;
const VNI_SPAN = (1 << 24) - VNI_MIN - 1;

export class LocalNetworks {
  private readonly networks = new Map<string, LocalNetwork>();
  private readonly endpoints = new Map<string, LocalEndpoint>();
  private readonly ensured = new Map<string, Promise<void>>();
  private readonly mutex = new KeyedMutex();
  private loaded: Promise<void> | undefined;
  /** Local ids removed by this process: never adopted again from a view that has not caught up. */
  private readonly removed = new Set<string>();
  /** Bumped whenever a network's kernel objects may have been made anew or removed (see kernelGeneration). */
  private readonly generations = new Map<string, number>();

  constructor(
    private readonly store: Store,
    private readonly ipam: Ipam,
    private readonly dataplane: DataPlaneApi,
    private readonly opts: LocalNetworksOptions,
  ) {}

  /**
   * CreateNetwork's work once its input is checked: the cluster network (a new
   * one with its pool binding and VNI, or the one named by -o weft.network),
   * this host's binding, and the kernel objects; all rolled back on failure
   * (Docker never calls DeleteNetwork for a create that failed).
   */
  async create(localId: string, o: NetworkOptions, v4: Ipv4Pool | undefined, ours: boolean, v6?: Ipv6Pool): Promise<void> {
    await this.mutex.run(`net:${localId}`, async () => {
      let clusterId: string;
      let record: NetworkRecord;
      let createdRecord = false;
      const boundPools: string[] = [];
      if (o.clusterId) {
        // This host's copy of a network created elsewhere (made by the agent).
        clusterId = o.clusterId;
        const kv = await this.store.get(keys.network(clusterId));
        if (!kv) throw errors.unknownClusterNetwork(clusterId);
        record = JSON.parse(kv.value) as NetworkRecord;
        // The option is weft's own; typed by hand it must still describe that network, once per host.
        if (record.subnet && v4 && parseSubnet(v4.Pool).cidr !== record.subnet) {
          throw errors.badOption(CLUSTER_NETWORK_OPTION, clusterId, `that cluster network's subnet is ${record.subnet}, not ${v4.Pool}`);
        }
        if ((record.subnet6 ?? '') !== (v6 ? parseSubnet6(v6.Pool).cidr : '')) {
          throw errors.badOption(CLUSTER_NETWORK_OPTION, clusterId, `that cluster network's IPv6 subnet is ${record.subnet6 ?? 'none (no --ipv6)'}, not ${v6?.Pool ?? 'none'}`);
        }
        const mine = await this.store.get(keys.binding(clusterId, this.opts.host));
        if (mine && (JSON.parse(mine.value) as BindingRecord).localId !== localId) {
          throw errors.badOption(CLUSTER_NETWORK_OPTION, clusterId, 'this host already has that cluster network; use it instead of creating another copy');
        }
      } else {
        clusterId = localId;
        const existing = await this.store.get(keys.network(clusterId));
        if (existing) {
          record = JSON.parse(existing.value) as NetworkRecord;
        } else {
          const subnet = v4 ? parseSubnet(v4.Pool) : undefined;
          const subnet6 = v6 ? parseSubnet6(v6.Pool) : undefined;
          try {
            for (const s of [subnet, subnet6]) {
              if (!ours || !s) continue;
              await this.ipam.bindPool(poolKey(s), clusterId, (other) => this.describeNetwork(other));
              boundPools.push(poolKey(s));
              faultPoint('createNetwork:after-bind');
            }
          } catch (err) {
            for (const p of boundPools) await this.ipam.unbindPool(p, clusterId).catch(() => undefined);
            throw err;
          }
          const encrypted = this.wantEncryption(o.encrypted); // [wireguard]
          record = {
            ...(subnet ? { subnet: subnet.cidr } : {}),
            ...(ours && subnet ? { poolId: poolKey(subnet) } : {}),
            ...(v4?.Gateway ? { gateway: v4.Gateway.split('/')[0] } : {}),
            ...(subnet6 ? { subnet6: subnet6.cidr } : {}),
            ...(ours && subnet6 ? { poolId6: poolKey(subnet6) } : {}),
            ...(v6?.Gateway ? { gateway6: v6.Gateway.split('/')[0] } : {}),
            ...(!subnet ? { ipv4: false } : {}),
            vni: 0,
            mtu: o.mtu ?? (encrypted && this.opts.cluster ? this.opts.defaultMtu - (this.opts.encryption?.mtuOverhead ?? 0) : this.opts.defaultMtu),
            options: encrypted ? { ...o.generic, [ENCRYPTED_OPTION]: 'true' } : o.generic,
            internal: o.internal,
            createdBy: this.opts.host,
            createdAt: new Date().toISOString(),
            ...(encrypted ? { encrypted: true } : {}),
          };
          try {
            record.vni = await this.createRecordWithVni(clusterId, record);
          } catch (err) {
            // The record may exist (a timed-out transaction that was applied): remove it and its VNI
            // with the pool binding. If the store does not answer now, the collector does it later.
            await this.removeHalfMade(clusterId).catch(() => undefined);
            for (const p of boundPools) await this.ipam.unbindPool(p, clusterId).catch(() => undefined);
            throw err;
          }
          createdRecord = true;
          faultPoint('createNetwork:after-record');
        }
      }
      const binding: BindingRecord = { localId };
      try {
        await this.putUnderNetwork(clusterId, keys.binding(clusterId, this.opts.host), JSON.stringify(binding), `recording network ${clusterId.slice(0, 12)} on this host`);
        const local: LocalNetwork = { localId, clusterId, record, since: Date.now() };
        this.networks.set(localId, local);
        if (o.clusterId) {
          // A copy (made by the agent when the network appeared elsewhere): Docker lists it as soon as this
          // returns, so its kernel objects (24 to 108 ms measured) are made after the answer, not before it.
          // Join waits for them (ensureKernel); one that fails is made again by the next Join or reconcile.
          this.ensureKernel(local, true).catch((err: Error) =>
            this.opts.logger.warn({ network: localId, cluster: clusterId, err: err.message }, 'setting up the copy\'s kernel objects failed; the next Join or reconcile tries again'));
        } else {
          await this.ensureKernel(local, true);
        }
        this.opts.logger.info({ network: localId, cluster: clusterId, vni: record.vni, subnet: record.subnet, subnet6: record.subnet6, mtu: record.mtu }, 'network created');
      } catch (err) {
        // Roll back: Docker will not call DeleteNetwork for a create that failed.
        this.networks.delete(localId);
        this.forgetKernel(clusterId);
        await this.dataplane.deleteNetwork(this.spec(clusterId, record)).catch(() => undefined);
        await this.store.delete(keys.binding(clusterId, this.opts.host)).catch(() => undefined);
        if (createdRecord) await this.deleteClusterNetwork(clusterId, record).catch(() => undefined);
        throw err;
      }
    });
  }


  /** Create the network record and claim a VNI in one transaction; the VNI is derived from the id, probing on collision. */
  private async createRecordWithVni(clusterId: string, record: NetworkRecord): Promise<number> {
    let h = 0;
    for (const c of clusterId) h = (Math.imul(h, 31) + c.charCodeAt(0)) >>> 0;
    for (let probe = 0; probe < 64; probe++) {
      const vni = VNI_MIN + ((h + probe * 7919) % VNI_SPAN);
      const value = JSON.stringify({ ...record, vni });
      const r = await this.store.txn(
        [{ key: keys.vni(vni), modRevision: 0 }, { key: keys.network(clusterId), modRevision: 0 }],
        [{ type: 'put', key: keys.vni(vni), value: JSON.stringify({ network: clusterId }) },
          { type: 'put', key: keys.network(clusterId), value }],
      );
      if (r.succeeded) return vni;
      // The record exists: an earlier attempt (a retried transaction) made it.
      const existing = await this.store.get(keys.network(clusterId));
      if (existing) return (JSON.parse(existing.value) as NetworkRecord).vni;
    }
    throw errors.contention('choosing a VNI');
  }

  /**
   * The one way to tear down this host's copy of a network: its kernel objects,
   * its binding, and (cluster rules below) the network itself. DeleteNetwork
   * lands here, and so do the agent (a network removed elsewhere that Docker
   * no longer has) and the collector.
   */
  async remove(localId: string): Promise<void> {
    const local = await this.lookupNetwork(localId);
    if (!local) {
      await this.deleteOrphanBinding(localId);
      return;
    }
    await this.mutex.run(`net:${localId}`, async () => {
      const { clusterId, record } = local;
      // Out of the registry first: a reconcile that still holds it in its list
      // does not make its kernel objects again (ensureKernel skips it).
      this.removed.add(localId);
      this.networks.delete(localId);
      await this.dataplane.deleteNetwork(this.spec(clusterId, record));
      this.forgetKernel(clusterId);
      await this.store.delete(keys.binding(clusterId, this.opts.host));
      for (const [id, ep] of this.endpoints) if (ep.clusterId === clusterId) this.endpoints.delete(id);
      await this.removeFromCluster(clusterId, localId);
      this.opts.logger.info({ network: localId, cluster: clusterId }, 'network deleted');
    });
  }

  /**
   * Hosts other than this one that have the network. In cluster mode a host
   * whose lease has expired does not count: it would keep a removed network
   * alive for ever. When it comes back, its agent finds its binding without a
   * network record and removes its copy (deleteOrphanBinding).
   */
  private async liveBindings(clusterId: string): Promise<string[]> {
    const bindings = (await this.store.list(keys.bindingsOf(clusterId))).kvs.map((kv) => leaf(kv.key)).filter((h) => h !== this.opts.host);
    if (!this.opts.cluster || bindings.length === 0) return bindings;
    const alive = new Set((await this.store.list(keys.hosts())).kvs.map((kv) => leaf(kv.key)));
    return bindings.filter((h) => alive.has(h));
  }

  private async otherHostsWithEndpoints(clusterId: string): Promise<string[]> {
    const eps = await this.store.list(keys.endpointsOf(clusterId));
    // An invalid record is no endpoint (no host programs it): it keeps nothing alive.
    const hosts = eps.kvs.map((e) => readEndpoint(e.value)).flatMap((r) => (r.ok ? [r.value.host] : []));
    return [...new Set(hosts.filter((h) => h !== this.opts.host))].sort();
  }

  /** DeleteNetwork of a network whose cluster record is gone: drop this host's binding and kernel state. */
  private async deleteOrphanBinding(localId: string): Promise<void> {
    const list = await this.store.list(keys.bindings());
    for (const kv of list.kvs) {
      const k = parseKey(kv.key);
      if (k?.kind !== 'binding') continue;
      const { network: clusterId, host } = k;
      if (host !== this.opts.host || (JSON.parse(kv.value) as BindingRecord).localId !== localId) continue;
      const names = networkNames(clusterId, this.opts.runDir);
      await this.dataplane.deleteNetwork({ id: names.id, nsPath: names.nsPath, bridge: names.bridge, mtu: this.opts.defaultMtu });
      this.forgetKernel(clusterId);
      await this.store.delete(kv.key);
      this.opts.logger.info({ network: localId, cluster: clusterId }, 'removed this host\'s copy of a network that no longer exists');
    }
  }

  /**
   * `docker network rm` on one host of a cluster network. Docker ignores
   * errors of DeleteNetwork (its copy is gone whatever we answer), so the
   * decision is made here: with containers on other hosts the network stays
   * in the cluster and the agent recreates this host's copy (the network
   * cannot be removed while in use, as with Docker's own overlay); otherwise
   * every host removes its copy and the last one deletes the record.
   *
   * Endpoints (alive or not) keep the network and their addresses: a host
   * cut off from the store still runs its containers; `weft host rm`
   * releases a host that is gone for good. A host whose lease expired does
   * not keep it by its binding alone.
   *
   * Reads and the deletion are fenced: the network is first marked
   * `deleting` (a compare-and-swap on its record), and every endpoint or
   * binding is created only with a compare on that record, not deleting
   * (putUnderNetwork). So after the mark nothing new appears, the endpoints
   * and bindings read after it are all there are, and the deletion itself is
   * a transaction on the marked revision. A `docker run` on another host at
   * the same moment either comes first (and keeps the network) or is refused.
   */
  private async removeFromCluster(clusterId: string, localId: string): Promise<void> {
    for (let attempt = 0; attempt < 8; attempt++) {
      const kv = await this.store.get(keys.network(clusterId));
      if (!kv) return;
      const read = readNetwork(kv.value);
      if (!read.ok) throw errors.internal(new Error(`the record of network ${clusterId.slice(0, 12)} in the store is not valid (${read.why}): fix or delete ${kv.key}`));
      const rec = read.value;
      const name = rec.name ?? clusterId.slice(0, 12);
      if ((await this.otherHostsWithEndpoints(clusterId)).length > 0) return this.refuseBusy(clusterId, localId, name);
      // The fence.
      let rev = kv.modRevision;
      const marked = !rec.deleting;
      if (marked) {
        const r = await this.store.txn([{ key: kv.key, modRevision: rev }], [{ type: 'put', key: kv.key, value: JSON.stringify({ ...rec, deleting: true }) }]);
        if (!r.succeeded) continue; // changed meanwhile: read again
        rev = r.revision;
      }
      if ((await this.otherHostsWithEndpoints(clusterId)).length > 0) {
        // An endpoint made just before the mark: the network is in use after all.
        if (marked) await this.store.txn([{ key: kv.key, modRevision: rev }], [{ type: 'put', key: kv.key, value: JSON.stringify({ ...rec, deleting: false }) }]);
        return this.refuseBusy(clusterId, localId, name);
      }
      // Other live hosts with a copy remove theirs (they see `deleting`); the last one deletes the record.
      if ((await this.liveBindings(clusterId)).length > 0) return;
      if (!(await deleteNetworkFromStore(this.store, this.ipam, clusterId, rec, [{ key: kv.key, modRevision: rev }]))) continue;
      return;
    }
    throw errors.contention(`removing network ${clusterId.slice(0, 12)} from the cluster`);
  }

  private async refuseBusy(clusterId: string, localId: string, name: string): Promise<never> {
    const busy = await this.otherHostsWithEndpoints(clusterId);
    const e = errors.networkBusy(name, busy);
    this.opts.logger.warn({ network: localId, cluster: clusterId, hosts: busy, code: e.code },
      `${e.message}; weft keeps the network on every host and recreates it here`);
    throw e;
  }

  /**
   * Writes a record that belongs to a network (an endpoint, a binding) only
   * while the network exists and is not being removed: a compare on the
   * network record's revision, so that removeFromCluster's fence holds.
   */
  async putUnderNetwork(clusterId: string, key: string, value: string, what: string): Promise<void> {
    for (let attempt = 0; attempt < 8; attempt++) {
      const kv = await this.store.get(keys.network(clusterId));
      if (!kv) throw errors.networkGone(clusterId.slice(0, 12));
      const rec = readNetwork(kv.value);
      if (rec.ok && rec.value.deleting) throw errors.networkRemoving(rec.value.name ?? clusterId.slice(0, 12));
      const r = await this.store.txn([{ key: kv.key, modRevision: kv.modRevision }], [{ type: 'put', key, value }]);
      if (r.succeeded) return;
    }
    throw errors.contention(what);
  }

  /** The network record and VNI of a CreateNetwork that failed after its transaction may have applied. */
  private async removeHalfMade(clusterId: string): Promise<void> {
    const kv = await this.store.get(keys.network(clusterId));
    if (!kv) return;
    const rec = readNetwork(kv.value);
    if (!rec.ok || rec.value.createdBy !== this.opts.host) return;
    await this.store.txn([{ key: kv.key, modRevision: kv.modRevision }], [
      { type: 'delete', key: kv.key }, { type: 'delete', key: keys.vni(rec.value.vni) },
    ]);
  }

  /** Removes a network that never got a copy on any host (its CreateNetwork failed half-way): the collector's job. */
  async deleteClusterNetwork(clusterId: string, record: NetworkRecord, modRevision?: number): Promise<boolean> {
    return deleteNetworkFromStore(this.store, this.ipam, clusterId, record, modRevision ? [{ key: keys.network(clusterId), modRevision }] : []);
  }

  /** Name of a cluster network for messages: the Docker name once known, else a short id. */
  async describeNetwork(clusterId: string): Promise<string> {
    const kv = await this.store.get(keys.network(clusterId));
    const name = kv ? (JSON.parse(kv.value) as NetworkRecord).name : undefined;
    return name ?? clusterId.slice(0, 12);
  }

  /** The network behind a local Docker network id; after a restart, found again in the store. */
  async lookupNetwork(localId: string): Promise<LocalNetwork | undefined> {
    const hit = this.networks.get(localId);
    if (hit) return hit;
    await this.loadLocalNetworks();
    return this.networks.get(localId);
  }

  /** Read this host's bindings from the store. Single-flight: concurrent misses share one read. */
  loadLocalNetworks(): Promise<void> {
    if (!this.loaded) {
      this.loaded = (async () => {
        const list = await this.store.list(keys.bindings());
        for (const kv of list.kvs) {
          const k = parseKey(kv.key);
          if (k?.kind !== 'binding' || k.host !== this.opts.host) continue;
          const clusterId = k.network;
          const { localId } = JSON.parse(kv.value) as BindingRecord;
          if (this.networks.has(localId) || this.removed.has(localId)) continue;
          const net = await this.store.get(keys.network(clusterId));
          if (!net) continue;
          // A DeleteNetwork may have finished while this load awaited: do not bring it back.
          if (this.networks.has(localId) || !(await this.store.get(kv.key))) continue;
          this.networks.set(localId, { localId, clusterId, record: JSON.parse(net.value) as NetworkRecord, since: Date.now() });
        }
      })().finally(() => {
        this.loaded = undefined;
      });
    }
    return this.loaded;
  }

  list(): LocalNetwork[] {
    return [...this.networks.values()];
  }

  /** Update the cached record (the agent learns names, deletions). */
  updateRecord(clusterId: string, record: NetworkRecord): void {
    for (const n of this.networks.values()) if (n.clusterId === clusterId) n.record = record;
  }

  spec(clusterId: string, record: NetworkRecord): NetworkSpec {
    const names = networkNames(clusterId, this.opts.runDir);
    const spec: NetworkSpec = { id: names.id, nsPath: names.nsPath, bridge: names.bridge, mtu: record.mtu };
    if (this.opts.cluster && this.opts.advertiseAddr) {
      spec.vxlan = { name: names.vxlan, vni: record.vni, local: this.opts.advertiseAddr, port: this.opts.vxlanPort, mtu: record.mtu };
      // [routed] The routed link, next to the VXLAN device (kept for peers on other underlay segments).
      if (networkMode(record.options) === 'routed' && !record.encrypted && record.gateway && record.subnet) {
        spec.routed = {
          name: names.routed, local: this.opts.advertiseAddr, mac: routedMac(this.opts.advertiseAddr, record.vni),
          bridgeMac: routedBridgeMac(this.opts.advertiseAddr, record.vni), gateway: record.gateway, prefixLen: parseSubnet(record.subnet).prefix,
        };
      }
      const wg = this.opts.encryption?.wireguard;
      if (record.encrypted) {
        // [wireguard] The VTEP is the tunnel address; the VXLAN socket lives in WireGuard's namespace.
        spec.vxlan.local = wg?.tunnelAddress() ?? '';
        spec.vxlan.socketNetns = wg?.cryptoNetns ?? '';
      }
    }
    return spec;
  }

  /** Make sure the network's namespace, bridge and VXLAN exist; once per process lifetime unless forced. */
  async ensureKernel(local: LocalNetwork, force = false): Promise<void> {
    // A copy removed meanwhile (a reconcile's list taken before DeleteNetwork) is not made again.
    if (this.removed.has(local.localId)) return;
    let p = this.ensured.get(local.clusterId);
    if (!p || force) {
      const spec = this.spec(local.clusterId, local.record);
      if (spec.vxlan?.socketNetns !== undefined && (!spec.vxlan.local || !spec.vxlan.socketNetns)) {
        // [wireguard] Never a plain VXLAN for an encrypted network: without WireGuard it has no path at all.
        const wg = this.opts.encryption?.wireguard;
        throw errors.encryptionUnavailable(`setting up encrypted network ${local.record.name ?? local.clusterId.slice(0, 12)}`,
          wg ? wg.notReadyReason() : 'this host runs with --encryption off');
      }
      const cid = local.clusterId;
      // Remembered forwarding tables stay trusted unless the objects were made anew.
      p = this.dataplane.ensureNetwork(spec).then((made) => {
        if (made !== false) this.bumpGeneration(cid);
      }, (err) => {
        this.forgetKernel(cid);
        throw errors.kernel(`setting up network ${cid.slice(0, 12)}`, err);
      });
      this.ensured.set(cid, p);
    }
    return p;
  }

  async lookupEndpoint(local: LocalNetwork, endpointId: string): Promise<LocalEndpoint | undefined> {
    const hit = this.endpoints.get(endpointId);
    if (hit) return hit;
    const kv = await this.store.get(keys.endpoint(local.clusterId, endpointId));
    if (!kv) return undefined;
    const ep = { clusterId: local.clusterId, record: JSON.parse(kv.value) as EndpointRecord };
    this.endpoints.set(endpointId, ep);
    return ep;
  }

  endpointSpec(local: LocalNetwork, endpointId: string, mac: string, ip?: string): EndpointSpec {
    const n = endpointNames(endpointId);
    return { hostIf: n.hostIf, bridgeIf: n.bridgeIf, mac, mtu: local.record.mtu, ...(ip ? { ip } : {}) };
  }

  /** The one way to remove an endpoint of this host: its interface, then its record (DeleteEndpoint, the collector). */
  async removeEndpoint(localId: string, endpointId: string): Promise<void> {
    const local = await this.lookupNetwork(localId);
    if (!local) return;
    const ep = await this.lookupEndpoint(local, endpointId);
    const spec = this.endpointSpec(local, endpointId, ep?.record.mac ?? '00:00:00:00:00:00');
    faultPoint('deleteEndpoint:before-kernel');
    await this.dataplane.deleteEndpoint(this.spec(local.clusterId, local.record), spec);
    faultPoint('deleteEndpoint:after-kernel');
    await this.store.delete(keys.endpoint(local.clusterId, endpointId));
    this.endpoints.delete(endpointId);
  }

  /** A new endpoint of this host, as CreateEndpoint stored it. */
  rememberEndpoint(endpointId: string, ep: LocalEndpoint): void {
    this.endpoints.set(endpointId, ep);
  }

  /**
   * Changes whenever the network's kernel objects may have been made anew or
   * removed: forwarding tables remembered from before are not to be trusted,
   * and the next programming of its peers reads the kernel.
   */
  kernelGeneration(clusterId: string): number {
    return this.generations.get(clusterId) ?? 0;
  }

  private bumpGeneration(clusterId: string): void {
    this.generations.set(clusterId, this.kernelGeneration(clusterId) + 1);
  }

  private forgetKernel(clusterId: string): void {
    this.ensured.delete(clusterId);
    this.bumpGeneration(clusterId);
  }

  /**
   * A copy of a network that this host's binding names, as the cluster view
   * sees it (the reconcile's way of finding networks after a restart without
   * listing the store). A copy this process removed is not brought back.
   */
  adopt(localId: string, clusterId: string, record: NetworkRecord): void {
    if (this.networks.has(localId) || this.removed.has(localId)) return;
    this.networks.set(localId, { localId, clusterId, record, since: Date.now() });
  }

  /**
   * [wireguard] Whether a new network is encrypted: -o encrypted, or --encryption all.
   * Throws when this host cannot honour it. In cluster mode WireGuard must be up
   * here, so that the first container does not find out.
   */
  wantEncryption(requested: boolean | undefined): boolean {
    const e = this.opts.encryption;
    const mode = e?.mode ?? 'off';
    if (requested === false && mode === 'all') throw errors.encryptionRequired();
    const encrypted = requested ?? mode === 'all';
    if (!encrypted) return false;
    if (mode === 'off') throw errors.encryptionOff();
    if (this.opts.cluster && !e?.wireguard?.isReady()) {
      throw errors.encryptionUnavailable('cannot create an encrypted network', e?.wireguard?.notReadyReason() ?? 'not started');
    }
    return true;
  }
}
