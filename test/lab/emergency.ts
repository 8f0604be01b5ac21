// Last-resort clean-up when the test process is interrupted (SIGINT/SIGTERM)
// or exits with lab objects still alive. Handlers are synchronous.

type Cleanup = () => void;

const cleanups = new Set<Cleanup>();
let installed = false;

function runAll(): void {
  for (const c of [...cleanups].reverse()) {
    cleanups.delete(c);
    try {
      c();
    } catch {
      /* best effort */
    }
  }
}

function install(): void {
  if (installed) return;
  installed = true;
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    const handler = (): void => {
      runAll();
      process.removeListener(sig, handler);
      // nobody else handles it: fall back to the default action (exit)
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
    };
    process.on(sig, handler);
  }
  // WEFT_LAB_KEEP=1 keeps what a debugging script made when it exits normally
  if (process.env.WEFT_LAB_KEEP !== '1') process.on('exit', runAll);
}

/** Registers a synchronous clean-up; returns its unregister function. */
export function onEmergency(fn: Cleanup): () => void {
  install();
  cleanups.add(fn);
  return () => {
    cleanups.delete(fn);
  };
}
