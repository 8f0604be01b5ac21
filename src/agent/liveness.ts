// Telling a dead host from one that only lost the store.
//
// A host's registration lives under a lease in the store. When the lease
// expires, either the host is dead, or only its path to the store is cut
// while its containers still talk to the others over the underlay. Taking it
// out of the forwarding tables at once would cut every packet to its
// containers for as long as the partition lasts. So a host whose lease is
// gone becomes a *suspect*: it stays in the tables while the agent asks it,
// over the underlay, whether it is there (the probe responder on
// --probe-port, the one `weft doctor` uses). The rule:
//
//   - a suspect is probed every PROBE_INTERVAL_MS (each probe waits up to
//     PROBE_TIMEOUT_MS and is sent twice within it);
//   - a reply counts only if it comes from a weft that calls itself by the
//     suspect's host name;
//   - a suspect that has not answered for peerTimeoutMs (counted from the
//     first unanswered probe since its last answer, or since it became a
//     suspect) is declared gone and leaves every table;
//   - a host that registers again stops being a suspect (or gone).
//
// So a dead host leaves the tables at most lease TTL + peer timeout +
// one probe interval after its death, and a host that only lost the store
// stays as long as it answers.

export const PROBE_INTERVAL_MS = 1000;
export const PROBE_TIMEOUT_MS = 800;

export interface LivenessLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  debug(obj: object, msg: string): void;
}

export interface LivenessOptions {
  /** Resolves with the host name the weft at address answered with, or undefined when silent. */
  ask: (address: string, timeoutMs: number) => Promise<{ host: string } | undefined>;
  peerTimeoutMs: number;
  /** Called when a suspect is declared gone: the tables must be reprogrammed. */
  onGone: (host: string) => void;
  logger: LivenessLogger;
  now?: () => number;
}

interface Suspect {
  address: string;
  since: number;
  /** Start of the current run of unanswered probes; undefined while it answers. */
  silentSince?: number;
  lastAnswer?: number;
  probing: boolean;
}

export interface SuspectReport {
  host: string;
  address: string;
  since: string;
  lastAnswer?: string;
  silentForMs?: number;
}

export class Liveness {
  private readonly suspects = new Map<string, Suspect>();
  private readonly gone = new Set<string>();
  private timer?: NodeJS.Timeout;
  private readonly now: () => number;

  constructor(private readonly o: LivenessOptions) {
    this.now = o.now ?? Date.now;
  }

  /**
   * Brings the set of suspects up to date: `unregistered` maps each host
   * that has endpoints but no registration to its last known address.
   */
  update(unregistered: Map<string, string>): void {
    for (const [host, address] of unregistered) {
      if (this.gone.has(host)) continue;
      const s = this.suspects.get(host);
      if (s) {
        s.address = address;
        continue;
      }
      this.suspects.set(host, { address, since: this.now(), probing: false });
      this.o.logger.warn({ host, address, peerTimeoutSeconds: this.o.peerTimeoutMs / 1000 },
        'host has no registration in the store (lease expired): keeping its entries while it answers probes over the underlay');
      this.start();
    }
    for (const host of [...this.suspects.keys()]) if (!unregistered.has(host)) this.suspects.delete(host);
    for (const host of [...this.gone]) if (!unregistered.has(host)) this.gone.delete(host);
    if (this.suspects.size === 0) this.stopTimer();
  }

  /** Whether entries of this unregistered host stay in the tables (it is a suspect not yet declared gone). */
  keeps(host: string): boolean {
    return this.suspects.has(host);
  }

  report(): SuspectReport[] {
    const now = this.now();
    return [...this.suspects].map(([host, s]) => ({
      host, address: s.address, since: new Date(s.since).toISOString(),
      ...(s.lastAnswer ? { lastAnswer: new Date(s.lastAnswer).toISOString() } : {}),
      ...(s.silentSince !== undefined ? { silentForMs: now - s.silentSince } : {}),
    }));
  }

  goneHosts(): string[] {
    return [...this.gone].sort();
  }

  stop(): void {
    this.stopTimer();
    this.suspects.clear();
  }

  private start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.tick(), PROBE_INTERVAL_MS);
    this.timer.unref();
    this.tick();
  }

  private stopTimer(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One round: probe every suspect that is not being probed already. */
  tick(): void {
    for (const [host, s] of this.suspects) {
      if (s.probing) continue;
      s.probing = true;
      const sent = this.now();
      this.o.ask(s.address, PROBE_TIMEOUT_MS).then(
        (a) => this.result(host, s, sent, a?.host === host),
        () => this.result(host, s, sent, false),
      );
    }
  }

  private result(host: string, s: Suspect, sent: number, answered: boolean): void {
    s.probing = false;
    if (this.suspects.get(host) !== s) return; // registered again, or gone, meanwhile
    if (answered) {
      if (s.silentSince !== undefined || s.lastAnswer === undefined) {
        this.o.logger.info({ host, address: s.address }, 'host without registration answers over the underlay: its entries stay');
      }
      s.lastAnswer = this.now();
      s.silentSince = undefined;
      return;
    }
    if (s.silentSince === undefined) s.silentSince = sent;
    const silent = this.now() - s.silentSince;
    this.o.logger.debug({ host, address: s.address, silentMs: silent }, 'host without registration did not answer a probe');
    if (silent < this.o.peerTimeoutMs) return;
    this.suspects.delete(host);
    this.gone.add(host);
    if (this.suspects.size === 0) this.stopTimer();
    this.o.logger.warn({ host, address: s.address, silentMs: silent },
      'host has no registration and has not answered probes for --peer-timeout: taking it out of the forwarding tables');
    this.o.onGone(host);
  }
}
