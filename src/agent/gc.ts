// Garbage collection of what Docker forgot to release.
//
// Docker does not always tell the plugin: after dockerd is killed, its
// clean-up at the next start skips driver calls when the plugin is not loaded
// yet (cnm-plugin-api.md §4), and a DeleteNetwork that failed (store down) is
// not retried. Left alone, such endpoints and addresses would leak for ever.
// So the agent compares, for each of this host's networks, what the store
// says this host holds with what this host's Docker engine reports, and
// releases the difference. Young records are left alone: an address is
// allocated a moment before its endpoint exists, and an endpoint a moment
// before Docker lists it.

import type { Logger } from 'pino';
import type { LocalNetworks } from '../cluster/local-networks';
import type { ClusterView } from '../cluster/view';
import type { Ipam } from '../ipam/ipam';
import { EndpointRecord, keys, leaf, parseKey, PoolRecord } from '../store/keys';
import { readEndpoint, readNetwork } from '../store/records';
import type { Store } from '../store/store';
import { DockerClient, DockerError } from './docker';

export interface GcDeps {
  store: Store;
  /**
   * This host's view of the cluster: when synced, the collector finds its
   * candidates in memory and asks the store only about those (at rest: no
   * request at all). Without it, it lists the store.
   */
  view?: ClusterView;
  networks: LocalNetworks;
  ipam: Ipam;
  docker: DockerClient;
  host: string;
  graceMs: number;
  logger: Logger;
}

const old = (iso: string | undefined, graceMs: number) => !iso || Date.now() - Date.parse(iso) > graceMs;

/** Returns the number of records released. */
export async function collectGarbage(d: GcDeps): Promise<number> {
  let released = 0;
  const livePools = new Map<string, Set<string>>(); // poolId -> IPs of this host's live endpoints
  for (const local of d.networks.list()) {
    let dockerEndpoints: Set<string>;
    try {
      const net = await d.docker.inspectNetwork(local.localId);
      dockerEndpoints = new Set(Object.values(net.Containers ?? {}).map((c) => c.EndpointID ?? ''));
    } catch (err) {
      // Docker lists a network only once CreateNetwork has returned: a young
      // network missing from its API is being created, not gone.
      if (err instanceof DockerError && err.status === 404 && Date.now() - local.since > d.graceMs) {
        d.logger.info({ network: local.localId.slice(0, 12) }, 'Docker no longer has this network: releasing what weft kept for it');
        await d.networks.remove(local.localId);
        released++;
      }
      continue; // Docker unreachable: decide nothing
    }
    const ips = livePools.get(local.record.poolId ?? '') ?? new Set<string>();
    const ips6 = livePools.get(local.record.poolId6 ?? '') ?? new Set<string>();
    for (const [id, rec] of await endpointsOf(d, local.clusterId)) {
      if (rec.host !== d.host) continue;
      // Whatever local copy it was made on: a copy re-created since has a new local id.
      if (!dockerEndpoints.has(id) && old(rec.createdAt, d.graceMs)) {
        d.logger.info({ network: local.localId.slice(0, 12), endpoint: id.slice(0, 12), ip: rec.ip }, 'releasing an endpoint Docker no longer has');
        await d.networks.removeEndpoint(local.localId, id);
        // Its address is not released here: a live container may hold the same
        // IP by now. The sweep below frees addresses that no live endpoint uses.
        released++;
      } else {
        if (rec.ip) ips.add(rec.ip);
        if (rec.ip6) ips6.add(rec.ip6);
      }
    }
    if (local.record.poolId) livePools.set(local.record.poolId, ips);
    if (local.record.poolId6) livePools.set(local.record.poolId6, ips6);
  }
  // Pools this host created that no network took (dockerd died between
  // RequestPool and CreateNetwork, or its ReleasePool found weft down), or
  // whose network's removal stopped half-way.
  for (const [poolId, pool] of await myPools(d)) {
    if (pool.createdBy !== d.host || !old(pool.createdAt, d.graceMs)) continue;
    if (d.view?.synced && pool.network && (d.view.networks.has(pool.network) || d.view.unreadableNetworks.has(pool.network))) continue;
    const key = keys.pool(poolId);
    if (pool.network) {
      // Bound to a network whose record is gone: its deletion stopped half-way.
      if (await d.store.get(keys.network(pool.network))) continue;
      await d.ipam.deletePool(poolId);
    } else {
      await d.ipam.releasePool(poolId);
    }
    if (!(await d.store.get(key))) {
      d.logger.info({ pool: pool.subnet }, 'released a pool that no network took');
      released++;
    }
  }
  released += await collectHalfMadeNetworks(d);
  const mine = d.view?.synced
    ? [...d.view.myAddresses].map(([id, rec]) => ({ pool: id.slice(0, id.indexOf('/')), ip: id.slice(id.indexOf('/') + 1), at: rec.at }))
    : await d.ipam.addressesOfHost(d.host);
  for (const a of mine) {
    const live = livePools.get(a.pool);
    if (!live || live.has(a.ip) || !old(a.at, d.graceMs)) continue;
    d.logger.info({ pool: a.pool, ip: a.ip }, 'releasing an address no endpoint uses');
    await d.ipam.releaseAddress(a.pool, a.ip);
    released++;
  }
  return released;
}

/**
 * Network records and VNIs that a CreateNetwork left behind when it failed
 * after its transaction applied (weft killed, or a timeout whose rollback
 * could not reach the store):
 *   - a network record this host created that never got a name and has no
 *     binding and no endpoint on any host, older than the grace period (a
 *     network that any host's Docker has is bound, and named at once); it is
 *     removed with its VNI and pool, on the revision that was read;
 *   - a VNI claim whose network record is gone (both are always written and
 *     deleted together, so such a claim can only be left over), removed only
 *     if the network record is still absent.
 */
async function collectHalfMadeNetworks(d: GcDeps): Promise<number> {
  let released = 0;
  if (d.view?.synced) {
    // From memory: only candidates are read from the store.
    const v = d.view;
    const candidates = [...v.networks].filter(([cid, rec]) => !rec.name && rec.createdBy === d.host && old(rec.createdAt, d.graceMs) &&
      !v.bindings.has(cid) && !v.endpoints.has(cid)).map(([cid]) => cid);
    const orphanVnis = [...v.vnis].filter(([, network]) => !v.networks.has(network) && !v.unreadableNetworks.has(network)).map(([vni]) => vni);
    if (candidates.length === 0 && orphanVnis.length === 0) return 0;
  }
  const nets = await d.store.list(keys.networks());
  const present = new Set<string>();
  for (const kv of nets.kvs) {
    const k = parseKey(kv.key);
    if (k?.kind !== 'network') continue;
    const cid = k.network;
    present.add(cid);
    const r = readNetwork(kv.value);
    if (!r.ok || r.value.name || r.value.createdBy !== d.host || !old(r.value.createdAt, d.graceMs)) continue;
    if ((await d.store.list(keys.bindingsOf(cid))).kvs.length || (await d.store.list(keys.endpointsOf(cid))).kvs.length) continue;
    if (await d.networks.deleteClusterNetwork(cid, r.value, kv.modRevision)) {
      present.delete(cid);
      d.logger.info({ cluster: cid.slice(0, 12), vni: r.value.vni, subnet: r.value.subnet }, 'removed a network whose creation stopped half-way (no host has it)');
      released++;
    }
  }
  for (const kv of (await d.store.list(keys.vnis())).kvs) {
    let network: unknown;
    try {
      network = (JSON.parse(kv.value) as { network?: unknown }).network;
    } catch {
      continue; // not weft's doing: left alone
    }
    if (typeof network !== 'string' || present.has(network)) continue;
    const t = await d.store.txn([{ key: kv.key, modRevision: kv.modRevision }, { key: keys.network(network), modRevision: 0 }], [{ type: 'delete', key: kv.key }]);
    if (t.succeeded) {
      d.logger.info({ vni: leaf(kv.key), cluster: network.slice(0, 12) }, 'released a VNI whose network is gone');
      released++;
    }
  }
  return released;
}

/** A network's endpoints: from the view when it is synced, else from the store (invalid records skipped). */
async function endpointsOf(d: GcDeps, clusterId: string): Promise<[string, EndpointRecord][]> {
  if (d.view?.synced) return [...d.view.endpointsOf(clusterId)];
  const out: [string, EndpointRecord][] = [];
  for (const kv of (await d.store.list(keys.endpointsOf(clusterId))).kvs) {
    const r = readEndpoint(kv.value);
    if (r.ok) out.push([leaf(kv.key), r.value]); // not valid: the agent counts and logs it; nothing to release here
  }
  return out;
}

/** Pools this host created: from the view when it is synced, else from the store. */
async function myPools(d: GcDeps): Promise<[string, PoolRecord][]> {
  if (d.view?.synced) return [...d.view.myPools];
  return (await d.store.list(keys.pools())).kvs.map((kv) => [leaf(kv.key), JSON.parse(kv.value) as PoolRecord] as [string, PoolRecord]);
}
