// V8's optimizing compilers, turned on when weft has work for them.
//
// weft is launched with `--max-opt=1` (npm start, the plugin's entrypoint,
// the systemd unit): V8's baseline compiler (Sparkplug) only. Start-up's
// work is one-shot but hot enough to be optimized (protobufjs parsing the
// etcd client's `.proto` files, fastify compiling its schemas), and running
// Maglev and TurboFan on it pages their code in from the `node` binary for
// good: 4-6 MiB of an idle weft's resident memory, measured side by side.
//
// A weft with real work (a start into a cluster of 10,000 endpoints, a fill
// of thousands) needs them: without them it took 5.0 s instead of 2.7 to
// program a starting host and 46 % more CPU per change. So once weft has
// started, this looks at its CPU time every second, and the first time it
// used more than half a core over a second, it turns both compilers on, for
// the rest of the process's life (their pages would stay anyway). Idle
// clusters and small changes never get there.
import * as v8 from 'v8';
import type { Logger } from 'pino';

/** The flag that keeps the optimizing compilers off at launch. */
export const BASELINE_ONLY_FLAG = '--max-opt=1';
/**
 * What turns them on again at run time. V8 applies `--max-opt=1`'s
 * implications once, at start (`node --max-opt=1 --print-flag-values` beside
 * `node --print-flag-values`): each is undone here, back to V8's defaults.
 */
export const OPTIMIZING_FLAGS = [
  '--max-opt=999', '--opt', '--maglev', '--turbofan', '--osr-from-maglev', '--maglev-overwrite-budget',
  '--invocation-count-for-turbofan=10000',
].join(' ');

export interface CompilerTiersOptions {
  /** How often to look at the CPU time; default 1 s. */
  intervalMs?: number;
  /** Share of one core over an interval that counts as busy; default 0.5. */
  busyShare?: number;
  logger?: Logger;
  /** For tests: whether the process was launched with the compilers off, the CPU time (µs), the clock (ms), the flag setter. */
  launchedBaselineOnly?: boolean;
  cpuMicros?: () => number;
  now?: () => number;
  setFlags?: (flags: string) => void;
}

export class CompilerTiers {
  /** True once the optimizing compilers are on (or were never off). */
  optimizing: boolean;
  private readonly cpuMicros: () => number;
  private readonly now: () => number;
  private last: { cpu: number; at: number } | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly o: CompilerTiersOptions = {}) {
    this.optimizing = !(o.launchedBaselineOnly ?? process.execArgv.includes(BASELINE_ONLY_FLAG));
    this.cpuMicros = o.cpuMicros ?? (() => { const u = process.cpuUsage(); return u.user + u.system; });
    this.now = o.now ?? (() => performance.now());
  }

  /** One look; true when it turned the compilers on. */
  check(): boolean {
    if (this.optimizing) return false;
    const cur = { cpu: this.cpuMicros(), at: this.now() };
    const prev = this.last;
    this.last = cur;
    if (!prev || cur.at <= prev.at) return false;
    const share = (cur.cpu - prev.cpu) / 1000 / (cur.at - prev.at);
    if (share < (this.o.busyShare ?? 0.5)) return false;
    (this.o.setFlags ?? v8.setFlagsFromString)(OPTIMIZING_FLAGS);
    this.optimizing = true;
    this.stop();
    this.o.logger?.info({ cpuShare: Math.round(share * 100) / 100 }, 'weft is busy: V8 optimizing compilers on');
    return true;
  }

  /** Starts looking (after start-up, whose own work should not count). */
  start(): void {
    if (this.optimizing || this.timer) return;
    this.check();
    this.timer = setInterval(() => this.check(), this.o.intervalMs ?? 1000);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}
