// An underlay: a Linux bridge inside a network namespace of its own (the
// machine's eth0 may hold an address in the test ranges), which lab hosts are
// plugged into with veth pairs. Nothing on it routes out of the lab.
import * as fs from 'node:fs';
import { deleteNetnsSync, pidsInNetns, killAndWaitSync } from './cleanup';
import { onEmergency } from './emergency';
import { run, runOk, type RunOptions, type RunResult } from './proc';

export const TEST_RANGES = ['192.0.2.0/24', '198.51.100.0/24', '203.0.113.0/24'];

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

/** Refuses addresses outside the documentation ranges (the lab's only underlays). */
export function assertTestAddress(cidr: string): void {
  const { ip } = parseCidr(cidr.includes('/') ? cidr : `${cidr}/24`);
  const n = ipToInt(ip);
  const ok = TEST_RANGES.some((r) => {
    const p = parseCidr(r);
    return n >= p.network && n < p.network + p.size;
  });
  if (!ok) throw new Error(`lab: ${cidr} is not in a test range (${TEST_RANGES.join(', ')})`);
}

export interface AddHostOptions {
  /** address with prefix, e.g. 192.0.2.11/24; default: the next free one from .11 */
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
  /** with prefix, e.g. 192.0.2.11/24 */
  address: string;
}

export interface Underlay {
  name: string;
  /** /run/netns/NAME */
  netns: string;
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
  const p = parseCidr(cidr);
  assertTestAddress(cidr);
  const mtu = opts.mtu ?? 1500;
  const bridge = 'br0';
  const bridgeAddress = `${intToIp(p.network + 1)}/${p.prefixLen}`;
  const ports = new Map<string, UnderlayPort>();
  const used = new Set<number>([p.network, p.network + 1, p.network + p.size - 1]);
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
    cidr,
    prefixLen: p.prefixLen,
    mtu,
    bridge,
    bridgeAddress,
    ports,
    nextAddress(): string {
      for (let i = 11; i < p.size - 1; i++) if (!used.has(p.network + i)) return `${intToIp(p.network + i)}/${p.prefixLen}`;
      for (let i = 2; i < 11; i++) if (!used.has(p.network + i)) return `${intToIp(p.network + i)}/${p.prefixLen}`;
      throw new Error(`underlay ${name}: no free address in ${cidr}`);
    },
    async addHost(hostNs: string, o: AddHostOptions = {}): Promise<UnderlayPort> {
      if (ports.has(hostNs)) throw new Error(`underlay ${name}: ${hostNs} is already plugged in`);
      const address = o.address ?? u.nextAddress();
      const a = parseCidr(address.includes('/') ? address : `${address}/${p.prefixLen}`);
      const n = ipToInt(a.ip);
      if (n < p.network || n >= p.network + p.size) throw new Error(`underlay ${name}: ${address} is not in ${cidr}`);
      if (used.has(n)) throw new Error(`underlay ${name}: ${address} is taken`);
      const full = `${a.ip}/${a.prefixLen}`;
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
        await runOk('ip', ['-n', hostNs, 'addr', 'add', full, 'dev', ifname]);
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
      used.delete(ipToInt(rec.address.split('/')[0]!));
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
    const mac = `02:42:${intToIp(p.network + 1).split('.').map((b) => Number(b).toString(16).padStart(2, '0')).join(':')}`;
    await ns(['link', 'add', bridge, 'address', mac, 'mtu', String(mtu), 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0']);
    await ns(['addr', 'add', bridgeAddress, 'dev', bridge]);
    await ns(['link', 'set', bridge, 'up']);
  } catch (e) {
    await u.destroy();
    throw e;
  }
  return u;
}
