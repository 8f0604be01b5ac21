// The operator commands: `weft status`, `hosts`, `networks`, `endpoints`,
// `host rm`, `doctor`. Each reads the store directly, with the same settings
// as `weft serve` (flags, WEFT_* environment, --config file), and asks the
// local weft (admin routes on its plugin socket) where local state is needed.
import * as readline from 'readline';
import { isClusterStore } from '../config';
import { Ipam } from '../ipam/ipam';
import { CommandSpec, OpsContext, OpsError, parseArgs, storeError } from './context';
import { doctorCommand } from './doctor';
import { endpointsCommand } from './endpoints';
import { json } from './format';
import { describePlan, executeHostRemoval, HostAliveError, isEmptyPlan, planHostRemoval } from './host-rm';
import { Prober } from './probe';
import { hostsCommand } from './hosts';
import { networksCommand } from './networks';
import { rotateKeyCommand } from './rotate-key';
import { statusCommand } from './status';

export { OpsError };

export interface CommandOutput { stdout: string; code: number }

type Runner = (ctx: OpsContext, a: ReturnType<typeof parseArgs>) => Promise<CommandOutput | string>;

const COMMANDS: Record<string, { spec: CommandSpec; run: Runner }> = {
  status: { spec: { name: 'status', flags: ['json'], args: [] }, run: statusCommand },
  hosts: { spec: { name: 'hosts', flags: ['json'], args: [] }, run: hostsCommand },
  networks: { spec: { name: 'networks', flags: ['json'], args: [] }, run: networksCommand },
  endpoints: { spec: { name: 'endpoints', flags: ['json'], args: ['[NETWORK]'] }, run: endpointsCommand },
  'host rm': { spec: { name: 'host rm', flags: ['json', 'yes'], args: ['NAME'] }, run: hostRmCommand },
  doctor: { spec: { name: 'doctor', flags: ['json'], args: [] }, run: doctorCommand },
  // [wireguard]
  'host rotate-key': { spec: { name: 'host rotate-key', flags: ['json'], args: [] }, run: rotateKeyCommand },
};

/** The command named by argv ("host rm" takes two words), or undefined. */
export function opsCommand(argv: string[]): { name: string; rest: string[] } | undefined {
  if (argv[0] === 'host') {
    if (argv[1] === 'rm') return { name: 'host rm', rest: argv.slice(2) };
    if (argv[1] === 'rotate-key') return { name: 'host rotate-key', rest: argv.slice(2) };
    throw new OpsError(`unknown command "weft host ${argv[1] ?? ''}": the host command has the subcommands weft host rm NAME and weft host rotate-key`, 2);
  }
  return argv[0] !== undefined && argv[0] in COMMANDS ? { name: argv[0], rest: argv.slice(1) } : undefined;
}

export async function runOps(name: string, argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<CommandOutput> {
  const c = COMMANDS[name];
  const args = parseArgs(argv, c.spec, env);
  const ctx = new OpsContext(args.cfg);
  try {
    const r = await c.run(ctx, args);
    return typeof r === 'string' ? { stdout: r, code: 0 } : r;
  } finally {
    await ctx.close();
  }
}

function ask(question: string): Promise<boolean> {
  const rl = readline.createInterface({ input: process.stdin, output: process.stderr });
  return new Promise((resolve) => {
    rl.question(question, (answer) => {
      rl.close();
      resolve(/^y(es)?$/i.test(answer.trim()));
    });
  });
}

async function hostRmCommand(ctx: OpsContext, a: ReturnType<typeof parseArgs>): Promise<CommandOutput> {
  const host = a.positional[0];
  let store;
  try {
    store = await ctx.store();
  } catch (err) {
    if ((err as { code?: string }).code === 'WEFT_STORE_LOCKED') {
      throw new OpsError(`the embedded store is held by the weft running on this host: it has only this host in it. Stop weft serve before changing the embedded store (${(err as Error).message})`);
    }
    throw storeError(ctx.cfg, err);
  }
  let plan;
  try {
    plan = await planHostRemoval(store, host);
  } catch (err) {
    if (err instanceof HostAliveError) throw new OpsError(err.message);
    throw storeError(ctx.cfg, err);
  }
  // No registration is not proof of death: a host cut off from the store keeps running its containers.
  if (isClusterStore(ctx.cfg.store) && ctx.cfg.probePort > 0 && plan.vteps.length) {
    // Without --advertise-addr: any address of the VTEPs' family (an IPv6 underlay needs an IPv6 socket).
    const prober = new Prober(ctx.cfg.advertiseAddr || (plan.vteps.some((v) => v.includes(':')) ? '::' : '0.0.0.0'), ctx.cfg.probePort);
    try {
      for (const address of plan.vteps) {
        const a = await prober.ask(address, 1500).catch(() => undefined);
        if (a?.host === host) {
          throw new OpsError(`host ${host} has no registration in the store, but its weft answers at ${address} over the underlay: it is cut off from the store, not gone, and its containers still run. ` +
            `weft host rm would release the addresses they use. Give ${host} back its access to etcd (it registers again by itself), or stop weft on ${host} for good first`);
        }
      }
    } finally {
      prober.close();
    }
  }
  if (isEmptyPlan(plan)) {
    const msg = `host ${host} holds nothing in the store: nothing to remove (weft hosts lists the hosts it knows)`;
    return { stdout: a.flags.has('json') ? json({ host, addresses: 0, endpoints: 0, bindings: 0, networksRemoved: 0, transactions: 0 }) : `${msg}\n`, code: 0 };
  }
  if (!a.flags.has('yes')) {
    if (!process.stdin.isTTY) {
      throw new OpsError(`${describePlan(plan)}. Refusing to remove it without confirmation: stdin is not a terminal, so pass --yes`);
    }
    const yes = await ask(`${describePlan(plan)}.\nRemove host ${host} for good? [y/N] `);
    if (!yes) return { stdout: 'nothing removed\n', code: 1 };
  }
  const ipam = new Ipam(store, { host: ctx.cfg.hostName, defaultPool: ctx.cfg.defaultPool, defaultPoolSize: ctx.cfg.defaultPoolSize, defaultPoolV6: ctx.cfg.defaultPoolV6 });
  let r;
  try {
    r = await executeHostRemoval(store, ipam, plan);
  } catch (err) {
    if (err instanceof HostAliveError) throw new OpsError(`${host} came back while it was being removed: ${err.message}`);
    throw err instanceof OpsError ? err : new OpsError((err as Error).message);
  }
  if (a.flags.has('json')) return { stdout: json(r), code: 0 };
  let out = `removed host ${host}: released ${r.addresses} address${r.addresses === 1 ? '' : 'es'}, deleted ${r.endpoints} endpoint${r.endpoints === 1 ? '' : 's'} and ${r.bindings} network binding${r.bindings === 1 ? '' : 's'}`;
  if (r.networksRemoved) out += `, removed ${r.networksRemoved} network${r.networksRemoved === 1 ? '' : 's'} that only it kept`;
  if (r.tunnels) out += ', released its WireGuard tunnel address'; // [wireguard]
  out += ` (${r.transactions} transaction${r.transactions === 1 ? '' : 's'})\n`;
  return { stdout: out, code: 0 };
}
