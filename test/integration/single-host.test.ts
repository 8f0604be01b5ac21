// End to end on one host: a real dockerd in its own network namespace, weft
// started as a v1 plugin on the embedded store, and the docker CLI. The
// sub-tests run in order and build on each other; when one fails, those that
// need its result are skipped and the weft/dockerd log tails are printed.
// Containers are ca, cb, cc: Docker refuses one-character names.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, type TestContext } from 'vitest';
import {
  cleanupLabLeftovers,
  createUnderlay,
  ensureBusyboxImage,
  hostHttpGet,
  isEngine28,
  startHost,
  startWeft,
  waitFor,
  type LabHost,
  type RunResult,
  type Underlay,
  type WeftProcess,
} from '../lab/host';
import { keepLogs } from '../lab/logs';
import { readStoreCopy } from '../lab/store';

const PREFIX = 'wlab-sh-';
const IMG = 'busybox:local';
const WEFT = ['-d', 'weft', '--ipam-driver', 'weft'];

let ul: Underlay | undefined;
let host: LabHost;
let weft: WeftProcess | undefined;
/** steps that passed; later steps that need them skip otherwise */
const done = new Set<string>();

function needs(ctx: TestContext, ...steps: string[]): void {
  const missing = steps.filter((s) => !done.has(s));
  if (missing.length > 0) ctx.skip(`needs the earlier step(s) ${missing.join(', ')}`);
}

const d = (args: string[]): Promise<RunResult> => host.docker(args);
const dOk = async (args: string[]): Promise<string> => (await host.dockerOk(args)).stdout.trim();

function ipv4ToInt(ip: string): number {
  return ip.split('.').reduce((a, o) => a * 256 + Number(o), 0);
}

function cidrRange(cidr: string): [number, number] {
  const [ip, len] = cidr.split('/');
  const size = 2 ** (32 - Number(len));
  const start = Math.floor(ipv4ToInt(ip!) / size) * size;
  return [start, start + size - 1];
}

function overlaps(a: string, b: string): boolean {
  const [a0, a1] = cidrRange(a);
  const [b0, b1] = cidrRange(b);
  return a0 <= b1 && b0 <= a1;
}

async function subnetOf(network: string): Promise<string> {
  return dOk(['network', 'inspect', '-f', '{{range .IPAM.Config}}{{.Subnet}}{{end}}', network]);
}

async function containerIp(name: string, network = 'app'): Promise<string> {
  return dOk(['inspect', '-f', `{{with index .NetworkSettings.Networks "${network}"}}{{.IPAddress}}{{end}}`, name]);
}

/** `docker exec <c> ping` with a bounded number of tries (the first may wait for ARP). */
async function pingFrom(container: string, target: string): Promise<void> {
  let last: RunResult | undefined;
  for (let i = 0; i < 3; i++) {
    last = await d(['exec', container, 'ping', '-c', '1', '-W', '2', target]);
    if (last.code === 0) return;
  }
  throw new Error(`${container} cannot ping ${target}: ${last?.stdout}${last?.stderr}`);
}

/** After an error: weft is still running and a plugin round trip works. */
async function expectWeftServes(): Promise<void> {
  expect(weft?.running(), `weft is no longer running:\n${weft?.logTail(30)}`).toBe(true);
  const r = await d(['run', '--rm', '--network', 'app', IMG, 'true']);
  expect(r.code, `a container on app no longer starts after the error: ${r.stderr}`).toBe(0);
}

/** A command that must fail at docker with a message from weft naming the offending value. */
async function expectRefused(args: string[], value: string, phrase: RegExp): Promise<void> {
  const r = await d(args);
  expect(r.code, `'docker ${args.join(' ')}' should fail; stdout: ${r.stdout}`).not.toBe(0);
  expect(r.stderr, `stderr of 'docker ${args.join(' ')}' should name ${value}`).toContain(value);
  expect(r.stderr, `stderr of 'docker ${args.join(' ')}' should explain the error`).toMatch(phrase);
}

function weftLinks(out: string): string[] {
  return [...out.matchAll(/^\d+: (wf[tb][^:@]*)/gm)].map((m) => m[1]!);
}

function nsfsMountsUnder(dir: string): string[] {
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => l.includes(' - nsfs '))
    .map((l) => l.split(' ')[4]!)
    .filter((mp) => mp.startsWith(dir + '/'));
}

function weftNetns(): string[] {
  try {
    return fs.readdirSync(path.join(weft!.runDir, 'netns'));
  } catch {
    return [];
  }
}

beforeAll(async () => {
  await cleanupLabLeftovers(PREFIX);
  ul = await createUnderlay(`${PREFIX}ul`, '192.0.2.0/24');
  host = await startHost({ name: `${PREFIX}h1`, underlay: ul, address: '192.0.2.11/24' });
  await ensureBusyboxImage(host);
  weft = await startWeft(host);
}, 180_000);

afterAll(async () => {
  if (host) keepLogs([host]);
  await host?.destroy();
  await ul?.destroy();
  await cleanupLabLeftovers(PREFIX);
}, 180_000);

afterEach((ctx) => {
  if (ctx.task.result?.state === 'fail') {
    console.error(`---- weft log (${weft?.logFile}), last lines ----\n${weft?.logTail(40) ?? '(weft not started)'}`);
    console.error(`---- dockerd log (${host?.dockerdLog}), last lines ----\n${host?.dockerdLogTail(20) ?? ''}`);
  }
});

describe('single host, embedded store', () => {
  it('1. creates a weft network with a subnet', async () => {
    await dOk(['network', 'create', ...WEFT, '--subnet', '10.40.0.0/24', 'app']);
    expect(await dOk(['network', 'inspect', '-f', '{{.Driver}} {{.IPAM.Driver}}', 'app'])).toBe('weft weft');
    expect(await subnetOf('app')).toBe('10.40.0.0/24');
    done.add('network');
  });

  it('2. two containers ping each other by IP and by name', async (ctx) => {
    needs(ctx, 'network');
    await dOk(['run', '-d', '--name', 'ca', '--network', 'app', IMG, 'sleep', '3600']);
    await dOk(['run', '-d', '--name', 'cb', '--network', 'app', IMG, 'sleep', '3600']);
    const ipA = await containerIp('ca');
    const ipB = await containerIp('cb');
    expect(overlaps(`${ipA}/32`, '10.40.0.0/24'), `a got ${ipA}`).toBe(true);
    expect(overlaps(`${ipB}/32`, '10.40.0.0/24'), `b got ${ipB}`).toBe(true);
    expect(ipA).not.toBe(ipB);
    await pingFrom('ca', ipB);
    await pingFrom('cb', ipA);
    await pingFrom('ca', 'cb');
    await pingFrom('cb', 'ca');
    done.add('containers');
  });

  it('3. --ip gives the container that address', async (ctx) => {
    needs(ctx, 'network');
    await dOk(['run', '-d', '--name', 'fixed', '--ip', '10.40.0.50', '--network', 'app', IMG, 'sleep', '3600']);
    const addr = await dOk(['exec', 'fixed', 'ip', '-4', 'addr', 'show', 'eth0']);
    expect(addr).toContain('inet 10.40.0.50/24');
    done.add('fixed');
  });

  it('4. a published port (-p) of a container on a weft network answers on the host', async (ctx) => {
    needs(ctx, 'network');
    await dOk([
      'run', '-d', '--name', 'web', '-p', '18080:8080', '--network', 'app', IMG,
      'sh', '-c', 'mkdir /www && echo hello > /www/index.html && exec httpd -f -p 8080 -h /www',
    ]);
    const body = await waitFor(
      async () => {
        const r = await hostHttpGet(host, 'http://127.0.0.1:18080/', 2);
        return r.code === 0 && r.stdout.trim() === 'hello' ? r.stdout : undefined;
      },
      { timeoutMs: 15_000, intervalMs: 200, what: 'http://127.0.0.1:18080/ to serve "hello" in the host namespace' },
    );
    expect(body.trim()).toBe('hello');
  });

  it('5. network connect / disconnect of a container started on a bridge network', async (ctx) => {
    needs(ctx, 'network');
    await dOk(['network', 'create', 'side']);
    await dOk(['run', '-d', '--name', 'cc', '--network', 'side', IMG, 'sleep', '3600']);
    await dOk(['network', 'connect', 'app', 'cc']);
    const ipC = await containerIp('cc');
    expect(overlaps(`${ipC}/32`, '10.40.0.0/24'), `c got ${ipC} on app`).toBe(true);
    expect(await dOk(['exec', 'cc', 'ip', '-4', 'addr'])).toContain(`inet ${ipC}/24`);
    if (done.has('containers')) await pingFrom('cc', await containerIp('ca'));
    await dOk(['network', 'disconnect', 'app', 'cc']);
    expect(await dOk(['exec', 'cc', 'ip', '-4', 'addr'])).not.toContain(`inet ${ipC}/`);
    expect(await containerIp('cc')).toBe('');
    // and back again: the released address can be used
    await dOk(['network', 'connect', 'app', 'cc']);
    await dOk(['network', 'disconnect', 'app', 'cc']);
  });

  it('6. a network without --subnet gets a subnet that overlaps no other', async (ctx) => {
    needs(ctx, 'network');
    await dOk(['network', 'create', ...WEFT, 'auto1']);
    const auto = await subnetOf('auto1');
    expect(auto).toMatch(/^\d+\.\d+\.\d+\.\d+\/\d+$/);
    expect(overlaps(auto, await subnetOf('app')), `auto1 got ${auto}`).toBe(false);
    await dOk(['network', 'create', ...WEFT, 'auto2']);
    const auto2 = await subnetOf('auto2');
    expect(overlaps(auto2, auto), `auto2 got ${auto2}, auto1 ${auto}`).toBe(false);
    expect(overlaps(auto2, '10.40.0.0/24'), `auto2 got ${auto2}`).toBe(false);
    await dOk(['network', 'rm', 'auto2']);
    done.add('auto');
  });

  describe('7. errors fail at docker with weft\'s message, and weft keeps serving', () => {
    it('a subnet overlapping an existing weft pool', async (ctx) => {
      needs(ctx, 'network');
      await expectRefused(['network', 'create', ...WEFT, '--subnet', '10.40.0.0/25', 'clash'], '10.40.0.0', /overlap|in use/i);
      expect((await d(['network', 'inspect', 'clash'])).code).not.toBe(0);
      await expectWeftServes();
    });

    it('--ip outside the subnet', async (ctx) => {
      needs(ctx, 'network');
      try {
        await expectRefused(['run', '-d', '--name', 'e-outside', '--ip', '10.99.0.5', '--network', 'app', IMG, 'sleep', '3600'], '10.99.0.5', /outside|subnet|belong/i);
      } finally {
        await d(['rm', '-f', 'e-outside']);
      }
      await expectWeftServes();
    });

    it('--ip of an address already in use', async (ctx) => {
      needs(ctx, 'network', 'fixed');
      try {
        await expectRefused(['run', '-d', '--name', 'e-inuse', '--ip', '10.40.0.50', '--network', 'app', IMG, 'sleep', '3600'], '10.40.0.50', /in use|taken|allocated/i);
      } finally {
        await d(['rm', '-f', 'e-inuse']);
      }
      // the holder keeps its address
      expect(await dOk(['exec', 'fixed', 'ip', '-4', 'addr', 'show', 'eth0'])).toContain('inet 10.40.0.50/24');
      await expectWeftServes();
    });

    it('a pool with no free address left', async (ctx) => {
      needs(ctx, 'network');
      // a /30 holds the gateway and one container
      await dOk(['network', 'create', ...WEFT, '--subnet', '10.41.0.0/30', 'tiny']);
      await dOk(['run', '-d', '--name', 't1', '--network', 'tiny', IMG, 'sleep', '3600']);
      try {
        await expectRefused(['run', '-d', '--name', 't2', '--network', 'tiny', IMG, 'sleep', '3600'], '10.41.0.0', /no free address|exhausted|full/i);
      } finally {
        await d(['rm', '-f', 't2']);
      }
      await expectWeftServes();
      // freeing the address makes room again
      await dOk(['rm', '-f', 't1']);
      await dOk(['run', '-d', '--name', 't3', '--network', 'tiny', IMG, 'sleep', '3600']);
      await dOk(['rm', '-f', 't3']);
      await dOk(['network', 'rm', 'tiny']);
    });

    it('an invalid -o mtu', async (ctx) => {
      needs(ctx, 'network');
      const r = await d(['network', 'create', ...WEFT, '-o', 'mtu=abc', 'badmtu']);
      expect(r.code, `should fail; stdout: ${r.stdout}`).not.toBe(0);
      expect(r.stderr).toContain('mtu');
      expect(r.stderr).toContain('abc');
      expect((await d(['network', 'inspect', 'badmtu'])).code).not.toBe(0);
      await expectWeftServes();
    });

    // Docker 28 makes IPv6-only networks (--ipv4=false): weft gives the container an IPv6 address only (issue 14).
    it.runIf(isEngine28())('an IPv6-only network (--ipv4=false, Docker 28) gives a container an IPv6 address and no IPv4 one', async (ctx) => {
      needs(ctx, 'network');
      await dOk(['network', 'create', ...WEFT, '--ipv4=false', '--ipv6', '--subnet', 'fd00:77::/64', 'v6only']);
      const r = await dOk(['run', '--rm', '--network', 'v6only', IMG, 'ip', '-o', 'addr', 'show', 'eth0']);
      expect(r).toMatch(/inet6 fd00:77::2\/64/);
      expect(r).not.toMatch(/ inet /);
      await dOk(['network', 'rm', 'v6only']);
      await expectWeftServes();
    });
  });

  it('9. a container that died with its dockerd (power loss) holds nothing once dockerd is back, and starts again', async () => {
    await dOk(['network', 'create', ...WEFT, '--subnet', '10.93.0.0/24', 'boot']);
    const cid = await dOk(['network', 'inspect', '-f', '{{.Id}}', 'boot']);
    await dOk(['run', '-d', '--name', 'dead', '--network', 'boot', IMG, 'sleep', '3600']);
    await dOk(['run', '-d', '--name', 'alive', '--restart=always', '--network', 'boot', IMG, 'sleep', '3600']);
    const deadIp = await containerIp('dead', 'boot');
    const state = async () => {
      const kvs = await readStoreCopy(weft!.stateDir, '/weft/v1/');
      return {
        endpoints: kvs.filter((kv) => kv.key.startsWith(`/weft/v1/endpoints/${cid}/`)).length,
        addrs: kvs.filter((kv) => kv.key.startsWith('/weft/v1/addrs/10.93.0.0_24/')).map((kv) => kv.key.split('/').pop()).sort(),
      };
    };
    expect((await state()).endpoints).toBe(2);
    // power loss: dockerd and every container die at once, no Leave/DeleteEndpoint is sent
    await host.powerOff();
    await host.startDockerd();
    // Docker 27+ sends Leave, DeleteEndpoint and ReleaseAddress for the dead container at start;
    // the restarted one has one endpoint again; its address is the only one held
    // (the gateway is reserved in the pool record, not in addrs/)
    await waitFor(async () => (await dOk(['inspect', '-f', '{{.State.Running}}', 'alive'])) === 'true', { timeoutMs: 30_000, what: 'alive to restart' });
    const aliveIp = await containerIp('alive', 'boot');
    let last: Awaited<ReturnType<typeof state>> | undefined;
    await waitFor(async () => {
      last = await state();
      return last.endpoints === 1 && JSON.stringify(last.addrs) === JSON.stringify([aliveIp]);
    }, { timeoutMs: 30_000, what: 'one endpoint and one address in the store' }).catch((e: Error) => {
      throw new Error(`${e.message}: ${JSON.stringify(last)}\n${weft!.logTail(40)}`);
    });
    expect((await d(['inspect', '-f', '{{.State.Running}}', 'dead'])).stdout.trim()).toBe('false');
    await dOk(['start', 'dead']);
    const again = await containerIp('dead', 'boot');
    expect(again).not.toBe(aliveIp);
    await pingFrom('dead', aliveIp);
    await pingFrom('alive', again);
    expect(deadIp).not.toBe('');
    for (const c of ['dead', 'alive']) await d(['rm', '-f', c]);
    await dOk(['network', 'rm', 'boot']);
  }, 180_000);

  it('8. network rm leaves no kernel object of weft behind', async (ctx) => {
    needs(ctx, 'network');
    const appId = await dOk(['network', 'inspect', '-f', '{{.Id}}', 'app']);
    const before = weftNetns();
    for (const c of ['ca', 'cb', 'fixed', 'web', 'cc']) await d(['rm', '-f', c]);
    await d(['network', 'rm', 'side']);
    const left = await dOk(['ps', '-aq', '--filter', 'network=app']);
    expect(left, 'containers still on app').toBe('');
    await dOk(['network', 'rm', 'app']);
    expect((await d(['network', 'inspect', 'app'])).code).not.toBe(0);

    // no per-endpoint links of weft in the host namespace
    const links = await host.execOk(['ip', '-o', 'link', 'show']);
    expect(weftLinks(links.stdout), `weft links left in ${host.name}`).toEqual([]);
    // app's namespace is gone (auto1 still exists and may keep its own)
    const after = weftNetns();
    expect(after.filter((n) => n.includes(appId.slice(0, 10))), 'namespace of app').toEqual([]);
    expect(before.length, `weft pins a namespace per network under ${weft!.runDir}/netns`).toBeGreaterThan(0);
    const msg = `weft namespaces before ${JSON.stringify(before)}, after ${JSON.stringify(after)}`;
    expect(after.every((n) => before.includes(n)), msg).toBe(true);
    expect(after.length, msg).toBeLessThan(before.length);

    // and once the last weft network goes, nothing of weft is left at all
    if (done.has('auto')) await dOk(['network', 'rm', 'auto1']);
    expect(weftNetns(), `namespaces under ${weft!.runDir}/netns`).toEqual([]);
    expect(nsfsMountsUnder(weft!.runDir), 'namespace pins under the run dir').toEqual([]);
    const links2 = await host.execOk(['ip', '-o', 'link', 'show']);
    expect(weftLinks(links2.stdout)).toEqual([]);
    expect(weft!.running()).toBe(true);
  });
});
