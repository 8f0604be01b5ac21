// Each host's tunnel address: its address on its WireGuard interface, and the
// VXLAN endpoint (VTEP) of encrypted networks. One per host, unique in the
// cluster, from --wg-subnet, claimed in the store with create-if-absent under
// tunnels/<ip> (not under the lease: the host keeps it across restarts and
// outages; `weft host rm` releases it). A copy in the state directory lets a
// restart while the store is unreachable bring the interface back as it was.
import { createHash } from 'crypto';
import * as fs from 'fs';
import { keys, leaf, TunnelRecord } from '../store/keys';
import type { Store } from '../store/store';

export interface Subnet4 { network: number; prefixLen: number; size: number; cidr: string }

export function ip4ToInt(ip: string): number {
  const p = ip.split('.').map(Number);
  if (p.length !== 4 || p.some((x) => !Number.isInteger(x) || x < 0 || x > 255)) throw new Error(`"${ip}" is not an IPv4 address`);
  return ((p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3]) >>> 0;
}

export const intToIp4 = (n: number): string => [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');

/** --wg-subnet: an IPv4 CIDR from /8 to /29 (at least 6 hosts). */
export function parseTunnelSubnet(cidr: string): Subnet4 {
  const m = /^(\d{1,3}(?:\.\d{1,3}){3})\/(\d{1,2})$/.exec(cidr.trim());
  const prefixLen = m ? Number(m[2]) : NaN;
  if (!m || !(prefixLen >= 8 && prefixLen <= 29)) throw new Error(`wg-subnet "${cidr}" is not an IPv4 CIDR from /8 to /29 (for example 100.64.0.0/16)`);
  const ip = ip4ToInt(m[1]);
  const mask = (0xffffffff << (32 - prefixLen)) >>> 0;
  const network = (ip & mask) >>> 0;
  if (network !== ip) throw new Error(`wg-subnet "${cidr}" has host bits set: did you mean ${intToIp4(network)}/${prefixLen}?`);
  return { network, prefixLen, size: 2 ** (32 - prefixLen), cidr: `${intToIp4(network)}/${prefixLen}` };
}

export function inSubnet(ip: string, s: Subnet4): boolean {
  try {
    const n = ip4ToInt(ip);
    return n > s.network && n < s.network + s.size - 1;
  } catch {
    return false;
  }
}

interface Cached { address: string; subnet: string }

function readCache(file: string): Cached | undefined {
  try {
    const c = JSON.parse(fs.readFileSync(file, 'utf8')) as Cached;
    return typeof c.address === 'string' && typeof c.subnet === 'string' ? c : undefined;
  } catch {
    return undefined;
  }
}

function writeCache(file: string, c: Cached): void {
  const tmp = `${file}.${process.pid}.new`;
  fs.writeFileSync(tmp, `${JSON.stringify(c)}\n`, { mode: 0o600 });
  fs.renameSync(tmp, file);
}

/**
 * This host's tunnel address: the one it holds in the store, or a new claim.
 * The first candidate comes from a hash of the host name (stable, and spread
 * out so that hosts rarely race for the same one); then the next free ones.
 * When the store cannot be read, the cached address (same subnet) is used.
 */
export async function claimTunnelAddress(store: Store, host: string, subnetCidr: string, cacheFile: string): Promise<{ address: string; claimed: boolean; fromCache: boolean }> {
  const s = parseTunnelSubnet(subnetCidr);
  const cached = readCache(cacheFile);
  let list;
  try {
    list = await store.list(keys.tunnels());
  } catch (e) {
    if (cached && cached.subnet === s.cidr && inSubnet(cached.address, s)) return { address: cached.address, claimed: false, fromCache: true };
    throw e;
  }
  const held = new Map<string, string>();
  for (const kv of list.kvs) {
    try {
      held.set(leaf(kv.key), (JSON.parse(kv.value) as TunnelRecord).host);
    } catch {
      held.set(leaf(kv.key), '?');
    }
  }
  const mine = [...held].filter(([ip, h]) => h === host && inSubnet(ip, s)).map(([ip]) => ip).sort();
  if (mine.length) {
    writeCache(cacheFile, { address: mine[0], subnet: s.cidr });
    return { address: mine[0], claimed: false, fromCache: false };
  }
  const hosts = s.size - 2;
  const start = createHash('sha256').update(host).digest().readUInt32BE(0) % hosts;
  const candidates: string[] = [];
  if (cached && cached.subnet === s.cidr && inSubnet(cached.address, s) && !held.has(cached.address)) candidates.push(cached.address);
  for (let i = 0; i < hosts && candidates.length < 64; i++) {
    const ip = intToIp4(s.network + 1 + ((start + i) % hosts));
    if (!held.has(ip) && !candidates.includes(ip)) candidates.push(ip);
  }
  if (candidates.length === 0) throw new Error(`no free tunnel address left in --wg-subnet ${s.cidr} (${held.size} hosts hold one): widen --wg-subnet on every host, or release hosts that are gone for good with weft host rm`);
  const rec: TunnelRecord = { host, at: new Date().toISOString() };
  for (const ip of candidates) {
    const r = await store.txn([{ key: keys.tunnel(ip), modRevision: 0 }], [{ type: 'put', key: keys.tunnel(ip), value: JSON.stringify(rec) }]);
    if (!r.succeeded) {
      // Another host took it meanwhile; or a retried transaction of ours did.
      const kv = await store.get(keys.tunnel(ip));
      if (!kv || (JSON.parse(kv.value) as TunnelRecord).host !== host) continue;
    }
    writeCache(cacheFile, { address: ip, subnet: s.cidr });
    return { address: ip, claimed: true, fromCache: false };
  }
  throw new Error(`could not claim a tunnel address in ${s.cidr}: every candidate was taken meanwhile; weft retries`);
}

/** Releases this host's claims outside the current subnet (after --wg-subnet changed). */
export async function releaseOtherTunnels(store: Store, host: string, keep: string): Promise<number> {
  const list = await store.list(keys.tunnels());
  let n = 0;
  for (const kv of list.kvs) {
    if (leaf(kv.key) === keep) continue;
    let rec: TunnelRecord | undefined;
    try {
      rec = JSON.parse(kv.value) as TunnelRecord;
    } catch {
      continue;
    }
    if (rec.host !== host) continue;
    const r = await store.txn([{ key: kv.key, modRevision: kv.modRevision }], [{ type: 'delete', key: kv.key }]);
    if (r.succeeded) n++;
  }
  return n;
}
