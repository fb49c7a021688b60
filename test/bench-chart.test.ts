/** `vhdcrypt bench --svg`: groups by sector size, one colour per backend, a log axis on request, a caption. */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { barFraction, renderBarChart } from '../src/bench/bar-chart.js';
import { benchChart } from '../src/bench/bench-chart.js';
import type { EndToEndResult } from '../src/bench/end-to-end.js';

const rows = [
  { name: 'native/vaes-avx512', sectorSize: 512, mbPerSecond: 20000, samples: 9 },
  { name: 'wasm/bitsliced', sectorSize: 512, mbPerSecond: 340, samples: 9 },
  { name: 'js/noble', sectorSize: 512, mbPerSecond: 75, samples: 9 },
  { name: 'native/vaes-avx512', sectorSize: 4096, mbPerSecond: 24000, samples: 9 },
  { name: 'wasm/bitsliced', sectorSize: 4096, mbPerSecond: 350, samples: 9 },
  { name: 'node:crypto per sector', sectorSize: 512, mbPerSecond: 140, samples: 9 },
];
const e2e = { description: 'encrypt 64 MiB fixed VHD', seconds: 0.1, mbPerSecond: 600, decryptSeconds: 0.1, decryptMbPerSecond: 650, backend: 'native', kernel: 'vaes-avx512', threads: 2, secretId: null, vaultUri: null, verified: true } as EndToEndResult;

describe('the bench chart', () => {
  const chart = benchChart(rows, { name: 'openssl speed aes-256-xts', sectorSize: null, mbPerSecond: 6000, samples: 1 }, e2e, { log: true, version: '9.9.9', date: new Date('2026-12-04T00:00:00Z') });
  const svg = renderBarChart(chart);

  it('groups bars by sector size and colours them by backend, with a legend entry per backend', () => {
    expect(chart.groups.map((g) => g.heading)).toEqual(['512-byte sectors', '4096-byte sectors', 'openssl speed, 16 KiB buffers', 'end to end, encrypt 64 MiB fixed VHD']);
    const fills = new Map<string, Set<string>>();
    for (const m of svg.matchAll(/fill="(#[0-9A-F]{6})" data-series="([^"]+)"/g)) fills.set(m[2]!, (fills.get(m[2]!) ?? new Set()).add(m[1]!));
    expect([...fills.keys()]).toEqual(['native', 'wasm', 'js', 'node:crypto', 'openssl', 'end to end (native)']);
    for (const colours of fills.values()) expect(colours.size).toBe(1);
    expect(new Set([...fills.values()].map((s) => [...s][0])).size).toBe(fills.size);
  });

  it('a log axis keeps the slow backends visible and orders bars by value', () => {
    expect(barFraction(75, 24000, 75, false)).toBeLessThan(0.01);
    expect(barFraction(75, 24000, 75, true)).toBeGreaterThan(0.2);
    expect(barFraction(75, 24000, 75, true)).toBeLessThan(barFraction(340, 24000, 75, true));
    expect(barFraction(24000, 24000, 75, true)).toBeLessThanOrEqual(1);
    expect(svg).toContain('(log scale)');
  });

  it('the caption names the CPU, the kernel chosen, Node, vhdcrypt and the date; the SVG renders', () => {
    expect(svg).toContain('kernel chosen: native/vaes-avx512');
    expect(svg).toContain(`vhdcrypt 9.9.9, Node ${process.version}, 2026-12-04`);
    expect(svg).toMatch(/CPU: .+ \(\d+ cores\)/);
    const dir = mkdtempSync(join(tmpdir(), 'vhdcrypt-chart-'));
    try {
      writeFileSync(join(dir, 'c.svg'), svg);
      const r = spawnSync('rsvg-convert', ['-o', join(dir, 'c.png'), join(dir, 'c.svg')], { encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      expect(readFileSync(join(dir, 'c.png')).subarray(1, 4).toString()).toBe('PNG');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
