// Small process helpers for the test lab: run a command with a bound, never
// throw on a non-zero exit, and wait for conditions with a bound.
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
  /** true when the command was killed because it ran past its timeout */
  timedOut: boolean;
}

export interface RunOptions {
  /** default 30 s; the child gets SIGKILL when it runs past it (code 124) */
  timeoutMs?: number;
  env?: Record<string, string>;
  input?: string | Buffer;
  cwd?: string;
}

/** Runs a command; resolves with its exit code and output, never rejects on failure. */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  return new Promise((resolve) => {
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    let settled = false;
    const child = spawn(cmd, [...args], {
      env: opts.env ? { ...process.env, ...opts.env } : process.env,
      cwd: opts.cwd,
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.stdout?.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    child.stderr?.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    if (opts.input !== undefined && child.stdin) {
      child.stdin.on('error', () => undefined);
      child.stdin.end(opts.input);
    }
    const finish = (code: number): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (timedOut) {
        stderr += `\n[lab] ${cmd} ${args.join(' ')}: timed out after ${timeoutMs} ms`;
        code = 124;
      }
      resolve({ code, stdout, stderr, timedOut });
    };
    child.on('error', (err) => {
      stderr += `\n[lab] cannot run ${cmd}: ${err.message}`;
      finish(127);
    });
    child.on('close', (code, signal) => finish(code ?? (signal ? 128 : 1)));
  });
}

export function describeCommand(cmd: string, args: readonly string[]): string {
  return [cmd, ...args].map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : JSON.stringify(a))).join(' ');
}

export function failure(what: string, r: RunResult): Error {
  const out = r.stdout.trim() ? `\nstdout: ${r.stdout.trim().slice(-2000)}` : '';
  return new Error(`${what} failed (exit ${r.code}): ${r.stderr.trim().slice(-2000)}${out}`);
}

/** Like run(), but throws with the command's stderr when it exits non-zero. */
export async function runOk(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) throw failure(describeCommand(cmd, args), r);
  return r;
}

/** Synchronous run for clean-up paths (signal handlers, safety nets). Never throws. */
export function runSync(cmd: string, args: readonly string[], timeoutMs = 10_000): RunResult {
  const r = spawnSync(cmd, [...args], { encoding: 'utf8', timeout: timeoutMs, stdio: ['ignore', 'pipe', 'pipe'] });
  const timedOut = r.error !== undefined && (r.error as NodeJS.ErrnoException).code === 'ETIMEDOUT';
  return {
    code: r.status ?? (timedOut ? 124 : 1),
    stdout: r.stdout ?? '',
    stderr: (r.stderr ?? '') + (r.error ? `\n[lab] ${r.error.message}` : ''),
    timedOut,
  };
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

export interface WaitOptions {
  timeoutMs?: number;
  intervalMs?: number;
  /** what is being waited for, for the error message */
  what?: string;
}

/**
 * Polls `cond` until it returns a truthy value (returned) or the time is up
 * (throws, with the last error or value seen). Bounded in time and count.
 */
export async function waitFor<T>(cond: () => Promise<T> | T, opts: WaitOptions = {}): Promise<NonNullable<T>> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const intervalMs = opts.intervalMs ?? 100;
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (let i = 0; ; i++) {
    try {
      const v = await cond();
      if (v) return v as NonNullable<T>;
      last = v;
    } catch (e) {
      last = e;
    }
    if (Date.now() >= deadline || i > 100_000) break;
    await sleep(Math.min(intervalMs, Math.max(1, deadline - Date.now())));
  }
  const detail = last instanceof Error ? last.message : JSON.stringify(last);
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${opts.what ?? 'a condition'} (last: ${detail})`);
}

export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // a zombie still answers kill(0): treat it as gone
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

export function killQuiet(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    /* already gone */
  }
}

/** Keeps the last `max` lines written to it. */
export class LineTail {
  private lines: string[] = [];
  private partial = '';
  constructor(private readonly max = 200) {}
  push(chunk: string): void {
    const parts = (this.partial + chunk).split('\n');
    this.partial = parts.pop() ?? '';
    for (const l of parts) {
      this.lines.push(l);
      if (this.lines.length > this.max) this.lines.shift();
    }
  }
  tail(n = 40): string {
    const all = this.partial ? [...this.lines, this.partial] : this.lines;
    return all.slice(-n).join('\n');
  }
}
