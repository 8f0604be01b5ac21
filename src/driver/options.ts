// Parsing of `docker network create -o key=value` options. They arrive as
// strings in Options["com.docker.network.generic"]; a typo must be an error,
// never a silently ignored setting.

import { errors } from '../errors';
import { toNumber } from '../ipam/cidr';
import { Label, Options } from './labels';

/** Option weft adds when it creates a network that was made on another host. */
export const CLUSTER_NETWORK_OPTION = 'weft.network';

export interface NetworkOptions {
  mtu?: number;
  /** Present on a host's copy of a network created elsewhere. */
  clusterId?: string;
  internal: boolean;
  ipv6: boolean;
  /** false only when Docker (28 and later) asks for an IPv6-only network (`--ipv4=false`) */
  ipv4: boolean;
  /** The user's -o options, kept to recreate the network on other hosts. */
  generic: Record<string, string>;
  /** [wireguard] -o encrypted (Docker's option name; --opt encrypted gives ""); undefined when absent. */
  encrypted?: boolean;
  /** -o mode: 'vxlan' (the default) or 'routed' (unencapsulated between hosts on one underlay segment). */
  mode: NetworkMode;
}

export type NetworkMode = 'vxlan' | 'routed';
export const MODE_OPTION = 'mode';

/** A network's mode from its record's options (absent: vxlan). */
export function networkMode(options: Record<string, string> | undefined): NetworkMode {
  return options?.[MODE_OPTION]?.trim().toLowerCase() === 'routed' ? 'routed' : 'vxlan';
}

/** [wireguard] Docker's own name for an overlay whose traffic between hosts is encrypted. */
export const ENCRYPTED_OPTION = 'encrypted';

const KNOWN = ['mtu', Label.driverMtu, ENCRYPTED_OPTION, MODE_OPTION, CLUSTER_NETWORK_OPTION];

export function parseNetworkOptions(options: Options | null | undefined): NetworkOptions {
  const raw = options?.[Label.generic];
  const generic: Record<string, string> = {};
  if (raw !== undefined && raw !== null) {
    if (typeof raw !== 'object' || Array.isArray(raw)) throw errors.badOption(Label.generic, '(not a map)', 'expected key=value options');
    for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
      if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean') throw errors.badOption(k, '(not a string)', 'expected a string value');
      generic[k] = String(v);
    }
  }
  const out: NetworkOptions = {
    internal: options?.[Label.internal] === true || options?.[Label.internal] === 'true',
    ipv6: options?.[Label.enableIPv6] === true || options?.[Label.enableIPv6] === 'true',
    // Absent before Docker 28: IPv4 is on.
    ipv4: !(options?.[Label.enableIPv4] === false || options?.[Label.enableIPv4] === 'false'),
    generic: {},
    mode: 'vxlan',
  };
  for (const [k, v] of Object.entries(generic)) {
    if (k === 'mtu' || k === Label.driverMtu) {
      out.mtu = parseMtu(k, v);
      out.generic[k] = v;
    } else if (k === ENCRYPTED_OPTION) {
      // [wireguard]
      const v2 = v.trim().toLowerCase();
      if (['', 'true', '1', 'yes', 'on'].includes(v2)) out.encrypted = true;
      else if (['false', '0', 'no', 'off'].includes(v2)) out.encrypted = false;
      else throw errors.badOption(k, v, 'expected nothing (--opt encrypted), true or false');
    } else if (k === MODE_OPTION) {
      const m = v.trim().toLowerCase();
      if (m !== 'vxlan' && m !== 'routed') throw errors.badOption(k, v, 'expected vxlan (the default: every packet between hosts in VXLAN) or routed (unencapsulated between hosts on one underlay segment, VXLAN to the others)');
      out.mode = m;
      out.generic[k] = m;
    } else if (k === CLUSTER_NETWORK_OPTION) {
      if (!/^[0-9a-f]{12,64}$/.test(v)) throw errors.badOption(k, v, 'expected a weft cluster network id (set by weft itself)');
      out.clusterId = v;
    } else if (k.startsWith('com.docker.network.')) {
      // Daemon-wide defaults (default-network-opts) meant for other drivers.
      continue;
    } else {
      throw errors.unknownOption(k, KNOWN.filter((o) => o !== CLUSTER_NETWORK_OPTION));
    }
  }
  return out;
}

export const MTU_MIN = 576;
export const MTU_MAX = 65485;

function parseMtu(name: string, v: string): number {
  if (!/^\d{1,6}$/.test(v.trim())) throw errors.badOption(name, v, `expected a whole number of bytes between ${MTU_MIN} and ${MTU_MAX}`);
  const n = Number(v.trim());
  if (n < MTU_MIN || n > MTU_MAX) throw errors.badOption(name, v, `expected a whole number of bytes between ${MTU_MIN} and ${MTU_MAX}`);
  return n;
}

/** Docker's MAC option in CreateEndpoint is base64 of 6 bytes (Go net.HardwareAddr); the IPAM one is text. */
export function normalizeMac(value: unknown): string | undefined {
  if (typeof value !== 'string' || value === '') return undefined;
  if (/^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$/.test(value)) return value.toLowerCase();
  if (/^[A-Za-z0-9+/]{8}$/.test(value)) {
    const b = Buffer.from(value, 'base64');
    if (b.length === 6) return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
  }
  return undefined;
}

export function isValidUnicastMac(mac: string): boolean {
  if (!/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/.test(mac)) return false;
  const first = parseInt(mac.slice(0, 2), 16);
  return (first & 1) === 0 && mac !== '00:00:00:00:00:00';
}

/** A locally administered unicast MAC derived from the IPv4 address, the way Docker's bridge does (02:42 + address). */
export function macFromIp(ip: string): string {
  return ['02', '42', ...ip.split('.').map((o) => Number(o).toString(16).padStart(2, '0'))].join(':');
}

/** The same for an endpoint with only an IPv6 address: 02:42 + its last 32 bits. */
export function macFromIPv6(ip6: string): string {
  const n = toNumber(ip6) & 0xffffffffn;
  return ['02', '42', ...[24n, 16n, 8n, 0n].map((sh) => Number((n >> sh) & 0xffn).toString(16).padStart(2, '0'))].join(':');
}
