import { afterAll, beforeAll, it } from 'vitest';
import { startEtcd } from '../lab/etcd';
import { cleanupLabLeftovers, createUnderlay, ensureBusyboxImage, run, startHost, startWeft, type LabHost, type Underlay, type WeftProcess } from '../lab/host';
const PREFIX = 'w14d-';
let ul: Underlay; let etcd: Awaited<ReturnType<typeof startEtcd>>;
const hosts: LabHost[] = []; const wefts: WeftProcess[] = [];
beforeAll(async () => {
  await cleanupLabLeftovers(PREFIX);
  ul = await createUnderlay(`${PREFIX}ul`, '198.51.100.0/24');
  const etcdIp = ul.bridgeAddress.split('/')[0];
  etcd = await startEtcd({ name: 'w14d', netns: ul.name, clientHost: etcdIp });
  const url = `etcd://${etcdIp}:${new URL(etcd.endpoint).port}`;
  for (let i = 1; i <= 2; i++) {
    const h = await startHost({ name: `${PREFIX}h${i}`, underlay: ul }); hosts.push(h); await ensureBusyboxImage(h);
    wefts.push(await startWeft(h, { args: ['--store', url, '--advertise-addr', h.underlay!.ports.get(h.name)!.address.split('/')[0]], logLevel: 'debug' }));
  }
}, 300_000);
afterAll(async () => { for (const h of hosts) await h.destroy().catch(() => undefined); await etcd?.stop(); await ul?.destroy(); await cleanupLabLeftovers(PREFIX); }, 120_000);
it('debug', async () => {
  const out: string[] = [];
  const log = (s: string) => { out.push(s); };
  await hosts[0].dockerOk(['network', 'create', '-d', 'weft', '--ipam-driver', 'weft', '--ipv6', '--subnet', '10.61.0.0/24', '--subnet', 'fd00:61::/64', 'ds']);
  await new Promise((r) => setTimeout(r, 3000));
  await hosts[0].dockerOk(['run', '-d', '--name', 'd1', '--network', 'ds', 'busybox:local', 'sleep', '3600']);
  await hosts[1].dockerOk(['run', '-d', '--name', 'd2', '--network', 'ds', 'busybox:local', 'sleep', '3600']);
  await new Promise((r) => setTimeout(r, 3000));
  const cid = (await hosts[0].dockerOk(['network', 'inspect', '-f', '{{.Id}}', 'ds'])).stdout.trim();
  const id = cid.slice(0, 10);
  for (const i of [0, 1]) {
    const ns = `${wefts[i].runDir}/netns/weft-${id}`;
    for (const c of [['ip', '-6', 'neigh', 'show'], ['ip', 'neigh', 'show'], ['bridge', 'fdb', 'show'], ['ip', '-d', 'link', 'show'], ['sysctl', 'net.ipv6.conf.all.disable_ipv6']]) {
      const r = await run('nsenter', [`--net=${ns}`, ...c]); log(`h${i + 1} ns ${c.join(' ')}:\n${r.stdout}${r.stderr}`);
    }
    const cn = `d${i + 1}`;
    for (const c of [['ip', 'addr'], ['ip', '-6', 'route'], ['ip', '-6', 'neigh'], ['cat', '/proc/sys/net/ipv6/conf/all/disable_ipv6']]) {
      const r = await hosts[i].docker(['exec', cn, ...c]); log(`h${i + 1} ${cn} ${c.join(' ')}:\n${r.stdout}${r.stderr}`);
    }
  }
  const r = await hosts[0].docker(['exec', 'd1', 'ping', '-c', '2', '-W', '2', 'fd00:61::3']);
  log(`ping d1->fd00:61::3: ${r.stdout}${r.stderr}`);
  const r2 = await hosts[0].docker(['exec', 'd1', 'ip', '-6', 'neigh']); log(`after: ${r2.stdout}`);
  log(wefts[0].logTail(40));
  require('fs').writeFileSync('/tmp/w14dbg/out.txt', out.join('\n'));
}, 120_000);
