// 8. Encrypted networks: TCP throughput (iperf3) and ping RTT between
// containers on hosts 1 and 2 over an encrypted weft network (WireGuard), a
// plain weft network and the bare underlay, interleaved in one run; the
// WireGuard implementation in use is named in the figures. Then the gap a key
// rotation makes in a ping stream (host 1 rotates, host 2 pings it every 5 ms).
import { BUSYBOX_IMAGE, run, runOk, type LabHost } from '../../test/lab/host';
import { WEFT_CLI } from '../../test/lab/weft';
import type { Bench } from '../lib/context';
import { containerPid, log, spawnTracked } from '../lib/lab';
import { containerEndpoint, hostEndpoint, iperf, rtt, startServer, waitListening, type Endpoint } from './datapath';
import { ensureWeftNetwork } from './docker';

const ENC_NET = 'wbenc';
const ENC_SUBNET = '10.90.4.0/24';
const PLAIN_NET = 'wbplain';
const PLAIN_SUBNET = '10.90.5.0/24';

async function weftJson<T>(b: Bench, i: number, args: string[]): Promise<T> {
  const h = b.lab.hosts[i]!;
  const w = b.lab.wefts[i]!;
  const r = await runOk('ip', ['netns', 'exec', h.name, process.execPath, WEFT_CLI, ...args, '--json', '--socket', w.socket], { timeoutMs: 60_000 });
  return JSON.parse(r.stdout) as T;
}

/** Longest pause between consecutive replies of `ping -D` (epoch timestamps), in ms. */
function longestGap(out: string): { gapMs: number; replies: number } {
  const ts = [...out.matchAll(/^\[(\d+\.\d+)\] \d+ bytes from/gm)].map((m) => Number(m[1]) * 1000);
  let gap = 0;
  for (let i = 1; i < ts.length; i++) gap = Math.max(gap, ts[i]! - ts[i - 1]!);
  return { gapMs: gap, replies: ts.length };
}

export async function encryptedPath(b: Bench): Promise<void> {
  const { cfg } = b;
  const [h1, h2] = b.lab.hosts as [LabHost, LabHost];
  const st = await weftJson<{ wireguard?: { implementation?: string; ready: boolean } }>(b, 0, ['status']);
  if (!st.wireguard?.ready) throw new Error(`WireGuard is not up on ${h1.name}: ${JSON.stringify(st.wireguard)}`);
  const impl = st.wireguard.implementation ?? 'WireGuard';
  log(`crypt: iperf3 and ping, encrypted weft network (${impl}) vs plain weft network vs underlay`);
  await ensureWeftNetwork(b, ENC_NET, ENC_SUBNET, ['--opt', 'encrypted']);
  await ensureWeftNetwork(b, PLAIN_NET, PLAIN_SUBNET);
  const names = { encSrv: 'wb-enc-srv', encCli: 'wb-enc-cli', plainSrv: 'wb-plain-srv', plainCli: 'wb-plain-cli' };
  await h2.dockerOk(['run', '-d', '--name', names.encSrv, '--network', ENC_NET, BUSYBOX_IMAGE, 'sleep', '3600']);
  await h1.dockerOk(['run', '-d', '--name', names.encCli, '--network', ENC_NET, BUSYBOX_IMAGE, 'sleep', '3600']);
  await h2.dockerOk(['run', '-d', '--name', names.plainSrv, '--network', PLAIN_NET, BUSYBOX_IMAGE, 'sleep', '3600']);
  await h1.dockerOk(['run', '-d', '--name', names.plainCli, '--network', PLAIN_NET, BUSYBOX_IMAGE, 'sleep', '3600']);
  type Kind = 'encrypted' | 'plain' | 'underlay';
  const pairs: Record<Kind, { cli: Endpoint; srv: Endpoint }> = {
    encrypted: { cli: await containerEndpoint(h1, names.encCli, ENC_NET), srv: await containerEndpoint(h2, names.encSrv, ENC_NET) },
    plain: { cli: await containerEndpoint(h1, names.plainCli, PLAIN_NET), srv: await containerEndpoint(h2, names.plainSrv, PLAIN_NET) },
    underlay: { cli: hostEndpoint(h1), srv: hostEndpoint(h2) },
  };
  const servers = (Object.keys(pairs) as Kind[]).map((k) => startServer(pairs[k].srv));
  const kinds: Kind[] = ['encrypted', 'plain', 'underlay'];
  try {
    for (const k of kinds) await waitListening(pairs[k].srv);
    const mtu = await run(pairs.encrypted.cli.enter[0]!, [...pairs.encrypted.cli.enter.slice(1), 'cat', '/sys/class/net/eth0/mtu']);
    for (const k of kinds) await rtt(pairs[k].cli, pairs[k].srv); // warm-up: handshakes, ARP, TCP metrics
    const tput: Record<Kind, number[]> = { encrypted: [], plain: [], underlay: [] };
    const lat: Record<Kind, number[]> = { encrypted: [], plain: [], underlay: [] };
    for (let r = 0; r < cfg.reps; r++) {
      const order = r % 2 === 0 ? kinds : [...kinds].reverse();
      for (const k of order) lat[k].push(await rtt(pairs[k].cli, pairs[k].srv));
      for (const k of order) tput[k].push(await iperf(pairs[k].cli, pairs[k].srv, cfg.iperfSeconds));
    }
    const g = `encrypted network (${impl})`;
    b.figure('crypt.tput.encrypted', g, 'TCP throughput, containers over an encrypted weft network', 'Gbit/s', tput.encrypted, undefined, `container MTU ${mtu.stdout.trim()}`);
    b.figure('crypt.tput.plain', g, 'TCP throughput, containers over a plain weft network', 'Gbit/s', tput.plain);
    b.figure('crypt.tput.underlay', g, 'TCP throughput, hosts over the underlay', 'Gbit/s', tput.underlay);
    b.figure('crypt.tput.ratio.plain', g, 'throughput encrypted / plain weft', 'x', tput.encrypted.map((x, i) => x / tput.plain[i]!));
    b.figure('crypt.tput.ratio.underlay', g, 'throughput encrypted / underlay', 'x', tput.encrypted.map((x, i) => x / tput.underlay[i]!));
    b.figure('crypt.rtt.encrypted', g, 'ping RTT, containers over an encrypted weft network (median of 200)', 'ms', lat.encrypted);
    b.figure('crypt.rtt.plain', g, 'ping RTT, containers over a plain weft network (median of 200)', 'ms', lat.plain);
    b.figure('crypt.rtt.underlay', g, 'ping RTT, hosts over the underlay (median of 200)', 'ms', lat.underlay);
    b.figure('crypt.rtt.ratio.plain', g, 'RTT encrypted / plain weft', 'x', lat.encrypted.map((x, i) => x / lat.plain[i]!));
    // Key rotation: host 1 rotates while host 2's container pings host 1's every 5 ms.
    log('crypt: key rotation on host 1 while host 2 pings it every 5 ms');
    const gaps: number[] = [];
    const handshakes: number[] = [];
    const target = pairs.encrypted.cli.ip;
    const pid2 = await containerPid(h2, names.encSrv);
    for (let r = 0; r < cfg.reps; r++) {
      const ping = spawnTracked('nsenter', [`--net=/proc/${pid2}/ns/net`, 'ping', '-n', '-D', '-i', '0.005', '-W', '1', '-w', '6', target]);
      let out = '';
      ping.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      const done = new Promise<void>((res) => ping.on('exit', () => res()));
      await new Promise((res) => setTimeout(res, 1500));
      const rot = await weftJson<{ slowestHandshakeMs: number; waitingFor: string[] }>(b, 0, ['host', 'rotate-key']).catch((e: Error) => {
        throw new Error(`weft host rotate-key: ${e.message}`);
      });
      await done;
      const { gapMs, replies } = longestGap(out);
      if (replies < 100) throw new Error(`rotation ${r + 1}: only ${replies} ping replies`);
      gaps.push(gapMs);
      handshakes.push(rot.slowestHandshakeMs);
    }
    b.figure('crypt.rotate.gap', g, 'key rotation: longest gap between replies of a 5 ms ping stream', 'ms', gaps);
    b.figure('crypt.rotate.handshake', g, 'key rotation: until every peer completed a handshake with the new key', 'ms', handshakes);
    b.details.crypt = { implementation: impl, containerMtu: Number(mtu.stdout.trim()), tput, lat, rotationGapsMs: gaps, rotationHandshakesMs: handshakes };
  } finally {
    for (const s of servers) s.kill('SIGKILL');
    await h1.docker(['rm', '-f', names.encCli, names.plainCli]);
    await h2.docker(['rm', '-f', names.encSrv, names.plainSrv]);
  }
}
