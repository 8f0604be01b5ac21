// Fault injection for crash-consistency tests: with WEFT_FAULT_POINT=<name>
// in its environment, weft kills itself with SIGKILL the moment it reaches
// that step, exactly as a crash there would. Unset in production: the check
// is one string comparison.
const point = process.env.WEFT_FAULT_POINT ?? '';

export function faultPoint(name: string): void {
  if (point !== name) return;
  process.stderr.write(`weft: fault injection: killing myself at ${name}\n`);
  process.kill(process.pid, 'SIGKILL');
}
