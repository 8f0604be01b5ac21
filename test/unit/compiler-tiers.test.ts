import { describe, expect, it } from 'vitest';
import { CompilerTiers, OPTIMIZING_FLAGS } from '../../src/util/tiering';

function fake(launchedBaselineOnly = true) {
  const s = { cpu: 0, at: 0, flags: [] as string[] };
  const tiers = new CompilerTiers({ launchedBaselineOnly, cpuMicros: () => s.cpu, now: () => s.at, setFlags: (f) => s.flags.push(f) });
  /** advance the clock by ms, with `share` of a core used meanwhile */
  const tick = (ms: number, share: number) => { s.at += ms; s.cpu += ms * 1000 * share; return tiers.check(); };
  return { s, tiers, tick };
}

describe('compiler tiers', () => {
  it('stay off while weft is idle or does small things', () => {
    const { s, tiers, tick } = fake();
    tiers.check(); // first look: a baseline only
    for (let i = 0; i < 100; i++) expect(tick(1000, i % 10 === 0 ? 0.3 : 0.01)).toBe(false);
    expect(s.flags).toEqual([]);
    expect(tiers.optimizing).toBe(false);
  });

  it('turn on at the first second with more than half a core, once', () => {
    const { s, tiers, tick } = fake();
    tiers.check();
    expect(tick(1000, 0.2)).toBe(false);
    expect(tick(1000, 0.9)).toBe(true);
    expect(s.flags).toEqual([OPTIMIZING_FLAGS]);
    expect(tiers.optimizing).toBe(true);
    expect(tick(1000, 1)).toBe(false);
    expect(s.flags).toHaveLength(1);
  });

  it('do nothing when the process was not launched with them off', () => {
    const { s, tiers, tick } = fake(false);
    tiers.check();
    expect(tick(1000, 1)).toBe(false);
    expect(s.flags).toEqual([]);
    expect(tiers.optimizing).toBe(true);
  });
});
