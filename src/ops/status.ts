// `weft status`: this host's view, from the running weft (GET /weft/v1/status
// on the plugin socket): store reachability and latency, lease, version,
// networks with VNI and subnet, local endpoints, peers in the kernel against
// peers expected (drift), last reconcile.
import { STATUS_PATH } from './admin';
import type { OpsContext, ParsedArgs } from './context';
import { ago, duration, json, plural, shortId, table } from './format';
import type { PeerEntry, StatusReport } from './types';
import { PEER_HEADERS, peerRows, wireguardLine } from '../wireguard/ops';

function entry(e: PeerEntry): string {
  if (e.kind === 'flood') return `flood entry to ${e.vtep || '?'}`;
  if (e.kind === 'route') return `route ${e.ip || '?'}/32 to a container of this host (routed)`;
  if (e.kind === 'proxy') return `proxy entry ${e.ip || '?'}, a container of another segment (routed)`;
  const what = e.part === 'fdb' ? 'FDB entry of ' : e.part === 'neighbour' ? 'neighbour entry of ' : '';
  const ips = [e.ip, e.ip6].filter(Boolean).join(' ');
  return `${what}${ips || '(no IP)'} ${e.mac || '(no MAC)'} via ${e.vtep || '(no VTEP)'}`;
}

export function renderStatus(s: StatusReport, now = Date.now()): string {
  const lines: string[] = [];
  const kv = (k: string, v: string) => lines.push(`${k.padEnd(11)}${v}`);
  kv('host', `${s.host}${s.advertiseAddr ? ` (${s.advertiseAddr})` : ''}: weft ${s.version}${s.runtime ? ` on ${s.runtime}` : ''}, pid ${s.pid}, up ${duration(now - Date.parse(s.startedAt))}`);
  kv('store', s.store.reachable
    ? `${s.store.description}: reachable, answered in ${s.store.latencyMs} ms`
    : `${s.store.description}: UNREACHABLE: ${s.store.error ?? 'no answer'}`);
  if (s.lease.alive === null) kv('lease', 'none (embedded store: one host, no lease)');
  else kv('lease', s.lease.alive ? `alive (ttl ${s.lease.ttlSeconds} s)` : `NOT ALIVE: ${s.lease.detail ?? ''}`);
  const a = s.agent;
  kv('reconcile', a.lastReconcile
    ? `last ${ago(a.lastReconcile, now)} (took ${duration(a.reconcileMs ?? 0)}, every ${s.reconcileIntervalSeconds} s); ${plural(a.corrections, 'correction')} since start`
    : `not run yet (every ${s.reconcileIntervalSeconds} s)`);
  const drifting = s.networks.filter((n) => n.peers.drift > 0 || n.peers.error);
  if (!a.synced) kv('peers', 'not known yet: the agent has not read the store (see "store" above)');
  else if (drifting.length === 0) kv('peers', `in sync with the store on ${plural(s.networks.length, 'network')}`);
  else {
    const missing = drifting.reduce((n, x) => n + x.peers.missing.length, 0);
    const extra = drifting.reduce((n, x) => n + x.peers.extra.length, 0);
    kv('peers', `DRIFT on ${plural(drifting.length, 'network')}: ${missing} missing, ${extra} extra (the reconcile repairs it; see below)`);
  }
  if (s.docker) kv('docker', `container names unavailable: ${s.docker.error}`);
  if (s.wireguard) kv('wireguard', wireguardLine(s.wireguard)); // [wireguard]
  let out = lines.join('\n') + '\n';

  out += '\n';
  if (s.networks.length === 0) out += 'no weft networks on this host\n';
  else {
    // [wireguard] the ENCRYPTED column only where some network is
    const enc = s.networks.some((n) => n.encrypted);
    // [routed] the MODE column only where some network is routed
    const modes = s.networks.some((n) => n.mode);
    const v6 = s.networks.some((n) => n.subnet6); // the IPv6 column only where some network has IPv6
    out += table(
      ['NETWORK', 'ID', ...(modes ? ['MODE'] : []), 'VNI', 'SUBNET', ...(v6 ? ['IPV6 SUBNET'] : []), 'GATEWAY', 'MTU', 'ENDPOINTS', 'PEERS', 'EXPECTED', 'DRIFT', ...(enc ? ['ENCRYPTED'] : [])],
      s.networks.map((n) => [
        n.name ?? '(unnamed)', shortId(n.clusterId), ...(modes ? [n.mode ?? 'vxlan'] : []), s.cluster ? n.vni : '-', n.subnet ?? '-', ...(v6 ? [n.subnet6 ?? '-'] : []), n.gateway ?? '-', n.mtu, n.endpoints.length,
        n.peers.programmed, n.peers.expected, n.peers.error ? 'error' : n.peers.drift, ...(enc ? [n.encrypted ? 'yes' : 'no'] : []),
      ]),
    );
  }
  // [routed] The path to each peer host: unencapsulated on this host's segment, VXLAN to the others.
  const paths = s.networks.flatMap((n) => (n.paths ?? []).map((p) => ({ n, p })));
  if (paths.length) {
    out += '\nPATHS OF ROUTED NETWORKS (broadcast and multicast stay on this segment)\n';
    out += table(['NETWORK', 'PEER', 'ADDRESS', 'UNDERLAY', 'PATH'],
      paths.map(({ n, p }) => [n.name ?? shortId(n.clusterId), p.host, p.address, p.underlay ?? '-', p.path === 'routed' ? 'routed (unencapsulated)' : 'vxlan']));
  }
  if (s.wireguard && (s.wireguard.peers.length || s.wireguard.missing.length)) {
    out += '\nWIREGUARD PEERS\n';
    out += table(PEER_HEADERS, peerRows(s.wireguard));
  }
  const eps = s.networks.flatMap((n) => n.endpoints.map((e) => ({ n, e })));
  if (eps.length) {
    out += '\nENDPOINTS ON THIS HOST\n';
    const v6 = eps.some(({ e }) => e.ip6);
    out += table(['NETWORK', 'CONTAINER', 'IP', ...(v6 ? ['IPV6'] : []), 'MAC', 'ENDPOINT'],
      eps.map(({ n, e }) => [n.name ?? shortId(n.clusterId), e.container ?? shortId(e.id), e.ip || '-', ...(v6 ? [e.ip6 ?? '-'] : []), e.mac, shortId(e.id)]));
  }
  if (drifting.length) {
    out += '\nDRIFT (kernel against store)\n';
    const rows: string[][] = [];
    for (const n of drifting) {
      const name = n.name ?? shortId(n.clusterId);
      if (n.peers.error) rows.push([name, 'error', n.peers.error]);
      for (const e of n.peers.missing) rows.push([name, 'missing', entry(e)]);
      for (const e of n.peers.extra) rows.push([name, 'extra', entry(e)]);
    }
    out += table(['NETWORK', 'WHAT', 'ENTRY'], rows);
  }
  return out;
}

export async function statusCommand(ctx: OpsContext, a: ParsedArgs): Promise<{ stdout: string; code: number }> {
  const s = await ctx.adminGet<StatusReport>(STATUS_PATH, 'report its state (weft hosts, networks and endpoints work without it)');
  const stdout = a.flags.has('json') ? json(s) : renderStatus(s);
  // Exit 1 when something needs attention, so that scripts can tell without parsing.
  // [wireguard] WireGuard down counts where an encrypted network needs it
  const bad = !s.store.reachable || s.lease.alive === false || (s.wireguard?.ready === false && s.networks.some((n) => n.encrypted));
  return { stdout, code: bad ? 1 : 0 };
}
