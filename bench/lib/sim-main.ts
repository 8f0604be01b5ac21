// The simulator's process: run by sim-client.ts inside a lab namespace on the
// underlay (where etcd is), driven over stdin/stdout, one JSON object a line:
//   in:  {"id": 1, "cmd": "init" | "fill" | "probe" | "unprobe" | "stats" | "close", ...}
//   out: {"id": 1, "ok": true, "result": ...} or {"id": 1, "ok": false, "error": "..."}
// It exits when stdin closes (the bench went away) or on "close".
import * as readline from 'node:readline';
import { SimCluster, type SimInit } from './sim';

let sim: SimCluster | undefined;

function reply(id: unknown, body: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify({ id, ...body }) + '\n');
}

function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

async function handle(msg: Record<string, unknown>): Promise<unknown> {
  switch (msg.cmd) {
    case 'init': {
      if (sim) throw new Error('already initialised');
      sim = new SimCluster(msg.init as SimInit);
      await sim.start();
      return sim.stats();
    }
    case 'fill':
      return need().fill(Number(msg.perNetwork));
    case 'probe':
      return need().probe(Number(msg.network));
    case 'unprobe':
      return need().unprobe(Number(msg.network), String(msg.endpointId));
    case 'watchTimes':
      return need().watchTimes();
    case 'stats':
      return { ...(sim?.stats() ?? {}), rssMiB: process.memoryUsage().rss / 2 ** 20, cpuMs: cpuMs() };
    case 'close':
      sim?.close();
      setTimeout(() => process.exit(0), 100);
      return {};
    default:
      throw new Error(`unknown command ${String(msg.cmd)}`);
  }
}

function need(): SimCluster {
  if (!sim) throw new Error('not initialised');
  return sim;
}

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  let msg: Record<string, unknown>;
  try {
    msg = JSON.parse(line) as Record<string, unknown>;
  } catch {
    process.stderr.write(`[sim] not JSON: ${line.slice(0, 200)}\n`);
    return;
  }
  handle(msg).then(
    (result) => reply(msg.id, { ok: true, result }),
    (e: unknown) => reply(msg.id, { ok: false, error: (e as Error)?.stack ?? String(e) }),
  );
});
rl.on('close', () => {
  sim?.close();
  process.exit(0);
});
