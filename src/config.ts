// Settings: one table, read from (lowest to highest precedence) built-in
// defaults, a JSON settings file (--config / WEFT_CONFIG), environment
// variables (WEFT_*) and command-line flags. `weft --help` is generated from
// the same table, so the documentation cannot drift from the parser.

import * as fs from 'fs';
import * as os from 'os';
import { parseTunnelSubnet } from './wireguard/tunnel';
import { parseSubnet6 } from './ipam/cidr';
import { canonicalIp, ipFamily, underlayAddressProblem } from './util/ip';

export interface Config {
  socket: string;
  store: string;
  stateDir: string;
  runDir: string;
  logLevel: string;
  hostName: string;
  advertiseAddr: string;
  dockerHost: string;
  defaultPool: string;
  defaultPoolSize: number;
  defaultPoolV6: string;
  mtu: number;
  vxlanPort: number;
  leaseTtl: number;
  peerTimeout: number;
  reconcileInterval: number;
  peerAuditInterval: number;
  storeTimeout: number;
  gcGrace: number;
  bodyLimit: number;
  etcdCa: string;
  etcdCert: string;
  etcdKey: string;
  etcdUser: string;
  etcdPassword: string;
  pluginName: string;
  config: string;
  metricsAddr: string;
  probePort: number;
  dnsAddr: string;
  dnsForward: string;
  dnsResolvConf: string;
  // [wireguard] encrypted networks (src/wireguard)
  encryption: string;
  wireguard: string;
  wireguardGo: string;
  wgInterface: string;
  wgPort: number;
  wgSubnet: string;
}

type Kind = 'string' | 'int';

/** Bytes VXLAN adds to each frame on the underlay: outer IPv4 20 (IPv6 40) + UDP 8 + VXLAN 8 + inner Ethernet 14. */
export const VXLAN_OVERHEAD_IPV4 = 50;
export const VXLAN_OVERHEAD_IPV6 = 70;
/** The default --mtu: a 1500-byte underlay minus VXLAN's overhead in the underlay's family. */
export const DEFAULT_MTU_IPV4 = 1500 - VXLAN_OVERHEAD_IPV4;
export const DEFAULT_MTU_IPV6 = 1500 - VXLAN_OVERHEAD_IPV6;

/** VXLAN's overhead over an underlay of this address's family (IPv4 when there is none). */
export function vxlanOverhead(advertiseAddr: string | undefined): number {
  return advertiseAddr && ipFamily(advertiseAddr) === 6 ? VXLAN_OVERHEAD_IPV6 : VXLAN_OVERHEAD_IPV4;
}

interface Setting {
  key: keyof Config;
  flag: string;
  env: string;
  kind: Kind;
  default: string | number | (() => string);
  help: string;
  min?: number;
  max?: number;
  secret?: boolean;
}

export const SETTINGS: Setting[] = [
  { key: 'socket', flag: 'socket', env: 'WEFT_SOCKET', kind: 'string', default: '/run/docker/plugins/weft.sock',
    help: 'unix socket Docker calls; its file name (without .sock) is the driver name' },
  { key: 'store', flag: 'store', env: 'WEFT_STORE', kind: 'string', default: '',
    help: 'where state lives: file:/path (embedded, one host) or etcd://host:2379[,host:2379] (etcds:// for TLS); empty = file:<state-dir>' },
  { key: 'stateDir', flag: 'state-dir', env: 'WEFT_STATE_DIR', kind: 'string', default: '/var/lib/weft',
    help: 'directory for the embedded store and local state' },
  { key: 'runDir', flag: 'run-dir', env: 'WEFT_RUN_DIR', kind: 'string', default: '/run/weft',
    help: 'directory for per-network namespaces (pinned by bind mounts; lost at reboot, rebuilt from the store)' },
  { key: 'logLevel', flag: 'log-level', env: 'WEFT_LOG_LEVEL', kind: 'string', default: 'info',
    help: 'fatal, error, warn, info, debug or trace' },
  { key: 'hostName', flag: 'host-name', env: 'WEFT_HOST_NAME', kind: 'string', default: () => os.hostname(),
    help: "this host's name in the cluster; must be unique and stable" },
  { key: 'advertiseAddr', flag: 'advertise-addr', env: 'WEFT_ADVERTISE_ADDR', kind: 'string', default: '',
    help: "this host's underlay address, IPv4 or IPv6 (VXLAN endpoint; every host of a cluster in the same family); required with an etcd store" },
  { key: 'dockerHost', flag: 'docker-host', env: 'WEFT_DOCKER_HOST', kind: 'string', default: 'unix:///var/run/docker.sock',
    help: 'Docker Engine API of this host, used (never from inside a driver call) to create networks made on other hosts' },
  { key: 'defaultPool', flag: 'default-pool', env: 'WEFT_DEFAULT_POOL', kind: 'string', default: '10.213.0.0/16',
    help: 'range that subnets are carved from when docker network create has no --subnet' },
  { key: 'defaultPoolSize', flag: 'default-pool-size', env: 'WEFT_DEFAULT_POOL_SIZE', kind: 'int', default: 24, min: 8, max: 30,
    help: 'prefix length of subnets carved from --default-pool' },
  { key: 'defaultPoolV6', flag: 'default-pool-v6', env: 'WEFT_DEFAULT_POOL_V6', kind: 'string', default: 'fd77:eef0:77::/48',
    help: 'IPv6 range (a ULA prefix, /64 or larger) that /64 subnets are carved from for --ipv6 networks without an IPv6 --subnet' },
  { key: 'mtu', flag: 'mtu', env: 'WEFT_MTU', kind: 'int', default: DEFAULT_MTU_IPV4, min: 576, max: 65485,
    help: `default MTU of network links (underlay MTU minus 50 for VXLAN over IPv4, minus 70 over IPv6: ${DEFAULT_MTU_IPV6} when --advertise-addr is IPv6 and --mtu is not given); -o mtu=N overrides per network` },
  { key: 'vxlanPort', flag: 'vxlan-port', env: 'WEFT_VXLAN_PORT', kind: 'int', default: 4789, min: 1, max: 65535,
    help: 'UDP port of VXLAN traffic between hosts' },
  { key: 'leaseTtl', flag: 'lease-ttl', env: 'WEFT_LEASE_TTL', kind: 'int', default: 10, min: 2, max: 300,
    help: 'seconds a host may go without renewing its registration in the store; then the other hosts check it over the underlay (see --peer-timeout)' },
  { key: 'peerTimeout', flag: 'peer-timeout', env: 'WEFT_PEER_TIMEOUT', kind: 'int', default: 5, min: 1, max: 300,
    help: 'seconds a host whose lease expired may fail to answer probes over the underlay (--probe-port) before it leaves the forwarding tables; while it answers it stays' },
  { key: 'reconcileInterval', flag: 'reconcile-interval', env: 'WEFT_RECONCILE_INTERVAL', kind: 'int', default: 10, min: 1, max: 3600,
    help: 'seconds between full comparisons of kernel state with the store (repairs drift)' },
  { key: 'peerAuditInterval', flag: 'peer-audit-interval', env: 'WEFT_PEER_AUDIT_INTERVAL', kind: 'int', default: 60, min: 1, max: 86400,
    help: 'seconds between reads of the VXLAN forwarding tables (FDB and neighbours) back from the kernel, at a reconcile, to repair entries changed by hand; between them the reconcile programs peers from what weft remembers' },
  { key: 'storeTimeout', flag: 'store-timeout', env: 'WEFT_STORE_TIMEOUT', kind: 'int', default: 5000, min: 100, max: 600000,
    help: 'milliseconds after which a store request fails (so docker never hangs on an unreachable etcd)' },
  { key: 'gcGrace', flag: 'gc-grace', env: 'WEFT_GC_GRACE', kind: 'int', default: 60, min: 1, max: 86400,
    help: 'seconds an endpoint, address or pool Docker no longer knows is kept before weft releases it (after dockerd or weft crashes)' },
  { key: 'bodyLimit', flag: 'body-limit', env: 'WEFT_BODY_LIMIT', kind: 'int', default: 1048576, min: 1024, max: 67108864,
    help: 'largest request body accepted on the plugin socket, in bytes' },
  { key: 'etcdCa', flag: 'etcd-ca', env: 'WEFT_ETCD_CA', kind: 'string', default: '',
    help: 'CA certificate file for etcd TLS' },
  { key: 'etcdCert', flag: 'etcd-cert', env: 'WEFT_ETCD_CERT', kind: 'string', default: '',
    help: 'client certificate file for etcd TLS' },
  { key: 'etcdKey', flag: 'etcd-key', env: 'WEFT_ETCD_KEY', kind: 'string', default: '',
    help: 'client key file for etcd TLS' },
  { key: 'etcdUser', flag: 'etcd-user', env: 'WEFT_ETCD_USER', kind: 'string', default: '',
    help: 'etcd user name (with --etcd-password)' },
  { key: 'etcdPassword', flag: 'etcd-password', env: 'WEFT_ETCD_PASSWORD', kind: 'string', default: '', secret: true,
    help: 'etcd password (prefer the environment variable: flags show up in ps)' },
  { key: 'pluginName', flag: 'plugin-name', env: 'WEFT_PLUGIN_NAME', kind: 'string', default: '',
    help: 'driver name users type after -d (default: the socket file name; weft:latest for the managed plugin)' },
  { key: 'metricsAddr', flag: 'metrics-addr', env: 'WEFT_METRICS_ADDR', kind: 'string', default: '',
    help: 'HOST:PORT of an HTTP listener serving Prometheus metrics at /metrics and a health check at /healthz; empty = off' },
  { key: 'probePort', flag: 'probe-port', env: 'WEFT_PROBE_PORT', kind: 'int', default: 4790, min: 0, max: 65535,
    help: 'UDP port (on --advertise-addr) where weft answers the probes of other hosts (is this host alive while its lease is gone?) and of `weft doctor` (VXLAN reachability); the same on every host; 0 = off' },
  { key: 'dnsAddr', flag: 'dns-addr', env: 'WEFT_DNS_ADDR', kind: 'string', default: '169.254.53.53:53',
    help: 'IPv4:PORT where weft answers DNS for container names across hosts (weft adds the address to lo); containers use it through --dns or the daemon\'s "dns"; off = no DNS server' },
  { key: 'dnsForward', flag: 'dns-forward', env: 'WEFT_DNS_FORWARD', kind: 'string', default: 'on',
    help: 'on: names that are not weft\'s go to the nameservers of --dns-resolv-conf; off: they are refused (Docker then asks its next DNS server)' },
  { key: 'dnsResolvConf', flag: 'dns-resolv-conf', env: 'WEFT_DNS_RESOLV_CONF', kind: 'string', default: '/etc/resolv.conf',
    help: 'resolv.conf whose nameservers weft forwards other names to (re-read when it changes)' },
  // [wireguard] encrypted networks (src/wireguard); the same values on every host
  { key: 'encryption', flag: 'encryption', env: 'WEFT_ENCRYPTION', kind: 'string', default: 'on-request',
    help: 'on-request: networks created with -o encrypted go through WireGuard between hosts; all: every network created from now on does; off: no WireGuard on this host (encrypted networks cannot use it)' },
  { key: 'wireguard', flag: 'wireguard', env: 'WEFT_WIREGUARD', kind: 'string', default: 'auto',
    help: 'which WireGuard: auto (the kernel module if the kernel has it, else wireguard-go), kernel, or userspace (wireguard-go)' },
  { key: 'wireguardGo', flag: 'wireguard-go', env: 'WEFT_WIREGUARD_GO', kind: 'string', default: 'wireguard-go',
    help: 'the userspace WireGuard binary, looked up in PATH unless it is a path' },
  { key: 'wgInterface', flag: 'wg-interface', env: 'WEFT_WG_INTERFACE', kind: 'string', default: 'wg-weft',
    help: "name of this host's WireGuard interface (in weft's own namespace, <run-dir>/wireguard/netns)" },
  { key: 'wgPort', flag: 'wg-port', env: 'WEFT_WG_PORT', kind: 'int', default: 51820, min: 1, max: 65535,
    help: 'UDP port of WireGuard between hosts, on every address of this host' },
  { key: 'wgSubnet', flag: 'wg-subnet', env: 'WEFT_WG_SUBNET', kind: 'string', default: '100.64.0.0/16',
    help: "range of the hosts' tunnel addresses (one per host, only inside weft's WireGuard namespace; never routed on the host)" },
  { key: 'config', flag: 'config', env: 'WEFT_CONFIG', kind: 'string', default: '',
    help: 'JSON settings file: keys are the flag names, e.g. {"store": "etcd://10.0.0.1:2379", "log-level": "debug"}' },
];

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

function coerce(s: Setting, raw: unknown, source: string): string | number {
  if (s.kind === 'string') {
    if (typeof raw !== 'string' && typeof raw !== 'number') throw new ConfigError(`${source}: ${s.flag} must be a string`);
    return String(raw);
  }
  const n = typeof raw === 'number' ? raw : /^-?\d+$/.test(String(raw).trim()) ? Number(String(raw).trim()) : NaN;
  if (!Number.isInteger(n)) throw new ConfigError(`${source}: ${s.flag} must be a whole number, got "${String(raw)}"`);
  if ((s.min !== undefined && n < s.min) || (s.max !== undefined && n > s.max)) {
    throw new ConfigError(`${source}: ${s.flag} must be between ${s.min} and ${s.max}, got ${n}`);
  }
  return n;
}

export interface LoadOptions {
  /** false for operator commands, which learn the address from the store when they need it (default true). */
  requireAdvertiseAddr?: boolean;
}

/**
 * Resolve settings. `argv` holds only flags (`--name value` or `--name=value`);
 * unknown flags are an error so that a typo never silently falls back to a default.
 */
export function loadConfig(argv: string[], env: NodeJS.ProcessEnv = process.env, opts: LoadOptions = {}): Config {
  const flags = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith('--')) throw new ConfigError(`unexpected argument "${arg}" (see weft --help)`);
    const eq = arg.indexOf('=');
    const name = eq > 0 ? arg.slice(2, eq) : arg.slice(2);
    const setting = SETTINGS.find((s) => s.flag === name);
    if (!setting) throw new ConfigError(`unknown flag --${name} (see weft --help)`);
    let value: string | undefined;
    if (eq > 0) value = arg.slice(eq + 1);
    else {
      value = argv[++i];
      if (value === undefined) throw new ConfigError(`flag --${name} needs a value`);
    }
    flags.set(name, value);
  }

  const configPath = flags.get('config') ?? env.WEFT_CONFIG ?? '';
  let file: Record<string, unknown> = {};
  if (configPath) {
    let text: string;
    try {
      text = fs.readFileSync(configPath, 'utf8');
    } catch (e) {
      throw new ConfigError(`cannot read settings file ${configPath}: ${(e as Error).message}`);
    }
    try {
      const parsed: unknown = JSON.parse(text);
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('not a JSON object');
      file = parsed as Record<string, unknown>;
    } catch (e) {
      throw new ConfigError(`settings file ${configPath} is not valid: ${(e as Error).message}`);
    }
    for (const k of Object.keys(file)) {
      if (!SETTINGS.some((s) => s.flag === k)) throw new ConfigError(`settings file ${configPath}: unknown key "${k}" (keys are flag names, see weft --help)`);
    }
  }

  const out: Record<string, string | number> = {};
  const given = new Set<keyof Config>();
  for (const s of SETTINGS) {
    let value: string | number = typeof s.default === 'function' ? s.default() : s.default;
    if (s.flag in file) { value = coerce(s, file[s.flag], `settings file ${configPath}`); given.add(s.key); }
    const e = env[s.env];
    if (e !== undefined && e !== '') { value = coerce(s, e, `environment variable ${s.env}`); given.add(s.key); }
    const f = flags.get(s.flag);
    if (f !== undefined) { value = coerce(s, f, `flag --${s.flag}`); given.add(s.key); }
    out[s.key] = value;
  }
  const cfg = out as unknown as Config;
  if (!cfg.store) cfg.store = `file:${cfg.stateDir}`;
  validate(cfg, opts);
  // One text per address: the form the kernel and the other hosts give back.
  if (cfg.advertiseAddr) cfg.advertiseAddr = canonicalIp(cfg.advertiseAddr) ?? cfg.advertiseAddr;
  // VXLAN over IPv6 costs 20 bytes more: the default overlay MTU follows the underlay's family.
  if (!given.has('mtu') && ipFamily(cfg.advertiseAddr) === 6) cfg.mtu = DEFAULT_MTU_IPV6;
  return cfg;
}

function validate(cfg: Config, opts: LoadOptions = {}): void {
  if (!['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].includes(cfg.logLevel)) {
    throw new ConfigError(`log-level must be one of fatal, error, warn, info, debug, trace; got "${cfg.logLevel}"`);
  }
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/.test(cfg.hostName)) {
    throw new ConfigError(`host-name "${cfg.hostName}" is not usable: use letters, digits, '.', '-' and '_' (at most 63)`);
  }
  if (cfg.advertiseAddr) {
    const why = underlayAddressProblem(cfg.advertiseAddr);
    if (why) throw new ConfigError(`advertise-addr "${cfg.advertiseAddr}" is not usable: ${why}`);
  }
  if (isClusterStore(cfg.store) && !cfg.advertiseAddr && opts.requireAdvertiseAddr !== false) {
    throw new ConfigError('an etcd store needs --advertise-addr (this host\'s underlay IPv4 or IPv6 address, which other hosts send VXLAN traffic to)');
  }
  if ((cfg.etcdCert === '') !== (cfg.etcdKey === '')) {
    throw new ConfigError('--etcd-cert and --etcd-key go together: give both or neither');
  }
  if ((cfg.etcdUser === '') !== (cfg.etcdPassword === '')) {
    throw new ConfigError('--etcd-user and --etcd-password go together: give both or neither');
  }
  let v6: { prefix: number } | undefined;
  try {
    v6 = parseSubnet6(cfg.defaultPoolV6);
  } catch (e) {
    throw new ConfigError(`default-pool-v6: ${(e as Error).message}`);
  }
  if (v6.prefix > 64) throw new ConfigError(`default-pool-v6 ${cfg.defaultPoolV6} is smaller than a /64: weft carves /64 subnets from it; use a /48 ULA prefix such as fd77:eef0:77::/48`);
  if (cfg.dnsAddr !== 'off' && cfg.dnsAddr !== '') parseDnsAddr(cfg.dnsAddr);
  if (!['on', 'off'].includes(cfg.dnsForward)) {
    throw new ConfigError(`dns-forward must be on or off, got "${cfg.dnsForward}"`);
  }
  // [wireguard]
  if (cfg.wgPort === cfg.vxlanPort || cfg.wgPort === cfg.probePort) {
    throw new ConfigError(`wg-port ${cfg.wgPort} is also --${cfg.wgPort === cfg.vxlanPort ? 'vxlan-port' : 'probe-port'}: give WireGuard a port of its own (the default is 51820)`);
  }
  if (!['on-request', 'all', 'off'].includes(cfg.encryption)) {
    throw new ConfigError(`encryption must be on-request, all or off, got "${cfg.encryption}"`);
  }
  if (!['auto', 'kernel', 'userspace'].includes(cfg.wireguard)) {
    throw new ConfigError(`wireguard must be auto, kernel or userspace, got "${cfg.wireguard}"`);
  }
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$/.test(cfg.wgInterface)) {
    throw new ConfigError(`wg-interface "${cfg.wgInterface}" is not an interface name: 1 to 15 letters, digits, '.', '-' or '_'`);
  }
  try {
    parseTunnelSubnet(cfg.wgSubnet);
  } catch (e) {
    throw new ConfigError((e as Error).message);
  }
  if (cfg.metricsAddr && !/^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/.test(cfg.metricsAddr)) {
    throw new ConfigError(`metrics-addr "${cfg.metricsAddr}" is not HOST:PORT (for example 127.0.0.1:9464)`);
  }
}

/** --dns-addr as host and port (port 53 when left out); undefined when DNS is off. Throws ConfigError when unusable. */
export function parseDnsAddr(value: string): { host: string; port: number } | undefined {
  if (value === 'off' || value === '') return undefined;
  const m = /^(\d{1,3}(?:\.\d{1,3}){3})(?::(\d{1,5}))?$/.exec(value);
  const port = m ? Number(m[2] ?? 53) : NaN;
  if (!m || m[1].split('.').some((x) => Number(x) > 255) || !(port >= 1 && port <= 65535)) {
    throw new ConfigError(`dns-addr "${value}" is not IPv4:PORT (for example 169.254.53.53:53), or off`);
  }
  return { host: m[1], port };
}

export function isClusterStore(store: string): boolean {
  return store.startsWith('etcd://') || store.startsWith('etcds://');
}

/** The name users type after -d and --ipam-driver. */
export function driverName(cfg: Config): string {
  if (cfg.pluginName) return cfg.pluginName;
  const base = cfg.socket.split('/').pop() ?? 'weft.sock';
  return base.replace(/\.sock$/, '');
}

/** Settings for logs: secrets masked. */
export function redacted(cfg: Config): Record<string, unknown> {
  const out: Record<string, unknown> = { ...cfg };
  for (const s of SETTINGS) if (s.secret && out[s.key]) out[s.key] = '***';
  out.store = String(cfg.store).replace(/\/\/[^@/]*@/, '//***@');
  return out;
}

export function helpText(): string {
  const lines = [
    'weft: multi-host overlay networks for Docker (network + IPAM plugin)',
    '',
    'Usage:',
    '  weft serve [flags]     run the plugin on this host',
    '  weft status            this host: store, lease, networks, endpoints, peer drift, last reconcile',
    '  weft hosts             the cluster\'s hosts (from the store)',
    '  weft networks          the cluster\'s weft networks',
    '  weft endpoints [NET]   every endpoint on every host: host, container, IP, MAC',
    '  weft host rm NAME      release everything a host that is gone for good held (--yes skips the question)',
    '  weft host rotate-key   give this host a new WireGuard key pair (encrypted networks); peers follow within seconds',
    '  weft doctor            check kernel, MTU, UDP reachability between hosts, Docker and the store',
    '                         (these take the same flags as serve, plus --json for scripts)',
    '  weft version           print the version',
    '  weft --help            this text',
    '',
    'Flags (each also read from its environment variable, and from the --config file; flags win):',
  ];
  for (const s of SETTINGS) {
    const def = typeof s.default === 'function' ? '(this host\'s name)' : s.default === '' ? '' : String(s.default);
    lines.push(`  --${s.flag} ${s.kind === 'int' ? 'N' : 'VALUE'}`.padEnd(34) + `${s.env}`);
    lines.push(`      ${s.help}${def ? ` [default: ${def}]` : ''}`);
  }
  return lines.join('\n') + '\n';
}
