#!/usr/bin/env node
// The `weft` command. Entry point of the plain daemon and of the managed
// plugin (whose entrypoint runs `weft serve`).

// `serve` and the operator commands are loaded only for the command that
// runs: a daemon never holds the operator commands' code (nor readline), and
// `weft status` does not load the daemon.
import { ConfigError, helpText, loadConfig } from './config';
import type { OpsError } from './ops';
import { RUNTIME, VERSION } from './version';

let opsErrorClass: typeof OpsError | undefined;

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined || cmd === '--help' || cmd === '-h' || cmd === 'help' || rest.includes('--help')) {
    process.stdout.write(helpText());
    return cmd === undefined ? 2 : 0;
  }
  if (cmd === 'version' || cmd === '--version') {
    process.stdout.write(`weft ${VERSION} (${RUNTIME})\n`);
    return 0;
  }
  if (cmd === 'serve') {
    const cfg = loadConfig(rest);
    const { serve } = await import('./serve');
    await serve(cfg);
    return -1; // keeps running
  }
  // Operator commands (src/ops): status, hosts, networks, endpoints, host rm, doctor.
  const { opsCommand, OpsError, runOps } = await import('./ops');
  opsErrorClass = OpsError;
  const op = opsCommand(argv);
  if (op) {
    const r = await runOps(op.name, op.rest);
    process.stdout.write(r.stdout);
    return r.code;
  }
  process.stderr.write(`weft: unknown command "${cmd}" (see weft --help)\n`);
  return 2;
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exit(code);
  },
  (err: unknown) => {
    const msg = err instanceof ConfigError ? err.message : err instanceof Error ? err.message : String(err);
    process.stderr.write(`weft: ${msg}\n`);
    process.exit(err instanceof ConfigError ? 2 : opsErrorClass && err instanceof opsErrorClass ? err.exitCode : 1);
  },
);
