// `weft hosts`: every host the store knows, alive (registered under a lease)
// or down (its lease expired, but it still holds addresses or endpoints).
import { isClusterStore } from '../config';
import { ClusterView, HostView } from './cluster';
import type { OpsContext, ParsedArgs } from './context';
import { ago, json, table } from './format';

/** `cluster` false (embedded store): hosts do not register, so none is "down". */
export function renderHosts(hosts: HostView[], now = Date.now(), cluster = true): string {
  if (hosts.length === 0) {
    return cluster ? 'no hosts: no weft has registered with this store yet\n' : 'no hosts hold anything in the embedded store yet (it serves this host only)\n';
  }
  return table(
    ['HOST', 'STATE', 'ADDRESS', 'VERSION', 'STARTED', 'NETWORKS', 'ENDPOINTS', 'ADDRESSES'],
    hosts.map((h) => [h.name, !cluster ? 'local' : h.alive ? 'up' : 'down', h.address, h.version, h.alive ? ago(h.startedAt, now) : '', h.networks, h.endpoints, h.addresses]),
  );
}

export async function hostsCommand(ctx: OpsContext, a: ParsedArgs): Promise<string> {
  const view = new ClusterView((await ctx.clusterList()).kvs);
  const hosts = view.hosts();
  if (a.flags.has('json')) return json(hosts);
  const cluster = isClusterStore(ctx.cfg.store);
  let out = renderHosts(hosts, Date.now(), cluster);
  const down = cluster ? hosts.filter((h) => !h.alive) : [];
  if (down.length) {
    out += `\n${down.map((h) => h.name).join(', ')} ${down.length === 1 ? 'is' : 'are'} down (no live lease). ` +
      `If ${down.length === 1 ? 'it is' : 'they are'} gone for good, "weft host rm NAME" releases what ${down.length === 1 ? 'it holds' : 'they hold'}.\n`;
  }
  return out;
}
