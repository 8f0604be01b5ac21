// The memory returner: when it asks V8 to give freed heap pages back (once
// after start-up, then only after the resident size grew, never twice within
// the gap, a settled burst within its CPU budget), and that the
// native release really returns them (in a child process of its own, so that
// no other test's memory is measured).
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { MemoryReturner, nativeRelease } from '../../src/util/memory';

const MiB = 1 << 20;

describe('memory returner', () => {
  it('the first look releases what start-up left, whatever the size', () => {
    let releases = 0;
    const m = new MemoryReturner({ rss: () => 90 * MiB, now: () => 0, release: () => { releases++; } });
    expect(m.check()).toBe(true);
    expect(releases).toBe(1);
    expect(m.check()).toBe(false); // nothing grew since
  });

  it('releases after 16 MiB of growth, not at rest, not twice within 30 s', () => {
    let rss = 100 * MiB;
    let now = 0;
    let releases = 0;
    const m = new MemoryReturner({ rss: () => rss, now: () => now, release: () => { releases++; rss = 110 * MiB; } });
    expect(m.check()).toBe(true); // the first look
    releases = 0;
    now += 30_000;
    expect(m.check()).toBe(false); // at rest
    rss = 111.5 * MiB;
    now += 10_000;
    expect(m.check()).toBe(false); // 1.5 MiB: not worth a collection
    rss = 140 * MiB;
    expect(m.check()).toBe(true); // 30 MiB, still growing
    expect(releases).toBe(1);
    expect(m.stats).toEqual({ releases: 2, releasedBytes: 30 * MiB });
    rss = 200 * MiB;
    now += 29_999;
    expect(m.check()).toBe(false); // within the gap
    now += 1;
    expect(m.check()).toBe(true);
    expect(m.stats.releases).toBe(3);
  });

  it('a smaller burst (2 MiB or more) is released once the size stops changing, within 0.1 % of a core', () => {
    let rss = 100 * MiB;
    let now = 0;
    let cost = 0;
    const m = new MemoryReturner({ rss: () => rss, now: () => now, release: () => { now += cost; rss = 100 * MiB; } });
    expect(m.check()).toBe(true); // the first look
    now += 30_000;
    rss = 104 * MiB;
    expect(m.check()).toBe(false); // grew by 4 MiB since the last look: the burst may go on
    now += 10_000;
    rss = 104.5 * MiB;
    cost = 40; // this release takes 40 ms
    expect(m.check()).toBe(true); // stopped changing: released
    expect(rss).toBe(100 * MiB);
    rss = 103 * MiB;
    now += 10_000;
    expect(m.check()).toBe(false); // changed since the last look
    now += 20_000;
    expect(m.check()).toBe(false); // settled, but 30 s after a 40 ms release would be more than 0.1 %
    now += 10_000;
    expect(m.check()).toBe(true); // 40 s after it
    rss = 101.5 * MiB;
    now += 60_000;
    expect(m.check()).toBe(false); // 1.5 MiB that settled: left alone
  });

  it('a resident size that shrank by itself lowers the bar', () => {
    let rss = 200 * MiB;
    let now = 100_000;
    const m = new MemoryReturner({ rss: () => rss, now: () => now, release: () => { rss = 90 * MiB; } });
    expect(m.check()).toBe(true); // the first look
    now += 100_000;
    rss = 80 * MiB;
    expect(m.check()).toBe(false);
    rss = 95 * MiB;
    now += 1;
    expect(m.check()).toBe(false); // 15 MiB since the new bar (and not settled)
    rss = 97 * MiB;
    expect(m.check()).toBe(true);
  });

  it('does nothing without a release (addon not built for this runtime)', () => {
    const m = new MemoryReturner({ rss: () => 1e12, release: undefined });
    expect(m.available).toBe(false);
    expect(m.check()).toBe(false);
  });

  it('the native release gives a shrunk heap\'s pages back to the system', () => {
    expect(nativeRelease(), 'the addon exports releaseMemory for this runtime').toBeDefined();
    const native = path.resolve(__dirname, '..', '..', 'native', 'build', 'Release', 'weft_native.node');
    // A live set of about 100 MiB is built, then dropped. Nothing runs a
    // collection after the drop but the release, so without it the pages stay
    // resident. V8 may hand pooled pages back on a thread of its own, so the
    // child looks again for up to 3 s after the release returns.
    const script = `
      const m = require(${JSON.stringify(native)});
      const rss = () => process.memoryUsage.rss();
      const base = rss();
      let keep = [];
      for (let r = 0; r < 40; r++) { const a = []; for (let i = 0; i < 20000; i++) a.push({ ip: '10.0.' + (i >> 8) + '.' + (i & 255), r }); keep.push(a); }
      const held = rss();
      keep = [];
      m.releaseMemory();
      const first = rss();
      let after = first;
      const deadline = Date.now() + 3000;
      const look = () => {
        after = Math.min(after, rss());
        if (held - after > (held - base) / 2 || Date.now() > deadline) process.stdout.write(JSON.stringify({ base, held, first, after }));
        else setTimeout(look, 50);
      };
      look();`;
    const r = spawnSync(process.execPath, ['--max-semi-space-size=1', '-e', script], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status, r.stderr).toBe(0);
    const f = JSON.parse(r.stdout) as { base: number; held: number; first: number; after: number };
    const mib = Object.fromEntries(Object.entries(f).map(([k, v]) => [k, Math.round(v / MiB)]));
    expect(f.held - f.base, `the live set made the process grow (MiB: ${JSON.stringify(mib)})`).toBeGreaterThan(48 * MiB);
    // Most of what the dropped live set held goes back to the system.
    expect(f.held - f.after, `released (MiB: ${JSON.stringify(mib)})`).toBeGreaterThan((f.held - f.base) / 2);
  });

  it('the native release also gives malloc\'s freed pages back (glibc)', () => {
    const glibc = (process.report.getReport() as { header?: { glibcVersionRuntime?: string } }).header?.glibcVersionRuntime;
    expect(glibc, 'this runtime uses glibc').toBeDefined();
    const native = path.resolve(__dirname, '..', '..', 'native', 'build', 'Release', 'weft_native.node');
    // 60,000 small buffers come from malloc's arena; one more, kept, sits
    // above them, so that freeing the others cannot shrink the arena from
    // its top: the freed pages stay resident until malloc_trim. The
    // collections free the buffers; only the release returns their pages.
    const script = `
      const m = require(${JSON.stringify(native)});
      const rss = () => process.memoryUsage.rss();
      const base = rss();
      let bufs = [];
      for (let i = 0; i < 60000; i++) bufs.push(Buffer.allocUnsafeSlow(1024));
      const keep = Buffer.allocUnsafeSlow(1024);
      bufs = [];
      gc(); gc();
      const freed = rss();
      m.releaseMemory();
      const after = rss();
      process.stdout.write(JSON.stringify({ base, freed, after, kept: keep.length }));`;
    const r = spawnSync(process.execPath, ['--expose-gc', '-e', script], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status, r.stderr).toBe(0);
    const f = JSON.parse(r.stdout) as { base: number; freed: number; after: number };
    const mib = Object.fromEntries(Object.entries(f).map(([k, v]) => [k, Math.round(v / MiB)]));
    expect(f.freed - f.base, `the freed buffers stayed resident (MiB: ${JSON.stringify(mib)})`).toBeGreaterThan(48 * MiB);
    // Without the trim, V8's notification alone gave back 19 of 99 MiB here.
    expect(f.freed - f.after, `given back (MiB: ${JSON.stringify(mib)})`).toBeGreaterThan(((f.freed - f.base) * 3) / 4);
  });
});
