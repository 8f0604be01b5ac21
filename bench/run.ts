// `npm run bench`: weft's speed and cost, side by side with Docker's own
// networking, on lab hosts made for the run (see bench/lib/lab.ts). Prints a
// table and writes bench/results/latest.json. Nothing here passes or fails:
// goals are printed beside the figures.
//
// Settings (environment): WEFT_BENCH_REPS (default 5) and the per-phase
// counts in bench/lib/context.ts; WEFT_BENCH_ONLY=api,run,... (or
// `npm run bench -- --only cluster`) runs a subset.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { configFromEnv, newBench, OWN_LAB_PHASES, PHASES, type Bench } from './lib/context';
import { describeMachine } from './lib/machine';
import { emergencyCleanup, log, setupLab, teardown, weftVersion } from './lib/lab';
import { goalText, table } from './lib/stats';
import { apiLatency } from './phases/api';
import { convergence, dockerRun, propagation } from './phases/docker';
import { dataPath } from './phases/datapath';
import { modes } from './phases/modes';
import { encryptedPath } from './phases/encrypted';
import { ipamContention } from './phases/ipam';
import { scale } from './phases/scale';
import { scrape } from './phases/scrape';
import { cluster } from './phases/cluster';

const RESULTS_DIR = path.resolve(__dirname, '..', '..', 'results');

const PHASE_FNS: Record<(typeof PHASES)[number], (b: Bench) => Promise<void>> = {
  api: apiLatency,
  run: dockerRun,
  conv: convergence,
  prop: propagation,
  data: dataPath,
  modes,
  crypt: encryptedPath, // [wireguard]
  ipam: ipamContention,
  scale,
  scrape,
  cluster,
};

/** `--only a,b` (or `--only=a,b`) on the command line: the same as WEFT_BENCH_ONLY=a,b. */
function applyArgs(argv: string[]): void {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--only' && argv[i + 1]) process.env.WEFT_BENCH_ONLY = argv[++i];
    else if (a.startsWith('--only=')) process.env.WEFT_BENCH_ONLY = a.slice('--only='.length);
    else throw new Error(`unknown argument ${a} (the bench takes --only PHASE,...; the rest is set through WEFT_BENCH_* variables)`);
  }
}

async function main(): Promise<number> {
  if (process.getuid?.() !== 0) throw new Error('the bench makes network namespaces and runs dockerd: run it as root');
  applyArgs(process.argv.slice(2));
  const cfg = configFromEnv();
  const started = Date.now();
  const machine = await describeMachine(weftVersion());
  log(`machine: ${machine.cpuModel}, ${machine.cores} cores, ${machine.memoryMiB} MiB, ${machine.kernel}; reps ${cfg.reps}`);
  const selected = PHASES.filter((p) => !cfg.only || cfg.only.has(p));
  // The shared lab only when a phase needs it, and gone before the phases
  // that bring their own lab: its idle dockerds and wefts would share the CPUs.
  const shared = selected.filter((p) => !OWN_LAB_PHASES.has(p));
  const own = selected.filter((p) => OWN_LAB_PHASES.has(p));
  const lab = shared.length ? await setupLab() : undefined;
  const b = newBench(cfg, lab);
  const failures: string[] = [];
  for (const p of [...shared, ...own]) {
    if (p === own[0] && lab) {
      log('removing the shared lab before the phases that bring their own');
      await teardown();
    }
    const t = Date.now();
    try {
      await PHASE_FNS[p](b);
    } catch (e) {
      // one phase failing leaves the others' figures standing
      const msg = `${p}: ${(e as Error).stack ?? String(e)}`;
      failures.push(msg);
      log(`phase ${msg}`);
    }
    log(`phase ${p} took ${((Date.now() - t) / 1000).toFixed(1)} s`);
  }
  const out = {
    machine,
    config: { ...cfg, only: cfg.only ? [...cfg.only] : undefined },
    durationSeconds: Math.round((Date.now() - started) / 1000),
    loadAverageEnd: Number(os.loadavg()[0]!.toFixed(2)),
    figures: b.figures.map((f) => ({ ...f, goalText: goalText(f.goal, f.unit) || undefined })),
    tables: b.tables,
    notes: b.notes,
    failures,
    details: b.details,
  };
  fs.mkdirSync(RESULTS_DIR, { recursive: true });
  const file = path.join(RESULTS_DIR, 'latest.json');
  fs.writeFileSync(file, JSON.stringify(out, null, 2) + '\n');
  process.stdout.write(
    `\nweft bench: ${machine.cpuModel}, ${machine.cores} cores, ${machine.memoryMiB} MiB, ${machine.kernel}, ` +
      `node ${machine.node}, Docker ${machine.docker}, etcd ${machine.etcd}; ${cfg.reps} repetitions, ${out.durationSeconds} s, ` +
      `load average ${machine.loadAverage} at the start, ${out.loadAverageEnd} at the end\n\n` +
      table(b.figures) + '\n' +
      b.tables.map((t) => `\n${t.title}\n\n${t.text}\n`).join('') +
      (b.notes.length ? `\nNotes:\n${b.notes.map((n) => `- ${n}`).join('\n')}\n` : '') +
      (failures.length ? `\nPhases that failed:\n${failures.map((f) => `- ${f.split('\n')[0]}`).join('\n')}\n` : '') +
      `\nwritten to ${path.relative(process.cwd(), file) || file}\n`,
  );
  return failures.length ? 1 : 0;
}

let interrupted = false;
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    if (interrupted) return;
    interrupted = true;
    log(`${sig}: tearing down`);
    emergencyCleanup();
    process.exit(130);
  });
}

main()
  .then(
    async (code) => {
      log('tearing down');
      await teardown();
      process.exit(code);
    },
    async (e: unknown) => {
      log(`failed: ${(e as Error).stack ?? String(e)}`);
      log('tearing down');
      await teardown().catch(() => undefined);
      process.exit(1);
    },
  );
