// The memory returner: when it asks V8 to give freed heap pages back (only
// after the resident size grew, never twice within the gap), and that the
// native release really returns them (in a child process of its own, so that
// no other test's memory is measured).
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { MemoryReturner, nativeRelease } from '../../src/util/memory';

const MiB = 1 << 20;

describe('memory returner', () => {
  it('releases after 16 MiB of growth, not at rest, not twice within 30 s', () => {
    let rss = 100 * MiB;
    let now = 0;
    let releases = 0;
    const m = new MemoryReturner({ rss: () => rss, now: () => now, release: () => { releases++; rss = 110 * MiB; } });
    expect(m.check()).toBe(false); // at rest
    rss = 115 * MiB;
    now += 10_000;
    expect(m.check()).toBe(false); // 15 MiB: not worth a collection
    rss = 140 * MiB;
    expect(m.check()).toBe(true);
    expect(releases).toBe(1);
    expect(m.stats).toEqual({ releases: 1, releasedBytes: 30 * MiB });
    rss = 200 * MiB;
    now += 29_999;
    expect(m.check()).toBe(false); // within the gap
    now += 1;
    expect(m.check()).toBe(true);
    expect(m.stats.releases).toBe(2);
  });

  it('a resident size that shrank by itself lowers the bar', () => {
    let rss = 200 * MiB;
    let now = 100_000;
    const m = new MemoryReturner({ rss: () => rss, now: () => now, release: () => { rss = 90 * MiB; } });
    rss = 80 * MiB;
    expect(m.check()).toBe(false);
    rss = 95 * MiB;
    now += 1;
    expect(m.check()).toBe(false);
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
    const script = `
      const m = require(${JSON.stringify(native)});
      let keep = [];
      for (let r = 0; r < 150; r++) { const a = []; for (let i = 0; i < 20000; i++) a.push({ ip: '10.0.' + (i >> 8) + '.' + (i & 255), r }); keep.push(a); if (keep.length > 20) keep.shift(); }
      keep = [];
      const before = process.memoryUsage.rss();
      m.releaseMemory();
      const after = process.memoryUsage.rss();
      process.stdout.write(JSON.stringify({ before, after }));`;
    const r = spawnSync(process.execPath, ['--max-semi-space-size=1', '-e', script], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status, r.stderr).toBe(0);
    const { before, after } = JSON.parse(r.stdout) as { before: number; after: number };
    // The churn leaves well over 100 MiB of freed pages resident; the release hands most of them back.
    expect(before - after).toBeGreaterThan(64 * MiB);
  });
});
