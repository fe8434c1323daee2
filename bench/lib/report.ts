// The results: one table (plain text and markdown), a JSON file and an SVG bar chart of the ratios.
export type TargetName = 'direct' | 'tessera' | 'pgbouncer';
export const TARGET_LABEL: Record<TargetName, string> = { direct: 'direct', tessera: 'Tessera', pgbouncer: 'PgBouncer' };

export interface Sample {
  round: number;
  value: number | null;
  latencyAvgMs?: number | null;
  latencyP99Ms?: number | null;
  failed?: number | null;
  error?: string | null;
  seconds?: number;
  extra?: Record<string, unknown>;
}

export interface TargetSummary {
  /** Mean over the rounds that produced a value (with 2 rounds, also the median). */
  value: number | null;
  latencyAvgMs: number | null;
  latencyP99Ms: number | null;
  failed: number | null;
  errors: string[];
  samples: Sample[];
}

export interface ScenarioReport {
  id: string;
  title: string;
  unit: string;
  higherIsBetter: boolean;
  /** Why a target has no value (not applicable, skipped). */
  notes: Partial<Record<TargetName, string>>;
  targets: Partial<Record<TargetName, TargetSummary>>;
  tesseraVsPgbouncer: number | null;
  tesseraVsDirect: number | null;
}

function mean(xs: (number | null | undefined)[]): number | null {
  const v = xs.filter((x): x is number => typeof x === 'number' && Number.isFinite(x));
  return v.length ? v.reduce((a, b) => a + b, 0) / v.length : null;
}

export function summarize(samples: Sample[]): TargetSummary {
  const failed = samples.some((s) => typeof s.failed === 'number') ? samples.reduce((a, s) => a + (s.failed ?? 0), 0) : null;
  return {
    value: mean(samples.map((s) => s.value)),
    latencyAvgMs: mean(samples.map((s) => s.latencyAvgMs)),
    latencyP99Ms: mean(samples.map((s) => s.latencyP99Ms)),
    failed,
    errors: samples.map((s) => s.error).filter((e): e is string => !!e),
    samples,
  };
}

export function ratio(a: number | null | undefined, b: number | null | undefined): number | null {
  return typeof a === 'number' && typeof b === 'number' && b > 0 ? a / b : null;
}

function fmtValue(v: number, unit: string): string {
  if (unit === 'KB') return v.toFixed(v < 10 ? 2 : 1);
  return Math.round(v).toLocaleString('en-US');
}

function cell(r: ScenarioReport, t: TargetName): string {
  const s = r.targets[t];
  if (!s) return r.notes[t] ?? '—';
  if (s.value === null) return 'error';
  // "!": some round reported errors or failed transactions; see the JSON.
  const flag = s.errors.length > 0 || (s.failed ?? 0) > 0 ? '!' : '';
  return fmtValue(s.value, r.unit) + flag;
}

function fmtRatio(x: number | null): string {
  return x === null ? '—' : `${x.toFixed(2)}x`;
}

export const HEADER = ['scenario', 'direct', 'Tessera', 'PgBouncer', 'Tessera/PgBouncer', 'Tessera/direct'];

export function rows(reports: ScenarioReport[]): string[][] {
  return reports.map((r) => [
    `${r.title} (${r.unit}${r.higherIsBetter ? '' : ', lower is better'})`,
    cell(r, 'direct'),
    cell(r, 'tessera'),
    cell(r, 'pgbouncer'),
    fmtRatio(r.tesseraVsPgbouncer),
    fmtRatio(r.tesseraVsDirect),
  ]);
}

export function plainTable(reports: ScenarioReport[]): string {
  const all = [HEADER, ...rows(reports)];
  const widths = HEADER.map((_, i) => Math.max(...all.map((row) => row[i].length)));
  const line = (row: string[]) => row.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join(' | ');
  const rule = widths.map((w) => '-'.repeat(w)).join('-+-');
  return [line(HEADER), rule, ...all.slice(1).map(line)].join('\n');
}

export function markdownTable(reports: ScenarioReport[]): string {
  const esc = (s: string) => s.replace(/\|/g, '\\|');
  return [
    `| ${HEADER.join(' | ')} |`,
    `|${HEADER.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`,
    ...rows(reports).map((row) => `| ${row.map(esc).join(' | ')} |`),
  ].join('\n');
}

/** Latency and failure details per target (for stderr and the JSON reader). */
export function detailTable(reports: ScenarioReport[]): string {
  const out: string[] = [];
  for (const r of reports) {
    for (const t of ['direct', 'tessera', 'pgbouncer'] as TargetName[]) {
      const s = r.targets[t];
      if (!s) continue;
      const parts = [`${r.id.padEnd(20)} ${TARGET_LABEL[t].padEnd(9)}`];
      if (s.latencyAvgMs !== null) parts.push(`latency avg ${s.latencyAvgMs.toFixed(2)} ms`);
      if (s.latencyP99Ms !== null) parts.push(`p99 ${s.latencyP99Ms.toFixed(2)} ms`);
      if (s.failed !== null) parts.push(`failed ${s.failed}`);
      const cpu = mean(s.samples.map((x) => x.extra?.poolerCpuUsPerTx as number | undefined));
      if (cpu !== null) parts.push(`pooler CPU ${cpu.toFixed(1)} µs each`);
      parts.push(`rounds ${s.samples.map((x) => (x.value === null ? 'error' : fmtValue(x.value, r.unit))).join(', ')}`);
      if (s.errors.length) parts.push(`errors: ${[...new Set(s.errors)].join(' / ').slice(0, 300)}`);
      out.push(parts.join(' · '));
    }
  }
  return out.join('\n');
}

// ---- SVG ---------------------------------------------------------------------------------------

function xmlEscape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/**
 * Horizontal bars of Tessera/PgBouncer and Tessera/direct per scenario on a log2 axis centred on
 * 1x, so 2x faster and 2x slower are the same length.
 */
export function svgChart(reports: ScenarioReport[], subtitle: string): string {
  const series = [
    { key: 'tesseraVsPgbouncer' as const, label: 'Tessera / PgBouncer', color: '#2f6fdb' },
    { key: 'tesseraVsDirect' as const, label: 'Tessera / direct', color: '#9aa3ad' },
  ];
  const shown = reports.filter((r) => r.tesseraVsPgbouncer !== null || r.tesseraVsDirect !== null);
  const values = shown.flatMap((r) => [r.tesseraVsPgbouncer, r.tesseraVsDirect]).filter((x): x is number => x !== null && x > 0);
  const maxExp = Math.max(1, Math.ceil(Math.log2(Math.max(1, ...values)) + 0.15));
  const minExp = Math.min(-1, Math.floor(Math.log2(Math.min(1, ...values)) - 0.15));

  const labelW = 370;
  const plotW = 480;
  const rightPad = 60;
  const width = labelW + plotW + rightPad;
  const barH = 13;
  const rowH = barH * 2 + 16;
  const top = 70;
  const height = top + Math.max(1, shown.length) * rowH + 40;
  const x = (v: number) => labelW + ((Math.log2(v) - minExp) / (maxExp - minExp)) * plotW;

  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif" font-size="12">`);
  parts.push(`<rect width="100%" height="100%" fill="#ffffff"/>`);
  parts.push(`<text x="12" y="22" font-size="15" font-weight="600">Tessera relative to PgBouncer and to direct PostgreSQL (log scale; right of 1x = Tessera higher)</text>`);
  parts.push(`<text x="12" y="40" fill="#555" font-size="11">${xmlEscape(subtitle)}</text>`);
  series.forEach((s, i) => {
    const lx = labelW + i * 170;
    parts.push(`<rect x="${lx}" y="50" width="12" height="10" fill="${s.color}"/><text x="${lx + 16}" y="59">${xmlEscape(s.label)}</text>`);
  });
  // Grid: one line per power of two.
  for (let e = minExp; e <= maxExp; e++) {
    const gx = x(2 ** e).toFixed(1);
    const one = e === 0;
    parts.push(`<line x1="${gx}" y1="${top - 4}" x2="${gx}" y2="${height - 30}" stroke="${one ? '#333' : '#e3e3e3'}" stroke-width="${one ? 1.5 : 1}"/>`);
    const label = e >= 0 ? `${2 ** e}x` : `1/${2 ** -e}x`;
    parts.push(`<text x="${gx}" y="${height - 14}" text-anchor="middle" fill="#555">${label}</text>`);
  }
  shown.forEach((r, i) => {
    const y0 = top + i * rowH;
    const title = `${r.title}${r.higherIsBetter ? '' : ' (lower is better)'}`;
    parts.push(`<text x="${labelW - 10}" y="${y0 + barH + 4}" text-anchor="end">${xmlEscape(title)}</text>`);
    series.forEach((s, j) => {
      const v = r[s.key];
      const y = y0 + j * (barH + 2);
      if (v === null || v <= 0) {
        parts.push(`<text x="${x(1) + 4}" y="${y + barH - 2}" fill="#999">n/a</text>`);
        return;
      }
      const x1 = x(1);
      const x2 = Math.min(labelW + plotW, Math.max(labelW, x(v)));
      const bx = Math.min(x1, x2);
      const bw = Math.max(1, Math.abs(x2 - x1));
      parts.push(`<rect x="${bx.toFixed(1)}" y="${y}" width="${bw.toFixed(1)}" height="${barH}" fill="${s.color}"/>`);
      const tx = v >= 1 ? x2 + 4 : x2 - 4;
      parts.push(`<text x="${tx.toFixed(1)}" y="${y + barH - 2}" text-anchor="${v >= 1 ? 'start' : 'end'}" font-size="11">${v.toFixed(2)}x</text>`);
    });
  });
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}
