// The probe responder answering other wefts' liveness probes (is this host
// there while its lease is gone?), through the Prober, on loopback.
import * as dgram from 'dgram';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { Prober, startProbeResponder, type Responder } from '../../src/ops/probe';

const log = pino({ level: 'silent' });
const closers: (() => unknown)[] = [];
afterEach(async () => { for (const c of closers.splice(0)) await c(); });

async function freePort(): Promise<number> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  const p = s.address().port;
  s.close();
  return p;
}

describe('liveness probes', () => {
  it('answer with the host name and instance, send no VXLAN packet, and are not held to the doctor\'s 50 a second', async () => {
    const port = await freePort();
    // a stand-in for the kernel's VXLAN socket, to see what the responder sends there
    const vx = dgram.createSocket('udp4');
    await new Promise<void>((r) => vx.bind(0, '127.0.0.1', () => r()));
    let vxlanPackets = 0;
    vx.on('message', () => { vxlanPackets++; });
    closers.push(() => vx.close());
    const responder: Responder = await startProbeResponder({
      address: '127.0.0.1', port, vxlanPort: vx.address().port, host: 'h9', logger: log, instance: 'abc123', startedAt: '2026-01-01T00:00:00.000Z',
    });
    closers.push(() => responder.close());
    const prober = new Prober('127.0.0.1', port);
    closers.push(() => prober.close());
    expect(await prober.ask('127.0.0.1', 1000)).toEqual({ host: 'h9', instance: 'abc123', startedAt: '2026-01-01T00:00:00.000Z' });
    // 200 at once: a partitioned host in a 100-host cluster
    const answers = await Promise.all(Array.from({ length: 200 }, () => prober.ask('127.0.0.1', 2000)));
    expect(answers.filter((a) => a?.host === 'h9').length).toBe(200);
    expect(vxlanPackets).toBe(0);
    // nobody there: undefined
    const nobody = new Prober('127.0.0.1', await freePort());
    closers.push(() => nobody.close());
    expect(await nobody.ask('127.0.0.1', 300)).toBeUndefined();
  });
});
