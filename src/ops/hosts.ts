// `weft hosts`: every host the store knows, alive (registered under a lease)
// or down (its lease expired, but it still holds addresses or endpoints).
import { isClusterStore } from '../config';
import { ClusterView, HostView } from './cluster';
import type { OpsContext, ParsedArgs } from './context';
import { ago, json, table } from './format';
import { bytes, handshakeAge, HostEncryption, hostEncryption, WIREGUARD_PATH } from '../wireguard/ops';
import type { WireGuardStatus } from '../wireguard';

/** `cluster` false (embedded store): hosts do not register, so none is "down". */
export function renderHosts(hosts: (HostView & { encryption?: HostEncryption })[], now = Date.now(), cluster = true): string {
  if (hosts.length === 0) {
    return cluster ? 'no hosts: no weft has registered with this store yet\n' : 'no hosts hold anything in the embedded store yet (it serves this host only)\n';
  }
  // [wireguard] encryption columns only in a cluster where some host has WireGuard
  const enc = hosts.some((h) => h.encryption && h.encryption.state !== 'none');
  const e = (h: { encryption?: HostEncryption }) => h.encryption ?? { state: 'none' as const };
  return table(
    ['HOST', 'STATE', 'ADDRESS', 'VERSION', 'STARTED', 'NETWORKS', 'ENDPOINTS', 'ADDRESSES', ...(enc ? ['ENCRYPTION', 'HANDSHAKE', 'RX', 'TX'] : [])],
    hosts.map((h) => [h.name, !cluster ? 'local' : h.alive ? 'up' : 'down', h.address, h.version, h.alive ? ago(h.startedAt, now) : '', h.networks, h.endpoints, h.addresses,
      ...(enc ? [e(h).state === 'self' ? 'this host' : e(h).state, e(h).state === 'self' || e(h).state === 'none' || e(h).state === 'published' ? '-' : handshakeAge(e(h).handshakeAgeSeconds),
        e(h).rxBytes !== undefined ? bytes(e(h).rxBytes!) : '-', e(h).txBytes !== undefined ? bytes(e(h).txBytes!) : '-'] : [])]),
  );
}

export async function hostsCommand(ctx: OpsContext, a: ParsedArgs): Promise<string> {
  const view = new ClusterView((await ctx.clusterList()).kvs);
  const cluster = isClusterStore(ctx.cfg.store);
  // [wireguard] Each host's encryption: what it publishes, and this host's session with it (from the local weft, when it answers).
  let local: WireGuardStatus | undefined;
  let localError: string | undefined;
  if (cluster && [...view.hostRecords.values()].some((r) => r.wg)) {
    local = await ctx.adminGet<WireGuardStatus>(WIREGUARD_PATH, 'show its WireGuard sessions', 3000).catch((err: Error) => {
      localError = err.message;
      return undefined;
    });
  }
  const hosts = view.hosts().map((h) => ({ ...h, encryption: hostEncryption(h.name, view.hostRecords.get(h.name), ctx.cfg.hostName, local) }));
  if (a.flags.has('json')) return json(hosts);
  let out = renderHosts(hosts, Date.now(), cluster);
  if (localError) out += `\nsessions unknown (ENCRYPTION "published"): ${localError}\n`;
  const down = cluster ? hosts.filter((h) => !h.alive) : [];
  if (down.length) {
    out += `\n${down.map((h) => h.name).join(', ')} ${down.length === 1 ? 'is' : 'are'} down (no live lease). ` +
      `If ${down.length === 1 ? 'it is' : 'they are'} gone for good, "weft host rm NAME" releases what ${down.length === 1 ? 'it holds' : 'they hold'}.\n`;
  }
  return out;
}
