// Output for people (aligned tables) and for scripts (JSON), shared by every
// operator command.

/** Columns separated by two spaces, left-aligned, no trailing blanks. Cells must not hold newlines. */
export function table(headers: string[], rows: (string | number | undefined)[][]): string {
  const cells = [headers, ...rows.map((r) => headers.map((_, i) => (r[i] === undefined || r[i] === '' ? '-' : String(r[i]))))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => r[i].length)));
  return cells.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  ').trimEnd()).join('\n') + '\n';
}

/** JSON for scripts: stable, two-space indented, newline-terminated. */
export function json(value: unknown): string {
  return JSON.stringify(value, null, 2) + '\n';
}

/** The 12-character short form of a Docker or weft id, as `docker ps` shows them. */
export function shortId(id: string): string {
  return id.slice(0, 12);
}

/** "850 ms", "12 s", "4 min", "3 h", "2 d". */
export function duration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '-';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 120) return `${Math.round(s)} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}

/** "12 s ago" from an ISO time; "-" when absent or unreadable. */
export function ago(iso: string | undefined, now = Date.now()): string {
  if (!iso) return '-';
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return '-';
  return `${duration(Math.max(0, now - t))} ago`;
}

/** Sorts strings holding IPv4 addresses (or anything) numerically where digits are. */
export function naturalCompare(a: string, b: string): number {
  return a.localeCompare(b, 'en', { numeric: true });
}

export function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}
