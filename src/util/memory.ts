// Giving memory back after a burst of work.
//
// V8 keeps the pages of a heap that shrank in a pool of its own, resident,
// for reuse: neither its garbage collections nor anything in Node's
// JavaScript API return them. A weft that listed 10,000 endpoints at start,
// or took in a fill of thousands, keeps well over 100 MiB it no longer uses
// (measured: 156 MiB resident beside a 60 MiB heap). Every 10 s this looks
// at the resident size and asks V8 to release (native releaseMemory: a full
// collection and the pool handed back, then malloc's free pages; 25-30 ms
// idle, about 30-50 ms at 10,000 endpoints) when
//  - it is the first look (10 s after start): start-up (loading and
//    compiling the modules, the first list of the store, the compilers' work)
//    leaves pooled heap pages and freed malloc pages that nothing else would
//    give back (measured on an idle weft: 5 MiB of its 39 MiB of private
//    memory);
//  - it grew by `growthBytes` (16 MiB) since the last release, and that one
//    is at least `minGapMs` (30 s) old: in the middle of a burst;
//  - it grew by `settledBytes` (2 MiB) since the last release and stayed
//    within 1 MiB of the previous look: a smaller burst (a network created,
//    hosts joining) is over, and what it left is garbage (measured: 2-3 MiB
//    after two networks). These releases keep to 0.1 % of a core: the last
//    one is at least 1,000 times its own duration old (and `minGapMs`; the
//    start-up release does not count).
// At rest nothing grows, and nothing is done.
import type { Logger } from 'pino';
import { native } from '../native';

export interface MemoryReturnerOptions {
  /** How often to look at the resident size; default 10 s. */
  intervalMs?: number;
  /** Growth of the resident size since the last release that makes a release worth its collection; default 16 MiB. */
  growthBytes?: number;
  /** Growth since the last release that is released once the resident size stops changing (a burst is over); default 2 MiB. */
  settledBytes?: number;
  /** At least this long between two releases; default 30 s. */
  minGapMs?: number;
  logger?: Logger;
  /** For tests: the resident size, the release, the clock. */
  rss?: () => number;
  release?: () => void;
  now?: () => number;
}

/** The native release when the addon is built for this runtime (it calls V8's own API), else undefined. */
export function nativeRelease(): (() => void) | undefined {
  try {
    const m = native();
    if (typeof m.releaseMemory === 'function' && m.NODE_MODULE_VERSION === Number(process.versions.modules)) {
      const release = m.releaseMemory.bind(m);
      return () => release();
    }
  } catch {
    // not built: nothing to release with
  }
  return undefined;
}

export class MemoryReturner {
  readonly stats = { releases: 0, releasedBytes: 0 };
  private readonly rss: () => number;
  private readonly release: (() => void) | undefined;
  private readonly now: () => number;
  /** The resident size after the last release; undefined until the first look, which releases what start-up left. */
  private baseline: number | undefined;
  private last = Number.NEGATIVE_INFINITY;
  /** How long the last release took (ms). */
  private lastMs = 0;
  /** The resident size at the previous look. */
  private previous: number | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly o: MemoryReturnerOptions = {}) {
    this.rss = o.rss ?? (() => process.memoryUsage.rss());
    this.release = 'release' in o ? o.release : nativeRelease();
    this.now = o.now ?? Date.now;
  }

  /** Whether releasing is possible at all (the addon built for this runtime). */
  get available(): boolean {
    return this.release !== undefined;
  }

  /** One look; true when it released. */
  check(): boolean {
    if (!this.release) return false;
    const before = this.rss();
    const previous = this.previous;
    this.previous = before;
    if (this.baseline !== undefined) {
      // Shrinking by itself (pages reused, the kernel reclaimed) lowers the bar.
      if (before < this.baseline) this.baseline = before;
      const since = this.now() - this.last;
      if (since < (this.o.minGapMs ?? 30_000)) return false;
      const grown = before - this.baseline;
      const burst = grown >= (this.o.growthBytes ?? 16 << 20);
      const settled = grown >= (this.o.settledBytes ?? 2 << 20) && previous !== undefined && Math.abs(before - previous) < 1 << 20 && since >= this.lastMs * 1000;
      if (!burst && !settled) return false;
    }
    const first = this.baseline === undefined;
    const t0 = this.now();
    this.release();
    const after = this.rss();
    this.last = this.now();
    const ms = this.last - t0;
    // start-up's one release is a start-up cost: the budget counts the others
    if (!first) this.lastMs = ms;
    this.baseline = after;
    this.previous = after;
    this.stats.releases++;
    this.stats.releasedBytes += Math.max(0, before - after);
    this.o.logger?.debug({ beforeMiB: Math.round(before / 1048576), afterMiB: Math.round(after / 1048576), ms }, 'gave freed heap pages back to the system');
    return true;
  }

  start(): void {
    if (this.timer || !this.release) return;
    this.timer = setInterval(() => this.check(), this.o.intervalMs ?? 10_000);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}
