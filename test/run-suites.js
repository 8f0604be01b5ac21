// `npm test` after the build: the unit tests and the engine-independent
// integration tests once, then the Docker integration tests on each engine of
// the lab (test/lab/engine.ts), each run labelled with its engine, and a last
// line that adds them up. Exit code 1 if any run failed.
//
//   WEFT_TEST_ENGINES=28.5,20.10   engines, in order (default: both); the first
//                                  runs every file, the others ON_EVERY_ENGINE
//   WEFT_TEST_FILES="a b"          only these integration files (names without .test.ts), on every engine
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const repo = path.resolve(__dirname, '..');
const vitest = path.join(repo, 'node_modules', 'vitest', 'vitest.mjs');

// Integration files that start no dockerd: one run is enough.
const ENGINE_FREE = ['native', 'dataplane', 'etcd-store', 'bad-input', 'wireguard'];
// The first engine runs every Docker integration file; the others run these
// (the scenarios whose Docker side differs between engines: single host,
// several hosts, names, the managed plugin with a dockerd restart, a power loss
// in single-host, compose, IPv6 where Docker 20.10 and 28 differ most; the
// control path: when Docker joins and what an inspect says while a container
// starts differ between 20.10 and 28; routed mode, whose containers' interfaces
// weft makes itself and hands to each engine), which keeps CI well under its
// time budget.
const ON_EVERY_ENGINE = ['single-host', 'multi-host', 'dns', 'managed-plugin', 'compose', 'ipv6', 'control-path', 'routed'];

const engines = (process.env.WEFT_TEST_ENGINES || '28.5,20.10').split(',').map((s) => s.trim()).filter(Boolean);
const only = (process.env.WEFT_TEST_FILES || '').split(/[\s,]+/).filter(Boolean);

const all = fs.readdirSync(path.join(repo, 'test', 'integration'))
  .filter((f) => f.endsWith('.test.ts'))
  .map((f) => f.replace(/\.test\.ts$/, ''))
  .sort();
const pick = (names) => names.filter((n) => only.length === 0 || only.includes(n)).map((n) => `test/integration/${n}.test.ts`);

const runs = [];
if (only.length === 0) runs.push({ label: 'unit', engine: undefined, files: ['test/unit'] });
const free = pick(all.filter((n) => ENGINE_FREE.includes(n)));
if (free.length) runs.push({ label: 'integration, no dockerd', engine: undefined, files: free });
for (const [i, engine] of engines.entries()) {
  const names = all.filter((n) => !ENGINE_FREE.includes(n) && (i === 0 || ON_EVERY_ENGINE.includes(n)));
  const files = pick(names);
  if (files.length) runs.push({ label: `integration on Docker ${engine}`, engine, files });
}

/**
 * The first lines of a failure's message, for the summary: CI keeps only the
 * end of the output, and a failed test's name alone does not say what failed.
 */
function why(messages) {
  const text = (messages || []).join('\n').replace(/\x1b\[[0-9;]*m/g, '');
  const lines = text.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('at ')).slice(0, 4);
  return lines.length ? `\n         ${lines.map((l) => (l.length > 240 ? `${l.slice(0, 240)}...` : l)).join('\n         ')}` : '';
}

const outDir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-test-'));
const results = [];
for (const [i, r] of runs.entries()) {
  const json = path.join(outDir, `run${i}.json`);
  process.stdout.write(`\n==== ${r.label}: ${r.files.join(' ')}\n`);
  const env = { ...process.env };
  if (r.engine) env.WEFT_TEST_ENGINE = r.engine;
  else delete env.WEFT_TEST_ENGINE;
  const t0 = Date.now();
  const res = spawnSync(process.execPath, [vitest, 'run', '--reporter=default', '--reporter=json', `--outputFile.json=${json}`, ...r.files], {
    cwd: repo, env, stdio: 'inherit',
  });
  let passed = 0;
  let failed = 0;
  let skipped = 0;
  const failures = [];
  try {
    const rep = JSON.parse(fs.readFileSync(json, 'utf8'));
    passed = rep.numPassedTests;
    failed = rep.numFailedTests;
    skipped = rep.numPendingTests + (rep.numTodoTests || 0);
    for (const f of rep.testResults || []) {
      for (const a of f.assertionResults || []) {
        if (a.status === 'failed') failures.push(`${path.relative(repo, f.name)} > ${a.fullName}${why(a.failureMessages)}`);
      }
      if (f.status === 'failed' && !(f.assertionResults || []).some((a) => a.status === 'failed')) failures.push(`${path.relative(repo, f.name)} (${f.message || 'failed to run'})`);
    }
  } catch {
    failures.push(`${r.label}: vitest wrote no report (exit ${res.status}, signal ${res.signal})`);
  }
  const ok = res.status === 0 && failures.length === 0;
  results.push({ ...r, passed, failed: Math.max(failed, ok ? 0 : failures.length), skipped, failures, ok, seconds: Math.round((Date.now() - t0) / 1000) });
}
fs.rmSync(outDir, { recursive: true, force: true });

process.stdout.write('\n==== summary: which tests ran on which engine\n');
for (const r of results) {
  process.stdout.write(`${r.ok ? 'ok  ' : 'FAIL'} ${r.label.padEnd(28)} ${String(r.passed).padStart(4)} passed, ${r.failed} failed, ${r.skipped} skipped (${r.seconds} s): ${r.files.map((f) => path.basename(f, '.test.ts')).join(' ')}\n`);
  for (const f of r.failures) process.stdout.write(`       failed: ${f}\n`);
}
const passed = results.reduce((n, r) => n + r.passed, 0);
const failed = results.reduce((n, r) => n + r.failed, 0);
const skipped = results.reduce((n, r) => n + r.skipped, 0);
process.stdout.write(`\n${passed} passed, ${failed} failed, ${skipped} skipped\n`);
process.exit(results.every((r) => r.ok) ? 0 : 1);
