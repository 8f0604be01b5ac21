// Which endpoint carries a container's multicast route (src/driver/multicast.ts),
// and when the learner takes Docker's word on a starting container (startOver).
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MulticastRoutes } from '../../src/driver/multicast';
import { settles, startOver } from '../../src/dns/learner';

const logger = pino({ level: 'silent' });
let dir: string;
const SB = '/var/run/docker/netns/9ddb297476c0';

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-mc-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('multicast route holder', () => {
  it('the first weft endpoint of a sandbox carries the route, the next ones do not, a Join sent again gets the same answer', () => {
    const m = new MulticastRoutes(dir, logger);
    expect(m.claim(SB, 'ep-a')).toBe(true);
    expect(m.claim(SB, 'ep-b')).toBe(false);
    expect(m.claim(SB, 'ep-a')).toBe(true);
    expect(m.claim('/var/run/docker/netns/0123456789ab', 'ep-c')).toBe(true);
  });

  it('a restarted weft still knows the holder; once it leaves, the next network takes the route', () => {
    new MulticastRoutes(dir, logger).claim(SB, 'ep-a');
    const again = new MulticastRoutes(dir, logger);
    expect(again.claim(SB, 'ep-b')).toBe(false);
    again.release('ep-a');
    expect(fs.readdirSync(path.join(dir, 'multicast'))).toEqual([]);
    expect(new MulticastRoutes(dir, logger).claim(SB, 'ep-b')).toBe(true);
  });

  it('no route for a sandbox key that is not Docker\'s (nothing recorded)', () => {
    const m = new MulticastRoutes(dir, logger);
    expect(m.claim(undefined, 'ep-a')).toBe(false);
    expect(m.claim('/var/run/docker/netns/../../etc', 'ep-a')).toBe(false);
    expect(m.claim('default', 'ep-a')).toBe(false);
    expect(fs.existsSync(path.join(dir, 'multicast'))).toBe(false);
  });
});

describe('startOver: Docker has the last word on a container', () => {
  it('running, exited, failed or gone: yes; created without an error (its start under way): no', () => {
    expect(startOver(undefined)).toBe(true);
    expect(startOver({ Id: 'c', Name: '/c', State: { Running: true, Status: 'running' } })).toBe(true);
    expect(startOver({ Id: 'c', Name: '/c', State: { Running: false, Status: 'exited', ExitCode: 0 } })).toBe(true);
    expect(startOver({ Id: 'c', Name: '/c', State: { Running: false, Status: 'created', Error: 'exec: "/no/such/binary": not found', ExitCode: 127 } })).toBe(true);
    expect(startOver({ Id: 'c', Name: '/c', State: { Running: false, Status: 'created', Error: '', ExitCode: 0 } })).toBe(false);
  });
});

describe('settles: an early name record waits for Docker\'s full answer', () => {
  const running = (eps: string[]) => ({
    Id: 'c', Name: '/c', State: { Running: true, Status: 'running' },
    NetworkSettings: { Networks: Object.fromEntries(eps.map((e, i) => [`n${i}`, { EndpointID: e, IPAddress: '10.0.0.2' }])) },
  });
  it('gone, failed, or running with the endpoint: settled; running without it yet, or still starting: not', () => {
    expect(settles(undefined, 'ep1')).toBe(true);
    expect(settles({ Id: 'c', Name: '/c', State: { Running: false, Status: 'created', Error: 'failed', ExitCode: 127 } }, 'ep1')).toBe(true);
    expect(settles(running(['ep1']), 'ep1')).toBe(true);
    expect(settles({ ...running(['ep1']), NetworkSettings: { Networks: { n0: { EndpointID: 'ep1', IPAddress: '' } } } }, 'ep1')).toBe(false);
    expect(settles(running(['']), 'ep1')).toBe(false);
    expect(settles(running([]), 'ep1')).toBe(false);
    expect(settles({ Id: 'c', Name: '/c', State: { Running: false, Status: 'created', Error: '', ExitCode: 0 } }, 'ep1')).toBe(false);
  });
});
