// Reading records from the store: the edge where anything written to the
// store (by this weft, by another version of weft, or by hand with etcdctl)
// becomes a typed value. Each reader checks the fields weft relies on and
// returns either the record or why it is not usable, never throws. A reader
// keeps fields it does not know (a newer weft may have added them) so that a
// record read, changed and written back keeps them too; it never requires a
// field that an older weft does not write.
//
// Callers skip what is invalid, count it and log it once (see InvalidRecords),
// so that one bad record can stop nothing but itself.

import { isIPv4, isIPv6 } from '../ipam/cidr';
import { canonicalIp } from '../util/ip';
import type { AddressRecord, BindingRecord, EndpointRecord, HostRecord, NetworkRecord } from './keys';

export type Read<T> = { ok: true; value: T } | { ok: false; why: string };

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

function object(text: string | undefined): Read<Record<string, unknown>> {
  if (typeof text !== 'string') return { ok: false, why: 'no value' };
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return { ok: false, why: 'not JSON' };
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return { ok: false, why: 'not a JSON object' };
  return { ok: true, value: v as Record<string, unknown> };
}

const str = (o: Record<string, unknown>, k: string) => typeof o[k] === 'string';
const optStr = (o: Record<string, unknown>, k: string) => o[k] === undefined || typeof o[k] === 'string';

/** A MAC weft can program: six lower- or upper-case hex pairs, unicast (the group bit clear). */
export function isUnicastMac(mac: unknown): boolean {
  if (typeof mac !== 'string' || !MAC.test(mac.toLowerCase())) return false;
  return (parseInt(mac.slice(0, 2), 16) & 1) === 0;
}

export function readHost(text: string | undefined): Read<HostRecord> {
  const o = object(text);
  if (!o.ok) return o;
  const r = o.value;
  // The underlay address: IPv4, or IPv6 (kept in its canonical form, as the kernel shows it).
  if (!str(r, 'address') || !canonicalIp(r.address as string)) return { ok: false, why: `address ${JSON.stringify(r.address)} is not an IPv4 or IPv6 address` };
  if (!optStr(r, 'version') || !optStr(r, 'startedAt') || !optStr(r, 'instance')) return { ok: false, why: 'version, startedAt and instance must be strings' };
  // [routed] The on-link prefix of the address (same-segment hosts route to each other; IPv4 or IPv6).
  if (r.underlay !== undefined && (typeof r.underlay !== 'string' || !/^[0-9A-Fa-f:.]+\/\d{1,3}$/.test(r.underlay))) return { ok: false, why: `underlay ${JSON.stringify(r.underlay)} is not a CIDR prefix` };
  return { ok: true, value: { ...r, address: canonicalIp(r.address as string) } as unknown as HostRecord };
}

export function readNetwork(text: string | undefined): Read<NetworkRecord> {
  const o = object(text);
  if (!o.ok) return o;
  const r = o.value;
  if (typeof r.vni !== 'number' || !Number.isInteger(r.vni) || r.vni < 0 || r.vni >= 1 << 24) return { ok: false, why: `vni ${JSON.stringify(r.vni)} is not a VXLAN network identifier` };
  if (typeof r.mtu !== 'number' || !Number.isInteger(r.mtu) || r.mtu < 68 || r.mtu > 65535) return { ok: false, why: `mtu ${JSON.stringify(r.mtu)} is not an MTU` };
  for (const k of ['name', 'subnet', 'poolId', 'gateway', 'ipRange', 'subnet6', 'poolId6', 'gateway6', 'ipRange6', 'createdBy', 'createdAt']) {
    if (!optStr(r, k)) return { ok: false, why: `${k} must be a string` };
  }
  if (r.subnet !== undefined && !/^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/.test(r.subnet as string)) return { ok: false, why: `subnet ${JSON.stringify(r.subnet)} is not IPv4 CIDR` };
  if (r.subnet6 !== undefined && !/^[0-9a-f:]{2,39}\/\d{1,3}$/.test(r.subnet6 as string)) return { ok: false, why: `subnet6 ${JSON.stringify(r.subnet6)} is not IPv6 CIDR` };
  if (r.options !== undefined && (typeof r.options !== 'object' || r.options === null || Array.isArray(r.options) ||
      Object.values(r.options).some((v) => typeof v !== 'string'))) return { ok: false, why: 'options must map strings to strings' };
  return { ok: true, value: { ...r, options: (r.options ?? {}) as Record<string, string>, internal: r.internal === true } as unknown as NetworkRecord };
}

export function readBinding(text: string | undefined): Read<BindingRecord> {
  const o = object(text);
  if (!o.ok) return o;
  if (!str(o.value, 'localId') || !/^[0-9a-f]{1,64}$/i.test(o.value.localId as string)) return { ok: false, why: 'localId must be a Docker network id' };
  return { ok: true, value: o.value as unknown as BindingRecord };
}

/**
 * An endpoint record. Its address must be IPv4, its MAC unicast, its host
 * named and its VTEP an IPv4 or IPv6 underlay address (or empty: an
 * embedded-store host has none). Whether
 * the address lies in its network's subnet needs the network: see
 * checkEndpointInNetwork.
 */
export function readEndpoint(text: string | undefined): Read<EndpointRecord> {
  const o = object(text);
  if (!o.ok) return o;
  const r = o.value;
  if (!str(r, 'host') || (r.host as string) === '') return { ok: false, why: 'host must be a host name' };
  if (r.ip6 !== undefined && (typeof r.ip6 !== 'string' || !isIPv6(r.ip6))) return { ok: false, why: `ip6 ${JSON.stringify(r.ip6)} is not an IPv6 address` };
  // An endpoint of an IPv6-only network has no IPv4 address: ip is empty, ip6 set.
  const v6only = r.ip === '' && r.ip6 !== undefined;
  if (!str(r, 'ip') || (!v6only && !isIPv4(r.ip as string))) return { ok: false, why: `ip ${JSON.stringify(r.ip)} is not an IPv4 address` };
  if (!isUnicastMac(r.mac)) return { ok: false, why: `mac ${JSON.stringify(r.mac)} is not a unicast MAC address` };
  if (r.vtep !== undefined && (typeof r.vtep !== 'string' || (r.vtep !== '' && !canonicalIp(r.vtep)))) return { ok: false, why: `vtep ${JSON.stringify(r.vtep)} is not an IPv4 or IPv6 address` };
  if (!optStr(r, 'localNetwork') || !optStr(r, 'createdAt')) return { ok: false, why: 'localNetwork and createdAt must be strings' };
  return { ok: true, value: { ...r, vtep: r.vtep ? canonicalIp(r.vtep as string) : '', mac: (r.mac as string).toLowerCase() } as unknown as EndpointRecord };
}

/** Counts records skipped as invalid and logs each: once per (key, value) seen. */
export class InvalidRecords {
  private readonly logged = new Map<string, string>();
  total = 0;
  readonly byKind = new Map<string, number>();

  constructor(private readonly warn: (obj: object, msg: string) => void) {}

  /** Record that `key` holds an unusable value; logs the first time this value is seen at this key. */
  skip(kind: string, key: string, value: string | undefined, why: string): void {
    const seen = value ?? '';
    if (this.logged.get(key) === seen) return;
    if (this.logged.size > 10_000) this.logged.clear();
    this.logged.set(key, seen);
    this.total++;
    this.byKind.set(kind, (this.byKind.get(kind) ?? 0) + 1);
    this.warn({ key, why, value: seen.slice(0, 200) },
      `ignoring an invalid ${kind} record in the store (${why}); everything else is programmed. Fix or delete the key (etcdctl del ${key})`);
  }

  /** The key holds something else now (deleted, or valid again): log it again if it turns bad. */
  clear(key: string): void {
    this.logged.delete(key);
  }
}

/** An address record, or undefined when it is not one (the readers skip it). */
export function readAddress(value: string): AddressRecord | undefined {
  try {
    const r = JSON.parse(value) as Partial<AddressRecord> | null;
    return r && typeof r === 'object' && (r.kind === 'endpoint' || r.kind === 'aux') ? (r as AddressRecord) : undefined;
  } catch {
    return undefined;
  }
}
