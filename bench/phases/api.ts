// 1. Plugin API latency: the calls Docker makes for one container, timed at
// the socket, on the embedded store and on etcd. weft runs on the bare host
// wbn-api (no dockerd: nothing else talks to it, and its garbage collection,
// which asks Docker, decides nothing).
import { startWeft } from '../../test/lab/host';
import type { Bench } from '../lib/context';
import { clusterArgs, log, weftLogLevel } from '../lib/lab';
import { addEndpoint, createNetworkViaPlugin, deleteNetworkViaPlugin, removeEndpoint } from '../lib/plugin';
import { percentile } from '../lib/stats';

const STORES = [
  { key: 'file', label: 'embedded store', subnet: '10.90.1.0/24' },
  { key: 'etcd', label: 'etcd', subnet: '10.90.2.0/24' },
] as const;

export async function apiLatency(b: Bench): Promise<void> {
  const { lab, cfg } = b;
  const details: Record<string, unknown> = {};
  for (const store of STORES) {
    log(`api: plugin API latency on the ${store.label}`);
    const args = store.key === 'etcd' ? clusterArgs(lab, lab.api) : [];
    const w = await startWeft(lab.api, { args, logLevel: weftLogLevel() });
    try {
      const net = await createNetworkViaPlugin(w.socket, store.subnet);
      const once = async (): Promise<[number, number]> => {
        const t0 = performance.now();
        const ep = await addEndpoint(net, w.socket, net.networkId, true);
        const t1 = performance.now();
        await removeEndpoint(net, w.socket, net.networkId, ep, true);
        return [t1 - t0, performance.now() - t1];
      };
      for (let i = 0; i < 10; i++) await once(); // warm-up (JIT, sockets, netlink)
      const up: number[][] = [];
      const down: number[][] = [];
      for (let r = 0; r < cfg.reps; r++) {
        const u: number[] = [];
        const d: number[] = [];
        for (let i = 0; i < cfg.apiN; i++) {
          const [a, c] = await once();
          u.push(a);
          d.push(c);
        }
        up.push(u);
        down.push(d);
      }
      await deleteNetworkViaPlugin(net);
      const g = `API ${store.label}`;
      const goalNote = `${cfg.apiN} sequential containers' worth of calls per repetition`;
      b.figure(`api.${store.key}.up.p50`, g, 'RequestAddress+CreateEndpoint+Join p50', 'ms', up.map((s) => percentile(s, 50)), undefined, goalNote);
      b.figure(`api.${store.key}.up.p99`, g, 'RequestAddress+CreateEndpoint+Join p99', 'ms', up.map((s) => percentile(s, 99)));
      b.figure(`api.${store.key}.down.p50`, g, 'Leave+DeleteEndpoint+ReleaseAddress p50', 'ms', down.map((s) => percentile(s, 50)));
      b.figure(`api.${store.key}.down.p99`, g, 'Leave+DeleteEndpoint+ReleaseAddress p99', 'ms', down.map((s) => percentile(s, 99)));
      details[store.key] = { up: up.map((s) => s.map((v) => Number(v.toFixed(3)))), down: down.map((s) => s.map((v) => Number(v.toFixed(3)))) };
    } finally {
      await w.stop();
    }
  }
  b.details.api = details;
}
