// An underlay: a Linux bridge inside a network namespace of its own (the
// machine's eth0 may hold an address in the test ranges), which lab hosts are
// plugged into with veth pairs. Nothing on it routes out of the lab.
//
// IPv4 (a CIDR in 192.0.2.0/24, 198.51.100.0/24 or 203.0.113.0/24) or
// IPv6-only (a CIDR in 2001:db8::/32, /64 to /120): the bridge gets the first
// address and hosts the next ones from offset 11, in both families. IPv6
// addresses are added with nodad (usable at once: no duplicate address
// detection to wait for, on a lab bridge where nobody else holds them).
import * as fs from 'node:fs';
import { ipBytes, ipFromBytes } from '../../src/util/ip';
import { deleteNetnsSync, pidsInNetns, killAndWaitSync } from './cleanup';
import { onEmergency } from './emergency';
import { run, runOk, type RunOptions, type RunResult } from './proc';

export const TEST_RANGES = ['192.0.2.0/24', '198.51.100.0/24', '203.0.113.0/24'];
export const TEST_RANGE_IPV6 = '2001:db8::/32';

export function ipToInt(ip: string): number {
  const p = ip.split('.').map(Number);
  if (p.length !== 4 || p.some((x) => !Number.isInteger(x) || x < 0 || x > 255)) throw new Error(`bad IPv4 address ${ip}`);
  return ((p[0]! << 24) | (p[1]! << 16) | (p[2]! << 8) | p[3]!) >>> 0;
}

export function intToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export function parseCidr(cidr: string): { ip: string; prefixLen: number; network: number; size: number } {
  const [ip, len] = cidr.split('/');
  const prefixLen = Number(len);
  if (!ip || !Number.isInteger(prefixLen) || prefixLen < 8 || prefixLen > 30) throw new Error(`bad CIDR ${cidr}`);
  const mask = prefixLen === 0 ? 0 : (0xffffffff << (32 - prefixLen)) >>> 0;
  return { ip, prefixLen, network: (ipToInt(ip) & mask) >>> 0, size: 2 ** (32 - prefixLen) };
}

const v6ToBig = (ip: string): bigint => {
  const b = ipBytes(ip);
  if (!b || b.length !== 16) throw new Error(`bad IPv6 address ${ip}`);
  return BigInt(`0x${b.toString('hex')}`);
};
const bigToV6 = (n: bigint): string => ipFromBytes(Buffer.from(n.toString(16).padStart(32, '0'), 'hex'))!;

/** An IPv6 CIDR of the lab (inside 2001:db8::/32, /64 to /120): its network and the number of usable offsets (at most 65536). */
export function parseCidr6(cidr: string): { ip: string; prefixLen: number; network: bigint; size: number } {
  const [ip, len] = cidr.split('/');
  const prefixLen = Number(len);
  if (!ip || !Number.isInteger(prefixLen) || prefixLen < 64 || prefixLen > 120) throw new Error(`bad IPv6 CIDR ${cidr} (the lab takes /64 to /120)`);
  const n = v6ToBig(ip);
  const hostBits = BigInt(128 - prefixLen);
  const network = (n >> hostBits) << hostBits;
  if (network >> 96n !== 0x20010db8n) throw new Error(`lab: ${cidr} is not in a test range (${TEST_RANGE_IPV6})`);
  return { ip, prefixLen, network, size: Number(hostBits >= 16n ? 65536n : 1n << hostBits) };
}

/** Refuses addresses outside the documentation ranges (the lab's only underlays). */
export function assertTestAddress(cidr: string): void {
  if (cidr.includes(':')) {
    parseCidr6(cidr.includes('/') ? cidr : `${cidr}/64`);
    return;
  }
  const { ip } = parseCidr(cidr.includes('/') ? cidr : `${cidr}/24`);
  const n = ipToInt(ip);
  const ok = TEST_RANGES.some((r) => {
    const p = parseCidr(r);
    return n >= p.network && n < p.network + p.size;
  });
  if (!ok) throw new Error(`lab: ${cidr} is not in a test range (${TEST_RANGES.join(', ')})`);
}

export interface AddHostOptions {
  /** address with prefix, e.g. 192.0.2.11/24 (2001:db8:1::b/64 on an IPv6 underlay); default: the next free one from .11 (::b) */
  address?: string;
  /** MTU of the veth pair; default the underlay's */
  mtu?: number;
  /** interface name inside the host namespace; default eth0 (eth1... when taken) */
  ifname?: string;
  /** MAC of the port's bridge-side end; default random (tests use it to join with a low one) */
  portMac?: string;
}

export interface UnderlayPort {
  host: string;
  /** veth end on the bridge, inside the underlay namespace */
  port: string;
  /** veth end inside the host namespace */
  ifname: string;
  /** with prefix, e.g. 192.0.2.11/24, or 2001:db8:1::b/64 on an IPv6 underlay */
  address: string;
}

export interface Underlay {
  name: string;
  /** /run/netns/NAME */
  netns: string;
  /** 4, or 6 for an IPv6-only underlay (a CIDR in 2001:db8::/32) */
  family: 4 | 6;
  cidr: string;
  prefixLen: number;
  mtu: number;
  bridge: string;
  /** address of the bridge itself (the first host of the range), with prefix */
  bridgeAddress: string;
  ports: Map<string, UnderlayPort>;
  /** Plugs the host namespace `hostNetnsName` into the bridge and gives it an address. */
  addHost(hostNetnsName: string, opts?: AddHostOptions): Promise<UnderlayPort>;
  /** Unplugs a host (deletes its veth pair). */
  removeHost(hostNetnsName: string): Promise<void>;
  /** Next free address (with prefix) without taking it. */
  nextAddress(): string;
  /** Runs a command inside the underlay namespace (never throws on non-zero). */
  exec(cmd: string[], opts?: RunOptions): Promise<RunResult>;
  /** Kills what runs in the namespace and deletes it (ports go with it). Safe to call twice. */
  destroy(): Promise<void>;
}

export interface UnderlayOptions {
  mtu?: number;
}

/**
 * Creates namespace NAME with a bridge `br0` (up, address = first host of
 * the range). `name` must carry the caller's lab prefix (e.g. 'wlab-ul').
 */
export async function createUnderlay(name: string, cidr: string, opts: UnderlayOptions = {}): Promise<Underlay> {
  assertTestAddress(cidr);
  const family: 4 | 6 = cidr.includes(':') ? 6 : 4;
  // Addresses as offsets from the network: the same bookkeeping in both families.
  const p = family === 4 ? parseCidr(cidr) : parseCidr6(cidr);
  const at = (offset: number): string =>
    family === 4 ? intToIp((p.network as number) + offset) : bigToV6((p.network as bigint) + BigInt(offset));
  const offsetOf = (ip: string): number | undefined => {
    if (family === 4) {
      const d = ipToInt(ip) - (p.network as number);
      return d >= 0 && d < p.size ? d : undefined;
    }
    const d = v6ToBig(ip) - (p.network as bigint);
    return d >= 0n && d < BigInt(p.size) ? Number(d) : undefined;
  };
  // No duplicate address detection on the lab's IPv6 addresses: usable at once.
  const nodad = family === 6 ? ['nodad'] : [];
  const mtu = opts.mtu ?? 1500;
  const bridge = 'br0';
  const bridgeAddress = `${at(1)}/${p.prefixLen}`;
  const ports = new Map<string, UnderlayPort>();
  const used = new Set<number>([0, 1, p.size - 1]);
  let portSeq = 0;
  let destroyed: Promise<void> | undefined;

  if (fs.existsSync(`/run/netns/${name}`)) {
    killAndWaitSync(pidsInNetns(name));
    deleteNetnsSync(name);
  }
  const ns = (args: string[]): Promise<RunResult> => runOk('ip', ['-n', name, ...args]);
  const sweep = (): void => {
    killAndWaitSync(pidsInNetns(name));
    deleteNetnsSync(name);
  };
  const unregisterEmergency = onEmergency(sweep);

  const u: Underlay = {
    name,
    netns: `/run/netns/${name}`,
    family,
    cidr,
    prefixLen: p.prefixLen,
    mtu,
    bridge,
    bridgeAddress,
    ports,
    nextAddress(): string {
      for (let i = 11; i < p.size - 1; i++) if (!used.has(i)) return `${at(i)}/${p.prefixLen}`;
      for (let i = 2; i < 11; i++) if (!used.has(i)) return `${at(i)}/${p.prefixLen}`;
      throw new Error(`underlay ${name}: no free address in ${cidr}`);
    },
    async addHost(hostNs: string, o: AddHostOptions = {}): Promise<UnderlayPort> {
      if (ports.has(hostNs)) throw new Error(`underlay ${name}: ${hostNs} is already plugged in`);
      const address = o.address ?? u.nextAddress();
      const [aip, alen] = address.split('/');
      if (!aip || (aip.includes(':') ? 6 : 4) !== family) throw new Error(`underlay ${name}: ${address} is not an IPv${family} address`);
      const n = offsetOf(aip);
      if (n === undefined) throw new Error(`underlay ${name}: ${address} is not in ${cidr}`);
      if (used.has(n)) throw new Error(`underlay ${name}: ${address} is taken`);
      const full = `${at(n)}/${alen ?? p.prefixLen}`;
      let ifname = o.ifname;
      if (!ifname) {
        const r = await run('ip', ['-n', hostNs, '-o', 'link', 'show']);
        const taken = new Set([...r.stdout.matchAll(/^\d+: ([^:@]+)/gm)].map((m) => m[1]));
        for (let i = 0; i < 16 && !ifname; i++) if (!taken.has(`eth${i}`)) ifname = `eth${i}`;
        if (!ifname) throw new Error(`no free ethN name in ${hostNs}`);
      }
      const port = `p${++portSeq}`;
      const linkMtu = String(o.mtu ?? mtu);
      used.add(n);
      try {
        await ns(['link', 'add', port, ...(o.portMac ? ['address', o.portMac] : []), 'mtu', linkMtu, 'type', 'veth', 'peer', 'name', ifname, 'mtu', linkMtu, 'netns', hostNs]);
        await ns(['link', 'set', port, 'master', bridge, 'up']);
        await runOk('ip', ['-n', hostNs, 'addr', 'add', full, 'dev', ifname, ...nodad]);
        await runOk('ip', ['-n', hostNs, 'link', 'set', ifname, 'up']);
      } catch (e) {
        used.delete(n);
        await run('ip', ['-n', name, 'link', 'del', port]);
        throw e;
      }
      const rec: UnderlayPort = { host: hostNs, port, ifname, address: full };
      ports.set(hostNs, rec);
      return rec;
    },
    async removeHost(hostNs: string): Promise<void> {
      const rec = ports.get(hostNs);
      if (!rec) return;
      ports.delete(hostNs);
      const n = offsetOf(rec.address.split('/')[0]!);
      if (n !== undefined) used.delete(n);
      await run('ip', ['-n', name, 'link', 'del', rec.port]);
    },
    exec(cmd: string[], o?: RunOptions): Promise<RunResult> {
      return run('ip', ['netns', 'exec', name, ...cmd], o);
    },
    destroy(): Promise<void> {
      destroyed ??= (async () => {
        sweep();
        ports.clear();
        unregisterEmergency();
      })();
      return destroyed;
    },
  };

  try {
    await runOk('ip', ['netns', 'add', name]);
    await ns(['link', 'set', 'lo', 'up']);
    // A bridge with no address of its own takes the lowest MAC among its ports,
    // so a host plugged in later (with a lower random MAC) would change the
    // MAC behind the bridge address (etcd's, usually) under the hosts that
    // already cached it: the kernel drops their frames to the old MAC, and
    // a host that only waits for etcd's answers (no lease, no watch yet)
    // stays cut off until its neighbour entry expires. A fixed, locally
    // administered MAC from the bridge address, as Docker does for docker0.
    // (IPv6: from the last four bytes of the bridge address.)
    const mac = `02:42:${[...ipBytes(at(1))!.subarray(-4)].map((b) => b.toString(16).padStart(2, '0')).join(':')}`;
    await ns(['link', 'add', bridge, 'address', mac, 'mtu', String(mtu), 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0']);
    await ns(['addr', 'add', bridgeAddress, 'dev', bridge, ...nodad]);
    await ns(['link', 'set', bridge, 'up']);
  } catch (e) {
    await u.destroy();
    throw e;
  }
  return u;
}
