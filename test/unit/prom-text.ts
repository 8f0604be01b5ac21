// A strict reader of the Prometheus text exposition format (0.0.4), for tests:
// it throws on anything a Prometheus server would reject or misread, and
// returns the samples by series ("name{a="x",b="y"}", labels in given order).

export interface PromFamily { name: string; type: string; help?: string }
export interface PromText { families: Map<string, PromFamily>; samples: Map<string, number> }

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

function parseValue(s: string, line: string): number {
  if (s === 'NaN') return NaN;
  if (s === '+Inf') return Infinity;
  if (s === '-Inf') return -Infinity;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(s)) throw new Error(`bad value "${s}" in: ${line}`);
  return Number(s);
}

function parseLabels(s: string, line: string): [string, string][] {
  const out: [string, string][] = [];
  let i = 0;
  while (i < s.length) {
    const eq = s.indexOf('=', i);
    if (eq < 0) throw new Error(`bad labels in: ${line}`);
    const name = s.slice(i, eq);
    if (!LABEL.test(name)) throw new Error(`bad label name "${name}" in: ${line}`);
    if (s[eq + 1] !== '"') throw new Error(`label value not quoted in: ${line}`);
    let j = eq + 2;
    let value = '';
    for (;;) {
      if (j >= s.length) throw new Error(`unterminated label value in: ${line}`);
      const c = s[j];
      if (c === '\\') {
        const n = s[j + 1];
        if (n === 'n') value += '\n';
        else if (n === '\\' || n === '"') value += n;
        else throw new Error(`bad escape \\${n} in: ${line}`);
        j += 2;
        continue;
      }
      if (c === '"') break;
      if (c === '\n') throw new Error(`newline in label value: ${line}`);
      value += c;
      j++;
    }
    if (out.some(([n]) => n === name)) throw new Error(`label ${name} twice in: ${line}`);
    out.push([name, value]);
    i = j + 1;
    if (s[i] === ',') i++;
    else if (i < s.length) throw new Error(`expected , between labels in: ${line}`);
  }
  return out;
}

export function parsePromText(text: string): PromText {
  if (text.length > 0 && !text.endsWith('\n')) throw new Error('exposition must end with a newline');
  const families = new Map<string, PromFamily>();
  const samples = new Map<string, number>();
  const seenSamples = new Set<string>();
  const familyOf = (name: string): PromFamily | undefined => {
    if (families.has(name)) return families.get(name);
    for (const suffix of ['_bucket', '_sum', '_count']) {
      if (name.endsWith(suffix)) {
        const f = families.get(name.slice(0, -suffix.length));
        if (f && (f.type === 'histogram' || f.type === 'summary')) return f;
      }
    }
    return undefined;
  };
  for (const line of text.split('\n')) {
    if (line === '') continue;
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
      if (!m) continue; // a plain comment
      const [, kind, name, rest] = m;
      if (!NAME.test(name)) throw new Error(`bad metric name in: ${line}`);
      if (kind === 'TYPE') {
        if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(rest)) throw new Error(`bad type in: ${line}`);
        if (families.get(name)?.type) throw new Error(`TYPE twice for ${name}`);
        if ([...seenSamples].some((s) => [name, `${name}_bucket`, `${name}_sum`, `${name}_count`].includes(s))) throw new Error(`TYPE after samples of ${name}`);
        families.set(name, { ...(families.get(name) ?? { name }), name, type: rest });
      } else {
        families.set(name, { ...(families.get(name) ?? { name, type: '' }), help: rest });
      }
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)( -?\d+)?$/.exec(line);
    if (!m) throw new Error(`bad sample line: ${line}`);
    const [, name, , labelText, valueText] = m;
    const labels = labelText ? parseLabels(labelText, line) : [];
    const value = parseValue(valueText, line);
    const fam = familyOf(name);
    if (!fam || !fam.type) throw new Error(`sample of ${name} without a TYPE line before it`);
    if (fam.type === 'counter' && (value < 0 || Number.isNaN(value))) throw new Error(`counter ${name} is ${value}`);
    if (fam.type === 'histogram' && name.endsWith('_bucket') && !labels.some(([n]) => n === 'le')) throw new Error(`bucket without le: ${line}`);
    const series = `${name}${labels.length ? `{${labels.map(([n, v]) => `${n}="${v}"`).join(',')}}` : ''}`;
    if (samples.has(series)) throw new Error(`series twice: ${series}`);
    samples.set(series, value);
    seenSamples.add(name);
  }
  // Histograms: buckets cumulative, +Inf bucket equal to _count.
  for (const f of families.values()) {
    if (f.type !== 'histogram') continue;
    const groups = new Map<string, { le: number; v: number }[]>();
    for (const [series, v] of samples) {
      if (!series.startsWith(`${f.name}_bucket`)) continue;
      const le = /le="([^"]*)"/.exec(series)![1];
      const rest = series.replace(/,?le="[^"]*"/, '').replace(`${f.name}_bucket`, '').replace('{,', '{').replace('{}', '');
      groups.set(rest, [...(groups.get(rest) ?? []), { le: le === '+Inf' ? Infinity : Number(le), v }]);
    }
    for (const [rest, buckets] of groups) {
      buckets.sort((a, b) => a.le - b.le);
      for (let i = 1; i < buckets.length; i++) if (buckets[i].v < buckets[i - 1].v) throw new Error(`${f.name}${rest}: buckets not cumulative`);
      const inf = buckets[buckets.length - 1];
      if (inf.le !== Infinity) throw new Error(`${f.name}${rest}: no +Inf bucket`);
      const count = samples.get(`${f.name}_count${rest}`);
      if (count !== inf.v) throw new Error(`${f.name}${rest}: +Inf bucket ${inf.v} != _count ${count}`);
    }
  }
  return { families, samples };
}

/** Sum of every series of a metric whose labels include all of `match`. */
export function promSum(p: PromText, name: string, match: Record<string, string> = {}): number {
  let sum = 0;
  for (const [series, v] of p.samples) {
    const m = /^([^{]+)(\{.*\})?$/.exec(series)!;
    if (m[1] !== name) continue;
    if (Object.entries(match).every(([k, val]) => (m[2] ?? '').includes(`${k}="${val}"`))) sum += v;
  }
  return sum;
}
