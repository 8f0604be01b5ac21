import type { Bench } from '../lib/context';
export async function convergence(_b: Bench): Promise<void> { throw new Error('not yet'); }
export async function dockerRun(_b: Bench): Promise<void> { throw new Error('not yet'); }
export async function propagation(_b: Bench): Promise<void> { throw new Error('not yet'); }
