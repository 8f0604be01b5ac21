// IPv4 and IPv6 address arithmetic for IPAM, on ip-num. Addresses travel as
// strings (dotted IPv4; IPv6 always in its canonical RFC 5952 form, so that
// one address is one store key); ranges as [first, last] bigints, which makes
// overlap and iteration plain comparisons, 128-bit ones included.

import { IPv4, IPv4CidrRange, IPv6, Validator } from 'ip-num';
import { errors } from '../errors';
import { ipFromBytes, isIPv4 } from '../util/ip';

export interface Subnet {
  /** Canonical "10.40.0.0/24". */
  cidr: string;
  prefix: number;
  first: bigint;
  last: bigint;
  /** An IPv6 subnet (absent: IPv4). */
  v6?: boolean;
}

// One IPv4 check for the whole code base (dotted quad, no leading zeros): util/ip's.
export { isIPv4 };

export function parseSubnet(value: string): Subnet {
  if (typeof value !== 'string' || value.length > 18 || !/^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/.test(value)) {
    throw errors.badSubnet(String(value).slice(0, 64), 'expected IPv4 CIDR notation such as 10.40.0.0/24');
  }
  const [ip, len] = value.split('/');
  if (!isIPv4(ip)) throw errors.badSubnet(value, `${ip} is not an IPv4 address`);
  const prefix = Number(len);
  if (prefix > 32) throw errors.badSubnet(value, 'the prefix length must be at most 32');
  const range = IPv4CidrRange.fromCidr(`${ip}/${prefix}`);
  const first = range.getFirst().getValue();
  if (first !== toNumber(ip)) {
    throw errors.badSubnet(value, `host bits are set; did you mean ${range.getFirst().toString()}/${prefix}?`);
  }
  return { cidr: `${range.getFirst().toString()}/${prefix}`, prefix, first, last: range.getLast().getValue() };
}

export function toNumber(ip: string): bigint {
  return ip.includes(':') ? new IPv6(ip).getValue() : new IPv4(ip).getValue();
}

export function toIp(n: bigint, v6 = false): string {
  return v6 ? formatIPv6(n) : IPv4.fromNumber(n).toString();
}

export function contains(s: Subnet, ip: string | bigint): boolean {
  if (typeof ip === 'string' && ip.includes(':') !== (s.v6 === true)) return false;
  const n = typeof ip === 'bigint' ? ip : toNumber(ip);
  return n >= s.first && n <= s.last;
}

export function overlaps(a: Subnet, b: Subnet): boolean {
  return (a.v6 === true) === (b.v6 === true) && a.first <= b.last && b.first <= a.last;
}

// ---------------------------------------------------------------- IPv6

/** An IPv6 address weft can store: no zone, no embedded dotted IPv4 (::ffff:a.b.c.d is an IPv4 address in disguise). */
export function isIPv6(s: string): boolean {
  return typeof s === 'string' && s.length <= 39 && s.includes(':') && !s.includes('.') && !s.includes('%') &&
    Validator.isValidIPv6String(s)[0];
}

/** The canonical text of an IPv6 address (RFC 5952: lower case, no leading zeros, the longest run of zero groups as ::). */
export function formatIPv6(n: bigint): string {
  const b = Buffer.alloc(16);
  for (let i = 0; i < 8; i++) b.writeUInt16BE(Number((n >> BigInt((7 - i) * 16)) & 0xffffn), i * 2);
  // One formatter for container and underlay addresses alike (src/util/ip.ts).
  return ipFromBytes(b)!;
}

/** The canonical form of an IPv6 address (throws on anything else: check isIPv6 first). */
export function canonicalIPv6(ip: string): string {
  return formatIPv6(new IPv6(ip).getValue());
}

export function parseSubnet6(value: string): Subnet {
  if (typeof value !== 'string' || value.length > 43 || !/^[0-9a-fA-F:]+\/\d{1,3}$/.test(value)) {
    throw errors.badSubnet(String(value).slice(0, 64), 'expected IPv6 CIDR notation such as fd00:40::/64');
  }
  const [ip, len] = value.split('/');
  if (!isIPv6(ip)) throw errors.badSubnet(value, `${ip} is not an IPv6 address`);
  const prefix = Number(len);
  if (prefix > 128) throw errors.badSubnet(value, 'the prefix length must be at most 128');
  const n = new IPv6(ip).getValue();
  const size = 1n << BigInt(128 - prefix);
  const first = n - (n % size);
  if (first !== n) throw errors.badSubnet(value, `host bits are set; did you mean ${formatIPv6(first)}/${prefix}?`);
  return { cidr: `${formatIPv6(first)}/${prefix}`, prefix, first, last: first + size - 1n, v6: true };
}

/** A subnet of either family (the subnets index holds both). */
export function parseAnySubnet(value: string): Subnet {
  return typeof value === 'string' && value.includes(':') ? parseSubnet6(value) : parseSubnet(value);
}

export function inside(inner: Subnet, outer: Subnet): boolean {
  return inner.first >= outer.first && inner.last <= outer.last;
}

/** Addresses containers may get: all of the range but the subnet's network and broadcast addresses (for prefixes up to /30). */
export function usableBounds(subnet: Subnet, range: Subnet = subnet): { first: bigint; last: bigint } {
  let first = range.first;
  let last = range.last;
  if (subnet.v6) {
    // IPv6 has no broadcast address; the first one is the subnet-router anycast address.
    if (subnet.prefix <= 126 && first === subnet.first) first += 1n;
    return { first, last };
  }
  if (subnet.prefix <= 30) {
    if (first === subnet.first) first += 1n;
    if (last === subnet.last) last -= 1n;
  }
  return { first, last };
}

/** Key-safe form of a subnet: "10.40.0.0_24", "fd00:40::_64". Also used as the PoolID Docker keeps. */
export function poolKey(s: Subnet): string {
  return s.cidr.replace('/', '_');
}

export function subnetFromPoolKey(key: string): Subnet | undefined {
  if (typeof key !== 'string') return undefined;
  const v6 = /^[0-9a-f:]{2,39}_\d{1,3}$/.test(key);
  if (!v6 && !/^\d{1,3}(\.\d{1,3}){3}_\d{1,2}$/.test(key)) return undefined;
  try {
    const s = v6 ? parseSubnet6(key.replace('_', '/')) : parseSubnet(key.replace('_', '/'));
    // One pool, one key: a non-canonical spelling of a v6 pool is not it.
    return poolKey(s) === key ? s : undefined;
  } catch {
    return undefined;
  }
}

/** Subnets of length `size` inside `range`, in order. Lazy: a /8 in /24s is 65,536 candidates. */
export function* carve(range: Subnet, size: number): Generator<Subnet> {
  if (size < range.prefix) return;
  const step = 1n << BigInt((range.v6 ? 128 : 32) - size);
  for (let n = range.first; n + step - 1n <= range.last; n += step) {
    yield { cidr: `${toIp(n, range.v6)}/${size}`, prefix: size, first: n, last: n + step - 1n, ...(range.v6 ? { v6: true } : {}) };
  }
}
