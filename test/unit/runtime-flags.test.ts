// weft's runtime flags are written in four places: `npm start`, the managed
// plugin's entrypoint, the README's systemd unit and the test lab (which the
// benchmark's memory figures come from). They must not drift apart: a figure
// measured with one set and shipped with another is a wrong figure.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { OPTIMIZING_FLAGS } from '../../src/util/tiering';
import { WEFT_NODE_FLAGS } from '../lab/weft';

const root = path.resolve(__dirname, '..', '..');
const read = (f: string): string => fs.readFileSync(path.join(root, f), 'utf8');
/** The pinned runtime weft runs on (`npm start`), whatever node runs the tests. */
const pinned = path.join(root, 'node_modules', '.bin', 'node');
const runtime = fs.existsSync(pinned) ? pinned : process.execPath;
/** The `--flags` between the node binary and the script in one command line. */
const flagsOf = (argv: string[]): string[] => argv.slice(1, argv.findIndex((a) => a.endsWith('cli.js')));

describe('runtime flags', () => {
  it('are the same in npm start, the plugin entrypoint, the README systemd unit and the lab', () => {
    const start = (JSON.parse(read('package.json')) as { scripts: { start: string } }).scripts.start.split(/\s+/);
    const entry = (JSON.parse(read('config.json')) as { entrypoint: string[] }).entrypoint;
    const unit = /^\s*ExecStart=(\/.*)$/m.exec(read('README.md'))?.[1]?.trim().split(/\s+/) ?? [];
    expect(WEFT_NODE_FLAGS).toContain('--max-opt=1');
    expect(flagsOf(start)).toEqual(WEFT_NODE_FLAGS);
    expect(flagsOf(entry)).toEqual(WEFT_NODE_FLAGS);
    expect(flagsOf(unit)).toEqual(WEFT_NODE_FLAGS);
  });

  it('are accepted by the runtime, and --max-opt=1 keeps code out of the optimizing tiers', () => {
    // %GetOptimizationStatus bit 4 (16) is "optimized" (Maglev or TurboFan code)
    const script = 'function f(n){let s=0;for(let i=0;i<n;i++)s+=i%7;return s}for(let k=0;k<200000;k++)f(50);console.log(%GetOptimizationStatus(f))';
    const run = (flags: string[]): number => {
      const r = spawnSync(runtime, [...flags, '--allow-natives-syntax', '-e', script], { encoding: 'utf8', timeout: 60_000 });
      expect(r.status, r.stderr).toBe(0);
      return Number(r.stdout.trim());
    };
    expect(run([]) & 16).toBe(16);
    expect(run(WEFT_NODE_FLAGS) & 16).toBe(0);
  });

  it('turning the compilers on undoes every flag that --max-opt=1 changed', () => {
    const values = (flags: string[]): Set<string> => {
      const r = spawnSync(runtime, [...flags, '--print-flag-values', '-e', ''], { encoding: 'utf8', timeout: 60_000 });
      expect(r.status, r.stderr).toBe(0);
      return new Set(r.stdout.split('\n').map((l) => l.trim()).filter((l) => l.startsWith('--')));
    };
    const defaults = values([]);
    const launched = values(['--max-opt=1']);
    const changed = [...defaults].filter((f) => !launched.has(f));
    expect(changed.length).toBeGreaterThan(0);
    expect(OPTIMIZING_FLAGS.split(' ').sort()).toEqual(changed.sort());
  });

  it('with --max-opt=1, the optimizing compilers come back when weft turns them on', () => {
    // what CompilerTiers does at the first busy second (src/util/tiering.ts)
    const script = `require('v8').setFlagsFromString(${JSON.stringify(OPTIMIZING_FLAGS)});` +
      'function f(n){let s=0;for(let i=0;i<n;i++)s+=i%7;return s}for(let k=0;k<200000;k++)f(50);console.log(%GetOptimizationStatus(f))';
    const r = spawnSync(runtime, [...WEFT_NODE_FLAGS, '--allow-natives-syntax', '-e', script], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status, r.stderr).toBe(0);
    expect(Number(r.stdout.trim()) & 16).toBe(16);
  });
});
