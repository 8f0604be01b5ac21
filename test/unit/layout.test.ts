// The layout rules of the README's architecture section, checked on the
// sources: the driver is a thin adapter that depends on nothing above it,
// only the plugin API calls its CNM handlers, and store keys are parsed in
// src/store/keys.ts alone.
import * as fs from 'fs';
import * as path from 'path';
import { describe, expect, it } from 'vitest';

const SRC = path.resolve(__dirname, '../../src');

function sources(dir = SRC): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return sources(p);
    return e.name.endsWith('.ts') ? [p] : [];
  });
}

const rel = (f: string) => path.relative(SRC, f).split(path.sep).join('/');
const files = sources().map((f) => ({ file: rel(f), text: fs.readFileSync(f, 'utf8') }));

/** A file's relative imports: as written, resolved against src/ (without extension), and the names imported. */
function importsOf(file: string, text: string): { spec: string; target: string; names: string }[] {
  const out: { spec: string; target: string; names: string }[] = [];
  const re = /^\s*(import|export)\s+(type\s+)?([^;]*?)\s*from\s+'(\.[^']+)'/gm;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    const target = path.posix.normalize(path.posix.join(path.posix.dirname(file), m[4]));
    out.push({ spec: m[4], target, names: m[3] });
  }
  return out;
}

const CNM_HANDLERS = ['createNetwork', 'deleteNetwork', 'createEndpoint', 'deleteEndpoint', 'join', 'leave', 'endpointInfo'];

describe('the layout of src/ (README, Architecture)', () => {
  it('finds the sources it checks', () => {
    expect(files.map((f) => f.file)).toEqual(expect.arrayContaining(['driver/driver.ts', 'api/routes.ts', 'store/keys.ts', 'serve.ts']));
  });

  it('no file of src/driver/ imports from the agent, DNS, ops or the API', () => {
    const bad = files
      .filter((f) => f.file.startsWith('driver/'))
      .flatMap((f) => importsOf(f.file, f.text).filter((i) => /^(agent|dns|ops|api)(\/|$)/.test(i.target)).map((i) => `${f.file} imports ${i.spec}`));
    expect(bad).toEqual([]);
  });

  it('the Driver (the CNM handlers) is known to the plugin API alone, and built where weft is wired together', () => {
    const users = files
      .filter((f) => importsOf(f.file, f.text).some((i) => i.target === 'driver/driver' && /\bDriver\b/.test(i.names)))
      .map((f) => f.file)
      .sort();
    expect(users).toEqual(['api/routes.ts', 'serve.ts']);
    // and no file outside src/api/ calls a handler on it
    const call = new RegExp(`\\bdriver\\??\\.(${CNM_HANDLERS.join('|')})\\(`, 'i');
    const calls = files.filter((f) => !f.file.startsWith('api/') && call.test(f.text)).map((f) => f.file);
    expect(calls).toEqual([]);
  });

  it('store keys are parsed in src/store/keys.ts alone (parseKey, leaf, areaOf)', () => {
    // slicing a key by the length of the root or of a key prefix is parsing it by hand
    const bySlice = /\.slice\(\s*(ROOT|keys\.\w+\([^)]*\)|prefix)\.length\s*\)/;
    const bySplit = /\bkey\.split\('\/'\)/;
    const bad = files
      .filter((f) => !f.file.startsWith('store/'))
      .flatMap((f) => f.text.split('\n').map((line, n) => ({ f, line, n })))
      .filter(({ line }) => bySlice.test(line) || bySplit.test(line))
      .map(({ f, line, n }) => `${f.file}:${n + 1}: ${line.trim()}`);
    expect(bad).toEqual([]);
  });
});
