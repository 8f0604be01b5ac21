// 5. Data path: TCP throughput (iperf3) and ping RTT between containers on
// hosts 1 and 2 over weft, against the same between the two host namespaces
// over the bare underlay; then again with a jumbo-frame underlay (MTU 9000,
// weft network with -o mtu=8950). iperf3 and iputils ping come from the
// machine and run inside each container's network namespace (nsenter).
import type { ChildProcess } from 'node:child_process';
import { BUSYBOX_IMAGE, run, runOk, type LabHost } from '../../test/lab/host';
import type { Bench } from '../lib/context';
import { containerPid, log, spawnTracked } from '../lib/lab';
import { median } from '../lib/stats';
import { ensureWeftNetwork } from './docker';

const PORT = 5201;

export interface Endpoint {
  /** command prefix that enters the namespace */
  enter: string[];
  ip: string;
}

export function hostEndpoint(h: LabHost): Endpoint {
  return { enter: ['ip', 'netns', 'exec', h.name], ip: h.ip! };
}

export async function containerEndpoint(h: LabHost, name: string, network: string): Promise<Endpoint> {
  const pid = await containerPid(h, name);
  const ip = (await h.dockerOk(['inspect', '-f', `{{(index .NetworkSettings.Networks "${network}").IPAddress}}`, name])).stdout.trim();
  return { enter: ['nsenter', `--net=/proc/${pid}/ns/net`], ip };
}

export function startServer(e: Endpoint): ChildProcess {
  const [cmd, ...pre] = e.enter;
  return spawnTracked(cmd!, [...pre, 'iperf3', '-s', '-B', e.ip, '-p', String(PORT)]);
}

export async function waitListening(e: Endpoint): Promise<void> {
  const [cmd, ...pre] = e.enter;
  for (let i = 0; i < 100; i++) {
    const r = await run(cmd!, [...pre, 'ss', '-Htln', `sport = :${PORT}`], { timeoutMs: 5_000 });
    if (r.stdout.includes(`:${PORT}`)) return;
    await new Promise((res) => setTimeout(res, 50));
  }
  throw new Error(`iperf3 server on ${e.ip} did not listen`);
}

/** Gbit/s received, from iperf3's JSON. */
export async function iperf(client: Endpoint, server: Endpoint, seconds: number): Promise<number> {
  const [cmd, ...pre] = client.enter;
  const r = await runOk(cmd!, [...pre, 'iperf3', '-c', server.ip, '-p', String(PORT), '-t', String(seconds), '-J'], { timeoutMs: (seconds + 20) * 1000 });
  const j = JSON.parse(r.stdout) as { end: { sum_received: { bits_per_second: number } } };
  return j.end.sum_received.bits_per_second / 1e9;
}

const PINGS = 200;

/** Median RTT in ms of 200 pings 5 ms apart (closer together, CPU wake-up latency would blur the path's own cost less). */
export async function rtt(client: Endpoint, server: Endpoint): Promise<number> {
  const [cmd, ...pre] = client.enter;
  const r = await runOk(cmd!, [...pre, 'ping', '-n', '-c', String(PINGS), '-i', '0.005', server.ip], { timeoutMs: 30_000 });
  const times = [...r.stdout.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]));
  if (times.length < PINGS * 0.9) throw new Error(`ping ${server.ip}: only ${times.length} replies of ${PINGS}`);
  return median(times);
}

async function setUnderlayMtu(b: Bench, mtu: number): Promise<void> {
  const ul = b.lab.ul;
  await runOk('ip', ['-n', ul.name, 'link', 'set', ul.bridge, 'mtu', String(mtu)]);
  for (const p of ul.ports.values()) {
    await runOk('ip', ['-n', ul.name, 'link', 'set', p.port, 'mtu', String(mtu)]);
    await runOk('ip', ['-n', p.host, 'link', 'set', p.ifname, 'mtu', String(mtu)]);
  }
}

interface Variant {
  key: string;
  label: string;
  network: string;
  subnet: string;
  underlayMtu: number;
  opts: string[];
}

const VARIANTS: Variant[] = [
  { key: 'std', label: 'MTU 1500 underlay', network: 'wbdata', subnet: '10.90.6.0/24', underlayMtu: 1500, opts: [] },
  { key: 'jumbo', label: 'MTU 9000 underlay', network: 'wbjumbo', subnet: '10.90.7.0/24', underlayMtu: 9000, opts: ['-o', 'mtu=8950'] },
];

export async function dataPath(b: Bench): Promise<void> {
  const { cfg } = b;
  const [h1, h2] = b.lab.hosts as [LabHost, LabHost];
  const details: Record<string, unknown> = {};
  try {
    for (const v of VARIANTS) {
      log(`data: iperf3 and ping, weft vs underlay, ${v.label}`);
      await setUnderlayMtu(b, v.underlayMtu);
      await ensureWeftNetwork(b, v.network, v.subnet, v.opts);
      const srvName = `wb-${v.key}-srv`;
      const cliName = `wb-${v.key}-cli`;
      await h2.dockerOk(['run', '-d', '--name', srvName, '--network', v.network, BUSYBOX_IMAGE, 'sleep', '3600']);
      await h1.dockerOk(['run', '-d', '--name', cliName, '--network', v.network, BUSYBOX_IMAGE, 'sleep', '3600']);
      const pairs = {
        overlay: { cli: await containerEndpoint(h1, cliName, v.network), srv: await containerEndpoint(h2, srvName, v.network) },
        underlay: { cli: hostEndpoint(h1), srv: hostEndpoint(h2) },
      };
      const servers = [startServer(pairs.overlay.srv), startServer(pairs.underlay.srv)];
      try {
        await waitListening(pairs.overlay.srv);
        await waitListening(pairs.underlay.srv);
        const mtuIn = await run(pairs.overlay.cli.enter[0]!, [...pairs.overlay.cli.enter.slice(1), 'cat', '/sys/class/net/eth0/mtu']);
        // warm-up: ARP, TCP metrics
        await rtt(pairs.overlay.cli, pairs.overlay.srv);
        await rtt(pairs.underlay.cli, pairs.underlay.srv);
        const tput = { overlay: [] as number[], underlay: [] as number[] };
        const lat = { overlay: [] as number[], underlay: [] as number[] };
        for (let r = 0; r < cfg.reps; r++) {
          const order: Array<'overlay' | 'underlay'> = r % 2 === 0 ? ['overlay', 'underlay'] : ['underlay', 'overlay'];
          for (const k of order) lat[k].push(await rtt(pairs[k].cli, pairs[k].srv));
          for (const k of order) tput[k].push(await iperf(pairs[k].cli, pairs[k].srv, cfg.iperfSeconds));
        }
        const g = `data path, ${v.label}`;
        b.figure(`data.${v.key}.tput.weft`, g, 'TCP throughput, containers over weft', 'Gbit/s', tput.overlay, undefined,
          `container MTU ${mtuIn.stdout.trim()}`);
        b.figure(`data.${v.key}.tput.underlay`, g, 'TCP throughput, hosts over the underlay', 'Gbit/s', tput.underlay);
        b.figure(`data.${v.key}.tput.ratio`, g, 'throughput weft / underlay', 'x', tput.overlay.map((x, i) => x / tput.underlay[i]!),
          { of: 'median', op: '>=', value: 0.9 });
        b.figure(`data.${v.key}.rtt.weft`, g, 'ping RTT, containers over weft (median of 200)', 'ms', lat.overlay);
        b.figure(`data.${v.key}.rtt.underlay`, g, 'ping RTT, hosts over the underlay (median of 200)', 'ms', lat.underlay);
        b.figure(`data.${v.key}.rtt.ratio`, g, 'RTT weft / underlay', 'x', lat.overlay.map((x, i) => x / lat.underlay[i]!),
          { of: 'median', op: '<=', value: 1.3 });
        details[v.key] = { tput, lat, containerMtu: Number(mtuIn.stdout.trim()) };
      } finally {
        for (const s of servers) s.kill('SIGKILL');
        await h1.docker(['rm', '-f', cliName]);
        await h2.docker(['rm', '-f', srvName]);
      }
    }
  } finally {
    await setUnderlayMtu(b, 1500).catch(() => undefined);
  }
  b.details.data = details;
}
