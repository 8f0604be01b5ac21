import type { Lab } from './lab';
import { log } from './lab';
import { makeFigure, type Figure, type Goal } from './stats';

export interface BenchConfig {
  /** repetitions of each figure (WEFT_BENCH_REPS, default 5) */
  reps: number;
  /** plugin API iterations per repetition (WEFT_BENCH_API_N) */
  apiN: number;
  /** `docker run -d` pairs (weft, bridge) per repetition (WEFT_BENCH_RUN_N) */
  runN: number;
  /** convergence runs per repetition (WEFT_BENCH_CONV_N) */
  convN: number;
  /** network creations per repetition (WEFT_BENCH_PROP_N) */
  propN: number;
  /** iperf3 seconds per run (WEFT_BENCH_IPERF_SECONDS) */
  iperfSeconds: number;
  /** addresses each of the three hosts allocates per repetition (WEFT_BENCH_IPAM_N) */
  ipamN: number;
  /** endpoints in the scale figure (WEFT_BENCH_SCALE) */
  scale: number;
  /** of which this many (spread over the hosts) also Join, i.e. get a veth (WEFT_BENCH_SCALE_JOIN) */
  scaleJoin: number;
  /** only these phases (WEFT_BENCH_ONLY=api,run,conv,prop,data,crypt,ipam,scale) */
  only?: Set<string>;
}

export interface Bench {
  cfg: BenchConfig;
  lab: Lab;
  figures: Figure[];
  /** what the numbers rest on, and what was found where a goal was missed */
  notes: string[];
  /** raw per-phase details for the JSON file */
  details: Record<string, unknown>;
  figure(id: string, group: string, name: string, unit: string, samples: number[], goal?: Goal, note?: string): Figure;
}

export function newBench(cfg: BenchConfig, lab: Lab): Bench {
  const b: Bench = {
    cfg, lab, figures: [], notes: [], details: {},
    figure(id, group, name, unit, samples, goal, note) {
      const f = makeFigure(id, group, name, unit, samples, goal, note);
      b.figures.push(f);
      log(`${group}: ${name} = ${f.median} ${unit} (min ${f.min}, max ${f.max}, n ${f.samples.length})`);
      return f;
    },
  };
  return b;
}

function envInt(name: string, dflt: number, min: number, max: number): number {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(`${name}=${v}: a whole number from ${min} to ${max}`);
  return n;
}

export const PHASES = ['api', 'run', 'conv', 'prop', 'data', 'crypt', 'ipam', 'scale'] as const;

export function configFromEnv(): BenchConfig {
  const only = process.env.WEFT_BENCH_ONLY?.split(',').map((s) => s.trim()).filter(Boolean);
  for (const p of only ?? []) if (!(PHASES as readonly string[]).includes(p)) throw new Error(`WEFT_BENCH_ONLY: unknown phase ${p} (${PHASES.join(', ')})`);
  return {
    reps: envInt('WEFT_BENCH_REPS', 5, 1, 50),
    apiN: envInt('WEFT_BENCH_API_N', 100, 5, 5000),
    runN: envInt('WEFT_BENCH_RUN_N', 5, 1, 100),
    convN: envInt('WEFT_BENCH_CONV_N', 4, 1, 100),
    propN: envInt('WEFT_BENCH_PROP_N', 4, 1, 20),
    iperfSeconds: envInt('WEFT_BENCH_IPERF_SECONDS', 3, 1, 60),
    ipamN: envInt('WEFT_BENCH_IPAM_N', 200, 10, 300),
    scale: envInt('WEFT_BENCH_SCALE', 1000, 3, 1000),
    scaleJoin: envInt('WEFT_BENCH_SCALE_JOIN', 60, 0, 1000),
    ...(only?.length ? { only: new Set(only) } : {}),
  };
}
