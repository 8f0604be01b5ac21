// Underlay addresses (--advertise-addr, VTEPs, WireGuard endpoints) in both
// families: parsing to bytes for netlink, one canonical text form (RFC 5952
// for IPv6: lower case, the longest run of zero groups shortened to "::") so
// that an address read back from the kernel compares equal to the one in the
// store, and HOST:PORT with brackets around an IPv6 host.
//
// Container addresses (IPAM) live in src/ipam; this file is about the
// network between the hosts.

export type IpFamily = 4 | 6;

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/** A dotted IPv4 address (no leading zeros, no prefix). */
export function isIPv4(s: unknown): boolean {
  return typeof s === 'string' && IPV4.test(s);
}

/** 4 or 16 bytes, or undefined when `s` is not an IPv4 or IPv6 address (no zone, no prefix). */
export function ipBytes(s: string): Buffer | undefined {
  if (typeof s !== 'string') return undefined;
  if (IPV4.test(s)) return Buffer.from(s.split('.').map(Number));
  return ipv6Bytes(s);
}

function ipv6Bytes(s: string): Buffer | undefined {
  if (!/^[0-9A-Fa-f:.]{2,45}$/.test(s)) return undefined;
  let head = s;
  // An IPv4 tail (::ffff:192.0.2.1, 64:ff9b::192.0.2.1) is the last two groups.
  const lastColon = s.lastIndexOf(':');
  const tail = s.slice(lastColon + 1);
  if (tail.includes('.')) {
    if (!IPV4.test(tail)) return undefined;
    const [a, b, c, d] = tail.split('.').map(Number);
    head = `${s.slice(0, lastColon + 1)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const want = 8;
  const halves = head.split('::');
  if (halves.length > 2) return undefined;
  const groups = (h: string): string[] | undefined => {
    if (h === '') return [];
    const g = h.split(':');
    return g.every((x) => /^[0-9A-Fa-f]{1,4}$/.test(x)) ? g : undefined;
  };
  const left = groups(halves[0]);
  const right = halves.length === 2 ? groups(halves[1]) : [];
  if (!left || !right) return undefined;
  let all: string[];
  if (halves.length === 2) {
    const missing = want - left.length - right.length;
    if (missing < 1) return undefined;
    all = [...left, ...Array<string>(missing).fill('0'), ...right];
  } else {
    all = left;
  }
  if (all.length !== want) return undefined;
  const out = Buffer.alloc(16);
  all.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

/** The text form of 4 or 16 address bytes (IPv6 in RFC 5952 form); undefined for any other length. */
export function ipFromBytes(b: Buffer | Uint8Array | undefined): string | undefined {
  if (!b) return undefined;
  if (b.length === 4) return [...b].join('.');
  if (b.length !== 16) return undefined;
  const g: number[] = [];
  for (let i = 0; i < 16; i += 2) g.push((b[i] << 8) | b[i + 1]);
  // The longest run of at least two zero groups (the first one on a tie) becomes "::".
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) { best = i; bestLen = j - i; }
    i = j;
  }
  const hex = (xs: number[]) => xs.map((x) => x.toString(16)).join(':');
  if (best < 0) return hex(g);
  return `${hex(g.slice(0, best))}::${hex(g.slice(best + bestLen))}`;
}

/** 4 or 6 for an address, undefined for anything else. */
export function ipFamily(s: string): IpFamily | undefined {
  const b = ipBytes(s);
  return b ? (b.length === 4 ? 4 : 6) : undefined;
}

/** The canonical text of an address (IPv6 lower case and shortened), or undefined when it is not one. */
export function canonicalIp(s: string): string | undefined {
  return ipFromBytes(ipBytes(s));
}

/** HOST:PORT, with the host in brackets when it is an IPv6 address ([2001:db8::1]:4790). */
export function hostPort(host: string, port: number | string): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** The host and port of "192.0.2.1:51820" or "[2001:db8::1]:51820"; undefined when it is neither form. */
export function splitHostPort(s: string): { host: string; port: number } | undefined {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|(\d{1,3}(?:\.\d{1,3}){3})):(\d{1,5})$/.exec(s);
  if (!m) return undefined;
  const host = m[1] ?? m[2];
  const port = Number(m[3]);
  if (!ipFamily(host) || (m[1] !== undefined && ipFamily(host) !== 6) || port < 1 || port > 65535) return undefined;
  return { host, port };
}

/**
 * Why `s` cannot be a host's underlay address (the VXLAN endpoint other hosts
 * send to), or undefined when it can. Loopback (127.0.0.1, ::1) is allowed in
 * both families, as for several wefts on one machine. Callers keep
 * canonicalIp(s), not the text as typed.
 */
export function underlayAddressProblem(s: string): string | undefined {
  if (/%/.test(s)) {
    return 'an IPv6 link-local address with a zone (%eth0) cannot be a VXLAN endpoint: VXLAN needs an address the other hosts can reach by routing; use a global or unique-local (fd00::/8) IPv6 address, or an IPv4 address';
  }
  if (s.includes('/')) return 'give the address alone, without a /prefix';
  const b = ipBytes(s);
  if (!b) return 'it is neither an IPv4 address (192.0.2.10) nor an IPv6 address (2001:db8::10)';
  if (b.length === 4) {
    if (b[0] === 0) return '0.0.0.0/8 is not a host address';
    if (b[0] >= 224) return 'multicast and reserved addresses (224.0.0.0 and above) are not host addresses';
    return undefined;
  }
  if (b.every((x) => x === 0)) return ':: is not a host address: give this host\'s own IPv6 address';
  if (b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff) {
    return `an IPv4-mapped IPv6 address: give the IPv4 address itself (${[...b.subarray(12)].join('.')})`;
  }
  if (b[0] === 0xff) return 'an IPv6 multicast address is not a host address';
  if (b[0] === 0xfe && (b[1] & 0xc0) === 0x80) {
    return 'an IPv6 link-local address (fe80::/10) cannot be a VXLAN endpoint: it is only valid with a zone (%eth0), which VXLAN and the other hosts cannot use; use a global or unique-local (fd00::/8) IPv6 address, or an IPv4 address';
  }
  return undefined;
}
