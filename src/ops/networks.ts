// `weft networks`: the cluster's weft networks, from the store.
import { ClusterView, NetworkView } from './cluster';
import type { OpsContext, ParsedArgs } from './context';
import { json, shortId, table } from './format';

export function renderNetworks(nets: NetworkView[]): string {
  if (nets.length === 0) return 'no weft networks: create one with docker network create -d weft --ipam-driver weft ...\n';
  const enc = nets.some((n) => n.encrypted); // [wireguard] the column only where some network is
  const v6 = nets.some((n) => n.subnet6); // the IPv6 columns only where some network has IPv6
  return table(
    ['NAME', 'ID', 'VNI', 'SUBNET', 'GATEWAY', ...(v6 ? ['IPV6 SUBNET', 'IPV6 GATEWAY'] : []), 'MTU', 'HOSTS', 'ENDPOINTS', ...(enc ? ['ENCRYPTED'] : []), 'STATE'],
    nets.map((n) => [n.name ?? '(unnamed)', shortId(n.clusterId), n.vni, n.subnet ?? '-', n.gateway ?? '-',
      ...(v6 ? [n.subnet6 ?? '-', n.gateway6 ?? '-'] : []), n.mtu, n.hosts.join(','), n.endpoints,
      ...(enc ? [n.encrypted ? 'yes' : 'no'] : []), n.deleting ? 'deleting' : 'ok']),
  );
}

export async function networksCommand(ctx: OpsContext, a: ParsedArgs): Promise<string> {
  const nets = new ClusterView((await ctx.clusterList()).kvs).networks();
  return a.flags.has('json') ? json(nets) : renderNetworks(nets);
}
