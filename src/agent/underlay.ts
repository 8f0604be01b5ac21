// One underlay family per cluster. A VXLAN device sends over IPv4 or over
// IPv6, never both (the kernel opens one UDP socket, of the family of its
// local address), so a host whose --advertise-addr is IPv6 cannot exchange
// VXLAN traffic with a host whose address is IPv4. weft refuses to register a
// host of the other family while a host of the cluster's family is alive, and
// leaves out (with a warning) endpoints behind a VTEP of the other family that
// slip through (two hosts of different families starting at the same moment).
import type { Store } from '../store/store';
import { keys, leaf } from '../store/keys';
import { readHost } from '../store/records';
import { ipFamily } from '../util/ip';

export class UnderlayFamilyError extends Error {
  readonly code = 'WEFT_UNDERLAY_FAMILY_MISMATCH';
  constructor(message: string) {
    super(message);
    this.name = 'UnderlayFamilyError';
  }
}

const familyName = (f: number | undefined) => (f === 6 ? 'IPv6' : 'IPv4');

/** Throws UnderlayFamilyError when another registered host's address is not of the family of `myAddress`. */
export async function checkUnderlayFamily(store: Store, me: string, myAddress: string): Promise<void> {
  const mine = ipFamily(myAddress);
  if (!mine) return;
  const list = await store.list(keys.hosts());
  const others: string[] = [];
  for (const kv of list.kvs) {
    const host = leaf(kv.key);
    if (host === me) continue;
    const r = readHost(kv.value);
    if (r.ok && ipFamily(r.value.address) !== mine) others.push(`${host} (${r.value.address})`);
  }
  if (others.length === 0) return;
  const theirs = familyName(mine === 4 ? 6 : 4);
  throw new UnderlayFamilyError(
    `this host's --advertise-addr ${myAddress} is ${familyName(mine)}, but the cluster's hosts advertise ${theirs} addresses: ` +
    `${others.slice(0, 5).join(', ')}${others.length > 5 ? ` and ${others.length - 5} more` : ''}. VXLAN carries traffic between hosts ` +
    `over one address family, so every host of a cluster needs an --advertise-addr of the same family: give this host its ${theirs} address, ` +
    `or move every host to ${familyName(mine)} (stop them all, then start them with their ${familyName(mine)} addresses)`);
}

/** True when `vtep` can be sent to from a VXLAN device whose local address is `local` (same family). */
export function sameFamily(local: string | undefined, vtep: string): boolean {
  return !local || ipFamily(local) === ipFamily(vtep);
}
