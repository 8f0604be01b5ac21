// The bench's side of the cluster simulator (sim.ts): starts its process
// inside a lab namespace on the underlay and sends it commands, each bounded
// in time. The process is tracked (killed by teardown and on signals) and
// exits by itself when the bench's end of its stdin closes.
import * as path from 'node:path';
import * as readline from 'node:readline';
import type { ChildProcess } from 'node:child_process';
import type { LabHost } from '../../test/lab/host';
import { log, spawnTracked } from './lab';
import type { ProbeResult, SimInit, WatchTimes } from './sim';

export interface SimStats {
  hosts: number;
  leasesLost: number;
  keysWritten: number;
  endpoints: number[];
  rssMiB: number;
  cpuMs: number;
}

export class SimClient {
  private readonly c: ChildProcess;
  private seq = 0;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  private stderr = '';
  private exited = false;

  /** Starts the simulator's process in `host`'s network namespace. */
  constructor(host: LabHost) {
    const main = path.join(__dirname, 'sim-main.js');
    this.c = spawnTracked('nsenter', [`--net=${host.netns}`, process.execPath, main], { stdin: true });
    readline.createInterface({ input: this.c.stdout! }).on('line', (line) => this.onLine(line));
    this.c.stderr!.setEncoding('utf8').on('data', (d: string) => {
      this.stderr = (this.stderr + d).slice(-8000);
      for (const l of d.split('\n')) if (l.trim()) log(`sim: ${l.trim().slice(0, 300)}`);
    });
    this.c.on('exit', (code, signal) => {
      this.exited = true;
      const err = new Error(`the simulator exited (code ${code}, signal ${signal}): ${this.stderr.slice(-1000)}`);
      for (const p of this.pending.values()) {
        clearTimeout(p.timer);
        p.reject(err);
      }
      this.pending.clear();
    });
  }

  private onLine(line: string): void {
    let msg: { id?: number; ok?: boolean; result?: unknown; error?: string };
    try {
      msg = JSON.parse(line) as typeof msg;
    } catch {
      log(`sim (not JSON): ${line.slice(0, 300)}`);
      return;
    }
    const p = msg.id === undefined ? undefined : this.pending.get(msg.id);
    if (!p) return;
    this.pending.delete(msg.id!);
    clearTimeout(p.timer);
    if (msg.ok) p.resolve(msg.result);
    else p.reject(new Error(`simulator: ${msg.error ?? 'failed'}`));
  }

  private send<T>(cmd: string, body: Record<string, unknown>, timeoutMs: number): Promise<T> {
    if (this.exited) return Promise.reject(new Error(`the simulator is not running: ${this.stderr.slice(-1000)}`));
    const id = ++this.seq;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`simulator: ${cmd} took more than ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
      this.c.stdin!.write(JSON.stringify({ id, cmd, ...body }) + '\n');
    });
  }

  init(init: SimInit): Promise<SimStats> {
    return this.send('init', { init }, 120_000);
  }
  fill(perNetwork: number): Promise<{ endpoints: number; txns: number; ms: number }> {
    return this.send('fill', { perNetwork }, 600_000);
  }
  probe(network: number): Promise<ProbeResult> {
    return this.send('probe', { network }, 30_000);
  }
  unprobe(network: number, endpointId: string): Promise<{ sentAt: number; ackAt: number }> {
    return this.send('unprobe', { network, endpointId }, 30_000);
  }
  watchTimes(): Promise<WatchTimes> {
    return this.send('watchTimes', {}, 10_000);
  }
  stats(): Promise<SimStats> {
    return this.send('stats', {}, 10_000);
  }

  /** Asks it to close (bounded), then makes sure it is gone. */
  async close(): Promise<void> {
    if (!this.exited) await this.send('close', {}, 5_000).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 200));
    if (!this.exited) this.c.kill('SIGKILL');
  }
}
