// 8. Container starts while /metrics is scraped 20 times a second (issue 12):
// a scrape must never hold a Join up. On host 1, with its weft serving
// metrics on 127.0.0.1:9464 inside the host's namespace, 50 `docker run -d`
// (5 at a time) without scraping, then 50 with a scraper polling /metrics
// every 50 ms from inside the same namespace. Figures: the start times (p50,
// p99), the Joins weft answered, and the scrapes answered.
import { BUSYBOX_IMAGE } from '../../test/lab/host';
import type { Bench } from '../lib/context';
import { log, logSize, pluginCallsSince, spawnTracked } from '../lib/lab';
import { percentile } from '../lib/stats';
import { dockerTimed } from '../lib/timing';
import { ensureWeftNetwork } from './docker';

const NET = 'wbscrape';
const SUBNET = '10.90.8.0/24';
export const METRICS_PORT = 9464;
const N = 50;
const PARALLEL = 5;

async function startMany(b: Bench, tag: string): Promise<{ ms: number[]; failed: number; joins: number }> {
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
  const joins = pluginCallsSince(w, from).filter((c) => c.call === 'NetworkDriver.Join').length;
  await h.docker(['rm', '-f', ...Array.from({ length: N }, (_, i) => `wb-${tag}-${i}`)], { timeoutMs: 180_000 });
  return { ms, failed, joins };
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
  const g = `docker run -d, ${N} containers (${PARALLEL} at a time) on host 1`;
  const quiet: number[][] = [];
  const busy: number[][] = [];
  const details: unknown[] = [];
  for (let r = 0; r < b.cfg.reps; r++) {
    log(`scrape: ${N} containers without scraping, then with /metrics scraped 20 times a second (rep ${r + 1})`);
    const q = await startMany(b, `q${r}`);
    const scraper = startScraper(h.netns);
    const s = await startMany(b, `s${r}`);
    const scrapes = await scraper.stop();
    quiet.push(q.ms);
    busy.push(s.ms);
    details.push({ quiet: q, scraped: { ...s, scrapes } });
    b.figure(`scrape.joins.${r}`, g, `rep ${r + 1}: Joins answered / containers started, while scraped`, 'count', [s.joins], undefined,
      `${s.ms.length} started, ${s.failed} failed; ${scrapes.ok} scrapes answered, ${scrapes.bad} failed`);
  }
  const p = (runs: number[][], q: number) => runs.map((x) => percentile(x, q));
  b.figure('scrape.quiet.p50', g, 'start time p50, no scraping', 'ms', p(quiet, 50));
  b.figure('scrape.quiet.p99', g, 'start time p99, no scraping', 'ms', p(quiet, 99));
  b.figure('scrape.busy.p50', g, 'start time p50, /metrics scraped 20/s', 'ms', p(busy, 50));
  b.figure('scrape.busy.p99', g, 'start time p99, /metrics scraped 20/s', 'ms', p(busy, 99));
  b.details.scrape = details;
}
