// 7. Scale: many endpoints on one network across the three hosts, made
// through the plugin API (CreateEndpoint; a subset also Joins, which makes a
// veth): how long until every host has every remote endpoint in its VXLAN
// forwarding tables, weft's memory, and the time of one full reconcile.
import * as http from 'node:http';
import { run, type LabHost, type WeftProcess } from '../../test/lab/host';
import type { Bench } from '../lib/context';
import { log, networkId, rssMiB, weftNetns } from '../lib/lab';
import { call, dockerId, macOpts, randomMac } from '../lib/plugin';
import { ensureWeftNetwork } from './docker';

const NET = 'wbscale';
const SUBNET = '10.90.12.0/22';
const POOL_ID = '10.90.12.0_22';
const IN_FLIGHT = 8;

/** GET on weft's socket (its admin routes); undefined when weft has no such route. */
function getJson(socket: string, path: string): Promise<unknown> {
  return new Promise((resolve) => {
    const req = http.request({ socketPath: socket, path, method: 'GET', timeout: 10_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => {
        if (res.statusCode !== 200) return resolve(undefined);
        try {
          resolve(JSON.parse(body));
        } catch {
          resolve(undefined);
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve(undefined));
    req.end();
  });
}

interface AgentStatus { lastReconcile?: string; reconcileMs?: number }
async function agentStatus(w: WeftProcess): Promise<AgentStatus | undefined> {
  const s = (await getJson(w.socket, '/weft/v1/status')) as { agent?: AgentStatus } | undefined;
  return s?.agent;
}

/** Remote endpoint FDB entries, flood entries and permanent neighbours on a host's VXLAN device. */
async function kernelPeers(w: WeftProcess, clusterId: string): Promise<{ fdb: number; flood: number; neigh: number }> {
  const { ns, vx } = weftNetns(w, clusterId);
  const [f, n] = await Promise.all([
    run('nsenter', [`--net=${ns}`, 'bridge', 'fdb', 'show', 'dev', vx], { timeoutMs: 10_000 }),
    run('nsenter', [`--net=${ns}`, 'ip', 'neigh', 'show', 'dev', vx, 'nud', 'permanent'], { timeoutMs: 10_000 }),
  ]);
  let fdb = 0;
  let flood = 0;
  for (const l of f.stdout.split('\n')) {
    if (!l.includes(' dst ')) continue;
    if (l.startsWith('00:00:00:00:00:00')) flood++;
    else fdb++;
  }
  const neigh = n.stdout.split('\n').filter((l) => l.includes('lladdr')).length;
  return { fdb, flood, neigh };
}

export async function scale(b: Bench): Promise<void> {
  const { cfg, lab } = b;
  const hosts = lab.hosts as LabHost[];
  const wefts = lab.wefts;
  await ensureWeftNetwork(b, NET, SUBNET);
  const clusterId = await networkId(hosts[0]!, NET);
  const localIds = await Promise.all(hosts.map((h) => networkId(h, NET)));
  const rssBefore = wefts.map((w) => rssMiB(w.pid));
  const n = cfg.scale;
  log(`scale: ${n} endpoints over ${hosts.length} hosts through the plugin API, ${Math.min(cfg.scaleJoin, n)} of them joined`);
  const perHost = hosts.map((_, h) => Array.from({ length: n }, (_, i) => i).filter((i) => i % hosts.length === h));
  const t0 = performance.now();
  const createdAt: number[] = [];
  await Promise.all(perHost.map(async (idx, h) => {
    const socket = wefts[h]!.socket;
    let next = 0;
    await Promise.all(Array.from({ length: IN_FLIGHT }, async () => {
      for (let k = next++; k < idx.length; k = next++) {
        const i = idx[k]!;
        const mac = randomMac();
        const a = await call<{ Address: string }>(socket, 'IpamDriver.RequestAddress', { PoolID: POOL_ID, Address: '', Options: macOpts(mac) });
        const endpointId = dockerId();
        await call(socket, 'NetworkDriver.CreateEndpoint', {
          NetworkID: localIds[h], EndpointID: endpointId, Interface: { Address: a.Address, AddressIPv6: '', MacAddress: mac }, Options: macOpts(mac),
        });
        if (i < cfg.scaleJoin) {
          await call(socket, 'NetworkDriver.Join', { NetworkID: localIds[h], EndpointID: endpointId, SandboxKey: `/var/run/docker/netns/${endpointId.slice(0, 12)}`, Options: {} });
        }
        createdAt.push(performance.now());
      }
    }));
  }));
  const tCreated = performance.now();
  // every host: every endpoint of the other hosts (FDB + neighbour), plus a flood entry per other host
  const want = perHost.map((idx) => n - idx.length);
  const doneAt: Array<number | undefined> = hosts.map(() => undefined);
  let last: Array<{ fdb: number; flood: number; neigh: number }> = [];
  const deadline = performance.now() + 180_000;
  for (let i = 0; i < 10_000 && doneAt.some((d) => d === undefined) && performance.now() < deadline; i++) {
    last = await Promise.all(wefts.map((w) => kernelPeers(w, clusterId)));
    const now = performance.now();
    last.forEach((p, h) => {
      if (doneAt[h] === undefined && p.fdb >= want[h]! && p.neigh >= want[h]! && p.flood >= hosts.length - 1) doneAt[h] = now;
    });
    await new Promise((r) => setTimeout(r, 100));
  }
  const allDone = doneAt.every((d) => d !== undefined) ? Math.max(...(doneAt as number[])) : NaN;
  if (Number.isNaN(allDone)) b.notes.push(`scale: not every host had every peer within 180 s: ${JSON.stringify(last)} (want ${JSON.stringify(want)})`);
  const rssAfter = wefts.map((w) => rssMiB(w.pid));

  // one full reconcile with all of this in place, from weft's status route if it has one
  const reconcileMs: number[] = [];
  const since = Date.now();
  for (const w of wefts) {
    let ms = NaN;
    const first = await agentStatus(w);
    if (first) {
      const waitUntil = Date.now() + 30_000;
      for (let i = 0; i < 400 && Date.now() < waitUntil; i++) {
        const s = await agentStatus(w);
        if (s?.lastReconcile && Date.parse(s.lastReconcile) > since && typeof s.reconcileMs === 'number') {
          ms = s.reconcileMs;
          break;
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    reconcileMs.push(ms);
  }
  if (reconcileMs.every((v) => Number.isNaN(v))) {
    b.notes.push('scale: weft does not report reconcile timing (no GET /weft/v1/status with agent.reconcileMs): the reconcile figure is n/a');
  }

  const g = `scale, ${n} endpoints`;
  b.figure('scale.create_rate', g, 'endpoints created per second (RequestAddress+CreateEndpoint[+Join], 3 hosts)', '/s', [n / ((tCreated - t0) / 1000)]);
  b.figure('scale.programmed', g, 'first create -> every host has every peer', 's', [(allDone - t0) / 1000]);
  b.figure('scale.programmed_after_last', g, 'last create returned -> every host has every peer', 's', [(allDone - tCreated) / 1000]);
  b.figure('scale.rss_before', g, 'weft resident memory per host, before', 'MiB', rssBefore);
  b.figure('scale.rss_after', g, 'weft resident memory per host, with the endpoints', 'MiB', rssAfter);
  b.figure('scale.reconcile', g, 'one full reconcile, per host', 'ms', reconcileMs);
  b.details.scale = {
    endpoints: n, joined: Math.min(cfg.scaleJoin, n), want, kernel: last,
    doneAfterFirstCreateSec: doneAt.map((d) => (d === undefined ? null : (d - t0) / 1000)),
    createSec: (tCreated - t0) / 1000, rssBefore, rssAfter, reconcileMs,
  };
}
