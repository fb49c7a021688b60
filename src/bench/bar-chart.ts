/**
 * A plain SVG bar chart of benchmark results (no dependencies): bars grouped (e.g. by sector size), coloured by
 * series (e.g. by backend) with a legend, on a linear or a log axis, with a caption that says where and when the
 * figures were measured.
 */
export interface Bar {
  readonly label: string;
  readonly value: number;
  /** The colour group, e.g. the backend; one legend entry per series. */
  readonly series: string;
}

export interface BarGroup {
  readonly heading: string;
  readonly bars: readonly Bar[];
}

export interface BarChart {
  readonly title: string;
  readonly unit: string;
  readonly groups: readonly BarGroup[];
  /** A log10 axis, for values that span orders of magnitude (native vs js). */
  readonly log?: boolean;
  /** Lines under the chart: machine, versions, date. */
  readonly caption?: readonly string[];
}

/** Distinct, colour-blind-safe colours (Okabe-Ito), assigned to series in order of appearance. */
const PALETTE = ['#0072B2', '#E69F00', '#009E73', '#CC79A7', '#56B4E9', '#D55E00', '#F0E442', '#000000'];

function escapeXml(s: string): string {
  return s.replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' })[c]!);
}

/** The colour of each series, in order of first appearance. */
export function seriesColours(chart: BarChart): Map<string, string> {
  const colours = new Map<string, string>();
  for (const g of chart.groups) for (const b of g.bars) if (!colours.has(b.series)) colours.set(b.series, PALETTE[colours.size % PALETTE.length]!);
  return colours;
}

/** Bar length in [0, 1] of `value` against `max`; on a log axis 1 is one tenth of the smallest order shown. */
export function barFraction(value: number, max: number, min: number, log: boolean): number {
  if (value <= 0 || max <= 0) return 0;
  if (!log) return value / max;
  const lo = Math.floor(Math.log10(Math.max(min, 1e-9)));
  const hi = Math.ceil(Math.log10(max));
  return hi === lo ? 1 : (Math.log10(value) - lo) / (hi - lo);
}

export function renderBarChart(chart: BarChart): string {
  const rowH = 22, headH = 24, labelW = 300, chartW = 460, top = 64, legendH = 20;
  const values = chart.groups.flatMap((g) => g.bars.map((b) => b.value)).filter((v) => v > 0);
  const max = Math.max(1, ...values);
  const min = Math.min(max, ...values);
  const log = chart.log === true;
  const colours = seriesColours(chart);
  const parts: string[] = [];
  let y = top;
  for (const g of chart.groups) {
    parts.push(`<text x="10" y="${y + 16}" font-weight="bold">${escapeXml(g.heading)}</text>`);
    y += headH;
    for (const b of g.bars) {
      const w = Math.max(1, barFraction(b.value, max, min, log) * chartW);
      parts.push(
        `<text x="${labelW - 8}" y="${y + 15}" text-anchor="end">${escapeXml(b.label)}</text>`,
        `<rect x="${labelW}" y="${y + 3}" width="${w.toFixed(1)}" height="${rowH - 6}" fill="${colours.get(b.series)}" data-series="${escapeXml(b.series)}"/>`,
        `<text x="${(labelW + w + 6).toFixed(1)}" y="${y + 15}">${b.value.toFixed(0)} ${escapeXml(chart.unit)}</text>`,
      );
      y += rowH;
    }
  }
  if (log) {
    // Gridlines at each power of ten on the log axis.
    const lo = Math.floor(Math.log10(Math.max(min, 1e-9)));
    const hi = Math.ceil(Math.log10(max));
    for (let e = lo; e <= hi; e++) {
      const x = labelW + barFraction(10 ** e, max, min, true) * chartW;
      parts.unshift(`<line x1="${x.toFixed(1)}" y1="${top}" x2="${x.toFixed(1)}" y2="${y}" stroke="#ddd"/>`, `<text x="${x.toFixed(1)}" y="${y + 14}" text-anchor="middle" fill="#666">${10 ** e}</text>`);
    }
    y += 18;
  }
  let lx = 10;
  for (const [series, colour] of colours) {
    parts.push(`<rect x="${lx}" y="${top - legendH - 4}" width="12" height="12" fill="${colour}"/>`, `<text x="${lx + 16}" y="${top - legendH + 6}">${escapeXml(series)}</text>`);
    lx += 32 + series.length * 8;
  }
  const caption = chart.caption ?? [];
  caption.forEach((line, i) => parts.push(`<text x="10" y="${y + 20 + i * 16}" fill="#444" font-size="11">${escapeXml(line)}</text>`));
  const height = y + 20 + caption.length * 16 + 8;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${labelW + chartW + 120}" height="${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="22" font-size="15" font-weight="bold">${escapeXml(chart.title)}${log ? ' (log scale)' : ''}</text>`,
    ...parts,
    '</svg>',
  ].join('\n') + '\n';
}
