// One host name, one live host. A weft registers under /weft/v1/hosts/<name>;
// a second machine started with the same --host-name would otherwise
// overwrite the live host's record with its own address (and then take its
// endpoints for its own). Before registering, weft looks at the record that
// holds the name:
//   - none, or written by this very process: the name is free;
//   - written by another process, whose weft answers a probe at the record's
//     address under this name (and is not this process): a live host holds
//     the name, and this weft is refused;
//   - written by another process, at this host's own address, where only
//     this very process answers: this host's previous run (a restart). No
//     other weft can be answering there (it would hold the probe port), so
//     the record is taken over at once;
//   - written by another process that does not answer: most likely this
//     host's previous weft, whose lease expires within its TTL. weft waits
//     for that, and registers once the record is gone.
import type { KeyValue, Store } from '../store/store';
import { keys } from '../store/keys';
import { readHost } from '../store/records';
import { INSTANCE } from '../instance';

export class DuplicateHostError extends Error {
  readonly code = 'WEFT_DUPLICATE_HOST';
  constructor(message: string) {
    super(message);
    this.name = 'DuplicateHostError';
  }
}

export type Ask = (address: string, timeoutMs: number) => Promise<{ host: string; instance?: string; startedAt?: string } | undefined>;

export type NameCheck =
  | { state: 'free' }
  | { state: 'mine'; kv: KeyValue }
  /** Held by a record whose weft does not answer: wait for its lease to expire. */
  | { state: 'held'; kv: KeyValue; holder: string };

export const IDENTITY_PROBE_MS = 1500;

export async function checkHostName(store: Store, me: string, ask: Ask | undefined, myAddress?: string): Promise<NameCheck> {
  const kv = await store.get(keys.host(me));
  if (!kv) return { state: 'free' };
  const rec = readHost(kv.value);
  if (rec.ok && rec.value.instance === INSTANCE) return { state: 'mine', kv };
  const address = rec.ok ? rec.value.address : undefined;
  const holder = rec.ok
    ? `a weft at ${rec.value.address} (weft ${rec.value.version ?? '?'}, registered ${rec.value.startedAt ?? 'at an unknown time'})`
    : 'a record weft cannot read';
  if (address && ask) {
    const a = await ask(address, IDENTITY_PROBE_MS);
    if (a && a.host === me && a.instance !== INSTANCE) {
      throw new DuplicateHostError(
        `host name ${me} is already in use by a live host: ${holder} answers on the underlay as ${me}` +
        `${a.startedAt ? ` (running since ${a.startedAt})` : ''}. Every host needs its own --host-name (WEFT_HOST_NAME): ` +
        `start this weft with another name, or stop the weft at ${address} first`);
    }
    if (a && a.host === me && a.instance === INSTANCE && address === myAddress) return { state: 'mine', kv };
  }
  return { state: 'held', kv, holder };
}
