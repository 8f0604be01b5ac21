// 2. `docker run -d` on a weft network vs the default bridge (and a
// user-defined bridge), 3. convergence across hosts, 4. network propagation:
// what users see through Docker.
import { BUSYBOX_IMAGE, waitFor, type LabHost } from '../../test/lab/host';
import type { Bench } from '../lib/context';
import { containerPid, dockerApi, inNetns, log, logSize, pluginCallsSince } from '../lib/lab';
import { median } from '../lib/stats';
import { dockerTimed, nowMs, startPinger } from '../lib/timing';

export const RUN_NET = 'wbench';
const RUN_SUBNET = '10.90.3.0/24';

const ensured = new Set<string>();

/** Creates a weft network on host 1 (once) and waits until every host lists it. */
export async function ensureWeftNetwork(b: Bench, name: string, subnet: string, opts: string[] = []): Promise<void> {
  if (ensured.has(name)) return;
  const [h1, ...others] = b.lab.hosts;
  await h1!.dockerOk(['network', 'create', '-d', 'weft', '--ipam-driver', 'weft', '--subnet', subnet, ...opts, name]);
  for (const h of others) {
    await waitFor(async () => (await h.docker(['network', 'inspect', '-f', '{{.Name}}', name], { timeoutMs: 10_000 })).code === 0,
      { timeoutMs: 30_000, intervalMs: 50, what: `network ${name} on ${h.name}` });
  }
  ensured.add(name);
}

async function rmf(h: LabHost, ...names: string[]): Promise<void> {
  await h.docker(['rm', '-f', ...names], { timeoutMs: 60_000 });
}

// ------------------------------------------------------------ 2. docker run -d

const USER_BRIDGE = 'wbubr';
type RunKind = 'weft' | 'bridge' | 'userbridge';
const RUN_ARGS: Record<RunKind, string[]> = { weft: ['--network', RUN_NET], bridge: [], userbridge: ['--network', USER_BRIDGE] };

export async function dockerRun(b: Bench): Promise<void> {
  const { cfg } = b;
  const h = b.lab.hosts[0]!;
  await ensureWeftNetwork(b, RUN_NET, RUN_SUBNET);
  // A user-defined bridge network: what Docker itself costs for any network
  // other than the default bridge (embedded DNS, per-network iptables rules).
  if ((await h.docker(['network', 'inspect', USER_BRIDGE])).code !== 0) {
    await h.dockerOk(['network', 'create', USER_BRIDGE]); // a subnet from the lab host's own default-address-pools
  }
  log(`run: docker run -d on ${RUN_NET} (weft) vs the default bridge vs a user-defined bridge, interleaved`);
  const kinds: RunKind[] = ['weft', 'bridge', 'userbridge'];
  const one = async (k: RunKind, name: string): Promise<number> =>
    (await dockerTimed(h, ['run', '-d', '--name', name, ...RUN_ARGS[k], BUSYBOX_IMAGE, 'sleep', '3600'])).ms;
  // warm-up round (first container start of the engine and of each network, page cache)
  for (const k of kinds) await one(k, `wb-warm-${k}`);
  await rmf(h, ...kinds.map((k) => `wb-warm-${k}`));
  const times: Record<RunKind, number[][]> = { weft: [], bridge: [], userbridge: [] };
  // weft's own share: the plugin calls it logged (debug level) during each run on weft
  const w = b.lab.wefts[0]!;
  const pluginMs: number[][] = [];
  const perCall: Record<string, number[]> = {};
  for (let r = 0; r < cfg.reps; r++) {
    const t: Record<RunKind, number[]> = { weft: [], bridge: [], userbridge: [] };
    const p: number[] = [];
    for (let i = 0; i < cfg.runN; i++) {
      // rotate which goes first, so that drift favours none
      const order = kinds.map((_, j) => kinds[(i + j) % kinds.length]!);
      for (const k of order) {
        const from = logSize(w);
        t[k].push(await one(k, `wb-run-${k}`));
        if (k !== 'weft') continue;
        const calls = pluginCallsSince(w, from);
        if (calls.length) p.push(calls.reduce((a, c) => a + c.ms, 0));
        for (const c of calls) (perCall[c.call] ??= []).push(c.ms);
      }
      await rmf(h, ...kinds.map((k) => `wb-run-${k}`));
    }
    for (const k of kinds) times[k].push(t[k]);
    if (p.length) pluginMs.push(p);
  }
  const g = 'docker run -d';
  const med = (k: RunKind) => times[k].map(median);
  b.figure('run.weft', g, 'on a weft network', 'ms', med('weft'));
  b.figure('run.bridge', g, 'on the default bridge', 'ms', med('bridge'));
  b.figure('run.userbridge', g, 'on a user-defined bridge network', 'ms', med('userbridge'));
  b.figure('run.ratio', g, 'weft / default bridge', 'x', med('weft').map((w, i) => w / med('bridge')[i]!), { of: 'median', op: '<=', value: 1.15 },
    `median of ${cfg.runN} interleaved runs of each per repetition`);
  b.figure('run.ratio_userbridge', g, 'weft / user-defined bridge', 'x', med('weft').map((x, i) => x / med('userbridge')[i]!));
  if (pluginMs.length) {
    b.figure('run.weft_calls', g, "weft's plugin calls within one run on weft (from its debug log)", 'ms', pluginMs.map(median));
  }
  b.details.run = { ...times, pluginCallMsMedian: Object.fromEntries(Object.entries(perCall).map(([k, v]) => [k, Number(median(v).toFixed(2))])) };
}

// ------------------------------------------------------------ 3. convergence

export async function convergence(b: Bench): Promise<void> {
  const { cfg } = b;
  const [h1, h2] = b.lab.hosts as [LabHost, LabHost];
  await ensureWeftNetwork(b, RUN_NET, RUN_SUBNET);
  log('conv: a pinger on host 1 while host 2 starts the target; a client that starts when docker run returns');
  await rmf(h1, 'wb-pinger', 'wb-client');
  await h1.dockerOk(['run', '-d', '--name', 'wb-pinger', '--network', RUN_NET, BUSYBOX_IMAGE, 'sleep', '3600']);
  await h1.dockerOk(['run', '-d', '--name', 'wb-client', '--network', RUN_NET, BUSYBOX_IMAGE, 'sleep', '3600']);
  const pingerPid = await containerPid(h1, 'wb-pinger');
  const clientPid = await containerPid(h1, 'wb-client');
  const pingerIp = (await h1.dockerOk(['inspect', '-f', `{{(index .NetworkSettings.Networks "${RUN_NET}").IPAddress}}`, 'wb-pinger'])).stdout.trim();
  // The kernel retries an unanswered ARP request only every second
  // (retrans_time_ms 1000): at 10 ms, the pinger sees the path open within
  // one ping interval instead of up to a second later.
  for (const pid of [pingerPid, clientPid]) {
    const r = await inNetns(pid, ['sh', '-c', 'echo 10 > /proc/sys/net/ipv4/neigh/eth0/retrans_time_ms']);
    if (r.code !== 0) throw new Error(`cannot set retrans_time_ms in the container's namespace: ${r.stderr}`);
  }
  const before: number[] = [];
  const client: number[] = [];
  const baseline: number[] = [];
  const runMs: number[] = [];
  const n = cfg.reps * cfg.convN;
  for (let i = 0; i < n; i++) {
    const target = `10.90.3.${100 + (i % 100)}`;
    const name = `wb-target-${i}`;
    const pinger = startPinger(pingerPid, target, 30);
    await new Promise((r) => setTimeout(r, 300)); // pinging well before the run starts
    const r = await dockerTimed(h2, ['run', '-d', '--name', name, '--network', RUN_NET, '--ip', target, BUSYBOX_IMAGE, 'sleep', '3600']);
    const returned = r.end;
    const c = startPinger(clientPid, target, 5);
    const [first, firstC] = await Promise.all([
      Promise.race([pinger.firstReply, sleepThen(5_000, undefined)]),
      Promise.race([c.firstReply, sleepThen(5_000, undefined)]),
    ]);
    pinger.stop();
    c.stop();
    runMs.push(r.ms);
    before.push(first === undefined ? NaN : first - returned);
    client.push(firstC === undefined ? NaN : firstC - returned);
    if (first === undefined || firstC === undefined) log(`conv: no reply from ${target} within 5 s (pinger: ${pinger.output().slice(-300)})`);
    // the client's own start-up, for comparison: the same client to an address that is long ready, ARP cache flushed
    await inNetns(clientPid, ['ip', 'neigh', 'flush', 'dev', 'eth0']);
    const t0 = nowMs();
    const bl = startPinger(clientPid, pingerIp, 5);
    const fb = await Promise.race([bl.firstReply, sleepThen(5_000, undefined)]);
    bl.stop();
    baseline.push(fb === undefined ? NaN : fb - t0);
    await rmf(h2, name);
  }
  await rmf(h1, 'wb-pinger', 'wb-client');
  const g = 'convergence';
  b.figure('conv.first_reply_vs_return', g, 'first reply to a pinger already running, relative to docker run -d returning', 'ms', before,
    { of: 'max', op: '<', value: 0 }, 'negative: the container answered before docker run -d returned');
  b.figure('conv.client_first_reply', g, 'client started when docker run -d returns: delay to its first reply', 'ms', client,
    { of: 'median', op: '<', value: 10 });
  b.figure('conv.client_baseline', g, 'same client to a long-ready address (its own start-up + ARP + RTT)', 'ms', baseline);
  b.figure('conv.docker_run_host2', g, 'docker run -d --ip on host 2 (for reference)', 'ms', runMs);
  b.details.conv = { before, client, baseline, runMs };
}

function sleepThen<T>(ms: number, v: T): Promise<T> {
  return new Promise((r) => setTimeout(() => r(v), ms));
}

// ------------------------------------------------------------ 4. propagation

export async function propagation(b: Bench): Promise<void> {
  const { cfg } = b;
  const [h1, h2, h3] = b.lab.hosts as [LabHost, LabHost, LabHost];
  log('prop: docker network create on host 1 until host 2 lists it');
  const seen: number[] = [];
  const seenAll: number[] = [];
  const removed: number[] = [];
  const createMs: number[] = [];
  const n = cfg.reps * cfg.propN;
  for (let i = 0; i < n; i++) {
    const name = `wbp-${i}`;
    const subnet = `10.90.${64 + (i % 64)}.0/24`;
    const listed = (h: LabHost) => async () => {
      const r = await dockerApi(h, `/networks?filters=${encodeURIComponent(JSON.stringify({ name: { [name]: true } }))}`);
      return r.status === 200 && (JSON.parse(r.body) as Array<{ Name: string }>).some((x) => x.Name === name);
    };
    const watch2 = pollUntil(listed(h2), 20_000);
    const watch3 = pollUntil(listed(h3), 20_000);
    const r = await dockerTimed(h1, ['network', 'create', '-d', 'weft', '--ipam-driver', 'weft', '--subnet', subnet, name]);
    const [t2, t3] = await Promise.all([watch2, watch3]);
    createMs.push(r.ms);
    seen.push(t2 === undefined ? NaN : t2 - r.end);
    seenAll.push(t2 === undefined || t3 === undefined ? NaN : Math.max(t2, t3) - r.end);
    const gone2 = pollUntil(async () => !(await listed(h2)()), 20_000);
    const gone3 = pollUntil(async () => !(await listed(h3)()), 20_000);
    const rm = await dockerTimed(h1, ['network', 'rm', name]);
    const [g2, g3] = await Promise.all([gone2, gone3]);
    removed.push(g2 === undefined || g3 === undefined ? NaN : Math.max(g2, g3) - rm.end);
  }
  const g = 'network propagation';
  b.figure('prop.listed_host2', g, 'docker network create returned on host 1 -> listed on host 2', 'ms', seen, { of: 'median', op: '<', value: 100 });
  b.figure('prop.listed_all', g, '... -> listed on hosts 2 and 3', 'ms', seenAll);
  b.figure('prop.create', g, 'docker network create on host 1 (for reference)', 'ms', createMs);
  b.figure('prop.removed_all', g, 'docker network rm returned on host 1 -> gone from hosts 2 and 3', 'ms', removed);
  b.details.prop = { seen, seenAll, createMs, removed };
}

/** Polls `cond` back to back (each poll is one Docker API request, about a millisecond) until it holds; returns when (epoch ms). */
export async function pollUntil(cond: () => Promise<boolean>, timeoutMs: number): Promise<number | undefined> {
  const deadline = nowMs() + timeoutMs;
  for (let i = 0; i < 1_000_000 && nowMs() < deadline; i++) {
    try {
      if (await cond()) return nowMs();
    } catch {
      /* engine busy: poll again */
    }
    await new Promise((r) => setTimeout(r, 2));
  }
  return undefined;
}
