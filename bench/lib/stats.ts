// Statistics and the result model of the bench: every figure is a list of
// samples (one per repetition), summarised as median, min and max, with its
// goal beside it.

/** Nearest-rank percentile (p in 0..100) of a non-empty list. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * s.length);
  return s[Math.min(s.length - 1, Math.max(0, rank - 1))]!;
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export interface Goal {
  /** what the goal is about: the median, the max (every time), or the min */
  of: 'median' | 'max' | 'min';
  op: '<' | '<=' | '>=' | '=';
  value: number;
}

export interface Figure {
  /** stable key, e.g. api.etcd.setup.p50 */
  id: string;
  group: string;
  name: string;
  unit: string;
  /** one per repetition */
  samples: number[];
  median: number;
  min: number;
  max: number;
  goal?: Goal;
  /** undefined when there is no goal */
  met?: boolean;
  note?: string;
}

export function goalText(g: Goal | undefined, unit: string): string {
  if (!g) return '';
  const of = g.of === 'median' ? 'p50' : g.of === 'max' ? 'every time' : 'worst';
  const u = unit === 'x' ? '' : ` ${unit}`;
  if (g.of === 'median') return `${g.op} ${fmt(g.value)}${u}`;
  return `${g.op} ${fmt(g.value)}${u} ${of}`;
}

export function goalMet(g: Goal, f: { median: number; min: number; max: number }): boolean {
  const v = f[g.of];
  if (!Number.isFinite(v)) return false;
  switch (g.op) {
    case '<': return v < g.value;
    case '<=': return v <= g.value;
    case '>=': return v >= g.value;
    case '=': return v === g.value;
  }
}

export function makeFigure(
  id: string, group: string, name: string, unit: string, samples: number[], goal?: Goal, note?: string,
): Figure {
  const clean = samples.filter((v) => Number.isFinite(v));
  const f: Figure = {
    id, group, name, unit, samples: samples.map((v) => round(v)),
    median: round(median(clean)), min: round(clean.length ? Math.min(...clean) : NaN), max: round(clean.length ? Math.max(...clean) : NaN),
    ...(goal ? { goal } : {}),
    ...(note ? { note } : {}),
  };
  if (goal) f.met = goalMet(goal, f);
  return f;
}

export function round(v: number): number {
  if (!Number.isFinite(v)) return v;
  const a = Math.abs(v);
  const d = a >= 100 ? 1 : a >= 10 ? 2 : 3;
  return Number(v.toFixed(d));
}

export function fmt(v: number): string {
  if (!Number.isFinite(v)) return 'n/a';
  const a = Math.abs(v);
  if (a >= 1000) return v.toFixed(0);
  if (a >= 100) return v.toFixed(1);
  if (a >= 10) return v.toFixed(2).replace(/\.?0+$/, '');
  return v.toFixed(3).replace(/\.?0+$/, '') || '0';
}

/** Markdown table of the figures (the README shows the same). */
export function table(figures: readonly Figure[]): string {
  const rows = [['figure', 'unit', 'median', 'min', 'max', 'goal', 'met', 'n']];
  for (const f of figures) {
    rows.push([
      `${f.group}: ${f.name}`, f.unit, fmt(f.median), fmt(f.min), fmt(f.max), goalText(f.goal, f.unit),
      f.met === undefined ? '' : f.met ? 'yes' : 'NO', String(f.samples.length),
    ]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => `| ${r.map((c, i) => (i === 0 || i === 1 || i === 5 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ')} |`;
  const sep = `|${widths.map((w, i) => (i === 0 || i === 1 || i === 5 ? '-'.repeat(w + 2) : '-'.repeat(w + 1) + ':')).join('|')}|`;
  return [line(rows[0]!), sep, ...rows.slice(1).map(line)].join('\n');
}
