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
  /** cluster phase: hosts in the cluster, real ones included (WEFT_BENCH_CLUSTER_HOSTS) */
  clusterHosts: number;
  /** cluster phase: real lab hosts (dockerd + weft); the rest are simulated (WEFT_BENCH_CLUSTER_REAL) */
  clusterReal: number;
  /** cluster phase: cluster sizes in endpoints, ascending (WEFT_BENCH_CLUSTER_SIZES=1000,10000) */
  clusterSizes: number[];
  /** cluster phase: endpoints written one at a time per size, for the latency figure (WEFT_BENCH_CLUSTER_PROBES) */
  clusterProbes: number;
  /** cluster phase: length of the at-rest window per size, seconds; best a multiple of weft's reconcile interval, 10 s (WEFT_BENCH_CLUSTER_REST_SECONDS) */
  clusterRestSeconds: number;
  /** only these phases (WEFT_BENCH_ONLY=api,run,conv,prop,data,modes,crypt,ipam,scale,scrape,cluster, or --only) */
  only?: Set<string>;
}

export interface Bench {
  cfg: BenchConfig;
  /** the shared lab (three Docker hosts and a bare one); phases in OWN_LAB_PHASES make their own and must not touch it */
  readonly lab: Lab;
  figures: Figure[];
  /** further tables printed after the main one (the cluster phase's sizes side by side) */
  tables: { title: string; text: string }[];
  /** what the numbers rest on, and what was found where a goal was missed */
  notes: string[];
  /** raw per-phase details for the JSON file */
  details: Record<string, unknown>;
  figure(id: string, group: string, name: string, unit: string, samples: number[], goal?: Goal, note?: string): Figure;
}

export function newBench(cfg: BenchConfig, lab: Lab | undefined): Bench {
  const b: Bench = {
    cfg,
    get lab(): Lab {
      if (!lab) throw new Error('this phase needs the shared lab, which was not set up');
      return lab;
    },
    figures: [], tables: [], notes: [], details: {},
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

export const PHASES = ['api', 'run', 'conv', 'prop', 'data', 'modes', 'crypt', 'ipam', 'scale', 'scrape', 'cluster'] as const;

/** Phases that build (and remove) a lab of their own: they run after the shared lab is gone, so that its processes do not share the CPUs. */
export const OWN_LAB_PHASES: ReadonlySet<string> = new Set(['cluster']);

function envSizes(name: string, dflt: number[]): number[] {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  const sizes = v.split(',').map((x) => Number(x.trim()));
  if (sizes.length < 1 || sizes.length > 4 || sizes.some((n, i) => !Number.isInteger(n) || n < 100 || n > 16_000 || (i > 0 && n <= sizes[i - 1]!))) {
    throw new Error(`${name}=${v}: 1 to 4 ascending whole numbers from 100 to 16000`);
  }
  return sizes;
}

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
    clusterHosts: envInt('WEFT_BENCH_CLUSTER_HOSTS', 100, 4, 400),
    clusterReal: envInt('WEFT_BENCH_CLUSTER_REAL', 3, 2, 3),
    clusterSizes: envSizes('WEFT_BENCH_CLUSTER_SIZES', [1000, 10_000]),
    clusterProbes: envInt('WEFT_BENCH_CLUSTER_PROBES', 30, 5, 500),
    clusterRestSeconds: envInt('WEFT_BENCH_CLUSTER_REST_SECONDS', 30, 10, 600),
    ...(only?.length ? { only: new Set(only) } : {}),
  };
}
