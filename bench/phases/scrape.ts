// 8. Container starts while /metrics is scraped 20 times a second (issue 12):
// a scrape must never hold a Join up. The network is a busy one: host 2 holds
// WEFT_BENCH_SCRAPE_PEERS endpoints on it (made through the plugin API), so
// host 1's VXLAN device has twice as many FDB and neighbour entries to dump.
// On host 1, with its weft serving metrics on 127.0.0.1:9464 inside the
// host's namespace, 50 `docker run -d` (5 at a time) without scraping, then
// 50 with a scraper polling /metrics every 50 ms from inside the same
// namespace. Figures: the start times (p50, p99), weft's own Join times (from
// its debug log), the Joins weft answered, and the scrapes answered.
import { BUSYBOX_IMAGE } from '../../test/lab/host';
import type { Bench } from '../lib/context';
import { log, logSize, networkId, pluginCallsSince, spawnTracked } from '../lib/lab';
import { call, dockerId, macOpts, randomMac } from '../lib/plugin';
import { percentile } from '../lib/stats';
import { dockerTimed } from '../lib/timing';
import { ensureWeftNetwork } from './docker';

const NET = 'wbscrape';
const SUBNET = '10.90.16.0/22';
const POOL_ID = '10.90.16.0_22';
const PEERS = Number(process.env.WEFT_BENCH_SCRAPE_PEERS ?? 400);
export const METRICS_PORT = 9464;
const N = 50;
const PARALLEL = 5;

async function startMany(b: Bench, tag: string): Promise<{ ms: number[]; failed: number; joins: number; joinMs: number[] }> {
  const h = b.lab.hosts[0]!;
  const w = b.lab.wefts[0]!;
  const from = logSize(w);
  const ms: number[] = [];
  let failed = 0;
  let next = 0;
  await Promise.all(Array.from({ length: PARALLEL }, async () => {
    for (let i = next++; i < N; i = next++) {
      try {
        ms.push((await dockerTimed(h, ['run', '-d', '--name', `wb-${tag}-${i}`, '--network', NET, BUSYBOX_IMAGE, 'sleep', '3600'], 120_000)).ms);
      } catch (e) {
        failed++;
        log(`scrape: ${(e as Error).message}`);
      }
    }
  }));
  const joinMs = pluginCallsSince(w, from).filter((c) => c.call === 'NetworkDriver.Join').map((c) => c.ms);
  await h.docker(['rm', '-f', ...Array.from({ length: N }, (_, i) => `wb-${tag}-${i}`)], { timeoutMs: 180_000 });
  return { ms, failed, joins: joinMs.length, joinMs };
}

/** Polls http://127.0.0.1:PORT/metrics every 50 ms from inside the host's namespace; prints the counts when stopped. */
function startScraper(netns: string) {
  const script = `
    const http = require('http'); let ok = 0, bad = 0, stop = false;
    const one = () => { if (stop) return; const t = setTimeout(one, 50);
      http.get({ host: '127.0.0.1', port: ${METRICS_PORT}, path: '/metrics', timeout: 5000 }, (r) => { r.resume(); r.on('end', () => { if (r.statusCode === 200) ok++; else bad++; }); })
        .on('error', () => { bad++; }); };
    one();
    process.on('SIGTERM', () => { stop = true; setTimeout(() => { process.stdout.write(JSON.stringify({ ok, bad }) + '\\n'); process.exit(0); }, 200); });`;
  const c = spawnTracked('nsenter', [`--net=${netns}`, process.execPath, '-e', script]);
  let out = '';
  c.stdout?.on('data', (d) => (out += d));
  return {
    stop: () => new Promise<{ ok: number; bad: number }>((resolve) => {
      c.on('exit', () => { try { resolve(JSON.parse(out.trim().split('\n').pop() ?? '{}')); } catch { resolve({ ok: -1, bad: -1 }); } });
      c.kill('SIGTERM');
    }),
  };
}

export async function scrape(b: Bench): Promise<void> {
  const h = b.lab.hosts[0]!;
  await ensureWeftNetwork(b, NET, SUBNET);
  // a busy network: remote endpoints on host 2, programmed into host 1's tables
  const h2 = b.lab.hosts[1]!;
  const local2 = await networkId(h2, NET);
  log(`scrape: ${PEERS} endpoints on host 2 (plugin API) so that host 1's tables are not trivial`);
  let next = 0;
  await Promise.all(Array.from({ length: 8 }, async () => {
    for (let i = next++; i < PEERS; i = next++) {
      const mac = randomMac();
      const a = await call<{ Address: string }>(b.lab.wefts[1]!.socket, 'IpamDriver.RequestAddress', { PoolID: POOL_ID, Address: '', Options: macOpts(mac) });
      await call(b.lab.wefts[1]!.socket, 'NetworkDriver.CreateEndpoint', {
        NetworkID: local2, EndpointID: dockerId(), Interface: { Address: a.Address, AddressIPv6: '', MacAddress: mac }, Options: macOpts(mac),
      });
    }
  }));
  const g = `docker run -d, ${N} containers (${PARALLEL} at a time) on host 1, ${PEERS} remote endpoints on the network`;
  const quiet: number[][] = [];
  const busy: number[][] = [];
  const quietJoin: number[][] = [];
  const busyJoin: number[][] = [];
  const details: unknown[] = [];
  for (let r = 0; r < b.cfg.reps; r++) {
    log(`scrape: ${N} containers without scraping, then with /metrics scraped 20 times a second (rep ${r + 1})`);
    const q = await startMany(b, `q${r}`);
    const scraper = startScraper(h.netns);
    const s = await startMany(b, `s${r}`);
    const scrapes = await scraper.stop();
    quiet.push(q.ms);
    busy.push(s.ms);
    quietJoin.push(q.joinMs);
    busyJoin.push(s.joinMs);
    details.push({ quiet: q, scraped: { ...s, scrapes } });
    b.figure(`scrape.joins.${r}`, g, `rep ${r + 1}: Joins answered / containers started, while scraped`, 'count', [s.joins], undefined,
      `${s.ms.length} started, ${s.failed} failed; ${scrapes.ok} scrapes answered, ${scrapes.bad} failed`);
  }
  const p = (runs: number[][], q: number) => runs.map((x) => percentile(x, q));
  b.figure('scrape.quiet.p50', g, 'start time p50, no scraping', 'ms', p(quiet, 50));
  b.figure('scrape.quiet.p99', g, 'start time p99, no scraping', 'ms', p(quiet, 99));
  b.figure('scrape.busy.p50', g, 'start time p50, /metrics scraped 20/s', 'ms', p(busy, 50));
  b.figure('scrape.busy.p99', g, 'start time p99, /metrics scraped 20/s', 'ms', p(busy, 99));
  b.figure('scrape.join.quiet.p50', g, 'weft\'s Join p50, no scraping', 'ms', p(quietJoin, 50));
  b.figure('scrape.join.quiet.p99', g, 'weft\'s Join p99, no scraping', 'ms', p(quietJoin, 99));
  b.figure('scrape.join.busy.p50', g, 'weft\'s Join p50, /metrics scraped 20/s', 'ms', p(busyJoin, 50));
  b.figure('scrape.join.busy.p99', g, 'weft\'s Join p99, /metrics scraped 20/s', 'ms', p(busyJoin, 99));
  b.details.scrape = details;
}
