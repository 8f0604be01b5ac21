// 6. IPAM under contention: the three hosts' plugins allocate from one pool
// at the same time (etcd transactions that create an address key only if it
// is absent). Allocations per second, and duplicates, which must be zero.
import type { Bench } from '../lib/context';
import { log } from '../lib/lab';
import { call, macOpts, randomMac } from '../lib/plugin';

const POOL = '10.90.8.0/22';
/** requests each host keeps in flight */
const IN_FLIGHT = 16;

async function pool<T>(n: number, limit: number, fn: (i: number) => Promise<T>): Promise<T[]> {
  const out = new Array<T>(n);
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(limit, n) }, async () => {
    for (let i = next++; i < n; i = next++) out[i] = await fn(i);
  }));
  return out;
}

export async function ipamContention(b: Bench): Promise<void> {
  const { cfg, lab } = b;
  const sockets = lab.wefts.map((w) => w.socket);
  log(`ipam: ${sockets.length} hosts x ${cfg.ipamN} concurrent RequestAddress (${IN_FLIGHT} in flight per host)`);
  const { PoolID } = await call<{ PoolID: string }>(sockets[0]!, 'IpamDriver.RequestPool', { AddressSpace: 'weft', Pool: POOL, SubPool: '', Options: {}, V6: false });
  const rates: number[] = [];
  const dups: number[] = [];
  const errs: number[] = [];
  const lat: number[] = [];
  try {
    for (let r = 0; r < cfg.reps; r++) {
      const t0 = performance.now();
      const perHost = await Promise.all(sockets.map((s) => pool(cfg.ipamN, IN_FLIGHT, async () => {
        const t = performance.now();
        try {
          const a = await call<{ Address: string }>(s, 'IpamDriver.RequestAddress', { PoolID, Address: '', Options: macOpts(randomMac()) });
          lat.push(performance.now() - t);
          return a.Address.split('/')[0]!;
        } catch {
          return undefined;
        }
      })));
      const secs = (performance.now() - t0) / 1000;
      const all = perHost.flat();
      const ok = all.filter((a): a is string => a !== undefined);
      rates.push(ok.length / secs);
      dups.push(ok.length - new Set(ok).size);
      errs.push(all.length - ok.length);
      // release (untimed) so that every repetition starts from the same pool
      await Promise.all(perHost.map((addrs, i) => pool(addrs.length, IN_FLIGHT, async (j) => {
        const a = addrs[j];
        if (a) await call(sockets[i]!, 'IpamDriver.ReleaseAddress', { PoolID, Address: a }).catch(() => undefined);
      })));
    }
  } finally {
    await call(sockets[0]!, 'IpamDriver.ReleasePool', { PoolID }).catch(() => undefined);
  }
  const g = 'IPAM, 3 hosts at once';
  b.figure('ipam.rate', g, 'allocations per second (all hosts)', '/s', rates, undefined, `${sockets.length} x ${cfg.ipamN} per repetition`);
  b.figure('ipam.duplicates', g, 'duplicate addresses', 'count', dups, { of: 'max', op: '=', value: 0 });
  b.figure('ipam.errors', g, 'failed requests', 'count', errs);
  b.details.ipam = { rates, dups, errs, latencyMsSorted: lat.sort((x, y) => x - y).filter((_, i) => i % 10 === 0).map((v) => Number(v.toFixed(2))) };
}
