// This weft process: a random id and its start time. Written into this
// host's registration and sent in probe replies, so that another weft can
// tell this process apart from an earlier one on the same host (a restart)
// and from a second host that was given the same --host-name.
import { randomBytes } from 'crypto';

export const INSTANCE: string = randomBytes(8).toString('hex');
export const STARTED_AT: string = new Date().toISOString();
