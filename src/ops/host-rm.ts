// `weft host rm NAME`: forget a host that is gone for good.
//
// A host whose lease expired drops out of every forwarding table, but its
// address reservations, endpoint records and network bindings stay, so that
// it finds them when it comes back. For a host that will not come back, this
// releases all of it:
//   - every endpoint address it holds (the selection of Ipam.addressesOfHost);
//   - its endpoint records, on every network;
//   - its network bindings; a network that was being removed
//     (`docker network rm` elsewhere) and waited only for this host is then
//     removed from the cluster, as its last host would have done;
//   - its registration, if any is left.
// It refuses while hosts/NAME exists, that is while the host's weft keeps its
// lease alive. Changes are made in transactions of at most 100 operations,
// each guarded so that it applies only if the host is still unregistered and
// every record is as read; on a conflict the plan is read again.
import type { Ipam } from '../ipam/ipam';
import { AddressRecord, EndpointRecord, keys, NetworkRecord, parseKey, ROOT, TunnelRecord } from '../store/keys';
import { deleteNetworkFromStore } from '../cluster/local-networks';
import type { Compare, KeyValue, Op, Store } from '../store/store';
import { shortId } from './format';

export class HostAliveError extends Error {
  constructor(readonly host: string, readonly record: { address?: string; startedAt?: string }) {
    super(`host ${host} is alive: its weft${record.address ? ` (at ${record.address}` : ''}${record.startedAt ? `, started ${record.startedAt}` : ''}${record.address ? ')' : ''} keeps its lease, so its registration ${keys.host(host)} is in the store. ` +
      `weft host rm is only for hosts that are gone for good: stop weft on ${host} first and wait --lease-ttl seconds for its lease to expire, then run this again`);
    this.name = 'HostAliveError';
  }
}

export interface PlannedKey { key: string; modRevision: number }

export interface HostRmPlan {
  host: string;
  /** Endpoint addresses the host holds. */
  addresses: (PlannedKey & { pool: string; ip: string })[];
  endpoints: (PlannedKey & { network: string; id: string; ip: string })[];
  bindings: (PlannedKey & { network: string })[];
  /** [wireguard] Its tunnel address claims (tunnels/<ip>). */
  tunnels?: PlannedKey[];
  /** Networks marked `deleting` that only this host kept: removed from the cluster after the bindings. */
  finishNetworks: { clusterId: string; name?: string; vni: number; poolId?: string; poolId6?: string; modRevision: number }[];
  /** Store revision the plan was read at. */
  revision: number;
  /** Underlay addresses the host's endpoints name: where its weft would answer if it still ran. */
  vteps: string[];
}

export function isEmptyPlan(p: HostRmPlan): boolean {
  return p.addresses.length + p.endpoints.length + p.bindings.length + p.finishNetworks.length + (p.tunnels?.length ?? 0) === 0;
}

/** Reads everything the host holds. Throws HostAliveError while it is registered. */
export async function planHostRemoval(store: Store, host: string): Promise<HostRmPlan> {
  const list = await store.list(ROOT);
  const by = (prefix: string) => list.kvs.filter((kv) => kv.key.startsWith(prefix));
  const reg = list.kvs.find((kv) => kv.key === keys.host(host));
  if (reg) {
    let rec: { address?: string; startedAt?: string } = {};
    try {
      rec = JSON.parse(reg.value) as typeof rec;
    } catch {
      // the key alone says enough
    }
    throw new HostAliveError(host, rec);
  }
  const plan: HostRmPlan = { host, addresses: [], endpoints: [], bindings: [], finishNetworks: [], revision: list.revision, vteps: [] };
  const parse = <T>(kv: KeyValue): T | undefined => {
    try {
      return JSON.parse(kv.value) as T;
    } catch {
      return undefined;
    }
  };
  for (const kv of by(keys.allAddrs())) {
    const rec = parse<AddressRecord>(kv);
    if (rec?.kind !== 'endpoint' || rec.host !== host) continue;
    const k = parseKey(kv.key);
    if (k?.kind !== 'addr') continue;
    const { pool, ip } = k;
    plan.addresses.push({ key: kv.key, modRevision: kv.modRevision, pool, ip });
  }
  for (const kv of by(keys.endpoints())) {
    const rec = parse<EndpointRecord>(kv);
    if (rec?.host !== host) continue;
    const k = parseKey(kv.key);
    if (k?.kind !== 'endpoint') continue;
    const { network, endpoint: id } = k;
    plan.endpoints.push({ key: kv.key, modRevision: kv.modRevision, network, id, ip: rec.ip });
    if (rec.vtep && !plan.vteps.includes(rec.vtep)) plan.vteps.push(rec.vtep);
  }
  // [wireguard] Its tunnel address: free for another host once it is gone for good.
  plan.tunnels = [];
  for (const kv of by(keys.tunnels())) {
    if (parse<TunnelRecord>(kv)?.host === host) plan.tunnels.push({ key: kv.key, modRevision: kv.modRevision });
  }
  const bindingsByNetwork = new Map<string, string[]>();
  for (const kv of by(keys.bindings())) {
    const k = parseKey(kv.key);
    if (k?.kind !== 'binding') continue;
    const { network, host: h } = k;
    bindingsByNetwork.set(network, [...(bindingsByNetwork.get(network) ?? []), h]);
    if (h === host) plan.bindings.push({ key: kv.key, modRevision: kv.modRevision, network });
  }
  for (const b of plan.bindings) {
    const others = (bindingsByNetwork.get(b.network) ?? []).filter((h) => h !== host);
    const kv = list.kvs.find((x) => x.key === keys.network(b.network));
    const rec = kv ? parse<NetworkRecord>(kv) : undefined;
    if (kv && rec?.deleting && others.length === 0) {
      plan.finishNetworks.push({
        clusterId: b.network, ...(rec.name ? { name: rec.name } : {}), vni: rec.vni, ...(rec.poolId ? { poolId: rec.poolId } : {}), ...(rec.poolId6 ? { poolId6: rec.poolId6 } : {}), modRevision: kv.modRevision,
      });
    }
  }
  return plan;
}

export function describePlan(p: HostRmPlan): string {
  const nets = new Set([...p.endpoints.map((e) => e.network), ...p.bindings.map((b) => b.network)]);
  const parts = [
    `${p.addresses.length} address${p.addresses.length === 1 ? '' : 'es'}`,
    `${p.endpoints.length} endpoint${p.endpoints.length === 1 ? '' : 's'}`,
    `${p.bindings.length} network binding${p.bindings.length === 1 ? '' : 's'}`,
  ];
  let s = `host ${p.host} holds ${parts.join(', ')}${nets.size ? ` (on ${nets.size} network${nets.size === 1 ? '' : 's'})` : ''}`;
  if (p.tunnels?.length) s += ' and a WireGuard tunnel address'; // [wireguard]
  if (p.finishNetworks.length) {
    s += `; network${p.finishNetworks.length === 1 ? '' : 's'} ${p.finishNetworks.map((n) => n.name ?? shortId(n.clusterId)).join(', ')}, ` +
      'removed elsewhere and kept only for this host, will be removed from the cluster';
  }
  return s;
}

export interface HostRmResult {
  host: string;
  addresses: number;
  endpoints: number;
  bindings: number;
  networksRemoved: number;
  /** [wireguard] tunnel address claims released */
  tunnels?: number;
  transactions: number;
}

const CHUNK = 100;

/**
 * Applies a plan. Each transaction is guarded by "the host is not
 * registered" and by the revision of every key it deletes; if one fails the
 * plan is read again (the host may have come back: then HostAliveError).
 */
export async function executeHostRemoval(store: Store, ipam: Ipam, first: HostRmPlan, maxAttempts = 5): Promise<HostRmResult> {
  const result: HostRmResult = { host: first.host, addresses: 0, endpoints: 0, bindings: 0, networksRemoved: 0, transactions: 0 };
  let plan = first;
  for (let attempt = 0; attempt < maxAttempts; attempt++) {
    if (attempt > 0) plan = await planHostRemoval(store, first.host);
    const items: { kind: 'addresses' | 'endpoints' | 'bindings' | 'tunnels'; k: PlannedKey }[] = [
      ...plan.addresses.map((k) => ({ kind: 'addresses' as const, k })),
      ...plan.endpoints.map((k) => ({ kind: 'endpoints' as const, k })),
      // Bindings last: a network's binding goes only once its endpoints have.
      ...plan.bindings.map((k) => ({ kind: 'bindings' as const, k })),
      ...(plan.tunnels ?? []).map((k) => ({ kind: 'tunnels' as const, k })),
    ];
    let conflict = false;
    for (let i = 0; i < items.length; i += CHUNK) {
      const chunk = items.slice(i, i + CHUNK);
      const compares: Compare[] = [{ key: keys.host(plan.host), modRevision: 0 }, ...chunk.map((c) => ({ key: c.k.key, modRevision: c.k.modRevision }))];
      const ops: Op[] = chunk.map((c) => ({ type: 'delete', key: c.k.key }));
      const r = await store.txn(compares, ops);
      result.transactions++;
      if (!r.succeeded) {
        conflict = true;
        break;
      }
      for (const c of chunk) result[c.kind] = (result[c.kind] ?? 0) + 1;
    }
    if (conflict) continue;
    for (const n of plan.finishNetworks) {
      const removed = await deleteNetworkFromStore(store, ipam, n.clusterId, n,
        [{ key: keys.network(n.clusterId), modRevision: n.modRevision }, { key: keys.host(plan.host), modRevision: 0 }]);
      result.transactions++;
      if (!removed) continue; // changed meanwhile (another host took it up again): leave it
      result.networksRemoved++;
    }
    return result;
  }
  throw new Error(`the records of host ${first.host} kept changing while they were being removed (${maxAttempts} attempts): is the host back? Check weft hosts, then retry`);
}
