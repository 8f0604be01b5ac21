import type { Bench } from '../lib/context';
export async function ipamContention(_b: Bench): Promise<void> { throw new Error('not yet'); }
