/** A plain SVG horizontal bar chart of benchmark rows (no dependencies). */
export interface Bar {
  readonly label: string;
  readonly value: number;
}

function escapeXml(s: string): string {
  return s.replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' })[c]!);
}

/** Render bars as an SVG document; values share one linear scale. */
export function renderBarChart(title: string, unit: string, bars: readonly Bar[]): string {
  const rowH = 24, labelW = 300, chartW = 460, top = 40;
  const max = Math.max(1, ...bars.map((b) => b.value));
  const h = top + bars.length * rowH + 20;
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${labelW + chartW + 100}" height="${h}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="22" font-size="15" font-weight="bold">${escapeXml(title)}</text>`,
  ];
  bars.forEach((b, i) => {
    const y = top + i * rowH;
    const w = Math.max(1, (b.value / max) * chartW);
    parts.push(
      `<text x="${labelW - 8}" y="${y + 16}" text-anchor="end">${escapeXml(b.label)}</text>`,
      `<rect x="${labelW}" y="${y + 4}" width="${w.toFixed(1)}" height="${rowH - 8}" fill="#3b6ea5"/>`,
      `<text x="${labelW + w + 6}" y="${y + 16}">${b.value.toFixed(0)} ${escapeXml(unit)}</text>`,
    );
  });
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}
