// `weft doctor`: checks what weft needs on this host and says what to fix.
//
//   kernel   bridge, veth and VXLAN links can be created (in a throwaway
//            namespace, through the same native addon and netlink adapter as
//            the data plane)
//   store    the store answers (and how fast); which hosts are registered
//   docker   the Docker engine answers at --docker-host
//   plugin   weft serve answers on --socket (a warning only: doctor also
//            serves as a check before weft is started)
//   mtu      the interface holding --advertise-addr has an MTU of at least
//            the overlay MTU (--mtu and every network's -o mtu) plus 50
//            (plus 70 when --advertise-addr is IPv6)
//   vxlan    every other registered host can send VXLAN packets to this
//            host's UDP --vxlan-port (see probe.ts for how)
//
// Exit code 1 when any check fails.
import { networkMode } from '../driver/options';
import { randomBytes } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { DockerClient } from '../agent/docker';
import type { Config } from '../config';
import { errorCode } from '../dataplane/netlink';
import type { Rtnl } from '../dataplane/netlink';
import { isClusterStore, vxlanOverhead } from '../config';
import { canonicalIp, hostPort, ipFamily } from '../util/ip';
import { HostRecord, NetworkRecord, parseKey } from '../store/keys';
import { VERSION } from '../version';
import { STATUS_PATH } from './admin';
import type { OpsContext, ParsedArgs } from './context';
import { json, plural } from './format';
import { PROBE_VNI_MAX, sendProbes } from './probe';
import type { StatusReport } from './types';
import type { WireGuardStatus } from '../wireguard';
import { WG_OVERHEAD_IPV4, WG_OVERHEAD_IPV6 } from '../wireguard';
import { WIREGUARD_PATH, wireguardChecks } from '../wireguard/ops';

export type CheckState = 'ok' | 'warn' | 'fail' | 'skip';

export interface Check {
  name: string;
  state: CheckState;
  detail: string;
  /** What to do, for warn and fail. */
  fix?: string;
}

export interface DoctorReport {
  host: string;
  advertiseAddr?: string;
  checks: Check[];
  /** No check failed. */
  ok: boolean;
}

// ---------------------------------------------------------------- sandbox

/** A throwaway network namespace for test links, pinned under <run-dir>/doctor/. */
class Sandbox {
  private constructor(readonly nsPath: string, readonly ns: Rtnl, private readonly mod: typeof import('../dataplane/netns')) {}

  static async open(runDir: string): Promise<Sandbox> {
    // Loaded here: the native addon is needed only by the checks that use it.
    const mod = await import('../dataplane/netns');
    const dir = path.join(runDir, 'doctor');
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    // Namespaces of earlier runs that were killed before they cleaned up.
    for (const f of fs.readdirSync(dir)) {
      const pid = Number(/^ns-(\d+)-[0-9a-f]+$/.exec(f)?.[1]);
      if (!pid || pid === process.pid || alive(pid)) continue;
      try {
        mod.removeNetns(path.join(dir, f));
      } catch {
        // still in use or not ours: leave it
      }
    }
    const nsPath = path.join(dir, `ns-${process.pid}-${randomBytes(3).toString('hex')}`);
    mod.ensureNetns(nsPath);
    return new Sandbox(nsPath, mod.socketIn(nsPath), mod);
  }

  hostSocket(): Rtnl {
    return this.mod.socketIn();
  }

  withNsFd<T>(fn: (fd: number) => Promise<T>): Promise<T> {
    return this.mod.withNsFd(this.nsPath, fn);
  }

  close(): void {
    try {
      this.mod.removeNetns(this.nsPath);
    } catch {
      // best effort: the file under <run-dir>/doctor/ says what it was
    }
    this.mod.forgetSocket();
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function kernelFix(kind: string, err: unknown): string {
  const code = errorCode(err) ?? '';
  const config = { bridge: 'CONFIG_BRIDGE', veth: 'CONFIG_VETH', vxlan: 'CONFIG_VXLAN' }[kind] ?? kind;
  if (code === 'EPERM' || code === 'EACCES') return 'run weft as root (it needs CAP_NET_ADMIN)';
  if (code === 'EOPNOTSUPP' || code === 'ENOTSUP' || code === 'EINVAL' || code === 'ENODEV') {
    return `load the ${kind} module (modprobe ${kind}) or use a kernel built with ${config}`;
  }
  return `check that the kernel supports ${kind} links (modprobe ${kind}; kernel option ${config})`;
}

async function checkKernel(sb: Sandbox | undefined, sbError: unknown, cfg: Config, localAddr: string): Promise<Check> {
  if (!sb) {
    const msg = (sbError as Error)?.message ?? String(sbError);
    const fix = /native addon/.test(msg) ? 'build the native addon: npm ci (needs python3, make and g++)'
      : /EPERM|permission|not permitted/i.test(msg) ? 'run weft doctor as root' : 'run weft doctor as root on a kernel with network namespaces';
    return { name: 'kernel', state: 'fail', detail: `cannot create a network namespace to test in: ${msg}`, fix };
  }
  const failed: { kind: string; err: unknown }[] = [];
  const tryKind = async (kind: string, create: () => Promise<void>, names: string[]) => {
    try {
      await create();
    } catch (err) {
      failed.push({ kind, err });
    }
    for (const n of names) await sb.ns.delLink(n).catch(() => undefined);
  };
  await tryKind('bridge', () => sb.ns.createBridge('wdoc-br', 1500), ['wdoc-br']);
  await tryKind('veth', () => sb.ns.createVeth({ name: 'wdoc-va', mtu: 1500 }, { name: 'wdoc-vb' }), ['wdoc-va']);
  await tryKind('vxlan', () => sb.ns.createVxlan({ name: 'wdoc-vx', vni: 1, local: localAddr, port: cfg.vxlanPort, mtu: 1450 }), ['wdoc-vx']);
  if (failed.length === 0) return { name: 'kernel', state: 'ok', detail: 'bridge, veth and vxlan links can be created' };
  return {
    name: 'kernel', state: 'fail',
    detail: failed.map((f) => `cannot create a ${f.kind} link: ${(f.err as Error).message}`).join('; '),
    fix: [...new Set(failed.map((f) => kernelFix(f.kind, f.err)))].join('; '),
  };
}

// ---------------------------------------------------------------- store, docker, plugin

interface StoreFacts { hosts: Map<string, HostRecord>; networks: NetworkRecord[] }

async function checkStore(ctx: OpsContext): Promise<{ check: Check; facts?: StoreFacts }> {
  const t0 = process.hrtime.bigint();
  try {
    const list = await ctx.clusterList();
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    const hosts = new Map<string, HostRecord>();
    const networks: NetworkRecord[] = [];
    for (const kv of list.kvs) {
      const k = parseKey(kv.key);
      try {
        if (k?.kind === 'host') hosts.set(k.host, JSON.parse(kv.value) as HostRecord);
        if (k?.kind === 'network') networks.push(JSON.parse(kv.value) as NetworkRecord);
      } catch {
        // an unreadable record: not the doctor's business
      }
    }
    const via = list.source === 'plugin' ? ' (read through the running weft, which holds the embedded store)' : '';
    const who = isClusterStore(ctx.cfg.store) ? `; ${plural(hosts.size, 'host')} registered${hosts.size ? ` (${[...hosts.keys()].join(', ')})` : ''}` : '';
    return {
      check: { name: 'store', state: 'ok', detail: `${ctx.cfg.store} answered in ${Math.round(ms * 10) / 10} ms${via}${who}` },
      facts: { hosts, networks },
    };
  } catch (err) {
    return {
      check: {
        name: 'store', state: 'fail', detail: (err as Error).message,
        fix: isClusterStore(ctx.cfg.store)
          ? `check that etcd runs and that this host reaches it at ${ctx.cfg.store} (address, port, firewall, TLS settings); --store must be what weft serve uses`
          : `check --store and --state-dir (the same as weft serve) and that ${ctx.cfg.stateDir} is readable`,
      },
    };
  }
}

async function checkDocker(cfg: Config): Promise<Check> {
  try {
    const docker = new DockerClient(cfg.dockerHost, 3000);
    const v = await docker.request<{ Version?: string; ApiVersion?: string }>('GET', '/version');
    return { name: 'docker', state: 'ok', detail: `Docker Engine ${v?.Version ?? '?'} (API ${v?.ApiVersion ?? '?'}) answers at ${cfg.dockerHost}` };
  } catch (err) {
    return {
      name: 'docker', state: 'fail', detail: `no Docker engine answers at ${cfg.dockerHost}: ${(err as Error).message}`,
      fix: 'start dockerd, or pass --docker-host with this host\'s Docker API (the same as weft serve); weft creates networks made on other hosts through it',
    };
  }
}

async function checkPlugin(ctx: OpsContext): Promise<Check> {
  try {
    const s = await ctx.adminGet<StatusReport>(STATUS_PATH, 'be checked', 3000);
    if (s.version !== VERSION) {
      return { name: 'plugin', state: 'warn', detail: `weft ${s.version} serves ${ctx.cfg.socket}, but this command is weft ${VERSION}`, fix: 'restart weft serve with this version' };
    }
    if (s.host !== ctx.cfg.hostName) {
      return { name: 'plugin', state: 'warn', detail: `the weft serving ${ctx.cfg.socket} runs as host ${s.host}, this command as ${ctx.cfg.hostName}`, fix: 'pass the same --host-name as weft serve (or neither)' };
    }
    const theirs = storeIdentity(s.store.description);
    const ours = storeIdentity(ctx.cfg.store);
    if (isClusterStore(ctx.cfg.store) && theirs !== ours) {
      return {
        name: 'plugin', state: 'warn', detail: `the weft serving ${ctx.cfg.socket} uses the store ${s.store.description}, this command ${ctx.cfg.store}`,
        fix: 'pass the same --store as weft serve (or set WEFT_STORE for both), or the checks above looked at another cluster',
      };
    }
    return { name: 'plugin', state: 'ok', detail: `weft ${s.version} (pid ${s.pid}) serves ${ctx.cfg.socket}` };
  } catch (err) {
    const msg = (err as Error).message;
    const why = /^cannot reach the local weft: (.*?)\. weft serve must run/.exec(msg)?.[1] ?? msg;
    return { name: 'plugin', state: 'warn', detail: `weft serve does not answer: ${why}`, fix: 'start weft serve on this host (before dockerd), with the same --socket and --host-name' };
  }
}

/** "etcd://a:2379,b:2379" and the store's own description compare equal when they name the same endpoints. */
function storeIdentity(url: string): string {
  const m = /^(etcds?):\/\/(.*)$/.exec(url.trim());
  if (!m) return url.trim();
  return m[2].replace(/\/+$/, '').split(',').map((hp) => (/:\d+$/.test(hp.trim()) ? hp.trim() : `${hp.trim()}:2379`)).sort().join(',');
}

// ---------------------------------------------------------------- mtu

/** The interface of this host's namespace that holds an address (IPv4 or IPv6, compared in canonical form). */
export function interfaceOf(address: string): string | undefined {
  const want = canonicalIp(address);
  for (const [name, addrs] of Object.entries(os.networkInterfaces())) {
    if (addrs?.some((a) => canonicalIp(a.address) === want)) return name;
  }
  return undefined;
}

export function mtuCheck(ifname: string, address: string, underlayMtu: number, overlay: { what: string; mtu: number }[]): Check {
  // VXLAN over IPv6 carries a 40-byte outer header instead of 20.
  const VXLAN_OVERHEAD = vxlanOverhead(address);
  const worst = overlay.reduce((m, o) => (o.mtu > m.mtu ? o : m), overlay[0]);
  const need = worst.mtu + VXLAN_OVERHEAD;
  if (underlayMtu >= need) {
    return { name: 'mtu', state: 'ok', detail: `${ifname} (holding ${address}) has MTU ${underlayMtu}: enough for the overlay MTU ${worst.mtu} (${worst.what}) plus ${VXLAN_OVERHEAD} bytes of VXLAN over IPv${ipFamily(address) ?? 4}` };
  }
  const tooBig = overlay.filter((o) => o.mtu + VXLAN_OVERHEAD > underlayMtu).map((o) => `${o.what} ${o.mtu}`);
  const fit = underlayMtu - VXLAN_OVERHEAD;
  return {
    name: 'mtu', state: 'fail',
    detail: `${ifname} (holding ${address}) has MTU ${underlayMtu}, too small for the overlay MTU (${tooBig.join(', ')}): VXLAN adds ${VXLAN_OVERHEAD} bytes, so it needs ${need}; packets above ${fit} bytes between containers would be dropped`,
    fix: `raise the MTU of ${ifname} (and of the network path between the hosts) to at least ${need}: ip link set dev ${ifname} mtu ${need}; ` +
      `or lower the overlay MTU to ${fit}: weft serve --mtu ${fit} for new networks, docker network create -o mtu=${fit} ... for each one`,
  };
}

async function checkMtu(cfg: Config, address: string | undefined, facts: StoreFacts | undefined, hostSocket: () => Rtnl): Promise<Check> {
  if (!isClusterStore(cfg.store)) return { name: 'mtu', state: 'skip', detail: 'embedded store: one host, no VXLAN, so the underlay MTU does not limit the overlay' };
  if (!address) {
    return { name: 'mtu', state: 'skip', detail: 'no advertise address: neither --advertise-addr nor a registration of this host in the store', fix: 'pass --advertise-addr (the same as weft serve)' };
  }
  const ifname = interfaceOf(address);
  if (!ifname) {
    return {
      name: 'mtu', state: 'fail', detail: `no interface of this host holds ${address}`,
      fix: '--advertise-addr must be an address of this host (ip addr shows them); run weft doctor in the network namespace where weft serve runs',
    };
  }
  const link = await hostSocket().getLink(ifname);
  if (link?.mtu === undefined) return { name: 'mtu', state: 'skip', detail: `cannot read the MTU of ${ifname}` };
  const overlay = [{ what: '--mtu', mtu: cfg.mtu }];
  // [wireguard] an encrypted network's frames are VXLAN over the (IPv4) tunnel, +50, inside WireGuard on the
  // underlay (+60 over IPv4, +80 over IPv6): compared with plain VXLAN on the underlay, that is wg - vxlan more.
  const wgExtra = (ipFamily(address) === 6 ? WG_OVERHEAD_IPV6 : WG_OVERHEAD_IPV4) + 50 - vxlanOverhead(address);
  for (const n of facts?.networks ?? []) {
    if (n.encrypted && n.mtu) overlay.push({ what: `encrypted network ${n.name ?? '?'} (${n.mtu} + ${wgExtra} of WireGuard)`, mtu: n.mtu + wgExtra });
    else if (n.mtu && n.mtu !== cfg.mtu) overlay.push({ what: `network ${n.name ?? '?'}`, mtu: n.mtu });
  }
  return mtuCheck(ifname, address, link.mtu, overlay);
}

// ---------------------------------------------------------------- routed networks

/**
 * [routed] The path routed networks take to each other host: unencapsulated
 * to hosts that publish this host's underlay segment, VXLAN to the others.
 */
export function routedCheck(me: string, facts: StoreFacts | undefined): Check | undefined {
  const routed = (facts?.networks ?? []).filter((n) => networkMode(n.options) === 'routed');
  if (!facts || routed.length === 0) return undefined;
  const mine = facts.hosts.get(me)?.underlay;
  const names = routed.map((n) => n.name ?? '?').join(', ');
  const peers = [...facts.hosts].filter(([h]) => h !== me);
  if (!mine) {
    return {
      name: 'routed', state: 'warn',
      detail: `routed network${routed.length > 1 ? 's' : ''} ${names}: this host publishes no underlay segment, so containers of theirs cannot start here`,
      fix: 'weft serve must run where a link holds --advertise-addr (ip -4 addr shows it), and be weft 0.2 or later',
    };
  }
  const same = peers.filter(([, r]) => r.underlay === mine).map(([h, r]) => `${h} (${r.address})`);
  const other = peers.filter(([, r]) => r.underlay !== mine).map(([h, r]) => `${h} (${r.address}, ${r.underlay ?? 'no segment published'})`);
  return {
    name: 'routed', state: 'ok',
    detail: `routed network${routed.length > 1 ? 's' : ''} ${names} on segment ${mine}: unencapsulated to ${same.length ? same.join(', ') : 'no other host'}; VXLAN to ${other.length ? other.join(', ') : 'no host'}; broadcast and multicast stay on this segment`,
  };
}

// ---------------------------------------------------------------- vxlan reachability

async function checkVxlan(cfg: Config, sb: Sandbox | undefined, address: string | undefined, facts: StoreFacts | undefined): Promise<Check[]> {
  const name = `udp ${cfg.vxlanPort}`;
  if (!isClusterStore(cfg.store)) return [{ name, state: 'skip', detail: 'embedded store: one host, no VXLAN between hosts' }];
  if (!facts) return [{ name, state: 'skip', detail: 'cannot list the other hosts: the store did not answer (see above)' }];
  if (!address) return [{ name, state: 'skip', detail: 'no advertise address to test', fix: 'pass --advertise-addr (the same as weft serve)' }];
  if (cfg.probePort === 0) return [{ name, state: 'skip', detail: '--probe-port is 0: the probe is off' }];
  if (!sb) return [{ name, state: 'skip', detail: 'no test namespace (see the kernel check)' }];
  const peers = [...facts.hosts].filter(([h, r]) => h !== cfg.hostName && r.address).map(([h, r]) => ({ host: h, address: r.address }));
  if (peers.length === 0) return [{ name, state: 'ok', detail: 'no other host is registered: nothing to test' }];

  // One probe device per peer, each with its own VNI, so each packet tells who sent it.
  const host = sb.hostSocket();
  const devices: { host: string; address: string; vni: number; dev: string }[] = [];
  let base = 1 + Math.floor(Math.random() * (PROBE_VNI_MAX - peers.length - 1));
  for (let i = 0; i < peers.length; i++) {
    const dev = `wdp${i}`;
    let created = false;
    for (let attempt = 0; attempt < 5 && !created; attempt++) {
      const vni = base + i;
      try {
        await sb.withNsFd((nsFd) => host.createVxlan({ name: dev, vni, local: address, port: cfg.vxlanPort, mtu: 1450, nsFd }));
        const l = await sb.ns.getLink(dev);
        if (l) await sb.ns.setLink(l.index, dev, { up: true });
        devices.push({ ...peers[i], vni, dev });
        created = true;
      } catch (err) {
        await sb.ns.delLink(dev).catch(() => undefined);
        if (errorCode(err) !== 'EEXIST') {
          return [{
            name, state: 'fail', detail: `cannot open a VXLAN test device on UDP ${cfg.vxlanPort}: ${(err as Error).message}`,
            fix: errorCode(err) === 'EADDRINUSE' ? `another program holds UDP ${cfg.vxlanPort}: stop it or give weft another --vxlan-port (the same on every host)` : 'see the kernel check',
          }];
        }
        base = 1 + Math.floor(Math.random() * (PROBE_VNI_MAX - peers.length - 1)); // VNI taken here: another doctor runs
      }
    }
  }
  const before = new Map<string, number>();
  for (const d of devices) before.set(d.dev, (await sb.ns.linkStats(d.dev))?.rxPackets ?? 0);
  const replies = await sendProbes(address, cfg.probePort, devices.map((d) => ({ host: d.host, address: d.address, vni: d.vni })));
  const arrived = new Set<string>();
  const deadline = Date.now() + 2000;
  const expecting = devices.filter((d) => replies.get(d.host)?.reply?.sent);
  while (Date.now() < deadline) {
    for (const d of expecting) {
      if (((await sb.ns.linkStats(d.dev))?.rxPackets ?? 0) > (before.get(d.dev) ?? 0)) arrived.add(d.host);
    }
    if (expecting.every((d) => arrived.has(d.host))) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  return devices.map((d): Check => {
    const r = replies.get(d.host);
    const who = `${d.host} (${d.address})`;
    if (!r?.reply) {
      return {
        name, state: 'fail',
        detail: `${who} did not answer the probe on UDP ${cfg.probePort} (${r?.error ?? 'no answer'})`,
        fix: `check that weft serve runs on ${d.host} (weft hosts lists it as up), that ${d.address} is reachable from here, and that UDP ${cfg.vxlanPort} and ${cfg.probePort} are open between this host and ${d.host} in both directions (the probe port must be the same on every host)`,
      };
    }
    if (r.reply.vxlanPort !== cfg.vxlanPort) {
      return {
        name, state: 'fail', detail: `${who} sends VXLAN to UDP ${r.reply.vxlanPort}, this host uses ${cfg.vxlanPort}`,
        fix: 'give every host the same --vxlan-port',
      };
    }
    if (!arrived.has(d.host)) {
      return {
        name, state: 'fail',
        detail: `${who} answered, but the VXLAN packet it sent to ${hostPort(address, cfg.vxlanPort)} did not arrive${r.reply.error ? ` (${r.reply.error})` : ''}`,
        fix: `a firewall drops UDP ${cfg.vxlanPort} from ${d.address} to this host: allow it on this host (for example ${d.address.includes(':') ? 'ip6tables' : 'iptables'} -I INPUT -p udp -s ${d.address} --dport ${cfg.vxlanPort} -j ACCEPT) and on any firewall between the hosts`,
      };
    }
    return { name, state: 'ok', detail: `${who} reaches this host on UDP ${cfg.vxlanPort} (VXLAN)` };
  });
}

// ---------------------------------------------------------------- all together

export async function runDoctor(ctx: OpsContext): Promise<DoctorReport> {
  const cfg = ctx.cfg;
  const storeP = checkStore(ctx);
  const dockerP = checkDocker(cfg);
  const pluginP = checkPlugin(ctx);
  const { check: storeCheck, facts } = await storeP;
  const address = cfg.advertiseAddr || facts?.hosts.get(cfg.hostName)?.address || undefined;

  let sb: Sandbox | undefined;
  let sbError: unknown;
  try {
    sb = await Sandbox.open(cfg.runDir);
  } catch (err) {
    sbError = err;
  }
  try {
    const kernel = await checkKernel(sb, sbError, cfg, address ?? '127.0.0.1');
    let mtu: Check;
    try {
      mtu = sb ? await checkMtu(cfg, address, facts, () => sb!.hostSocket()) : { name: 'mtu', state: 'skip', detail: 'netlink is not usable (see the kernel check)' };
    } catch (err) {
      mtu = { name: 'mtu', state: 'fail', detail: `cannot read the underlay MTU: ${(err as Error).message}` };
    }
    const vxlan = await checkVxlan(cfg, sb, address, facts).catch((err: Error): Check[] => [{ name: `udp ${cfg.vxlanPort}`, state: 'fail', detail: err.message }]);
    // [wireguard] which implementation, the running one, the key file, encrypted MTU, a session with every peer
    const wgLocal = await ctx.adminGet<WireGuardStatus>(WIREGUARD_PATH, 'report its WireGuard', 3000).catch((err: Error) => err);
    const wg = await wireguardChecks(cfg, isClusterStore(cfg.store), wgLocal,
      sb?.ns, (facts?.networks ?? []).filter((n) => n.encrypted).map((n) => ({ name: n.name ?? '?', mtu: n.mtu })))
      .catch((err: Error): Check[] => [{ name: 'wireguard', state: 'fail', detail: err.message }]);
    const routed = routedCheck(cfg.hostName, facts);
    const checks = [kernel, storeCheck, await dockerP, await pluginP, mtu, ...vxlan, ...(routed ? [routed] : []), ...wg];
    return { host: cfg.hostName, ...(address ? { advertiseAddr: address } : {}), checks, ok: !checks.some((c) => c.state === 'fail') };
  } finally {
    sb?.close();
  }
}

export function renderDoctor(r: DoctorReport): string {
  const label: Record<CheckState, string> = { ok: 'ok', warn: 'warn', fail: 'FAIL', skip: 'skip' };
  const width = Math.max(...r.checks.map((c) => c.name.length));
  let out = `weft doctor on ${r.host}${r.advertiseAddr ? ` (${r.advertiseAddr})` : ''}\n`;
  for (const c of r.checks) {
    out += `${label[c.state].padEnd(5)} ${c.name.padEnd(width)}  ${c.detail}\n`;
    if (c.fix && c.state !== 'ok') out += `${''.padEnd(5)} ${''.padEnd(width)}  fix: ${c.fix}\n`;
  }
  const failed = r.checks.filter((c) => c.state === 'fail').length;
  const warned = r.checks.filter((c) => c.state === 'warn').length;
  out += failed ? `${plural(failed, 'problem')} found: see the fix lines above\n`
    : warned ? `no problem found (${plural(warned, 'warning')})\n` : 'no problem found\n';
  return out;
}

export async function doctorCommand(ctx: OpsContext, a: ParsedArgs): Promise<{ stdout: string; code: number }> {
  const r = await runDoctor(ctx);
  return { stdout: a.flags.has('json') ? json(r) : renderDoctor(r), code: r.ok ? 0 : 1 };
}
