#!/usr/bin/env node
// The `weft` command. Entry point of the plain daemon and of the managed
// plugin (whose entrypoint runs `weft serve`).

import { ConfigError, helpText, loadConfig } from './config';
import { opsCommand, OpsError, runOps } from './ops';
import { serve } from './serve';
import { RUNTIME, VERSION } from './version';

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
    await serve(cfg);
    return -1; // keeps running
  }
  // Operator commands (src/ops): status, hosts, networks, endpoints, host rm, doctor.
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
    process.exit(err instanceof ConfigError ? 2 : err instanceof OpsError ? err.exitCode : 1);
  },
);
