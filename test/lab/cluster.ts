// A lab cluster in one call: an underlay (its bridge address is etcd's), one
// etcd on it, and N hosts each with its dockerd, the busybox image and a
// weft on that etcd. What most multi-host test files set up in beforeAll and
// tear down in afterAll (keeping the hosts' logs).
import { startEtcd } from './etcd';
import { cleanupLabLeftovers } from './cleanup';
import { keepLogs } from './logs';
import { createUnderlay, type Underlay } from './underlay';
import { ensureBusyboxImage, startHost, startWeft, type LabHost, type StartHostOptions, type StartWeftOptions, type WeftProcess } from './host';

export interface LabCluster {
  ul: Underlay;
  etcd: Awaited<ReturnType<typeof startEtcd>>;
  /** etcd://ADDRESS:PORT, for --store */
  etcdUrl: string;
  hosts: LabHost[];
  wefts: WeftProcess[];
  /** Keeps the hosts' logs, then removes hosts, etcd, underlay and any leftover of the prefix; never throws. */
  destroy(): Promise<void>;
}

export interface LabClusterOptions {
  /** the test file's namespace prefix, e.g. 'w14-' (hosts are PREFIXh1..., the underlay PREFIXul) */
  prefix: string;
  hosts: number;
  /** underlay range; default 192.0.2.0/24 */
  cidr?: string;
  /** host options beyond name and underlay (daemonConfig, engine, ...) */
  host?: Omit<StartHostOptions, 'name' | 'underlay'>;
  /** weft's arguments on a host, given etcd's URL and the host's underlay address */
  weftArgs: (etcdUrl: string, address: string, h: LabHost, index: number) => string[];
  /** other startWeft options (logLevel, env, ...) */
  weft?: Omit<StartWeftOptions, 'args'>;
}

/** The underlay address of a lab host (without prefix length). */
export const underlayIp = (h: LabHost): string => h.underlay!.ports.get(h.name)!.address.split('/')[0]!;

export async function startLabCluster(o: LabClusterOptions): Promise<LabCluster> {
  await cleanupLabLeftovers(o.prefix);
  const hosts: LabHost[] = [];
  const wefts: WeftProcess[] = [];
  const c: Partial<LabCluster> = { hosts, wefts };
  c.destroy = async () => {
    keepLogs(hosts);
    for (const h of hosts) await h.destroy().catch(() => undefined);
    await c.etcd?.stop().catch(() => undefined);
    await c.ul?.destroy().catch(() => undefined);
    await cleanupLabLeftovers(o.prefix);
  };
  try {
    c.ul = await createUnderlay(`${o.prefix}ul`, o.cidr ?? '192.0.2.0/24');
    const etcdIp = c.ul.bridgeAddress.split('/')[0]!;
    c.etcd = await startEtcd({ name: o.prefix.replace(/-$/, ''), netns: c.ul.name, clientHost: etcdIp });
    c.etcdUrl = `etcd://${etcdIp.includes(':') ? `[${etcdIp}]` : etcdIp}:${new URL(c.etcd.endpoint).port}`;
    for (let i = 0; i < o.hosts; i++) {
      const h = await startHost({ ...o.host, name: `${o.prefix}h${i + 1}`, underlay: c.ul });
      hosts.push(h);
      await ensureBusyboxImage(h);
      wefts.push(await startWeft(h, { ...o.weft, args: o.weftArgs(c.etcdUrl, underlayIp(h), h, i) }));
    }
  } catch (e) {
    await c.destroy();
    throw e;
  }
  return c as LabCluster;
}
