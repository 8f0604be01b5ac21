// Cluster-wide IPAM over the store. Pure control plane: no kernel, no Docker.
//
// Every allocation is a store transaction guarded by compares, never a
// read-then-write, so two hosts allocating at the same instant can never hold
// the same pool or address:
//   - a pool is created only together with a CAS on the `subnets` index, which
//     lists every pool's subnet: two overlapping pools cannot both commit;
//   - an address is a key created only if absent.
// An in-memory cache of used addresses per pool makes the common case one
// transaction; a stale cache only costs a failed compare and a re-read.
//
// Docker's expectations (cnm-plugin-api.md §3):
//   - the same RequestPool returns the same PoolID (replay after a daemon
//     restart, and every host creating its copy of a cluster network);
//   - the gateway request every host repeats returns the same address;
//   - releases are idempotent, unknown addresses included.
// So the gateway and --aux-address reservations belong to the pool, and are
// freed with it, not by ReleaseAddress.

import type { Logger } from 'pino';
import { errors, WeftError } from '../errors';
import { AddressRecord, keys, leaf, parseKey, PoolRecord } from '../store/keys';
import { readAddress } from '../store/records';
import { Store } from '../store/store';
import { faultPoint } from '../util/fault';
import { KeyedMutex } from '../util/mutex';
import {
  canonicalIPv6, carve, contains, inside, isIPv4, isIPv6, overlaps, parseAnySubnet, parseSubnet, parseSubnet6, poolKey, Subnet,
  subnetFromPoolKey, toIp, toNumber, usableBounds,
} from './cidr';

export const ADDRESS_SPACE = 'weft';

export interface IpamOptions {
  host: string;
  defaultPool: string;
  defaultPoolSize: number;
  /** Where `--ipv6` without an IPv6 --subnet gets its /64 (a ULA prefix); absent: fd77:eef0:77::/48. */
  defaultPoolV6?: string;
  logger?: Logger;
  /** Optimistic transactions retried this many times before giving up. */
  maxRetries?: number;
}

export interface PoolRequest {
  pool?: string;
  subPool?: string;
  v6?: boolean;
}

export interface AddressRequest {
  address?: string;
  /** The network's gateway (RequestAddressType com.docker.network.gateway). */
  gateway?: boolean;
  /** Endpoint MAC (Docker sends it when RequiresMACAddress): marks an endpoint address, and identifies a replay. */
  mac?: string;
}

interface Index { [poolKey: string]: string }

interface AddrCache { used: Set<bigint> }

export class Ipam {
  private readonly mutex = new KeyedMutex();
  private readonly cache = new Map<string, AddrCache>();
  private readonly defaultRange: Subnet;
  private readonly defaultRange6: Subnet;
  private readonly maxRetries: number;

  constructor(private readonly store: Store, private readonly opts: IpamOptions) {
    this.defaultRange = parseSubnet(opts.defaultPool);
    this.defaultRange6 = parseSubnet6(opts.defaultPoolV6 ?? DEFAULT_POOL_V6);
    if (this.defaultRange6.prefix > DEFAULT_V6_SIZE) {
      throw new Error(`default-pool-v6 ${this.defaultRange6.cidr} is smaller than the /${DEFAULT_V6_SIZE} subnets weft carves from it`);
    }
    this.maxRetries = opts.maxRetries ?? 32;
    if (opts.defaultPoolSize < this.defaultRange.prefix) {
      throw new Error(`default-pool-size /${opts.defaultPoolSize} is larger than default-pool ${opts.defaultPool}`);
    }
  }

  // ---------------------------------------------------------------- pools

  async requestPool(req: PoolRequest): Promise<{ poolId: string; pool: string }> {
    const v6 = req.v6 === true;
    if (!req.pool) {
      if (req.subPool) throw errors.badSubnet(req.subPool, '--ip-range needs --subnet');
      return this.mutex.run('pools', () => this.allocateDefaultPool(v6));
    }
    const subnet = v6 ? parseSubnet6(req.pool) : parseSubnet(req.pool);
    if (!v6 && subnet.prefix > 30) throw errors.badSubnet(subnet.cidr, 'too small for containers: use a prefix length of at most /30');
    if (v6 && subnet.prefix > 126) throw errors.badSubnet(subnet.cidr, 'too small for containers: use a prefix length of at most /126 (/64 is usual)');
    let range: Subnet | undefined;
    if (req.subPool) {
      range = v6 ? parseSubnet6(req.subPool) : parseSubnet(req.subPool);
      if (!inside(range, subnet)) throw errors.badIpRange(range.cidr, subnet.cidr);
    }
    return this.mutex.run('pools', () => this.createOrReusePool(subnet, range));
  }

  private async createOrReusePool(subnet: Subnet, range?: Subnet): Promise<{ poolId: string; pool: string }> {
    const id = poolKey(subnet);
    for (let attempt = 0; attempt < this.maxRetries; attempt++) {
      const existing = await this.store.get(keys.pool(id));
      if (existing) {
        // Same subnet again: a replay, or another host creating its copy of the
        // network. The network binding decides later whether it is a duplicate.
        const rec = JSON.parse(existing.value) as PoolRecord;
        const wanted = range?.cidr;
        if ((rec.ipRange ?? undefined) !== wanted) {
          throw errors.ipRangeMismatch(subnet.cidr, wanted ?? 'none', rec.ipRange ?? 'none');
        }
        return { poolId: id, pool: subnet.cidr };
      }
      const { index, modRevision } = await this.readIndex();
      const clash = await this.findOverlap(index, subnet);
      if (clash) throw clash;
      const rec: PoolRecord = {
        subnet: subnet.cidr, ...(range ? { ipRange: range.cidr } : {}),
        createdBy: this.opts.host, createdAt: new Date().toISOString(),
      };
      const ok = await this.store.txn(
        [{ key: keys.subnets(), modRevision }, { key: keys.pool(id), modRevision: 0 }],
        [
          { type: 'put', key: keys.subnets(), value: JSON.stringify({ ...index, [id]: subnet.cidr }) },
          { type: 'put', key: keys.pool(id), value: JSON.stringify(rec) },
        ],
      );
      if (ok.succeeded) {
        faultPoint('requestPool:after-store');
        this.opts.logger?.info({ pool: subnet.cidr, ipRange: range?.cidr }, 'pool created');
        return { poolId: id, pool: subnet.cidr };
      }
    }
    throw errors.contention(`creating pool ${subnet.cidr}`);
  }

  private async allocateDefaultPool(v6: boolean): Promise<{ poolId: string; pool: string }> {
    const range = v6 ? this.defaultRange6 : this.defaultRange;
    const size = v6 ? DEFAULT_V6_SIZE : this.opts.defaultPoolSize;
    for (let attempt = 0; attempt < this.maxRetries; attempt++) {
      const { index, modRevision } = await this.readIndex();
      const taken = Object.values(index).map((c) => parseAnySubnet(c)).filter((t) => overlaps(t, range));
      let chosen: Subnet | undefined;
      for (const candidate of carve(range, size)) {
        if (!taken.some((t) => overlaps(t, candidate))) {
          chosen = candidate;
          break;
        }
      }
      if (!chosen) throw errors.defaultRangeExhausted(range.cidr, size);
      const id = poolKey(chosen);
      const rec: PoolRecord = { subnet: chosen.cidr, createdBy: this.opts.host, createdAt: new Date().toISOString() };
      // Recorded at once, unbound: if Docker rejects it (it overlaps a host
      // route) and asks again, the next call gets the next subnet instead of
      // looping on this one (moby/libnetwork#1386); ReleasePool frees it.
      const ok = await this.store.txn(
        [{ key: keys.subnets(), modRevision }, { key: keys.pool(id), modRevision: 0 }],
        [
          { type: 'put', key: keys.subnets(), value: JSON.stringify({ ...index, [id]: chosen.cidr }) },
          { type: 'put', key: keys.pool(id), value: JSON.stringify(rec) },
        ],
      );
      if (ok.succeeded) {
        this.opts.logger?.info({ pool: chosen.cidr }, 'pool carved from the default range');
        return { poolId: id, pool: chosen.cidr };
      }
    }
    throw errors.contention('choosing a free subnet');
  }

  private async readIndex(): Promise<{ index: Index; modRevision: number }> {
    const kv = await this.store.get(keys.subnets());
    return kv ? { index: JSON.parse(kv.value) as Index, modRevision: kv.modRevision } : { index: {}, modRevision: 0 };
  }

  private async findOverlap(index: Index, subnet: Subnet): Promise<WeftError | undefined> {
    for (const [id, cidr] of Object.entries(index)) {
      const other = parseAnySubnet(cidr);
      if (!overlaps(other, subnet)) continue;
      const pool = await this.getPool(id);
      const name = pool?.network ? await this.networkName(pool.network) : 'being created';
      return errors.subnetOverlaps(subnet.cidr, other.cidr, name);
    }
    return undefined;
  }

  private async networkName(clusterId: string): Promise<string> {
    const kv = await this.store.get(keys.network(clusterId));
    if (!kv) return clusterId.slice(0, 12);
    const rec = JSON.parse(kv.value) as { name?: string };
    return rec.name ?? clusterId.slice(0, 12);
  }

  async getPool(poolId: string): Promise<PoolRecord | undefined> {
    if (!subnetFromPoolKey(poolId)) return undefined;
    const kv = await this.store.get(keys.pool(poolId));
    return kv ? (JSON.parse(kv.value) as PoolRecord) : undefined;
  }

  /**
   * ReleasePool. A pool owned by a network is freed with the network (see
   * deletePool), because every host's copy of the network references it and
   * Docker releases it on each of them. Only a pool no network took is freed
   * here: a failed `network create`, or a subnet Docker rejected.
   */
  async releasePool(poolId: string): Promise<void> {
    if (!subnetFromPoolKey(poolId)) return;
    await this.mutex.run('pools', async () => {
      const kv = await this.store.get(keys.pool(poolId));
      if (!kv) return;
      const rec = JSON.parse(kv.value) as PoolRecord;
      if (rec.network) return;
      const addrs = await this.store.list(keys.addrs(poolId));
      // an unreadable address record counts as held: the pool stays
      if (addrs.kvs.some((a) => readAddress(a.value)?.kind !== 'aux')) return;
      await this.deletePoolLocked(poolId, kv.modRevision);
    });
  }

  /** Free a pool and every address in it: called when its network is removed from the cluster. */
  async deletePool(poolId: string): Promise<void> {
    await this.mutex.run('pools', async () => {
      const kv = await this.store.get(keys.pool(poolId));
      if (kv) await this.deletePoolLocked(poolId, kv.modRevision);
    });
  }

  private async deletePoolLocked(poolId: string, poolRevision: number): Promise<void> {
    for (let attempt = 0; attempt < this.maxRetries; attempt++) {
      const { index, modRevision } = await this.readIndex();
      const rest = { ...index };
      delete rest[poolId];
      const ok = await this.store.txn(
        [{ key: keys.subnets(), modRevision }, { key: keys.pool(poolId), modRevision: poolRevision }],
        [
          { type: 'put', key: keys.subnets(), value: JSON.stringify(rest) },
          { type: 'delete', key: keys.pool(poolId) },
          { type: 'deletePrefix', prefix: keys.addrs(poolId) },
        ],
      );
      if (ok.succeeded) {
        this.cache.delete(poolId);
        this.opts.logger?.info({ pool: poolId }, 'pool released');
        return;
      }
      const again = await this.store.get(keys.pool(poolId));
      if (!again) return;
      poolRevision = again.modRevision;
    }
    throw errors.contention(`releasing pool ${poolId}`);
  }

  /** Record that a cluster network owns the pool; fails if another network already does. */
  async bindPool(poolId: string, clusterId: string, describe: (otherClusterId: string) => Promise<string>): Promise<PoolRecord> {
    return this.mutex.run('pools', async () => {
      for (let attempt = 0; attempt < this.maxRetries; attempt++) {
        const kv = await this.store.get(keys.pool(poolId));
        if (!kv) throw errors.unknownPool(poolId);
        const rec = JSON.parse(kv.value) as PoolRecord;
        if (rec.network === clusterId) return rec;
        if (rec.network) throw errors.subnetInUse(rec.subnet, await describe(rec.network));
        const next = { ...rec, network: clusterId };
        const ok = await this.store.txn([{ key: keys.pool(poolId), modRevision: kv.modRevision }],
          [{ type: 'put', key: keys.pool(poolId), value: JSON.stringify(next) }]);
        if (ok.succeeded) return next;
      }
      throw errors.contention(`binding pool ${poolId}`);
    });
  }

  /** Undo bindPool (a CreateNetwork that failed after binding). */
  async unbindPool(poolId: string, clusterId: string): Promise<void> {
    await this.mutex.run('pools', async () => {
      for (let attempt = 0; attempt < this.maxRetries; attempt++) {
        const kv = await this.store.get(keys.pool(poolId));
        if (!kv) return;
        const rec = JSON.parse(kv.value) as PoolRecord;
        if (rec.network !== clusterId) return;
        const next = { ...rec };
        delete next.network;
        const ok = await this.store.txn([{ key: keys.pool(poolId), modRevision: kv.modRevision }],
          [{ type: 'put', key: keys.pool(poolId), value: JSON.stringify(next) }]);
        if (ok.succeeded) return;
      }
      throw errors.contention(`unbinding pool ${poolId}`);
    });
  }

  // ---------------------------------------------------------------- addresses

  /**
   * Create a key only if absent. A transaction that timed out and was retried
   * may have been applied although it reports failure: a key holding exactly
   * our value is ours.
   */
  private async createKey(key: string, value: string): Promise<boolean> {
    const ok = await this.store.txn([{ key, modRevision: 0 }], [{ type: 'put', key, value }]);
    if (ok.succeeded) return true;
    return (await this.store.get(key))?.value === value;
  }

  async requestAddress(poolId: string, req: AddressRequest): Promise<string> {
    const subnet = subnetFromPoolKey(poolId);
    if (!subnet) throw errors.unknownPool(poolId);
    let wanted = req.address || undefined;
    if (wanted !== undefined) {
      if (subnet.v6) {
        if (!isIPv6(wanted)) throw errors.badAddress(wanted.slice(0, 64), 'IPv6');
        wanted = canonicalIPv6(wanted);
      } else if (!isIPv4(wanted)) {
        throw errors.badAddress(wanted.slice(0, 64));
      }
    }
    return this.mutex.run(`pool:${poolId}`, async () => {
      const withPrefix = (ip: string) => `${ip}/${subnet.prefix}`;
      if (req.gateway) return withPrefix(await this.gateway(poolId, subnet, wanted));
      if (wanted) return withPrefix(await this.claimStatic(poolId, subnet, wanted, req.mac));
      return withPrefix(await this.claimFree(poolId, subnet, req.mac));
    });
  }

  private async pool(poolId: string): Promise<{ rec: PoolRecord; modRevision: number }> {
    const kv = await this.store.get(keys.pool(poolId));
    if (!kv) throw errors.unknownPool(poolId);
    return { rec: JSON.parse(kv.value) as PoolRecord, modRevision: kv.modRevision };
  }

  private async gateway(poolId: string, subnet: Subnet, wanted?: string): Promise<string> {
    for (let attempt = 0; attempt < this.maxRetries; attempt++) {
      const { rec, modRevision } = await this.pool(poolId);
      if (rec.gateway) {
        if (wanted && wanted !== rec.gateway) throw errors.gatewayMismatch(wanted, rec.gateway, subnet.cidr);
        return rec.gateway;
      }
      let gw: string;
      if (wanted) {
        if (!contains(subnet, wanted)) throw errors.addressOutside(wanted, subnet.cidr, ipFlag(subnet));
        gw = wanted;
      } else {
        const { first } = usableBounds(subnet);
        gw = toIp(first, subnet.v6);
      }
      const held = await this.store.get(keys.addr(poolId, gw));
      if (held) throw errors.addressInUse(gw, subnet.cidr, describeHolder(JSON.parse(held.value) as AddressRecord), ipFlag(subnet));
      const ok = await this.store.txn(
        [{ key: keys.pool(poolId), modRevision }, { key: keys.addr(poolId, gw), modRevision: 0 }],
        [{ type: 'put', key: keys.pool(poolId), value: JSON.stringify({ ...rec, gateway: gw }) }],
      );
      if (ok.succeeded) return gw;
    }
    throw errors.contention(`reserving the gateway of ${subnet.cidr}`);
  }

  private async claimStatic(poolId: string, subnet: Subnet, ip: string, mac?: string): Promise<string> {
    const flag = ipFlag(subnet);
    if (!contains(subnet, ip)) throw errors.addressOutside(ip, subnet.cidr, flag);
    const { rec } = await this.pool(poolId);
    const n = toNumber(ip);
    if (subnet.v6) {
      if (subnet.prefix <= 126 && n === subnet.first) throw errors.addressReserved(ip, 'subnet-router anycast address', flag);
    } else {
      if (subnet.prefix <= 30 && n === subnet.first) throw errors.addressReserved(ip, 'network address');
      if (subnet.prefix <= 30 && n === subnet.last) throw errors.addressReserved(ip, 'broadcast address');
    }
    const kind: AddressRecord['kind'] = mac ? 'endpoint' : 'aux';
    if (rec.gateway === ip) {
      if (kind === 'aux') return ip;
      throw errors.addressReserved(ip, 'gateway', flag);
    }
    const key = keys.addr(poolId, ip);
    for (let attempt = 0; attempt < this.maxRetries; attempt++) {
      const held = await this.store.get(key);
      if (held) {
        const h = JSON.parse(held.value) as AddressRecord;
        // Every host repeats the aux reservations of a network.
        if (h.kind === 'aux' && kind === 'aux') return ip;
        // Replay after a daemon restart re-requests what this host holds, and
        // dockerd 20.10 sends it without the MAC. A request with another MAC
        // is a second container asking for a taken --ip.
        if (h.kind === 'endpoint' && h.host === this.opts.host && (!mac || h.mac === mac)) return ip;
        throw errors.addressInUse(ip, subnet.cidr, describeHolder(h), flag);
      }
      const value: AddressRecord = { host: this.opts.host, kind, ...(mac ? { mac } : {}), at: new Date().toISOString() };
      if (await this.createKey(key, JSON.stringify(value))) {
        this.cached(poolId)?.used.add(n);
        return ip;
      }
    }
    throw errors.contention(`reserving ${ip}`);
  }

  private cached(poolId: string): AddrCache | undefined {
    return this.cache.get(poolId);
  }

  private async refresh(poolId: string): Promise<AddrCache> {
    const list = await this.store.list(keys.addrs(poolId));
    const c: AddrCache = { used: new Set(list.kvs.map((kv) => toNumber(leaf(kv.key)))) };
    this.cache.set(poolId, c);
    return c;
  }

  private async claimFree(poolId: string, subnet: Subnet, mac?: string): Promise<string> {
    const { rec } = await this.pool(poolId);
    const range = rec.ipRange ? parseAnySubnet(rec.ipRange) : subnet;
    const { first, last } = usableBounds(subnet, range);
    const gateway = rec.gateway ? toNumber(rec.gateway) : undefined;
    let cache = this.cached(poolId) ?? (await this.refresh(poolId));
    let refreshed = false;
    let contended = false;
    for (let attempt = 0; attempt < this.maxRetries * 4; attempt++) {
      const candidate = pickFree(first, last, cache.used, gateway, contended);
      if (candidate === undefined) {
        // The cache may hold addresses other hosts have released since.
        if (!refreshed) {
          cache = await this.refresh(poolId);
          refreshed = true;
          continue;
        }
        throw errors.poolExhausted(range.cidr, cache.used.size + (gateway !== undefined ? 1 : 0));
      }
      const ip = toIp(candidate, subnet.v6);
      const key = keys.addr(poolId, ip);
      const value: AddressRecord = { host: this.opts.host, kind: 'endpoint', ...(mac ? { mac } : {}), at: new Date().toISOString() };
      const ok = await this.createKey(key, JSON.stringify(value));
      cache.used.add(candidate);
      if (ok) {
        faultPoint('requestAddress:after-store');
        return ip;
      }
      // Another host took it: from now on pick at random among the free
      // addresses, so hosts racing for the lowest address spread out.
      contended = true;
      if (attempt % 8 === 7) {
        cache = await this.refresh(poolId);
        refreshed = true;
      }
    }
    throw errors.contention(`allocating an address in ${subnet.cidr}`);
  }

  /** ReleaseAddress: idempotent; the gateway and aux reservations stay with the pool. */
  async releaseAddress(poolId: string, address: string): Promise<void> {
    const subnet = subnetFromPoolKey(poolId);
    if (!subnet) return;
    if (subnet.v6 ? !isIPv6(address) : !isIPv4(address)) return;
    if (subnet.v6) address = canonicalIPv6(address);
    await this.mutex.run(`pool:${poolId}`, async () => {
      const key = keys.addr(poolId, address);
      const kv = await this.store.get(key);
      if (!kv) return;
      const h = readAddress(kv.value);
      if (!h || h.kind !== 'endpoint') return;
      if (h.host !== this.opts.host) {
        this.opts.logger?.warn({ pool: poolId, address, holder: h.host }, 'not releasing an address held by another host');
        return;
      }
      await this.store.txn([{ key, modRevision: kv.modRevision }], [{ type: 'delete', key }]);
      this.cached(poolId)?.used.delete(toNumber(address));
    });
  }

  /** Ops that free every endpoint address this host holds (used by `weft host rm` and crash recovery). */
  /** Endpoint addresses a host holds (for garbage collection and `weft host rm`). */
  async addressesOfHost(host: string): Promise<{ pool: string; ip: string; at?: string }[]> {
    const list = await this.store.list(keys.allAddrs());
    const out: { pool: string; ip: string; at?: string }[] = [];
    for (const kv of list.kvs) {
      const rec = readAddress(kv.value);
      if (rec && rec.kind === 'endpoint' && rec.host === host) {
        const k = parseKey(kv.key);
        if (k?.kind === 'addr') out.push({ pool: k.pool, ip: k.ip, ...(rec.at ? { at: rec.at } : {}) });
      }
    }
    return out;
  }
}

/** Default range of the IPv6 subnets given to `--ipv6` networks without an IPv6 --subnet (a ULA prefix, RFC 4193). */
export const DEFAULT_POOL_V6 = 'fd77:eef0:77::/48';
/** IPv6 subnets carved from it are /64s: what SLAAC, and so most IPv6 tooling, expects of a link. */
export const DEFAULT_V6_SIZE = 64;

/** What the user types to ask for an address of the subnet's family. */
function ipFlag(subnet: Subnet): string {
  return subnet.v6 ? '--ip6' : '--ip';
}

function describeHolder(h: AddressRecord): string {
  return h.kind === 'aux' ? 'reserved with --aux-address' : `held by a container on host ${h.host}`;
}

function pickFree(first: bigint, last: bigint, used: Set<bigint>, gateway: bigint | undefined, random: boolean): bigint | undefined {
  const size = last - first + 1n;
  if (size <= 0n) return undefined;
  // Random among the low addresses only: a /64 has 2^64, and an address picked
  // anywhere in it would be long to type and read (fd00:40::9ca0:43bf:b7ac:8e1b).
  const window = size < 4096n + 4n * BigInt(used.size) ? size : 4096n + 4n * BigInt(used.size);
  const start = random ? first + randomBelow(window) : first;
  for (let i = 0n; i < size; i++) {
    let n = start + i;
    if (n > last) n -= size;
    if (n !== gateway && !used.has(n)) return n;
  }
  return undefined;
}

/** A uniform random bigint in [0, n): 2^64 addresses of a /64 do not fit a double. */
function randomBelow(n: bigint): bigint {
  if (n <= 1n << 52n) return BigInt(Math.floor(Math.random() * Number(n)));
  let r = 0n;
  for (let bits = 0n; (1n << bits) < n; bits += 32n) r = (r << 32n) | BigInt(Math.floor(Math.random() * 2 ** 32));
  return r % n;
}
