// Crash consistency: weft killed (SIGKILL, through its fault-injection hook)
// in the middle of RequestAddress, CreateEndpoint, Join, Leave or
// DeleteEndpoint leaves no half-state that breaks the next attempt, and
// nothing it allocated leaks: once the collector's grace period has passed,
// the store holds exactly the live containers' endpoints and addresses, and
// the kernel exactly their links.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  cleanupLabLeftovers, ensureBusyboxImage, run, startHost, startWeft, waitFor, type LabHost, type WeftProcess,
} from '../lab/host';
import { readStoreCopy } from '../lab/store';

const PREFIX = 'wcr-';
const ARGS = ['--reconcile-interval', '1', '--gc-grace', '2'];
let host: LabHost;
let weft: WeftProcess;
let keeperIp = '';

beforeAll(async () => {
  await cleanupLabLeftovers(PREFIX);
  host = await startHost({ name: `${PREFIX}h1` });
  await ensureBusyboxImage(host);
  weft = await startWeft(host, { args: ARGS, logLevel: 'info' });
  await host.dockerOk(['network', 'create', '-d', 'weft', '--ipam-driver', 'weft', '--subnet', '10.45.0.0/24', 'app']);
  await host.dockerOk(['run', '-d', '--name', 'keeper', '--network', 'app', 'busybox:local', 'sleep', '3600']);
  keeperIp = (await host.dockerOk(['inspect', '-f', '{{(index .NetworkSettings.Networks "app").IPAddress}}', 'keeper'])).stdout.trim();
}, 180_000);

afterAll(async () => {
  await host?.destroy().catch(() => undefined);
  await cleanupLabLeftovers(PREFIX);
}, 120_000);

/** Replace the running weft by one that dies at `point`. */
async function armFault(point: string): Promise<void> {
  await weft.stop();
  weft = await startWeft(host, { args: ARGS, logLevel: 'info', env: { WEFT_FAULT_POINT: point } });
}

async function restartClean(): Promise<void> {
  await weft.stop();
  weft = await startWeft(host, { args: ARGS, logLevel: 'info' });
}

/** The store and kernel hold exactly the running containers' endpoints, addresses and links. */
async function expectNoLeak(): Promise<void> {
  const running = (await host.dockerOk(['ps', '-q', '--filter', 'network=app'])).stdout.trim().split('\n').filter(Boolean).length;
  await waitFor(async () => {
    const kvs = await readStoreCopy(weft.stateDir, '/weft/v1/');
    const eps = kvs.filter((kv) => kv.key.startsWith('/weft/v1/endpoints/')).length;
    const addrs = kvs.filter((kv) => kv.key.startsWith('/weft/v1/addrs/10.45.0.0_24/')).length;
    return eps === running && addrs === running ? true : undefined;
  }, { timeoutMs: 20_000, what: `store to hold exactly ${running} endpoint(s) and address(es)` });
  // host ends are inside containers: none may be left in the host namespace
  await waitFor(async () => !(await host.exec(['ip', '-o', 'link'])).stdout.includes(' wft'), { timeoutMs: 10_000, what: 'no wft* link left in the host namespace' });
  const ns = (await run('ls', [`${weft.runDir}/netns`])).stdout.trim();
  const bridgeEnds = (await run('nsenter', [`--net=${weft.runDir}/netns/${ns}`, 'ip', '-o', 'link'])).stdout.split('\n').filter((l) => l.includes(' wfb')).length;
  expect(bridgeEnds).toBe(running);
}

async function nextContainerWorks(): Promise<void> {
  await host.docker(['rm', '-f', 'victim']);
  await host.dockerOk(['run', '-d', '--name', 'victim', '--network', 'app', 'busybox:local', 'sleep', '3600']);
  const r = await host.docker(['exec', 'victim', 'ping', '-c', '1', '-W', '3', keeperIp]);
  expect(r.code, r.stdout + r.stderr).toBe(0);
}

describe('crash consistency', () => {
  for (const point of ['requestAddress:after-store', 'createEndpoint:after-store', 'join:before-veth', 'join:after-veth']) {
    it(`weft killed at ${point} while a container starts`, { timeout: 120_000 }, async () => {
      await armFault(point);
      // dockerd retries a vanished plugin for a while: the start may fail or, if weft is back in time, succeed.
      const starting = host.docker(['run', '-d', '--name', 'victim', '--network', 'app', 'busybox:local', 'sleep', '3600'], { timeoutMs: 90_000 });
      expect(await weft.waitExit(30_000)).toBe(true);
      await restartClean();
      await starting;
      await nextContainerWorks();
      await host.dockerOk(['rm', '-f', 'victim']);
      await expectNoLeak();
    });
  }

  for (const point of ['leave', 'deleteEndpoint:before-kernel', 'deleteEndpoint:after-kernel']) {
    it(`weft killed at ${point} while a container stops`, { timeout: 120_000 }, async () => {
      await host.dockerOk(['run', '-d', '--name', 'victim', '--network', 'app', 'busybox:local', 'sleep', '3600']);
      await armFault(point);
      const removing = host.docker(['rm', '-f', 'victim'], { timeoutMs: 90_000 });
      expect(await weft.waitExit(30_000)).toBe(true);
      await restartClean();
      await removing;
      await nextContainerWorks();
      await host.dockerOk(['rm', '-f', 'victim']);
      await expectNoLeak();
    });
  }

  for (const point of ['requestPool:after-store', 'createNetwork:after-bind']) {
    it(`weft killed at ${point} while a network is created: the pool is released, the subnet reusable`, { timeout: 120_000 }, async () => {
      await armFault(point);
      const creating = host.docker(['network', 'create', '-d', 'weft', '--ipam-driver', 'weft', '--subnet', '10.44.0.0/24', 'late'], { timeoutMs: 90_000 });
      expect(await weft.waitExit(30_000)).toBe(true);
      await restartClean();
      const created = await creating;
      if (created.code === 0) await host.dockerOk(['network', 'rm', 'late']);
      await waitFor(async () => !(await readStoreCopy(weft.stateDir, '/weft/v1/pools/')).some((kv) => kv.key.endsWith('10.44.0.0_24')),
        { timeoutMs: 20_000, what: 'the pool of the failed create to be released' });
      await host.dockerOk(['network', 'create', '-d', 'weft', '--ipam-driver', 'weft', '--subnet', '10.44.0.0/24', 'late']);
      await host.dockerOk(['network', 'rm', 'late']);
    });
  }

  it('the keeper container kept its network throughout', async () => {
    await host.dockerOk(['run', '--rm', '--network', 'app', 'busybox:local', 'ping', '-c', '1', '-W', '3', keeperIp]);
  });
});
