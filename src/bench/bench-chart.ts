/** The chart `vhdcrypt bench --svg` draws: XTS throughput grouped by sector size and coloured by backend, then the end-to-end run. */
import { cpus } from 'node:os';
import type { BarChart, BarGroup } from './bar-chart.js';
import type { EndToEndResult } from './end-to-end.js';
import type { XtsThroughputRow } from './xts-throughput.js';

/** The backend a row measures: 'native', 'wasm', 'js', 'node:crypto' (the part of its name before the kernel). */
function backendOf(row: XtsThroughputRow): string {
  return row.name.split('/')[0]!.replace(/ per sector$/, '');
}

export function benchChart(
  rows: readonly XtsThroughputRow[],
  openssl: XtsThroughputRow | null,
  e2e: EndToEndResult,
  opts: { log: boolean; version: string; date?: Date },
): BarChart {
  const sizes = [...new Set(rows.map((r) => r.sectorSize))].sort((a, b) => (a ?? 0) - (b ?? 0));
  const groups: BarGroup[] = sizes.map((size) => ({
    heading: size === null ? 'other' : `${size}-byte sectors`,
    bars: rows.filter((r) => r.sectorSize === size).map((r) => ({ label: r.name, value: r.mbPerSecond, series: backendOf(r) })),
  }));
  if (openssl) groups.push({ heading: 'openssl speed, 16 KiB buffers', bars: [{ label: openssl.name, value: openssl.mbPerSecond, series: 'openssl' }] });
  groups.push({
    heading: `end to end, ${e2e.description}`,
    bars: [
      { label: 'encrypt image', value: e2e.mbPerSecond, series: `end to end (${e2e.backend})` },
      { label: 'decrypt image', value: e2e.decryptMbPerSecond, series: `end to end (${e2e.backend})` },
    ],
  });
  const date = (opts.date ?? new Date()).toISOString().slice(0, 10);
  return {
    title: 'vhdcrypt bench: AES-256-XTS throughput',
    unit: 'MB/s',
    groups,
    log: opts.log,
    caption: [
      `CPU: ${cpus()[0]?.model ?? 'unknown'} (${cpus().length} cores); kernel chosen: ${e2e.backend}/${e2e.kernel}, ${e2e.threads} threads end to end`,
      `vhdcrypt ${opts.version}, Node ${process.version}, ${date}; one thread per XTS row, 1 MiB batches, medians`,
    ],
  };
}
