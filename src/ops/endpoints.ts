// `weft endpoints [NETWORK]`: every endpoint on every host, from the store:
// host, container, IP, MAC. Container names come from the names/ records
// that each host's agent writes for DNS (under its lease), else, for this
// host's endpoints, from this host's Docker engine; otherwise the endpoint
// id's short form is shown.
import { DockerClient } from '../agent/docker';
import { ClusterView, EndpointView } from './cluster';
import { OpsContext, OpsError, ParsedArgs } from './context';
import { json, shortId, table } from './format';

export function renderEndpoints(eps: EndpointView[]): string {
  const v6 = eps.some((e) => e.ip6); // the IPV6 column only where some endpoint has one
  return table(
    ['NETWORK', 'HOST', 'CONTAINER', 'IP', ...(v6 ? ['IPV6'] : []), 'MAC', 'ENDPOINT'],
    eps.map((e) => [e.network, e.hostAlive ? e.host : `${e.host} (down)`, e.container ?? shortId(e.id), e.ip || '-',
      ...(v6 ? [e.ip6 ?? '-'] : []), e.mac, shortId(e.id)]),
  );
}

/** The JSON form: every field, container null when unknown. */
export function endpointsJson(eps: EndpointView[]): unknown[] {
  return eps.map((e) => ({
    network: e.network, networkId: e.networkId, host: e.host, hostAlive: e.hostAlive, container: e.container ?? null,
    endpoint: e.id, ip: e.ip, ...(e.ip6 ? { ip6: e.ip6 } : {}), mac: e.mac, vtep: e.vtep, ...(e.createdAt ? { createdAt: e.createdAt } : {}),
  }));
}

/** Names of this host's containers, asked from its Docker engine (briefly: the command must not hang on it). */
async function localNames(ctx: OpsContext, view: ClusterView, eps: EndpointView[]): Promise<void> {
  const me = ctx.cfg.hostName;
  const wanted = new Set(eps.filter((e) => e.host === me && !e.container).map((e) => e.networkId));
  if (wanted.size === 0) return;
  let docker: DockerClient;
  try {
    docker = new DockerClient(ctx.cfg.dockerHost, 1500);
  } catch {
    return;
  }
  const names = new Map<string, string>();
  await Promise.all([...wanted].map(async (cid) => {
    const localId = view.bindings.get(cid)?.get(me);
    if (!localId) return;
    try {
      const net = await docker.inspectNetwork(localId);
      for (const c of Object.values(net.Containers ?? {})) if (c.EndpointID && c.Name) names.set(c.EndpointID, c.Name);
    } catch {
      // Docker not reachable from here: ids stay
    }
  }));
  for (const e of eps) if (e.host === me && !e.container && names.has(e.id)) e.container = names.get(e.id);
}

export async function endpointsCommand(ctx: OpsContext, a: ParsedArgs): Promise<string> {
  const view = new ClusterView((await ctx.clusterList()).kvs);
  let cid: string | undefined;
  const ref = a.positional[0];
  if (ref !== undefined) {
    try {
      cid = view.findNetwork(ref);
    } catch (err) {
      throw new OpsError((err as Error).message, 2);
    }
    if (!cid) {
      const known = view.networks().map((n) => n.name ?? shortId(n.clusterId));
      throw new OpsError(`no weft network "${ref}" in the store${known.length ? ` (weft networks: ${known.join(', ')})` : ''}: see weft networks`, 2);
    }
  }
  const eps = view.endpoints(cid);
  await localNames(ctx, view, eps);
  if (a.flags.has('json')) return json(endpointsJson(eps));
  if (eps.length === 0) return ref ? `no endpoints on network ${ref}\n` : 'no endpoints\n';
  return renderEndpoints(eps);
}
