// The cluster as the store holds it, read in one list of /weft/v1/ (one
// revision, so the view is consistent), for `weft hosts`, `weft networks`
// and `weft endpoints`.
import {
  AddressRecord, BindingRecord, EndpointRecord, HostRecord, NameRecord, NetworkRecord, PoolRecord, parseKey,
} from '../store/keys';
import { naturalCompare, shortId } from './format';

export interface RawKv { key: string; value: string }

/** An endpoint record; `container` is set by agents that learn container names. */
export type EndpointRecordView = EndpointRecord & { container?: string };

export interface HostView {
  name: string;
  /** Registered under a live lease. */
  alive: boolean;
  address?: string;
  version?: string;
  startedAt?: string;
  /** Networks this host has a Docker network for (bindings). */
  networks: number;
  endpoints: number;
  /** Endpoint addresses it holds. */
  addresses: number;
}

export interface NetworkView {
  clusterId: string;
  name?: string;
  vni: number;
  subnet?: string;
  gateway?: string;
  /** IPv6 subnet and gateway (--ipv6); an IPv6-only network has no subnet. */
  subnet6?: string;
  gateway6?: string;
  mtu: number;
  createdBy: string;
  createdAt: string;
  deleting: boolean;
  internal: boolean;
  options: Record<string, string>;
  /** [wireguard] traffic between hosts through WireGuard */
  encrypted: boolean;
  /** Hosts that have this network in their Docker engine. */
  hosts: string[];
  endpoints: number;
}

export interface EndpointView {
  network: string;
  networkId: string;
  id: string;
  host: string;
  hostAlive: boolean;
  container?: string;
  ip: string;
  ip6?: string;
  mac: string;
  vtep: string;
  createdAt?: string;
}

export interface AddressView { pool: string; ip: string; record: AddressRecord }

export class ClusterView {
  readonly hostRecords = new Map<string, HostRecord>();
  readonly networkRecords = new Map<string, NetworkRecord>();
  /** cluster id -> host -> local Docker network id */
  readonly bindings = new Map<string, Map<string, string>>();
  readonly endpointRecords: { network: string; id: string; record: EndpointRecordView }[] = [];
  readonly addresses: AddressView[] = [];
  readonly pools = new Map<string, PoolRecord>();
  /** "<clusterId>/<endpointId>" -> the container's names (written for DNS by the agent of its host, under its lease). */
  readonly names = new Map<string, NameRecord>();
  /** Records that could not be parsed (shown by nothing, counted for diagnosis). */
  unreadable = 0;

  constructor(kvs: RawKv[]) {
    for (const kv of kvs) {
      const k = parseKey(kv.key);
      if (!k) continue;
      try {
        switch (k.kind) {
          case 'host':
            this.hostRecords.set(k.host, JSON.parse(kv.value) as HostRecord);
            break;
          case 'network':
            this.networkRecords.set(k.network, JSON.parse(kv.value) as NetworkRecord);
            break;
          case 'binding': {
            const m = this.bindings.get(k.network) ?? new Map<string, string>();
            m.set(k.host, (JSON.parse(kv.value) as BindingRecord).localId);
            this.bindings.set(k.network, m);
            break;
          }
          case 'endpoint':
            this.endpointRecords.push({ network: k.network, id: k.endpoint, record: JSON.parse(kv.value) as EndpointRecordView });
            break;
          case 'addr':
            this.addresses.push({ pool: k.pool, ip: k.ip, record: JSON.parse(kv.value) as AddressRecord });
            break;
          case 'pool':
            this.pools.set(k.pool, JSON.parse(kv.value) as PoolRecord);
            break;
          case 'name':
            this.names.set(`${k.network}/${k.endpoint}`, JSON.parse(kv.value) as NameRecord);
            break;
          default:
            break;
        }
      } catch {
        this.unreadable++;
      }
    }
  }

  networkName(clusterId: string): string {
    return this.networkRecords.get(clusterId)?.name ?? shortId(clusterId);
  }

  /** Every host the store knows: registered ones, and the ones that still hold something. */
  hosts(): HostView[] {
    const names = new Set<string>(this.hostRecords.keys());
    for (const m of this.bindings.values()) for (const h of m.keys()) names.add(h);
    for (const e of this.endpointRecords) names.add(e.record.host);
    for (const a of this.addresses) if (a.record.kind === 'endpoint') names.add(a.record.host);
    return [...names].sort(naturalCompare).map((name) => {
      const rec = this.hostRecords.get(name);
      const vtep = this.endpointRecords.find((e) => e.record.host === name && e.record.vtep)?.record.vtep;
      const address = rec?.address || vtep;
      return {
        name,
        alive: rec !== undefined,
        ...(address ? { address } : {}),
        ...(rec?.version ? { version: rec.version } : {}),
        ...(rec?.startedAt ? { startedAt: rec.startedAt } : {}),
        networks: [...this.bindings.values()].filter((m) => m.has(name)).length,
        endpoints: this.endpointRecords.filter((e) => e.record.host === name).length,
        addresses: this.addresses.filter((a) => a.record.kind === 'endpoint' && a.record.host === name).length,
      };
    });
  }

  networks(): NetworkView[] {
    return [...this.networkRecords].map(([clusterId, r]): NetworkView => ({
      clusterId,
      ...(r.name ? { name: r.name } : {}),
      vni: r.vni,
      ...(r.subnet ? { subnet: r.subnet } : {}),
      ...(r.gateway ? { gateway: r.gateway } : {}),
      ...(r.subnet6 ? { subnet6: r.subnet6 } : {}),
      ...(r.gateway6 ? { gateway6: r.gateway6 } : {}),
      mtu: r.mtu,
      createdBy: r.createdBy,
      createdAt: r.createdAt,
      deleting: r.deleting === true,
      internal: r.internal === true,
      options: r.options ?? {},
      encrypted: r.encrypted === true,
      hosts: [...(this.bindings.get(clusterId)?.keys() ?? [])].sort(naturalCompare),
      endpoints: this.endpointRecords.filter((e) => e.network === clusterId).length,
    })).sort((a, b) => naturalCompare(a.name ?? a.clusterId, b.name ?? b.clusterId));
  }

  /**
   * The network named `ref`: its Docker name, its full cluster id, or an
   * unambiguous prefix of the id (at least 4 characters). Undefined if none.
   * Throws when a prefix matches several.
   */
  findNetwork(ref: string): string | undefined {
    const byName = [...this.networkRecords].filter(([, r]) => r.name === ref).map(([id]) => id);
    if (byName.length === 1) return byName[0];
    if (this.networkRecords.has(ref)) return ref;
    if (ref.length >= 4 && /^[0-9a-f]+$/i.test(ref)) {
      const hits = [...this.networkRecords.keys()].filter((id) => id.startsWith(ref.toLowerCase()));
      if (hits.length === 1) return hits[0];
      if (hits.length > 1) throw new Error(`"${ref}" matches ${hits.length} networks (${hits.map(shortId).join(', ')}): give more of the id`);
    }
    if (byName.length > 1) throw new Error(`several networks are named "${ref}" (${byName.map(shortId).join(', ')}): give the id instead`);
    return undefined;
  }

  endpoints(clusterId?: string): EndpointView[] {
    return this.endpointRecords
      .filter((e) => clusterId === undefined || e.network === clusterId)
      .map((e): EndpointView => {
        const container = e.record.container ?? this.names.get(`${e.network}/${e.id}`)?.name;
        return {
        network: this.networkName(e.network),
        networkId: e.network,
        id: e.id,
        host: e.record.host,
        hostAlive: this.hostRecords.has(e.record.host),
        ...(container ? { container } : {}),
        ip: e.record.ip,
        ...(e.record.ip6 ? { ip6: e.record.ip6 } : {}),
        mac: e.record.mac,
        vtep: e.record.vtep,
        ...(e.record.createdAt ? { createdAt: e.record.createdAt } : {}),
        };
      })
      .sort((a, b) => naturalCompare(a.network, b.network) || naturalCompare(a.ip, b.ip) || a.id.localeCompare(b.id));
  }
}
