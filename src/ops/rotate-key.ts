// [wireguard] `weft host rotate-key`: gives this host a new WireGuard key pair.
// The running weft makes the key (the private key never leaves it), gives it
// to its WireGuard device and publishes the public key; the other hosts
// replace the old key and start a handshake at once. This command then waits
// (at most 30 s) until every peer has completed a handshake
// with the new key, and says how long that took.
import { ROTATE_KEY_PATH, STATUS_PATH } from './admin';
import type { OpsContext, ParsedArgs } from './context';
import { OpsError } from './context';
import { json, plural } from './format';
import type { StatusReport } from './types';

const WAIT_MS = 30_000;

export async function rotateKeyCommand(ctx: OpsContext, a: ParsedArgs): Promise<{ stdout: string; code: number }> {
  const before = await ctx.adminGet<StatusReport>(STATUS_PATH, 'rotate its WireGuard key');
  if (!before.wireguard) {
    throw new OpsError(`this host has no WireGuard to rotate: ${before.cluster ? 'weft serve runs with --encryption off' : 'one host (embedded store), nothing is encrypted between hosts'}`);
  }
  const r = await ctx.adminGet<{ host: string; publicKey: string; previous: string; at: string }>(ROTATE_KEY_PATH, 'rotate its WireGuard key', 15_000, 'POST');
  const at = Date.parse(r.at);
  const deadline = Date.now() + WAIT_MS;
  let st: StatusReport = before;
  let waiting: string[] = [];
  for (let i = 0; i < 1000; i++) {
    st = await ctx.adminGet<StatusReport>(STATUS_PATH, 'report its WireGuard peers');
    const peers = st.wireguard?.peers.filter((p) => p.expected) ?? [];
    const missing = st.wireguard?.missing.map((m) => m.host) ?? [];
    waiting = [...peers.filter((p) => !p.lastHandshake || Date.parse(p.lastHandshake) < at).map((p) => p.host ?? p.publicKey.slice(0, 8)), ...missing];
    if (waiting.length === 0 || Date.now() > deadline) break;
    await new Promise((res) => setTimeout(res, 100));
  }
  const peers = st.wireguard?.peers.filter((p) => p.expected) ?? [];
  const done = peers.filter((p) => p.lastHandshake && Date.parse(p.lastHandshake) >= at);
  const slowest = done.reduce((m, p) => Math.max(m, Date.parse(p.lastHandshake!) - at), 0);
  const result = {
    host: r.host, publicKey: r.publicKey, previous: r.previous, rotatedAt: r.at, keyFile: st.wireguard?.keyFile,
    peers: peers.length, peersWithNewKey: done.length, waitingFor: waiting, slowestHandshakeMs: slowest,
  };
  if (a.flags.has('json')) return { stdout: json(result), code: waiting.length ? 1 : 0 };
  let out = `rotated the WireGuard key of ${r.host}: public key ${r.publicKey} (was ${r.previous}); the private key stays in ${st.wireguard?.keyFile ?? 'the state directory'}\n`;
  if (peers.length === 0 && waiting.length === 0) out += 'no peers yet: other hosts will use the new key when they come\n';
  else if (waiting.length === 0) out += `${plural(done.length, 'peer')} completed a handshake with the new key, the last ${(slowest / 1000).toFixed(2)} s after the rotation\n`;
  else {
    out += `${plural(waiting.length, 'peer')} had no handshake with the new key after ${WAIT_MS / 1000} s: ${waiting.join(', ')}\n` +
      'fix: check weft status and weft doctor on those hosts (is weft running there, does it reach the store, is UDP to this host\'s WireGuard port open?)\n';
  }
  return { stdout: out, code: waiting.length ? 1 : 0 };
}
