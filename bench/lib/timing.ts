// Wall-clock timing that can be compared with the epoch timestamps of
// iputils' `ping -D` (gettimeofday): milliseconds since the epoch, with
// sub-millisecond resolution.
import { spawn } from 'node:child_process';
import type { LabHost } from '../../test/lab/host';
import { DOCKER_CLI } from '../../test/lab/host';
import { spawnTracked } from './lab';

export const nowMs = (): number => performance.timeOrigin + performance.now();

export interface Timed {
  code: number;
  stdout: string;
  stderr: string;
  /** epoch ms when the command was started and when it exited (the 'exit' event) */
  start: number;
  end: number;
  ms: number;
}

/** Runs a command and records when it exits (not when its pipes close). Bounded by timeoutMs. */
export function timed(cmd: string, args: string[], env: Record<string, string> = {}, timeoutMs = 60_000): Promise<Timed> {
  return new Promise((resolve) => {
    const start = nowMs();
    let end = 0;
    let stdout = '';
    let stderr = '';
    const c = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const t = setTimeout(() => c.kill('SIGKILL'), timeoutMs);
    c.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    c.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    c.on('exit', () => {
      end = nowMs();
    });
    c.on('error', (e) => {
      stderr += e.message;
    });
    c.on('close', (code) => {
      clearTimeout(t);
      if (!end) end = nowMs();
      resolve({ code: code ?? 1, stdout, stderr, start, end, ms: end - start });
    });
  });
}

/** `docker ARGS` against a lab host's engine (Debian's 20.10 CLI), timed. Throws on failure. */
export async function dockerTimed(h: LabHost, args: string[], timeoutMs = 60_000): Promise<Timed> {
  const r = await timed(DOCKER_CLI, args, { DOCKER_HOST: h.dockerHost, DOCKER_CONFIG: `${h.dir}/docker-config`, DOCKER_CLI_HINTS: 'false' }, timeoutMs);
  if (r.code !== 0) throw new Error(`[${h.name}] docker ${args.join(' ')}: exit ${r.code}: ${r.stderr.trim().slice(-500)}`);
  return r;
}

export interface Pinger {
  /** epoch ms of each reply, in order */
  replies: number[];
  /** resolves with the first reply's epoch ms, or undefined when the pinger ended without one */
  firstReply: Promise<number | undefined>;
  stop(): void;
  output(): string;
}

/**
 * iputils `ping -D -n -i 0.01` to `target` inside the network namespace of
 * process `pid` (a container's), for at most `deadlineSec` seconds.
 */
export function startPinger(pid: number, target: string, deadlineSec: number, intervalSec = 0.01): Pinger {
  // -c, not -w: with a deadline iputils' ping exits at the first error
  // ("Destination Host Unreachable" while the target does not exist yet).
  const count = Math.max(1, Math.ceil(deadlineSec / intervalSec));
  const c = spawnTracked('nsenter', [`--net=/proc/${pid}/ns/net`, 'ping', '-D', '-n', '-i', String(intervalSec), '-c', String(count), target]);
  const killer = setTimeout(() => c.kill('SIGKILL'), (deadlineSec + 5) * 1000);
  c.on('exit', () => clearTimeout(killer));
  const replies: number[] = [];
  let out = '';
  let partial = '';
  let resolveFirst: (v: number | undefined) => void = () => undefined;
  const firstReply = new Promise<number | undefined>((r) => (resolveFirst = r));
  c.stdout!.setEncoding('utf8').on('data', (d: string) => {
    if (out.length < 200_000) out += d;
    const lines = (partial + d).split('\n');
    partial = lines.pop() ?? '';
    for (const l of lines) {
      const m = /^\[(\d+\.\d+)\] \d+ bytes from /.exec(l);
      if (m) {
        const t = Number(m[1]) * 1000;
        replies.push(t);
        if (replies.length === 1) resolveFirst(t);
      }
    }
  });
  c.stderr!.setEncoding('utf8').on('data', (d: string) => {
    if (out.length < 200_000) out += d;
  });
  c.on('close', () => resolveFirst(undefined));
  return {
    replies,
    firstReply,
    stop: () => {
      try {
        c.kill('SIGKILL');
      } catch {
        /* gone */
      }
    },
    output: () => out,
  };
}
