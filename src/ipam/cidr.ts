// IPv4 address arithmetic for IPAM, on ip-num. Addresses travel as dotted
// strings; ranges as [first, last] bigints, which makes overlap and iteration
// plain comparisons.

import { IPv4, IPv4CidrRange, Validator } from 'ip-num';
import { errors } from '../errors';

export interface Subnet {
  /** Canonical "10.40.0.0/24". */
  cidr: string;
  prefix: number;
  first: bigint;
  last: bigint;
}

export function isIPv4(s: string): boolean {
  return typeof s === 'string' && s.length <= 15 && Validator.isValidIPv4String(s)[0];
}

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
  return new IPv4(ip).getValue();
}

export function toIp(n: bigint): string {
  return IPv4.fromNumber(n).toString();
}

export function contains(s: Subnet, ip: string | bigint): boolean {
  const n = typeof ip === 'bigint' ? ip : toNumber(ip);
  return n >= s.first && n <= s.last;
}

export function overlaps(a: Subnet, b: Subnet): boolean {
  return a.first <= b.last && b.first <= a.last;
}

export function inside(inner: Subnet, outer: Subnet): boolean {
  return inner.first >= outer.first && inner.last <= outer.last;
}

/** Addresses containers may get: all of the range but the subnet's network and broadcast addresses (for prefixes up to /30). */
export function usableBounds(subnet: Subnet, range: Subnet = subnet): { first: bigint; last: bigint } {
  let first = range.first;
  let last = range.last;
  if (subnet.prefix <= 30) {
    if (first === subnet.first) first += 1n;
    if (last === subnet.last) last -= 1n;
  }
  return { first, last };
}

/** Key-safe form of a subnet: "10.40.0.0_24". Also used as the PoolID Docker keeps. */
export function poolKey(s: Subnet): string {
  return s.cidr.replace('/', '_');
}

export function subnetFromPoolKey(key: string): Subnet | undefined {
  if (!/^\d{1,3}(\.\d{1,3}){3}_\d{1,2}$/.test(key)) return undefined;
  try {
    return parseSubnet(key.replace('_', '/'));
  } catch {
    return undefined;
  }
}

/** Subnets of length `size` inside `range`, in order. Lazy: a /8 in /24s is 65,536 candidates. */
export function* carve(range: Subnet, size: number): Generator<Subnet> {
  if (size < range.prefix) return;
  const step = 1n << BigInt(32 - size);
  for (let n = range.first; n + step - 1n <= range.last; n += step) {
    yield { cidr: `${toIp(n)}/${size}`, prefix: size, first: n, last: n + step - 1n };
  }
}
