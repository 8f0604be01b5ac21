// CNM semantics of weft's network driver: what CreateNetwork, CreateEndpoint,
// Join, Leave, DeleteEndpoint and DeleteNetwork mean, with rollback. The API
// layer (src/api) only translates wire types to these calls.
//
// Rules this module keeps:
//   - it never calls the Docker Engine API (that can deadlock dockerd at boot;
//     the agent does it, asynchronously);
//   - Delete*/Leave of unknown ids succeed (Docker re-sends them after restarts);
//   - a network's state lives in the store, so a restarted weft (CreateNetwork
//     is never replayed) still knows every network; kernel objects are
//     recreated lazily on first use and by the agent's reconcile.

import type { Logger } from 'pino';
import { Label, Options } from '../api/wire';
import { endpointNames, networkNames } from '../dataplane/names';
import { DataPlaneApi, EndpointSpec, NetworkSpec } from '../dataplane/types';
import { errors, WeftError } from '../errors';
import { parseSubnet, poolKey } from '../ipam/cidr';
import { ADDRESS_SPACE, Ipam } from '../ipam/ipam';
import { BindingRecord, EndpointRecord, keys, leaf, NetworkRecord } from '../store/keys';
import { Store } from '../store/store';
import { faultPoint } from '../util/fault';
import { KeyedMutex } from '../util/mutex';
import { CLUSTER_NETWORK_OPTION, ENCRYPTED_OPTION, isValidUnicastMac, macFromIp, normalizeMac, parseNetworkOptions } from './options';

export interface DriverOptions {
  host: string;
  /** Cluster mode (etcd): VXLAN devices, Docker's default IPAM refused. */
  cluster: boolean;
  advertiseAddr?: string;
  runDir: string;
  defaultMtu: number;
  vxlanPort: number;
  /** What users type after -d / --ipam-driver, for error messages. */
  driverName: string;
  logger: Logger;
  /** [wireguard] Encrypted networks; absent: none (-o encrypted is refused as --encryption off). */
  encryption?: EncryptedPath;
}

/** [wireguard] What the driver needs of this host's WireGuard (src/wireguard). */
export interface EncryptedPath {
  mode: 'on-request' | 'all' | 'off';
  /** Subtracted from --mtu for the default MTU of an encrypted network: WireGuard's overhead. */
  mtuOverhead: number;
  wireguard?: { isReady(): boolean; notReadyReason(): string; tunnelAddress(): string | undefined; readonly cryptoNetns: string };
}

export interface LocalNetwork {
  localId: string;
  clusterId: string;
  record: NetworkRecord;
  /** When this process learned of it (ms): Docker lists a network only after CreateNetwork returned. */
  since: number;
}

interface LocalEndpoint {
  clusterId: string;
  record: EndpointRecord;
}

const VNI_MIN = 4096;
const VNI_SPAN = (1 << 24) - VNI_MIN - 1;

export class Driver {
  private readonly networks = new Map<string, LocalNetwork>();
  private readonly endpoints = new Map<string, LocalEndpoint>();
  private readonly ensured = new Map<string, Promise<void>>();
  private readonly mutex = new KeyedMutex();
  private loaded: Promise<void> | undefined;

  constructor(
    private readonly store: Store,
    private readonly ipam: Ipam,
    private readonly dataplane: DataPlaneApi,
    private readonly opts: DriverOptions,
  ) {}

  // ------------------------------------------------------------ networks

  async createNetwork(localId: string, options: Options | null | undefined, ipv4: { AddressSpace?: string; Pool: string; Gateway?: string }[] | null | undefined, ipv6: unknown[] | null | undefined): Promise<void> {
    const o = parseNetworkOptions(options);
    if (!o.ipv4) throw errors.ipv6OnlyUnsupported();
    if (o.ipv6 || (ipv6 && ipv6.length > 0)) throw errors.ipv6Unsupported();
    const v4 = ipv4?.[0];
    if (!v4) throw errors.badRequest('NetworkDriver.CreateNetwork', 'no IPv4 pool (IPv4Data is empty)');
    const ours = v4?.AddressSpace === ADDRESS_SPACE;
    if (this.opts.cluster && !ours) throw errors.foreignIpam(this.opts.driverName);

    if (!o.clusterId) this.wantEncryption(o.encrypted); // [wireguard] refuse before anything is claimed
    await this.mutex.run(`net:${localId}`, async () => {
      let clusterId: string;
      let record: NetworkRecord;
      let createdRecord = false;
      let boundPool: string | undefined;
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
          if (ours && subnet) {
            await this.ipam.bindPool(poolKey(subnet), clusterId, (other) => this.describeNetwork(other));
            boundPool = poolKey(subnet);
            faultPoint('createNetwork:after-bind');
          }
          const encrypted = this.wantEncryption(o.encrypted); // [wireguard]
          record = {
            ...(subnet ? { subnet: subnet.cidr } : {}),
            ...(ours && subnet ? { poolId: poolKey(subnet) } : {}),
            ...(v4?.Gateway ? { gateway: v4.Gateway.split('/')[0] } : {}),
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
            // The record may exist (a timed-out transaction that was applied): remove it with the pool binding.
            await this.store.txn([], [{ type: 'delete', key: keys.network(clusterId) }]).catch(() => undefined);
            if (boundPool) await this.ipam.unbindPool(boundPool, clusterId).catch(() => undefined);
            throw err;
          }
          createdRecord = true;
          faultPoint('createNetwork:after-record');
        }
      }
      const binding: BindingRecord = { localId };
      try {
        await this.store.put(keys.binding(clusterId, this.opts.host), JSON.stringify(binding));
        const local: LocalNetwork = { localId, clusterId, record, since: Date.now() };
        this.networks.set(localId, local);
        await this.ensureKernel(local, true);
        this.opts.logger.info({ network: localId, cluster: clusterId, vni: record.vni, subnet: record.subnet, mtu: record.mtu }, 'network created');
      } catch (err) {
        // Roll back: Docker will not call DeleteNetwork for a create that failed.
        this.networks.delete(localId);
        this.ensured.delete(clusterId);
        await this.dataplane.deleteNetwork(this.spec(clusterId, record)).catch(() => undefined);
        await this.store.delete(keys.binding(clusterId, this.opts.host)).catch(() => undefined);
        if (createdRecord) await this.deleteClusterNetwork(clusterId, record).catch(() => undefined);
        throw err;
      }
    });
  }

  /**
   * [wireguard] Whether a new network is encrypted: -o encrypted, or --encryption all.
   * Throws when this host cannot honour it. In cluster mode WireGuard must be up
   * here, so that the first container does not find out.
   */
  private wantEncryption(requested: boolean | undefined): boolean {
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

  async deleteNetwork(localId: string): Promise<void> {
    const local = await this.lookupNetwork(localId);
    if (!local) {
      await this.deleteOrphanBinding(localId);
      return;
    }
    await this.mutex.run(`net:${localId}`, async () => {
      const { clusterId, record } = local;
      await this.dataplane.deleteNetwork(this.spec(clusterId, record));
      this.ensured.delete(clusterId);
      await this.store.delete(keys.binding(clusterId, this.opts.host));
      this.networks.delete(localId);
      for (const [id, ep] of this.endpoints) if (ep.clusterId === clusterId) this.endpoints.delete(id);
      const others = await this.liveBindings(clusterId);
      // Endpoints of other hosts, alive or not, keep the network (and their
      // addresses) in the cluster: a host cut off from etcd still runs its
      // containers. `weft host rm` releases a host that is gone for good.
      if (others.length === 0 && (await this.otherHostsWithEndpoints(clusterId)).length === 0) {
        await this.deleteClusterNetwork(clusterId, record);
      } else {
        await this.markDeleting(clusterId, localId);
      }
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
    return [...new Set(eps.kvs.map((e) => (JSON.parse(e.value) as EndpointRecord).host).filter((h) => h !== this.opts.host))].sort();
  }

  /** DeleteNetwork of a network whose cluster record is gone: drop this host's binding and kernel state. */
  private async deleteOrphanBinding(localId: string): Promise<void> {
    const list = await this.store.list(keys.bindings());
    for (const kv of list.kvs) {
      const [clusterId, host] = kv.key.slice(keys.bindings().length).split('/');
      if (host !== this.opts.host || (JSON.parse(kv.value) as BindingRecord).localId !== localId) continue;
      const names = networkNames(clusterId, this.opts.runDir);
      await this.dataplane.deleteNetwork({ id: names.id, nsPath: names.nsPath, bridge: names.bridge, mtu: this.opts.defaultMtu });
      this.ensured.delete(clusterId);
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
   */
  private async markDeleting(clusterId: string, localId: string): Promise<void> {
    const kv = await this.store.get(keys.network(clusterId));
    if (!kv) return;
    const rec = JSON.parse(kv.value) as NetworkRecord;
    if (rec.deleting) return;
    const busy = await this.otherHostsWithEndpoints(clusterId);
    if (busy.length > 0) {
      const e = errors.networkBusy(rec.name ?? clusterId.slice(0, 12), busy);
      this.opts.logger.warn({ network: localId, cluster: clusterId, hosts: busy, code: e.code },
        `${e.message}; weft keeps the network on every host and recreates it here`);
      throw e;
    }
    await this.store.txn([{ key: kv.key, modRevision: kv.modRevision }],
      [{ type: 'put', key: kv.key, value: JSON.stringify({ ...rec, deleting: true }) }]);
  }

  private async deleteClusterNetwork(clusterId: string, record: NetworkRecord): Promise<void> {
    await this.store.txn([], [
      { type: 'delete', key: keys.network(clusterId) },
      { type: 'delete', key: keys.vni(record.vni) },
      { type: 'deletePrefix', prefix: keys.endpointsOf(clusterId) },
    ]);
    if (record.poolId) await this.ipam.deletePool(record.poolId);
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
          const rest = kv.key.slice(keys.bindings().length).split('/');
          if (rest.length !== 2 || rest[1] !== this.opts.host) continue;
          const clusterId = rest[0];
          const { localId } = JSON.parse(kv.value) as BindingRecord;
          if (this.networks.has(localId)) continue;
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

  localNetworks(): LocalNetwork[] {
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
    let p = this.ensured.get(local.clusterId);
    if (!p || force) {
      const spec = this.spec(local.clusterId, local.record);
      if (spec.vxlan?.socketNetns !== undefined && (!spec.vxlan.local || !spec.vxlan.socketNetns)) {
        // [wireguard] Never a plain VXLAN for an encrypted network: without WireGuard it has no path at all.
        const wg = this.opts.encryption?.wireguard;
        throw errors.encryptionUnavailable(`setting up encrypted network ${local.record.name ?? local.clusterId.slice(0, 12)}`,
          wg ? wg.notReadyReason() : 'this host runs with --encryption off');
      }
      p = this.dataplane.ensureNetwork(spec).catch((err) => {
        this.ensured.delete(local.clusterId);
        throw errors.kernel(`setting up network ${local.clusterId.slice(0, 12)}`, err);
      });
      this.ensured.set(local.clusterId, p);
    }
    return p;
  }

  // ------------------------------------------------------------ endpoints

  async createEndpoint(localId: string, endpointId: string, iface: { Address?: string; AddressIPv6?: string; MacAddress?: string } | null | undefined, options: Options | null | undefined): Promise<{ MacAddress?: string } | null> {
    const local = await this.lookupNetwork(localId);
    if (!local) throw errors.unknownNetwork(localId);
    if (iface?.AddressIPv6) throw errors.ipv6Unsupported();
    const address = iface?.Address ?? '';
    if (!address) throw errors.badRequest('CreateEndpoint', 'Interface.Address is empty: the network needs an IPv4 subnet');
    const ip = address.split('/')[0];
    const given = normalizeMac(iface?.MacAddress) ?? normalizeMac(options?.[Label.endpointMac]);
    if (iface?.MacAddress && !given) throw errors.badRequest('CreateEndpoint', `Interface.MacAddress "${String(iface.MacAddress).slice(0, 40)}" is not a MAC address`);
    if (given && !isValidUnicastMac(given)) throw errors.badRequest('CreateEndpoint', `MAC address ${given} is not a unicast address`);
    const mac = given ?? macFromIp(ip);
    const record: EndpointRecord = {
      host: this.opts.host, vtep: this.opts.advertiseAddr ?? '', ip, mac, localNetwork: localId, createdAt: new Date().toISOString(),
    };
    await this.store.put(keys.endpoint(local.clusterId, endpointId), JSON.stringify(record));
    faultPoint('createEndpoint:after-store');
    this.endpoints.set(endpointId, { clusterId: local.clusterId, record });
    this.opts.logger.debug({ network: localId, endpoint: endpointId, ip, mac }, 'endpoint created');
    // Return only what Docker did not fill in: re-setting a filled field fails the call.
    return iface?.MacAddress ? null : { MacAddress: mac };
  }

  private async lookupEndpoint(local: LocalNetwork, endpointId: string): Promise<LocalEndpoint | undefined> {
    const hit = this.endpoints.get(endpointId);
    if (hit) return hit;
    const kv = await this.store.get(keys.endpoint(local.clusterId, endpointId));
    if (!kv) return undefined;
    const ep = { clusterId: local.clusterId, record: JSON.parse(kv.value) as EndpointRecord };
    this.endpoints.set(endpointId, ep);
    return ep;
  }

  private endpointSpec(local: LocalNetwork, endpointId: string, mac: string): EndpointSpec {
    const n = endpointNames(endpointId);
    return { hostIf: n.hostIf, bridgeIf: n.bridgeIf, mac, mtu: local.record.mtu };
  }

  async join(localId: string, endpointId: string): Promise<{ SrcName: string }> {
    const local = await this.lookupNetwork(localId);
    if (!local) throw errors.unknownNetwork(localId);
    const ep = await this.lookupEndpoint(local, endpointId);
    if (!ep) throw errors.unknownEndpoint(endpointId);
    await this.ensureKernel(local);
    const spec = this.endpointSpec(local, endpointId, ep.record.mac);
    faultPoint('join:before-veth');
    try {
      await this.dataplane.createEndpoint(this.spec(local.clusterId, local.record), spec);
    } catch (err) {
      throw err instanceof WeftError ? err : errors.kernel(`creating the interface of endpoint ${endpointId.slice(0, 12)}`, err);
    }
    faultPoint('join:after-veth');
    // Best effort: a lost announcement only delays peers that cached an old MAC.
    await this.dataplane.announce(this.spec(local.clusterId, local.record), ep.record.ip, ep.record.mac).catch((err: Error) =>
      this.opts.logger.warn({ endpoint: endpointId.slice(0, 12), err: err.message }, 'gratuitous ARP failed'));
    return { SrcName: spec.hostIf };
  }

  async leave(localId: string, endpointId: string): Promise<void> {
    // Docker moves the interface back to the host namespace after Leave and
    // calls DeleteEndpoint, where it is removed. Nothing to undo here.
    faultPoint('leave');
    this.opts.logger.debug({ network: localId, endpoint: endpointId }, 'leave');
  }

  async deleteEndpoint(localId: string, endpointId: string): Promise<void> {
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

  async endpointInfo(localId: string, endpointId: string): Promise<Record<string, unknown>> {
    const local = await this.lookupNetwork(localId);
    if (!local) return {};
    const ep = await this.lookupEndpoint(local, endpointId);
    if (!ep) return {};
    const n = endpointNames(endpointId);
    return { ip: ep.record.ip, mac: ep.record.mac, host: ep.record.host, hostInterface: n.hostIf, vni: local.record.vni };
  }
}
