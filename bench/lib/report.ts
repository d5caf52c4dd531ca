/**
 * Scenario results and their renderings: aligned console tables, a markdown file for the README, the JSON
 * record, and an SVG bar chart drawn here (no plotting dependency).
 */
import { loadgenPriorityNote } from './loadgen.js';

export interface TargetCheck {
  /** The target as the issue states it. */
  target: string;
  /** What this run measured, in words and numbers. */
  measured: string;
  /** null when the run could not evaluate it (a peer or a cell was not run). */
  met: boolean | null;
}

export interface ChartPanel {
  title: string;
  unit: string;
  /** Category labels along the axis (cells such as "5 MB × 200"). */
  groups: string[];
  /** One bar per series in each group; NaN or undefined leaves a gap. */
  series: Array<{ name: string; values: Array<number | undefined> }>;
  /** Draw values on a log scale (for ranges spanning orders of magnitude). */
  log?: boolean;
}

export interface ScenarioResult {
  id: string;
  title: string;
  /** Conditions of the run: upstream throttle, tool, concurrency, what was skipped and why. */
  notes: string[];
  columns: string[];
  rows: string[][];
  targets: TargetCheck[];
  charts: ChartPanel[];
  /** Every measured number, for the JSON record. */
  data: unknown;
}

export interface RunReport {
  command: string;
  startedAt: string;
  durationS: number;
  mode: 'smoke' | 'default' | 'full';
  machine: Record<string, string | number>;
  scenarios: ScenarioResult[];
}

export function textTable(columns: string[], rows: string[][]): string {
  const widths = columns.map((c, i) => Math.max(c.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [line(columns), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

export function markdownTable(columns: string[], rows: string[][]): string {
  const esc = (s: string) => s.replaceAll('|', '\\|');
  return [
    `| ${columns.map(esc).join(' | ')} |`,
    `| ${columns.map((_, i) => (i === 0 ? '---' : '---:')).join(' | ')} |`,
    ...rows.map((r) => `| ${r.map(esc).join(' | ')} |`),
  ].join('\n');
}

function targetLine(t: TargetCheck): string {
  const mark = t.met === null ? 'NOT RUN' : t.met ? 'MET' : 'MISSED';
  return `${mark.padEnd(7)} ${t.target}: ${t.measured}`;
}

export function renderText(report: RunReport): string {
  const out: string[] = [];
  for (const s of report.scenarios) {
    out.push('', `== ${s.title} ==`, ...s.notes.map((n) => `  ${n}`));
    if (s.columns.length > 0) out.push('', textTable(s.columns, s.rows));
    if (s.targets.length > 0) out.push('', 'Targets:', ...s.targets.map((t) => `  ${targetLine(t)}`));
  }
  return out.join('\n');
}

export function renderMarkdown(report: RunReport): string {
  const m = report.machine;
  const out: string[] = [
    `Measured by \`${report.command}\` on ${report.startedAt.slice(0, 10)} (${report.mode} set, ${Math.round(report.durationS)} s):`,
    `${m.cpu}, ${m.cores} cores, ${m.memory}; ${m.os}; Node ${m.node}; ${m.nginx}; ${m.varnish}; ${m.wrk}.${m.scratchFs === undefined ? '' : ` Data dirs and caches on ${m.scratchFs}.`}`,
    `Servers, the load generator and the upstream emulator share this machine. ${loadgenPriorityNote(Number(m.loadgenNice ?? 0))}`,
  ];
  for (const s of report.scenarios) {
    out.push('', `### ${s.title}`, '', ...s.notes.map((n) => `- ${n}`));
    if (s.columns.length > 0) out.push('', markdownTable(s.columns, s.rows));

    if (s.targets.length > 0) {
      out.push(
        '',
        ...s.targets.map(
          (t) => `- **${t.met === null ? 'not run' : t.met ? 'met' : 'missed'}**: ${t.target}: ${t.measured}`,
        ),
      );
    }
  }
  return `${out.join('\n')}\n`;
}

const PALETTE = ['#1b9e77', '#66a61e', '#d95f02', '#e7298a', '#7570b3', '#e6ab02', '#a6761d', '#666666'];

function xmlEscape(s: string): string {
  return s.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;').replaceAll('"', '&quot;');
}

function shortNumber(v: number): string {
  if (v >= 1e6) return `${(v / 1e6).toFixed(1)}M`;
  if (v >= 1e4) return `${(v / 1e3).toFixed(0)}k`;
  if (v >= 100) return v.toFixed(0);
  if (v >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

/** All panels stacked vertically in one SVG: grouped bars, a legend per panel, values printed on the bars. */
export function renderSvg(report: RunReport): string {
  const panels = report.scenarios.flatMap((s) => s.charts);
  const width = 960;
  const panelHeight = 300;
  const top = 40;
  const parts: string[] = [];
  let y = top;
  for (const panel of panels) {
    parts.push(panelSvg(panel, 0, y, width, panelHeight));
    y += panelHeight + 20;
  }
  const height = y + 10;
  const header = `recgate bench, ${report.startedAt.slice(0, 16).replace('T', ' ')} UTC, ${report.machine.cores} cores: ${report.command}`;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif" font-size="11">
<rect width="100%" height="100%" fill="#ffffff"/>
<text x="12" y="24" font-size="14" font-weight="bold">${xmlEscape(header)}</text>
${parts.join('\n')}
</svg>
`;
}

function panelSvg(panel: ChartPanel, x0: number, y0: number, width: number, height: number): string {
  const left = 70;
  const right = 180;
  const plotTop = y0 + 28;
  const plotBottom = y0 + height - 40;
  const plotW = width - left - right;
  const plotH = plotBottom - plotTop;
  const values = panel.series
    .flatMap((s) => s.values)
    .filter((v): v is number => v !== undefined && Number.isFinite(v));
  const max = Math.max(...values, 0);
  const minPositive = Math.min(...values.filter((v) => v > 0), max || 1);
  const logLow = Math.log10(Math.max(minPositive / 2, 1e-9));
  const logHigh = Math.log10(Math.max(max, minPositive) * 1.15);
  const scale = (v: number) => {
    if (panel.log) {
      if (v <= 0) return 0;
      return ((Math.log10(v) - logLow) / (logHigh - logLow || 1)) * plotH;
    }
    return max > 0 ? (v / (max * 1.1)) * plotH : 0;
  };
  const out: string[] = [];
  out.push(
    `<text x="${x0 + 12}" y="${y0 + 16}" font-size="13" font-weight="bold">${xmlEscape(`${panel.title} (${panel.unit}${panel.log ? ', log scale' : ''})`)}</text>`,
  );
  out.push(`<line x1="${left}" y1="${plotBottom}" x2="${left + plotW}" y2="${plotBottom}" stroke="#333"/>`);
  out.push(`<line x1="${left}" y1="${plotTop}" x2="${left}" y2="${plotBottom}" stroke="#333"/>`);
  const ticks = panel.log ? logTicks(logLow, logHigh) : linearTicks(max * 1.1);
  for (const t of ticks) {
    const ty = plotBottom - scale(t);
    if (ty < plotTop - 1 || ty > plotBottom + 1) continue;
    out.push(`<line x1="${left}" y1="${ty}" x2="${left + plotW}" y2="${ty}" stroke="#eee"/>`);
    out.push(`<text x="${left - 6}" y="${ty + 4}" text-anchor="end" fill="#555">${shortNumber(t)}</text>`);
  }
  const groupW = plotW / Math.max(1, panel.groups.length);
  const barW = Math.max(2, Math.min(28, (groupW * 0.8) / Math.max(1, panel.series.length)));
  panel.groups.forEach((g, gi) => {
    const gx = left + gi * groupW + (groupW - barW * panel.series.length) / 2;
    panel.series.forEach((s, si) => {
      const v = s.values[gi];
      if (v === undefined || !Number.isFinite(v)) return;
      const h = Math.max(1, scale(v));
      const bx = gx + si * barW;
      out.push(
        `<rect x="${bx.toFixed(1)}" y="${(plotBottom - h).toFixed(1)}" width="${(barW - 1).toFixed(1)}" height="${h.toFixed(1)}" fill="${PALETTE[si % PALETTE.length]}"><title>${xmlEscape(`${s.name}, ${g}: ${v}`)}</title></rect>`,
      );
      if (barW >= 14) {
        out.push(
          `<text x="${(bx + barW / 2).toFixed(1)}" y="${(plotBottom - h - 3).toFixed(1)}" text-anchor="middle" font-size="9" fill="#333">${shortNumber(v)}</text>`,
        );
      }
    });
    out.push(
      `<text x="${(left + gi * groupW + groupW / 2).toFixed(1)}" y="${plotBottom + 16}" text-anchor="middle">${xmlEscape(g)}</text>`,
    );
  });
  panel.series.forEach((s, si) => {
    const ly = plotTop + si * 16;
    out.push(
      `<rect x="${left + plotW + 14}" y="${ly}" width="10" height="10" fill="${PALETTE[si % PALETTE.length]}"/>`,
    );
    out.push(`<text x="${left + plotW + 28}" y="${ly + 9}">${xmlEscape(s.name)}</text>`);
  });
  return `<g>${out.join('')}</g>`;
}

function linearTicks(max: number): number[] {
  if (!(max > 0)) return [0];
  const step = 10 ** Math.floor(Math.log10(max / 5));
  const nice = [1, 2, 5, 10].map((m) => m * step).find((s) => max / s <= 6) ?? step * 10;
  const out: number[] = [];
  for (let v = 0; v <= max; v += nice) out.push(v);
  return out;
}

function logTicks(low: number, high: number): number[] {
  const out: number[] = [];
  for (let e = Math.floor(low); e <= Math.ceil(high); e++) out.push(10 ** e);
  return out;
}
