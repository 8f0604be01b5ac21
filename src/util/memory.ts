// Giving memory back after a burst of work.
//
// V8 keeps the pages of a heap that shrank in a pool of its own, resident,
// for reuse: neither its garbage collections nor anything in Node's
// JavaScript API return them. A weft that listed 10,000 endpoints at start,
// or took in a fill of thousands, keeps well over 100 MiB it no longer uses
// (measured: 156 MiB resident beside a 60 MiB heap). Every 10 s this looks
// at the resident size; when it grew by more than `growthBytes` since
// the last release (and the last one is at least `minGapMs` old), it asks V8
// to release (native releaseMemory: a full collection and the pool handed
// back, about 30 ms at 10,000 endpoints). At rest nothing grows, and nothing
// is done. The first look (10 s after start) releases in any case: start-up
// (loading and compiling the modules, the first list of the store, the
// compilers' work) leaves a heap page pool and freed malloc pages behind that
// nothing else would give back (measured on an idle weft: 5 MiB of its 39 MiB
// of private memory).
import type { Logger } from 'pino';
import { native } from '../native';

export interface MemoryReturnerOptions {
  /** How often to look at the resident size; default 10 s. */
  intervalMs?: number;
  /** Growth of the resident size since the last release that makes a release worth its collection; default 16 MiB. */
  growthBytes?: number;
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
    if (this.baseline !== undefined) {
      // Shrinking by itself (pages reused, the kernel reclaimed) lowers the bar.
      if (before < this.baseline) this.baseline = before;
      if (before < this.baseline + (this.o.growthBytes ?? 16 << 20) || this.now() - this.last < (this.o.minGapMs ?? 30_000)) return false;
    }
    const t0 = this.now();
    this.release();
    const after = this.rss();
    this.last = this.now();
    this.baseline = after;
    this.stats.releases++;
    this.stats.releasedBytes += Math.max(0, before - after);
    this.o.logger?.debug({ beforeMiB: Math.round(before / 1048576), afterMiB: Math.round(after / 1048576), ms: this.last - t0 }, 'gave freed heap pages back to the system');
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
