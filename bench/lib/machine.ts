// What the figures were measured on.
import * as fs from 'node:fs';
import * as os from 'node:os';
import { run } from '../../test/lab/proc';

export interface Machine {
  cpuModel: string;
  cores: number;
  memoryMiB: number;
  kernel: string;
  os: string;
  node: string;
  docker: string;
  etcd: string;
  iperf3: string;
  weft: string;
  date: string;
  /** 1-minute load average when the bench started: other work on the machine skews every figure */
  loadAverage: number;
}

async function firstLine(cmd: string, args: string[]): Promise<string> {
  const r = await run(cmd, args, { timeoutMs: 10_000 });
  return (r.stdout || r.stderr).split('\n').find((l) => l.trim())?.trim() ?? 'unknown';
}

export async function describeMachine(weftVersion: string): Promise<Machine> {
  const cpus = os.cpus();
  let osName = 'unknown';
  try {
    osName = /PRETTY_NAME="?([^"\n]+)/.exec(fs.readFileSync('/etc/os-release', 'utf8'))?.[1] ?? osName;
  } catch {
    /* none */
  }
  const dockerd = await firstLine('dockerd', ['--version']);
  const etcd = await firstLine('etcd', ['--version']);
  return {
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    cores: cpus.length,
    memoryMiB: Math.round(os.totalmem() / 2 ** 20),
    kernel: `${os.type()} ${os.release()}`,
    os: osName,
    node: process.version,
    docker: dockerd.replace(/^Docker version /, ''),
    etcd: etcd.replace(/^etcd Version: /, ''),
    iperf3: await firstLine('iperf3', ['--version']),
    weft: weftVersion,
    date: new Date().toISOString(),
    loadAverage: Number(os.loadavg()[0]!.toFixed(2)),
  };
}
