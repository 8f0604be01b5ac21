// DNS for container names across hosts (issue 7), wired for `weft serve`:
//   - the name table, fed by the agent's mirror of the store;
//   - the learner, which writes this host's containers' names and asker
//     addresses to the store from the Docker engine;
//   - the server on --dns-addr, whose address weft adds to lo.
// Everything starts in the background, with retries: nothing here delays the
// plugin socket or a driver call.

import type { Logger } from 'pino';
import type { Agent } from '../agent/agent';
import { DockerClient } from '../agent/docker';
import { Config, isClusterStore, parseDnsAddr } from '../config';
import { openRtnetlink, Rtnl } from '../dataplane/netlink';
import type { LocalNetworks } from '../cluster/local-networks';
import type { ClusterView } from '../cluster/view';
import type { Store } from '../store/store';
import { Forwarder } from './forward';
import { NameLearner } from './learner';
import { DnsServer } from './server';
import { NameTable } from './table';

export interface Dns {
  table: NameTable;
  server?: DnsServer;
  learner: NameLearner;
  close(): Promise<void>;
}

export interface DnsDeps {
  cfg: Config;
  store: Store;
  /** The cluster view: DNS mirrors its raw events, and is ready when it is synced. */
  view: Pick<ClusterView, 'addListener' | 'synced'>;
  /** Tells DNS each (new) lease its names go under. */
  agent: Pick<Agent, 'onRegistered'>;
  networks: Pick<LocalNetworks, 'list'>;
  logger: Logger;
}

/** Docker's embedded resolver inside containers: never an upstream. */
const DOCKER_EMBEDDED = '127.0.0.11';

/**
 * Sets DNS up. Call before agent.start() (the table must see the first list).
 * Returns undefined when --dns-addr is off.
 */
export function startDns(d: DnsDeps): Dns | undefined {
  const addr = parseDnsAddr(d.cfg.dnsAddr);
  if (!addr) return undefined;
  const log = d.logger;
  const table = new NameTable(d.cfg.hostName);
  d.view.addListener(table);
  const learner = new NameLearner({
    store: d.store, localNetworks: () => d.networks.list(), docker: new DockerClient(d.cfg.dockerHost, 10_000),
    host: d.cfg.hostName, cluster: isClusterStore(d.cfg.store), table, logger: log,
    ready: () => d.view.synced,
  });
  d.agent.onRegistered((lease) => learner.setLease(lease));
  const forwarder = d.cfg.dnsForward === 'on'
    ? new Forwarder({ resolvConf: d.cfg.dnsResolvConf, exclude: [addr.host, DOCKER_EMBEDDED] })
    : undefined;
  const server = new DnsServer({ host: addr.host, port: addr.port, table, forwarder, logger: log, onUnknownAsker: () => learner.refreshSoon() });
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let serving = false;

  const bringUp = async (attempt: number): Promise<void> => {
    if (stopped) return;
    try {
      await ensureLocalAddress(addr.host, log);
      await server.start();
      serving = true;
      if (stopped) return void server.close();
      log.info({ addr: `${addr.host}:${addr.port}`, forward: d.cfg.dnsForward, upstreams: forwarder?.upstreams() ?? [] },
        'DNS serving container names across hosts (containers use it with --dns or the daemon\'s "dns")');
    } catch (err) {
      const wait = Math.min(30_000, 1000 * 2 ** attempt);
      // Loud at first, then every tenth attempt (every 5 min at the 30 s cap): a taken port may stay taken.
      const level = attempt === 0 ? 'error' : attempt < 3 || attempt % 10 === 0 ? 'warn' : 'debug';
      log[level]({ err: (err as Error).message, retryInMs: wait }, 'DNS server not started; retrying');
      timer = setTimeout(() => void bringUp(attempt + 1), wait);
      timer.unref();
    }
  };
  learner.start();
  void bringUp(0);

  return {
    table,
    server,
    learner,
    async close() {
      stopped = true;
      clearTimeout(timer);
      learner.stop();
      forwarder?.close();
      if (serving) await server.close();
      // The address stays on lo: a query to a stopped weft is then refused at
      // once (port unreachable) instead of wandering off along the default route.
    },
  };
}

/** Adds ip/32 to lo unless some link of this host already has it (or it is in 127/8). Idempotent. */
export async function ensureLocalAddress(ip: string, log: Logger): Promise<void> {
  if (ip.startsWith('127.') || ip === '0.0.0.0') return;
  const rtnl = new Rtnl({ label: 'the host namespace', open: openRtnetlink, timeoutMs: 5000 });
  try {
    if ((await rtnl.listAddresses()).some((a) => a.ip === ip)) return;
    const lo = await rtnl.getLink('lo');
    if (!lo) throw new Error('this namespace has no lo link');
    if (await rtnl.addAddress(lo.index, ip, 32)) log.info({ address: `${ip}/32`, link: 'lo' }, 'added the DNS address to lo');
  } catch (e) {
    throw new Error(`cannot add ${ip}/32 to lo (${(e as Error).message}): weft needs CAP_NET_ADMIN, or add it yourself: ip addr add ${ip}/32 dev lo`);
  } finally {
    rtnl.close();
  }
}
