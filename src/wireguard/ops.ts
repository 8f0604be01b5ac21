// [wireguard] What the operator commands show of WireGuard: the lines of
// `weft status`, the columns of `weft hosts`, the `weft doctor` check and the
// metrics. Kept here so that src/ops only calls in.
import type { Config } from '../config';
import { errorCode } from '../dataplane/netlink';
import type { Rtnl } from '../dataplane/netlink';
import type { Registry } from '../ops/metrics';
import type { HostRecord } from '../store/keys';
import { shortKey } from './keys';
import { SESSION_LIFETIME_MS, VXLAN_OVERHEAD, WG_OVERHEAD_IPV4, WG_OVERHEAD_IPV6, WireGuard, WireGuardStatus } from './index';
import { wireguardGoVersion } from './userspace';

/** GET: this host's WireGuard (WireGuardStatus), on the plugin socket. */
export const WIREGUARD_PATH = '/weft/v1/wireguard';

export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

export function handshakeAge(seconds: number | undefined): string {
  if (seconds === undefined) return 'never';
  if (seconds < 120) return `${Math.round(seconds)} s ago`;
  return `${Math.round(seconds / 60)} min ago`;
}

/** The `wireguard` line of `weft status`. */
export function wireguardLine(s: WireGuardStatus): string {
  const peers = s.peers.filter((p) => p.expected);
  const up = peers.filter((p) => p.up).length;
  const what = `${s.implementation ?? 'WireGuard'}${s.pid ? `, pid ${s.pid}` : ''}, interface ${s.interface}` +
    `${s.tunnel ? ` (tunnel ${s.tunnel}` : ' ('}${s.tunnel ? ', ' : ''}UDP ${s.listenPort}), key ${shortKey(s.publicKey)}`;
  if (!s.ready) return `DOWN: ${s.error ?? 'not set up yet'}; ${what}`;
  const missing = s.missing.length ? `; ${s.missing.length} missing (${s.missing.map((m) => m.host).join(', ')})` : '';
  return `up: ${what}; ${peers.length} peer${peers.length === 1 ? '' : 's'}, ${up} with a live session${missing}`;
}

/** The WIREGUARD PEERS rows of `weft status`. */
export function peerRows(s: WireGuardStatus): string[][] {
  const rows = s.peers.map((p) => [
    p.host ?? `(unknown ${shortKey(p.publicKey)})`, p.endpoint ?? '-', p.tunnel ?? '-', handshakeAge(p.handshakeAgeSeconds),
    bytes(p.rxBytes), bytes(p.txBytes), !p.expected ? 'stale' : p.up ? 'up' : 'no session',
  ]);
  for (const m of s.missing) rows.push([m.host, '-', '-', 'never', '-', '-', 'missing']);
  return rows;
}

export const PEER_HEADERS = ['HOST', 'ENDPOINT', 'TUNNEL', 'HANDSHAKE', 'RX', 'TX', 'STATE'];

export interface HostEncryption {
  /** self: this host; up / no session: seen from this host's WireGuard; published: the host publishes a key but this host's view is unknown; none: no WireGuard */
  state: 'self' | 'up' | 'no session' | 'published' | 'none' | 'down';
  publicKey?: string;
  endpoint?: string;
  tunnel?: string;
  implementation?: string;
  handshakeAgeSeconds?: number;
  rxBytes?: number;
  txBytes?: number;
}

/** Per host, its encryption as the store and this host's WireGuard see it. */
export function hostEncryption(name: string, rec: HostRecord | undefined, me: string, local?: WireGuardStatus): HostEncryption {
  const w = rec?.wg;
  if (!w) return { state: 'none' };
  const base = { publicKey: w.publicKey, endpoint: w.endpoint, tunnel: w.tunnel, implementation: w.implementation };
  if (name === me) return { ...base, state: local && !local.ready ? 'down' : 'self' };
  const p = local?.peers.find((x) => x.publicKey === w.publicKey);
  if (!local || !p) return { ...base, state: 'published' };
  return {
    ...base, state: p.up ? 'up' : 'no session',
    ...(p.handshakeAgeSeconds !== undefined ? { handshakeAgeSeconds: p.handshakeAgeSeconds } : {}),
    rxBytes: p.rxBytes, txBytes: p.txBytes,
  };
}

export interface Check { name: string; state: 'ok' | 'warn' | 'fail' | 'skip'; detail: string; fix?: string }

/**
 * `weft doctor`'s wireguard check. `local`: the running weft's WireGuard (or
 * why it could not be read); `sandbox`: a throwaway namespace's socket, to
 * ask the kernel whether it has WireGuard.
 */
export async function wireguardChecks(cfg: Config, cluster: boolean, local: WireGuardStatus | Error | undefined, sandbox: Rtnl | undefined,
  encryptedNetworks: { name: string; mtu: number }[]): Promise<Check[]> {
  const name = 'wireguard';
  if (!cluster) return [{ name, state: 'skip', detail: 'one host (embedded store): nothing is encrypted between hosts' }];
  if (cfg.encryption === 'off') {
    return [{
      name, state: encryptedNetworks.length ? 'fail' : 'skip',
      detail: `--encryption off${encryptedNetworks.length ? `, but the cluster has encrypted networks (${encryptedNetworks.map((n) => n.name).join(', ')}): this host cannot take part in them` : ''}`,
      ...(encryptedNetworks.length ? { fix: 'run weft serve with --encryption on-request (the default) on this host' } : {}),
    }];
  }
  // Which implementation this host can use.
  let kernel: string | undefined;
  if (sandbox) {
    try {
      await sandbox.createPlainLink('wdoc-wg', 'wireguard');
      kernel = 'the kernel has WireGuard';
    } catch (err) {
      kernel = ['EOPNOTSUPP', 'ENOTSUP'].includes(errorCode(err) ?? '') ? undefined : `cannot tell whether the kernel has WireGuard (${(err as Error).message})`;
    }
    await sandbox.delLink('wdoc-wg').catch(() => false);
  }
  let userspace: string | Error;
  try {
    userspace = await wireguardGoVersion(cfg.wireguardGo);
  } catch (err) {
    userspace = err as Error;
  }
  const available = kernel === 'the kernel has WireGuard' ? 'kernel module'
    : typeof userspace === 'string' ? `${userspace} (userspace; this kernel has no WireGuard module)` : undefined;
  const checks: Check[] = [];
  // Without encrypted networks in the cluster, a host that cannot do WireGuard only warns.
  const severity = encryptedNetworks.length ? 'fail' : 'warn';
  if (!local || local instanceof Error) {
    if (!available) {
      checks.push({
        name, state: severity, detail: `no WireGuard on this host: the kernel has no WireGuard module and ${(userspace as Error).message}`,
        fix: 'install wireguard-go (Debian: apt-get install wireguard-go) or load the kernel module (modprobe wireguard), then restart weft serve',
      });
    } else {
      checks.push({
        name, state: 'warn', detail: `${available} is available, but the running weft's WireGuard could not be read${local ? `: ${local.message}` : ''}`,
        fix: 'start weft serve on this host (with the same --socket); it sets WireGuard up',
      });
    }
    return checks;
  }
  const s = local;
  if (!s.ready) {
    checks.push({
      name, state: severity, detail: `WireGuard is down on this host: ${s.error ?? 'not set up yet'} (encrypted traffic to and from this host stops: fail closed)`,
      fix: available ? `see weft's log; weft retries every few seconds (${available} is available)` : 'install wireguard-go (apt-get install wireguard-go) or use a kernel with the WireGuard module',
    });
  } else {
    checks.push({
      name, state: 'ok',
      detail: `${s.implementation}${s.pid ? ` (pid ${s.pid})` : ''}: interface ${s.interface} up in ${s.netns}, tunnel ${s.tunnel}, UDP ${s.listenPort}, key ${shortKey(s.publicKey)}`,
    });
  }
  if (s.keyFileMode !== undefined && s.keyFileMode !== '600') {
    checks.push({
      name: 'wg key', state: 'fail', detail: `${s.keyFile} has mode ${s.keyFileMode}: the private key must be readable by root only`,
      fix: `chmod 600 ${s.keyFile}; if anyone else may have read it, give this host a new key: weft host rotate-key`,
    });
  } else if (s.keyFileMode !== undefined) {
    checks.push({ name: 'wg key', state: 'ok', detail: `${s.keyFile}: mode 600, root only; the store holds the public key only` });
  }
  // MTU: what an encrypted network's packets become on the underlay (WireGuard's overhead follows the underlay's family).
  const defaultMtu = cfg.mtu - WG_OVERHEAD_IPV4;
  const v6 = cfg.advertiseAddr?.includes(':') === true;
  const wgOverhead = v6 ? WG_OVERHEAD_IPV6 : WG_OVERHEAD_IPV4;
  const worst = encryptedNetworks.reduce((m, n) => Math.max(m, n.mtu), 0);
  const tooBig = encryptedNetworks.filter((n) => n.mtu + VXLAN_OVERHEAD > s.linkMtu);
  checks.push(tooBig.length
    ? {
      name: 'wg mtu', state: 'warn',
      detail: `encrypted network${tooBig.length === 1 ? '' : 's'} ${tooBig.map((n) => `${n.name} (MTU ${n.mtu})`).join(', ')}: ` +
        `frames plus ${VXLAN_OVERHEAD} bytes of VXLAN exceed the WireGuard interface's MTU ${s.linkMtu}, so they are fragmented inside the tunnel (slower)`,
      fix: `create encrypted networks with -o mtu=${s.linkMtu - VXLAN_OVERHEAD} or less, or raise --mtu if the underlay carries more`,
    }
    : {
      name: 'wg mtu', state: 'ok',
      detail: `encrypted networks: default MTU ${defaultMtu} (--mtu ${cfg.mtu} minus ${WG_OVERHEAD_IPV4} bytes of WireGuard over IPv4; ${WG_OVERHEAD_IPV6} over IPv6); ` +
        `WireGuard interface MTU ${s.linkMtu}; underlay packets up to ${s.linkMtu + wgOverhead} bytes over IPv${v6 ? 6 : 4}${worst ? `; largest encrypted network MTU ${worst}` : ''}`,
    });
  // Peers: a live session with each host.
  const now = Date.now();
  for (const p of s.peers.filter((x) => x.expected)) {
    const who = `${p.host} (${p.endpoint ?? '?'})`;
    if (p.up) checks.push({ name: 'wg peer', state: 'ok', detail: `${who}: handshake ${handshakeAge(p.handshakeAgeSeconds)}, ${bytes(p.rxBytes)} in, ${bytes(p.txBytes)} out` });
    else {
      checks.push({
        name: 'wg peer', state: 'fail',
        detail: `${who}: no live session (${p.lastHandshake ? `last handshake ${Math.round((now - Date.parse(p.lastHandshake)) / 1000)} s ago, sessions end after ${SESSION_LIFETIME_MS / 1000} s` : 'never a handshake'})`,
        fix: `UDP ${s.listenPort} must pass between this host and ${p.host} in both directions (for example ${v6 ? 'ip6tables' : 'iptables'} -I INPUT -p udp --dport ${s.listenPort} -j ACCEPT on both); check weft doctor on ${p.host}`,
      });
    }
  }
  for (const m of s.missing) {
    checks.push({ name: 'wg peer', state: 'fail', detail: `${m.host} publishes key ${shortKey(m.publicKey)} but is not on this host's WireGuard`, fix: 'weft puts it there within seconds; if it stays, see weft\'s log on this host' });
  }
  for (const k of s.skipped.filter((x) => x.why !== 'publishes no WireGuard')) {
    checks.push({ name: 'wg peer', state: 'fail', detail: `${k.host} ${k.why}`, fix: `see weft's log on ${k.host}` });
  }
  const without = s.skipped.filter((x) => x.why === 'publishes no WireGuard').map((x) => x.host);
  if (without.length) {
    checks.push({
      name: 'wg peer', state: encryptedNetworks.length ? 'warn' : 'ok', detail: `${without.join(', ')} ${without.length === 1 ? 'has' : 'have'} no WireGuard: encrypted networks do not reach ${without.length === 1 ? 'it' : 'them'}`,
      ...(encryptedNetworks.length ? { fix: `run a weft that has encrypted networks (with --encryption on-request) on ${without.join(', ')}` } : {}),
    });
  }
  return checks;
}

/** weft_wireguard_* metrics, read from the device at each scrape. */
export function registerWireGuardMetrics(registry: Registry, wg: () => WireGuard | undefined): void {
  const up = registry.gauge('weft_wireguard_up', '1 when this host\'s WireGuard is set up and answers, 0 when not (encrypted traffic then stops: fail closed).');
  const info = registry.gauge('weft_wireguard_info', 'Always 1; the labels say which WireGuard this host uses.', ['implementation', 'interface']);
  const peerUp = registry.gauge('weft_wireguard_peer_up', '1 when there is a live session with the peer host (handshake younger than 180 s).', ['peer']);
  const age = registry.gauge('weft_wireguard_peer_handshake_age_seconds', 'Seconds since the last handshake with the peer host (absent: never).', ['peer']);
  const bytesTotal = registry.counter('weft_wireguard_peer_bytes_total', 'Bytes through WireGuard with the peer host, by direction (rx, tx), as the device counts them.', ['peer', 'direction']);
  const restarts = registry.counter('weft_wireguard_restarts_total', 'Times weft started wireguard-go (the first start included).');
  registry.onCollect(async () => {
    const w = wg();
    if (!w) return;
    const s = await w.status();
    up.set({}, s.ready ? 1 : 0);
    info.reset();
    if (s.implementation) info.set({ implementation: s.implementation, interface: s.interface }, 1);
    peerUp.reset();
    age.reset();
    for (const p of s.peers) {
      const peer = p.host ?? shortKey(p.publicKey);
      peerUp.set({ peer }, p.up ? 1 : 0);
      if (p.handshakeAgeSeconds !== undefined) age.set({ peer }, p.handshakeAgeSeconds);
      bytesTotal.setTotal({ peer, direction: 'rx' }, p.rxBytes);
      bytesTotal.setTotal({ peer, direction: 'tx' }, p.txBytes);
    }
    restarts.setTotal({}, w.stats.restarts);
  });
}
