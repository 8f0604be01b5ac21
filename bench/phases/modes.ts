// `modes` (issue 15): weft's network modes side by side with what users would
// use instead, every figure of the issue in one run, with the ratios:
//   - TCP throughput (iperf3) and ping RTT between hosts 1 and 2: the bare
//     underlay (host namespaces), a container on Docker's default bridge to
//     the other host (NAT, no overlay), and containers on each weft mode;
//   - `docker run -d` on each weft mode against the default bridge;
//   - `docker network create` on host 1 -> listed on host 2;
//   - a container started on host 1: when its name resolves on host 2,
//     relative to `docker run -d` returning (negative: before).
// A mode is a set of `-o` options for `docker network create` (MODES below;
// WEFT_BENCH_MODES adds or replaces rows). A mode the weft under test refuses
// (`-o mode=routed` before routed mode exists) gets a row saying "not
// available" and the error, and the other rows are measured as usual.
import { spawn, type ChildProcess } from 'node:child_process';
import { BUSYBOX_IMAGE, DOCKER_CLI, type LabHost } from '../../test/lab/host';
import type { Bench } from '../lib/context';
import { dockerApi, log } from '../lib/lab';
import { fmt, median, type Goal } from '../lib/stats';
import { dockerTimed, nowMs } from '../lib/timing';
import { containerEndpoint, hostEndpoint, iperf, rtt, startServer, waitListening, type Endpoint } from './datapath';
import { pollUntil } from './docker';

export interface Mode {
  key: string;
  label: string;
  /** `docker network create` options, e.g. ['-o', 'mode=routed'] */
  opts: string[];
  /** goals from the issue: throughput ratio at least, RTT ratio at most */
  tputGoal?: number;
  rttGoal?: number;
}

export const MODES: Mode[] = [
  { key: 'vxlan', label: 'weft VXLAN', opts: [], tputGoal: 0.8, rttGoal: 1.5 },
  { key: 'routed', label: 'weft routed', opts: ['-o', 'mode=routed'], tputGoal: 0.9, rttGoal: 1.25 },
];

/** WEFT_BENCH_MODES="key:opt=v,opt=v;key2:" replaces MODES (e.g. "vxlan:;jumbo:mtu=8950"). */
export function modesFromEnv(): Mode[] {
  const v = process.env.WEFT_BENCH_MODES;
  if (!v) return MODES;
  return v.split(';').filter(Boolean).map((spec) => {
    const m = /^([a-z][a-z0-9]{0,15}):(.*)$/.exec(spec.trim());
    if (!m) throw new Error(`WEFT_BENCH_MODES: "${spec}" is not KEY:OPT=VALUE,... (KEY: lower-case letters and digits)`);
    const opts = m[2]!.split(',').map((o) => o.trim()).filter(Boolean);
    for (const o of opts) if (!/^[\w.-]+=[\w.:/-]*$/.test(o)) throw new Error(`WEFT_BENCH_MODES: option "${o}" is not NAME=VALUE`);
    const known = MODES.find((x) => x.key === m[1]);
    return { ...(known ?? {}), key: m[1]!, label: known?.label ?? `weft ${m[1]}`, opts: opts.flatMap((o) => ['-o', o]) };
  });
}

const DNS = '169.254.53.53';
const NET = (m: Mode) => `wbm-${m.key}`;

interface Row {
  label: string;
  available: boolean;
  why?: string;
  tput?: number[];
  rtt?: number[];
  run?: number[];
  runBridge?: number[];
  listed?: number[];
  nameMs?: number[];
}

export async function modes(b: Bench): Promise<void> {
  const { cfg } = b;
  const [h1, h2] = b.lab.hosts as [LabHost, LabHost];
  const list = modesFromEnv();
  const rows = new Map<string, Row>();
  const live: Array<{ m: Mode; subnet: string }> = [];
  for (const [i, m] of list.entries()) {
    const subnet = `10.93.${i}.0/24`;
    const r = await h1.docker(['network', 'create', '-d', 'weft', '--ipam-driver', 'weft', '--subnet', subnet, ...m.opts, NET(m)]);
    if (r.code !== 0) {
      const why = r.stderr.trim().replace(/^Error response from daemon: /, '').slice(0, 200);
      rows.set(m.key, { label: m.label, available: false, why });
      log(`modes: ${m.label} (${m.opts.join(' ') || 'no options'}) not available: ${why}`);
      b.notes.push(`${m.label} (\`${m.opts.join(' ')}\`): not available in the weft under test: ${why}`);
      continue;
    }
    await pollUntil(listedOn(h2, NET(m)), 30_000);
    rows.set(m.key, { label: m.label, available: true });
    live.push({ m, subnet });
  }
  try {
    await dataRows(b, h1, h2, live.map((l) => l.m), rows);
    await runRows(b, h1, live.map((l) => l.m), rows);
    await listedRows(b, h1, h2, live.map((l) => l.m), rows);
    await nameRows(b, h1, h2, live.map((l) => l.m), rows);
  } finally {
    for (const l of live) await h1.docker(['network', 'rm', NET(l.m)], { timeoutMs: 60_000 });
  }
  b.tables.push({ title: `weft's modes side by side (hosts 1 and 2; medians of ${cfg.reps} repetitions; ratios per repetition, then the median)`, text: sideBySide(rows, list) });
  b.details.modes = Object.fromEntries(rows);
}

// ------------------------------------------------------------ data path

async function dataRows(b: Bench, h1: LabHost, h2: LabHost, ms: Mode[], rows: Map<string, Row>): Promise<void> {
  const { cfg } = b;
  log(`modes: iperf3 and ping: underlay, default bridge, ${ms.map((m) => m.label).join(', ')}`);
  const names: Array<[LabHost, string]> = [];
  const servers: ChildProcess[] = [];
  try {
    const pairs = new Map<string, { cli: Endpoint; srv: Endpoint }>();
    pairs.set('underlay', { cli: hostEndpoint(h1), srv: hostEndpoint(h2) });
    await h1.dockerOk(['run', '-d', '--name', 'wbm-bridge-cli', BUSYBOX_IMAGE, 'sleep', '3600']);
    names.push([h1, 'wbm-bridge-cli']);
    pairs.set('bridge', { cli: await containerEndpoint(h1, 'wbm-bridge-cli', 'bridge'), srv: hostEndpoint(h2) });
    for (const m of ms) {
      await h2.dockerOk(['run', '-d', '--name', `wbm-${m.key}-srv`, '--network', NET(m), BUSYBOX_IMAGE, 'sleep', '3600']);
      await h1.dockerOk(['run', '-d', '--name', `wbm-${m.key}-cli`, '--network', NET(m), BUSYBOX_IMAGE, 'sleep', '3600']);
      names.push([h2, `wbm-${m.key}-srv`], [h1, `wbm-${m.key}-cli`]);
      pairs.set(m.key, { cli: await containerEndpoint(h1, `wbm-${m.key}-cli`, NET(m)), srv: await containerEndpoint(h2, `wbm-${m.key}-srv`, NET(m)) });
    }
    // one iperf3 server per namespace: host 2's serves the underlay and the bridge rows
    for (const [k, p] of pairs) if (k !== 'bridge') servers.push(startServer(p.srv));
    for (const [k, p] of pairs) if (k !== 'bridge') await waitListening(p.srv);
    const keys = [...pairs.keys()];
    for (const k of keys) await rtt(pairs.get(k)!.cli, pairs.get(k)!.srv); // warm-up: ARP, TCP metrics
    const tput = new Map(keys.map((k) => [k, [] as number[]]));
    const lat = new Map(keys.map((k) => [k, [] as number[]]));
    for (let r = 0; r < cfg.reps; r++) {
      const order = keys.map((_, j) => keys[(r + j) % keys.length]!); // rotated: drift favours none
      for (const k of order) lat.get(k)!.push(await rtt(pairs.get(k)!.cli, pairs.get(k)!.srv));
      for (const k of order) tput.get(k)!.push(await iperf(pairs.get(k)!.cli, pairs.get(k)!.srv, cfg.iperfSeconds));
    }
    const g = 'modes: data path';
    const ul = { tput: tput.get('underlay')!, rtt: lat.get('underlay')! };
    rows.set('underlay', { label: 'underlay (host to host)', available: true, tput: ul.tput, rtt: ul.rtt });
    rows.set('bridge', { label: "Docker's default bridge (container to the other host, NAT)", available: true, tput: tput.get('bridge'), rtt: lat.get('bridge') });
    b.figure('modes.underlay.tput', g, 'TCP throughput, hosts over the underlay', 'Gbit/s', ul.tput);
    b.figure('modes.underlay.rtt', g, 'ping RTT, hosts over the underlay (median of 200)', 'ms', ul.rtt);
    b.figure('modes.bridge.tput', g, 'TCP throughput, default-bridge container to the other host', 'Gbit/s', tput.get('bridge')!);
    b.figure('modes.bridge.tput_ratio', g, 'throughput default bridge / underlay', 'x', ratio(tput.get('bridge')!, ul.tput));
    b.figure('modes.bridge.rtt', g, 'ping RTT, default-bridge container to the other host', 'ms', lat.get('bridge')!);
    b.figure('modes.bridge.rtt_ratio', g, 'RTT default bridge / underlay', 'x', ratio(lat.get('bridge')!, ul.rtt));
    for (const m of ms) {
      const row = rows.get(m.key)!;
      row.tput = tput.get(m.key)!;
      row.rtt = lat.get(m.key)!;
      b.figure(`modes.${m.key}.tput`, g, `TCP throughput, containers over ${m.label}`, 'Gbit/s', row.tput);
      b.figure(`modes.${m.key}.tput_ratio`, g, `throughput ${m.label} / underlay`, 'x', ratio(row.tput, ul.tput), goal('median', '>=', m.tputGoal));
      b.figure(`modes.${m.key}.rtt`, g, `ping RTT, containers over ${m.label} (median of 200)`, 'ms', row.rtt);
      b.figure(`modes.${m.key}.rtt_ratio`, g, `RTT ${m.label} / underlay`, 'x', ratio(row.rtt, ul.rtt), goal('median', '<=', m.rttGoal));
    }
  } finally {
    for (const s of servers) s.kill('SIGKILL');
    for (const [h, n] of names) await h.docker(['rm', '-f', n], { timeoutMs: 60_000 });
  }
}

// ------------------------------------------------------------ docker run -d

async function runRows(b: Bench, h1: LabHost, ms: Mode[], rows: Map<string, Row>): Promise<void> {
  const { cfg } = b;
  if (!ms.length) return;
  log(`modes: docker run -d on ${ms.map((m) => m.label).join(', ')} and on the default bridge, interleaved`);
  const kinds = ['bridge', ...ms.map((m) => m.key)];
  const args = (k: string) => (k === 'bridge' ? [] : ['--network', NET(ms.find((m) => m.key === k)!)]);
  const one = async (k: string) => (await dockerTimed(h1, ['run', '-d', '--name', `wbm-run-${k}`, ...args(k), BUSYBOX_IMAGE, 'sleep', '3600'])).ms;
  for (const k of kinds) await one(k); // warm-up
  await h1.docker(['rm', '-f', ...kinds.map((k) => `wbm-run-${k}`)], { timeoutMs: 60_000 });
  const per = new Map(kinds.map((k) => [k, [] as number[]]));
  for (let r = 0; r < cfg.reps; r++) {
    const t = new Map(kinds.map((k) => [k, [] as number[]]));
    for (let i = 0; i < cfg.runN; i++) {
      for (const k of kinds.map((_, j) => kinds[(i + j) % kinds.length]!)) t.get(k)!.push(await one(k));
      await h1.docker(['rm', '-f', ...kinds.map((k) => `wbm-run-${k}`)], { timeoutMs: 60_000 });
    }
    for (const k of kinds) per.get(k)!.push(median(t.get(k)!));
  }
  const g = 'modes: docker run -d';
  const bridge = per.get('bridge')!;
  b.figure('modes.bridge.run', g, 'on the default bridge', 'ms', bridge);
  rows.get('bridge')!.run = bridge;
  for (const m of ms) {
    const row = rows.get(m.key)!;
    row.run = per.get(m.key)!;
    row.runBridge = bridge;
    b.figure(`modes.${m.key}.run`, g, `on ${m.label}`, 'ms', row.run);
    b.figure(`modes.${m.key}.run_ratio`, g, `${m.label} / default bridge`, 'x', ratio(row.run, bridge), undefined,
      `median of ${cfg.runN} interleaved runs of each per repetition`);
  }
}

// ------------------------------------------------------------ network listed on host 2

function listedOn(h: LabHost, name: string): () => Promise<boolean> {
  return async () => {
    const r = await dockerApi(h, `/networks?filters=${encodeURIComponent(JSON.stringify({ name: { [name]: true } }))}`);
    return r.status === 200 && (JSON.parse(r.body) as Array<{ Name: string }>).some((x) => x.Name === name);
  };
}

async function listedRows(b: Bench, h1: LabHost, h2: LabHost, ms: Mode[], rows: Map<string, Row>): Promise<void> {
  const { cfg } = b;
  const g = 'modes: network listed on host 2';
  for (const [mi, m] of ms.entries()) {
    log(`modes: docker network create ${m.opts.join(' ')} on host 1 until host 2 lists it`);
    const seen: number[] = [];
    for (let i = 0; i < cfg.reps * cfg.propN; i++) {
      const name = `wbm-p${m.key}-${i}`;
      const watch = pollUntil(listedOn(h2, name), 20_000);
      const r = await dockerTimed(h1, ['network', 'create', '-d', 'weft', '--ipam-driver', 'weft', '--subnet', `10.94.${mi * 32 + (i % 32)}.0/24`, ...m.opts, name]);
      const t = await watch;
      seen.push(t === undefined ? NaN : t - r.end);
      const gone = pollUntil(async () => !(await listedOn(h2, name)()), 20_000);
      await dockerTimed(h1, ['network', 'rm', name]);
      await gone;
    }
    rows.get(m.key)!.listed = seen;
    b.figure(`modes.${m.key}.listed`, g, `${m.label}: create returned on host 1 -> listed on host 2`, 'ms', seen, { of: 'median', op: '<=', value: 60 },
      'negative: listed before the CLI returned');
  }
}

// ------------------------------------------------------------ name resolvable on host 2

/** `docker exec -i NAME sh` kept open: each line written runs at once; `onLine` sees its output lines as they come. */
function shellIn(h: LabHost, name: string, onLine: (line: string, at: number) => void): { write(cmd: string): void; close(): void } {
  const c = spawn(DOCKER_CLI, ['exec', '-i', name, 'sh'], {
    env: { ...process.env, DOCKER_HOST: h.dockerHost, DOCKER_CONFIG: `${h.dir}/docker-config`, DOCKER_CLI_HINTS: 'false' }, stdio: ['pipe', 'pipe', 'ignore'],
  });
  let partial = '';
  c.stdout!.setEncoding('utf8').on('data', (d: string) => {
    const at = nowMs();
    const lines = (partial + d).split('\n');
    partial = lines.pop() ?? '';
    for (const l of lines) onLine(l, at);
  });
  return { write: (cmd) => c.stdin!.write(`${cmd}\n`), close: () => c.kill('SIGKILL') };
}

async function nameRows(b: Bench, h1: LabHost, h2: LabHost, ms: Mode[], rows: Map<string, Row>): Promise<void> {
  const { cfg } = b;
  const g = 'modes: name resolvable on host 2';
  for (const m of ms) {
    log(`modes: ${m.label}: docker run -d --name on host 1; host 2 asks for the name from before until it resolves`);
    await h2.dockerOk(['run', '-d', '--name', `wbm-asker-${m.key}`, '--network', NET(m), BUSYBOX_IMAGE, 'sleep', '3600']);
    const seen = new Map<string, number>();
    const sh = shellIn(h2, `wbm-asker-${m.key}`, (line, at) => {
      const r = /^RESOLVED (\S+)$/.exec(line.trim());
      if (r && !seen.has(r[1]!)) seen.set(r[1]!, at);
    });
    const names: string[] = [];
    try {
      // host 2's weft knows the asker once it resolves a name that exists
      await h1.dockerOk(['run', '-d', '--name', `wbm-known-${m.key}`, '--network', NET(m), BUSYBOX_IMAGE, 'sleep', '3600']);
      names.push(`wbm-known-${m.key}`);
      sh.write(`until nslookup wbm-known-${m.key} ${DNS} >/dev/null 2>&1; do usleep 2000; done; echo RESOLVED wbm-known-${m.key}`);
      if ((await pollUntil(async () => seen.has(`wbm-known-${m.key}`), 30_000)) === undefined) throw new Error(`host 2 never resolved wbm-known-${m.key}`);
      const delta: number[] = [];
      for (let i = 0; i < cfg.reps * cfg.convN; i++) {
        const name = `wbm-n${m.key}-${i}`;
        // asking well before the run starts, every 2 ms or so, until it resolves
        sh.write(`until nslookup ${name} ${DNS} >/dev/null 2>&1; do usleep 2000; done; echo RESOLVED ${name}`);
        await new Promise((r) => setTimeout(r, 200));
        const r = await dockerTimed(h1, ['run', '-d', '--name', name, '--network', NET(m), BUSYBOX_IMAGE, 'sleep', '3600']);
        names.push(name);
        const t = await pollUntil(async () => seen.has(name), 10_000);
        delta.push(t === undefined ? NaN : seen.get(name)! - r.end);
        await h1.docker(['rm', '-f', name], { timeoutMs: 60_000 });
      }
      const row = rows.get(m.key)!;
      row.nameMs = delta;
      b.figure(`modes.${m.key}.name`, g, `${m.label}: name resolves on host 2, relative to docker run -d returning on host 1`, 'ms', delta,
        { of: 'max', op: '<', value: 0 }, 'negative: before it returned; a lookup every ~3 ms (busybox nslookup to weft\'s DNS)');
    } finally {
      sh.close();
      await h1.docker(['rm', '-f', ...names], { timeoutMs: 60_000 });
      await h2.docker(['rm', '-f', `wbm-asker-${m.key}`], { timeoutMs: 60_000 });
    }
  }
}

// ------------------------------------------------------------ helpers

function ratio(a: number[], b: number[]): number[] {
  return a.map((x, i) => x / b[i]!);
}

function goal(of: Goal['of'], op: Goal['op'], value: number | undefined): Goal | undefined {
  return value === undefined ? undefined : { of, op, value };
}

function sideBySide(rows: Map<string, Row>, list: Mode[]): string {
  const ul = rows.get('underlay');
  const br = rows.get('bridge');
  const med = (v?: number[]) => (v && v.length ? median(v.filter(Number.isFinite)) : NaN);
  const rat = (v?: number[], base?: number[]) => (v && base && v.length ? median(ratio(v, base).filter(Number.isFinite)) : NaN);
  const f = (v: number, unit = '') => (Number.isFinite(v) ? `${fmt(v)}${unit}` : '');
  const head = ['path', 'TCP Gbit/s', 'x underlay', 'RTT ms', 'x underlay', 'docker run -d ms', 'x default bridge', 'listed on host 2 after create, ms', 'name resolves on host 2, ms after run returns', 'resolved before run returned', 'note'];
  const out: string[][] = [head];
  const line = (key: string, r?: Row) => {
    if (!r) return;
    if (!r.available) {
      out.push([r.label, 'not available', '', '', '', '', '', '', '', '', r.why ?? '']);
      return;
    }
    const names = r.nameMs ?? [];
    out.push([
      r.label, f(med(r.tput)), key === 'underlay' ? '1' : f(rat(r.tput, ul?.tput)), f(med(r.rtt)), key === 'underlay' ? '1' : f(rat(r.rtt, ul?.rtt)),
      f(med(r.run)), key === 'bridge' ? '1' : f(rat(r.run, br?.run)), f(med(r.listed)), f(med(names)),
      names.length ? `${names.filter((x) => x < 0).length} of ${names.length}` : '', '',
    ]);
  };
  line('underlay', ul);
  line('bridge', br);
  for (const m of list) line(m.key, rows.get(m.key));
  const widths = head.map((_, i) => Math.max(...out.map((r) => r[i]!.length)));
  const fmtRow = (r: string[]) => `| ${r.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  return [fmtRow(out[0]!), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...out.slice(1).map(fmtRow)].join('\n');
}
